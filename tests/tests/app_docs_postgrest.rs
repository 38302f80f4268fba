//! The supabase-js calls of README.md and docs/app.md that go to PostgREST (`.rpc()`, `.from()`), checked
//! as far as they can be without a PostgREST server (none can be had here; tests/README.md).
//!
//! The real supabase-js (scripts/app-js.sh) runs each example with its `fetch` replaced by a
//! recorder: every request is written down and refused (400, so the example's own error path
//! runs and nothing is taken as an answer). The test then holds each request against the
//! database the way PostgREST would resolve it, without running it: the schema of its
//! `Content-Profile` header, a function of that name whose arguments are exactly those the JSON
//! body names (every one without a default among them), executable by `authenticated`. So a
//! renamed function or argument, or a missing grant, fails here; what the function then does is
//! tested through SQL as PostgREST calls it (subscription_status.rs, ledger_guards.rs). A read
//! (`.from()`) must name a relation `anon` may read and columns it has (public_catalog.rs tests
//! its rows).
mod app_docs_support;

use app_docs_support::*;
use serde_json::Value;
use std::process::Command;
use stripe_billing_tests::pg::TestDb;

/// Around the examples: a supabase-js client whose fetch records and refuses, and the page's
/// free names. Each example is its own module (they declare the same names); the error the
/// refusal makes an example throw is expected, any other is not.
const RECORD: &str = r#"
import { createClient } from '@supabase/supabase-js'
const calls = []
const record = async (url, init = {}) => {
  const headers = Object.fromEntries(new Headers(init.headers).entries())
  calls.push({ method: init.method ?? 'GET', url: String(url), headers, body: init.body ?? null })
  const refusal = { code: 'TEST', message: 'recorded; there is no PostgREST in this test', details: null, hint: null }
  return new Response(JSON.stringify(refusal), { status: 400, headers: { 'content-type': 'application/json' } })
}
globalThis.supabase = createClient('http://127.0.0.1:9', 'anon-key-unused-here', {
  global: { fetch: record }, auth: { persistSession: false, autoRefreshToken: false },
})
globalThis.jobId = 'job-7'
globalThis.showPricing = () => console.log('SHOWN pricing')
globalThis.showBuyMoreTokens = () => console.log('SHOWN buy more tokens')
for (const file of __FILES__) {
  try { await import(file) } catch (e) { if (e?.code !== 'TEST') throw e }
}
console.log('CALLS ' + JSON.stringify(calls))
"#;

