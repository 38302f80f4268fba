//! Configuration: the flags (with environment fallbacks and the bounds of each number,
//! [`Args`]) and the typed configuration validated from them at start-up ([`Config`]).
//! Anything wrong is reported before the worker touches the database or the network, with exit
//! code 2: by clap for a number out of its bounds, as one line from here for the rest.

mod args;
mod secret;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

pub use args::{Args, Command, LogFormat, DEFAULT_STRIPE_API_BASE, DEFAULT_STRIPE_VERSION};
pub use secret::Secret;

/// A claim must outlast its Stripe calls by this factor: one call that uses its whole timeout
/// still leaves room for a retry (or the second call of a checkout) and the lease's safety
/// margin (`queue::claim::work_budget`).
const LEASE_PER_TIMEOUT: u64 = 2;

/// The oldest Stripe API version whose objects the event normaliser reads (the 2023-08-16
/// shape; basil, 2025-03-31, and later are read too). The worker's own calls are answered in
/// `--stripe-version`, so an older one is refused at start-up.
pub const OLDEST_STRIPE_VERSION: &str = "2023-08-16";

/// The API versions the golden event fixtures cover (tests/fixtures/events): the shapes the
/// product is tested with. The doctor warns about a webhook endpoint on any other.
pub const VETTED_STRIPE_VERSIONS: [&str; 2] = ["2023-08-16", "2025-03-31.basil"];

/// The date of a Stripe API version (`2025-03-31.basil` → `2025-03-31`, `2023-08-16` →
/// itself); None for anything not shaped like one.
pub fn version_date(version: &str) -> Option<&str> {
    let date = version.get(..10)?;
    let rest = &version[10..];
    let shaped = date.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        _ => b.is_ascii_digit(),
    });
    (shaped && (rest.is_empty() || (rest.len() > 1 && rest.starts_with('.')))).then_some(date)
}

/// A configuration problem, reported as one line before exiting with code 2.
#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid --database-url: {0}")]
    DatabaseUrl(String),
    #[error("invalid --stripe-secret-key: {0}")]
    SecretKey(&'static str),
    #[error("invalid --stripe-api-base {value:?}: {reason}")]
    ApiBase { value: String, reason: String },
    #[error("invalid --stripe-version {0:?}: expected a version such as {DEFAULT_STRIPE_VERSION}")]
    StripeVersion(String),
    #[error(
        "invalid --stripe-version {0:?}: older than {OLDEST_STRIPE_VERSION}, the oldest shape of Stripe's objects the event normaliser reads"
    )]
    StripeVersionTooOld(String),
    #[error("invalid --listen {0:?}: expected IP:PORT, e.g. 127.0.0.1:8080")]
    Listen(String),
    #[error("invalid --{flag}: {reason}")]
    Range { flag: &'static str, reason: String },
    #[error("invalid --worker-id: must be 1 to 200 printable characters")]
    WorkerId,
    #[error("invalid --jwt-secret: {0}")]
    JwtSecret(&'static str),
    #[error("invalid --jwks-url {value:?}: {reason}")]
    JwksUrl { value: String, reason: String },
    #[error(
        "invalid --{flag} {value:?}: expected scheme://host[:port], e.g. https://app.example.com"
    )]
    CorsOrigin { flag: &'static str, value: String },
    #[error("invalid --session-cookie-name {0:?}: expected a cookie name such as sb-<project ref>-auth-token")]
    CookieName(String),
}

/// The shortest HS256 secret accepted: a shorter one can be guessed offline from any token.
const MIN_JWT_SECRET_BYTES: usize = 32;

/// The HTTP API's settings (`POST /api/stripe/checkout` and `/api/stripe/portal`).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// HS256 secret; tokens signed with it are accepted.
    pub jwt_secret: Option<Secret>,
    /// JWKS with the ES256/RS256 keys; tokens signed with its keys are accepted.
    pub jwks_url: Option<String>,
    /// Required `aud`, when set.
    pub jwt_audience: Option<String>,
    /// Origins allowed to call from a browser (normalised: lower case, no trailing slash).
    pub cors_origins: Vec<String>,
    /// Origins whose calls may be signed by the session cookie (normalised like cors_origins).
    pub cookie_origins: Vec<String>,
    /// The session cookie's name; None: any single `sb-*-auth-token`.
    pub cookie_name: Option<String>,
    /// Calls per minute and burst, per user.
    pub rate_per_minute: u32,
    pub burst: u32,
    pub max_body_bytes: usize,
    pub concurrency: usize,
    /// How long a call waits for a request another worker serves.
    pub wait: Duration,
}

