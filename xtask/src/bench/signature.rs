//! Per-call cost of `billing.stripe_signature_is_valid` in the extension (Rust) and in the
//! pure-SQL edition (its PL/pgSQL twin with pgcrypto's `hmac()`), against what a Postgres user
//! would write by hand (a few lines of PL/pgSQL with `hmac()`, without the edge cases), and
//! bytes/s against this machine's SHA-256 limit from `openssl speed -evp sha256` at 16 KB
//! blocks, all in the same run.
use super::rate;
use std::time::Instant;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::TestDb;

const SECRET: &str = "whsec_bench_secret";

const PLPGSQL: &str = r#"
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE FUNCTION plpgsql_signature_is_valid(payload text, header text, secret text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    t text := substring(header FROM 't=([0-9]+)');
    expected text;
BEGIN
    IF t IS NULL THEN
        RETURN false;
    END IF;
    expected := encode(hmac(t || '.' || payload, secret, 'sha256'), 'hex');
    RETURN EXISTS (SELECT FROM regexp_matches(header, 'v1=([0-9a-fA-F]+)', 'g') m WHERE lower(m[1]) = expected);
END
$$;
"#;

/// Calls/s of `function` over `n` calls inside one statement (no client round trips).
async fn calls_per_second(
    client: &tokio_postgres::Client,
    function: &str,
    payload: &str,
    header: &str,
    n: i64,
) -> f64 {
    let sql =
        format!("SELECT sum({function}($1, $2, $3)::int) FROM generate_series(1, $4::bigint)");
    let start = Instant::now();
    let valid: i64 = client
        .query_one(&sql, &[&payload, &header, &SECRET, &n])
        .await
        .unwrap()
        .get(0);
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(valid, n, "{function} must accept every call");
    n as f64 / elapsed
}

/// Measures for about a second after a short calibration.
async fn measure(
    client: &tokio_postgres::Client,
    function: &str,
    payload: &str,
    header: &str,
) -> f64 {
    let probe = calls_per_second(client, function, payload, header, 50).await;
    let n = (probe.max(1.0) as i64).clamp(50, 2_000_000);
    calls_per_second(client, function, payload, header, n).await
}

/// SHA-256 bytes/s at 16 KB blocks, as `openssl speed` reports it.
fn openssl_sha256_bytes_per_second() -> Option<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed", "-evp", "sha256", "-bytes", "16384", "-seconds", "2",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Last line: "sha256  <kbytes/s>k" (1000s of bytes per second).
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("sha256"))?;
    let value = line.split_whitespace().last()?.trim_end_matches('k');
    value.parse::<f64>().ok().map(|k| k * 1000.0)
}

pub async fn run() {
    let db = TestDb::new().await;
    let client = db.owner().await;
    client.batch_execute(PLPGSQL).await.unwrap();
    let pure_db = TestDb::with_edition(Edition::Pure).await;
    let pure = pure_db.owner().await;
    let limit = openssl_sha256_bytes_per_second();
    println!("\n## Signature verification (calls/s, one backend, release build)\n");
    println!("| payload | extension (Rust) | pure-SQL edition | extension/pure | hand-written PL/pgSQL | extension/hand-written | extension bytes/s | openssl sha256 bytes/s (16 KB) | of limit |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for size in [1024usize, 16 * 1024, 256 * 1024] {
        let filler = "x".repeat(size.saturating_sub(40));
        let payload = format!("{{\"id\":\"evt_bench\",\"data\":\"{filler}\"}}");
        let payload = &payload[..payload.len().min(size)];
        let t = stripe_billing_tests::events::unix_now();
        let header =
            stripe_billing_core::signature::signature_header(payload.as_bytes(), SECRET, t);
        let ours = measure(
            &client,
            "billing.stripe_signature_is_valid",
            payload,
            &header,
        )
        .await;
        let twin = measure(&pure, "billing.stripe_signature_is_valid", payload, &header).await;
        let theirs = measure(&client, "plpgsql_signature_is_valid", payload, &header).await;
        let bytes = ours * payload.len() as f64;
        let (limit_text, share) = match limit {
            Some(l) => (rate(l), format!("{:.0}%", 100.0 * bytes / l)),
            None => ("n/a".into(), "n/a".into()),
        };
        println!(
            "| {} KB | {} | {} | {:.1}x | {} | {:.1}x | {} | {} | {} |",
            size / 1024,
            rate(ours),
            rate(twin),
            ours / twin,
            rate(theirs),
            ours / theirs,
            rate(bytes),
            limit_text,
            share
        );
    }
}
