//! The ledger against a model (issue 20, "prove it with a model, not examples"): random
//! customer lifecycles — token packs, auto top-ups, subscriptions with trials and renewals, refunds (partial,
//! full, failed), disputes (won, lost, open, inquiries), credit notes (pre-payment, refunding,
//! to the balance, out of band, voided), cancellation, a deleted customer — rendered as the
//! events Stripe sends in both API shapes and delivered signed to billing.handle_stripe_webhook
//! in order, reversed, shuffled, and shuffled with every event twice. Each case asserts:
//!   (a) the same holdings whatever the order and duplication;
//!   (b) the holdings the model (model_support, written from the rules in docs/events-and-refunds.md) says;
//!   (c) no invoice grants more than its plans' tokens times the part of a period it paid for;
//!   (d) no purchase keeps more tokens than the money it kept bought.
//! A case that spends does so between the purchases and the money reports, so what it spends
//! from is well defined. MODEL_CASES sets the number of cases per API shape (default 120);
//! MODEL_SEED the first seed (a failure prints the seed that replays it).
mod model_support;

use model_support::render::{render, Phase, Rendered};
use model_support::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use stripe_billing_tests::events::{self, unix_now, Shape};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

const DEFAULT_CASES: u64 = 120;

const ORDERS: [&str; 4] = [
    "in order",
    "reversed",
    "shuffled",
    "shuffled, every event twice",
];

async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES
                 ('pack', 'price_pack', 'Pack', 'token_pack', {PACK_TOKENS});",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    for (i, (price, monthly, unit)) in PLANS.iter().enumerate() {
        owner
            .execute(
                "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
                 VALUES ($1, $2, $1, 'subscription', $3)",
                &[&format!("plan{i}"), price, monthly],
            )
            .await
            .unwrap();
        // The catalog's amounts, as the worker syncs them from Stripe (basil proration lines
        // carry none).
        let stripe_price = serde_json::json!({"object": "price", "id": price, "active": true,
            "currency": "usd", "unit_amount": unit, "unit_amount_decimal": unit.to_string(),
            "recurring": {"interval": "month", "interval_count": 1}});
        owner
            .execute("SELECT billing.store_price($1, now())", &[&stripe_price])
            .await
            .unwrap();
    }
    (db, owner)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

