//! The shell examples of docs/worker.md run as written: the Python that makes a user's token
//! (`docs-test: run api-token`), then every `$ curl …` of the HTTP API's transcript
//! (`docs-test: transcript api-curl`) against a real worker set up as the text says
//! (`--jwt-secret … --jwt-audience authenticated --cors-origin https://app.example.com`, the
//! emulator as Stripe, the catalog of docs/configuration.md); what curl prints must be what the
//! transcript shows, `…` standing for ids and ports.
mod worker_support;

use stripe_billing_tests::docs;
use stripe_billing_tests::pg::TestDb;
use worker_support::{Emulator, Worker};

const JWT_SECRET: &str = "a-local-secret-of-at-least-32-characters";

/// The commands of a transcript: each `$ ` line with its `\` continuation lines.
fn commands(transcript: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut continuing = false;
    for line in transcript.lines() {
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(command.to_string());
        } else if continuing {
            let last = out.last_mut().expect("a command");
            last.push('\n');
            last.push_str(line);
        } else {
            continue;
        }
        continuing = line.ends_with('\\');
    }
    out
}

/// Runs `script` with bash in `env`, returning stdout (carriage returns dropped).
fn bash(script: &str, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

#[tokio::test]
async fn the_http_api_transcript_is_what_curl_prints() {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(
            "INSERT INTO billing.config (checkout_success_url, checkout_cancel_url, portal_return_url)
             VALUES ('https://app.example.com/thanks', 'https://app.example.com/pricing', 'https://app.example.com/account');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
             VALUES ('pro', 'price_1PgafmB7WZ01zgkW6dKueIc5', 'Pro', 'subscription', 1000);
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens)
             VALUES ('pack', 'price_1PgafmB7WZ01zgkW02Hf9z6c', '500 tokens', 'token_pack', 500);",
        )
        .await
        .unwrap();
    let emulator = Emulator::start_with(
        None,
        &[
            "--price",
            "price_1PgafmB7WZ01zgkW6dKueIc5:recurring:2000",
            "--price",
            "price_1PgafmB7WZ01zgkW02Hf9z6c:one_time:900",
        ],
    )
    .await;
    let worker = Worker::start(
        &db.dsn,
        Some(&emulator.url),
        &[
            "--jwt-secret",
            JWT_SECRET,
            "--jwt-audience",
            "authenticated",
            "--cors-origin",
            "https://app.example.com",
        ],
    )
    .await;

    // The token, made by the docs' own Python.
    let make_token = docs::script("api-token");
    let token = bash(
        &format!("{}printf %s \"$TOKEN\"", make_token.body),
        &[("JWT_SECRET", JWT_SECRET)],
    );
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let shown = docs::transcript("api-curl");
    let host = worker.base.trim_start_matches("http://").to_string();
    let mut real = String::new();
    let mut keyed_sessions = Vec::new();
    for command in commands(&shown.body) {
        let printed = bash(
            &command.replace("localhost:8080", &host),
            &[("TOKEN", &token)],
        );
        if command.contains("Idempotency-Key: 4f1c2a") && printed.contains("sessionId") {
            keyed_sessions.push(printed.split('"').nth(3).unwrap_or_default().to_string());
        }
        real.push_str(&format!("$ {command}\n{printed}"));
        if !real.ends_with('\n') {
            real.push('\n');
        }
    }
    docs::assert_transcript("api-curl", &real);
    // The retry with the same Idempotency-Key returns the session of the first call.
    assert_eq!(keyed_sessions.len(), 2, "{real}");
    assert_eq!(keyed_sessions[0], keyed_sessions[1], "{real}");
}

#[test]
fn commands_are_read_with_their_continuation_lines() {
    let t = "$ curl a \\\n    -d b\n{\"x\":1}\n$ curl c\nout\n";
    assert_eq!(commands(t), vec!["curl a \\\n    -d b", "curl c"]);
}
