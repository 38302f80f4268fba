//! Wiring: builds the shared parts from the configuration, starts the LISTEN connection, the
//! HTTP server and the queue loop, and waits for all of them after a shutdown signal.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Db;
use crate::process::{Ctx, NOT_CONFIGURED};
use crate::queue::{self, Settings};
use crate::ratelimit::RateLimiter;
use crate::stripe::Stripe;
use crate::{http, listen, shutdown};

/// Connections beyond the request tasks: the claim loop, webhooks and the health check.
const SPARE_CONNECTIONS: usize = 4;

/// Runs until SIGTERM/SIGINT. Err only for start-up failures (e.g. the address is taken).
pub async fn run(config: Config) -> Result<(), String> {
    let token = CancellationToken::new();
    shutdown::spawn_signal_handler(token.clone());

    let db = Db::new(
        config.database.clone(),
        config.concurrency + SPARE_CONNECTIONS,
    );
    let stripe = match &config.stripe_secret_key {
        Some(key) => Some(Stripe::new(
            &config.stripe_api_base,
            key,
            &config.stripe_version,
            Arc::new(RateLimiter::new(config.rate_limit)),
        )?),
        None => {
            tracing::warn!("{NOT_CONFIGURED}; queued requests will fail, webhooks still work");
            None
        }
    };
    let listener = http::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    // One line on stdout with the real address, so `--listen 127.0.0.1:0` is usable by
    // scripts (the demo) that need a free port.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{bound}");
        let _ = out.flush();
    }
    tracing::info!(
        worker_id = %config.worker_id,
        listen = %bound,
        stripe_api_base = %config.stripe_api_base,
        stripe_version = %config.stripe_version,
        billing_configured = stripe.is_some(),
        concurrency = config.concurrency,
        poll_interval_ms = config.poll_interval.as_millis() as u64,
        listen_notify = config.listen_notify,
        "worker started"
    );

    let server = tokio::spawn(http::serve(
        listener,
        http::router(db.clone(), config.max_body_bytes),
        token.clone(),
    ));
    let (wake_tx, wake_rx) = mpsc::channel(16);
    let listener_task = if config.listen_notify {
        Some(tokio::spawn(listen::run(
            config.database.clone(),
            wake_tx,
            token.clone(),
        )))
    } else {
        // Dropping the sender tells the loop there will be no notifications.
        drop(wake_tx);
        None
    };

    let ctx = Arc::new(Ctx {
        db,
        stripe,
        worker_id: config.worker_id.clone(),
        lease: std::time::Duration::from_secs(u64::from(config.lease_seconds)),
        shutdown: token.clone(),
    });
    let settings = Settings {
        concurrency: config.concurrency,
        poll_interval: config.poll_interval,
        lease_seconds: config.lease_seconds,
        shutdown_timeout: config.shutdown_timeout,
    };
    queue::run(ctx, settings, wake_rx).await;

    // The queue loop only returns after shutdown; the server gets the same grace period.
    if let Some(task) = listener_task {
        let _ = task.await;
    }
    if tokio::time::timeout(config.shutdown_timeout, server)
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open at the shutdown timeout; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}
