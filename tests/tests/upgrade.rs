//! Upgrades: every released version, filled with realistic data and upgraded with
//! `ALTER EXTENSION stripe_billing UPDATE`, must equal a fresh install of the current version
//! (tables, columns, constraints, indexes, functions and their bodies, grants, policies,
//! comments) and keep its data with the ledger's invariants intact. The shipped upgrade script
//! must also be what `make upgrade-script` generates from the current sources.
use serde_json::Value;
use shipped_sql::upgrade;
use stripe_billing_tests::catalog;
use stripe_billing_tests::edition::{self, Edition};
use stripe_billing_tests::events::{self, unix_now, Invoice, Line, Period, Session, Shape, Sub};
use stripe_billing_tests::pg::{Caller, TestDb};
use stripe_emulator::store::ids;
use tokio_postgres::Client;
use uuid::Uuid;

#[test]
fn the_shipped_upgrade_script_is_generated_from_the_current_sources() {
    if !edition::full_installation() {
        // The generator reads the extension's install script from the server's directory.
        eprintln!("skipped: this server has no build of the extension");
        return;
    }
    let Some((path, generated)) = upgrade::generate_development_script().expect("generate") else {
        return; // the current version is released: its scripts are history
    };
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{} is out of date: run `make upgrade-script` and commit the result",
        path.display()
    );
}

