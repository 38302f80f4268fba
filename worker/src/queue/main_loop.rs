//! The main loop: one `tokio::select!` over shutdown, notifications, the poll tick and
//! finished tasks. Whenever something suggests work (a notification, a tick, a reconnect, a
//! task that freed a slot) it claims up to the free slots and spawns a task per row.
//! Wake-ups are coalesced before claiming: every one already waiting is taken with the first,
//! so a burst of notifications (one transaction queueing 100 requests) is one claim round,
//! without delaying a lone notification by any sleep.
//! On shutdown it stops claiming and returns the in-flight tasks for
//! [`drain`](super::drain::drain), which lets them finish until the shutdown deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::claim;
use super::listen::Wake;
use super::process::{self, Ctx};
use crate::backoff;

/// Loop settings.
pub struct Settings {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub lease_seconds: u32,
}

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
                    let wait = backoff::DB_BACKOFF.full_jitter(db_failures, &mut rand::rng());
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
            woken = next_wakeups(&mut wake), if wake_open => match woken {
                Some(woken) => {
                    if woken.listening {
                        // The database is evidently back: catch up now.
                        db_retry_at = None;
                    }
                    if woken.notified > 0 {
                        tracing::debug!(notifications = woken.notified, "notified");
                    }
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

/// The wake-ups taken in one go.
#[derive(Debug, Default, PartialEq, Eq)]
struct Wakeups {
    /// LISTEN is (again) in place.
    listening: bool,
    /// Notifications of queued requests.
    notified: usize,
}

/// Waits for a wake-up, then takes every other one already waiting: they all ask for the same
/// claim. None once the sender is gone (polling only).
async fn next_wakeups(wake: &mut mpsc::Receiver<Wake>) -> Option<Wakeups> {
    let mut woken = Wakeups::default();
    let mut note = Some(wake.recv().await?);
    while let Some(this) = note {
        match this {
            Wake::Listening => woken.listening = true,
            Wake::Notified(_) => woken.notified += 1,
        }
        note = wake.try_recv().ok();
    }
    Some(woken)
}

async fn claim_batch(
    ctx: &Ctx,
    max: usize,
    lease_seconds: u32,
) -> Result<Vec<claim::Claimed>, crate::db::DbError> {
    let mut conn = ctx.db.get().await?;
    claim::claim(&mut conn, &ctx.worker_id, max, lease_seconds).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_of_notifications_is_one_claim_round() {
        let (tx, mut rx) = mpsc::channel(128);
        for i in 0..100 {
            tx.try_send(Wake::Notified(format!("request-{i}"))).unwrap();
        }
        let first = next_wakeups(&mut rx).await;
        assert_eq!(
            first,
            Some(Wakeups {
                listening: false,
                notified: 100
            })
        );
        // Nothing is left to wake the loop for a second round.
        let second = tokio::time::timeout(Duration::from_millis(20), next_wakeups(&mut rx)).await;
        assert!(second.is_err(), "{second:?}");
    }

    #[tokio::test]
    async fn a_reconnect_in_a_burst_is_not_lost() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.try_send(Wake::Notified("a".into())).unwrap();
        tx.try_send(Wake::Listening).unwrap();
        tx.try_send(Wake::Notified("b".into())).unwrap();
        drop(tx);
        assert_eq!(
            next_wakeups(&mut rx).await,
            Some(Wakeups {
                listening: true,
                notified: 2
            })
        );
        assert_eq!(next_wakeups(&mut rx).await, None, "the sender is gone");
    }
}
