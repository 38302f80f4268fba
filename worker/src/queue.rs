//! The main loop: one `tokio::select!` over shutdown, notifications, the poll tick and
//! finished tasks. Whenever something suggests work (a notification, a tick, a reconnect, a
//! task that freed a slot) it claims up to the free slots and spawns a task per row.
//! On shutdown it stops claiming and hands the in-flight tasks to [`drain`], which lets them
//! finish until the shutdown deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::claim;
use crate::listen::Wake;
use crate::process::{self, Ctx};
use crate::retry;

/// Loop settings.
pub struct Settings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease_seconds: u32,
}

/// At most this much of the shutdown timeout is kept for stopping the requests that are still
/// running at its end, so they requeue their rows instead of leaving them to the lease.
const REQUEUE_GRACE: Duration = Duration::from_secs(1);

/// Serves the queue until `shutdown` is cancelled; returns the requests still in flight.
/// Request tasks do not watch `shutdown` (they watch `ctx.abort`), so a claim made just
/// before the signal is still carried out.
pub async fn run(
    ctx: Arc<Ctx>,
    settings: Settings,
    mut wake: mpsc::Receiver<Wake>,
    shutdown: &CancellationToken,
) -> JoinSet<()> {
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
        if want_claim && free > 0 && db_retry_at.is_none() && !shutdown.is_cancelled() {
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
                    let retry_in_ms = wait.as_millis() as u64;
                    // Either way the loop keeps trying: a permanent error (say, a revoked
                    // grant) may be fixed while the worker runs, but it needs an operator.
                    if e.is_transient() {
                        tracing::warn!(error = %e, retry_in_ms, "claiming requests failed");
                    } else {
                        tracing::error!(error = %e, retry_in_ms, "claiming requests failed, and retrying alone will not help");
                    }
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
            _ = shutdown.cancelled() => break,
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

    tasks
}

async fn claim_batch(
    ctx: &Ctx,
    max: usize,
    lease_seconds: u32,
) -> Result<Vec<claim::Claimed>, crate::db::DbError> {
    let mut conn = ctx.db.get().await?;
    claim::claim(&mut conn, &ctx.worker_id, max, lease_seconds).await
}

/// Waits for in-flight requests until `deadline`. Shortly before it, `abort` stops the ones
/// still running, which then requeue their rows; whatever has not ended by the deadline is
/// dropped and comes back when its lease ends (its Stripe calls are idempotent).
pub async fn drain(mut tasks: JoinSet<()>, deadline: Instant, abort: &CancellationToken) {
    if tasks.is_empty() {
        return;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    tracing::info!(
        in_flight = tasks.len(),
        timeout_ms = left.as_millis() as u64,
        "waiting for in-flight requests"
    );
    let stop_at = deadline - REQUEUE_GRACE.min(left / 4);
    if tokio::time::timeout_at(stop_at, join_all(&mut tasks))
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        in_flight = tasks.len(),
        "shutdown timeout: stopping in-flight requests; their rows are requeued"
    );
    abort.cancel();
    if tokio::time::timeout_at(deadline, join_all(&mut tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            abandoned = tasks.len(),
            "abandoning in-flight requests; they are retried after their lease"
        );
        tasks.abort_all();
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that runs for `work` unless `abort` stops it first; reports how it ended.
    fn spawn(
        tasks: &mut JoinSet<()>,
        work: Duration,
        abort: &CancellationToken,
        ended: mpsc::UnboundedSender<&'static str>,
    ) {
        let abort = abort.clone();
        tasks.spawn(async move {
            let how = if crate::shutdown::sleep(work, &abort).await {
                "finished"
            } else {
                "stopped"
            };
            let _ = ended.send(how);
        });
    }

    #[tokio::test]
    async fn drain_lets_work_finish_within_the_deadline() {
        let abort = CancellationToken::new();
        let (tx, mut ended) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        spawn(&mut tasks, Duration::from_millis(300), &abort, tx.clone());
        spawn(&mut tasks, Duration::from_millis(10), &abort, tx);
        let started = Instant::now();
        drain(tasks, started + Duration::from_secs(20), &abort).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        assert!(!abort.is_cancelled());
        assert_eq!(ended.recv().await, Some("finished"));
        assert_eq!(ended.recv().await, Some("finished"));
    }

    #[tokio::test]
    async fn drain_stops_what_would_overrun_the_deadline() {
        let abort = CancellationToken::new();
        let (tx, mut ended) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        spawn(&mut tasks, Duration::from_secs(60), &abort, tx);
        let started = Instant::now();
        let deadline = started + Duration::from_millis(800);
        drain(tasks, deadline, &abort).await;
        // Stopped a grace period (a quarter of 800 ms here) before the deadline, and it
        // ended in time to requeue its row.
        assert!(abort.is_cancelled());
        assert_eq!(ended.try_recv(), Ok("stopped"));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}
