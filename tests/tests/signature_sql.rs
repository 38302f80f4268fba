//! The three signature functions through a real client against the installed extension:
//! exact raw bodies (unicode, escapes, whitespace, 1 MB), every failure's SQLSTATE, hostile
//! headers, NULL arguments, and no secret in any message.
use stripe_billing_tests::events::unix_now;
use stripe_billing_tests::pg::{assert_error, db_error, TestDb};
use tokio_postgres::Client;

const SECRET: &str = "whsec_sql_secret_value";

async fn client() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.owner().await;
    (db, client)
}

async fn header(client: &Client, payload: &str, t: i64) -> String {
    client
        .query_one(
            "SELECT billing.stripe_signature_header($1, $2, $3)",
            &[&payload, &SECRET, &t],
        )
        .await
        .unwrap()
        .get(0)
}

async fn is_valid(
    client: &Client,
    payload: Option<&str>,
    header: Option<&str>,
    secret: Option<&str>,
) -> bool {
    client
        .query_one(
            "SELECT billing.stripe_signature_is_valid($1, $2, $3, 0)",
            &[&payload, &header, &secret],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn raw_bodies_verify_byte_for_byte() {
    let (_db, client) = client().await;
    let big = format!("{{\"blob\":\"{}\"}}", "ü\\n\\u00e9 \\t".repeat(150_000));
    assert!(big.len() > 1_000_000);
    let bodies = [
        "{\"name\":\"Zoë 🚀\",\"quote\":\"\\\"\",\"esc\":\"\\u00e9\\n\"}".to_string(),
        "{\n  \"pretty\": true,\n  \"trailing\": \"spaces\"   \n}   ".to_string(),
        "{\"no_newline\":1}".to_string(),
        big,
    ];
    for body in &bodies {
        let t = unix_now();
        let h = header(&client, body, t).await;
        // The SQL function and the Rust library sign alike.
        assert_eq!(
            h,
            stripe_billing_core::signature::signature_header(body.as_bytes(), SECRET, t)
        );
        assert!(is_valid(&client, Some(body), Some(&h), Some(SECRET)).await);
        let changed = format!("{body}\n");
        assert!(
            !is_valid(&client, Some(&changed), Some(&h), Some(SECRET)).await,
            "a trailing newline changes the bytes"
        );
        let event: serde_json::Value = client
            .query_one(
                "SELECT billing.construct_event($1, $2, $3)::json",
                &[body, &h, &SECRET],
            )
            .await
            .unwrap()
            .get(0);
        assert!(event.is_object());
    }
}

#[tokio::test]
async fn each_failure_has_its_sqlstate_and_message() {
    let (_db, client) = client().await;
    let body = r#"{"id":"evt_1"}"#;
    let good = header(&client, body, unix_now()).await;
    // Well outside the 300 s tolerance, so a slow machine cannot bring them back inside (the
    // exact boundary is tested with a pinned clock below and in the core unit tests).
    let stale = header(&client, body, unix_now() - 900).await;
    let future = header(&client, body, unix_now() + 900).await;
    let construct = |h: Option<String>, s: Option<&'static str>| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT billing.construct_event($1, $2, $3)",
                    &[&body, &h, &s],
                )
                .await
        }
    };
    assert_error(
        construct(None, Some(SECRET)).await,
        "28000",
        "no Stripe-Signature header was provided",
    );
    assert_error(
        construct(Some("   ".into()), Some(SECRET)).await,
        "28000",
        "no Stripe-Signature header",
    );
    assert_error(
        construct(Some("v1=abc".into()), Some(SECRET)).await,
        "22P02",
        "malformed: it has no t= timestamp",
    );
    assert_error(
        construct(Some("t=12x,v1=ab".into()), Some(SECRET)).await,
        "22P02",
        "not an integer",
    );
    assert_error(
        construct(Some("t=99999999999999999999,v1=ab".into()), Some(SECRET)).await,
        "22P02",
        "out of range",
    );
    assert_error(
        construct(Some("t=1,t=2,v1=ab".into()), Some(SECRET)).await,
        "22P02",
        "two different t=",
    );
    assert_error(
        construct(Some(format!("t={}", unix_now())), Some(SECRET)).await,
        "22023",
        "no v1 signatures",
    );
    assert_error(
        construct(Some(good.replace("v1=", "v0=")), Some(SECRET)).await,
        "22023",
        "no v1 signatures",
    );
    assert_error(
        construct(Some(good.clone()), Some("whsec_other")).await,
        "28P01",
        "no signature in the Stripe-Signature header matches",
    );
    assert_error(
        construct(Some(format!("t={},v1=zz", unix_now())), Some(SECRET)).await,
        "28P01",
        "matches",
    );
    assert_error(
        construct(Some(format!("t={},v1=abc", unix_now())), Some(SECRET)).await,
        "28P01",
        "matches",
    );
    assert_error(
        construct(Some(stale), Some(SECRET)).await,
        "22008",
        "outside the tolerance zone",
    );
    assert_error(
        construct(Some(future), Some(SECRET)).await,
        "22008",
        "outside the tolerance zone",
    );
    assert_error(
        construct(Some(good.clone()), None).await,
        "55000",
        "no webhook signing secret is configured",
    );
    assert_error(
        construct(Some(good.clone()), Some("")).await,
        "55000",
        "no webhook signing secret",
    );
    let not_json = "definitely not json";
    let h = header(&client, not_json, unix_now()).await;
    assert_error(
        client
            .query_one(
                "SELECT billing.construct_event($1, $2, $3)",
                &[&not_json, &h, &SECRET],
            )
            .await,
        "22032",
        "not valid JSON",
    );
    assert_error(
        client
            .query_one(
                "SELECT billing.construct_event(NULL, $1, $2)",
                &[&good, &SECRET],
            )
            .await,
        "22004",
        "payload is NULL",
    );
    assert_error(
        client
            .query_one("SELECT billing.stripe_signature_header('{}', '', 1)", &[])
            .await,
        "55000",
        "no webhook signing secret",
    );
}

