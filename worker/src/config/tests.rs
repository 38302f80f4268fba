//! Flag parsing and validation.

use super::*;
use clap::Parser;

fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec![
        "stripe-billing-worker",
        "--database-url",
        "postgres://billing@localhost/app",
    ];
    argv.extend_from_slice(extra);
    Config::from_args(Args::try_parse_from(argv).expect("clap accepts the flags"))
}

/// Why `extra` is refused, as the operator reads it: clap's error for a number out of its
/// bounds (which exits with code 2 like a configuration error), else the configuration's line.
fn refusal(extra: &[&str]) -> String {
    let mut argv = vec![
        "stripe-billing-worker",
        "--database-url",
        "postgres://billing@localhost/app",
    ];
    argv.extend_from_slice(extra);
    match Args::try_parse_from(argv) {
        Err(e) => {
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
            assert_eq!(e.exit_code(), 2, "{e}");
            e.to_string()
        }
        Ok(args) => {
            let line = Config::from_args(args)
                .expect_err(&format!("{extra:?} must be rejected"))
                .to_string();
            assert!(!line.contains('\n'), "one line: {line:?}");
            line
        }
    }
}

/// The environment variables clap reads, straight from the argument definitions, so the list
/// cannot fall behind a new flag.
fn env_vars() -> Vec<String> {
    use clap::CommandFactory;
    Args::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect()
}

#[test]
fn defaults() {
    if env_vars().iter().any(|v| std::env::var_os(v).is_some()) {
        eprintln!("skipped: the environment sets worker variables");
        return;
    }
    let c = parse(&[]).unwrap();
    assert_eq!(c.stripe_api_base, "https://api.stripe.com");
    assert_eq!(c.stripe_version, "2025-03-31.basil");
    assert_eq!(c.concurrency, 4);
    assert_eq!(c.poll_interval, Duration::from_secs(1));
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(c.lease_seconds, 60);
    assert_eq!(c.stripe_timeout, Duration::from_secs(30));
    assert_eq!(c.max_body_bytes, 1 << 20);
    assert_eq!(c.rate_limit, 25.0);
    assert_eq!(c.db_max_lifetime, Duration::from_secs(600));
    assert!(c.listen_notify);
    assert_eq!(c.prune_interval, Some(Duration::from_secs(3600)));
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(c.worker_id.ends_with(&format!("-{}", std::process::id())));
    assert_eq!(
        c.database.get_connect_timeout(),
        Some(&Duration::from_secs(5))
    );
    assert!(!c.api.enabled());
    assert!(c.api.cors_origins.is_empty());
    assert_eq!((c.api.rate_per_minute, c.api.burst), (20, 5));
    assert_eq!(c.api.max_body_bytes, 16 * 1024);
    assert_eq!(c.api.concurrency, 8);
    assert_eq!(c.api.wait, Duration::from_secs(10));
}

