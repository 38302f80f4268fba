//! Contract tests: the lists that the SQL (`sql/<concept>/*.sql`) and the Rust code both keep,
//! each read from the SQL as written and compared both ways with the Rust side (issue 19).
//!
//! - applied event types: `stripe_billing_core::event::APPLIED_TYPES` (what endpoints are asked
//!   for, what catch-up and the doctor read) against the arms of `billing._apply`;
//! - waiting SQLSTATEs: `stripe_billing_core::errors::WAITING` against every SQL list of `BL…`
//!   codes;
//! - request kinds: [`RequestKind`] against the CHECK on `billing.stripe_requests.kind` and every
//!   list or comparison of kinds in the SQL;
//! - Stripe metadata keys: what the worker writes on customers, Checkout Sessions and their
//!   subscriptions against what the SQL reads.
//!
//! A `LIKE` arm of `billing._apply` is only checked to match some applied type: which other
//! Stripe types it also catches cannot be told without Stripe's whole list of types.
//!
//! These tests live in the worker crate, the one that sees both sides (the worker's types
//! are private to it). The SQL is read from the sources, not from the generated copies in
//! `sql/generated/` and `supabase/`, whose freshness other tests check. No Postgres is needed.

mod sql_text;

use std::collections::BTreeSet;

use serde_json::{json, Value};
use stripe_billing_core::errors::WAITING;
use stripe_billing_core::event::APPLIED_TYPES;
use uuid::Uuid;

use crate::queue::kinds::checkout::{customer_form, session_form, CheckoutParams};
use crate::queue::kinds::top_up::{intent_form, TopUpParams};
use crate::queue::RequestKind;
use sql_text::{like, literal_lists, read_sql, sql_sources, statement, strip_comments, Literals};

/// Event types of our own, not Stripe's: retrieved objects the worker hands to
/// `billing.ingest_retrieved`. No endpoint sends them, so `APPLIED_TYPES` must not list them.
const OURS: &[&str] = &[
    "billing.subscription.retrieved",
    "billing.invoice.retrieved",
    "billing.refund.retrieved",
];

/// Stripe types `billing._apply` applies when an endpoint sends them but that endpoints are not
/// asked for, each with the applied type that reports the same change.
const APPLIED_WHEN_SENT: &[(&str, &str)] = &[];

/// Stripe metadata keys the worker writes for people reading the Dashboard; no SQL reads them
/// (the request row, which `request_id` names, holds the price, plan and project).
const METADATA_FOR_PEOPLE: &[&str] = &["price_id", "project_id"];

/// One `WHEN … THEN` arm of `billing._apply`'s CASE: the event types it names.
#[derive(Debug)]
struct Arm {
    condition: String,
    types: Vec<String>,
    patterns: Vec<String>,
}

impl Arm {
    fn applies(&self, event_type: &str) -> bool {
        self.types.iter().any(|t| t == event_type)
            || self.patterns.iter().any(|p| like(p, event_type))
    }
}

/// The arms of the CASE in `billing._apply` (sql/events/functions.sql), up to its ELSE.
fn apply_arms() -> Vec<Arm> {
    let sql = strip_comments(&read_sql("events/functions.sql"));
    let body = statement(&sql, "CREATE OR REPLACE FUNCTION billing._apply(", "$$;");
    let case = &body[body
        .find("CASE")
        .expect("billing._apply dispatches with a CASE")..];
    let case = &case[..case
        .find("ELSE")
        .expect("the CASE of billing._apply has an ELSE")];
    case.split("WHEN ")
        .skip(1)
        .map(|arm| {
            let condition = arm.split(" THEN").next().unwrap().trim().to_string();
            let types = literal_lists(&condition)
                .into_iter()
                .filter(|l| l.subject == "'type'" && matches!(l.operator.as_str(), "IN" | "="))
                .flat_map(|l| l.values)
                .collect();
            let patterns = literal_lists(&condition)
                .into_iter()
                .filter(|l| l.subject == "'type'" && l.operator == "LIKE")
                .flat_map(|l| l.values)
                .collect();
            Arm {
                condition,
                types,
                patterns,
            }
        })
        .collect()
}

