//! Wiring: builds the shared parts from the configuration, starts the LISTEN connection, the
//! HTTP server, retention and the queue loop, and waits for all of them after a shutdown
//! signal.
//!
//! Shutdown uses two tokens. `shutdown` (the signal) stops claiming, LISTEN and new HTTP
//! connections; `abort` is cancelled only when the shutdown timeout runs out and stops the
//! request tasks. Both the queue's drain and the HTTP server's share one deadline, taken when
//! the signal arrives, so the whole shutdown stays within the timeout.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Command;
use crate::config::Config;
use crate::db::Db;
use crate::http::api::ApiState;
use crate::http::auth::Verifier;
use crate::http::user_limit::UserLimit;
use crate::queue::{self, Ctx, Settings, NOT_CONFIGURED};
use crate::stripe::Stripe;
use crate::version::{self, VersionError};
use crate::{http, prune, shutdown, sync};

/// Connections beyond the request tasks' two each (one holds the request's lock for
/// `billing.await_request`, one writes): the claim loop and the health check.
const SPARE_CONNECTIONS: usize = 2;

/// Connections of the webhook endpoint, apart from the queue's: anyone can post to it, so
/// it must not be able to take the connections the queue needs. Beyond these, webhooks wait
/// `http::ACQUIRE_TIMEOUT` and then get 503 (Stripe retries).
const WEBHOOK_CONNECTIONS: usize = 3;

/// Connections of the HTTP API per call it serves at once: one for its transaction, then two
/// while it serves the request (the request's lock and the writes), as a queue task.
const API_CONNECTIONS_PER_CALL: usize = 2;

/// Why the worker stopped without a signal.
#[derive(Debug)]
pub enum RunError {
    /// The database's stripe_billing is not the version this worker speaks (exit code 2).
    Unsupported(VersionError),
    /// A start-up failure, e.g. the listen address is taken (exit code 1).
    Failed(String),
}

impl From<String> for RunError {
    fn from(e: String) -> RunError {
        RunError::Failed(e)
    }
}