#[tokio::test]
async fn hostile_input_never_crashes_the_backend_or_leaks_the_secret() {
    let (_db, client) = client().await;
    let body = "{}";
    let huge = format!(
        "t={},{}",
        unix_now(),
        "v1=".to_string() + &"a".repeat(2_000_000)
    );
    let many = (0..5000).map(|_| "v1=00,").collect::<String>() + "t=1";
    // (A NUL byte cannot even reach the function: Postgres text refuses it.)
    let headers = [
        huge.as_str(),
        many.as_str(),
        "t=\u{1F680}",
        ",,,,",
        "=",
        "t=",
        "t=-",
        "t=-9223372036854775808,v1=",
    ];
    for h in headers {
        assert!(!is_valid(&client, Some(body), Some(h), Some(SECRET)).await);
        let err = client
            .query_one(
                "SELECT billing.construct_event($1, $2, $3)",
                &[&body, &h, &SECRET],
            )
            .await;
        if let Err(e) = &err {
            if e.as_db_error().is_some() {
                let (code, message) = db_error(e);
                assert!(!message.contains(SECRET), "{message}");
                assert!(
                    ["28000", "22P02", "22023", "28P01", "22008"].contains(&code.as_str()),
                    "{code} {message}"
                );
            }
        } else {
            panic!("{h:?} was accepted");
        }
    }
    for (p, h, s) in [
        (None, Some("t=1,v1=00"), Some(SECRET)),
        (Some(body), None, Some(SECRET)),
        (Some(body), Some("t=1"), None),
    ] {
        assert!(!is_valid(&client, p, h, s).await);
    }
    // The backend is still alive and verification still works.
    let h = header(&client, body, unix_now()).await;
    assert!(is_valid(&client, Some(body), Some(&h), Some(SECRET)).await);
}

#[tokio::test]
async fn tolerance_and_clock_arguments() {
    let (_db, client) = client().await;
    let body = "{}";
    let h = header(&client, body, 1_700_000_000).await;
    let check = |tolerance: Option<i32>, at: &'static str| {
        let (client, h) = (&client, h.clone());
        async move {
            client
                .query_one(
                    &format!("SELECT billing.stripe_signature_is_valid($1, $2, $3, $4, {at})"),
                    &[&body, &h, &SECRET, &tolerance],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(check(Some(300), "to_timestamp(1700000300)").await);
    assert!(!check(Some(300), "to_timestamp(1700000301)").await);
    assert!(check(Some(300), "to_timestamp(1699999700)").await);
    assert!(!check(Some(300), "to_timestamp(1699999699)").await);
    assert!(check(Some(0), "now()").await, "0 disables the time check");
    assert!(check(None, "now()").await, "NULL disables the time check");
    // Infinite clocks are far outside any tolerance, and do not overflow.
    assert!(!check(Some(i32::MAX), "'infinity'::timestamptz").await);
    assert!(!check(Some(i32::MAX), "'-infinity'::timestamptz").await);
    // A negative tolerance is a mistake, not a way to turn the check off.
    assert!(!check(Some(-1), "to_timestamp(1700000000)").await);
    let err = client
        .query_one(
            "SELECT billing.construct_event($1, $2, $3, -5, to_timestamp(1700000000))",
            &[&body, &h, &SECRET],
        )
        .await;
    stripe_billing_tests::pg::assert_error(err, "22023", "the tolerance must be 0 or more seconds");
}
