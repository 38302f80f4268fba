//! docs/app.md's JavaScript examples parse: each ```js block is written to a file and checked
//! with `node --check` as an ES module (imports are not resolved; top-level await is allowed),
//! so an example a reader copies is at least valid JavaScript. Skipped, saying so, without
//! node. The bearer checkout example also runs, as written, against a real worker.
mod http_api_support;
mod worker_support;

use std::process::Command;
use worker_support::{CANCEL_URL, OK_URL};

fn js_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```js") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn every_js_example_of_docs_app_parses() {
    let root = shipped_sql::upgrade::repo_root();
    let doc = std::fs::read_to_string(root.join("docs/app.md")).expect("docs/app.md");
    let blocks = js_blocks(&doc);
    assert!(blocks.len() >= 6, "found {} js blocks", blocks.len());
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("app_docs_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.join(format!("example{i}.mjs"));
        std::fs::write(&file, block).unwrap();
        let out = Command::new("node")
            .arg("--check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "js block {i} of docs/app.md does not parse:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bearer-token checkout example of docs/app.md, run by node as written against a real
/// worker and the emulator: only `supabase` (a signed-in session), `window` and the relative
/// URL's base are supplied around it. It ends on the emulator's checkout page, and the
/// request it made is the user's.
#[tokio::test]
async fn the_checkout_example_runs_against_a_real_worker() {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let root = shipped_sql::upgrade::repo_root();
    let doc = std::fs::read_to_string(root.join("docs/app.md")).expect("docs/app.md");
    let example = js_blocks(&doc)
        .into_iter()
        .find(|b| b.contains("Bearer ${session.access_token}") && b.contains("getSession"))
        .expect("the bearer checkout example");
    let s = http_api_support::setup(&http_api_support::QUEUE_IDLE).await;
    // The example's plan id: the seeded catalog sells 'pro' as price_pro. It sends no
    // successUrl/cancelUrl: the defaults of billing.config apply, as the doc says.
    s.owner
        .batch_execute(&format!(
            "UPDATE billing.config SET checkout_success_url = '{OK_URL}', checkout_cancel_url = '{CANCEL_URL}'"
        ))
        .await
        .unwrap();
    let configured: i64 = s
        .owner
        .query_one(
            "SELECT count(*) FROM billing.config WHERE checkout_success_url IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(configured, 1, "one config row with the defaults");
    let user = uuid::Uuid::new_v4();
    let token = http_api_support::user_token(user);
    let harness = format!(
        "const base = {base:?};\n\
         const realFetch = globalThis.fetch;\n\
         globalThis.fetch = (url, init) => realFetch(new URL(url, base), init);\n\
         const supabase = {{ auth: {{ getSession: async () => ({{ data: {{ session: {{ access_token: {token:?} }} }} }}) }} }};\n\
         const window = {{ location: {{ assign: (url) => console.log('REDIRECT ' + url) }} }};\n\
         {example}",
        base = s.worker.base,
    );
    let dir = std::env::temp_dir().join(format!("app_docs_run_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("checkout.mjs");
    std::fs::write(&file, harness).unwrap();
    let out = tokio::process::Command::new("node")
        .arg(&file)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("REDIRECT http"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.worker.logs()
    );
    let owner: uuid::Uuid = s
        .owner
        .query_one(
            "SELECT user_id FROM billing.stripe_requests WHERE kind = 'checkout'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, user);
    let _ = std::fs::remove_dir_all(&dir);
}
