//! The pure-SQL edition (`make supabase-sql`): one migration file for databases that cannot load
//! a compiled extension, such as hosted Supabase (DESIGN.md, "Two editions").
//!
//! It is assembled from the sources the extension is built from, so the two editions cannot
//! drift apart:
//! 1. a guard that refuses a database where it does not fit (the extension, another version,
//!    a foreign schema `billing`, pgcrypto outside schema `extensions`), then `CREATE SCHEMA`;
//! 2. every file of `sql/manifest.txt` in order, with what only an extension can do taken out
//!    (`pg_extension_config_dump`: plain tables are dumped anyway) or made optional (the event
//!    trigger, which needs a superuser or Supabase's supautils);
//! 3. the PL/pgSQL twins of the functions written in Rust (`sql/editions/pure/*.sql`), where
//!    pgrx puts the Rust functions: right before the last manifest file;
//! 4. the edition and version recorded in `billing.installation`.
//!
//! An upgrade migration is made the same way as the extension's upgrade script (see
//! [`crate::upgrade`]): the hand-written `sql/upgrades/FROM--TO.sql` around a replay of
//! the twins and every `code` file, between a guard on the installed version and the update of
//! `billing.installation`.
use std::path::{Path, PathBuf};

use crate::upgrade::{manifest, manual_part, REPLAY_MARKER};

/// What `billing.installation.edition` says.
pub const EDITION: &str = "pure-sql";

/// The first release that has a pure-SQL edition: no upgrade migration starts before it.
pub const FIRST_VERSION: &str = "0.2.0";

/// Where the generated migrations are committed: users without a Rust toolchain take them from
/// the repository.
pub fn migrations_dir(root: &Path) -> PathBuf {
    root.join("supabase")
}

/// Path of the install migration of `version`.
pub fn install_path(root: &Path, version: &str) -> PathBuf {
    migrations_dir(root).join(format!("stripe_billing--{version}.sql"))
}

/// Path of the upgrade migration from `from` to `to`.
pub fn upgrade_path(root: &Path, from: &str, to: &str) -> PathBuf {
    migrations_dir(root).join(format!("stripe_billing--{from}--{to}.sql"))
}

/// The twins of the Rust functions, `sql/editions/pure/*.sql` in name order (each file stands
/// alone).
pub fn twin_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = root.join("sql/editions/pure");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{} holds no .sql files", dir.display()));
    }
    Ok(files)
}

/// The functions written in Rust in the extension, which `sql/editions/pure/*.sql` twins in PL/pgSQL.
pub const TWINS: [&str; 4] = [
    "stripe_signature_is_valid",
    "construct_event",
    "stripe_signature_header",
    "_verify_webhook_signature",
];

