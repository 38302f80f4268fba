//! `make upgrade-script`: writes the upgrade script of the version in development (see
//! `stripe_billing_tests::upgrade`). Needs the current extension installed (`make install`).
use std::process::ExitCode;

fn main() -> ExitCode {
    match stripe_billing_tests::upgrade::generate_development_script() {
        Ok(Some((path, text))) => match std::fs::write(&path, text) {
            Ok(()) => {
                println!("wrote {}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("upgrade-script: cannot write {}: {e}", path.display());
                ExitCode::FAILURE
            }
        },
        Ok(None) => {
            println!("the current version is released; no upgrade script to generate");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upgrade-script: {e}");
            ExitCode::FAILURE
        }
    }
}
