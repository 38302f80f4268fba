//! `stripe-billing-worker doctor` end to end: the real binary against a test database and the
//! local Stripe emulator. A healthy set-up passes every check, and docs/operations.md shows the
//! real output of a healthy and a broken set-up, which this file compares with a run. Each broken
//! set-up, which must give exactly its own ✗ (with a fix) and exit code 1: doctor_account.rs
//! (what Stripe holds) and doctor_database.rs (what the database holds or lets the worker do).
mod doctor_support;
mod worker_support;

use doctor_support::*;
use serde_json::json;

#[tokio::test]
async fn a_healthy_set_up_passes_every_check() {
    let a = account().await;
    let r = a.doctor().await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    let names: Vec<&str> = r
        .checks()
        .iter()
        .map(|l| unmarked(l).split(':').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "database",
            "webhook signing secret",
            "security report",
            "Stripe key",
            "plan pack",
            "plan pro",
            "webhook endpoint",
            "customer portal",
            "NOTIFY"
        ],
        "{}",
        r.out
    );
    assert_eq!(r.marked("✓ ").len(), names.len(), "{}", r.out);
    assert!(r.out.contains("(key sk_test_…)"), "{}", r.out);
    assert!(r.out.trim_end().ends_with("9 passed"), "{}", r.out);
}

/// docs/operations.md's doctor output blocks (```text after `<!-- doctor-output: NAME -->`), `…`
/// standing for what differs between runs (paths, ports, ids, timings).
fn readme_block(name: &str) -> Vec<String> {
    let path = shipped_sql::upgrade::repo_root().join("docs/operations.md");
    let readme = std::fs::read_to_string(path).unwrap();
    let marker = format!("<!-- doctor-output: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("docs/operations.md has no {marker}"))
        .1;
    let block = after
        .split_once("```text\n")
        .expect("a text block after the marker")
        .1
        .split_once("```")
        .expect("closed block")
        .0;
    block.lines().map(str::to_string).collect()
}

/// Whether `actual` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let Some((first, rest)) = parts.split_first() else {
        return true;
    };
    let Some(mut left) = actual.strip_prefix(first) else {
        return false;
    };
    for (i, part) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return left.ends_with(part);
        }
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    parts.len() == 1 && left.is_empty()
}

fn assert_readme_shows(name: &str, report: &Report) {
    let shown = readme_block(name);
    let real: Vec<&str> = report.out.lines().collect();
    let same = shown.len() == real.len() && shown.iter().zip(&real).all(|(s, r)| matches(s, r));
    assert!(
        same,
        "docs/operations.md's {name:?} doctor output differs from a real run:\n--- docs\n{}\n--- run\n{}",
        shown.join("\n"),
        report.out
    );
}

#[tokio::test]
async fn the_readme_shows_real_doctor_output() {
    let healthy = account().await;
    let r = healthy.doctor().await;
    assert_eq!(r.code, Some(0), "{}", r.out);
    assert_readme_shows("healthy", &r);

    let broken = account().await;
    broken
        .owner
        .batch_execute(
            "UPDATE billing.webhook_secrets SET expires_at = now() - interval '1 day';
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
             VALUES ('team', 'price_once', 'Team', 'subscription', 5000);",
        )
        .await
        .unwrap();
    broken
        .emulator
        .post("/_emulator/portal_configuration", json!({"exists": false}))
        .await;
    let r = broken.doctor().await;
    assert_eq!(r.code, Some(1), "{}", r.out);
    assert_readme_shows("broken", &r);
}

#[test]
fn wildcards_match_any_text() {
    assert!(matches("a…c", "abbbc"));
    assert!(matches("✓ NOTIFY: … in … ms", "✓ NOTIFY: sent in 3 ms"));
    assert!(matches("plain", "plain"));
    assert!(!matches("plain", "plainer"));
    assert!(!matches("a…c", "abd"));
}
