//! Shutdown of the queue and of the HTTP API's serving tasks: lets the requests in flight at
//! the signal finish until the shutdown deadline, stops the ones that would overrun it (they
//! requeue their rows) and abandons whatever still has not ended (the lease brings those rows
//! back).

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// At most this much of the shutdown timeout is kept for stopping the requests that are still
/// running at its end, so they requeue their rows instead of leaving them to the lease.
const REQUEUE_GRACE: Duration = Duration::from_secs(1);

/// Waits for in-flight requests until `deadline`. Shortly before it, `abort` stops the ones
/// still running, which then requeue their rows; whatever has not ended by the deadline is
/// dropped and comes back when its lease ends (its Stripe calls are idempotent).
pub async fn drain(mut tasks: JoinSet<()>, deadline: Instant, abort: &CancellationToken) {
    if tasks.is_empty() {
        return;
    }
    tracing::info!(
        in_flight = tasks.len(),
        timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
        "waiting for in-flight requests"
    );
    if !until_deadline("in-flight requests", join_all(&mut tasks), deadline, abort).await {
        tracing::warn!(
            abandoned = tasks.len(),
            "abandoning in-flight requests; they are retried after their lease"
        );
        tasks.abort_all();
    }
}

/// Like [`drain`], for the requests the HTTP API is serving at the signal (their callers may
/// have hung up).
pub async fn drain_tracked(tasks: &TaskTracker, deadline: Instant, abort: &CancellationToken) {
    tasks.close();
    let what = "requests the HTTP API is serving";
    if !until_deadline(what, tasks.wait(), deadline, abort).await {
        tracing::warn!(
            abandoned = tasks.len(),
            "abandoning requests the HTTP API was serving; they are retried after their lease"
        );
    }
}

/// Waits for `ended` (every request of a set has ended) until a grace period before
/// `deadline`, then cancels `abort` and waits on until the deadline. False when they have not
/// all ended by then.
async fn until_deadline(
    what: &str,
    ended: impl Future<Output = ()>,
    deadline: Instant,
    abort: &CancellationToken,
) -> bool {
    let mut ended = pin!(ended);
    let left = deadline.saturating_duration_since(Instant::now());
    let stop_at = deadline - REQUEUE_GRACE.min(left / 4);
    if tokio::time::timeout_at(stop_at, &mut ended).await.is_ok() {
        return true;
    }
    tracing::warn!("shutdown timeout: stopping {what}; their rows are requeued");
    abort.cancel();
    tokio::time::timeout_at(deadline, ended).await.is_ok()
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

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

    #[tokio::test]
    async fn the_api_tasks_are_drained_alike() {
        let abort = CancellationToken::new();
        let (tx, mut ended) = mpsc::unbounded_channel();
        let tasks = TaskTracker::new();
        let work = |how_long| {
            let (abort, tx) = (abort.clone(), tx.clone());
            async move {
                let how = if crate::shutdown::sleep(how_long, &abort).await {
                    "finished"
                } else {
                    "stopped"
                };
                let _ = tx.send(how);
            }
        };
        tasks.spawn(work(Duration::from_millis(10)));
        tasks.spawn(work(Duration::from_secs(60)));
        let started = Instant::now();
        drain_tracked(&tasks, started + Duration::from_millis(800), &abort).await;
        assert!(abort.is_cancelled());
        assert_eq!(ended.try_recv(), Ok("finished"));
        assert_eq!(ended.try_recv(), Ok("stopped"));
        assert!(tasks.is_empty());
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    }
}
