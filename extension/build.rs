//! Turns `sql/manifest.txt` into one `extension_sql_file!` per schema file, chained in the
//! manifest's order: the first is the bootstrap, the last the finalize step (it runs after the
//! functions written in Rust exist). The manifest is the single list of schema files, shared
//! with the upgrade-script generator.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let sql_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    let manifest = sql_dir.join("manifest.txt");
    println!("cargo:rerun-if-changed={}", manifest.display());
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", manifest.display()));
    let files: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (kind, path) = line
                .split_once(char::is_whitespace)
                .unwrap_or_else(|| panic!("manifest line {line:?}: expected `state|code PATH`"));
            assert!(
                matches!(kind, "state" | "code"),
                "manifest line {line:?}: kind must be state or code"
            );
            let path = sql_dir.join(path.trim());
            assert!(
                path.is_file(),
                "manifest names a missing file: {}",
                path.display()
            );
            path.canonicalize().expect("canonical path")
        })
        .collect();
    assert!(files.len() >= 2, "the manifest lists fewer than two files");
    let mut out = String::new();
    let mut previous: Option<String> = None;
    for (i, path) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path
            .strip_prefix(sql_dir.canonicalize().expect("sql dir"))
            .expect("inside sql/");
        let name = rel
            .with_extension("")
            .to_string_lossy()
            .replace(['/', '.', '-'], "_");
        let position = if i == 0 {
            "bootstrap".to_string()
        } else if i == files.len() - 1 {
            "finalize".to_string()
        } else {
            format!(
                "requires = [{:?}]",
                previous.as_deref().expect("a previous file")
            )
        };
        writeln!(
            out,
            "::pgrx::extension_sql_file!({:?}, name = {name:?}, {position});",
            path.to_string_lossy()
        )
        .expect("write to string");
        previous = Some(name);
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("schema_files.rs");
    std::fs::write(&dest, out).expect("write schema_files.rs");
}