/// The functions `sql/editions/pure/*.sql` defines besides the twins themselves: the pure-SQL
/// edition's own helpers, which the extension does not have.
pub fn twin_helpers() -> Vec<String> {
    let root = crate::upgrade::repo_root();
    let mut helpers = Vec::new();
    for path in twin_files(&root).unwrap_or_default() {
        let text = read(&path).unwrap_or_default();
        for part in text.split("CREATE OR REPLACE FUNCTION billing.").skip(1) {
            let name = part.split('(').next().unwrap_or_default().to_string();
            if !TWINS.contains(&name.as_str()) && !helpers.contains(&name) {
                helpers.push(name);
            }
        }
    }
    helpers
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Extension SQL made fit for a plain schema. `origin` names the source in errors.
pub fn without_extension_constructs(sql: &str, origin: &str) -> Result<String, String> {
    for forbidden in [
        "@extschema@",
        "MODULE_PATHNAME",
        "ALTER EXTENSION",
        "CREATE EXTENSION",
    ] {
        if sql.contains(forbidden) {
            return Err(format!(
                "{origin} uses {forbidden}, which the pure-SQL edition cannot translate: teach xtask/shipped-sql/src/pure_sql.rs how"
            ));
        }
    }
    let mut out = String::with_capacity(sql.len());
    let mut lines = sql.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("SELECT pg_catalog.pg_extension_config_dump(") {
            if !trimmed.trim_end().ends_with(';') {
                return Err(format!(
                    "{origin}: pg_extension_config_dump must be a one-line statement"
                ));
            }
            continue;
        }
        if trimmed.starts_with("CREATE EVENT TRIGGER") {
            let mut statement = vec![line];
            while !statement.last().unwrap().trim_end().ends_with(';') {
                statement.push(lines.next().ok_or_else(|| {
                    format!("{origin}: CREATE EVENT TRIGGER without its closing ';'")
                })?);
            }
            out.push_str(&optional_event_trigger(&statement.join("\n")));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.contains("pg_extension_config_dump") {
        return Err(format!(
            "{origin}: pg_extension_config_dump is left in a form the generator does not remove"
        ));
    }
    Ok(out)
}

/// Creating an event trigger needs a superuser, or on Supabase a role that supautils lets create
/// them. Without either the install goes on, and billing.security_report() says what is missing.
fn optional_event_trigger(statement: &str) -> String {
    let indented: String = statement
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>();
    format!(
        "-- (pure-SQL edition) An event trigger needs a superuser, or Supabase's supautils; without\n\
         -- it the install goes on and billing.security_report() says what to do instead.\n\
         DO $event_trigger$\nBEGIN\n{indented}EXCEPTION WHEN insufficient_privilege THEN\n    \
         RAISE NOTICE 'stripe_billing: % (not created: %); see SELECT * FROM billing.security_report()',\n        \
         'event trigger billing_new_functions_private', SQLERRM;\nEND\n$event_trigger$;\n"
    )
}

fn header(title: &str, sources: &str) -> String {
    format!(
        "-- {title}\n\
         -- Generated by `make supabase-sql` from {sources}.\n\
         -- Do not edit: change the sources and generate it again.\n\
         -- Apply it once, as the role that will own schema billing (Supabase: postgres), in one\n\
         -- transaction: `supabase db push` does that for a file in supabase/migrations/, and psql\n\
         -- needs `psql -v ON_ERROR_STOP=1 --single-transaction -f <this file>`.\n\n"
    )
}

fn twins(root: &Path) -> Result<String, String> {
    let mut out =
        String::from("-- The functions the extension writes in Rust, as PL/pgSQL twins.\n");
    for path in twin_files(root)? {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        out.push_str(&format!("-- {rel}\n"));
        out.push_str(without_extension_constructs(&read(&path)?, &rel)?.trim_end());
        out.push_str("\n\n");
    }
    Ok(out)
}

/// The install migration of `version` from the sources under `root`.
pub fn install_script(root: &Path, version: &str) -> Result<String, String> {
    let files = manifest(root)?;
    let Some((last, rest)) = files.split_last() else {
        return Err("sql/manifest.txt lists no files".into());
    };
    let mut out = header(
        &format!("stripe_billing {version}, pure-SQL edition (no compiled extension needed)."),
        "sql/manifest.txt, sql/editions/pure/ and xtask/shipped-sql/src/pure_sql.rs",
    );
    out.push_str(&install_guard(version));
    out.push_str(INSTALLATION_TABLE);
    for file in rest {
        out.push_str(&schema_file(root, &file.path)?);
    }
    out.push_str(&twins(root)?);
    out.push_str(&schema_file(root, &last.path)?);
    out.push_str(&format!(
        "-- The edition and version, for the worker and for upgrade migrations.\n\
         INSERT INTO billing.installation (edition, version) VALUES ('{EDITION}', '{version}');\n\
         SELECT billing._protect_table('billing.installation', own_rows => false);\n"
    ));
    Ok(out)
}

fn schema_file(root: &Path, rel: &str) -> Result<String, String> {
    let origin = format!("sql/{rel}");
    let text = without_extension_constructs(&read(&root.join("sql").join(rel))?, &origin)?;
    Ok(format!("-- {origin}\n{}\n\n", text.trim_end()))
}

const INSTALLATION_TABLE: &str = "\
CREATE TABLE billing.installation (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    edition text NOT NULL CHECK (edition = 'pure-sql'),
    version text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now(),
    upgraded_at timestamptz
);
COMMENT ON TABLE billing.installation IS 'The pure-SQL edition''s one row: which edition and version of stripe_billing this schema is (the extension edition has pg_extension instead). Upgrade migrations check and update it.';
COMMENT ON COLUMN billing.installation.id IS 'Always true: keeps the table to one row.';
COMMENT ON COLUMN billing.installation.edition IS 'pure-sql: installed from the generated migration, not as an extension.';
COMMENT ON COLUMN billing.installation.version IS 'The stripe_billing version the schema is at.';
COMMENT ON COLUMN billing.installation.installed_at IS 'When the install migration ran.';
COMMENT ON COLUMN billing.installation.upgraded_at IS 'When the last upgrade migration ran; NULL before the first.';

";

/// Refuses a database the install migration does not fit, and provides pgcrypto.
fn install_guard(version: &str) -> String {
    format!(
        "DO $guard$
DECLARE
    installed record;
    pgcrypto_schema name;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'stripe_billing') THEN
        RAISE EXCEPTION 'stripe_billing is installed here as an extension; the pure-SQL edition cannot go beside it'
            USING ERRCODE = 'BL014', HINT = 'Upgrade the extension with ALTER EXTENSION stripe_billing UPDATE instead.';
    END IF;
    -- Stripe signs the UTF-8 bytes of the body, and hmac() reads text in the database's encoding.
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'the database encoding is %; stripe_billing needs UTF8', pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'BL014', HINT = 'Create the database with ENCODING ''UTF8'' (Supabase''s is).';
    END IF;
    IF pg_catalog.to_regclass('billing.installation') IS NOT NULL THEN
        EXECUTE 'SELECT edition, version FROM billing.installation' INTO installed;
        RAISE EXCEPTION 'stripe_billing % is already installed in schema billing; this migration installs {version}', installed.version
            USING ERRCODE = 'BL014',
                  HINT = 'Apply the upgrade migrations from the installed version instead (supabase/stripe_billing--<from>--<to>.sql).';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'billing') THEN
        RAISE EXCEPTION 'a schema billing exists that stripe_billing did not create'
            USING ERRCODE = 'BL014', HINT = 'Rename or drop it first.';
    END IF;
    -- Supabase keeps pgcrypto in schema extensions; elsewhere it is created there.
    SELECT n.nspname INTO pgcrypto_schema
    FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pgcrypto';
    IF pgcrypto_schema IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS extensions;
        CREATE EXTENSION pgcrypto WITH SCHEMA extensions;
    ELSIF pgcrypto_schema <> 'extensions' THEN
        RAISE EXCEPTION 'pgcrypto is installed in schema %, and stripe_billing calls extensions.hmac()', pgcrypto_schema
            USING ERRCODE = 'BL014', HINT = 'Move it with ALTER EXTENSION pgcrypto SET SCHEMA extensions (as on Supabase).';
    END IF;
END
$guard$;

CREATE SCHEMA billing;
COMMENT ON SCHEMA billing IS 'stripe_billing (pure-SQL edition): Stripe billing inside Postgres. See billing.installation for the version.';

"
    )
}

