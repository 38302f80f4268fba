//! `upgrade-script` (`make upgrade-script`): writes the upgrade script of the version in
//! development (see `shipped_sql::upgrade`), and the pure-SQL edition's migrations, which the
//! same sources make (see `shipped_sql::pure_sql`), so that one command after a change to `sql/`
//! refreshes every generated file. Needs the current extension installed (`make install`).
use shipped_sql::upgrade::write_generated as write;

pub fn run() -> Result<(), String> {
    match shipped_sql::upgrade::generate_development_script()? {
        Some((path, text)) => write(&path, &text)?,
        None => println!("the current version is released; no upgrade script to generate"),
    }
    for (path, text) in shipped_sql::pure_sql::generate_current()? {
        write(&path, &text)?;
    }
    Ok(())
}
