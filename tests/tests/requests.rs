//! Clients and the request queue (sql/requests/): users queue Checkout and Portal sessions,
//! within their caps and the one-subscription rule, and await them.
mod common;
mod queue_support;

use common::{add_customer, add_project, add_subscription, set_config};
use queue_support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use stripe_billing_tests::pg::{assert_error, listen, Caller};
use uuid::Uuid;

#[tokio::test]
async fn checkout_queues_a_pending_request() {
    let mut q = Queue::new().await;
    let email = format!("{}@example.test", q.a);
    let id = q.checkout(&format!("'price_pro', {URLS}")).await;
    let row = q.row(id).await;
    let head =
        json!({"user_id": q.a.to_string(), "kind": "checkout", "status": "pending", "attempts": 0});
    assert_eq!(pick(&row, "user_id kind status attempts"), head);
    let params = json!({"price_id": "price_pro", "plan_id": "pro", "mode": "subscription", "quantity": 1,
                        "success_url": OK_URL, "cancel_url": CANCEL_URL, "email": email,
                        "collect_tax_ids": true});
    assert_eq!(row["params"], params);

    let project = add_project(&q.owner, q.a).await;
    let args = format!("{PACK}, quantity => 3, project_id => '{project}', coupon => 'SPRING_10'");
    let pack = q.checkout(&args).await;
    assert_ne!(pack, id);
    let row = q.row(pack).await;
    assert_eq!(pick(&row, "user_id kind status attempts"), head);
    let params = json!({"price_id": "price_pack", "plan_id": "pack", "mode": "payment", "quantity": 3,
                        "tokens": 1500, "success_url": OK_URL, "cancel_url": CANCEL_URL,
                        "project_id": project.to_string(), "coupon": "SPRING_10", "email": email,
                        "collect_tax_ids": true, "save_payment_method": true});
    assert_eq!(row["params"], params);

    // A plan id works as well as a price id; an explicit matching mode is accepted.
    let promo = q
        .checkout(&format!(
            "'pack', mode => 'payment', allow_promotion_codes => true, {URLS}"
        ))
        .await;
    let params = &q.row(promo).await["params"];
    let expected = json!({"price_id": "price_pack", "tokens": 500, "allow_promotion_codes": true});
    assert_eq!(
        pick(params, "price_id tokens allow_promotion_codes"),
        expected
    );
    assert_eq!(q.count().await, 3);
}

#[tokio::test]
async fn checkout_notifies_the_worker_with_the_request_id() {
    let mut q = Queue::new().await;
    let (_listener, mut notifications) = listen(&q.db.dsn, "billing_stripe_requests").await;
    for _ in 0..2 {
        let id = q.checkout(PACK).await;
        let n = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
            .await
            .expect("no notification within 10 s")
            .expect("listener closed");
        assert_eq!(
            (n.channel(), n.payload()),
            ("billing_stripe_requests", id.to_string().as_str())
        );
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), notifications.recv()).await;
    assert!(
        extra.is_err(),
        "one notification per request, got also {extra:?}"
    );
}