/// The upgrade migration from `from` to `to`, from `sql/upgrades/FROM--TO.sql` and the
/// code under `root`.
pub fn upgrade_script(root: &Path, from: &str, to: &str) -> Result<String, String> {
    let (manual_rel, manual) = manual_part(root, from, to)?;
    let manual = without_extension_constructs(&manual, &manual_rel)?;
    let (before, after) = manual
        .split_once(&format!("{REPLAY_MARKER}\n"))
        .ok_or_else(|| format!("{manual_rel} has no {REPLAY_MARKER:?} line"))?;
    let mut out = header(
        &format!("stripe_billing {from} -> {to}, pure-SQL edition."),
        &format!("{manual_rel}, sql/editions/pure/ and the code files of sql/manifest.txt"),
    );
    out.push_str(&upgrade_guard(from, to));
    out.push_str(before.trim_end());
    out.push_str("\n\n");
    out.push_str(&twins(root)?);
    for file in manifest(root)?.iter().filter(|f| f.replayed) {
        out.push_str(&schema_file(root, &file.path)?);
    }
    let after = after.trim();
    if !after.is_empty() {
        out.push_str("-- State that needs the functions above.\n");
        out.push_str(after);
        out.push_str("\n\n");
    }
    out.push_str(&format!(
        "UPDATE billing.installation SET version = '{to}', upgraded_at = now();\n"
    ));
    Ok(out)
}

fn upgrade_guard(from: &str, to: &str) -> String {
    format!(
        "DO $guard$
DECLARE
    installed record;
BEGIN
    IF pg_catalog.to_regclass('billing.installation') IS NULL THEN
        RAISE EXCEPTION 'no pure-SQL stripe_billing is installed here; this migration upgrades {from} to {to}'
            USING ERRCODE = 'BL014',
                  HINT = 'An extension install upgrades with ALTER EXTENSION stripe_billing UPDATE; a new one starts with the install migration.';
    END IF;
    EXECUTE 'SELECT edition, version FROM billing.installation' INTO installed;
    IF installed.version <> '{from}' THEN
        RAISE EXCEPTION 'stripe_billing % is installed; this migration upgrades {from} to {to}', installed.version
            USING ERRCODE = 'BL014', HINT = 'Apply the upgrade migrations in order, each once.';
    END IF;
END
$guard$;

"
    )
}

