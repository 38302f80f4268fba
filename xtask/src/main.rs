//! stripe_billing's developer commands, one binary so that tools are not built from the test
//! crate: `cargo run -p xtask -- <command>`. The Makefile's targets of the same names call it.
//!
//! - `upgrade-script`: the generated SQL files, the extension's upgrade script included (needs
//!   the current extension installed).
//! - `supabase-sql`: the pure-SQL edition's migrations only (needs no PostgreSQL).
//! - `sql-reference`: docs/sql-reference.md from the schema's `COMMENT ON`s (needs no PostgreSQL).
//! - `bench [NAME…]`: the benchmarks (signature, ledger, webhook, worker, renewal, api, history, entitlements; none
//!   runs all), on the cluster `scripts/bench.sh` starts; run through `make bench`.
use std::process::ExitCode;

mod bench;
mod supabase_sql;
mod upgrade_script;

const USAGE: &str = "usage: xtask upgrade-script | supabase-sql | sql-reference | bench [NAME…]";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let done = match command.as_str() {
        "upgrade-script" => upgrade_script::run(),
        "supabase-sql" => supabase_sql::run(),
        "sql-reference" => shipped_sql::sql_reference::generate_current()
            .and_then(|(path, text)| shipped_sql::upgrade::write_generated(&path, &text)),
        "bench" => {
            let which: Vec<String> = args.collect();
            tokio::runtime::Runtime::new()
                .map_err(|e| format!("cannot start the runtime: {e}"))
                .map(|runtime| runtime.block_on(bench::main(&which)))
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
