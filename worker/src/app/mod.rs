//! Wiring, in three phases, as `run` reads:
//!
//! 1. **build** ([`Parts::build`]): the configuration becomes the shared parts: the three
//!    connection pools (queue, webhooks, API), the database's version checked, the Stripe
//!    client, the token verifier and the metrics recorder. Nothing listens or runs yet.
//! 2. **start** ([`start`]): the HTTP server is bound and served, and the catch-up, the LISTEN
//!    connection and retention are started; then the queue loop runs until the signal.
//! 3. **drain** ([`Running::drain`]): what is in flight finishes under one deadline.
//!
//! Every start-up failure is a [`StartError`] with its exit code. Shutdown uses two tokens.
//! `shutdown` (the signal) stops claiming, LISTEN and new HTTP connections; `abort` is
//! cancelled only when the shutdown timeout runs out and stops the request tasks. Both the
//! queue's drain and the HTTP server's share one deadline, taken when the signal arrives, so
//! the whole shutdown stays within the timeout.

mod command;
mod error;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::Db;
use crate::http::api::ApiState;
use crate::http::auth::Verifier;
use crate::http::user_limit::UserLimit;
use crate::queue::{self, Ctx, Settings, NOT_CONFIGURED};
use crate::stripe::Stripe;
use crate::{http, prune, shutdown, sync, version};

pub use command::run_command;
pub use error::StartError;

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

/// Runs until SIGTERM/SIGINT. Err only for start-up failures (e.g. the address is taken, or
/// the extension version does not fit).
pub async fn run(config: Config) -> Result<(), StartError> {
    let signals = Signals::install();
    let parts = match Parts::build(&config, &signals.shutdown).await {
        Ok(parts) => parts,
        Err(StartError::Interrupted) => return Ok(()), // a signal came before the database did
        Err(e) => return Err(e),
    };
    let running = start(&config, parts, &signals).await?;
    running.drain(&config, signals).await;
    tracing::info!("stopped");
    Ok(())
}

/// The two shutdown tokens, and the instant the signal came (which starts the one deadline).
struct Signals {
    shutdown: CancellationToken,
    abort: CancellationToken,
    signalled_at: JoinHandle<Instant>,
}

impl Signals {
    fn install() -> Signals {
        let shutdown = CancellationToken::new();
        shutdown::spawn_signal_handler(shutdown.clone());
        let signalled_at = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                Instant::now()
            })
        };
        Signals {
            shutdown,
            abort: CancellationToken::new(),
            signalled_at,
        }
    }
}

/// A pool of `size` connections on a database whose stripe_billing this worker speaks; None
/// when a signal came before the database answered.
async fn checked_pool(
    config: &Config,
    size: usize,
    shutdown: &CancellationToken,
) -> Result<Option<Db>, StartError> {
    let db = Db::new(config.database.clone(), size, config.db_max_lifetime)?;
    match version::installed(&db, shutdown).await {
        Ok(installed) => version::check(installed.as_ref())?,
        Err(None) => return Ok(None),
        Err(Some(e)) => return Err(StartError::Database(e.to_string())),
    }
    Ok(Some(db))
}

/// What the configuration builds before anything runs.
struct Parts {
    /// The queue's pool (claims, request tasks, health check, metrics, catch-up).
    db: Db,
    webhook_db: Db,
    api_db: Db,
    stripe: Option<Stripe>,
    verifier: Verifier,
    metrics: PrometheusHandle,
}

impl Parts {
    async fn build(config: &Config, shutdown: &CancellationToken) -> Result<Parts, StartError> {
        let queue_connections = 2 * config.concurrency + SPARE_CONNECTIONS;
        let db = checked_pool(config, queue_connections, shutdown)
            .await?
            .ok_or(StartError::Interrupted)?;
        let pool = |size| Db::new(config.database.clone(), size, config.db_max_lifetime);
        let webhook_db = pool(WEBHOOK_CONNECTIONS)?;
        let api_connections = API_CONNECTIONS_PER_CALL * config.api.concurrency + 1;
        let api_db = pool(api_connections)?;
        let stripe = Stripe::from_config(config).map_err(StartError::Stripe)?;
        if stripe.is_none() {
            tracing::warn!("{NOT_CONFIGURED}; queued requests will fail, webhooks still work");
        }
        let verifier = Verifier::new(&config.api).map_err(StartError::Verifier)?;
        let metrics = crate::telemetry::install().map_err(StartError::Metrics)?;
        Ok(Parts {
            db,
            webhook_db,
            api_db,
            stripe,
            verifier,
            metrics,
        })
    }
}

/// What runs until the signal, and is waited for afterwards.
struct Running {
    /// The queue's requests in flight at the signal.
    in_flight: JoinSet<()>,
    /// The requests the HTTP API is serving.
    api_tasks: TaskTracker,
    server: JoinHandle<()>,
    catch_up: Option<JoinHandle<()>>,
    /// LISTEN and retention: they stop at the signal by themselves.
    background: Vec<JoinHandle<()>>,
}

