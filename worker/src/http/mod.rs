//! The HTTP server: the Stripe webhook endpoint (`webhook`), a health check (`health`) and
//! the Prometheus metrics (`metrics`), stopped gracefully on shutdown.

mod health;
mod metrics;
mod webhook;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::db::Db;

/// The path Stripe (or `stripe listen --forward-to`) posts events to.
pub const WEBHOOK_PATH: &str = "/api/stripe/webhook";

/// The path of the health check.
pub const HEALTH_PATH: &str = "/healthz";

/// The path Prometheus scrapes.
pub const METRICS_PATH: &str = "/metrics";

/// What the handlers share: the queue's connections (for the health check and the metrics,
/// which should see what the queue sees), the webhook endpoint's own, and the metrics.
#[derive(Clone)]
pub struct HttpState {
    pub db: Db,
    pub webhooks: Db,
    pub metrics: PrometheusHandle,
}

/// The routes, with the webhook body limited to `max_body_bytes`.
pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook::receive))
        .route(HEALTH_PATH, get(health::healthz))
        .route(METRICS_PATH, get(metrics::metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
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