/// Runs until SIGTERM/SIGINT. Err only for start-up failures (e.g. the address is taken, or
/// the extension version does not fit).
pub async fn run(config: Config) -> Result<(), RunError> {
    let token = CancellationToken::new();
    let abort = CancellationToken::new();
    shutdown::spawn_signal_handler(token.clone());
    let shutdown_started = {
        let token = token.clone();
        tokio::spawn(async move {
            token.cancelled().await;
            Instant::now()
        })
    };

    let pool_failed = |e| format!("cannot set up the database connection pool: {e}");
    let db = Db::new(
        config.database.clone(),
        2 * config.concurrency + SPARE_CONNECTIONS,
    )
    .map_err(pool_failed)?;
    let webhook_db = Db::new(config.database.clone(), WEBHOOK_CONNECTIONS).map_err(pool_failed)?;
    match version::installed(&db, &token).await {
        Ok(installed) => version::check(installed.as_ref()).map_err(RunError::Unsupported)?,
        Err(()) => return Ok(()), // a signal came before the database did
    }
    let stripe = Stripe::from_config(&config)?;
    if stripe.is_none() {
        tracing::warn!("{NOT_CONFIGURED}; queued requests will fail, webhooks still work");
    }
    let metrics = crate::telemetry::install()?;
    tokio::spawn(crate::telemetry::upkeep(metrics.clone()));
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
        lease_seconds = config.lease_seconds,
        stripe_timeout_ms = config.stripe_timeout.as_millis() as u64,
        poll_interval_ms = config.poll_interval.as_millis() as u64,
        listen_notify = config.listen_notify,
        prune_interval_s = config.prune_interval.map_or(0, |i| i.as_secs()),
        api_hs256 = config.api.jwt_secret.is_some(),
        api_jwks = config.api.jwks_url.as_deref().unwrap_or(""),
        cors_origins = config.api.cors_origins.len(),
        "worker started"
    );

    let api_db = Db::new(
        config.database.clone(),
        API_CONNECTIONS_PER_CALL * config.api.concurrency + 1,
    )
    .map_err(pool_failed)?;
    let api = Arc::new(ApiState {
        verifier: Verifier::new(&config.api)?,
        limit: UserLimit::new(config.api.rate_per_minute, config.api.burst),
        ctx: Arc::new(Ctx {
            db: api_db,
            stripe: stripe.clone(),
            worker_id: config.worker_id.clone(),
            abort: abort.clone(),
        }),
        slots: Arc::new(Semaphore::new(config.api.concurrency)),
        tasks: TaskTracker::new(),
        lease_seconds: config.lease_seconds,
        wait: config.api.wait,
    });
    if !config.api.enabled() {
        tracing::info!(
            "the HTTP API (checkout, portal) answers 503 until --jwt-secret or --jwks-url is set"
        );
    }
    let routes = http::ApiRoutes {
        state: api.clone(),
        max_body_bytes: config.api.max_body_bytes,
        cors_origins: config.api.cors_origins.clone(),
    };
    let server = tokio::spawn(http::serve(
        listener,
        http::router(
            http::HttpState {
                db: db.clone(),
                webhooks: webhook_db,
                metrics,
            },
            config.max_body_bytes,
            routes,
        ),
        token.clone(),
    ));
    let catch_up = match (&stripe, config.catch_up_interval) {
        (Some(stripe), Some(interval)) => Some(tokio::spawn(sync::catch_up::run_loop(
            db.clone(),
            stripe.clone(),
            interval,
            config.catch_up_margin,
            token.clone(),
        ))),
        _ => None,
    };
    let (wake_tx, wake_rx) = mpsc::channel(16);
    let listener_task = if config.listen_notify {
        Some(tokio::spawn(queue::listen(
            config.database.clone(),
            db.clone(),
            config.poll_interval,
            wake_tx,
            token.clone(),
        )))
    } else {
        // Dropping the sender tells the loop there will be no notifications.
        drop(wake_tx);
        crate::telemetry::listen_notify(false);
        None
    };
    let prune_task = config
        .prune_interval
        .map(|every| tokio::spawn(prune::run(config.database.clone(), every, token.clone())));

    let ctx = Arc::new(Ctx {
        db,
        stripe,
        worker_id: config.worker_id.clone(),
        abort: abort.clone(),
    });
    let settings = Settings {
        concurrency: config.concurrency,
        poll_interval: config.poll_interval,
        lease_seconds: config.lease_seconds,
    };
    let in_flight = queue::run(ctx, settings, wake_rx, &token).await;

    // The queue loop only returns after the signal, whose instant starts the one deadline.
    let started = shutdown_started.await.unwrap_or_else(|_| Instant::now());
    let deadline = started + config.shutdown_timeout;
    queue::drain(in_flight, deadline, &abort).await;
    queue::drain_tracked(&api.tasks, deadline, &abort).await;
    for task in [listener_task, prune_task].into_iter().flatten() {
        let _ = task.await;
    }
    if let Some(task) = catch_up {
        // A listing in progress stops at the abort signal; its events so far are applied.
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    if tokio::time::timeout_at(deadline, server).await.is_err() {
        tracing::warn!("HTTP connections still open at the shutdown timeout; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs a one-off task (`backfill`, `catch-up`) and returns the report to print.
pub async fn run_command(config: Config, command: Command) -> Result<String, RunError> {
    let token = CancellationToken::new();
    shutdown::spawn_signal_handler(token.clone());
    let db = Db::new(config.database.clone(), 2)
        .map_err(|e| format!("cannot set up the database connection pool: {e}"))?;
    match version::installed(&db, &token).await {
        Ok(installed) => version::check(installed.as_ref()).map_err(RunError::Unsupported)?,
        Err(()) => {
            return Err(RunError::Failed(
                "stopped before the database answered".into(),
            ))
        }
    }
    let stripe = Stripe::from_config(&config)?
        .ok_or_else(|| RunError::Failed(format!("{NOT_CONFIGURED}: set STRIPE_SECRET_KEY")))?;
    match command {
        Command::Backfill { map } => {
            let mapping = match map {
                Some(path) => sync::backfill::Mapping::load(&path)?,
                None => sync::backfill::Mapping::default(),
            };
            let report = sync::backfill::run(&db, &stripe, &mapping, &token).await?;
            Ok(report.render())
        }
        // Its checklist and exit code are not a report: `main` runs it through `doctor::run`.
        Command::Doctor => Err(RunError::Failed(
            "doctor is run by stripe_billing_worker::doctor::run".into(),
        )),
        Command::CatchUp => {
            let r = sync::catch_up::run_once(&db, &stripe, config.catch_up_margin, &token).await?;
            Ok(format!(
                "events listed: {}
never delivered before: {}
of which not applied (see billing.stripe_events): {}
",
                r.listed, r.new, r.not_applied
            ))
        }
    }
}
