//! Fixtures and helpers of refunds.rs: a shop on the emulator, signed delivery, what the worker would fetch, and the books.
#![allow(dead_code)]

use crate::common::seed_plans;
use crate::worker_support::Emulator;
use reqwest::Method;
use serde_json::{json, Value};
use stripe_billing_tests::events;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

pub const VERSIONS: [&str; 2] = ["2023-08-16", "2025-03-31.basil"];

/// A Stripe account (the emulator) with one customer, the user's.
pub struct Shop {
    pub em: Emulator,
    pub user: Uuid,
    pub customer: String,
}

/// What one paid Checkout Session bought.
pub struct Bought {
    pub session: String,
    pub charge: String,
}

impl Shop {
    pub async fn open(version: &str) -> Shop {
        let em = Emulator::start_with(None, &["--api-version", version]).await;
        let user = Uuid::new_v4();
        let (status, c) = em
            .stripe(
                Method::POST,
                "/v1/customers",
                &format!("email=u%40example.com&metadata[user_id]={user}"),
            )
            .await;
        assert_eq!(status, 200, "{c}");
        let customer = c["id"].as_str().unwrap().to_string();
        Shop { em, user, customer }
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, v) = self.em.stripe(Method::GET, path, "").await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    pub async fn checkout(&self, form: &str) -> Value {
        let (status, s) = self
            .em
            .stripe(
                Method::POST,
                "/v1/checkout/sessions",
                &format!("customer={}&client_reference_id={}&success_url=https://app.example.test/ok&{form}", self.customer, self.user),
            )
            .await;
        assert_eq!(status, 200, "{s}");
        let id = s["id"].as_str().unwrap();
        self.em.complete_checkout(id).await;
        self.get(&format!("/v1/checkout/sessions/{id}")).await
    }

    /// Buys `quantity` token packs (500 tokens and 900 cents each).
    pub async fn buy_packs(&self, quantity: u32) -> Bought {
        let s = self
            .checkout(&format!(
                "mode=payment&line_items[0][price]=price_pack&line_items[0][quantity]={quantity}"
            ))
            .await;
        let charge = self
            .em
            .charge_of(s["payment_intent"].as_str().unwrap())
            .await;
        Bought {
            session: s["id"].as_str().unwrap().to_string(),
            charge,
        }
    }

    /// Subscribes to price_pro (1000 tokens a month for 2000 cents); returns the first invoice
    /// and its charge.
    pub async fn subscribe(&self) -> (String, String) {
        let s = self
            .checkout("mode=subscription&line_items[0][price]=price_pro&line_items[0][quantity]=1")
            .await;
        let sub = self
            .get(&format!(
                "/v1/subscriptions/{}",
                s["subscription"].as_str().unwrap()
            ))
            .await;
        let invoice = sub["latest_invoice"].as_str().unwrap().to_string();
        let charge = self.charge_of_invoice(&invoice).await;
        (invoice, charge)
    }

    /// Renews the subscription `invoice` billed (the next period, paid); returns the renewal's
    /// invoice and its charge.
    pub async fn renew(&self, invoice: &str) -> (String, String) {
        let inv = self.get(&format!("/v1/invoices/{invoice}")).await;
        // Before basil an invoice names its subscription; from basil on its parent does.
        let sub = inv["subscription"]
            .as_str()
            .or(inv["parent"]["subscription_details"]["subscription"].as_str())
            .unwrap()
            .to_string();
        self.em
            .post(&format!("/_emulator/subscriptions/{sub}/renew"), json!({}))
            .await;
        let sub = self.get(&format!("/v1/subscriptions/{sub}")).await;
        let next = sub["latest_invoice"].as_str().unwrap().to_string();
        assert_ne!(next, invoice, "the renewal billed a new invoice");
        let charge = self.charge_of_invoice(&next).await;
        (next, charge)
    }

    /// The charge that paid `invoice`.
    pub async fn charge_of_invoice(&self, invoice: &str) -> String {
        // Before basil an invoice names its charge; from basil on its payments say (and
        // only basil has them to expand).
        let inv = self.get(&format!("/v1/invoices/{invoice}")).await;
        let inv = if inv.get("charge").is_some() {
            inv
        } else {
            self.get(&format!("/v1/invoices/{invoice}?expand[]=payments"))
                .await
        };
        match inv["charge"].as_str() {
            Some(ch) => ch.to_string(),
            None => {
                let pi = inv["payments"]["data"][0]["payment"]["payment_intent"]
                    .as_str()
                    .unwrap()
                    .to_string();
                self.em.charge_of(&pi).await
            }
        }
    }

    pub async fn refund(&self, charge: &str, amount: i64) {
        self.em
            .post(
                &format!("/_emulator/charges/{charge}/refund"),
                json!({"amount": amount}),
            )
            .await;
    }

    /// Opens a dispute of the whole charge; returns its id.
    pub async fn dispute(&self, charge: &str) -> String {
        let v = self
            .em
            .post(&format!("/_emulator/charges/{charge}/dispute"), json!({}))
            .await;
        let first: Value =
            serde_json::from_str(v["events"][0]["payload"].as_str().unwrap()).unwrap();
        first["data"]["object"]["id"].as_str().unwrap().to_string()
    }

    pub async fn close(&self, dispute: &str, won: bool) {
        self.em
            .post(
                &format!("/_emulator/disputes/{dispute}/close"),
                json!({"won": won}),
            )
            .await;
    }

