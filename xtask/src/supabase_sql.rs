//! `supabase-sql` (`make supabase-sql`): writes the pure-SQL edition's migrations (see
//! `shipped_sql::pure_sql`) under `supabase/`. Needs no PostgreSQL.
use shipped_sql::{pure_sql, upgrade};

pub fn run() -> Result<(), String> {
    pure_sql::generate_current()?
        .iter()
        .try_for_each(|(path, text)| upgrade::write_generated(path, text))
}
