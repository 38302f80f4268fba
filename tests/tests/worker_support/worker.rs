//! The worker as a process of its own: started with only the flags a test gives it, waited for
//! until its HTTP server answers, and killed when dropped (its log kept for a failed test).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{free_port, worker_binary, SECRET_KEY};

/// A running worker process, killed when dropped.
pub struct Worker {
    child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Worker {
    /// Starts the worker against `dsn` and the emulator at `stripe` (no key when None), with
    /// `extra` flags (and a 200 ms poll unless they set one), and waits until its HTTP
    /// server answers.
    pub async fn start(dsn: &str, stripe: Option<&str>, extra: &[&str]) -> Worker {
        Worker::start_on(free_port(), dsn, stripe, extra).await
    }

    pub async fn start_on(port: u16, dsn: &str, stripe: Option<&str>, extra: &[&str]) -> Worker {
        let dir = std::env::temp_dir().join("stripe_billing_worker_e2e");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("worker-{}-{port}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(worker_binary());
        // Nothing from the test's own environment may configure the worker: every setting it
        // gets is passed here, so a new WORKER_*/STRIPE_* variable cannot leak in unnoticed.
        cmd.env_clear();
        cmd.env("RUST_LOG", "info,stripe_billing_worker=debug")
            .args(["--database-url", dsn])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        if !extra.contains(&"--poll-interval-ms") {
            cmd.args(["--poll-interval-ms", "200"]);
        }
        if let Some(base) = stripe {
            cmd.args(["--stripe-api-base", base, "--stripe-secret-key", SECRET_KEY]);
        }
        let child = cmd.spawn().expect("start stripe-billing-worker");
        let worker = Worker {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        worker.wait_healthy().await;
        worker
    }

    /// The webhook URL of this worker.
    pub fn webhook_url(&self) -> String {
        format!("{}/api/stripe/webhook", self.base)
    }

    /// The worker's log so far (for assertion messages).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A scrape of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let resp = reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("GET /metrics");
        assert!(resp.status().is_success(), "/metrics: {}", resp.status());
        resp.text().await.expect("metrics text")
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the worker never logged {needle:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = http.get(format!("{}/healthz", self.base)).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "worker did not come up:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal by name (TERM, INT, KILL).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("worker still running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("worker still running after {within:?}:\n{}", self.logs()))
            .expect("wait for worker");
        status.code()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Keep the log of a failed test for a look afterwards; the rest is noise.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