/// Binds and serves HTTP, starts the background loops, and runs the queue loop until the
/// signal.
async fn start(config: &Config, parts: Parts, signals: &Signals) -> Result<Running, StartError> {
    let Signals {
        shutdown, abort, ..
    } = signals;
    tokio::spawn(crate::telemetry::upkeep(parts.metrics.clone()));
    let listener = http::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(StartError::BoundAddress)?;
    announce(config, bound, parts.stripe.is_some());

    let api = Arc::new(ApiState {
        verifier: parts.verifier,
        limit: UserLimit::new(config.api.rate_per_minute, config.api.burst),
        ctx: Arc::new(Ctx {
            db: parts.api_db,
            stripe: parts.stripe.clone(),
            worker_id: config.worker_id.clone(),
            abort: abort.clone(),
        }),
        slots: Arc::new(Semaphore::new(config.api.concurrency)),
        tasks: TaskTracker::new(),
        lease_seconds: config.lease_seconds,
        wait: config.api.wait,
    });
    let routes = http::ApiRoutes {
        state: api.clone(),
        max_body_bytes: config.api.max_body_bytes,
        cors_origins: config.api.cors_origins.clone(),
        cookie_origins: config.api.cookie_origins.clone(),
    };
    let state = http::HttpState {
        db: parts.db.clone(),
        webhooks: parts.webhook_db,
        metrics: parts.metrics,
    };
    let app = http::router(state, config.max_body_bytes, routes);
    let server = tokio::spawn(http::serve(listener, app, shutdown.clone()));

    let catch_up = match (&parts.stripe, config.catch_up_interval) {
        (Some(stripe), Some(interval)) => Some(tokio::spawn(sync::catch_up::run_loop(
            parts.db.clone(),
            stripe.clone(),
            interval,
            config.catch_up_margin,
            shutdown.clone(),
        ))),
        _ => None,
    };
    let mut background = Vec::new();
    let (wake_tx, wake_rx) = mpsc::channel(16);
    if config.listen_notify {
        background.push(tokio::spawn(queue::listen(
            config.database.clone(),
            parts.db.clone(),
            config.poll_interval,
            wake_tx,
            shutdown.clone(),
        )));
    } else {
        // Dropping the sender tells the loop there will be no notifications.
        drop(wake_tx);
        crate::telemetry::listen_notify(false);
    }
    if let Some(every) = config.prune_interval {
        let prune = prune::run(config.database.clone(), every, shutdown.clone());
        background.push(tokio::spawn(prune));
    }

    let ctx = Arc::new(Ctx {
        db: parts.db,
        stripe: parts.stripe,
        worker_id: config.worker_id.clone(),
        abort: abort.clone(),
    });
    let settings = Settings {
        concurrency: config.concurrency,
        poll_interval: config.poll_interval,
        lease_seconds: config.lease_seconds,
    };
    let in_flight = queue::run(ctx, settings, wake_rx, shutdown).await;
    Ok(Running {
        in_flight,
        api_tasks: api.tasks.clone(),
        server,
        catch_up,
        background,
    })
}

/// The start-up lines: the bound address on stdout, the settings in the log.
fn announce(config: &Config, bound: std::net::SocketAddr, billing_configured: bool) {
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
        billing_configured,
        concurrency = config.concurrency,
        lease_seconds = config.lease_seconds,
        stripe_timeout_ms = config.stripe_timeout.as_millis() as u64,
        poll_interval_ms = config.poll_interval.as_millis() as u64,
        listen_notify = config.listen_notify,
        prune_interval_s = config.prune_interval.map_or(0, |i| i.as_secs()),
        api_hs256 = config.api.jwt_secret.is_some(),
        api_jwks = config.api.jwks_url.as_deref().unwrap_or(""),
        cors_origins = config.api.cors_origins.len(),
        session_cookie_origins = config.api.cookie_origins.len(),
        "worker started"
    );
    if !config.api.enabled() {
        tracing::info!(
            "the HTTP API (checkout, portal) answers 503 until --jwt-secret or --jwks-url is set"
        );
    }
}

impl Running {
    /// Lets what is in flight finish within `--shutdown-timeout-ms` of the signal.
    async fn drain(self, config: &Config, signals: Signals) {
        // The queue loop only returns after the signal, whose instant starts the one deadline.
        let signalled = signals
            .signalled_at
            .await
            .unwrap_or_else(|_| Instant::now());
        let deadline = signalled + config.shutdown_timeout;
        let abort = &signals.abort;
        queue::drain(self.in_flight, deadline, abort).await;
        queue::drain_tracked(&self.api_tasks, deadline, abort).await;
        for task in self.background {
            let _ = task.await;
        }
        if let Some(task) = self.catch_up {
            // A listing in progress stops at the abort signal; its events so far are applied.
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        if tokio::time::timeout_at(deadline, self.server)
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open at the shutdown timeout; closing them");
        }
    }
}
