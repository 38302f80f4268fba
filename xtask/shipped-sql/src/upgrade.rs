//! The upgrade-script generator (`make upgrade-script`) and the facts the upgrade test needs.
//!
//! An upgrade script `sql/generated/stripe_billing--FROM--TO.sql` is assembled from three parts,
//! so that only changes to state are written by hand:
//! 1. the hand-written `sql/upgrades/FROM--TO.sql` up to its `-- @replay` line (renames,
//!    new tables and columns, dropped objects, changed signatures); a state file that is new in
//!    TO is not copied there but named on an `-- @include sql/<file>` line, which stands for it;
//! 2. every function written in Rust, as `CREATE OR REPLACE FUNCTION`, taken from the install
//!    script pgrx generated for TO, followed by every `code` file of `sql/manifest.txt`;
//! 3. the rest of the hand-written file (state that needs the new functions: policies, triggers).
//!
//! Only the script of the version in development is ever generated: it goes from the newest
//! released version (the newest install script in `sql/releases/`) to the workspace
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
    let rel = format!("sql/upgrades/{from}--{to}.sql");
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

/// The repository root (this crate lives in `xtask/shipped-sql/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask/shipped-sql/ has a grandparent")
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

/// Released versions, oldest first: those with an install script in `sql/releases/`.
pub fn released_versions(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("sql/releases");
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
        .ok_or("no released version in sql/releases")?;
    let current = current_version();
    Ok((newest != current).then(|| (newest.clone(), current.to_string())))
}

/// Path of the shipped upgrade script from `from` to `to`.
pub fn script_path(root: &Path, from: &str, to: &str) -> PathBuf {
    root.join(format!("sql/generated/{EXTENSION}--{from}--{to}.sql"))
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
         -- sql/upgrades/{from}--{to}.sql, the functions written in Rust and the code files of\n\
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
        std::fs::create_dir_all(root.join("sql/upgrades")).unwrap();
        std::fs::write(root.join("sql/new.sql"), "CREATE TABLE t ();\n\n").unwrap();
        let manual = "-- before\n-- @include sql/new.sql\n-- @replay\n";
        let path = root.join("sql/upgrades/1--2.sql");
        std::fs::write(&path, format!("{manual}-- @include sql/gone.sql\n")).unwrap();
        let refused = manual_part(&root, "1", "2").unwrap_err();
        assert!(refused.contains("cannot include sql/gone.sql"), "{refused}");
        std::fs::write(&path, manual).unwrap();
        let (rel, text) = manual_part(&root, "1", "2").unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(rel, "sql/upgrades/1--2.sql");
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
