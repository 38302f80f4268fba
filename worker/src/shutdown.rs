//! Graceful shutdown: SIGTERM/SIGINT cancel the token that the claim loop, the HTTP server and
//! the LISTEN connection watch. Request tasks watch a second token that `app` cancels only
//! when the shutdown timeout runs out, so claimed requests are finished first.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or SIGINT and returns the signal's name.
pub async fn signal() -> &'static str {
    let interrupt = async {
        // If the handler cannot be installed Ctrl-C is simply not watched; SIGTERM still is.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = interrupt => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                interrupt.await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        interrupt.await;
        "SIGINT"
    }
}

/// Cancels `token` on the first signal; a second signal ends the process at once, for an
/// operator who does not want to wait for in-flight requests.
pub fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let name = signal().await;
        tracing::info!(
            signal = name,
            "shutting down: no new claims, finishing in-flight requests"
        );
        token.cancel();
        let name = signal().await;
        tracing::warn!(signal = name, "second signal: exiting without waiting");
        std::process::exit(1);
    });
}

/// Sleeps for `duration` unless `token` is cancelled first. Returns false when cancelled.
pub async fn sleep(duration: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleep_returns_early_when_cancelled() {
        let token = CancellationToken::new();
        token.cancel();
        let started = std::time::Instant::now();
        assert!(!sleep(Duration::from_secs(30), &token).await);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(sleep(Duration::from_millis(1), &CancellationToken::new()).await);
    }
}
