//! The answers errors become: statuses from the table of codes, the body, the headers and the
//! counter's label.

use super::*;
use serde_json::Value;

async fn answer(e: ApiError) -> (StatusCode, Response, Value) {
    let response = e.into_response();
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 4096).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap();
    (
        status,
        Response::from_parts(parts, axum::body::Body::empty()),
        body,
    )
}

#[test]
fn webhook_sqlstates_map_to_statuses() {
    for code in [
        "28000", "28P01", "22P02", "22023", "22008", "22032", "BL009",
    ] {
        let (status, message) = status_for_sqlstate(code, "no signature matches");
        assert_eq!(status, StatusCode::BAD_REQUEST, "{code}");
        assert_eq!(message, "no signature matches");
    }
    assert_eq!(
        status_for_sqlstate("BL003", "billing is not configured").0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, message) = status_for_sqlstate("42P01", "relation secret_table does not exist");
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        message, "database error",
        "internal details stay in the log"
    );
}

#[test]
fn webhook_codes_outside_the_table_are_internal_errors() {
    // A cast error in a bug is 22P02 too: still 400, since the table cannot tell them
    // apart; codes the product never raises are ours to fix.
    for code in ["42P01", "23505", "XX000", "P0001", "BL001"] {
        assert_eq!(
            status_for_sqlstate(code, "x").0,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{code}"
        );
    }
}

#[tokio::test]
async fn api_sqlstates_take_the_tables_status_and_keep_their_message() {
    for (code, status) in [
        ("BL002", StatusCode::BAD_REQUEST),
        ("28000", StatusCode::UNAUTHORIZED),
        ("BL011", StatusCode::TOO_MANY_REQUESTS),
        ("P0002", StatusCode::NOT_FOUND),
        ("BL007", StatusCode::INTERNAL_SERVER_ERROR),
    ] {
        let (got, response, body) = answer(api_sqlstate(code, "as SQL says")).await;
        assert_eq!(got, status, "{code}");
        assert_eq!(body, json!({"error": "as SQL says"}), "{code}");
        // Only the token's own refusals challenge; SQL's 28000 never did.
        assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
    let (status, _, body) = answer(api_sqlstate("42P01", "relation x does not exist")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "database error"}));
}

#[tokio::test]
async fn busy_and_rate_limited_answers_say_when_to_come_back() {
    let (status, response, body) = answer(ApiError::busy()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": "busy"}));
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let (status, response, _) = answer(ApiError::rate_limited(Duration::from_millis(1500))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    let (_, response, _) = answer(ApiError::still_preparing()).await;
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    // A refusal tells nobody to come back.
    let (_, response, _) = answer(ApiError::refused(StatusCode::BAD_REQUEST, "x")).await;
    assert!(!response.headers().contains_key(header::RETRY_AFTER));
}

#[test]
fn retry_after_rounds_up() {
    assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
}

#[tokio::test]
async fn a_bad_token_is_challenged_and_missing_keys_are_ours() {
    let (status, response, body) = answer(AuthError::Expired.into()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"error": "JWT expired"}));
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let (status, response, _) = answer(AuthError::KeysUnavailable.into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.headers().contains_key(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn every_error_answer_carries_its_counter_label() {
    let label = |e: ApiError| {
        e.into_response()
            .extensions()
            .get::<Outcome>()
            .unwrap()
            .label
    };
    assert_eq!(
        label(ApiError::refused(StatusCode::PAYLOAD_TOO_LARGE, "x")),
        "rejected"
    );
    assert_eq!(label(ApiError::webhook(DbError::Busy(3))), "busy");
    assert_eq!(label(ApiError::webhook(DbError::Timeout)), "error");
    assert_eq!(
        label(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "billing is not configured"
        )),
        "unavailable"
    );
}

#[tokio::test]
async fn the_database_being_away_is_500_for_stripe_and_503_for_users() {
    let (status, _, body) = answer(ApiError::webhook(DbError::Timeout)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "database unavailable"}));
    let (status, _, body) = answer(DbError::Timeout.into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": "database unavailable"}));
    let (status, response, body) = answer(DbError::Busy(2).into()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"error": "busy"}));
    assert!(!response.headers().contains_key(header::RETRY_AFTER));
}
