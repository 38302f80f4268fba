//! `make upgrade-script`: writes the upgrade script of the version in development (see
//! `stripe_billing_tests::upgrade`), and the pure-SQL edition's migrations, which the same
//! sources make (see `stripe_billing_tests::pure_sql`), so that one command after a change to
//! `sql/` refreshes every generated file. Needs the current extension installed (`make install`).
use std::process::ExitCode;

use stripe_billing_tests::upgrade::write_generated as write;

fn run() -> Result<(), String> {
    match stripe_billing_tests::upgrade::generate_development_script()? {
        Some((path, text)) => write(&path, &text)?,
        None => println!("the current version is released; no upgrade script to generate"),
    }
    for (path, text) in stripe_billing_tests::pure_sql::generate_current()? {
        write(&path, &text)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upgrade-script: {e}");
            ExitCode::FAILURE
        }
    }
}