/// Every migration the current sources generate, as (path of the committed file, text): the
/// install migration of `version`, and the upgrade to it from `previous` (the newest released
/// version) when `previous` has a pure-SQL edition.
pub fn generate(
    root: &Path,
    previous: Option<&str>,
    version: &str,
) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = vec![(install_path(root, version), install_script(root, version)?)];
    if let Some(from) = previous.filter(|from| has_pure_edition(from) && *from != version) {
        out.push((
            upgrade_path(root, from, version),
            upgrade_script(root, from, version)?,
        ));
    }
    Ok(out)
}

/// Whether `version` was released with a pure-SQL edition.
pub fn has_pure_edition(version: &str) -> bool {
    crate::upgrade::version_key(version) >= crate::upgrade::version_key(FIRST_VERSION)
}

/// [`generate`] for this checkout: the workspace version and the newest released one.
pub fn generate_current() -> Result<Vec<(PathBuf, String)>, String> {
    let root = crate::upgrade::repo_root();
    let released = crate::upgrade::released_versions(&root)?;
    let previous = released.last().map(String::as_str);
    generate(&root, previous, crate::upgrade::current_version())
}

/// The current install migration's text, which the test harness applies.
pub fn current_install_script() -> String {
    install_script(
        &crate::upgrade::repo_root(),
        crate::upgrade::current_version(),
    )
    .unwrap_or_else(|e| panic!("cannot generate the pure-SQL migration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_only_statements_are_removed_or_made_optional() {
        let sql = "CREATE TABLE billing.t ();\nSELECT pg_catalog.pg_extension_config_dump('billing.t', '');\n\
                   CREATE EVENT TRIGGER e ON ddl_command_end\n    EXECUTE FUNCTION billing.f();\nSELECT 1;\n";
        let out = without_extension_constructs(sql, "test").unwrap();
        assert!(!out.contains("pg_extension_config_dump"), "{out}");
        assert!(out.starts_with("CREATE TABLE billing.t ();\n"), "{out}");
        assert!(out.contains("DO $event_trigger$\nBEGIN\n    CREATE EVENT TRIGGER e ON ddl_command_end\n        EXECUTE FUNCTION billing.f();\nEXCEPTION WHEN insufficient_privilege THEN"), "{out}");
        assert!(out.ends_with("SELECT 1;\n"), "{out}");
        let err = without_extension_constructs("SELECT '@extschema@';", "x.sql").unwrap_err();
        assert!(err.contains("x.sql uses @extschema@"), "{err}");
    }

    #[test]
    fn the_install_migration_has_every_schema_file_and_twin_in_order() {
        let root = crate::upgrade::repo_root();
        let script = install_script(&root, "0.2.0").unwrap();
        let mut last = 0;
        let files = manifest(&root).unwrap();
        for f in &files[..files.len() - 1] {
            let at = script
                .find(&format!("-- sql/{}\n", f.path))
                .unwrap_or_else(|| panic!("{} is missing", f.path));
            assert!(at > last, "{} is out of order", f.path);
            last = at;
        }
        let twins_at = script.find("-- sql/editions/pure/").unwrap();
        let finalize_at = script
            .find(&format!("-- sql/{}\n", files.last().unwrap().path))
            .unwrap();
        assert!(last < twins_at && twins_at < finalize_at);
        for forbidden in [
            "pg_extension_config_dump",
            "\\echo",
            "MODULE_PATHNAME",
            "LANGUAGE c ",
        ] {
            assert!(!script.contains(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn upgrades_exist_only_from_releases_with_a_pure_edition() {
        assert!(!has_pure_edition("0.1.0"));
        assert!(has_pure_edition("0.2.0"));
        assert!(has_pure_edition("0.10.0"));
        let root = crate::upgrade::repo_root();
        let made = generate(&root, Some("0.1.0"), "0.2.0").unwrap();
        assert_eq!(made.len(), 1, "no pure-SQL 0.1.0 ever existed");
        assert!(made[0].0.ends_with("supabase/stripe_billing--0.2.0.sql"));
    }
}
