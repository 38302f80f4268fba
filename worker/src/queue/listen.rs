//! The LISTEN connection: turns `billing_stripe_requests` notifications into wake-ups for the
//! main loop. A notification is only a hint that work may be waiting (the table is the
//! truth), so wake-ups are coalesced and may be dropped: one wake-up stands for every
//! notification already received with it (the main loop, in turn, takes every wake-up waiting
//! before it claims); after every (re)connect the loop is told to claim at once, which catches
//! up on anything inserted while we were away.
//!
//! **Self-check.** Through a transaction pooler (PgBouncer in transaction mode, Supabase's
//! pooler on port 6543) `LISTEN` succeeds but notifications never arrive: the server session
//! that listened goes back to the pool after the statement. So once LISTEN is in place, the
//! worker sends a notification with a payload of its own from another connection, the way
//! the request table's trigger would, and waits for it ([`round_trip`]). If it does not come,
//! the worker logs one warning and finds work by polling only. `doctor` runs the same check.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client};

use crate::db::DbConfig;
use tokio_util::sync::CancellationToken;

use crate::backoff;
use crate::db::Db;
use crate::telemetry;

/// The channel the request table's insert trigger notifies.
pub const CHANNEL: &str = "billing_stripe_requests";

/// How long the self-check waits for its notification. A notification from a committed
/// transaction reaches a listener within milliseconds; this only has to outlast a busy server.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the main loop was woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// LISTEN is (again) in place: claim now to catch up.
    Listening,
    /// A request was queued (the payload is its id).
    Notified(String),
}

/// A connection that LISTENs on [`CHANNEL`], with the payloads of the notifications it
/// receives.
pub struct Listener {
    /// Kept so the connection stays open; dropping it ends the connection (and the driver).
    _client: Client,
    notes: mpsc::UnboundedReceiver<String>,
    driver: tokio::task::JoinHandle<Result<(), String>>,
}

impl Listener {
    /// Connects and LISTENs, both within [`crate::db::QUERY_TIMEOUT`].
    pub async fn start(config: &DbConfig) -> Result<Listener, String> {
        let connect = tokio::time::timeout(crate::db::QUERY_TIMEOUT, config.connect());
        let (client, mut connection) = match connect.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(format!("cannot connect: {}", crate::error_chain(&e))),
            Err(_) => return Err("connecting timed out".into()),
        };
        // The connection must be polled for LISTEN to complete and for notifications to
        // arrive; a task forwards them and ends (dropping the sender) when the connection does.
        let (notes_tx, notes) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if notes_tx.send(n.payload().to_string()).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) => {} // notices and parameter changes
                    Err(e) => return Err(crate::error_chain(&e)),
                }
            }
            Ok(())
        });
        let listen = format!("LISTEN {CHANNEL}");
        match tokio::time::timeout(crate::db::QUERY_TIMEOUT, client.batch_execute(&listen)).await {
            Ok(Ok(())) => Ok(Listener {
                _client: client,
                notes,
                driver,
            }),
            Ok(Err(e)) => Err(format!("LISTEN failed: {}", crate::error_chain(&e))),
            Err(_) => Err("LISTEN timed out".into()),
        }
    }

    /// Drops the notifications already received: after one wake-up they ask for nothing more.
    fn skip_received(&mut self) {
        while self.notes.try_recv().is_ok() {}
    }

    /// The next notification's payload; Err when the connection ended.
    async fn next(&mut self) -> Result<String, String> {
        match self.notes.recv().await {
            Some(payload) => Ok(payload),
            None => Err(match (&mut self.driver).await {
                Ok(Err(e)) => e,
                _ => "the server closed the connection".into(),
            }),
        }
    }
}

/// What the self-check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundTrip {
    /// The notification arrived, after this long.
    Arrived(Duration),
    /// It was sent (committed) but did not arrive within the timeout.
    Lost,
}