/// request_checkout(<arguments>) | SQLSTATE | message part. {u} stands for valid success and
/// cancel URLs, {unknown} for a project id nobody has, {others} for another user's project.
const BAD_CHECKOUTS: &str = "
    'price_nope', {u} | P0002 | unknown price 'price_nope'
    'price_old', {u} | 22023 | plan old is not for sale any more
    'price_pro', mode => 'payment', {u} | 22023 | mode payment does not fit plan pro, which is a subscription
    'price_pack', mode => 'subscription', {u} | 22023 | does not fit plan pack, which is a token pack
    'price_pack', mode => 'setup', {u} | 22023 | mode must be subscription or payment, got 'setup'
    'price_pack' | 22023 | success_url is required: pass it or set a default in billing.config
    'price_pack', success_url => 'https://app.example.test' | 22023 | cancel_url is required
    'price_pack', success_url => 'ftp://app.example.test', cancel_url => 'https://app.example.test' | 22023 | success_url must be an http(s) URL
    'price_pack', success_url => 'https://app.example.test', cancel_url => 'javascript:alert(1)' | 22023 | cancel_url must be an http(s) URL
    'price_pack', success_url => 'https://app.example.test/a b', cancel_url => 'https://app.example.test' | 22023 | success_url must be an http(s) URL
    'price_pack', success_url => 'https://evil.example/thanks', cancel_url => 'https://app.example.test' | BL013 | success_url must point to one of this app's sites; https://evil.example is not one
    'price_pack', success_url => 'https://app.example.test', cancel_url => 'https://app.example.test.evil.example/' | BL013 | https://app.example.test.evil.example is not one
    'price_pack', success_url => 'https://app.example.test@evil.example/', cancel_url => 'https://app.example.test' | BL013 | is not one
    'price_pack', coupon => 'SPRING_10', allow_promotion_codes => true, {u} | 22023 | pass either coupon or allow_promotion_codes, not both
    'price_pack', coupon => 'STAFF100', {u} | BL012 | coupon 'STAFF100' is not offered
    'price_pack', coupon => 'bad coupon!', {u} | BL012 | coupon 'bad coupon!' is not offered
    'price_pack', quantity => 0, {u} | 22023 | quantity must be 1 for a personal subscription and 1 to 100 for token packs, got 0
    'price_pack', quantity => 101, {u} | 22023 | 1 to 100 for token packs, got 101
    'price_pack', quantity => NULL, {u} | 22023 | quantity must be 1 for a personal subscription
    'price_pro', quantity => 2, {u} | 22023 | quantity must be 1 for a personal subscription
    'price_huge', quantity => 100, {u} | 22023 | 100 x 20000000000 tokens is more than one grant may hold
    'price_pack', project_id => '{unknown}', {u} | P0002 | unknown project
    'price_pack', project_id => '{others}', {u} | P0002 | unknown project
    NULL, {u} | 22004 | price_id must not be NULL
";

#[tokio::test]
async fn checkout_rejects_bad_input() {
    let mut q = Queue::new().await;
    q.owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, tokens, active)
             VALUES ('old', 'price_old', 'Old', 'token_pack', 10, false),
                    ('huge', 'price_huge', 'Huge', 'token_pack', 20000000000, true)",
        )
        .await
        .unwrap();
    let others = add_project(&q.owner, Uuid::new_v4()).await.to_string();
    let unknown = Uuid::new_v4().to_string();
    let user = q.user.clone();
    for line in BAD_CHECKOUTS.lines().filter(|l| !l.trim().is_empty()) {
        let [args, sqlstate, message]: [&str; 3] = line
            .split(" | ")
            .map(str::trim)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap_or_else(|_| panic!("bad case {line:?}"));
        let args = args
            .replace("{u}", URLS)
            .replace("{unknown}", &unknown)
            .replace("{others}", &others);
        assert_error(q.checkout_as(&user, &args).await, sqlstate, message);
    }
    // A caller without a user id cannot buy anything.
    assert_error(
        q.checkout_as(&Caller::Service, PACK).await,
        "28000",
        "not authenticated",
    );
    assert_eq!(q.count().await, 0, "a rejected call queued a request");
}

#[tokio::test]
async fn checkout_urls_default_from_config() {
    let mut q = Queue::new().await;
    set_config(
        &q.owner,
        &format!("checkout_success_url = '{OK_URL}', checkout_cancel_url = '{CANCEL_URL}', redirect_origins = NULL"),
    )
    .await;
    let id = q.checkout("'price_pack'").await;
    let params = &q.row(id).await["params"];
    assert_eq!(
        pick(params, "success_url cancel_url"),
        json!({"success_url": OK_URL, "cancel_url": CANCEL_URL})
    );
    // A URL passed in wins over the default, when its origin is allowed.
    let user = q.user.clone();
    assert_error(
        q.checkout_as(
            &user,
            "'price_pack', cancel_url => 'http://localhost:3000/c'",
        )
        .await,
        "BL013",
        "http://localhost:3000 is not one",
    );
    set_config(&q.owner, "redirect_origins = '{http://localhost:3000}'").await;
    let id = q
        .checkout("'price_pack', cancel_url => 'http://localhost:3000/c'")
        .await;
    let params = &q.row(id).await["params"];
    let expected = json!({"success_url": OK_URL, "cancel_url": "http://localhost:3000/c"});
    assert_eq!(pick(params, "success_url cancel_url"), expected);
}