#[test]
fn every_arm_of_apply_names_its_event_types() {
    let arms = apply_arms();
    assert!(
        arms.len() > 5,
        "billing._apply's arms were not found: {arms:?}"
    );
    for arm in &arms {
        assert!(
            !arm.types.is_empty() || !arm.patterns.is_empty(),
            "the arm `WHEN {}` of billing._apply (sql/events/functions.sql) names no event type \
             (ev ->> 'type' IN/=/LIKE …): name them, so this contract can check them",
            arm.condition
        );
    }
}

#[test]
fn apply_applies_exactly_the_applied_types() {
    let arms = apply_arms();
    let applied: BTreeSet<&str> = APPLIED_TYPES.iter().copied().collect();
    let when_sent: BTreeSet<&str> = APPLIED_WHEN_SENT.iter().map(|(t, _)| *t).collect();
    let fix = "fix APPLIED_TYPES (core/src/event/mod.rs, and docs/events-and-refunds.md's list of events to enable) \
               or billing._apply (sql/events/functions.sql)";
    for t in APPLIED_TYPES {
        assert!(
            arms.iter().any(|a| a.applies(t)),
            "APPLIED_TYPES asks endpoints for {t}, but no arm of billing._apply applies it: {fix}"
        );
    }
    for arm in &arms {
        for t in &arm.types {
            assert!(
                applied.contains(t.as_str())
                    || OURS.contains(&t.as_str())
                    || when_sent.contains(t.as_str()),
                "billing._apply applies {t}, but APPLIED_TYPES does not list it, so endpoints are \
                 not asked for it and catch-up never fetches it: {fix} (or, for a type of our \
                 own, OURS in worker/src/contracts.rs)"
            );
        }
        for p in &arm.patterns {
            assert!(
                APPLIED_TYPES.iter().any(|t| like(p, t)),
                "billing._apply applies LIKE '{p}', which matches no type in APPLIED_TYPES: {fix}"
            );
        }
    }
    for ours in OURS {
        assert!(
            ours.starts_with("billing.") && !applied.contains(ours),
            "{ours} is our own event type, which no Stripe endpoint sends: keep it out of APPLIED_TYPES"
        );
        assert!(
            arms.iter().any(|a| a.types.iter().any(|t| t == ours)),
            "billing._apply no longer applies {ours}: remove it from OURS in worker/src/contracts.rs"
        );
    }
    for (t, covered_by) in APPLIED_WHEN_SENT {
        assert!(
            !applied.contains(t) && applied.contains(covered_by),
            "{t} is applied when sent and {covered_by} asked for instead: fix APPLIED_WHEN_SENT \
             in worker/src/contracts.rs or APPLIED_TYPES"
        );
        assert!(
            arms.iter().any(|a| a.applies(t)),
            "billing._apply no longer applies {t}: remove it from APPLIED_WHEN_SENT in worker/src/contracts.rs"
        );
    }
}

#[test]
fn every_sql_list_of_waiting_codes_is_core_s() {
    let waiting: BTreeSet<&str> = WAITING.iter().copied().collect();
    let mut sites = Vec::new();
    for (path, sql) in sql_sources() {
        for list in literal_lists(&sql) {
            if !list.values.iter().any(|v| is_bl_code(v)) || list.operator == "=" {
                continue;
            }
            let codes: BTreeSet<&str> = list.values.iter().map(String::as_str).collect();
            assert_eq!(
                codes, waiting,
                "sql/{path}: `{} {} (…)` lists other codes than stripe_billing_core::errors::WAITING \
                 (core/src/errors.rs): make the two the same",
                list.subject, list.operator
            );
            sites.push(path.clone());
        }
    }
    // _apply_waiting, reprocess_events and health() at least: a parser that finds none is broken.
    assert!(
        sites.len() >= 3,
        "the SQL lists of waiting codes were not found: {sites:?}"
    );
}

