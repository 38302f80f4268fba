//! `GET /metrics`: the Prometheus text format. The database's figures are read from
//! `billing.health()` first, so they are as fresh as the scrape; when the read fails (or takes
//! longer than [`HEALTH_TIMEOUT`]) the scrape still answers, with `stripe_billing_database_up`
//! 0 and the last figures read.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::{HttpState, HEALTH_TIMEOUT};
use crate::telemetry::{self, Health};

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn metrics(State(state): State<HttpState>) -> Response {
    let health = tokio::time::timeout(HEALTH_TIMEOUT, async {
        let mut conn = state.db.get().await.map_err(|e| e.to_string())?;
        let row = conn
            .query_one(telemetry::HEALTH_SQL, &[])
            .await
            .map_err(|e| e.to_string())?;
        Health::from_row(&row).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    if let Err(e) = &health {
        tracing::warn!(error = %e, "metrics: cannot read billing.health()");
    }
    telemetry::set_health(health.as_ref().ok());
    ([(CONTENT_TYPE, TEXT_FORMAT)], state.metrics.render()).into_response()
}
