//! The command-line flags as clap parses them, each with its environment fallback and
//! default. A number's bounds are checked here, by clap's value parsers, so `--concurrency 0`
//! fails at parse time with clap's message and exit code 2; rules that relate flags to each
//! other or parse text live in [`Config::from_args`](super::Config::from_args).

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{value_parser, Parser, Subcommand, ValueEnum};

use super::secret::Secret;

/// The Stripe API version the worker speaks; pinned so a dashboard upgrade cannot change the
/// shape of the responses it reads.
pub const DEFAULT_STRIPE_VERSION: &str = "2025-03-31.basil";

/// Stripe's API, used unless `--stripe-api-base` points elsewhere (the emulator in tests).
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";

/// `claim_requests` refuses to hand out more rows than this at once.
const MAX_CONCURRENCY: i64 = 1000;

/// Retention runs at least weekly when it runs at all: events are kept 31 days at least.
const MAX_PRUNE_INTERVAL_SECONDS: u64 = 7 * 86_400;

/// Catching up more often than this would spend the Stripe rate limit on listing.
const MIN_CATCH_UP_INTERVAL_SECONDS: u64 = 60;

/// An hour: the longest poll interval and shutdown timeout that make sense.
const HOUR_MS: u64 = 3_600_000;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Flags as given; see [`Config`](super::Config) for the validated form. `Debug` is safe to log: the secrets
/// are [`Secret`]s.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "stripe-billing-worker",
    version,
    about = "Serves the stripe_billing request queue against the Stripe API and receives Stripe webhooks."
)]
pub struct Args {
    /// Postgres connection string (URL or key=value) of the database with the extension.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Stripe secret (or restricted) key. Without it requests fail with a clear error; the
    /// webhook endpoint still works.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<Secret>,

    /// Base URL of the Stripe API (the local emulator in tests).
    #[arg(long, env = "STRIPE_API_BASE", default_value = DEFAULT_STRIPE_API_BASE)]
    pub stripe_api_base: String,

    /// Stripe API version sent as the Stripe-Version header; 2023-08-16 or later.
    #[arg(long, env = "STRIPE_VERSION", default_value = DEFAULT_STRIPE_VERSION)]
    pub stripe_version: String,

