//! The HTTP server: the Stripe webhook endpoint (`webhook`), the users' checkout and portal
//! endpoints (`api`, authenticated by `auth`, limited per user by `user_limit`), a health
//! check (`health`) and the Prometheus metrics (`metrics`), stopped gracefully on shutdown.
//! Every failed answer is an [`ApiError`] (`error`), which logs it and writes the body.

pub mod api;
pub mod auth;
mod error;
mod health;
mod metrics;
pub mod user_limit;
mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::map_response;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::db::Db;
use api::ApiState;
pub use error::ApiError;

/// The path Stripe (or `stripe listen --forward-to`) posts events to.
pub const WEBHOOK_PATH: &str = "/api/stripe/webhook";

/// The users' endpoints.
pub const CHECKOUT_PATH: &str = "/api/stripe/checkout";
pub const PORTAL_PATH: &str = "/api/stripe/portal";

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// How long a webhook or API call waits for a free connection (or slot) before answering 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the health check and a metrics scrape wait for the database.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

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

/// The API's settings for the router.
pub struct ApiRoutes {
    pub state: Arc<ApiState>,
    pub max_body_bytes: usize,
    /// Origins allowed to call from a browser (already normalised by the configuration).
    pub cors_origins: Vec<String>,
    /// Origins whose pages may sign calls with the session cookie: CORS lets them too, and
    /// lets their browser send the cookie (credentials).
    pub cookie_origins: Vec<String>,
}

/// The routes, with the webhook body limited to `max_body_bytes` and the API's to its own
/// limit. CORS applies to the API only: Stripe is not a browser.
pub fn router(state: HttpState, max_body_bytes: usize, api: ApiRoutes) -> Router {
    let mut api_routes = Router::new()
        .route(CHECKOUT_PATH, post(api::checkout))
        .route(PORTAL_PATH, post(api::portal))
        .layer(DefaultBodyLimit::max(api.max_body_bytes))
        .with_state(api.state);
    if let Some(cors) = cors(&api.cors_origins, &api.cookie_origins) {
        api_routes = api_routes.layer(cors);
    }
    Router::new()
        .route(
            WEBHOOK_PATH,
            post(webhook::receive).layer(map_response(webhook::count)),
        )
        .route(HEALTH_PATH, get(health::healthz))
        .route(METRICS_PATH, get(metrics::metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
        .merge(api_routes)
}

/// Browsers on these origins may call the API (the preflight is answered here); pages on any
/// other origin get no CORS headers, so their browser refuses to hand them the answer. None:
/// no CORS at all (same-origin callers, or a proxy in front). With cookie origins, the
/// answers also allow credentials, which a browser needs before it sends the cookie on a
/// cross-origin `fetch(..., {credentials: 'include'})`; that is safe only because a cookie
/// call is accepted from the cookie origins alone (auth::cookie checks Origin itself).
fn cors(cors_origins: &[String], cookie_origins: &[String]) -> Option<CorsLayer> {
    let mut origins: Vec<HeaderValue> = cors_origins
        .iter()
        .chain(cookie_origins)
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    origins.dedup();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_credentials(!cookie_origins.is_empty())
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([header::RETRY_AFTER])
            .max_age(PREFLIGHT_MAX_AGE),
    )
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
