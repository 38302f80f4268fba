//! `make supabase-sql`: writes the pure-SQL edition's migrations (see
//! `stripe_billing_tests::pure_sql`) under `supabase/`. Needs no PostgreSQL.
use std::process::ExitCode;

fn main() -> ExitCode {
    let generated = match stripe_billing_tests::pure_sql::generate_current() {
        Ok(generated) => generated,
        Err(e) => {
            eprintln!("supabase-sql: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (path, text) in generated {
        if let Some(dir) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("supabase-sql: cannot create {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("supabase-sql: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
