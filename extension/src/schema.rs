//! The schema SQL in `sql/`, included in dependency order. Tables come first; access control
//! runs last so that it sees every object.
use pgrx::prelude::*;

extension_sql_file!("../../sql/01_tables.sql", name = "tables", bootstrap);
extension_sql_file!(
    "../../sql/02_identity.sql",
    name = "identity",
    requires = ["tables"]
);
extension_sql_file!(
    "../../sql/03_ledger.sql",
    name = "ledger",
    requires = ["identity"]
);
extension_sql_file!(
    "../../sql/04_requests.sql",
    name = "requests",
    requires = ["ledger"]
);
extension_sql_file!(
    "../../sql/05_webhooks.sql",
    name = "webhooks",
    requires = ["requests"]
);
extension_sql_file!("../../sql/06_security.sql", name = "security", finalize);
