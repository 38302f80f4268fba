//! The JavaScript examples of README.md, docs/app.md and docs/worker.md.
//!
//! Every ```js block parses: it is written to a file and checked with `node --check` as an ES
//! module, so an example a reader copies is at least valid JavaScript.
//!
//! Every example whose calls go to the worker runs, as written, against one real worker, the
//! emulator and a real database (`the_worker_examples_run_against_a_real_worker`): the bearer
//! checkouts, the checkout and portal pair, the cookie-signed checkout, and the Next.js route
//! handler with the real `next` and `@supabase/ssr` packages (pinned in scripts/app-js/, installed
//! into a cache by scripts/app-js.sh). Around each example the test supplies only what the page
//! or the server would: a signed-in `session`, `window.location`, the base of a relative URL.
//!
//! What does not run, and why: the supabase-js calls that go to PostgREST (`.rpc()`, `.from()`)
//! and to Supabase Realtime (`.channel()`), because neither server can be had here (no registry
//! reachable from this machine ships a PostgREST or Realtime binary; tests/README.md).
//! app_docs_postgrest.rs checks the requests supabase-js makes for the PostgREST calls against
//! the database; the Realtime subscription is only parsed. The plain LISTEN that docs/app.md
//! shows for a server is run here.
//!
//! Skipped, saying so, without node and npm.
mod app_docs_support;
mod http_api_support;
mod worker_support;

use app_docs_support::*;
use std::path::Path;
use std::process::Command;
use uuid::Uuid;
use worker_support::{CANCEL_URL, OK_URL, RETURN_URL};