fn is_bl_code(v: &str) -> bool {
    v.len() == 5 && v.starts_with("BL")
}

fn kind_names(filter: impl Fn(RequestKind) -> bool) -> BTreeSet<&'static str> {
    RequestKind::ALL
        .into_iter()
        .filter(|k| filter(*k))
        .map(RequestKind::as_str)
        .collect()
}

#[test]
fn the_request_kinds_are_the_check_s() {
    let schema = read_sql("requests/schema.sql");
    let table = statement(&schema, "CREATE TABLE billing.stripe_requests (", ");");
    let check = literal_lists(table)
        .into_iter()
        .find(|l| l.subject == "(kind" && l.operator == "IN")
        .expect("billing.stripe_requests has CHECK (kind IN (…))");
    let in_sql: BTreeSet<&str> = check.values.iter().map(String::as_str).collect();
    assert_eq!(
        kind_names(|_| true),
        in_sql,
        "the worker's RequestKind (worker/src/queue/kinds/mod.rs, left) and the CHECK on \
         billing.stripe_requests.kind (sql/requests/schema.sql, right) differ: make them the same"
    );
}

/// Whether `subject` is a `kind` column (`kind`, `r.kind`, `(kind` of a CHECK), not `relkind`.
fn is_kind_column(subject: &str) -> bool {
    subject.trim_start_matches('(').rsplit('.').next() == Some("kind")
}

#[test]
fn every_sql_mention_of_request_kinds_is_a_kind_the_worker_serves() {
    let all = kind_names(|_| true);
    let sessions = kind_names(RequestKind::awaited);
    let retrievals = kind_names(RequestKind::retrieval);
    let sources = sql_sources();
    // Every kind some CHECK allows, of requests, plans, spends, reversals…: a kind compared
    // anywhere must be one of them, so a misspelt request kind cannot pass for another table's.
    let checked: BTreeSet<String> = sources
        .iter()
        .flat_map(|(_, sql)| literal_lists(sql))
        .filter(|l| l.subject == "(kind" && l.operator == "IN")
        .flat_map(|l| l.values)
        .collect();
    let mut lists = 0;
    for (path, sql) in &sources {
        for site in literal_lists(sql) {
            if is_kind_column(&site.subject) {
                for v in &site.values {
                    assert!(
                        checked.contains(v),
                        "sql/{path}: `{site}`: no CHECK allows the kind {v:?} (a typo?)"
                    );
                }
            }
            let mentions_kinds = is_kind_column(&site.subject)
                || site.subject == "'kind',"
                || site.subject.ends_with("_request_retrieval(");
            if !mentions_kinds || !site.values.iter().any(|v| all.contains(v.as_str())) {
                continue; // a kind of something else (plans, spends, reversals…)
            }
            let values: BTreeSet<&str> = site.values.iter().map(String::as_str).collect();
            assert!(
                values.is_subset(&all),
                "sql/{path}: `{site}` names request kinds the worker's RequestKind does not have"
            );
            // The CHECK itself, `(kind IN (…))`, is the_request_kinds_are_the_check_s's.
            if site.operator == "IN" && site.subject != "(kind" {
                lists += 1;
                assert!(
                    values == sessions || values == retrievals,
                    "sql/{path}: `{site}` is neither the sessions a user waits for {sessions:?} \
                     nor the retrievals {retrievals:?} (RequestKind::awaited, RequestKind::retrieval): fix one side"
                );
            }
            if site.operator == "(" || site.operator == "," {
                assert!(
                    values.is_subset(&retrievals),
                    "sql/{path}: `{site}` queues a retrieval of a kind RequestKind does not retrieve"
                );
            }
        }
    }
    assert!(lists >= 3, "the SQL lists of request kinds were not found");
}

