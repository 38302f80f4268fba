//! Webhook signing secrets kept in Supabase Vault. The supabase_vault extension cannot be
//! installed here (it is Supabase's, and needs its key management), so the superuser creates a
//! stand-in: a table and a view `vault.decrypted_secrets` with the columns Supabase's view has
//! (`id, name, description, secret, decrypted_secret, key_id, nonce, created_at, updated_at`),
//! the secret stored in the clear, and SELECT on the view for the installer, as Supabase grants
//! `postgres`. What is tested is which secrets the product reads and how, not the encryption.
use serde_json::{json, Value};
use stripe_billing_core::signature::signature_header;
use stripe_billing_tests::events::{self, unix_now, Shape};
use stripe_billing_tests::pg::{assert_error, Caller, TestDb};
use tokio_postgres::Client;

const VAULT_STAND_IN: &str = "
CREATE SCHEMA vault;
CREATE TABLE vault.secrets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text UNIQUE, description text NOT NULL DEFAULT '',
    secret text NOT NULL, key_id uuid, nonce bytea,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE VIEW vault.decrypted_secrets AS
    SELECT id, name, description, secret, secret AS decrypted_secret, key_id, nonce, created_at, updated_at
    FROM vault.secrets;
REVOKE ALL ON SCHEMA vault FROM PUBLIC;
";

async fn with_vault() -> (TestDb, Client) {
    let db = TestDb::new().await;
    let superuser = db.superuser().await;
    superuser.batch_execute(VAULT_STAND_IN).await.unwrap();
    let installer: String = db
        .owner()
        .await
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    superuser
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA vault TO {installer}; GRANT SELECT ON vault.decrypted_secrets TO {installer};"
        ))
        .await
        .unwrap();
    (db, superuser)
}

async fn store(vault: &Client, name: &str, secret: &str) {
    vault
        .execute(
            "INSERT INTO vault.secrets (name, secret) VALUES ($1, $2)",
            &[&name, &secret],
        )
        .await
        .unwrap();
}

/// A customer event of `livemode`, signed now with `secret`: (body, header).
fn signed(livemode: bool, secret: &str) -> (String, String) {
    let mut event = events::event(
        Shape::Basil,
        "customer.created",
        unix_now(),
        json!({"id": format!("cus_{}", &events::event_id()[4..18]), "object": "customer", "metadata": {}}),
    );
    event["livemode"] = json!(livemode);
    let body = event.to_string();
    let header = signature_header(body.as_bytes(), secret, unix_now());
    (body, header)
}

async fn deliver(
    owner: &Client,
    livemode: bool,
    secret: &str,
) -> Result<Value, tokio_postgres::Error> {
    let (body, header) = signed(livemode, secret);
    owner
        .query_one(
            "SELECT billing.handle_stripe_webhook($1, $2)",
            &[&body, &header],
        )
        .await
        .map(|r| r.get(0))
}

#[tokio::test]
async fn secrets_named_for_their_mode_in_vault_verify_webhooks() {
    let (db, vault) = with_vault().await;
    let owner = db.owner().await;
    store(&vault, "stripe_webhook_secret_test", "whsec_vaultTest1").await;
    store(
        &vault,
        "stripe_webhook_secret_live_2026_rotated",
        "whsec_vaultLive2",
    )
    .await;
    store(&vault, "stripe_webhook_secret_staging", "whsec_misnamed").await;
    store(&vault, "openai_key", "whsec_unrelated").await;

    let ok = deliver(&owner, false, "whsec_vaultTest1").await.unwrap();
    assert_eq!(ok["processed"], true, "{ok}");
    let ok = deliver(&owner, true, "whsec_vaultLive2").await.unwrap();
    assert_eq!(ok["processed"], true, "{ok}");
    // The name says which mode a secret signs.
    assert_error(
        deliver(&owner, false, "whsec_vaultLive2").await,
        "BL009",
        "a test-mode event was signed with a live-mode secret",
    );
    // Names outside the pattern are not webhook secrets.
    for other in ["whsec_misnamed", "whsec_unrelated"] {
        assert_error(
            deliver(&owner, false, other).await,
            "28P01",
            "no signature in the Stripe-Signature header matches the payload",
        );
    }
    // Beside billing.webhook_secrets: both verify.
    owner
        .batch_execute(
            "INSERT INTO billing.webhook_secrets (secret, livemode) VALUES ('whsec_fromTable', false)",
        )
        .await
        .unwrap();
    for secret in ["whsec_fromTable", "whsec_vaultTest1"] {
        let ok = deliver(&owner, false, secret).await.unwrap();
        assert_eq!(ok["processed"], true, "{secret}: {ok}");
    }
    // PostgREST's anonymous webhook entry point reads Vault as the function's owner: anon itself
    // may not.
    let (body, header) = signed(false, "whsec_vaultTest1");
    let headers = json!({ "stripe-signature": header }).to_string();
    let mut api = db.api().await;
    let rows = api
        .call_with_headers(
            &Caller::Anon,
            &headers,
            "SELECT billing.stripe_webhook($1::text::json)",
            &[&body],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, Value>(0)["processed"], true);
    assert_error(
        api.call(
            &Caller::Anon,
            "SELECT count(*) FROM vault.decrypted_secrets",
            &[],
        )
        .await,
        "42501",
        "permission denied",
    );
    // A privileged role that may not read Vault (service_role here) sees no Vault secrets rather
    // than an error (the worker's doctor counts them this way); the installer sees them.
    let count = "SELECT count(*) FROM billing._vault_webhook_secrets()";
    let rows = api.call(&Caller::Service, count, &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);
    let seen: i64 = owner.query_one(count, &[]).await.unwrap().get(0);
    assert_eq!(seen, 2, "stripe_webhook_secret_test and _live_2026_rotated");
}

#[tokio::test]
async fn without_any_secret_in_vault_or_the_table_billing_is_not_configured() {
    let (db, vault) = with_vault().await;
    let owner = db.owner().await;
    store(&vault, "stripe_webhook_secret_misnamed_test", "whsec_x").await;
    assert_error(
        deliver(&owner, false, "whsec_x").await,
        "BL003",
        "billing is not configured: no webhook signing secret",
    );
    // An empty secret is no secret.
    store(&vault, "stripe_webhook_secret_test", "").await;
    assert_error(
        deliver(&owner, false, "whsec_x").await,
        "BL003",
        "billing is not configured",
    );
}