#[tokio::test]
async fn checkout_refuses_a_second_subscription() {
    let mut q = Queue::new().await;
    let b = Uuid::new_v4();
    add_subscription(&q.owner, q.a, "sub_a", "active").await;
    add_subscription(&q.owner, b, "sub_b", "canceled").await;
    let pro = format!("'price_pro', {URLS}");
    let user = q.user.clone();
    assert_error(
        q.checkout_as(&user, &pro).await,
        "BL005",
        "you already have a subscription",
    );
    assert_eq!(q.count().await, 0);
    // Token packs are still for sale, and a canceled subscription does not block a new one.
    q.checkout(PACK).await;
    let id = q.checkout_as(&Caller::User(b), &pro).await.unwrap();
    assert_eq!(q.row(id).await["user_id"], b.to_string());
}

#[tokio::test]
async fn portal_needs_a_customer_and_a_return_url() {
    let mut q = Queue::new().await;
    let user = q.user.clone();
    let portal = |url: &str| format!("SELECT billing.request_portal({url})");
    let message = "no billing account yet, make a purchase first";
    assert_error(q.api.call(&user, &portal(""), &[]).await, "BL002", message);
    add_customer(&q.owner, q.a, "cus_test1").await;
    assert_error(
        q.api.call(&user, &portal(""), &[]).await,
        "22023",
        "return_url is required",
    );
    let bad = q.api.call(&user, &portal("'ftp://x.test'"), &[]).await;
    assert_error(bad, "22023", "return_url must be an http(s) URL");
    let id: Uuid = q
        .api
        .call(&user, &portal("'https://app.example.test/account'"), &[])
        .await
        .unwrap()[0]
        .get(0);
    let row = q.row(id).await;
    let expected = json!({"user_id": q.a.to_string(), "kind": "portal", "status": "pending",
                          "params": {"return_url": "https://app.example.test/account"}});
    assert_eq!(pick(&row, "user_id kind status params"), expected);
    set_config(
        &q.owner,
        "portal_return_url = 'https://app.example.test/settings'",
    )
    .await;
    let id: Uuid = q.api.call(&user, &portal(""), &[]).await.unwrap()[0].get(0);
    assert_eq!(
        q.row(id).await["params"],
        json!({"return_url": "https://app.example.test/settings"})
    );
    // A's customer does not open B's portal.
    let b = Caller::User(Uuid::new_v4());
    assert_error(q.api.call(&b, &portal(""), &[]).await, "BL002", message);
}

#[tokio::test]
async fn await_request_times_out_with_the_pending_state() {
    let mut q = Queue::new().await;
    let id = q.checkout(PACK).await;
    let user = q.user.clone();
    let pending = awaited(id, "pending", None);
    let (result, took) = q.await_as(&user, id, Some(300)).await;
    assert_eq!(result.unwrap(), pending);
    took_between(took, 300, 4000, "await_request with a 300 ms timeout");
    let (result, took) = q.await_as(&user, id, Some(0)).await;
    assert_eq!(result.unwrap(), pending);
    took_between(took, 0, 3000, "await_request with timeout 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_request_returns_the_worker_result() {
    let mut q = Queue::new().await;
    add_customer(&q.owner, q.a, "cus_test1").await;
    let user = q.user.clone();
    let mut worker = q.db.api().await;

    // Finished before the client awaits.
    let id = q.checkout(PACK).await;
    let sql = "SELECT to_jsonb(c) FROM billing.claim_requests('w1', 10, 30) c";
    let claimed = worker.call(&Caller::Service, sql, &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let claimed: Value = claimed[0].get(0);
    let expected = json!({"id": id.to_string(), "kind": "checkout", "user_id": q.a.to_string(),
                          "attempts": 1, "stripe_customer_id": "cus_test1"});
    assert_eq!(
        pick(&claimed, "id kind user_id attempts stripe_customer_id"),
        expected
    );
    assert_eq!(claimed["params"]["price_id"], "price_pack");
    assert!(finish(&mut worker, id, "w1").await);
    let (result, took) = q.await_as(&user, id, Some(5000)).await;
    assert_eq!(result.unwrap(), awaited(id, "succeeded", None));
    took_between(took, 0, 3000, "awaiting a finished request");

    // Finished while the client waits.
    let id = q.checkout(PACK).await;
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let claimed = claim(&mut worker, "w1", 10, 30).await;
        let finished = finish(&mut worker, claimed[0], "w1").await;
        (claimed, finished)
    });
    let (result, took) = q.await_as(&user, id, Some(5000)).await;
    assert_eq!(finisher.await.unwrap(), (vec![id], true));
    assert_eq!(result.unwrap(), awaited(id, "succeeded", None));
    took_between(took, 200, 4500, "awaiting a request finished after 200 ms");
}

