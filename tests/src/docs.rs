//! The README and `docs/*.md` as the tests read them: their fenced blocks with the marker that
//! says how each is run, and the transcripts (commands with the output they print) the tests
//! compare with a real run.
//!
//! Markers, an HTML comment within the three lines above a block:
//!
//! ```text
//! <!-- readme-test: … -->               a ```sql block run by tests/tests/readme.rs
//! <!-- doctor-output: NAME -->           `stripe-billing-worker doctor`'s output (doctor.rs)
//! <!-- docs-test: transcript NAME -->    commands and output, compared with a real run by the
//!                                        test that calls `assert_transcript(NAME, …)`
//! <!-- docs-test: run NAME -->           commands the test that calls `script(NAME)` runs
//! <!-- docs-test: file PATH -->          the content of a file of the repository, verbatim
//! <!-- docs-test: skip: WHY -->          not run (say why)
//! ```
//!
//! In expected output `…` matches any text within a line, and a line that is only `…` any
//! number of lines.

use std::path::{Path, PathBuf};

/// Where the documentation is: the repository root.
pub fn root() -> PathBuf {
    shipped_sql::upgrade::repo_root()
}

/// The docs in the order a reader follows them, which is the order their SQL examples run in
/// (each continues the state the previous one left). Other `docs/*.md` follow, by name.
pub const ORDER: &[&str] = &[
    "docs/install.md",
    "docs/supabase.md",
    "docs/configuration.md",
    "docs/tokens.md",
    "docs/worker.md",
    "docs/app.md",
    "docs/teams.md",
    "docs/events-and-refunds.md",
    "docs/operations.md",
    "docs/upgrading.md",
    "docs/errors.md",
    "docs/local-testing.md",
    "docs/benchmarks.md",
    "docs/sql-reference.md",
];

/// `docs/*.md` in reading order (see [`ORDER`]), relative to the root.
pub fn doc_files() -> Vec<String> {
    let mut files: Vec<String> = ORDER
        .iter()
        .filter(|f| root().join(f).exists())
        .map(|f| f.to_string())
        .collect();
    let mut others: Vec<String> = std::fs::read_dir(root().join("docs"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
                .filter(|f| f.ends_with(".md") && !files.contains(f))
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    files.extend(others);
    files
}

/// README.md and every `docs/*.md`, relative to the root.
pub fn all_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    files.extend(doc_files());
    files
}

/// A fenced block of a Markdown file.
#[derive(Clone, Debug)]
pub struct Fence {
    pub file: String,
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The info string: `sql`, `sh`, `text`, … (empty when none).
    pub lang: String,
    /// The marker comment's inside (`readme-test: owner`), when one stands above the block.
    pub marker: Option<String>,
    pub body: String,
}

/// The fenced blocks of `file` (relative to the root).
pub fn fences(file: &str) -> Vec<Fence> {
    let text = std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
    fences_of(file, &text)
}

fn fences_of(file: &str, text: &str) -> Vec<Fence> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let marker = lines[i.saturating_sub(3)..i].iter().rev().find_map(|l| {
            l.trim()
                .strip_prefix("<!--")
                .and_then(|m| m.strip_suffix("-->"))
                .map(|m| m.trim().to_string())
        });
        let end = i
            + 1
            + lines[i + 1..]
                .iter()
                .position(|l| l.starts_with("```"))
                .unwrap_or_else(|| panic!("{file}:{}: a block that is never closed", i + 1));
        out.push(Fence {
            file: file.to_string(),
            line: i + 1,
            lang: lang.trim().to_string(),
            marker,
            body: lines[i + 1..end].iter().map(|l| format!("{l}\n")).collect(),
        });
        i = end + 1;
    }
    out
}

/// The block marked `docs-test: transcript NAME`, in whichever file holds it.
pub fn transcript(name: &str) -> Fence {
    marked(&format!("docs-test: transcript {name}"))
}

/// The block marked `docs-test: run NAME`: commands a test runs as they are written.
pub fn script(name: &str) -> Fence {
    marked(&format!("docs-test: run {name}"))
}

fn marked(want: &str) -> Fence {
    let found: Vec<Fence> = all_files()
        .iter()
        .flat_map(|f| fences(f))
        .filter(|f| f.marker.as_deref() == Some(want))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one block is marked <!-- {want} --> (found {})",
        found.len()
    );
    found.into_iter().next().unwrap()
}

/// Asserts that `actual` is what the transcript NAME shows.
pub fn assert_transcript(name: &str, actual: &str) {
    let shown = transcript(name);
    let pattern: Vec<&str> = shown.body.lines().collect();
    let real: Vec<&str> = actual.lines().collect();
    assert!(
        lines_match(&pattern, &real),
        "{}:{}: the transcript {name:?} differs from a real run:\n--- shown\n{}--- real\n{}",
        shown.file,
        shown.line,
        shown.body,
        actual
    );
}

/// Whether `actual` matches `pattern`, where `…` stands for any text.
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let Some((first, rest)) = parts.split_first() else {
        return true;
    };
    let Some(mut left) = actual.strip_prefix(first) else {
        return false;
    };
    if rest.is_empty() {
        return left.is_empty();
    }
    for (i, part) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return left.ends_with(part);
        }
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the lines match, a pattern line that is only `…` standing for any number of lines.
pub fn lines_match(pattern: &[&str], actual: &[&str]) -> bool {
    match pattern.split_first() {
        None => actual.is_empty(),
        Some((p, rest)) if p.trim() == "…" => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((p, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| line_matches(p, a) && lines_match(rest, more)),
    }
}

/// The path of a file named by a `docs-test: file PATH` marker.
pub fn repo_path(path: &str) -> PathBuf {
    Path::new(&root()).join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipses_match_text_and_lines() {
        assert!(line_matches("a…c", "abbbc"));
        assert!(line_matches("…", ""));
        assert!(!line_matches("a…c", "abd"));
        assert!(!line_matches("abc", "abcd"));
        assert!(lines_match(&["a", "…", "d"], &["a", "b", "c", "d"]));
        assert!(lines_match(&["a", "…", "d"], &["a", "d"]));
        assert!(!lines_match(&["a", "…", "d"], &["a", "b"]));
        assert!(!lines_match(&["a"], &["a", "b"]));
    }

    #[test]
    fn markers_are_read_from_the_lines_above() {
        let text = "x\n<!-- docs-test: skip: why -->\n```sh\necho\n```\n\n```text\nplain\n```\n";
        let f = fences_of("t.md", text);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].marker.as_deref(), Some("docs-test: skip: why"));
        assert_eq!(f[0].lang, "sh");
        assert_eq!(f[0].body, "echo\n");
        assert_eq!(f[1].marker, None);
    }
}
