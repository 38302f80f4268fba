//! The outbound request queue (sql/requests/): clients queue Checkout and Portal sessions and
//! await them; workers claim (fairly), finish and fail them.
mod common;

use common::{add_customer, add_project, add_subscription, seed_plans, set_config};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stripe_billing_tests::pg::{assert_error, listen, Api, Caller, TestDb};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

const OK_URL: &str = "https://app.example.test/ok";
const CANCEL_URL: &str = "https://app.example.test/cancel";
const URLS: &str =
    "success_url => 'https://app.example.test/ok', cancel_url => 'https://app.example.test/cancel'";
const PACK: &str = "'price_pack', success_url => 'https://app.example.test/ok', \
                    cancel_url => 'https://app.example.test/cancel'";
const RESULT: &str = r#"{"url":"https://x","session_id":"cs_1"}"#;

/// A database with plans `pro` and `pack`, the owner's and an API connection, and user A.
struct Queue {
    db: TestDb,
    owner: Client,
    api: Api,
    a: Uuid,
    user: Caller,
}

impl Queue {
    async fn new() -> Queue {
        let db = TestDb::new().await;
        let owner = db.owner().await;
        seed_plans(&owner).await;
        let api = db.api().await;
        let a = Uuid::new_v4();
        let user = Caller::User(a);
        Queue {
            db,
            owner,
            api,
            a,
            user,
        }
    }

    /// `billing.request_checkout(<args>)` as `caller`.
    async fn checkout_as(&mut self, caller: &Caller, args: &str) -> Result<Uuid, Error> {
        let sql = format!("SELECT billing.request_checkout({args})");
        Ok(self.api.call(caller, &sql, &[]).await?[0].get(0))
    }

    /// A checkout by user A that must succeed.
    async fn checkout(&mut self, args: &str) -> Uuid {
        let user = self.user.clone();
        self.checkout_as(&user, args)
            .await
            .expect("request_checkout")
    }

    /// The whole request row as JSON (read by the owner), plus `waits`: run_after is ahead.
    async fn row(&self, id: Uuid) -> Value {
        self.owner
            .query_one(
                "SELECT to_jsonb(r) || jsonb_build_object('waits', r.run_after > clock_timestamp())
                 FROM billing.stripe_requests r WHERE id = $1",
                &[&id],
            )
            .await
            .expect("request row")
            .get(0)
    }

