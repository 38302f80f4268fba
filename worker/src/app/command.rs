//! The one-off tasks (`backfill`, `catch-up`): the same database and Stripe set-up as the
//! worker, one run, and a report to print.

use tokio_util::sync::CancellationToken;

use super::{checked_pool, StartError};
use crate::config::{Command, Config};
use crate::stripe::Stripe;
use crate::{shutdown, sync};

/// Runs a one-off task and returns the report to print.
pub async fn run_command(config: Config, command: Command) -> Result<String, StartError> {
    let token = CancellationToken::new();
    shutdown::spawn_signal_handler(token.clone());
    let db = checked_pool(&config, 2, &token)
        .await?
        .ok_or(StartError::Interrupted)?;
    let stripe = Stripe::from_config(&config)
        .map_err(StartError::Stripe)?
        .ok_or(StartError::StripeNotConfigured)?;
    match command {
        Command::Backfill { map } => {
            let mapping = match map {
                Some(path) => sync::backfill::Mapping::load(&path).map_err(StartError::Task)?,
                None => sync::backfill::Mapping::default(),
            };
            let report = sync::backfill::run(&db, &stripe, &mapping, &token)
                .await
                .map_err(StartError::Task)?;
            Ok(report.render())
        }
        // Its checklist and exit code are not a report: `main` runs it through `doctor::run`.
        Command::Doctor => Err(StartError::Task(
            "doctor is run by stripe_billing_worker::doctor::run".into(),
        )),
        Command::CatchUp => {
            let r = sync::catch_up::run_once(&db, &stripe, config.catch_up_margin, &token)
                .await
                .map_err(StartError::Task)?;
            Ok(format!(
                "events listed: {}
never delivered before: {}
of which not applied (see billing.stripe_events): {}
",
                r.listed, r.new, r.not_applied
            ))
        }
    }
}
