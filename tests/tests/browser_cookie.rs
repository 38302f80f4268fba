//! A real browser signs its checkout call with the @supabase/ssr session cookie. Headless
//! Chromium (Debian's package; scripts/setup.sh installs it) loads a page of the app at
//! http://localhost:PORT that stores the session as @supabase/ssr's browser client does
//! (`document.cookie`, base64url, split into `.0`/`.1` chunks) and calls
//! `POST /api/stripe/checkout` on the worker at http://localhost:WORKER with
//! `credentials: 'include'`: same site, allowed origin, a session comes back. Then a page of
//! another site (http://127.0.0.1:PORT) fires the classic forgery at the same endpoint: a
//! form posting a JSON-looking text/plain body, which needs no preflight and carries the
//! cookie (set `SameSite=None` here, so the test exercises the worker's own defence rather
//! than the browser's SameSite default). The worker refuses it and queues
//! nothing. The page server is part of the test process; every address is loopback.

mod http_api_support;
mod worker_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use http_api_support::*;
use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

const CHROMIUM: &str = "/usr/bin/chromium";
const COOKIE: &str = "sb-localtest-auth-token";

#[derive(Clone)]
struct Pages {
    worker: String,
    app: String,
    cookie: String,
    reports: mpsc::UnboundedSender<(String, Value)>,
}

/// The app's page: stores the session cookie, calls checkout, reports, then goes to the
/// other site's page.
async fn app_page(State(p): State<Pages>) -> Html<String> {
    Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>app</title><script>
(async () => {{
  for (const piece of {pieces}) document.cookie = piece + '; path=/; SameSite=None; Secure';
  let result;
  try {{
    const r = await fetch('{worker}/api/stripe/checkout', {{
      method: 'POST', credentials: 'include',
      headers: {{'content-type': 'application/json'}},
      body: JSON.stringify({{priceId: 'price_pack', mode: 'payment', successUrl: 'https://app.example.test/ok', cancelUrl: 'https://app.example.test/cancel'}}),
    }});
    result = {{status: r.status, body: await r.json()}};
  }} catch (e) {{ result = {{error: String(e)}}; }}
  await fetch('/report?step=app', {{method: 'POST', body: JSON.stringify(result)}});
  location.href = '{evil}/evil';
}})();
</script>"#,
        pieces = serde_json::to_string(&p.cookie.split("; ").collect::<Vec<_>>()).unwrap(),
        worker = p.worker,
        evil = p.app.replace("localhost", "127.0.0.1"),
    ))
}

/// Another site's page: the classic forgery, a form that posts itself to the checkout
/// endpoint. `text/plain` needs no preflight, and the field's name and value join into a
/// body that parses as the API's JSON (`name=value`). It is a top-level navigation, so the
/// browser sends the cookie whatever its third-party-cookie policy for subresources.
async fn evil_page(State(p): State<Pages>) -> Html<String> {
    let name = r#"{"priceId": "price_pack", "mode": "payment", "cancelUrl": "https://evil.example/no", "successUrl": "https://evil.example/ok?x"#;
    Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>evil</title>
<form method="post" enctype="text/plain" action="{worker}/api/stripe/checkout">
<input type="hidden" name='{name}' value='"}}'></form><script>
(async () => {{
  await fetch('/report?step=evil', {{method: 'POST', body: '{{}}'}});
  document.forms[0].submit();
}})();
</script>"#,
        worker = p.worker,
    ))
}

async fn report(
    State(p): State<Pages>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    body: String,
) {
    let step = q.get("step").cloned().unwrap_or_default();
    let _ = p
        .reports
        .send((step, serde_json::from_str(&body).unwrap_or(Value::Null)));
}

#[tokio::test]
async fn chromium_signs_with_the_session_cookie_and_a_forgery_creates_nothing() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED: {CHROMIUM} is absent (scripts/setup.sh installs Debian's chromium)");
        return;
    }
    let pages = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = format!("http://localhost:{}", pages.local_addr().unwrap().port());
    let s = setup(&[
        "--no-listen-notify",
        "--poll-interval-ms",
        "3600000",
        "--session-cookie-origin",
        &app,
    ])
    .await;
    let worker = s.worker.base.replace("127.0.0.1", "localhost");
    let user = Uuid::new_v4();
    let (tx, mut reports) = mpsc::unbounded_channel();
    let state = Pages {
        worker,
        app: app.clone(),
        // Long enough that @supabase/ssr would split it in two.
        cookie: session_cookie(COOKIE, &user_token(user), 3000, 3180),
        reports: tx,
    };
    assert!(state.cookie.contains(".1="));
    let router = Router::new()
        .route("/app", get(app_page))
        .route("/evil", get(evil_page))
        .route("/report", post(report))
        .with_state(state);
    tokio::spawn(async move { axum::serve(pages, router).await });

    let profile = tempdir();
    let mut chromium = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{app}/app"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromium");

    let (step, same_site) = next(&mut reports).await;
    assert_eq!(step, "app");
    assert_eq!(same_site["status"], 200, "{same_site}");
    let session = same_site["body"]["sessionId"].as_str().expect("a session");
    assert_eq!(s.request_of(session).await, {
        let id: Uuid = s
            .owner
            .query_one(
                "SELECT id FROM billing.stripe_requests WHERE user_id = $1",
                &[&user],
            )
            .await
            .unwrap()
            .get(0);
        id
    });

    let (step, _) = next(&mut reports).await;
    assert_eq!(step, "evil");
    // The browser sent the cookie, and the worker refused it for its origin.
    s.worker
        .wait_log("not from an allowed origin", Duration::from_secs(5))
        .await;
    assert_eq!(s.requests().await, 1, "the forged call created nothing");
    chromium.kill().await.ok();
    let _ = std::fs::remove_dir_all(&profile);
}

/// The page's next report.
async fn next(reports: &mut mpsc::UnboundedReceiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(Duration::from_secs(30), reports.recv())
        .await
        .expect("the page reported within 30 s")
        .expect("a report")
}

/// A new empty profile directory for one Chromium run.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stripe_billing_chromium_{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
