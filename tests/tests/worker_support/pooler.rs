//! A real transaction pooler in front of a test database: PgBouncer (`pool_mode =
//! transaction`), as Supabase's pooler on port 6543 is. Through it `LISTEN` succeeds but its
//! notifications never reach the client that listened, since the server session goes back to
//! the pool after each transaction; that is what the worker's LISTEN self-check and the
//! doctor's NOTIFY check must notice.
//!
//! One server connection (`default_pool_size = 1`): PgBouncer before 1.21 (Debian 12 ships
//! 1.18) does not track prepared statements, and the worker prepares its statements. With a
//! single server connection a process's statements stay where they were prepared, which is
//! what a pooler with prepared-statement support (PgBouncer 1.21+, Supavisor) gives. Each test
//! starts its own pooler and sends one process through it, since statement names repeat across
//! processes. `scripts/setup.sh` installs PgBouncer.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::free_port;

/// A running PgBouncer, stopped (and its directory removed) when dropped.
pub struct TransactionPooler {
    child: Child,
    dir: PathBuf,
    port: u16,
}

/// The value of `key` in a libpq key=value connection string.
fn dsn_value<'a>(dsn: &'a str, key: &str) -> Option<&'a str> {
    dsn.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl TransactionPooler {
    /// Starts PgBouncer in front of the server of `dsn` (a key=value string of the test
    /// cluster) and waits until it accepts connections.
    pub async fn start(dsn: &str) -> TransactionPooler {
        let host = dsn_value(dsn, "host").expect("host= in the test DSN");
        let server_port = dsn_value(dsn, "port").unwrap_or("5432");
        let user = dsn_value(dsn, "user").unwrap_or("postgres");
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "stripe_billing_pgbouncer_{}_{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("pooler dir");
        let config = format!(
            "[databases]\n* = host={host} port={server_port} user={user}\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = transaction\ndefault_pool_size = 1\n\
             max_client_conn = 100\nlogfile = {log}\npidfile = {pid}\n",
            log = dir.join("pgbouncer.log").display(),
            pid = dir.join("pgbouncer.pid").display(),
        );
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(&ini, config).expect("write pgbouncer.ini");
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("pgbouncer is not installed: run scripts/setup.sh (make test does)");
        let mut cmd = Command::new(binary);
        // PgBouncer refuses to run as root; -u makes it switch to the cluster's OS user.
        if is_root() {
            chown_to_postgres(&dir);
            cmd.args(["-u", "postgres"]);
        }
        cmd.arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start pgbouncer");
        let pooler = TransactionPooler { child, dir, port };
        pooler.wait_ready().await;
        pooler
    }

    /// A connection string for `dbname` through the pooler.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// The pooler's log (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TransactionPooler {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn chown_to_postgres(dir: &std::path::Path) {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:"])
        .arg(dir)
        .status()
        .expect("run chown");
    assert!(status.success(), "chown {}", dir.display());
}
