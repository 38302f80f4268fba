//! The upgrade-script generator (`make upgrade-script`) and the facts the upgrade test needs.
//!
//! An upgrade script `sql/upgrades/stripe_billing--FROM--TO.sql` is assembled from three parts,
//! so that only changes to state are written by hand:
//! 1. the hand-written `sql/upgrades/manual/FROM--TO.sql` up to its `-- @replay` line (renames,
//!    new tables and columns, dropped objects, changed signatures); a state file that is new in
//!    TO is not copied there but named on an `-- @include sql/<file>` line, which stands for it;
//! 2. every function written in Rust, as `CREATE OR REPLACE FUNCTION`, taken from the install
//!    script pgrx generated for TO, followed by every `code` file of `sql/manifest.txt`;
//! 3. the rest of the hand-written file (state that needs the new functions: policies, triggers).
//!
//! Only the script of the version in development is ever generated: it goes from the newest
//! released version (the newest install script in `sql/upgrades/history/`) to the workspace
//! version. Released scripts are history and are never rewritten.
use std::path::{Path, PathBuf};

/// The extension's name, as in its control file.
pub const EXTENSION: &str = "stripe_billing";

/// The line of a hand-written part where the replayed code goes.
pub const REPLAY_MARKER: &str = "-- @replay";

/// The line of a hand-written part that stands for a whole state file new in the release.
pub const INCLUDE_MARKER: &str = "-- @include ";