impl ApiConfig {
    /// Whether callers can be authenticated at all.
    pub fn enabled(&self) -> bool {
        self.jwt_secret.is_some() || self.jwks_url.is_some()
    }
}

/// The validated configuration. `Debug` is safe to log: the key is a [`Secret`] and
/// `tokio_postgres::Config` redacts the password itself.
#[derive(Clone, Debug)]
pub struct Config {
    pub database: crate::db::DbConfig,
    pub stripe_secret_key: Option<Secret>,
    /// Without a trailing slash, so paths like `/v1/customers` can be appended.
    pub stripe_api_base: String,
    pub stripe_version: String,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub listen: SocketAddr,
    pub shutdown_timeout: Duration,
    pub lease_seconds: u32,
    /// Timeout of one Stripe API call; at most half the lease.
    pub stripe_timeout: Duration,
    pub max_body_bytes: usize,
    /// How long a pooled connection is reused before it is closed.
    pub db_max_lifetime: Duration,
    pub rate_limit: f64,
    pub listen_notify: bool,
    /// How often the worker runs `billing.prune()`; None: never.
    pub prune_interval: Option<Duration>,
    pub log_format: LogFormat,
    pub worker_id: String,
    pub api: ApiConfig,
    /// None: no catching up from the events API.
    pub catch_up_interval: Option<Duration>,
    pub catch_up_margin: Duration,
    pub command: Option<Command>,
}

impl Config {
    /// Validates `args`; the first problem found is returned.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let database = database_config(args.database_url.expose())?;
        let api = api_config(&args)?;
        let stripe_secret_key = secret_key(args.stripe_secret_key)?;
        let stripe_api_base = api_base(&args.stripe_api_base)?;
        match version_date(&args.stripe_version) {
            _ if args.stripe_version.len() > 100
                || !args.stripe_version.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                return Err(ConfigError::StripeVersion(args.stripe_version))
            }
            None => return Err(ConfigError::StripeVersion(args.stripe_version)),
            Some(date) if date < OLDEST_STRIPE_VERSION => {
                return Err(ConfigError::StripeVersionTooOld(args.stripe_version))
            }
            Some(_) => {}
        }
        let listen = SocketAddr::from_str(args.listen.trim())
            .map_err(|_| ConfigError::Listen(args.listen.clone()))?;
        // A call that outlives the claim's lease races a second claim of the same row; the
        // worker cuts calls at the lease, so a lease shorter than this could never finish one.
        if u64::from(args.lease_seconds) * 1000 < LEASE_PER_TIMEOUT * args.stripe_timeout_ms {
            return Err(range(
                "lease-seconds",
                format!(
                    "must be at least {LEASE_PER_TIMEOUT} times --stripe-timeout-ms ({} ms), so a claim outlasts a Stripe call and its retry; got {} s",
                    args.stripe_timeout_ms, args.lease_seconds
                ),
            ));
        }
        let worker_id = match args.worker_id {
            Some(id) => id,
            None => format!("{}-{}", hostname(), std::process::id()),
        };
        if worker_id.is_empty()
            || worker_id.chars().count() > 200
            || worker_id.chars().any(char::is_control)
        {
            return Err(ConfigError::WorkerId);
        }
        Ok(Config {
            database,
            stripe_secret_key,
            stripe_api_base,
            stripe_version: args.stripe_version,
            concurrency: args.concurrency as usize,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            listen,
            shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
            lease_seconds: args.lease_seconds,
            stripe_timeout: Duration::from_millis(args.stripe_timeout_ms),
            max_body_bytes: args.max_body_bytes,
            db_max_lifetime: Duration::from_secs(args.db_max_lifetime_seconds),
            rate_limit: args.rate_limit,
            listen_notify: !args.no_listen_notify,
            prune_interval: (args.prune_interval_seconds > 0)
                .then(|| Duration::from_secs(args.prune_interval_seconds)),
            log_format: args.log_format,
            worker_id,
            api,
            catch_up_interval: (args.catch_up_interval_seconds > 0)
                .then(|| Duration::from_secs(args.catch_up_interval_seconds)),
            catch_up_margin: Duration::from_secs(args.catch_up_margin_seconds),
            command: args.command,
        })
    }
}