#[test]
fn api_flags() {
    let secret = "a-jwt-secret-of-at-least-32-characters";
    let c = parse(&[
        "--jwt-secret",
        secret,
        "--jwks-url",
        "https://ref.supabase.co/auth/v1/.well-known/jwks.json",
        "--jwt-audience",
        "authenticated",
        "--cors-origin",
        "https://App.Example.com/",
        "--cors-origin",
        "http://localhost:3000",
        "--api-rate-limit",
        "60",
    ])
    .unwrap();
    assert!(c.api.enabled());
    assert_eq!(c.api.jwt_secret.as_ref().map(Secret::expose), Some(secret));
    assert_eq!(c.api.jwt_audience.as_deref(), Some("authenticated"));
    assert_eq!(
        c.api.cors_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert_eq!(c.api.rate_per_minute, 60);
    // Empty values (a .env line without a value) mean "not configured".
    let c = parse(&["--jwt-secret", "", "--jwks-url", ""]).unwrap();
    assert!(!c.api.enabled());
    // The default port is dropped, as browsers send the Origin header.
    let c = parse(&["--cors-origin", "https://app.example.com:443"]).unwrap();
    assert_eq!(c.api.cors_origins, ["https://app.example.com"]);
    // The session cookie: origins normalised the same way, and an optional name.
    let c = parse(&[
        "--session-cookie-origin",
        "https://App.example.com/",
        "--session-cookie-name",
        "sb-abcd-auth-token",
    ])
    .unwrap();
    assert_eq!(c.api.cookie_origins, ["https://app.example.com"]);
    assert_eq!(c.api.cookie_name.as_deref(), Some("sb-abcd-auth-token"));
    assert!(parse(&[]).unwrap().api.cookie_origins.is_empty());
}

#[test]
fn bad_api_values_are_rejected() {
    let cases: &[(&[&str], &str)] = &[
        (&["--jwt-secret", "too-short"], "--jwt-secret"),
        (&["--jwks-url", "not a url"], "--jwks-url"),
        (&["--jwks-url", "file:///etc/jwks.json"], "--jwks-url"),
        (&["--cors-origin", "app.example.com"], "--cors-origin"),
        (
            &["--cors-origin", "https://app.example.com/pricing"],
            "--cors-origin",
        ),
        (&["--cors-origin", "*"], "--cors-origin"),
        (&["--session-cookie-origin", "*"], "--session-cookie-origin"),
        (
            &["--session-cookie-name", "sb-a-auth-token; x=y"],
            "--session-cookie-name",
        ),
        (&["--api-rate-limit", "0"], "--api-rate-limit"),
        (&["--api-burst", "0"], "--api-burst"),
        (&["--api-max-body-bytes", "0"], "--api-max-body-bytes"),
        (&["--api-concurrency", "0"], "--api-concurrency"),
        (&["--api-wait-ms", "60001"], "--api-wait-ms"),
        (&["--api-rate-limit", "100001"], "--api-rate-limit"),
        (&["--api-burst", "10001"], "--api-burst"),
        (&["--api-concurrency", "1001"], "--api-concurrency"),
    ];
    for (flags, needle) in cases {
        let line = refusal(flags);
        assert!(line.contains(needle), "{line:?} lacks {needle}");
        assert!(
            !line.contains("too-short"),
            "the secret is not echoed: {line}"
        );
    }
}

#[test]
fn flags_override_defaults() {
    let c = parse(&[
        "--stripe-api-base",
        "http://127.0.0.1:12111/",
        "--stripe-secret-key",
        "sk_test_x",
        "--concurrency",
        "16",
        "--no-listen-notify",
        "--log-format",
        "json",
        "--worker-id",
        "w1",
        "--listen",
        "[::1]:9000",
        "--prune-interval-seconds",
        "0",
    ])
    .unwrap();
    assert_eq!(c.stripe_api_base, "http://127.0.0.1:12111");
    assert_eq!(
        c.stripe_secret_key.as_ref().map(Secret::expose),
        Some("sk_test_x")
    );
    assert_eq!(c.concurrency, 16);
    assert!(!c.listen_notify);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.worker_id, "w1");
    assert_eq!(c.listen.port(), 9000);
    assert_eq!(c.prune_interval, None);
}

#[test]
fn doctor_takes_the_worker_flags() {
    let argv = ["w", "--database-url", "host=/tmp dbname=app", "doctor"];
    let c = Config::from_args(Args::try_parse_from(argv).unwrap()).unwrap();
    assert_eq!(c.command, Some(Command::Doctor));
    let run =
        Config::from_args(Args::try_parse_from(["w", "--database-url", "host=/tmp"]).unwrap());
    assert_eq!(run.unwrap().command, None);
    assert!(Args::try_parse_from(["w", "--database-url", "host=/tmp", "cure"]).is_err());
}

#[test]
fn key_value_connection_strings_work() {
    let c = Config::from_args(
        Args::try_parse_from([
            "w",
            "--database-url",
            "host=/tmp/pg port=5432 user=postgres dbname=postgres",
        ])
        .unwrap(),
    )
    .unwrap();
    assert_eq!(c.database.get_dbname(), Some("postgres"));
}