/// What the worker would do for the line items a session's event asked for.
async fn serve_line_items(owner: &Client, r: &Rendered) {
    let rows = owner
        .query(
            "SELECT id, params ->> 'object_id' FROM billing.stripe_requests
             WHERE user_id = $1 AND kind = 'line_items' AND status = 'pending'",
            &[&r.user],
        )
        .await
        .unwrap();
    for row in rows {
        let (id, session): (Uuid, String) = (row.get(0), row.get(1));
        owner
            .execute(
                "SELECT billing.store_line_items($1, $2)",
                &[&session, &r.line_items[&session]],
            )
            .await
            .unwrap();
        owner
            .execute(
                "UPDATE billing.stripe_requests SET status = 'succeeded', result = '{}', finished_at = now()
                 WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
    }
}

/// The user's holdings with grant keys named by their place in the lifecycle (ids differ
/// between deliveries): balance, debt, and per grant (tokens, net revoked, source).
async fn holdings(owner: &Client, r: &Rendered) -> Value {
    let mut names = BTreeMap::new();
    for (i, s) in r.sessions.iter().enumerate() {
        names.insert(s.clone(), format!("pack{i}"));
    }
    for (i, pi) in r.top_ups.iter().enumerate() {
        names.insert(pi.clone(), format!("top_up{i}"));
    }
    for (k, inv) in r.invoices.iter().enumerate() {
        names.insert(inv.clone(), format!("invoice{k}"));
        names.insert(format!("{inv}:upgrade"), format!("invoice{k}:upgrade"));
    }
    let rows = owner
        .query(
            "SELECT grant_key, tokens, billing._net_revoked(id), source FROM billing.token_grants
             WHERE user_id = $1 AND source <> 'restored'",
            &[&r.user],
        )
        .await
        .unwrap();
    let mut grants = serde_json::Map::new();
    for row in rows {
        let key: String = row.get(0);
        let name = names.get(&key).cloned().unwrap_or(key);
        grants.insert(
            name,
            json!([
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
                row.get::<_, String>(3)
            ]),
        );
    }
    let row = owner
        .query_one(
            "SELECT billing.token_balance($1), billing.token_debt($1),
                    (SELECT coalesce(sum(tokens), 0)::bigint FROM billing.token_reversals
                     WHERE user_id = $1 AND kind = 'downgrade')",
            &[&r.user],
        )
        .await
        .unwrap();
    json!({"balance": row.get::<_, i64>(0), "debt": row.get::<_, i64>(1), "taken_back": row.get::<_, i64>(2),
           "grants": grants})
}

/// Delivers one rendering of the lifecycle in the order `order` names; returns the holdings.
async fn deliver(
    owner: &Client,
    life: &Lifecycle,
    r: &Rendered,
    order: usize,
    spent: i64,
    rng: &mut rand::rngs::StdRng,
) -> Result<(Value, usize), String> {
    let mut delivered = 0;
    // With a spend, the purchases come first (in the order asked), then the spend, then the
    // money reports; without one, everything in one stream.
    let phases: Vec<Vec<Value>> = if life.spend_permille > 0 {
        let of = |p: Phase| -> Vec<Value> {
            r.events
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, e)| e.clone())
                .collect()
        };
        vec![of(Phase::Purchase), of(Phase::Money)]
    } else {
        vec![r.events.iter().map(|(_, e)| e.clone()).collect()]
    };
    let all: Vec<Value> = r.events.iter().map(|(_, e)| e.clone()).collect();
    for (i, mut stream) in phases.into_iter().enumerate() {
        match order {
            0 => {}
            1 => stream.reverse(),
            2 => stream.shuffle(rng),
            _ => {
                // Every event twice; the last stream also repeats everything before it.
                let again = if i > 0 { all.clone() } else { stream.clone() };
                stream.extend(again);
                stream.shuffle(rng);
            }
        }
        delivered += stream.len();
        for e in &stream {
            let answer = events::deliver(owner, e)
                .await
                .map_err(|err| format!("{} refused: {err:?}", e["type"]))?;
            if answer["received"] != true {
                return Err(format!("{} not received: {answer}", e["type"]));
            }
            if rng.random_bool(0.3) {
                serve_line_items(owner, r).await;
            }
        }
        serve_line_items(owner, r).await;
        if i == 0 && spent > 0 {
            owner
                .execute("SELECT billing.spend_tokens($1, $2)", &[&r.user, &spent])
                .await
                .map_err(|err| format!("spending {spent}: {err:?}"))?;
        }
    }
    let ids: Vec<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let waiting = owner
        .query(
            "SELECT type, error_code, error FROM billing.stripe_events
             WHERE id = ANY($1) AND processed_at IS NULL",
            &[&ids],
        )
        .await
        .unwrap();
    if !waiting.is_empty() {
        let list: Vec<String> = waiting
            .iter()
            .map(|w| {
                format!(
                    "{} {:?} {:?}",
                    w.get::<_, String>(0),
                    w.get::<_, Option<String>>(1),
                    w.get::<_, Option<String>>(2)
                )
            })
            .collect();
        return Err(format!("events not applied: {list:?}"));
    }
    Ok((holdings(owner, r).await, delivered))
}

/// One case: the lifecycle drawn from `seed`, delivered in every order; checks (a) to (d).
async fn run_case(owner: &Client, shape: Shape, seed: u64) -> Result<(Value, usize), String> {
    let life = generate(&mut rand::rngs::StdRng::seed_from_u64(seed));
    run_lifecycle(owner, shape, &life, seed).await
}

