use super::*;

fn parse(text: &str) -> Result<DbConfig, String> {
    DbConfig::parse(text)
}

#[test]
fn sslmode_follows_libpq_in_both_forms() {
    for (text, mode) in [
        ("postgres://u@h/db", SslMode::Prefer),
        ("host=h dbname=db", SslMode::Prefer),
        ("postgres://u@h/db?sslmode=disable", SslMode::Disable),
        ("host=h sslmode=require", SslMode::Require),
        (
            "host=h sslmode = 'verify-full' dbname=db",
            SslMode::VerifyFull,
        ),
        ("postgres://u@h/db?sslrootcert=system", SslMode::VerifyFull),
    ] {
        let config = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(config.tls.mode(), mode, "{text}");
        let expected = match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        };
        assert_eq!(config.get_ssl_mode(), expected, "{text}");
    }
}

#[test]
fn the_other_options_still_reach_tokio_postgres() {
    let config = parse(
        "postgres://u:p%40ss@h:6543/db?sslmode=verify-full&application_name=a%20b&sslrootcert=system",
    )
    .unwrap();
    assert_eq!(config.get_application_name(), Some("a b"));
    assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
    assert_eq!(config.get_ports(), [6543]);
    let config = parse("host=h password='it\\'s x' sslmode=require dbname='my db'").unwrap();
    assert_eq!(config.get_dbname(), Some("my db"));
    assert_eq!(config.get_hosts().len(), 1);
}

#[test]
fn bad_tls_options_are_refused_without_echoing_the_password() {
    for text in [
        "postgres://u:hunter2@h/db?sslmode=allow",
        "postgres://u:hunter2@h/db?sslmode=verify",
        "host=h password=hunter2 sslmode=verify-ca sslrootcert=/nonexistent/ca.crt",
        "postgres://u:hunter2@h/db?sslmode=require&sslrootcert=system",
        "postgres://u:hunter2@h/db?sslmode=verify-ca",
        "host=h password='hunter2",
    ] {
        let err = parse(text).map(|_| ()).expect_err(text);
        assert!(!err.contains("hunter2"), "{text}: {err}");
    }
}

#[test]
fn a_root_file_without_certificates_is_refused() {
    let path = std::env::temp_dir().join(format!("tls-empty-{}.crt", std::process::id()));
    std::fs::write(&path, "not a certificate\n").unwrap();
    let err = parse(&format!(
        "host=h sslmode=verify-full sslrootcert={}",
        path.display()
    ))
    .map(|_| ())
    .unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("holds no certificate"), "{err}");
}