    /// Issues a credit note; returns its id.
    pub async fn credit_note(&self, invoice: &str, amount: i64, how: &str) -> String {
        let mut body = json!({"amount": amount});
        if !how.is_empty() {
            body[how] = json!(true);
        }
        let v = self
            .em
            .post(&format!("/_emulator/invoices/{invoice}/credit_note"), body)
            .await;
        let last = v["events"].as_array().unwrap().last().unwrap().clone();
        let event: Value = serde_json::from_str(last["payload"].as_str().unwrap()).unwrap();
        assert_eq!(event["type"], "credit_note.created");
        event["data"]["object"]["id"].as_str().unwrap().to_string()
    }
}

pub async fn setup() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let owner = db.owner().await;
    seed_plans(&owner).await;
    owner
        .execute(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ($1)",
            &[&events::TEST_SECRET],
        )
        .await
        .unwrap();
    (db, owner)
}

/// Does what the worker does for the retrievals the events asked for: a session's line items,
/// an invoice with its payments and a credit note's refund, fetched from the emulator and
/// stored the worker's way.
pub async fn serve_retrievals(owner: &Client, shop: &Shop) {
    let pending = owner
        .query(
            "SELECT id, kind, params ->> 'object_id' FROM billing.stripe_requests
             WHERE kind IN ('line_items', 'refresh') AND status = 'pending' AND result IS NULL ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    for row in pending {
        let (id, kind, object): (Uuid, String, String) = (row.get(0), row.get(1), row.get(2));
        if kind == "line_items" {
            let items = shop
                .get(&format!("/v1/checkout/sessions/{object}/line_items"))
                .await;
            owner
                .execute(
                    "SELECT billing.store_line_items($1, $2)",
                    &[&object, &items],
                )
                .await
                .unwrap();
        } else if object.starts_with("pi_") {
            // A refund or dispute names a payment nothing links: which invoices it paid.
            let list = shop
                .get(&format!(
                    "/v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]={object}&limit=100"
                ))
                .await;
            owner
                .execute(
                    "SELECT billing.store_invoice_payments($1, $2)",
                    &[&object, &list],
                )
                .await
                .unwrap();
        } else {
            let path = if object.starts_with("in_") {
                format!("/v1/invoices/{object}?expand[]=payments")
            } else if object.starts_with("re_") {
                // A credit note's refund that no event reported.
                format!("/v1/refunds/{object}")
            } else {
                format!("/v1/subscriptions/{object}")
            };
            let obj = shop.get(&path).await;
            owner
                .execute("SELECT billing.ingest_retrieved($1, $2)", &[&id, &obj])
                .await
                .unwrap();
        }
        // Served: the worker would finish the row; keep it out of the next round.
        owner
            .execute(
                "UPDATE billing.stripe_requests SET status = 'succeeded', result = '{}', finished_at = now() WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
    }
}

/// Delivers events one by one, serving retrievals after each (a prompt worker).
pub async fn deliver_all(owner: &Client, shop: &Shop, events: &[Value]) {
    for e in events {
        let answer = events::deliver(owner, e).await.expect("acknowledged");
        assert_eq!(answer["received"], true, "{answer}");
        serve_retrievals(owner, shop).await;
    }
}

pub async fn one(owner: &Client, sql: &str, user: Uuid) -> i64 {
    owner.query_one(sql, &[&user]).await.unwrap().get(0)
}

pub async fn balance(owner: &Client, user: Uuid) -> i64 {
    one(owner, "SELECT billing.token_balance($1)", user).await
}

pub async fn debt(owner: &Client, user: Uuid) -> i64 {
    one(owner, "SELECT billing.token_debt($1)", user).await
}

pub async fn spend(owner: &Client, user: Uuid, amount: i64) {
    owner
        .execute("SELECT billing.spend_tokens($1, $2)", &[&user, &amount])
        .await
        .unwrap();
}

/// Every book adds up: grants' spent tokens are their allocations, spends are their
/// allocations, debts' settled tokens are their settlements, every grant's net revocation is
/// its purchase's reversed share.
pub async fn assert_books(owner: &Client) {
    let wrong: i64 = owner
        .query_one(
            "SELECT (SELECT count(*) FROM billing.token_grants g WHERE g.tokens - g.remaining <>
                        (SELECT coalesce(sum(a.tokens), 0) FROM billing.token_spend_allocations a WHERE a.grant_id = g.id))
                  + (SELECT count(*) FROM billing.token_spends s WHERE s.amount <>
                        (SELECT coalesce(sum(a.tokens), 0) FROM billing.token_spend_allocations a WHERE a.spend_id = s.id))
                  + (SELECT count(*) FROM billing.token_debts d WHERE d.tokens - d.remaining <>
                        (SELECT coalesce(sum(x.tokens), 0) FROM billing.token_debt_settlements x WHERE x.debt_id = d.id))
                  + (SELECT count(*) FROM billing.token_grants g JOIN billing.purchases p ON p.id = g.purchase_id
                     WHERE g.source <> 'restored' AND billing._net_revoked(g.id) <>
                        CASE WHEN billing._purchase_reversed(p) >= p.amount_paid THEN g.tokens
                             ELSE round(g.tokens::numeric * billing._purchase_reversed(p) / p.amount_paid) END)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "the books do not add up");
}

/// What the user holds: balance, debt, and each paid grant's net revocation.
pub async fn holdings(owner: &Client, user: Uuid) -> Value {
    owner
        .query_one(
            "SELECT json_build_object('balance', billing.token_balance($1), 'debt', billing.token_debt($1),
                 'revoked', (SELECT json_object_agg(g.grant_key, billing._net_revoked(g.id) ORDER BY g.grant_key)
                             FROM billing.token_grants g WHERE g.user_id = $1 AND g.source <> 'restored'))::jsonb",
            &[&user],
        )
        .await
        .unwrap()
        .get(0)
}