/// `life` delivered in every order (ids and shuffles drawn from `seed`); checks (a) to (d).
async fn run_lifecycle(
    owner: &Client,
    shape: Shape,
    life: &Lifecycle,
    seed: u64,
) -> Result<(Value, usize), String> {
    let life = life.clone();
    let mut delivered = 0;
    let now = unix_now();
    let mut first: Option<Value> = None;
    for (o, name) in ORDERS.iter().enumerate() {
        // Fresh ids for every delivery and shape: one database serves every case.
        let stream = seed.wrapping_mul(31).wrapping_add(o as u64) ^ ((shape as u64) << 40);
        let mut rng = rand::rngs::StdRng::seed_from_u64(stream);
        let r = render(&life, shape, &mut rng, now);
        let model = expected(&life, &r.sessions, &r.invoices, &r.top_ups);
        let (got, n) = deliver(owner, &life, &r, o, model.spent, &mut rng)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        delivered += n;
        let mut names = BTreeMap::new();
        for (i, s) in r.sessions.iter().enumerate() {
            names.insert(s.clone(), format!("pack{i}"));
        }
        for (i, pi) in r.top_ups.iter().enumerate() {
            names.insert(pi.clone(), format!("top_up{i}"));
        }
        for (k, inv) in r.invoices.iter().enumerate() {
            names.insert(inv.clone(), format!("invoice{k}"));
            names.insert(format!("{inv}:upgrade"), format!("invoice{k}:upgrade"));
        }
        // (c) no invoice grants more than the part of a period it paid for.
        for (k, inv) in life.invoices.iter().enumerate() {
            let g = &got["grants"];
            let tokens = g[format!("invoice{k}")][0].as_i64().unwrap_or(0)
                + g[format!("invoice{k}:upgrade")][0].as_i64().unwrap_or(0);
            if tokens as f64 > period_cap(inv) + 1e-9 {
                return Err(format!(
                    "{name}: invoice{k} granted {tokens}, more than the {} its lines paid for",
                    period_cap(inv)
                ));
            }
        }
        // (d) tokens kept never exceed what the money kept bought: the tokens the rules sell
        // for the purchase, times the share of its payment not reversed (each grant rounds
        // once, by at most half a token).
        for (key, g) in &model.grants {
            let got_g = &got["grants"][&names[key]];
            let (tokens, revoked) = (
                got_g[0].as_i64().unwrap_or(0),
                got_g[1].as_i64().unwrap_or(0),
            );
            if g.paid > 0
                && 2 * (tokens - revoked) * g.paid > 2 * g.tokens * (g.paid - g.reversed) + g.paid
            {
                return Err(format!(
                    "{name}: {} keeps {} of {tokens} tokens, but {} of the {} cents that bought {} were reversed",
                    names[key],
                    tokens - revoked,
                    g.reversed,
                    g.paid,
                    g.tokens
                ));
            }
        }
        // (b) the model's holdings.
        let mut want_grants = serde_json::Map::new();
        for (key, g) in &model.grants {
            want_grants.insert(names[key].clone(), json!([g.tokens, g.revoked(), g.source]));
        }
        let net = model.balance_less_debt();
        let want = json!({"balance": net.max(0), "debt": (-net).max(0), "taken_back": model.taken_back,
                          "grants": want_grants});
        if got != want {
            return Err(format!(
                "{name}: holdings differ from the model\n  got  {got}\n  want {want}"
            ));
        }
        // (a) the same holdings in every order.
        match &first {
            None => first = Some(got),
            Some(f) if *f != got => {
                return Err(format!(
                    "{name} differs from {}\n  got   {got}\n  first {f}",
                    ORDERS[0]
                ))
            }
            Some(_) => {}
        }
    }
    Ok((first.expect("four orders"), delivered))
}