#[test]
fn empty_secret_key_means_not_configured() {
    assert_eq!(
        parse(&["--stripe-secret-key", ""])
            .unwrap()
            .stripe_secret_key,
        None
    );
    assert!(matches!(
        parse(&["--stripe-secret-key", "pk_test_1"]),
        Err(ConfigError::SecretKey(_))
    ));
    assert!(matches!(
        parse(&["--stripe-secret-key", "sk test"]),
        Err(ConfigError::SecretKey(_))
    ));
}

#[test]
fn bad_values_are_rejected_with_the_flag_name() {
    let cases: &[(&[&str], &str)] = &[
        (&["--concurrency", "0"], "--concurrency"),
        (&["--concurrency", "1001"], "--concurrency"),
        (&["--poll-interval-ms", "0"], "--poll-interval-ms"),
        (&["--listen", "localhost"], "--listen"),
        (&["--listen", "8080"], "--listen"),
        (&["--lease-seconds", "0"], "--lease-seconds"),
        (&["--lease-seconds", "59"], "--lease-seconds"),
        (
            &["--lease-seconds", "2", "--stripe-timeout-ms", "1001"],
            "--lease-seconds",
        ),
        (&["--stripe-timeout-ms", "99"], "--stripe-timeout-ms"),
        (&["--max-body-bytes", "0"], "--max-body-bytes"),
        (&["--rate-limit", "0"], "--rate-limit"),
        (
            &["--prune-interval-seconds", "604801"],
            "--prune-interval-seconds",
        ),
        (&["--rate-limit", "NaN"], "--rate-limit"),
        (&["--rate-limit", "10001"], "--rate-limit"),
        (
            &["--db-max-lifetime-seconds", "0"],
            "--db-max-lifetime-seconds",
        ),
        (&["--poll-interval-ms", "3600001"], "--poll-interval-ms"),
        (
            &["--shutdown-timeout-ms", "3600001"],
            "--shutdown-timeout-ms",
        ),
        (&["--lease-seconds", "86401"], "--lease-seconds"),
        (&["--stripe-timeout-ms", "600001"], "--stripe-timeout-ms"),
        (
            &["--catch-up-interval-seconds", "59"],
            "--catch-up-interval-seconds",
        ),
        (
            &["--catch-up-margin-seconds", "86401"],
            "--catch-up-margin-seconds",
        ),
        (&["--stripe-api-base", "not a url"], "--stripe-api-base"),
        (&["--stripe-api-base", "ftp://x"], "--stripe-api-base"),
        (&["--stripe-api-base", "http://x/?a=b"], "--stripe-api-base"),
        (&["--stripe-version", ""], "--stripe-version"),
        (&["--stripe-version", "a b"], "--stripe-version"),
        (&["--stripe-version", "basil"], "--stripe-version"),
        (&["--worker-id", ""], "--worker-id"),
    ];
    for (flags, needle) in cases {
        let line = refusal(flags);
        assert!(line.contains(needle), "{line:?} lacks {needle}");
    }
}

#[test]
fn bad_database_urls_are_rejected_without_echoing_secrets() {
    for url in [
        "postgres://u:hunter2@host:notaport/db",
        "dbname=x",
        "host=h sslmode=verify",
        "host=h port=",
    ] {
        let err = Config::from_args(Args::try_parse_from(["w", "--database-url", url]).unwrap())
            .expect_err(url);
        assert!(matches!(err, ConfigError::DatabaseUrl(_)), "{url}: {err}");
        assert!(!err.to_string().contains("hunter2"));
    }
}

#[test]
fn bounds_are_inclusive() {
    let c = parse(&[
        "--concurrency",
        "1000",
        "--poll-interval-ms",
        "1",
        "--shutdown-timeout-ms",
        "0",
        "--prune-interval-seconds",
        "604800",
        "--catch-up-interval-seconds",
        "60",
        "--rate-limit",
        "0.5",
        "--api-wait-ms",
        "60000",
    ])
    .unwrap();
    assert_eq!(c.concurrency, 1000);
    assert_eq!(c.shutdown_timeout, Duration::ZERO);
    assert_eq!(c.catch_up_interval, Some(Duration::from_secs(60)));
    assert_eq!(c.rate_limit, 0.5);
    let off = parse(&["--catch-up-interval-seconds", "0"]).unwrap();
    assert_eq!(off.catch_up_interval, None);
}