#[tokio::test]
async fn the_supabase_js_calls_name_functions_authenticated_may_call() {
    if !have_node() || Command::new("npm").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node or npm is not installed");
        return;
    }
    let examples: Vec<(String, String)> = ["README.md", "docs/app.md"]
        .iter()
        .flat_map(|f| js_blocks_of(f).into_iter().map(move |b| (f.to_string(), b)))
        .filter(|(_, b)| b.contains(".rpc(") || b.contains(".from("))
        .collect();
    assert!(examples.len() >= 3, "{examples:?}");
    let dir = scratch("postgrest");
    std::os::unix::fs::symlink(app_js_modules(), dir.join("node_modules")).unwrap();
    let mut files = Vec::new();
    for (i, (_, block)) in examples.iter().enumerate() {
        let name = format!("./example{i}.mjs");
        std::fs::write(dir.join(&name), block).unwrap();
        files.push(name);
    }
    let harness = RECORD.replace("__FILES__", &serde_json::to_string(&files).unwrap());
    std::fs::write(dir.join("record.mjs"), harness).unwrap();
    let out = Command::new("node")
        .args(websocket_flag())
        .arg("record.mjs")
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<Value> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CALLS "))
        .map(|j| serde_json::from_str(j).unwrap())
        .expect("the recorded calls");
    // Each rpc( or from( in the examples made one request.
    let made: usize = examples
        .iter()
        .map(|(_, b)| b.matches(".rpc(").count() + b.matches(".from(").count())
        .sum();
    assert_eq!(calls.len(), made, "{stdout}");

    let db = TestDb::new().await;
    let owner = db.owner().await;
    for call in &calls {
        let url = call["url"].as_str().unwrap();
        let Some(function) = url.strip_prefix("http://127.0.0.1:9/rest/v1/rpc/") else {
            check_read(&owner, call).await;
            continue;
        };
        assert_eq!(call["method"], "POST", "{call}");
        let schema = call["headers"]["content-profile"]
            .as_str()
            .unwrap_or("public");
        let body: Value = serde_json::from_str(call["body"].as_str().unwrap_or("{}")).unwrap();
        let mut args: Vec<&str> = body
            .as_object()
            .unwrap_or_else(|| panic!("a JSON object of arguments: {call}"))
            .keys()
            .map(String::as_str)
            .collect();
        args.sort_unstable();
        // The overloads PostgREST would choose from: named inputs, how many are required, and
        // whether the API's signed-in role may call it.
        let overloads = owner
            .query(
                "SELECT p.oid::regprocedure::text,
                        coalesce(array(SELECT a.name FROM unnest(p.proargnames, coalesce(p.proargmodes,
                            array_fill('i'::\"char\", ARRAY[cardinality(p.proargnames)]))) a(name, mode)
                            WHERE a.mode IN ('i', 'b', 'v')), '{}'),
                        p.pronargs - p.pronargdefaults,
                        has_function_privilege('authenticated', p.oid, 'EXECUTE')
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname = $1 AND p.proname = $2",
                &[&schema, &function],
            )
            .await
            .unwrap();
        assert!(
            !overloads.is_empty(),
            "no function {schema}.{function}: {call}"
        );
        let fits = overloads.iter().any(|o| {
            let inputs: Vec<String> = o.get(1);
            let required: i16 = o.get(2);
            args.iter().all(|a| inputs.iter().any(|i| i == a))
                && inputs[..required as usize]
                    .iter()
                    .all(|i| args.contains(&i.as_str()))
                && o.get::<_, bool>(3)
        });
        let described: Vec<String> = overloads.iter().map(|o| o.get(0)).collect();
        assert!(
            fits,
            "{schema}.{function} with arguments {args:?} is no function authenticated may call: \
             there are {described:?}"
        );
    }
    // The refusal reached the examples' error paths, as an error from PostgREST would.
    assert!(!stdout.contains("SHOWN pricing"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A read of a table or view (`.from(…).select(…)` and filters): the relation in the
/// `Accept-Profile` schema, readable by `anon` (a pricing page is for anyone), with every
/// column the select list and the filters name.
async fn check_read(owner: &tokio_postgres::Client, call: &Value) {
    assert_eq!(call["method"], "GET", "{call}");
    let url = reqwest::Url::parse(call["url"].as_str().unwrap()).unwrap();
    let relation = url
        .path()
        .strip_prefix("/rest/v1/")
        .unwrap_or_else(|| panic!("not a PostgREST call: {call}"));
    let schema = call["headers"]["accept-profile"]
        .as_str()
        .unwrap_or("public");
    let mut columns: Vec<String> = Vec::new();
    for (key, value) in url.query_pairs() {
        if key == "select" {
            columns.extend(value.split(',').map(|c| c.trim().to_string()));
        } else {
            columns.push(key.into_owned());
        }
    }
    let row = owner
        .query_opt(
            "SELECT has_table_privilege('anon', c.oid, 'SELECT'),
                    array(SELECT a.attname::text FROM pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &relation],
        )
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no relation {schema}.{relation}: {call}"));
    assert!(
        row.get::<_, bool>(0),
        "anon may not read {schema}.{relation}"
    );
    let have: Vec<String> = row.get(1);
    for column in &columns {
        assert!(
            column == "*" || have.contains(column),
            "{schema}.{relation} has no column {column}: it has {have:?}"
        );
    }
}