#[tokio::test]
async fn await_request_is_private_and_validates_its_arguments() {
    let mut q = Queue::new().await;
    let id = q.checkout(PACK).await;
    let user = q.user.clone();
    let b = Caller::User(Uuid::new_v4());
    assert_error(q.await_as(&b, id, Some(0)).await.0, "P0002", "not found");
    assert_error(
        q.await_as(&user, Uuid::new_v4(), Some(0)).await.0,
        "P0002",
        "not found",
    );
    for timeout in [Some(-1), Some(60001), None] {
        let message = "timeout_ms must be between 0 and 60000";
        assert_error(q.await_as(&user, id, timeout).await.0, "22023", message);
    }
    assert_error(
        q.await_as(&Caller::Service, id, Some(0)).await.0,
        "28000",
        "not authenticated",
    );
}

#[tokio::test]
async fn await_request_reports_a_failure() {
    let mut q = Queue::new().await;
    let id = q.checkout(PACK).await;
    assert_eq!(q.claim("w1", 10, 30).await, [id]);
    let error = "No such price: 'price_pack'";
    assert_eq!(q.fail(id, "w1", error, false).await, "failed");
    let user = q.user.clone();
    let (result, took) = q.await_as(&user, id, Some(5000)).await;
    assert_eq!(result.unwrap(), awaited(id, "failed", Some(error)));
    took_between(took, 0, 3000, "awaiting a failed request");
}

