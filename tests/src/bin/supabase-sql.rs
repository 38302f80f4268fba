//! `make supabase-sql`: writes the pure-SQL edition's migrations (see
//! `stripe_billing_tests::pure_sql`) under `supabase/`. Needs no PostgreSQL.
use std::process::ExitCode;

use stripe_billing_tests::{pure_sql, upgrade};

fn main() -> ExitCode {
    let written = pure_sql::generate_current().and_then(|generated| {
        generated
            .iter()
            .try_for_each(|(path, text)| upgrade::write_generated(path, text))
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supabase-sql: {e}");
            ExitCode::FAILURE
        }
    }
}
