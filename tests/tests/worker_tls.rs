//! The worker over TLS, as against hosted Supabase: a private cluster (scripts/pg.sh) with
//! `ssl=on` on 127.0.0.1 and a certificate for `localhost` signed by a CA the test makes with
//! the `openssl` CLI. The real worker process starts and serves with `sslmode=require` and
//! `verify-full` + `sslrootcert`, and its connections are encrypted (pg_stat_ssl); a
//! certificate for another name or from another CA stops it at once with one clear line;
//! `sslmode=disable` still connects in plain text; and `sslmode=require` against a server
//! without TLS fails clearly. Needs `cargo build -p stripe-billing-worker` first (see
//! scripts/integration-test.sh).
mod worker_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stripe_billing_tests::pg::{cluster_dsn, connect, install_current, TestDb};
use worker_support::*;

/// The certificates: `ca.crt` signed `server.crt` (for `localhost` only); `other-ca.crt` is
/// a CA that signed nothing here.
struct Certs {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    fn make(dir: PathBuf) -> Certs {
        std::fs::create_dir_all(&dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "other-ca"] {
            let (key, crt, subj) = (
                format!("{ca}.key"),
                format!("{ca}.crt"),
                format!("/CN={ca}"),
            );
            let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subj];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt]);
            args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
            args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
            openssl(&dir, &args);
        }
        let mut args = vec!["req", "-new", "-subj", "/CN=localhost"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&dir, &args);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        );
        // The server refuses a key others can read, and runs as `postgres` under root.
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:", key.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A private cluster with TLS on 127.0.0.1:`port`, stopped and removed when dropped.
struct TlsCluster {
    dir: PathBuf,
    port: u16,
    certs: Certs,
}

impl TlsCluster {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg.sh")
    }

    fn start() -> TlsCluster {
        let root = std::env::temp_dir().join(format!("sb_tls_{}", std::process::id()));
        let certs = Certs::make(root.join("certs"));
        let port = free_port();
        let dir = root.join("pg");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={port} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} \
             -c fsync=off -c synchronous_commit=off",
            certs.path("server.crt"),
            certs.path("server.key"),
        );
        let out = Command::new(TlsCluster::script())
            .args(["start", dir.to_str().unwrap()])
            .env("PG_OPTS", opts)
            .output()
            .expect("run scripts/pg.sh");
        assert!(
            out.status.success(),
            "pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TlsCluster { dir, port, certs }
    }

    /// The superuser's DSN over the Unix socket (no TLS there), for setting up.
    fn admin_dsn(&self) -> String {
        let user = std::env::var("PG_SUPERUSER").unwrap_or_else(|_| "postgres".into());
        format!(
            "host={} port={} user={user} dbname=postgres",
            self.dir.display(),
            self.port
        )
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new(TlsCluster::script())
            .args(["stop", self.dir.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_dir_all(self.dir.parent().unwrap());
    }
}

/// `dsn` with its host replaced by `host` over TCP, plus `tls` options.
fn over_tcp(dsn: &str, host: &str, tls: &str) -> String {
    let kept: Vec<&str> = dsn
        .split_whitespace()
        .filter(|kv| !kv.starts_with("host="))
        .collect();
    format!("{} host={host} {tls}", kept.join(" "))
}

/// Runs the worker against `dsn` and expects it to give up at once: its exit code and stderr.
async fn refused(dsn: &str) -> (Option<i32>, String) {
    let mut child = tokio::process::Command::new(worker_binary())
        .env_clear()
        .args(["--database-url", dsn, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start stripe-billing-worker");
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    let read = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr);
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        read.await.unwrap();
        child.wait().await.unwrap()
    })
    .await
    .unwrap_or_else(|_| panic!("the worker kept retrying against {dsn}: {stderr}"));
    (status.code(), stderr)
}