/// Every metadata key the worker writes: on customers, and on Checkout Sessions and the
/// subscriptions they start, in both modes with every optional parameter set.
fn metadata_written() -> BTreeSet<String> {
    let user = Uuid::from_u128(1);
    let mut forms = vec![customer_form(user, Some("u@a.test"))];
    for mode in ["subscription", "payment"] {
        let params = CheckoutParams::from_json(&json!({
            "price_id": "price_1", "plan_id": "plan", "mode": mode, "quantity": 2,
            "success_url": "https://a.test/ok", "cancel_url": "https://a.test/no",
            "project_id": Uuid::from_u128(3).to_string(), "coupon": "c", "email": "u@a.test",
            "allow_promotion_codes": true, "collect_tax_ids": true, "save_payment_method": true,
        }))
        .unwrap();
        let session = session_form(Uuid::from_u128(2), user, "cus_1", &params);
        forms.push(session["subscription_data"].clone());
        forms.push(session);
    }
    let top_up = TopUpParams::from_json(&json!({
        "plan_id": "pack", "price_id": "price_1", "tokens": 10, "amount": 100, "currency": "usd",
    }))
    .unwrap();
    forms.push(intent_form(
        Uuid::from_u128(4),
        user,
        "cus_1",
        "pm_1",
        &top_up,
    ));
    forms
        .iter()
        .filter_map(|f| f.get("metadata").and_then(Value::as_object))
        .flat_map(|m| m.keys().cloned())
        .collect()
}

/// Every key the SQL reads from a Stripe object's metadata (`-> 'metadata' ->> 'key'`, and
/// `subscription_metadata`, the normalised invoice's copy of its subscription's).
fn metadata_read() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for (_, sql) in sql_sources() {
        for site in literal_lists(&sql) {
            if site.operator == "->>" && site.subject.ends_with("metadata'") {
                keys.extend(site.values);
            }
        }
    }
    keys
}

#[test]
fn the_sql_reads_the_metadata_keys_the_worker_writes() {
    let written = metadata_written();
    let read = metadata_read();
    assert!(
        read.contains("user_id"),
        "the SQL's metadata reads were not found: {read:?}"
    );
    for key in &read {
        assert!(
            written.contains(key),
            "the SQL reads metadata key {key:?}, which the worker never writes \
             (worker/src/queue/kinds/checkout.rs: customer_form, session_form): fix one side"
        );
    }
    for key in &written {
        assert!(
            read.contains(key) || METADATA_FOR_PEOPLE.contains(&key.as_str()),
            "the worker writes metadata key {key:?}, which no SQL reads: read it, stop writing \
             it, or name it in METADATA_FOR_PEOPLE (worker/src/contracts.rs)"
        );
    }
    for key in METADATA_FOR_PEOPLE {
        assert!(
            written.contains(*key) && !read.contains(*key),
            "METADATA_FOR_PEOPLE (worker/src/contracts.rs) names {key:?}, which the worker does \
             not write or the SQL reads: remove it there"
        );
    }
}

#[test]
fn the_parser_reads_lists_comparisons_and_likes() {
    let sql = "WHERE e.error_code IN ('BL007', 'BL010') -- IN ('BL001')\n\
               AND ev ->> 'type' LIKE 'refund.%' AND r.kind = 'checkout' \
               AND s -> 'metadata' ->> 'user_id' AND note = 'it''s -- not a comment' \
               AND x NOT IN ('a') AND f('b', 'c') AND y IN ('d', z)";
    let lists: Vec<String> = literal_lists(sql).iter().map(Literals::to_string).collect();
    assert_eq!(
        lists,
        [
            "e.error_code IN ('BL007', 'BL010')",
            "ev ->> ('type')",
            "'type' LIKE ('refund.%')",
            "r.kind = ('checkout')",
            "'metadata' ->> ('user_id')",
            "note = ('it''s -- not a comment')",
            "x IN ('a')",
            "f( 'b'",
            "'b', 'c'",
            "( 'd'",
        ]
    );
    assert!(like("charge.dispute.%", "charge.dispute.closed"));
    assert!(like("invoice_payment.%", "invoice_payment.paid"));
    assert!(!like("charge.%", "refund.created"));
    assert!(!like("refund.%", "refund"));
    assert!(is_bl_code("BL007") && !is_bl_code("BL0070") && !is_bl_code("22P02"));
}
