//! Just enough reading of the SQL sources for the contract tests: the files, one statement, and
//! the string literals compared with something (`x IN ('a', 'b')`, `x = 'a'`, `x LIKE 'a.%'`,
//! `x ->> 'a'`, a call's or a list's literal argument), outside comments.

use std::fmt;
use std::path::{Path, PathBuf};

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

/// The text of `sql/<relative>`.
pub fn read_sql(relative: &str) -> String {
    let path = sql_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The folders of `sql/` that hold past versions' SQL, not the sources (see `sql/README.md`):
/// frozen releases, generated upgrade scripts, hand-written upgrade steps.
const NOT_SOURCES: [&str; 3] = ["releases", "generated", "upgrades"];

/// Every SQL source file as (path under `sql/`, text), sorted; none of [`NOT_SOURCES`].
pub fn sql_sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut dirs = vec![sql_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !NOT_SOURCES.iter().any(|d| path.ends_with(d)) {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "sql") {
                let relative = path.strip_prefix(sql_dir()).unwrap();
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    assert!(
        files.len() > 10,
        "no SQL sources under {}",
        sql_dir().display()
    );
    files
        .into_iter()
        .map(|f| (f.clone(), read_sql(&f)))
        .collect()
}

/// The text from `start` to the first `end` after it (both included).
pub fn statement<'a>(sql: &'a str, start: &str, end: &str) -> &'a str {
    let from = sql
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found"));
    let to = from
        + sql[from..]
            .find(end)
            .unwrap_or_else(|| panic!("no {end:?} after {start:?}"));
    &sql[from..to + end.len()]
}

/// String literals and what they are compared with or passed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Literals {
    /// The token before the operator: `e.error_code`, `'type'`, `billing._request_retrieval(`.
    pub subject: String,
    /// `IN` (also `NOT IN`), `=`, `<>`, `LIKE`, `->>`, `(` (first argument) or `,` (a later one).
    pub operator: String,
    /// The literals' values, unquoted.
    pub values: Vec<String>,
}

impl fmt::Display for Literals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|v| format!("'{}'", v.replace('\'', "''")))
            .collect();
        match self.operator.as_str() {
            "(" | "," => write!(f, "{} {}", self.subject, values.join(", ")),
            op => write!(f, "{} {op} ({})", self.subject, values.join(", ")),
        }
    }
}

/// `sql` without its `--` comments (a `--` inside a string literal stays).
pub fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_string = !in_string; // '' inside a literal toggles twice
        } else if c == '-' && !in_string && chars.peek() == Some(&'-') {
            while chars.peek().is_some_and(|&n| n != '\n') {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The literal starting at the quote `at`: its value and the index after its closing quote.
fn read_literal(text: &str, at: usize) -> (String, usize) {
    let b = text.as_bytes();
    let mut i = at + 1;
    loop {
        match b.get(i) {
            Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
            Some(b'\'') => return (text[at + 1..i].replace("''", "'"), i + 1),
            Some(_) => i += 1,
            None => panic!("unterminated literal at {at}"),
        }
    }
}

/// `'a', 'b')` from the quote `at`: the values and the index after `)`, or None when the list
/// holds anything but literals.
fn read_list(text: &str, mut at: usize) -> Option<(Vec<String>, usize)> {
    let mut values = Vec::new();
    loop {
        let (value, end) = read_literal(text, at);
        values.push(value);
        let rest = &text[end..];
        let rest_trimmed = rest.trim_start();
        let next = end + rest.len() - rest_trimmed.len();
        match rest_trimmed.as_bytes().first() {
            Some(b')') => return Some((values, next + 1)),
            Some(b',') => {
                let after = &text[next + 1..];
                at = next + 1 + after.len() - after.trim_start().len();
                if text.as_bytes().get(at) != Some(&b'\'') {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// The whitespace-delimited token `text` ends with.
fn last_token(text: &str) -> String {
    let text = text.trim_end();
    text.rsplit(char::is_whitespace)
        .next()
        .unwrap_or("")
        .to_string()
}

/// `text` without `word` at its end, when `word` is a whole word there.
fn strip_word<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    text.strip_suffix(word)
        .filter(|rest| rest.is_empty() || rest.ends_with(char::is_whitespace))
}

/// Every literal (or `IN` list of literals) in `sql` outside comments, with what it is compared
/// with; literals after anything else (`IS '…'` of COMMENT ON, `RAISE … '…'`) are left out.
pub fn literal_lists(sql: &str) -> Vec<Literals> {
    let text = strip_comments(sql);
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(offset) = text[i..].find('\'') {
        let at = i + offset;
        let before = text[..at].trim_end();
        let in_list = before
            .strip_suffix('(')
            .and_then(|open| strip_word(open.trim_end(), "IN"))
            .and_then(|head| read_list(&text, at).map(|list| (head, list)));
        if let Some((head, (values, after))) = in_list {
            let head = strip_word(head.trim_end(), "NOT").unwrap_or(head);
            out.push(Literals {
                subject: last_token(head),
                operator: "IN".into(),
                values,
            });
            i = after;
            continue;
        }
        let (value, after) = read_literal(&text, at);
        let operator = ["->>", "<>", "=", "(", ","]
            .into_iter()
            .find(|op| before.ends_with(op))
            .or_else(|| strip_word(before, "LIKE").map(|_| "LIKE"));
        if let Some(op) = operator {
            let subject = match op {
                "(" => last_token(before),
                // The argument before, as in jsonb_build_object('kind', 'line_items').
                "," => last_token(before)
                    .rsplit('(')
                    .next()
                    .unwrap_or("")
                    .to_string(),
                _ => last_token(&before[..before.len() - op.len()]),
            };
            out.push(Literals {
                subject,
                operator: op.into(),
                values: vec![value],
            });
        }
        i = after;
    }
    out
}

/// SQL's `s LIKE pattern`: `%` any run of characters, `_` any one.
pub fn like(pattern: &str, s: &str) -> bool {
    fn matches(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|k| matches(rest, &s[k..])),
            Some(('_', rest)) => !s.is_empty() && matches(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && matches(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    matches(&p, &s)
}
