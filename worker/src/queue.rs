//! The main loop: one `tokio::select!` over shutdown, notifications, the poll tick and
//! finished tasks. Whenever something suggests work (a notification, a tick, a reconnect, a
//! task that freed a slot) it claims up to the free slots and spawns a task per row.
//! On shutdown it stops claiming and gives in-flight tasks the shutdown timeout to finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::claim;
use crate::listen::Wake;
use crate::process::{self, Ctx};
use crate::retry;

/// Loop settings.
pub struct Settings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease_seconds: u32,
    pub shutdown_timeout: Duration,
}

/// Serves the queue until `ctx.shutdown` is cancelled, then drains.
pub async fn run(ctx: Arc<Ctx>, settings: Settings, mut wake: mpsc::Receiver<Wake>) {
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval(settings.poll_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut wake_open = true;
    let mut want_claim = true;
    // After a failed claim, Postgres is left alone until this instant.
    let mut db_failures = 0u32;
    let mut db_retry_at: Option<Instant> = None;

    loop {
        let free = settings.concurrency.saturating_sub(tasks.len());
        if want_claim && free > 0 && db_retry_at.is_none() && !ctx.shutdown.is_cancelled() {
            match claim_batch(&ctx, free, settings.lease_seconds).await {
                Ok(rows) => {
                    db_failures = 0;
                    // A full batch suggests more is waiting: claim again when a slot frees.
                    want_claim = rows.len() == free;
                    for row in rows {
                        tracing::debug!(request_id = %row.id, kind = %row.kind, attempts = row.attempts, "claimed");
                        tasks.spawn(process::process(ctx.clone(), row));
                    }
                }
                Err(e) => {
                    db_failures += 1;
                    let wait = retry::DB_BACKOFF.full_jitter(db_failures, &mut rand::rng());
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "claiming requests failed");
                    db_retry_at = Some(Instant::now() + wait);
                    want_claim = true;
                }
            }
        }
        let backoff_over = async {
            match db_retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    // A request task cannot panic on input; if one did, its row is retried
                    // after the lease.
                    tracing::error!(error = %e, "request task failed");
                }
                want_claim = true;
            }
            note = wake.recv(), if wake_open => match note {
                Some(Wake::Listening) => {
                    // The database is evidently back: catch up now.
                    db_retry_at = None;
                    want_claim = true;
                }
                Some(Wake::Notified(payload)) => {
                    tracing::debug!(request_id = %payload, "notified");
                    want_claim = true;
                }
                None => wake_open = false,
            },
            _ = tick.tick() => want_claim = true,
            _ = backoff_over => db_retry_at = None,
        }
    }

    drain(tasks, settings.shutdown_timeout).await;
}

async fn claim_batch(
    ctx: &Ctx,
    max: usize,
    lease_seconds: u32,
) -> Result<Vec<claim::Claimed>, crate::db::DbError> {
    let mut conn = ctx.db.get().await?;
    claim::claim(&mut conn, &ctx.worker_id, max, lease_seconds).await
}

/// Waits for in-flight requests up to `timeout`; the rest are abandoned and come back to the
/// queue when their lease ends (their Stripe calls are idempotent).
async fn drain(mut tasks: JoinSet<()>, timeout: Duration) {
    if tasks.is_empty() {
        return;
    }
    tracing::info!(
        in_flight = tasks.len(),
        timeout_ms = timeout.as_millis() as u64,
        "waiting for in-flight requests"
    );
    let finished = tokio::time::timeout(timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            abandoned = tasks.len(),
            "shutdown timeout: abandoning in-flight requests; they are retried after their lease"
        );
        tasks.abort_all();
    }
}