/// Releases before 0.3.0 normalised events in Rust, and this library keeps only stubs of those
/// symbols (extension/src/legacy.rs: they say "run the update"). To fill such a release through
/// its own webhook entry point, the test stands in for the old library's normaliser: today's SQL
/// normaliser in a schema of its own, and for 0.1.0 the keys its effects read besides (what
/// 0.1.0's Rust added: the first item's price and quantity, the invoice's main line, upgrade
/// line and replaced price). The stand-in is a C function's replacement inside the extension,
/// so the upgrade replaces it like the function it stands for; its schema is dropped after.
async fn stand_in_for_the_old_normaliser(superuser: &Client, version: &str) {
    if upgrade::version_key(version) >= upgrade::version_key("0.3.0") {
        return;
    }
    let sql = std::fs::read_to_string(upgrade::repo_root().join("sql/events/normalize.sql"))
        .unwrap()
        .replace("billing.", "old_library.");
    superuser
        .batch_execute(&format!("CREATE SCHEMA old_library;\n{sql}"))
        .await
        .unwrap();
    // A string body records no dependency, so dropping old_library leaves the stand-in alone.
    let stand_in = if version == "0.1.0" {
        "CREATE OR REPLACE FUNCTION billing.normalize_event(payload text) RETURNS jsonb
         LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
         DECLARE
             ev jsonb := old_library._normalize_event(payload);
             lines jsonb := coalesce(ev #> '{data,lines}', '[]');
         BEGIN
             IF ev ->> 'object_type' = 'subscription' THEN
                 ev := jsonb_set(ev, '{data,price_id}', coalesce(ev #> '{data,items,0,price_id}', 'null'));
                 ev := jsonb_set(ev, '{data,quantity}', coalesce(ev #> '{data,items,0,quantity}', 'null'));
             ELSIF ev ->> 'object_type' = 'invoice' THEN
                 ev := jsonb_set(ev, '{data,main_line}', coalesce((
                     SELECT l FROM jsonb_array_elements(lines) WITH ORDINALITY AS x(l, n)
                     WHERE jsonb_typeof(l -> 'price_id') = 'string' AND l -> 'proration' = 'false'
                     ORDER BY (l ->> 'period_end')::bigint DESC NULLS LAST, n DESC LIMIT 1), 'null'));
                 ev := jsonb_set(ev, '{data,upgrade_line}', coalesce((
                     SELECT l FROM jsonb_array_elements(lines) WITH ORDINALITY AS x(l, n)
                     WHERE jsonb_typeof(l -> 'price_id') = 'string' AND (l ->> 'amount')::bigint > 0
                     ORDER BY (l ->> 'amount')::bigint DESC, n DESC LIMIT 1), 'null'));
                 ev := jsonb_set(ev, '{data,replaced_price_id}', coalesce((
                     SELECT l -> 'price_id' FROM jsonb_array_elements(lines) WITH ORDINALITY AS x(l, n)
                     WHERE jsonb_typeof(l -> 'price_id') = 'string' AND (l ->> 'amount')::bigint < 0
                     ORDER BY n LIMIT 1), 'null'));
             END IF;
             RETURN ev;
         END $$"
    } else {
        "CREATE OR REPLACE FUNCTION billing._normalize_event(payload text) RETURNS jsonb
         LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
         BEGIN
             RETURN old_library._normalize_event(payload);
         END $$"
    };
    superuser.batch_execute(stand_in).await.unwrap();
}

/// Data a released version holds, made through its own SQL API: grants with and without
/// expiry, spends, a project, webhook events applied, failed (unknown price) and held
/// (customer not linked yet), and queued, finished and failed requests.
async fn fill(db: &TestDb, version: &str) -> (Vec<Uuid>, String) {
    let owner = db.owner().await;
    owner
        .batch_execute(&format!(
            "INSERT INTO billing.webhook_secrets (secret) VALUES ('{}');
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens) VALUES
                 ('pro', 'price_1QproUpgrade', 'Pro', 'subscription', 1000);
             INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens) VALUES
                 ('pack', 'price_1QpackUpgrade', 'Pack', 'token_pack', 500);
             INSERT INTO billing.config (checkout_success_url, checkout_cancel_url, portal_return_url)
                 VALUES ('https://app.example.com/ok', 'https://app.example.com/no', 'https://app.example.com/me');",
            events::TEST_SECRET
        ))
        .await
        .unwrap();
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let project = Uuid::new_v4();
    owner
        .execute(
            "INSERT INTO billing.projects (id, user_id, name) VALUES ($1, $2, 'render farm')",
            &[&project, &users[0]],
        )
        .await
        .unwrap();
    for (i, user) in users.iter().enumerate() {
        let i = i as i64;
        owner
            .execute(
                "SELECT billing.grant_tokens($1, $2, 'promo', now() + interval '30 days', grant_key => $3)",
                &[user, &(100 + i), &format!("promo-{user}")],
            )
            .await
            .unwrap();
        owner
            .execute("SELECT billing.grant_tokens($1, 250)", &[user])
            .await
            .unwrap();
        owner
            .execute(
                "SELECT billing.spend_tokens($1, $2, reason => 'render', idempotency_key => $3)",
                &[user, &(120 + i), &format!("job-{i}")],
            )
            .await
            .unwrap();
        owner
            .execute("SELECT billing.spend_tokens($1, 7)", &[user])
            .await
            .unwrap();
    }
    owner
        .execute(
            "SELECT billing.grant_tokens($1, 40, project_id => $2)",
            &[&users[0], &project],
        )
        .await
        .unwrap();
    owner
        .execute(
            "SELECT billing.spend_tokens($1, 15, project_id => $2)",
            &[&users[0], &project],
        )
        .await
        .unwrap();

    // A paid token pack and a subscription, through the webhook entry point.
    let now = unix_now();
    let user = users[1].to_string();
    let customer = ids::customer();
    let sub = ids::long("sub");
    let session = ids::checkout_session();
    let shape = Shape::Basil;
    let pack = events::checkout_session(
        shape,
        &Session {
            id: &session,
            mode: "payment",
            payment_status: "paid",
            customer: &customer,
            user_id: Some(&user),
            price_id: "price_1QpackUpgrade",
            subscription: None,
            invoice: None,
            amount_total: 900,
            request_id: None,
        },
    );
    let period = Period {
        start: now - 86_400,
        end: now + 29 * 86_400,
    };
    let subscription = events::subscription(
        shape,
        &Sub {
            id: &sub,
            customer: &customer,
            status: "active",
            price_id: "price_1QproUpgrade",
            period,
            cancel_at_period_end: false,
            ended_at: None,
            user_id: Some(&user),
        },
    );
    let invoice_id = ids::long("in");
    let invoice = events::invoice(
        shape,
        &Invoice {
            id: &invoice_id,
            subscription: &sub,
            customer: &customer,
            billing_reason: "subscription_create",
            paid: true,
            lines: vec![Line {
                price_id: "price_1QproUpgrade",
                amount: 2000,
                proration: false,
                period,
            }],
            user_id: Some(&user),
        },
    );
    let unknown_price_session = ids::checkout_session();
    let unknown_price = events::checkout_session(
        shape,
        &Session {
            id: &unknown_price_session,
            mode: "payment",
            payment_status: "paid",
            customer: &customer,
            user_id: Some(&user),
            price_id: "price_1QnotInTheCatalog",
            subscription: None,
            invoice: None,
            amount_total: 900,
            request_id: None,
        },
    );
    // A renewal of a subscription whose customer nobody linked yet: held.
    let stranger_sub = ids::long("sub");
    let held = events::invoice(
        Shape::V2023,
        &Invoice {
            id: &ids::long("in"),
            subscription: &stranger_sub,
            customer: &ids::customer(),
            billing_reason: "subscription_cycle",
            paid: true,
            lines: vec![Line {
                price_id: "price_1QproUpgrade",
                amount: 2000,
                proration: false,
                period,
            }],
            user_id: None,
        },
    );
    for (event_type, object, version) in [
        ("checkout.session.completed", pack, shape),
        ("customer.subscription.created", subscription, shape),
        ("invoice.paid", invoice, shape),
        ("checkout.session.completed", unknown_price, shape),
        ("invoice.paid", held, Shape::V2023),
    ] {
        let event = events::envelope(version, &ids::long("evt"), event_type, now, object);
        let answer: Value = events::deliver(&owner, &event).await.unwrap();
        assert_eq!(answer["received"], true, "{answer}");
    }

    // Requests: one finished, one failed, one still queued.
    let mut api = db.api().await;
    for user in &users[..2] {
        api.call(
            &Caller::User(*user),
            "SELECT billing.request_checkout('pack')",
            &[],
        )
        .await
        .unwrap();
    }
    let claimed = owner
        .query(
            "SELECT id FROM billing.claim_requests('upgrade-test', 2, 60) ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let first: Uuid = claimed[0].get(0);
    let second: Uuid = claimed[1].get(0);
    owner
        .execute(
            "SELECT billing.finish_request($1, 'upgrade-test', '{\"url\": \"https://checkout.stripe.com/c/pay/x\", \"session_id\": \"cs_test_x\"}', 1)",
            &[&first],
        )
        .await
        .unwrap();
    // 0.2.0 made the claim's attempt a required argument and added whether it was transient.
    let fail = if version == "0.1.0" {
        "SELECT billing.fail_request($1, 'upgrade-test', 'No such price', NULL, 1)"
    } else {
        "SELECT billing.fail_request($1, 'upgrade-test', 'No such price', 1, false)"
    };
    owner.execute(fail, &[&second]).await.unwrap();
    api.call(
        &Caller::User(users[2]),
        "SELECT billing.request_checkout('pro')",
        &[],
    )
    .await
    .unwrap();
    (users, unknown_price_session)
}

/// Everything that must survive an upgrade unchanged, as text.
async fn data(owner: &Client) -> String {
    let rows = owner
        .query(
            "SELECT 'balance ' || g.user_id || ' ' || coalesce(g.project_id::text, '-') || ' '
                    || billing.token_balance(g.user_id, g.project_id)
             FROM (SELECT DISTINCT user_id, project_id FROM billing.token_grants) g
             UNION ALL
             SELECT format('grant %s %s %s %s %s %s', id, user_id, source, tokens, remaining, grant_key)
             FROM billing.token_grants
             UNION ALL
             SELECT format('spend %s %s %s %s', id, user_id, amount, idempotency_key) FROM billing.token_spends
             UNION ALL
             SELECT format('allocation %s %s %s', spend_id, grant_id, tokens) FROM billing.token_spend_allocations
             UNION ALL
             SELECT format('event %s %s processed=%s error=%s', id, type, processed_at IS NOT NULL, error)
             FROM billing.stripe_events
             UNION ALL
             SELECT format('request %s %s %s %s %s', user_id, kind, status, attempts, error)
             FROM billing.stripe_requests
             UNION ALL
             SELECT format('subscription %s %s %s %s', stripe_subscription_id, user_id, plan_id, status)
             FROM billing.subscriptions
             UNION ALL
             SELECT format('customer %s %s', user_id, stripe_customer_id) FROM billing.customers
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ledger's books balance: per grant, tokens - remaining is what allocations took; per
/// spend, the allocations add up to the amount.
async fn assert_books_balance(owner: &Client) {
    let wrong: i64 = owner
        .query_one(
            "SELECT (SELECT count(*) FROM billing.token_grants g
                     WHERE g.tokens - g.remaining <> coalesce((SELECT sum(a.tokens)
                         FROM billing.token_spend_allocations a WHERE a.grant_id = g.id), 0))
                  + (SELECT count(*) FROM billing.token_spends s
                     WHERE s.amount <> (SELECT sum(a.tokens)
                         FROM billing.token_spend_allocations a WHERE a.spend_id = s.id))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "grants or spends whose allocations do not add up");
}

#[tokio::test]
async fn every_release_upgrades_to_the_fresh_schema_and_keeps_its_data() {
    if Edition::current() == Edition::Pure {
        // ALTER EXTENSION upgrades only the extension, and no release before 0.2.0 has a
        // pure-SQL edition: its upgrade migrations are tested in pure_migration.rs.
        eprintln!("skipped: upgrades of released versions exist for the extension only");
        return;
    }
    let root = upgrade::repo_root();
    let fresh = TestDb::new().await;
    let fresh_catalog = catalog::catalog_snapshot(&fresh.owner().await).await;
    for version in upgrade::released_versions(&root).unwrap() {
        let db = TestDb::with_version(Some(&version)).await;
        let superuser = db.superuser().await;
        stand_in_for_the_old_normaliser(&superuser, &version).await;
        let (users, unknown_price_session) = fill(&db, &version).await;
        superuser
            .batch_execute("DROP SCHEMA IF EXISTS old_library CASCADE")
            .await
            .unwrap();
        let owner = db.owner().await;
        let before = data(&owner).await;
        assert_books_balance(&owner).await;

        owner
            .batch_execute("ALTER EXTENSION stripe_billing UPDATE")
            .await
            .unwrap_or_else(|e| panic!("upgrading {version}: {e:?}"));
        let installed: String = owner
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'stripe_billing'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(installed, upgrade::current_version());
        // Grants are re-applied by the upgrade itself, as by a fresh install.
        let upgraded_catalog = catalog::catalog_snapshot(&owner).await;
        let (only_upgraded, only_fresh) = catalog::snapshot_diff(&upgraded_catalog, &fresh_catalog);
        assert!(
            only_upgraded.is_empty() && only_fresh.is_empty(),
            "{version} upgraded differs from a fresh install.\nonly after the upgrade:\n{}\n\nonly in a fresh install:\n{}",
            only_upgraded.join("\n"),
            only_fresh.join("\n")
        );
        assert_eq!(data(&owner).await, before, "data changed in the upgrade");
        assert_books_balance(&owner).await;

        // The upgraded install works: spend, and apply what was waiting once it can be.
        let spent: Value = owner
            .query_one("SELECT billing.spend_tokens($1, 3)", &[&users[0]])
            .await
            .unwrap()
            .get(0);
        assert_eq!(spent["duplicate"], false, "{spent}");
        owner
            .batch_execute(
                "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens)
                 VALUES ('pack2', 'price_1QnotInTheCatalog', 'Pack 2', 'token_pack', 300)",
            )
            .await
            .unwrap();
        let reprocessed: Value = owner
            .query_one("SELECT billing.reprocess_events()", &[])
            .await
            .unwrap()
            .get(0);
        // The pack came from a session our checkout did not create (its metadata names no request), so
        // it waits for the session's line items, which the worker retrieves from Stripe.
        assert_eq!(reprocessed["succeeded"], 0, "{reprocessed}");
        let (request_user, session): (Uuid, String) = {
            let row = owner
                .query_one(
                    "SELECT user_id, params ->> 'object_id' FROM billing.stripe_requests
                     WHERE kind = 'line_items' AND params ->> 'object_id' = $1",
                    &[&unknown_price_session],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!(request_user, users[1]);
        let applied: i32 = owner
            .query_one(
                "SELECT billing.store_line_items($1, jsonb_build_object('object', 'list', 'data', jsonb_build_array(
                     jsonb_build_object('object', 'item', 'price', jsonb_build_object('id', 'price_1QnotInTheCatalog'),
                                        'quantity', 2, 'amount_total', 1800, 'currency', 'usd'))))",
                &[&session],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(applied, 1);
        let granted: i64 = owner
            .query_one(
                "SELECT tokens FROM billing.token_grants WHERE grant_key = $1",
                &[&session],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(granted, 600, "2 x the 300-token pack");
        assert_books_balance(&owner).await;
    }
}
