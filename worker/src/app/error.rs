//! Why the worker could not start (or a one-off task could not run), one variant per cause,
//! and the exit code each gets: 2 when the database's stripe_billing is not the version this
//! worker speaks (the operator must act before a restart helps, like a configuration error), 1
//! for everything else.

use std::net::SocketAddr;

use deadpool_postgres::BuildError;

use crate::queue::NOT_CONFIGURED;
use crate::version::VersionError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database's stripe_billing is missing, another version, or unreadable.
    #[error(transparent)]
    Unsupported(#[from] VersionError),
    /// Connecting failed in a way no retry changes (TLS refused).
    #[error("{0}")]
    Database(String),
    #[error("cannot set up the database connection pool: {0}")]
    Pool(#[from] BuildError),
    /// A shutdown signal came before the database answered.
    #[error("stopped before the database answered")]
    Interrupted,
    /// The Stripe client cannot be built from the configuration.
    #[error("{0}")]
    Stripe(String),
    /// A one-off task that needs Stripe was started without a key.
    #[error("{NOT_CONFIGURED}: set STRIPE_SECRET_KEY")]
    StripeNotConfigured,
    /// The users' API cannot verify tokens as configured (say, no HTTP client for the JWKS).
    #[error("{0}")]
    Verifier(String),
    #[error("{0}")]
    Metrics(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the bound address: {0}")]
    BoundAddress(std::io::Error),
    /// A one-off task (`backfill`, `catch-up`) failed.
    #[error("{0}")]
    Task(String),
}

impl StartError {
    /// The process's exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            // The operator must act before a restart helps.
            StartError::Unsupported(_) | StartError::Database(_) => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_version_mismatch_or_a_tls_refusal_exits_with_2() {
        assert_eq!(StartError::from(VersionError::NotInstalled).exit_code(), 2);
        assert_eq!(
            StartError::Unsupported(VersionError::Unreadable).exit_code(),
            2
        );
        assert_eq!(StartError::Database("refused".into()).exit_code(), 2);
        assert_eq!(StartError::Interrupted.exit_code(), 1);
        let taken = StartError::Listen {
            addr: "127.0.0.1:8080".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(taken.exit_code(), 1);
        assert!(taken
            .to_string()
            .starts_with("cannot listen on 127.0.0.1:8080: "));
    }
}