/// Sends a notification with a fresh payload on [`CHANNEL`] from a connection of `db` and
/// waits up to `timeout` for `listener` to receive it. Other notifications that arrive
/// meanwhile are handed to `other` (they are real wake-ups). Err when the notification could
/// not be sent or the listening connection failed: then nothing is known.
pub async fn round_trip(
    listener: &mut Listener,
    db: &Db,
    timeout: Duration,
    mut other: impl FnMut(String),
) -> Result<RoundTrip, String> {
    let token = format!("self-check-{}", uuid::Uuid::new_v4());
    let started = Instant::now();
    {
        let mut conn = db.get().await.map_err(|e| e.to_string())?;
        conn.query("SELECT pg_notify($1, $2)", &[&CHANNEL, &token])
            .await
            .map_err(|e| format!("cannot send a notification: {e}"))?;
    }
    let deadline = started + timeout;
    loop {
        match tokio::time::timeout_at(deadline, listener.next()).await {
            Err(_) => return Ok(RoundTrip::Lost),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(payload)) if payload == token => {
                return Ok(RoundTrip::Arrived(started.elapsed()))
            }
            Ok(Ok(payload)) => other(payload),
        }
    }
}

/// Keeps a LISTEN connection open until `shutdown`, reconnecting with backoff. Returns early
/// (dropping `wake`, which leaves the main loop to poll) when the self-check shows that
/// notifications do not arrive on this connection.
pub async fn run(
    config: DbConfig,
    db: Db,
    poll_interval: Duration,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    let mut checked = false;
    while !shutdown.is_cancelled() {
        match listen_once(&config, &db, &wake, &shutdown, &mut failures, &mut checked).await {
            Ok(Continue::Stop) => return,
            Ok(Continue::PollOnly) => {
                telemetry::listen_notify(false);
                tracing::warn!(
                    channel = CHANNEL,
                    poll_interval_ms = poll_interval.as_millis() as u64,
                    "a notification sent to this database did not reach the worker's LISTEN connection within {}s: \
                     DATABASE_URL probably goes through a transaction pooler (PgBouncer in transaction mode, \
                     Supabase's pooler on port 6543). Finding work by polling only; to be woken at once, use a \
                     direct or session-mode connection string (Supabase: the direct connection, or the pooler's \
                     port 5432)",
                    ROUND_TRIP_TIMEOUT.as_secs()
                );
                return;
            }
            Err(e) => {
                telemetry::listen_notify(false);
                failures += 1;
                let wait = backoff::DB_BACKOFF.full_jitter(failures, &mut rand::rng());
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "LISTEN connection lost, reconnecting");
                if !crate::shutdown::sleep(wait, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// How a connection's life ended, when it did not fail.
enum Continue {
    /// Shut down.
    Stop,
    /// Notifications do not arrive: give up listening.
    PollOnly,
}

/// One connection's life. Err when the connection failed or dropped.
async fn listen_once(
    config: &DbConfig,
    db: &Db,
    wake: &mpsc::Sender<Wake>,
    shutdown: &CancellationToken,
    failures: &mut u32,
    checked: &mut bool,
) -> Result<Continue, String> {
    let mut listener = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Continue::Stop),
        r = Listener::start(config) => r?,
    };
    *failures = 0;
    // A full channel already holds a wake-up, which is all the main loop needs.
    let forward = |payload: String| {
        let _ = wake.try_send(Wake::Notified(payload));
    };
    if !*checked {
        let check = tokio::select! {
            _ = shutdown.cancelled() => return Ok(Continue::Stop),
            r = round_trip(&mut listener, db, ROUND_TRIP_TIMEOUT, forward) => r,
        };
        match check {
            Ok(RoundTrip::Arrived(took)) => {
                *checked = true;
                tracing::info!(
                    channel = CHANNEL,
                    round_trip_ms = took.as_millis() as u64,
                    "LISTEN self-check passed: notifications reach this worker"
                );
            }
            Ok(RoundTrip::Lost) => return Ok(Continue::PollOnly),
            // Inconclusive (the database went away meanwhile): try again on the next connection.
            Err(e) => return Err(format!("LISTEN self-check could not run: {e}")),
        }
    }
    telemetry::listen_notify(true);
    tracing::info!(channel = CHANNEL, "listening for queued requests");
    let _ = wake.try_send(Wake::Listening);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(Continue::Stop),
            note = listener.next() => {
                forward(note?);
                listener.skip_received();
            }
        }
    }
}