/// Whether each connection named `application` is encrypted, read from pg_stat_ssl.
async fn encrypted(admin_dsn: &str, application: &str) -> Vec<bool> {
    let admin = connect(admin_dsn).await;
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = $1 ORDER BY a.pid",
            &[&application],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn the_worker_speaks_tls_as_libpq_sslmode_says() {
    let cluster = TlsCluster::start();
    let admin = cluster.admin_dsn();
    let owner = install_current(&admin).await;
    seed(&connect(&owner).await, true).await;
    let root = cluster.certs.path("ca.crt");

    for (case, tls) in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full sslrootcert={root}"),
        // verify-ca checks the chain only: an address the certificate does not name is fine.
        format!("sslmode=verify-ca sslrootcert={root}"),
    ]
    .into_iter()
    .enumerate()
    {
        let host = if tls.contains("verify-ca") {
            "127.0.0.1"
        } else {
            "localhost"
        };
        let application = format!("tls_case_{case}");
        let dsn = over_tcp(
            &owner,
            host,
            &format!("{tls} application_name={application}"),
        );
        let worker = Worker::start(&dsn, None, &[]).await;
        let (status, body) = post_webhook(&worker, b"{}".to_vec(), Some("t=1,v1=00")).await;
        assert_eq!(status, 400, "{tls}: a webhook is answered: {body}");
        let ssl = encrypted(&admin, &application).await;
        assert!(
            !ssl.is_empty() && ssl.iter().all(|e| *e),
            "{tls}: {ssl:?}\n{}",
            worker.logs()
        );
    }

    // The URL form, as Supabase shows it.
    let url = format!(
        "postgresql://{}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        owner
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("user="))
            .unwrap(),
        cluster.port,
        root.replace('/', "%2F"),
    );
    drop(Worker::start(&url, None, &[]).await);

    // Plain text when asked.
    let dsn = over_tcp(
        &owner,
        "localhost",
        "sslmode=disable application_name=tls_plain",
    );
    let worker = Worker::start(&dsn, None, &[]).await;
    let ssl = encrypted(&admin, "tls_plain").await;
    assert!(!ssl.is_empty() && ssl.iter().all(|e| !*e), "{ssl:?}");
    drop(worker);

    // The certificate names localhost, not 127.0.0.1; other-ca signed nothing here.
    let other = cluster.certs.path("other-ca.crt");
    for (host, tls, why) in [
        (
            "127.0.0.1",
            format!("sslmode=verify-full sslrootcert={root}"),
            "by a host name the certificate lists".to_string(),
        ),
        (
            "localhost",
            format!("sslmode=verify-full sslrootcert={other}"),
            format!("not signed by a CA in sslrootcert {other}"),
        ),
        (
            "localhost",
            format!("sslmode=verify-ca sslrootcert={other}"),
            format!("not signed by a CA in sslrootcert {other}"),
        ),
        // libpq checks the chain with sslmode=require too once a root certificate is given.
        (
            "localhost",
            format!("sslmode=require sslrootcert={other}"),
            format!("not signed by a CA in sslrootcert {other}"),
        ),
    ] {
        let dsn = over_tcp(&owner, host, &format!("{tls} password=hunter2"));
        let (code, stderr) = refused(&dsn).await;
        assert_eq!(code, Some(2), "{dsn}: {stderr}");
        assert!(
            stderr.contains("TLS handshake with") && stderr.contains(&why),
            "{dsn}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_fails_clearly() {
    // The suite's own cluster has no TLS (and a Unix socket never offers it).
    let db = TestDb::empty().await;
    assert!(!cluster_dsn().is_empty());
    let (code, stderr) = refused(&format!("{} sslmode=require", db.dsn)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("server does not support TLS"), "{stderr}");
    // prefer, libpq's default, falls back to plain text: the worker gets as far as the
    // version check (this database has no stripe_billing).
    let (code, stderr) = refused(&format!("{} sslmode=prefer", db.dsn)).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("has no stripe_billing"), "{stderr}");
}
