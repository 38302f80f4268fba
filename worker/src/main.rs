//! `stripe-billing-worker`: serves the `billing.stripe_requests` queue against the Stripe API
//! and receives Stripe webhooks. This file is the process shell only: flags, logging, the
//! runtime and exit codes; the worker itself is the `stripe_billing_worker` library.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 1 on a runtime failure (e.g. the
//! listen address is taken), 2 on bad configuration or a database whose stripe_billing version this
//! worker does not support. `doctor` has its own (0 healthy, 1 problems, 2 could not check).
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use stripe_billing_worker::app::{self, StartError};
use stripe_billing_worker::config::{Args, Command, Config, LogFormat};

fn main() -> ExitCode {
    // clap prints usage errors and exits with 2 itself (0 for --help and --version).
    let args = Args::try_parse().unwrap_or_else(|e| e.exit());
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("stripe-billing-worker: {e}");
            return ExitCode::from(2);
        }
    };
    // The doctor's output is its checklist on stdout; only warnings go to the log.
    let doctor = config.command == Some(Command::Doctor);
    init_logging(config.log_format, doctor);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("stripe-billing-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if doctor {
        return ExitCode::from(runtime.block_on(stripe_billing_worker::doctor::run(config)));
    }
    if let Some(command) = config.command.clone() {
        return match runtime.block_on(app::run_command(config, command)) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("stripe-billing-worker: {e}");
                ExitCode::from(e.exit_code())
            }
        };
    }
    match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        // One line, like a configuration error: the operator must act before a restart helps.
        Err(e @ (StartError::Unsupported(_) | StartError::Database(_))) => {
            eprintln!("stripe-billing-worker: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`, `warn` for the doctor).
fn init_logging(format: LogFormat, doctor: bool) {
    let default = if doctor { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
