//! A string that must never reach a log: the Stripe secret key and the database URL (which
//! may carry a password). `Args` and `Config` derive `Debug`; wrapping the values here makes
//! that derive safe, including for fields added later.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// Key prefixes whose mode (test or live) is worth showing: it tells an operator which
/// account the worker talks to without revealing anything usable.
const SHOWN_PREFIXES: [&str; 4] = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"];

/// The wrapped value is reachable only through [`Secret::expose`], so every use is explicit.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SHOWN_PREFIXES.iter().find(|p| self.0.starts_with(*p)) {
            Some(prefix) => write!(f, "\"{prefix}…(redacted)\""),
            None => f.write_str("<set>"),
        }
    }
}

/// For clap, which parses flags with `FromStr`.
impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Secret, Infallible> {
        Ok(Secret(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_at_most_the_mode() {
        let key = Secret("sk_test_51HxYzSECRETPART".into());
        assert_eq!(format!("{key:?}"), "\"sk_test_…(redacted)\"");
        assert_eq!(key.expose(), "sk_test_51HxYzSECRETPART");
        let other = Secret("postgres://u:hunter2@h/db".into());
        assert_eq!(format!("{other:?}"), "<set>");
        assert_eq!(format!("{:?}", Some(other)), "Some(<set>)");
        // A value that is nothing but a prefix still shows nothing more than the prefix.
        assert_eq!(format!("{:?}", Secret("sk".into())), "<set>");
    }
}
