//! The LISTEN connection: turns `billing_stripe_requests` notifications into wake-ups for the
//! main loop. A notification is only a hint that work may be waiting (the table is the
//! truth), so wake-ups are coalesced and may be dropped; after every (re)connect the loop is
//! told to claim at once, which catches up on anything inserted while we were away.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use crate::backoff;

/// The channel the request table's insert trigger notifies.
pub const CHANNEL: &str = "billing_stripe_requests";

/// Why the main loop was woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// LISTEN is (again) in place: claim now to catch up.
    Listening,
    /// A request was queued (the payload is its id).
    Notified(String),
}

/// Keeps a LISTEN connection open until `shutdown`, reconnecting with backoff.
pub async fn run(
    config: tokio_postgres::Config,
    wake: mpsc::Sender<Wake>,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        match listen_once(&config, &wake, &shutdown, &mut failures).await {
            Ok(()) => return,
            Err(e) => {
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

/// One connection's life. Ok when shut down, Err when the connection failed or dropped.
async fn listen_once(
    config: &tokio_postgres::Config,
    wake: &mpsc::Sender<Wake>,
    shutdown: &CancellationToken,
    failures: &mut u32,
) -> Result<(), String> {
    let (client, mut connection) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = config.connect(NoTls) => r.map_err(|e| format!("cannot connect: {}", crate::error_chain(&e)))?,
    };
    // The connection must be polled for LISTEN to complete and for notifications to arrive;
    // a task forwards them and ends (dropping the sender) when the connection does.
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
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
    let listened = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = tokio::time::timeout(crate::db::QUERY_TIMEOUT, client.batch_execute(&listen)) => r,
    };
    match listened {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("LISTEN failed: {}", crate::error_chain(&e))),
        Err(_) => return Err("LISTEN timed out".into()),
    }
    *failures = 0;
    tracing::info!(channel = CHANNEL, "listening for queued requests");
    // A full channel already holds a wake-up, which is all the main loop needs.
    let _ = wake.try_send(Wake::Listening);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            note = notes.recv() => match note {
                Some(payload) => {
                    let _ = wake.try_send(Wake::Notified(payload));
                }
                None => {
                    drop(client);
                    return Err(match driver.await {
                        Ok(Err(e)) => e,
                        _ => "the server closed the connection".into(),
                    });
                }
            },
        }
    }
}