    async fn count(&self) -> i64 {
        let sql = "SELECT count(*) FROM billing.stripe_requests";
        self.owner.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Inserts `n` pending requests directly, each for a new user, and returns their ids.
    async fn queue(&self, n: i32) -> Vec<Uuid> {
        let sql = "INSERT INTO billing.stripe_requests (user_id, kind)
                   SELECT gen_random_uuid(), 'checkout' FROM generate_series(1, $1::int) RETURNING id";
        let rows = self.owner.query(sql, &[&n]).await.unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    async fn claim(&mut self, worker: &str, max_count: i32, lease_seconds: i32) -> Vec<Uuid> {
        claim(&mut self.api, worker, max_count, lease_seconds).await
    }

    async fn finish(&mut self, id: Uuid, worker: &str) -> bool {
        finish(&mut self.api, id, worker).await
    }

    /// `billing.fail_request` for the row's current attempt: the new status, or "NULL" when the
    /// claim was lost.
    async fn fail(&mut self, id: Uuid, worker: &str, error: &str, retryable: bool) -> String {
        let attempt: i32 = self.row(id).await["attempts"].as_i64().unwrap() as i32;
        let sql = "SELECT coalesce(billing.fail_request($1, $2, $3, $4, $5), 'NULL')";
        let params: [&(dyn ToSql + Sync); 5] = [&id, &worker, &error, &attempt, &retryable];
        let rows = self.api.call(&Caller::Service, sql, &params).await;
        rows.expect("fail_request")[0].get(0)
    }

    /// `billing.await_request(id, timeout_ms)` as `caller`, and how long it took.
    async fn await_as(
        &mut self,
        caller: &Caller,
        id: Uuid,
        timeout_ms: Option<i32>,
    ) -> (Result<Value, Error>, Duration) {
        let start = Instant::now();
        let sql = "SELECT billing.await_request($1, $2)";
        let result = self.api.call(caller, sql, &[&id, &timeout_ms]).await;
        (result.map(|rows| rows[0].get(0)), start.elapsed())
    }
}

/// Ids `worker` claims with `billing.claim_requests(worker, max_count, lease_seconds)`.
async fn claim(api: &mut Api, worker: &str, max_count: i32, lease_seconds: i32) -> Vec<Uuid> {
    let sql = "SELECT id FROM billing.claim_requests($1, $2, $3)";
    let params: [&(dyn ToSql + Sync); 3] = [&worker, &max_count, &lease_seconds];
    let rows = api
        .call(&Caller::Service, sql, &params)
        .await
        .expect("claim_requests");
    rows.iter().map(|r| r.get(0)).collect()
}

/// `billing.finish_request` with the result {url: https://x, session_id: cs_1}.
async fn finish(api: &mut Api, id: Uuid, worker: &str) -> bool {
    let sql = format!("SELECT billing.finish_request($1, $2, '{RESULT}')");
    api.call(&Caller::Service, &sql, &[&id, &worker])
        .await
        .expect("finish_request")[0]
        .get(0)
}

/// The fields of a JSON object named in `keys` (separated by spaces), for compact comparisons.
fn pick(v: &Value, keys: &str) -> Value {
    keys.split_whitespace()
        .map(|k| (k.to_string(), v[k].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// What await_request returns for a checkout in `status`, with `url`/`session_id` {url:
/// https://x, session_id: cs_1} once succeeded, and `error`.
fn awaited(id: Uuid, status: &str, error: Option<&str>) -> Value {
    let done = status == "succeeded";
    json!({"id": id.to_string(), "kind": "checkout", "status": status,
           "url": if done { Some("https://x") } else { None },
           "session_id": if done { Some("cs_1") } else { None }, "error": error})
}

/// Asserts that `took` is at least `min_ms` and less than `max_ms` milliseconds. The upper
/// bounds are generous (a loaded CI machine) but below the waits they must tell apart.
#[track_caller]
fn took_between(took: Duration, min_ms: u64, max_ms: u64, what: &str) {
    let range = Duration::from_millis(min_ms)..Duration::from_millis(max_ms);
    assert!(
        range.contains(&took),
        "{what} took {took:?}, expected {range:?}"
    );
}

/// What claim_requests returns when there is nothing to claim.
const NONE: [Uuid; 0] = [];

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
    'price_pack', quantity => 0, {u} | 22023 | quantity must be 1 for subscriptions and 1 to 100 for token packs, got 0
    'price_pack', quantity => 101, {u} | 22023 | 1 to 100 for token packs, got 101
    'price_pack', quantity => NULL, {u} | 22023 | quantity must be 1 for subscriptions
    'price_pro', quantity => 2, {u} | 22023 | quantity must be 1 for subscriptions
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
             VALUES ('old', 'price_old', 'Old', 'token_pack', 10, false)",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_request() {
    let q = Queue::new().await;
    let mut all = q.queue(50).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let mut claimers = Vec::new();
    for worker in ["w1", "w2"] {
        let mut api = q.db.api().await;
        let start = start.clone();
        claimers.push(tokio::spawn(async move {
            start.wait().await;
            let mut mine = Vec::new();
            loop {
                let got = claim(&mut api, worker, 3, 60).await;
                assert!(
                    got.len() <= 3,
                    "{worker} claimed {} rows with max_count 3",
                    got.len()
                );
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }));
    }
    let mut claimed = Vec::new();
    for (worker, claimer) in ["w1", "w2"].into_iter().zip(claimers) {
        let mine = claimer.await.unwrap();
        // Each row records the worker that claimed it, and one attempt.
        for id in &mine {
            let row = pick(&q.row(*id).await, "locked_by attempts status");
            assert_eq!(
                row,
                json!({"locked_by": worker, "attempts": 1, "status": "running"})
            );
        }
        claimed.extend(mine);
    }
    let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(distinct.len(), claimed.len(), "a request was claimed twice");
    claimed.sort();
    all.sort();
    assert_eq!(claimed, all);
}

#[tokio::test]
async fn claims_skip_rows_another_worker_is_claiming() {
    let mut q = Queue::new().await;
    let mut all = q.queue(3).await;
    // Worker 1's claim is not committed yet: its rows stay locked.
    let mut w1 = q.db.owner().await;
    let tx = w1.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE service_role")
        .await
        .unwrap();
    let first = tx
        .query("SELECT id FROM billing.claim_requests('w1', 2, 60)", &[])
        .await
        .unwrap();
    let first: Vec<Uuid> = first.iter().map(|r| r.get(0)).collect();
    assert_eq!(first.len(), 2);
    let second = tokio::time::timeout(Duration::from_secs(5), q.claim("w2", 10, 60))
        .await
        .expect("claim_requests waited for another worker's locks");
    assert_eq!(second.len(), 1);
    assert!(!first.contains(&second[0]));
    tx.commit().await.unwrap();
    assert_eq!(q.claim("w3", 10, 60).await, NONE);
    let mut claimed = [first, second].concat();
    claimed.sort();
    all.sort();
    assert_eq!(claimed, all);
}

#[tokio::test]
async fn only_the_claiming_worker_finishes_a_request() {
    let mut q = Queue::new().await;
    let id = q.queue(1).await[0];
    assert!(
        !q.finish(id, "w1").await,
        "finished a request nobody claimed"
    );
    assert_eq!(q.claim("w1", 1, 60).await, [id]);
    assert!(!q.finish(id, "w2").await, "w2 finished w1's request");
    assert_eq!(
        q.fail(id, "w2", "boom", false).await,
        "NULL",
        "w2 failed w1's request"
    );
    let row = pick(&q.row(id).await, "status locked_by result error");
    assert_eq!(
        row,
        json!({"status": "running", "locked_by": "w1", "result": null, "error": null})
    );
    let sql = "SELECT billing.finish_request($1, 'w1', '[1]')";
    let not_object = q.api.call(&Caller::Service, sql, &[&id]).await;
    assert_error(not_object, "22023", "result must be a JSON object");
    assert!(q.finish(id, "w1").await);
    assert!(!q.finish(id, "w1").await, "finished twice");
    let row = q.row(id).await;
    let expected = json!({"status": "succeeded", "locked_by": null, "result": {"url": "https://x", "session_id": "cs_1"}});
    assert_eq!(pick(&row, "status locked_by result"), expected);
    assert!(row["finished_at"].is_string(), "finished_at not set: {row}");
}

#[tokio::test]
async fn failed_attempts_retry_until_max_attempts() {
    let mut q = Queue::new().await;
    set_config(&q.owner, "request_max_attempts = 2").await;
    let id = q.queue(1).await[0];
    assert_eq!(q.claim("w1", 10, 60).await, [id]);
    assert_eq!(q.fail(id, "w1", "rate limited", true).await, "pending");
    let row = q.row(id).await;
    let keys = "status attempts waits locked_by error finished_at";
    let expected = json!({"status": "pending", "attempts": 1, "waits": true, "locked_by": null,
                          "error": "rate limited", "finished_at": null});
    assert_eq!(
        pick(&row, keys),
        expected,
        "back to pending, attempts kept, run_after ahead"
    );
    assert_eq!(
        q.claim("w1", 10, 60).await,
        NONE,
        "claimed before run_after"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let sql = "SELECT id, attempts FROM billing.claim_requests('w2', 10, 60)";
    let again = q.api.call(&Caller::Service, sql, &[]).await.unwrap();
    let again: Vec<(Uuid, i32)> = again.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(again, [(id, 2)]);
    // The second attempt was the last: no more retries.
    assert_eq!(q.fail(id, "w2", "rate limited again", true).await, "failed");
    let row = q.row(id).await;
    let expected = json!({"status": "failed", "attempts": 2, "error": "rate limited again"});
    assert_eq!(pick(&row, "status attempts error"), expected);
    assert!(row["finished_at"].is_string(), "finished_at not set: {row}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(q.claim("w1", 10, 60).await, NONE);

    // A failure that is not transient is final at once.
    let other = q.queue(1).await[0];
    assert_eq!(q.claim("w1", 10, 60).await, [other]);
    assert_eq!(q.fail(other, "w1", "No such price", false).await, "failed");
    assert_eq!(q.row(other).await["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_leases_are_claimed_again_then_given_up() {
    let mut q = Queue::new().await;
    set_config(&q.owner, "request_max_attempts = 2").await;
    let id = q.checkout(PACK).await;
    assert_eq!(q.claim("w1", 10, 1).await, [id]);
    assert_eq!(
        q.claim("w2", 10, 1).await,
        NONE,
        "claimed while the lease holds"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // w1 stopped responding; w2 takes over.
    let sql = "SELECT id, attempts FROM billing.claim_requests('w2', 10, 1)";
    let again = q.api.call(&Caller::Service, sql, &[]).await.unwrap();
    let again: Vec<(Uuid, i32)> = again.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(again, [(id, 2)]);
    assert!(
        !q.finish(id, "w1").await,
        "w1 finished after losing its lease"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // w2 died too, after the last attempt: the next claim gives up on the request.
    assert_eq!(q.claim("w3", 10, 60).await, NONE);
    let user = q.user.clone();
    let result = q.await_as(&user, id, Some(0)).await.0.unwrap();
    assert_eq!(result["status"], "failed");
    let error = result["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("gave up after 2 attempts"),
        "error {error:?}"
    );
    let row = q.row(id).await;
    assert_eq!(row["locked_by"], Value::Null);
    assert!(row["finished_at"].is_string(), "finished_at not set: {row}");
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
    // Ten at once from one user: the cap holds under concurrency.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut api = q.db.api().await;
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
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

#[tokio::test]
async fn claims_are_fair_across_users() {
    let mut q = Queue::new().await;
    // One user queued many requests long ago; two others one each, later.
    let noisy = Uuid::new_v4();
    let (b, c) = (Uuid::new_v4(), Uuid::new_v4());
    for (user, n, ago) in [(noisy, 5, 60), (b, 1, 10), (c, 1, 5)] {
        q.owner
            .execute(
                "INSERT INTO billing.stripe_requests (user_id, kind, created_at, run_after)
                 SELECT $1, 'checkout', now() - make_interval(secs => $3), now() - make_interval(secs => $3)
                 FROM generate_series(1, $2)",
                &[&user, &n, &(ago as f64)],
            )
            .await
            .unwrap();
    }
    // One request per user per claim, oldest users first.
    let first = q.claim("w1", 3, 60).await;
    let rows = q
        .owner
        .query(
            "SELECT user_id FROM billing.stripe_requests WHERE id = ANY($1) ORDER BY created_at",
            &[&first],
        )
        .await
        .unwrap();
    let owners: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, [noisy, b, c]);
    // The noisy user's next request waits while one of theirs is running.
    assert_eq!(q.claim("w2", 3, 60).await, NONE);
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
async fn prune_expires_stale_requests_and_deletes_old_ones() {
    let mut q = Queue::new().await;
    let [old, recent]: [Uuid; 2] = q.queue(2).await.try_into().unwrap();
    assert_eq!(q.claim("w1", 10, 60).await.len(), 2);
    for id in [old, recent] {
        assert!(q.finish(id, "w1").await);
    }
    q.owner
        .execute(
            "UPDATE billing.stripe_requests SET finished_at = now() - interval '31 days' WHERE id = $1",
            &[&old],
        )
        .await
        .unwrap();
    // A checkout nobody served for two days is no use to its user any more.
    let stale: Uuid = q
        .owner
        .query_one(
            "INSERT INTO billing.stripe_requests (user_id, kind, created_at) VALUES ($1, 'checkout', now() - interval '2 days')
             RETURNING id",
            &[&q.a],
        )
        .await
        .unwrap()
        .get(0);
    let pruned: Value = q
        .owner
        .query_one("SELECT billing.prune()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pruned,
        json!({"requests_expired": 1, "requests_deleted": 1, "events_deleted": 0})
    );
    assert_eq!(
        pick(&q.row(stale).await, "status error"),
        json!({"status": "failed", "error": "expired: not served within a day"})
    );
    assert_eq!(q.row(recent).await["status"], "succeeded");
    let gone = q
        .owner
        .query(
            "SELECT 1 FROM billing.stripe_requests WHERE id = $1",
            &[&old],
        )
        .await
        .unwrap();
    assert!(gone.is_empty());
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