    /// Requests processed at the same time.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 4,
        value_parser = value_parser!(u32).range(1..=MAX_CONCURRENCY))]
    pub concurrency: u32,

    /// How often to look for work without a notification, in milliseconds.
    #[arg(long, env = "WORKER_POLL_INTERVAL_MS", default_value_t = 1000,
        value_parser = value_parser!(u64).range(1..=HOUR_MS))]
    pub poll_interval_ms: u64,

    /// Address of the HTTP server (webhook endpoint and health check).
    #[arg(long, env = "WORKER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT, in milliseconds.
    #[arg(long, env = "WORKER_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000,
        value_parser = value_parser!(u64).range(..=HOUR_MS))]
    pub shutdown_timeout_ms: u64,

    /// How long a claimed request stays ours; after that another worker may take it over.
    #[arg(long, env = "WORKER_LEASE_SECONDS", default_value_t = 60,
        value_parser = value_parser!(u32).range(1..=86_400))]
    pub lease_seconds: u32,

    /// Largest webhook body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "WORKER_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_body_bytes: usize,

    /// Longest wait for one Stripe API call, in milliseconds. --lease-seconds must be at least
    /// twice as long.
    #[arg(long, env = "STRIPE_TIMEOUT_MS", default_value_t = 30_000,
        value_parser = value_parser!(u64).range(100..=600_000))]
    pub stripe_timeout_ms: u64,

    /// Stripe API calls per second (token bucket); Stripe allows 25/s in test mode.
    #[arg(long, env = "STRIPE_RATE_LIMIT", default_value_t = 25.0, value_parser = rate_limit)]
    pub rate_limit: f64,

    /// How long a pooled database connection is reused, in seconds; an older one is closed
    /// when next needed, so role settings changed on the server reach the worker in this time.
    #[arg(long, env = "WORKER_DB_MAX_LIFETIME_SECONDS", default_value_t = 600,
        value_parser = value_parser!(u64).range(1..=86_400))]
    pub db_max_lifetime_seconds: u64,

    /// Do not LISTEN for notifications; find work by polling only.
    #[arg(long, env = "WORKER_NO_LISTEN_NOTIFY")]
    pub no_listen_notify: bool,

    /// How often to run billing.prune() (retention) and billing.warn_expiring_grants() (expiry
    /// warnings), in seconds; 0: never (say, because pg_cron runs them). The first run is at
    /// start-up.
    #[arg(long, env = "WORKER_PRUNE_INTERVAL_SECONDS", default_value_t = 3600,
        value_parser = value_parser!(u64).range(..=MAX_PRUNE_INTERVAL_SECONDS))]
    pub prune_interval_seconds: u64,

    /// Log format.
    #[arg(long, env = "WORKER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Name this worker writes into claimed rows [default: HOSTNAME-PID].
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,

    /// HTTP API: the secret that signs your users' JWTs with HS256 (Supabase: the project's
    /// JWT secret; at least 32 characters). Prefer the env var: flags show in `ps`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// HTTP API: URL of the JSON Web Key Set whose ES256/RS256 keys sign your users' JWTs
    /// (Supabase: https://PROJECT.supabase.co/auth/v1/.well-known/jwks.json).
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,

    /// HTTP API: the `aud` claim every token must carry (Supabase: authenticated); not checked
    /// when unset.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// HTTP API: an origin (https://app.example.com) whose pages may call it from a browser;
    /// repeat the flag (or separate with commas in the env var) for more. None: no CORS.
    #[arg(long = "cors-origin", env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// HTTP API: an origin (https://app.example.com) whose pages may sign their calls with the
    /// @supabase/ssr session cookie instead of a bearer header; repeat (or comma-separate in the
    /// env var) for more. Such a call must carry one of these in its Origin header and must not
    /// be Sec-Fetch-Site: cross-site (the CSRF defence). None: the cookie is never read.
    #[arg(
        long = "session-cookie-origin",
        env = "SESSION_COOKIE_ORIGINS",
        value_delimiter = ','
    )]
    pub session_cookie_origins: Vec<String>,

    /// HTTP API: the session cookie's name, sb-<project ref>-auth-token [default: the one
    /// sb-*-auth-token cookie the browser sends].
    #[arg(long, env = "SESSION_COOKIE_NAME")]
    pub session_cookie_name: Option<String>,

    /// HTTP API: checkout and portal calls one user may make per minute (token bucket).
    #[arg(long, env = "API_RATE_LIMIT", default_value_t = 20,
        value_parser = value_parser!(u32).range(1..=100_000))]
    pub api_rate_limit: u32,

    /// HTTP API: how many calls one user may make at once before the per-minute rate applies.
    #[arg(long, env = "API_BURST", default_value_t = 5,
        value_parser = value_parser!(u32).range(1..=10_000))]
    pub api_burst: u32,

    /// HTTP API: largest request body, in bytes (larger ones get 413).
    #[arg(long, env = "API_MAX_BODY_BYTES", default_value_t = 16 * 1024,
        value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub api_max_body_bytes: usize,

    /// HTTP API: calls served at the same time (each holds up to two database connections).
    #[arg(long, env = "API_CONCURRENCY", default_value_t = 8,
        value_parser = value_parser!(u32).range(1..=MAX_CONCURRENCY))]
    pub api_concurrency: u32,

    /// HTTP API: how long a call waits for a session another worker is preparing, in
    /// milliseconds (then 503 with Retry-After).
    /// (`billing.await_request` waits at most 60 s.)
    #[arg(long, env = "API_WAIT_MS", default_value_t = 10_000,
        value_parser = value_parser!(u64).range(..=60_000))]
    pub api_wait_ms: u64,

    /// How often to read Stripe's events API for events whose webhook never arrived, in
    /// seconds (it also runs at start); 0 turns catching up off.
    #[arg(long, env = "WORKER_CATCH_UP_INTERVAL_SECONDS", default_value_t = 900,
        value_parser = catch_up_interval)]
    pub catch_up_interval_seconds: u64,

    /// How far before where the last catch-up got to the next one starts, in seconds.
    #[arg(long, env = "WORKER_CATCH_UP_MARGIN_SECONDS", default_value_t = 3600,
        value_parser = value_parser!(u64).range(..=86_400))]
    pub catch_up_margin_seconds: u64,

    /// Run one task and exit instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off tasks.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adopt an existing Stripe account: link every customer to its user (metadata.user_id, or
    /// --map) and record the live subscriptions of linked customers; prints what it did.
    Backfill {
        /// A file of KEY,USER_ID lines (KEY: a cus_... id or an e-mail address) for customers
        /// without metadata.user_id.
        #[arg(long)]
        map: Option<PathBuf>,
    },
    /// Read Stripe's events API once, as the worker does on start and every interval, and
    /// print what it found.
    CatchUp,
    /// Check the set-up against the database and the Stripe account with the same flags and
    /// environment, print a checklist with the fix for each problem, and exit: 0 when all is
    /// well, 1 when something is wrong, 2 when the checks could not run.
    Doctor,
}

/// Stripe API calls per second: a finite number above 0 and at most 10000.
fn rate_limit(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000.0 => Ok(rate),
        _ => Err("must be a number of requests per second above 0 and at most 10000".into()),
    }
}

/// Seconds between catch-ups: 0 (off) or at least a minute.
fn catch_up_interval(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(seconds) if seconds == 0 || seconds >= MIN_CATCH_UP_INTERVAL_SECONDS => Ok(seconds),
        _ => Err(format!(
            "must be 0 (off) or at least {MIN_CATCH_UP_INTERVAL_SECONDS} seconds"
        )),
    }
}