#[test]
fn short_leases_need_short_stripe_timeouts() {
    let c = parse(&["--lease-seconds", "2", "--stripe-timeout-ms", "1000"]).unwrap();
    assert_eq!(c.lease_seconds, 2);
    assert_eq!(c.stripe_timeout, Duration::from_secs(1));
}

#[test]
fn debug_output_never_contains_the_secrets() {
    let key = "sk_live_51VeryS3cretKeyMaterial";
    let args = Args::try_parse_from([
        "w",
        "--database-url",
        "postgres://billing:hunter2@db.internal/app",
        "--stripe-secret-key",
        key,
        "--jwt-secret",
        "jwtS3cretjwtS3cretjwtS3cretjwtS3cret",
    ])
    .unwrap();
    let shown = format!("{args:?} {args:#?}");
    assert!(
        !shown.contains("VeryS3cret") && !shown.contains("hunter2") && !shown.contains("jwtS3cret"),
        "{shown}"
    );
    assert!(shown.contains("sk_live_…(redacted)"), "{shown}");
    let config = Config::from_args(args).unwrap();
    let shown = format!("{config:?} {config:#?}");
    assert!(
        !shown.contains("VeryS3cret") && !shown.contains("hunter2") && !shown.contains("jwtS3cret"),
        "{shown}"
    );
    assert!(shown.contains("sk_live_…(redacted)"), "{shown}");
    assert_eq!(config.stripe_secret_key.unwrap().expose(), key);
}

#[test]
fn clap_requires_a_database_url_and_numbers() {
    // Only when DATABASE_URL is not in the environment of the test run.
    if std::env::var_os("DATABASE_URL").is_none() {
        assert!(Args::try_parse_from(["w"]).is_err());
    }
    assert!(Args::try_parse_from(["w", "--database-url", "host=h", "--concurrency", "x"]).is_err());
    assert!(
        Args::try_parse_from(["w", "--database-url", "host=h", "--log-format", "xml"]).is_err()
    );
}

#[test]
fn every_flag_with_an_env_fallback_is_seen() {
    let vars = env_vars();
    for expected in [
        "DATABASE_URL",
        "STRIPE_SECRET_KEY",
        "STRIPE_TIMEOUT_MS",
        "WORKER_ID",
        "JWT_SECRET",
        "JWKS_URL",
        "CORS_ORIGINS",
    ] {
        assert!(
            vars.iter().any(|v| v == expected),
            "{expected} missing from {vars:?}"
        );
    }
}

#[test]
fn stripe_versions_older_than_the_normaliser_reads_are_refused() {
    let with = |v: &str| {
        Config::from_args(
            Args::try_parse_from([
                "w",
                "--database-url",
                "postgres://billing@localhost/app",
                "--stripe-version",
                v,
            ])
            .unwrap(),
        )
    };
    for old in ["2023-08-15", "2022-11-15", "2020-08-27"] {
        let err = with(old).expect_err(old);
        assert_eq!(err, ConfigError::StripeVersionTooOld(old.into()));
        let line = err.to_string();
        assert!(
            line.contains(old) && line.contains("2023-08-16") && line.contains("oldest"),
            "{line}"
        );
    }
    for ok in [
        "2023-08-16",
        "2024-06-20",
        "2025-03-31.basil",
        "2025-09-30.clover",
    ] {
        assert_eq!(with(ok).expect(ok).stripe_version, ok);
    }
    for shapeless in ["basil", "2025-3-31", "2025-03-31.", "2025-03-31basil"] {
        assert_eq!(
            with(shapeless).expect_err(shapeless),
            ConfigError::StripeVersion(shapeless.into())
        );
    }
}
