//! The generated SQL that ships, assembled from `sql/` (see `sql/README.md`): the extension's
//! upgrade script of the version in development (`upgrade`) and the pure-SQL edition's
//! migrations (`pure_sql`). One implementation for both users: `cargo run -p xtask` writes the
//! files, and the tests check that the committed files are what it would write and install the
//! pure-SQL edition from it.

pub mod pure_sql;
pub mod sql_reference;
pub mod upgrade;
