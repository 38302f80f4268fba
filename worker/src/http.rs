//! The HTTP server: the Stripe webhook endpoint and a health check, stopped gracefully on
//! shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::webhook;

/// The path Stripe (or `stripe listen --forward-to`) posts events to.
pub const WEBHOOK_PATH: &str = "/api/stripe/webhook";

/// How long the health check waits for Postgres.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share: the queue's connections (for the health check, which should
/// see what the queue sees) and the webhook endpoint's own.
#[derive(Clone)]
pub struct HttpState {
    pub db: Db,
    pub webhooks: Db,
}

/// The routes, with the webhook body limited to `max_body_bytes`.
pub fn router(db: Db, webhooks: Db, max_body_bytes: usize) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook::receive))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(HttpState { db, webhooks })
}

/// `GET /healthz`: 200 `{"ok": true, "database": bool}`. The process is healthy as long as
/// it answers; whether Postgres is reachable is reported, not fatal (the worker reconnects).
async fn healthz(State(state): State<HttpState>) -> Json<Value> {
    let database = tokio::time::timeout(HEALTH_TIMEOUT, async {
        let mut conn = state.db.get().await.ok()?;
        conn.query("SELECT 1", &[]).await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    Json(json!({"ok": true, "database": database}))
}

/// Binds the listen address; an error here ends the process.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown`, then lets in-flight requests complete.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}