#[tokio::test]
async fn one_subscription_checkout_at_a_time() {
    let mut q = Queue::new().await;
    let pro = format!("'price_pro', {URLS}");
    // Twice the same request: the same checkout, not a second payable session.
    let first = q.checkout(&pro).await;
    assert_eq!(q.checkout(&pro).await, first);
    // Another one while the first is still being prepared is refused.
    let user = q.user.clone();
    q.owner
        .batch_execute(
            "INSERT INTO billing.plans (id, stripe_price_id, name, kind, monthly_tokens)
             VALUES ('max', 'price_max', 'Max', 'subscription', 9000)",
        )
        .await
        .unwrap();
    let max = format!("'price_max', {URLS}");
    assert_error(q.checkout_as(&user, &max).await, "BL005", "being prepared");
    // Once its session exists, another plan replaces it: the worker expires the old session.
    assert_eq!(q.claim("w1", 10, 60).await, [first]);
    assert!(q.finish(first, "w1").await);
    let second = q.checkout(&max).await;
    assert_eq!(q.row(second).await["params"]["expire_session"], "cs_1");
    // An incomplete subscription (its first payment pending) counts as one.
    let b = Uuid::new_v4();
    add_subscription(&q.owner, b, "sub_incomplete1", "incomplete").await;
    assert_error(
        q.checkout_as(&Caller::User(b), &pro).await,
        "BL005",
        "you already have a subscription",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_have_only_a_few_requests_in_flight() {
    let q = Queue::new().await;
    set_config(&q.owner, "max_pending_requests = 3").await;
    let a = q.user.clone();
    // Ten at once from one user: the cap holds under concurrency. Every session is connected
    // before any starts, and all start together, so the calls really overlap.
    let mut apis = Vec::new();
    for _ in 0..10 {
        apis.push(q.db.api().await);
    }
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(apis.len()));
    let mut tasks = Vec::new();
    for mut api in apis {
        let a = a.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let sql = format!("SELECT billing.request_checkout({PACK})");
            api.call(&a, &sql, &[]).await.map(|_| ())
        }));
    }
    let mut refused = 0;
    for task in tasks {
        if let Err(e) = task.await.unwrap() {
            assert_error::<()>(Err(e), "BL011", "too many requests in progress");
            refused += 1;
        }
    }
    assert_eq!(refused, 7);
    assert_eq!(q.count().await, 3);
    // Another user is not affected.
    let mut api = q.db.api().await;
    api.call(
        &Caller::User(Uuid::new_v4()),
        &format!("SELECT billing.request_checkout({PACK})"),
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_request_wakes_when_the_worker_lets_go_and_respects_the_statement_timeout() {
    let mut q = Queue::new().await;
    let id = q.checkout(PACK).await;
    // A worker claims it and holds the request's lock while it calls Stripe.
    let mut worker = q.db.api().await;
    assert_eq!(claim(&mut worker, "w1", 1, 60).await, [id]);
    let lock = q.db.owner().await;
    lock.execute(
        "SELECT pg_advisory_lock(billing._request_lock_key($1))",
        &[&id],
    )
    .await
    .unwrap();
    let finisher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(finish(&mut worker, id, "w1").await);
        let finished_at = Instant::now();
        lock.execute(
            "SELECT pg_advisory_unlock(billing._request_lock_key($1))",
            &[&id],
        )
        .await
        .unwrap();
        finished_at
    });
    let user = q.user.clone();
    let (result, took) = q.await_as(&user, id, Some(5000)).await;
    let finished_at = finisher.await.unwrap();
    assert_eq!(result.unwrap()["status"], "succeeded");
    took_between(took, 300, 3000, "await_request while the worker works");
    assert!(
        finished_at.elapsed() < Duration::from_millis(200),
        "woke {:?} after the worker let go",
        finished_at.elapsed()
    );

    // Under Supabase's 8 s statement timeout (here 1 s) the wait ends before the timeout would.
    let id = q.checkout(PACK).await;
    let mut api = q.db.api().await;
    let tx = api.client.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '1s'; SET LOCAL ROLE authenticated;
         SELECT set_config('request.jwt.claims', '{{\"sub\":\"{}\",\"role\":\"authenticated\"}}', true)",
        q.a
    ))
    .await
    .unwrap();
    let start = Instant::now();
    let row = tx
        .query_one("SELECT billing.await_request($1)", &[&id])
        .await
        .expect("answered before the statement timeout");
    let answer: Value = row.get(0);
    assert_eq!(answer["status"], "pending");
    took_between(
        start.elapsed(),
        400,
        990,
        "await_request under a 1 s statement timeout",
    );
}

#[tokio::test]
async fn a_customer_stripe_no_longer_has_is_forgotten_and_the_checkout_retried() {
    let mut q = Queue::new().await;
    add_customer(&q.owner, q.a, "cus_deletedInStripe1").await;
    let id = q.checkout(PACK).await;
    assert_eq!(q.claim("w1", 10, 60).await, [id]);
    let sql = "SELECT billing.fail_request($1, 'w1', 'No such customer', 1,
                                          false, 'resource_missing', 'customer')";
    let status: String = q.api.call(&Caller::Service, sql, &[&id]).await.unwrap()[0].get(0);
    assert_eq!(status, "pending", "retried at once, with a new customer");
    let row = q.row(id).await;
    assert_eq!(row["waits"], false);
    let linked = q
        .owner
        .query(
            "SELECT 1 FROM billing.customers WHERE user_id = $1",
            &[&q.a],
        )
        .await
        .unwrap();
    assert!(linked.is_empty(), "the link is gone");
    assert_eq!(q.claim("w1", 10, 60).await, [id]);
    assert!(q.finish(id, "w1").await);
    // A portal has nothing to open without a customer: it fails and says why.
    add_customer(&q.owner, q.a, "cus_deletedInStripe2").await;
    let user = q.user.clone();
    let portal: Uuid = q
        .api
        .call(
            &user,
            "SELECT billing.request_portal('https://app.example.test/me')",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    assert_eq!(q.claim("w1", 10, 60).await, [portal]);
    let sql = "SELECT billing.fail_request($1, 'w1', 'No such customer', 1, false, 'resource_missing', 'customer')";
    let status: String = q.api.call(&Caller::Service, sql, &[&portal]).await.unwrap()[0].get(0);
    assert_eq!(status, "failed");
    assert!(q.row(portal).await["error"]
        .as_str()
        .unwrap()
        .contains("make a purchase first"));
}