async fn run(shape: Shape) {
    let (_db, owner) = setup().await;
    let cases = env_u64("MODEL_CASES").unwrap_or(DEFAULT_CASES);
    let start = env_u64("MODEL_SEED").unwrap_or(1);
    let began = std::time::Instant::now();
    // What the cases exercised, so a generator that stopped drawing something shows.
    let (mut events, mut revoked, mut debts, mut taken, mut sources) =
        (0, 0, 0, 0, BTreeMap::new());
    for seed in start..start + cases {
        match run_case(&owner, shape, seed).await {
            Ok((h, n)) => {
                if std::env::var("MODEL_PROGRESS").is_ok() && seed % 25 == 0 {
                    eprintln!("{shape:?} seed {seed}: {:?}", began.elapsed());
                }
                events += n;
                debts += (h["debt"].as_i64() > Some(0)) as usize;
                taken += (h["taken_back"].as_i64() > Some(0)) as usize;
                let grants = h["grants"].as_object().expect("grants");
                revoked += grants.values().any(|g| g[1].as_i64() > Some(0)) as usize;
                for g in grants.values() {
                    *sources
                        .entry(g[2].as_str().unwrap_or("").to_string())
                        .or_insert(0) += 1;
                }
            }
            Err(e) => {
                let life = generate(&mut rand::rngs::StdRng::seed_from_u64(seed));
                panic!(
                    "{shape:?} seed {seed}: {e}\nlifecycle: {life:#?}\nreplay: MODEL_SEED={seed} MODEL_CASES=1"
                );
            }
        }
    }
    eprintln!(
        "ledger_model {shape:?}: {cases} cases x {} orders, {events} events delivered in {:?}; \
         {revoked} cases revoked tokens, {taken} took a downgrade back, {debts} ended in debt; \
         grants by source {sources:?}",
        ORDERS.len(),
        began.elapsed()
    );
    assert_books(&owner).await;
}

/// Every book adds up (as refunds_support checks): grants, spends and debts against their
/// allocations and settlements.
async fn assert_books(owner: &Client) {
    let wrong: i64 = owner
        .query_one(
            "SELECT (SELECT count(*) FROM billing.token_grants g WHERE g.tokens - g.remaining <>
                        (SELECT coalesce(sum(a.tokens), 0) FROM billing.token_spend_allocations a WHERE a.grant_id = g.id))
                  + (SELECT count(*) FROM billing.token_spends s WHERE s.amount <>
                        (SELECT coalesce(sum(a.tokens), 0) FROM billing.token_spend_allocations a WHERE a.spend_id = s.id))
                  + (SELECT count(*) FROM billing.token_debts d WHERE d.tokens - d.remaining <>
                        (SELECT coalesce(sum(x.tokens), 0) FROM billing.token_debt_settlements x WHERE x.debt_id = d.id))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "the books do not add up");
}

#[tokio::test]
async fn random_lifecycles_in_the_2023_08_16_shape_end_as_the_model_says() {
    run(Shape::V2023).await;
}

#[tokio::test]
async fn random_lifecycles_in_the_basil_shape_end_as_the_model_says() {
    run(Shape::Basil).await;
}

/// Found by the model (seed 15, both shapes): a refund that failed after everything its pack
/// gave had been spent restores only by forgiving the pack's debt, no new grant; _restore then
/// read the grant it had not made and the event failed (55000), leaving the debt owed.
#[tokio::test]
async fn a_failed_refund_of_a_spent_pack_forgives_its_debt() {
    let (_db, owner) = setup().await;
    let life = Lifecycle {
        packs: vec![Pack {
            quantity: 1,
            free: false,
            money: vec![MoneyOp::Refund {
                amount: PACK_PRICE,
                fails: true,
            }],
        }],
        top_ups: Vec::new(),
        invoices: Vec::new(),
        canceled: false,
        customer_deleted: false,
        spend_permille: 1000,
    };
    for shape in Shape::ALL {
        if let Err(e) = run_lifecycle(&owner, shape, &life, 7).await {
            panic!("{shape:?}: {e}");
        }
    }
}