#[test]
fn every_js_example_parses() {
    let files = ["docs/app.md", "README.md", "docs/worker.md"];
    let blocks: Vec<(&str, String)> = files
        .iter()
        .flat_map(|f| js_blocks_of(f).into_iter().map(move |b| (*f, b)))
        .collect();
    assert!(blocks.len() >= 10, "found {} js blocks", blocks.len());
    if !have_node() {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let dir = scratch("parse");
    for (i, (file, block)) in blocks.iter().enumerate() {
        let path = dir.join(format!("example{i}.mjs"));
        std::fs::write(&path, block).unwrap();
        let out = Command::new("node")
            .arg("--check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "a js block of {file} does not parse:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `code` as an ES module in `dir` with node; its stdout, or a panic with everything
/// that explains a failure.
async fn node(dir: &Path, name: &str, code: &str, worker_logs: impl Fn() -> String) -> String {
    let file = dir.join(name);
    std::fs::write(&file, code).unwrap();
    let out = tokio::process::Command::new("node")
        .args(websocket_flag())
        .arg(&file)
        .current_dir(dir)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed:\n{code}\n--- stdout\n{stdout}\n--- stderr\n{}\n--- worker\n{}",
        String::from_utf8_lossy(&out.stderr),
        worker_logs()
    );
    stdout
}

/// What a browser page gives the examples: the signed-in `session` (as supabase-js's
/// getSession returns it, and a `supabase` whose getSession returns it), `window.location`
/// (a redirect prints `REDIRECT <url>`), and the page's origin for relative URLs, which
/// lead to the worker as a same-origin proxy would.
const PAGE: &str = r#"
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => realFetch(new URL(url, '__WORKER__'), init);
const pageSession = { access_token: '__TOKEN__' };
const supabase = { auth: { getSession: async () => ({ data: { session: pageSession } }) } };
const clickId = crypto.randomUUID();
const redirect = (url) => console.log('REDIRECT ' + url);
const window = { location: { assign: redirect, set href(url) { redirect(url) } } };
"#;

fn page(worker: &str, token: &str, example: &str) -> String {
    let mut code = PAGE
        .replace("__WORKER__", worker)
        .replace("__TOKEN__", token);
    // An example that does not fetch the session itself starts from the page's.
    if !example.contains("supabase.auth.getSession()") {
        code.push_str("const session = pageSession;\n");
    }
    code + example
}

/// The `REDIRECT` lines an example printed.
fn redirects(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("REDIRECT "))
        .collect()
}

/// The example went to the emulator's checkout page (and nowhere before it).
fn assert_pays(stdout: &str, pay_page: &str) {
    let went = redirects(stdout);
    assert!(
        went.first().is_some_and(|url| url.starts_with(pay_page)),
        "no redirect to {pay_page}…:\n{stdout}"
    );
}

/// The Next.js route handler of docs/app.md, run by Node as Next would: `POST` gets a real
/// `Request`; `next/server` is Next's own module; `cookies()` of `next/headers` is the one
/// thing supplied, since outside Next's server it has no request to read, and it reads this
/// request's Cookie header with Next's own cookie parser. `@supabase/ssr` and supabase-js are
/// the real packages: `getSession` finds the session in the cookie as @supabase/ssr wrote it.
const NEXT_HEADERS: &str = r#"
import { RequestCookies } from 'next/dist/compiled/@edge-runtime/cookies/index.js'
export async function cookies() { return new RequestCookies(globalThis.currentRequest.headers) }
"#;

const NEXT_RUN: &str = r#"
// Never called: a fresh session comes from the cookie, no call to Supabase Auth is needed.
process.env.NEXT_PUBLIC_SUPABASE_URL = 'http://127.0.0.1:9'
process.env.NEXT_PUBLIC_SUPABASE_ANON_KEY = 'anon-key-unused-here'
process.env.BILLING_WORKER_URL = '__WORKER__'
const { POST } = await import('./route.mjs')
for (const [who, cookie] of [['signed-in', '__COOKIE__'], ['signed-out', '']]) {
  const headers = { 'content-type': 'application/json' }
  if (cookie) headers.cookie = cookie
  const request = new Request('http://localhost:3000/api/billing/checkout', {
    method: 'POST', headers, body: JSON.stringify({ priceId: 'pack', mode: 'payment' }),
  })
  globalThis.currentRequest = request
  const res = await POST(request)
  console.log(JSON.stringify({ who, status: res.status, body: await res.json() }))
}
"#;

/// The cookie-signed checkout of docs/app.md as a browser on https://app.example.com runs it:
/// for `credentials: 'include'` it adds the session cookie, and it sends the page's `Origin`
/// and `Sec-Fetch-Site` (browser_cookie.rs shows Chromium doing so). The example's worker host
/// leads to the test's worker.
const BROWSER: &str = r#"
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init) => {
  const u = new URL(url);
  if (u.origin !== 'https://billing.example.com') throw new Error('unexpected host ' + u.origin);
  const headers = { ...init.headers, Origin: 'https://app.example.com', 'Sec-Fetch-Site': 'same-site' };
  if (init.credentials === 'include') headers.Cookie = '__COOKIE__';
  return realFetch(new URL(u.pathname, '__WORKER__'), { ...init, headers });
};
const redirect = (url) => console.log('REDIRECT ' + url);
const window = { location: { assign: redirect, set href(url) { redirect(url) } } };
"#;

/// One worker for every example; each example is a new user, so one's subscription does not
/// refuse another's (409).
#[tokio::test]
async fn the_worker_examples_run_against_a_real_worker() {
    if !have_node() || Command::new("npm").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node or npm is not installed");
        return;
    }
    let modules = app_js_modules();
    let mut flags = http_api_support::QUEUE_IDLE.to_vec();
    flags.extend(["--session-cookie-origin", "https://app.example.com"]);
    let s = http_api_support::setup(&flags).await;
    // The examples send no successUrl/cancelUrl/returnUrl: the defaults of billing.config
    // apply, as docs/app.md says.
    s.owner
        .batch_execute(&format!(
            "UPDATE billing.config SET checkout_success_url = '{OK_URL}', \
             checkout_cancel_url = '{CANCEL_URL}', portal_return_url = '{RETURN_URL}'"
        ))
        .await
        .unwrap();
    let pay_page = format!("{}/pay/cs_test_", s.emulator.url);
    let logs = || s.worker.logs();
    let dir = scratch("run");
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();

    // Whose requests the worker queued, and of which kind.
    let made = |user: Uuid| {
        let owner = &s.owner;
        async move {
            let rows = owner
                .query(
                    "SELECT kind FROM billing.stripe_requests WHERE user_id = $1 ORDER BY created_at",
                    &[&user],
                )
                .await
                .unwrap();
            rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
        }
    };

    // docs/app.md: the bearer checkout through supabase.auth.getSession().
    let user = Uuid::new_v4();
    let code = page(
        &s.worker.base,
        &http_api_support::user_token(user),
        &example("docs/app.md", &["getSession", "window.location.assign"]),
    );
    let out = node(&dir, "app-checkout.mjs", &code, logs).await;
    assert_pays(&out, &pay_page);
    assert_eq!(made(user).await, ["checkout"]);

    // README.md: "Use it from your app", the HTTP call.
    let user = Uuid::new_v4();
    let readme = example("README.md", &["/api/stripe/checkout"]);
    let code = page(&s.worker.base, &http_api_support::user_token(user), &readme);
    let out = node(&dir, "readme-checkout.mjs", &code, logs).await;
    assert_pays(&out, &pay_page);
    assert_eq!(made(user).await, ["checkout"]);

    // docs/worker.md: checkout, then the portal of the customer it made.
    let user = Uuid::new_v4();
    let code = page(
        &s.worker.base,
        &http_api_support::user_token(user),
        &example("docs/worker.md", &["/api/stripe/portal"]),
    );
    let out = node(&dir, "worker-checkout-portal.mjs", &code, logs).await;
    let went = redirects(&out);
    assert_eq!(went.len(), 2, "{out}");
    assert!(went[0].starts_with(&pay_page), "{out}");
    assert!(
        went[1].starts_with(&format!("{}/p/session/", s.emulator.url)),
        "{out}"
    );
    assert_eq!(made(user).await, ["checkout", "portal"]);

    // docs/app.md: the checkout signed with the @supabase/ssr session cookie.
    let user = Uuid::new_v4();
    let cookie = http_api_support::session_cookie(
        "sb-project-auth-token",
        &http_api_support::user_token(user),
        0,
        3180,
    );
    let code = BROWSER
        .replace("__WORKER__", &s.worker.base)
        .replace("__COOKIE__", &cookie)
        + &example(
            "docs/app.md",
            &["https://billing.example.com/api/stripe/checkout"],
        );
    let out = node(&dir, "app-cookie-checkout.mjs", &code, logs).await;
    assert_pays(&out, &pay_page);
    assert_eq!(made(user).await, ["checkout"]);

    // docs/app.md: the Next.js route handler, signed in (the @supabase/ssr cookie of the
    // project at NEXT_PUBLIC_SUPABASE_URL, split in two as a long session is) and not.
    let user = Uuid::new_v4();
    let route = example("docs/app.md", &["export async function POST"]);
    let runnable = route
        .replace("from 'next/server'", "from 'next/server.js'")
        .replace("from 'next/headers'", "from './next-headers.mjs'");
    assert_eq!(
        runnable.matches(".js'").count() + runnable.matches(".mjs'").count(),
        2,
        "the route imports next/server and next/headers:\n{route}"
    );
    std::fs::write(dir.join("route.mjs"), runnable).unwrap();
    std::fs::write(dir.join("next-headers.mjs"), NEXT_HEADERS).unwrap();
    let cookie = http_api_support::session_cookie(
        "sb-127-auth-token",
        &http_api_support::user_token(user),
        3000,
        3180,
    );
    assert!(cookie.contains(".1="), "a chunked cookie");
    let code = NEXT_RUN
        .replace("__WORKER__", &s.worker.base)
        .replace("__COOKIE__", &cookie);
    let out = node(&dir, "next-route.mjs", &code, logs).await;
    let answers: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 2, "{out}");
    assert_eq!(answers[0]["status"], 200, "{out}");
    assert!(
        answers[0]["body"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&pay_page)),
        "{out}"
    );
    assert_eq!(made(user).await, ["checkout"]);
    assert_eq!(answers[1]["status"], 401, "{out}");
    assert_eq!(answers[1]["body"]["error"], "sign in first", "{out}");

    // docs/app.md: a server LISTENs on billing_notifications and reads the row it names.
    let user = Uuid::new_v4();
    let listener =
        LISTEN_RUN.to_string() + &example("docs/app.md", &["LISTEN billing_notifications"]);
    std::fs::write(dir.join("listen.mjs"), listener).unwrap();
    let mut node = tokio::process::Command::new("node")
        .arg(dir.join("listen.mjs"))
        .env("DATABASE_URL", url_of(&s.db.dsn))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Notified once the listener is listening: a NOTIFY before that reaches no one.
    let mut listening = false;
    for _ in 0..200 {
        listening = s
            .owner
            .query_one(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE query = 'LISTEN billing_notifications'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if listening {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.owner
        .execute(
            "SELECT billing._notify($1, 'tokens_revoked', 'evt_app_docs', '{\"tokens\": 500}')",
            &[&user],
        )
        .await
        .unwrap();
    let mut stdout = node.stdout.take().unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text).await;
        text
    })
    .await;
    let _ = node.start_kill();
    let mut stderr = String::new();
    if let Some(mut e) = node.stderr.take() {
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr).await;
    }
    assert!(listening, "the example never LISTENed: {stderr}");
    let out = out.unwrap_or_else(|_| panic!("no notification printed within 20 s: {stderr}"));
    assert_eq!(
        out.trim(),
        format!("{user} tokens_revoked {{\"tokens\":500}}"),
        "{stderr}"
    );

    let _ = std::fs::remove_dir_all(&dir);
}

/// Around the listener of docs/app.md: it prints one line per notification and runs forever,
/// so the first line ends it (and 15 s without one fails it).
const LISTEN_RUN: &str = r#"
const print = console.log;
console.log = (...args) => { print(...args); process.exit(0) };
setTimeout(() => { console.error('no notification within 15 s'); process.exit(1) }, 15000);
"#;

/// A libpq key=value string (the test cluster's, on a unix socket) as the URL node-postgres
/// takes.
fn url_of(dsn: &str) -> String {
    let get = |key: &str| {
        dsn.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in {dsn}"))
    };
    format!(
        "postgresql://{}@/{}?host={}&port={}",
        get("user"),
        get("dbname"),
        get("host"),
        get("port")
    )
}
