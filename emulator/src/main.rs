//! `stripe-emulator`: the local Stripe API emulator as a process (see
//! the `stripe_emulator` library for the CLI, endpoints and control API).
//!
//! Prints `listening on http://IP:PORT` as its only stdout line so a test can read the port;
//! logs go to stderr. Stops on SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};

use clap::Parser;
use stripe_emulator::{start, Config};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let running = start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{}", running.addr)?;
        out.flush()?;
    }
    tracing::info!(base_url = %running.base_url, "stripe-emulator ready");
    shutdown_signal().await;
    running.shutdown().await
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
