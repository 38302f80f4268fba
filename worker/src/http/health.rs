//! `GET /healthz`: tells a load balancer or an operator that the process answers and whether
//! it reaches Postgres.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{HttpState, HEALTH_TIMEOUT};

/// `GET /healthz`: 200 `{"ok": true, "database": bool}`. The process is healthy as long as
/// it answers; whether Postgres is reachable is reported, not fatal (the worker reconnects).
pub async fn healthz(State(state): State<HttpState>) -> Json<Value> {
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