fn api_config(args: &Args) -> Result<ApiConfig, ConfigError> {
    // An empty value (JWT_SECRET= in a .env file) means "not configured", as for the Stripe key.
    let jwt_secret = args
        .jwt_secret
        .clone()
        .filter(|s| !s.expose().trim().is_empty());
    if let Some(secret) = &jwt_secret {
        if secret.expose().len() < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::JwtSecret("must be at least 32 characters"));
        }
    }
    let jwks_url = match args.jwks_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(value) => Some(jwks_url(value)?),
    };
    let cors_origins = origins(&args.cors_origins, "cors-origin")?;
    let cookie_origins = origins(&args.session_cookie_origins, "session-cookie-origin")?;
    let cookie_name = match args.session_cookie_name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) if cookie_name_ok(name) => Some(name.to_string()),
        Some(name) => return Err(ConfigError::CookieName(name.to_string())),
    };
    Ok(ApiConfig {
        jwt_secret,
        jwks_url,
        jwt_audience: args.jwt_audience.clone().filter(|a| !a.trim().is_empty()),
        cors_origins,
        cookie_origins,
        cookie_name,
        rate_per_minute: args.api_rate_limit,
        burst: args.api_burst,
        max_body_bytes: args.api_max_body_bytes,
        concurrency: args.api_concurrency as usize,
        wait: Duration::from_millis(args.api_wait_ms),
    })
}

fn jwks_url(value: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::JwksUrl {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(url.to_string())
}

/// The normalised origins of a repeatable origin flag (empty values skipped).
fn origins(values: &[String], flag: &'static str) -> Result<Vec<String>, ConfigError> {
    let mut origins = Vec::new();
    for origin in values.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        origins.push(cors_origin(origin).ok_or_else(|| ConfigError::CorsOrigin {
            flag,
            value: origin.to_string(),
        })?);
    }
    Ok(origins)
}

/// A cookie name as RFC 6265 allows it (a token: no separators, spaces or controls).
fn cookie_name_ok(name: &str) -> bool {
    name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// An origin as browsers send it in the `Origin` header: scheme, host and a port other than
/// the default, nothing else. Returned in lower case without a trailing slash.
fn cors_origin(value: &str) -> Option<String> {
    let url = reqwest::Url::parse(value).ok()?;
    let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
    let plain = url.username().is_empty() && url.password().is_none();
    if !matches!(url.scheme(), "http" | "https") || !bare || !plain {
        return None;
    }
    // The URL parser lower-cases the host and drops a default port, as browsers do.
    Some(url.origin().ascii_serialization())
}

fn range(flag: &'static str, reason: String) -> ConfigError {
    ConfigError::Range { flag, reason }
}

/// Parses the connection string and fills in what a daemon needs but libpq leaves open.
fn database_config(url: &str) -> Result<crate::db::DbConfig, ConfigError> {
    // The parsers' messages never echo the input, so a password cannot leak into the log.
    let mut config = crate::db::DbConfig::parse(url)
        .map_err(|e| {
            ConfigError::DatabaseUrl(format!(
                "{e} (expected postgres://USER@HOST:PORT/DB or key=value pairs such as host=... dbname=...)"
            ))
        })?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(ConfigError::DatabaseUrl(
            "no host given (add host=... or postgres://HOST/...)".into(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        // A dead host must not stall a claim or a health check for the OS default (minutes).
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("stripe-billing-worker");
    }
    // Notice a silently vanished server on the otherwise idle LISTEN connection.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    Ok(config)
}

/// An empty key (e.g. `STRIPE_SECRET_KEY=` in a .env file) means "not configured".
fn secret_key(key: Option<Secret>) -> Result<Option<Secret>, ConfigError> {
    let Some(key) = key.filter(|k| !k.expose().trim().is_empty()) else {
        return Ok(None);
    };
    if !key.expose().bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::SecretKey(
            "must not contain spaces or control characters",
        ));
    }
    if key.expose().starts_with("pk_") {
        return Err(ConfigError::SecretKey(
            "this is a publishable key (pk_...); the worker needs a secret key (sk_... or rk_...)",
        ));
    }
    Ok(Some(key))
}

fn api_base(value: &str) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError::ApiBase {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let url = reqwest::Url::parse(value.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("no query or fragment allowed"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The machine's name for the default worker id; "worker" when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string())
}

#[cfg(test)]
mod tests;