/// The hand-written part of the upgrade from `from` to `to` (its path from the root, and its
/// text with every `-- @include` line replaced by the file it names).
pub fn manual_part(root: &Path, from: &str, to: &str) -> Result<(String, String), String> {
    let rel = format!("sql/upgrades/manual/{from}--{to}.sql");
    let text =
        std::fs::read_to_string(root.join(&rel)).map_err(|e| format!("cannot read {rel}: {e}"))?;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.strip_prefix(INCLUDE_MARKER) {
            Some(file) => {
                let included = std::fs::read_to_string(root.join(file.trim()))
                    .map_err(|e| format!("{rel}: cannot include {}: {e}", file.trim()))?;
                out.push_str(&format!("-- {}\n", file.trim()));
                out.push_str(included.trim_end());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok((rel, out))
}

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The version being developed: the workspace version, which pgrx also uses for the extension.
pub fn current_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A line of `sql/manifest.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaFile {
    /// `state` (runs once) or `code` (replayed by every upgrade).
    pub replayed: bool,
    /// Relative to `sql/`.
    pub path: String,
}

/// The schema files in install order.
pub fn manifest(root: &Path) -> Result<Vec<SchemaFile>, String> {
    let path = root.join("sql/manifest.txt");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_once(char::is_whitespace) {
            Some(("state", p)) => Ok(SchemaFile {
                replayed: false,
                path: p.trim().to_string(),
            }),
            Some(("code", p)) => Ok(SchemaFile {
                replayed: true,
                path: p.trim().to_string(),
            }),
            _ => Err(format!(
                "manifest line {line:?}: expected `state|code PATH`"
            )),
        })
        .collect()
}

/// Released versions, oldest first: those with an install script in `sql/upgrades/history/`.
pub fn released_versions(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("sql/upgrades/history");
    let entries =
        std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut versions: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name
                .strip_prefix(&format!("{EXTENSION}--"))?
                .strip_suffix(".sql")?;
            (!version.contains("--")).then(|| version.to_string())
        })
        .collect();
    versions.sort_by_key(|v| version_key(v));
    Ok(versions)
}

/// A version as numbers, so versions sort numerically (0.10.0 after 0.9.1).
pub fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The upgrade script the current version needs, as (from, to); None when the current version
/// is itself released.
pub fn development_step(root: &Path) -> Result<Option<(String, String)>, String> {
    let released = released_versions(root)?;
    let newest = released
        .last()
        .ok_or("no released version in sql/upgrades/history")?;
    let current = current_version();
    Ok((newest != current).then(|| (newest.clone(), current.to_string())))
}

/// Path of the shipped upgrade script from `from` to `to`.
pub fn script_path(root: &Path, from: &str, to: &str) -> PathBuf {
    root.join(format!("sql/upgrades/{EXTENSION}--{from}--{to}.sql"))
}

/// The functions written in Rust, from a pgrx-generated install script, each made a
/// `CREATE OR REPLACE FUNCTION`. pgrx wraps every object in begin/end markers; a Rust
/// function is the one whose language is C.
pub fn rust_functions(install_script: &str) -> Vec<String> {
    const BEGIN: &str = "/* <begin connected objects> */";
    const END: &str = "/* </end connected objects> */";
    install_script
        .split(BEGIN)
        .filter_map(|chunk| chunk.split(END).next())
        .filter(|block| block.contains("LANGUAGE c /* Rust */"))
        .map(|block| {
            block
                .trim()
                .replacen("CREATE  FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
                .replacen("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        })
        .collect()
}

/// Assembles the upgrade script from `from` to `to`; `install_script` is pgrx's install script
/// of `to` (the source of the Rust functions).
pub fn generate(root: &Path, from: &str, to: &str, install_script: &str) -> Result<String, String> {
    let (manual_rel, manual) = manual_part(root, from, to)?;
    let (before, after) = manual
        .split_once(&format!("{REPLAY_MARKER}\n"))
        .ok_or_else(|| format!("{manual_rel} has no {REPLAY_MARKER:?} line"))?;
    let rust = rust_functions(install_script);
    if rust.is_empty() {
        return Err("the install script holds no functions written in Rust".into());
    }
    let mut out = format!(
        "-- {EXTENSION} {from} -> {to}. Generated by `make upgrade-script` from\n\
         -- sql/upgrades/manual/{from}--{to}.sql, the functions written in Rust and the code files of\n\
         -- sql/manifest.txt. Do not edit: change the sources and generate it again. Once {to} is\n\
         -- released this file is history and never changes.\n\
         \\echo Use \"ALTER EXTENSION {EXTENSION} UPDATE TO '{to}'\" to load this file. \\quit\n\n"
    );
    out.push_str(before.trim_end());
    out.push_str("\n\n-- Functions written in Rust.\n");
    for f in &rust {
        out.push_str(f);
        out.push_str("\n\n");
    }
    for file in manifest(root)?.iter().filter(|f| f.replayed) {
        let path = root.join("sql").join(&file.path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        out.push_str(&format!("-- sql/{}\n", file.path));
        out.push_str(text.trim_end());
        out.push_str("\n\n");
    }
    let after = after.trim();
    if !after.is_empty() {
        out.push_str("-- State that needs the functions above.\n");
        out.push_str(after);
        out.push('\n');
    }
    Ok(out.trim_end().to_string() + "\n")
}

/// Writes a generated file, creating its directory, and says so.
pub fn write_generated(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The directory pgrx installs extension scripts into, from `pg_config --sharedir`.
pub fn installed_extension_dir(pg_config: &str) -> Result<PathBuf, String> {
    let out = std::process::Command::new(pg_config)
        .arg("--sharedir")
        .output()
        .map_err(|e| format!("cannot run {pg_config}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{pg_config} --sharedir failed"));
    }
    let share = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&share).join("extension"))
}

/// The pg_config the Makefile uses, unless `PG_CONFIG` says otherwise.
pub fn pg_config() -> String {
    std::env::var("PG_CONFIG").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into())
}

/// The development step's script as the current sources and installed extension generate it:
/// (path of the committed file, generated text). None when the current version is released.
pub fn generate_development_script() -> Result<Option<(PathBuf, String)>, String> {
    let root = repo_root();
    let Some((from, to)) = development_step(&root)? else {
        return Ok(None);
    };
    let install = installed_extension_dir(&pg_config())?.join(format!("{EXTENSION}--{to}.sql"));
    let install_script = std::fs::read_to_string(&install).map_err(|e| {
        format!(
            "cannot read {} ({e}): run `make install` first",
            install.display()
        )
    })?;
    let text = generate(&root, &from, &to, &install_script)?;
    Ok(Some((script_path(&root, &from, &to), text)))
}

/// One line per catalog fact about the extension's objects (tables, columns in order, constraints,
/// indexes, triggers, policies, views, functions with their bodies and settings, types,
/// comments, privileges (as sets: their order in an ACL means nothing), extension membership,
/// pg_dump registration), sorted. Two installs are the same schema when their snapshots are equal.
pub const CATALOG_SNAPSHOT: &str = r#"
WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'billing'),
rels AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns))
SELECT line FROM (
    SELECT format('relation %s kind=%s rls=%s force=%s options=%s acl=%s', r.relname, r.relkind,
                  r.relrowsecurity, r.relforcerowsecurity, r.reloptions,
                  (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(r.relacl) x)) AS line
    FROM rels r
    UNION ALL
    SELECT format('column %s.%s #%s %s notnull=%s default=%s identity=%s generated=%s compression=%s acl=%s',
                  r.relname, a.attname, row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum),
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                  a.attidentity, a.attgenerated, a.attcompression,
                  (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(a.attacl) x))
    FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    UNION ALL
    SELECT format('constraint %s.%s %s', r.relname, co.conname, pg_get_constraintdef(co.oid))
    FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid)) FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('policy %s.%s cmd=%s roles=%s using=%s check=%s permissive=%s', p.tablename, p.policyname,
                  p.cmd, p.roles, p.qual, p.with_check, p.permissive)
    FROM pg_policies p WHERE p.schemaname = 'billing'
    UNION ALL
    SELECT format('view %s %s', r.relname, pg_get_viewdef(r.oid)) FROM rels r WHERE r.relkind = 'v'
    UNION ALL
    SELECT format(E'function %s returns %s lang=%s volatility=%s strict=%s secdef=%s parallel=%s config=%s args=%s acl=%s body:\n%s',
                  p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname, p.provolatile, p.proisstrict,
                  p.prosecdef, p.proparallel, p.proconfig, pg_get_function_arguments(p.oid),
                  (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(p.proacl) x),
                  p.prosrc)
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang WHERE p.pronamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('type %s type=%s', t.typname, t.typtype) FROM pg_type t
    WHERE t.typnamespace = (SELECT oid FROM ns) AND t.typtype <> 'b'
      AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')
    UNION ALL
    SELECT format('enum %s %s %s', t.typname, e.enumsortorder, e.enumlabel)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid WHERE t.typnamespace = (SELECT oid FROM ns)
    UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_description d
    WHERE (pg_identify_object(d.classoid, d.objoid, d.objsubid)).schema = 'billing'
    UNION ALL
    SELECT format('member %s', pg_describe_object(d.classid, d.objid, d.objsubid))
    FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
    WHERE d.refclassid = 'pg_extension'::regclass AND e.extname = 'stripe_billing' AND d.deptype = 'e'
    UNION ALL
    SELECT format('pg_dump keeps %s where %s', c::regclass, cond)
    FROM pg_extension e, unnest(e.extconfig::regclass[], e.extcondition) AS u(c, cond)
    WHERE e.extname = 'stripe_billing'
    UNION ALL
    SELECT format('event trigger %s on %s tags %s runs %s enabled=%s', e.evtname, e.evtevent, e.evttags,
                  e.evtfoid::regprocedure, e.evtenabled)
    FROM pg_event_trigger e WHERE e.evtfoid IN (SELECT oid FROM pg_proc WHERE pronamespace = (SELECT oid FROM ns))
    UNION ALL
    SELECT format('schema billing acl=%s', (SELECT array_agg(x::text ORDER BY x::text) FROM unnest(n.nspacl) x)) FROM pg_namespace n WHERE n.nspname = 'billing'
) facts ORDER BY line
"#;

/// The catalog snapshot of the database `client` is connected to.
pub async fn catalog_snapshot(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(CATALOG_SNAPSHOT, &[])
        .await
        .expect("catalog snapshot query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// What differs between two snapshots: lines only in `left`, then lines only in `right`.
pub fn snapshot_diff(left: &[String], right: &[String]) -> (Vec<String>, Vec<String>) {
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        let set: std::collections::HashSet<&String> = b.iter().collect();
        a.iter().filter(|l| !set.contains(l)).cloned().collect()
    };
    (only(left, right), only(right, left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_functions_are_picked_from_the_pgrx_script() {
        let script = "/* <begin connected objects> */\n-- bootstrap\nCREATE TABLE t ();\n/* </end connected objects> */\n\
            /* <begin connected objects> */\n-- extension/src/event.rs:10\nCREATE  FUNCTION billing.\"_f\"(\"a\" TEXT) RETURNS bool\n\
            LANGUAGE c /* Rust */\nAS 'MODULE_PATHNAME', 'f_wrapper';\n/* </end connected objects> */\n";
        let found = rust_functions(script);
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with(
            "-- extension/src/event.rs:10\nCREATE OR REPLACE FUNCTION billing.\"_f\""
        ));
        assert!(found[0].ends_with("AS 'MODULE_PATHNAME', 'f_wrapper';"));
    }

    #[test]
    fn the_manifest_parses_and_names_existing_files() {
        let root = repo_root();
        let files = manifest(&root).unwrap();
        assert!(files.len() > 10);
        for f in &files {
            assert!(root.join("sql").join(&f.path).is_file(), "{}", f.path);
        }
        assert!(files.iter().any(|f| f.replayed) && files.iter().any(|f| !f.replayed));
    }

    #[test]
    fn include_lines_stand_for_the_files_they_name() {
        let root = std::env::temp_dir().join(format!("manual-part-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sql/upgrades/manual")).unwrap();
        std::fs::write(root.join("sql/new.sql"), "CREATE TABLE t ();\n\n").unwrap();
        let manual = "-- before\n-- @include sql/new.sql\n-- @replay\n";
        let path = root.join("sql/upgrades/manual/1--2.sql");
        std::fs::write(&path, format!("{manual}-- @include sql/gone.sql\n")).unwrap();
        let refused = manual_part(&root, "1", "2").unwrap_err();
        assert!(refused.contains("cannot include sql/gone.sql"), "{refused}");
        std::fs::write(&path, manual).unwrap();
        let (rel, text) = manual_part(&root, "1", "2").unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(rel, "sql/upgrades/manual/1--2.sql");
        assert_eq!(
            text,
            "-- before\n-- sql/new.sql\nCREATE TABLE t ();\n-- @replay\n"
        );
    }

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec!["0.10.0", "0.2.0", "0.9.1"];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(v, ["0.2.0", "0.9.1", "0.10.0"]);
    }
}
