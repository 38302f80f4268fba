//! The HTTP server: the Stripe webhook endpoint (`webhook`) and a health check (`health`),
//! stopped gracefully on shutdown.

mod health;
mod webhook;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// The path Stripe (or `stripe listen --forward-to`) posts events to.
pub const WEBHOOK_PATH: &str = "/api/stripe/webhook";

/// The path of the health check.
pub const HEALTH_PATH: &str = "/healthz";

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
        .route(HEALTH_PATH, get(health::healthz))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(HttpState { db, webhooks })
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
