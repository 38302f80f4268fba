//! The README and `docs/*.md` run as written. Every ```sql block is preceded by a marker naming
//! who runs it:
//!
//! ```text
//! <!-- readme-test: owner -->                 the role that installed stripe_billing
//! <!-- readme-test: user <uuid> <email> -->   a signed-in user, the way PostgREST runs calls
//! <!-- readme-test: anon -->                  PostgREST's anonymous role
//! <!-- readme-test: owner, worker -->         ... after starting the emulator and the worker
//! <!-- readme-test: owner, extension -->      ... only when testing the extension edition
//! <!-- readme-test: owner, pure -->           ... only when testing the pure-SQL edition
//! <!-- readme-test: skip: <why> -->           not run (say why)
//! ```
//!
//! The README's blocks run in order on one fresh database, as a reader following it would; the
//! blocks of `docs/*.md` on another, file after file in reading order (`docs::ORDER`: each
//! continues the state the previous one left). For
//! the pure-SQL edition (`STRIPE_BILLING_EDITION=pure`) the database starts with the migration
//! applied, as docs/supabase.md says, since it installs with psql or the Supabase CLI.
//! After each statement, comment lines starting with `--  ` (two spaces) are its expected rows
//! (columns separated by ` | `), and `-- ERROR:  <SQLSTATE>: <message>` an expected error; `…`
//! in either matches any text. With `UPDATE_README=1` the expected lines of statements whose
//! output differs are rewritten from the real output (then put `…` where values vary).
//!
//! The error-code table in docs/errors.md is rendered from `stripe_billing_core::errors`, and
//! every SQLSTATE the SQL raises is in that table. Every other fenced block of the README and the
//! docs carries a marker too (`stripe_billing_tests::docs` lists them): a file's content shown
//! verbatim, a transcript that a named test compares with a real run, or a reason to skip it.
mod worker_support;

use std::path::PathBuf;

use stripe_billing_tests::docs;
use stripe_billing_tests::edition::Edition;
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::SimpleQueryMessage;
use uuid::Uuid;
use worker_support::{Emulator, Worker};

fn doc_path(file: &str) -> PathBuf {
    docs::root().join(file)
}

/// Who runs a block.
#[derive(Clone, Debug, PartialEq)]
enum Context {
    Owner,
    User(Uuid, String),
    Anon,
    Skip,
}

/// One statement with what the README says it shows.
#[derive(Debug)]
struct Statement {
    sql: String,
    /// Line indexes (in README.md) of the expected-output lines, for UPDATE_README.
    expected_lines: std::ops::Range<usize>,
    expected: Vec<String>,
    error: Option<(String, String)>,
}

#[derive(Debug)]
struct Block {
    context: Context,
    worker: bool,
    /// Run only when testing this edition.
    edition: Option<Edition>,
    statements: Vec<Statement>,
}

fn parse_marker(line: &str) -> Option<(Context, bool, Option<Edition>)> {
    let inner = line
        .trim()
        .strip_prefix("<!-- readme-test:")?
        .strip_suffix("-->")?
        .trim();
    if inner.starts_with("skip") {
        return Some((Context::Skip, false, None));
    }
    let mut worker = false;
    let mut edition = None;
    let mut context = None;
    for part in inner.split(',').map(str::trim) {
        let words: Vec<&str> = part.split_whitespace().collect();
        match words.as_slice() {
            ["owner"] => context = Some(Context::Owner),
            ["anon"] => context = Some(Context::Anon),
            ["worker"] => worker = true,
            ["extension"] => edition = Some(Edition::Extension),
            ["pure"] => edition = Some(Edition::Pure),
            ["user", id, email] => {
                context = Some(Context::User(
                    id.parse().expect("user uuid"),
                    email.to_string(),
                ))
            }
            _ => panic!("README marker not understood: {line}"),
        }
    }
    Some((
        context.expect("a marker names who runs the block"),
        worker,
        edition,
    ))
}

fn parse(file: &str, readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```sql" {
            i += 1;
            continue;
        }
        let marker = lines[..i]
            .iter()
            .rev()
            .take(3)
            .find_map(|l| parse_marker(l))
            .unwrap_or_else(|| {
                panic!(
                    "{file} line {}: a ```sql block without a readme-test marker",
                    i + 1
                )
            });
        let start = i + 1;
        let end = start
            + lines[start..]
                .iter()
                .position(|l| l.trim() == "```")
                .expect("closed block");
        let mut statements = Vec::new();
        let mut sql = String::new();
        let mut j = start;
        while j < end {
            let line = lines[j];
            let code = line.split("--").next().unwrap_or("").trim_end();
            // Comment lines are expected output or prose, never SQL.
            if !line.trim_start().starts_with("--") {
                sql.push_str(line);
                sql.push('\n');
            }
            j += 1;
            if !sql.trim().is_empty() && code.ends_with(';') && !line.trim_start().starts_with("--")
            {
                let first = j;
                let mut expected = Vec::new();
                let mut error = None;
                while j < end && lines[j].trim_start().starts_with("--") {
                    let comment = lines[j].trim_start();
                    if let Some(row) = comment.strip_prefix("--  ") {
                        expected.push(row.trim_end().to_string());
                    } else if let Some(e) = comment.strip_prefix("-- ERROR:  ") {
                        let (code, message) = e.split_once(": ").expect("-- ERROR:  CODE: message");
                        error = Some((code.to_string(), message.trim_end().to_string()));
                    }
                    j += 1;
                }
                statements.push(Statement {
                    sql: std::mem::take(&mut sql),
                    expected_lines: first..j,
                    expected,
                    error,
                });
            }
        }
        assert!(
            sql.trim().is_empty(),
            "{file} line {}: a statement without a closing ;",
            end
        );
        blocks.push(Block {
            context: marker.0,
            worker: marker.1,
            edition: marker.2,
            statements,
        });
        i = end + 1;
    }
    blocks
}

/// Whether `actual` matches `pattern`, where `…` stands for any text.
fn matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let mut rest = actual;
    for (n, part) in parts.iter().enumerate() {
        if n == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if n == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

/// What a statement did: its rows (the last result set, columns joined by ` | `) or its error.
enum Outcome {
    Rows(Vec<String>),
    Error(String, String),
}

async fn run(client: &tokio_postgres::Client, context: &Context, sql: &str) -> Outcome {
    let setup = match context {
        Context::Owner | Context::Skip => String::new(),
        Context::Anon => "SET LOCAL ROLE anon; SELECT set_config('request.jwt.claims', '{\"role\":\"anon\"}', true);".into(),
        Context::User(id, email) => format!(
            "SET LOCAL ROLE authenticated; SELECT set_config('request.jwt.claims', '{{\"sub\":\"{id}\",\"role\":\"authenticated\",\"email\":\"{email}\"}}', true);"
        ),
    };
    let result = if setup.is_empty() {
        client.simple_query(sql).await
    } else {
        client.batch_execute("BEGIN").await.unwrap();
        client.simple_query(&setup).await.unwrap();
        let r = client.simple_query(sql).await;
        let end = if r.is_ok() { "COMMIT" } else { "ROLLBACK" };
        client.batch_execute(end).await.unwrap();
        r
    };
    match result {
        Ok(messages) => {
            let mut rows = Vec::new();
            for m in messages {
                match m {
                    SimpleQueryMessage::RowDescription(_) => rows.clear(),
                    SimpleQueryMessage::Row(row) => rows.push(
                        (0..row.len())
                            .map(|i| row.get(i).unwrap_or("").to_string())
                            .collect::<Vec<_>>()
                            .join(" | "),
                    ),
                    _ => {}
                }
            }
            Outcome::Rows(rows)
        }
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
            Outcome::Error(db.code().code().to_string(), db.message().to_string())
        }
    }
}

#[tokio::test]
async fn the_readme_sql_runs_as_written() {
    run_chain(&["README.md".to_string()]).await;
}

#[tokio::test]
async fn the_docs_sql_runs_as_written() {
    run_chain(&docs::doc_files()).await;
}

/// Runs the ```sql blocks of `files`, in order, on one fresh database.
async fn run_chain(files: &[String]) {
    let parsed: Vec<(String, String, Vec<Block>)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(doc_path(f)).unwrap();
            let blocks = parse(f, &text);
            (f.clone(), text, blocks)
        })
        .collect();
    assert!(
        parsed
            .iter()
            .flat_map(|(_, _, b)| b)
            .filter(|b| b.context != Context::Skip)
            .count()
            >= 3
    );
    let edition = Edition::current();
    let db = match edition {
        Edition::Extension => TestDb::empty().await,
        Edition::Pure => TestDb::new().await,
    };
    let client = db.owner().await;
    let mut started: Option<(Emulator, Worker)> = None;
    let mut failures = Vec::new();
    for (file, text, blocks) in &parsed {
        let mut rewrites: Vec<(std::ops::Range<usize>, Vec<String>)> = Vec::new();
        for block in blocks.iter() {
            if block.context == Context::Skip || block.edition.is_some_and(|e| e != edition) {
                continue;
            }
            if block.worker && started.is_none() {
                // The docs' catalog, as a Stripe account would have it.
                let emulator = Emulator::start_with(
                    None,
                    &[
                        "--price",
                        "price_1PgafmB7WZ01zgkW6dKueIc5:recurring:2000",
                        "--price",
                        "price_1PgafmB7WZ01zgkW02Hf9z6c:one_time:900",
                        "--coupon",
                        "LAUNCH20:percent_off:20",
                    ],
                )
                .await;
                let worker = Worker::start(&db.dsn, Some(&emulator.url), &[]).await;
                started = Some((emulator, worker));
            }
            for st in &block.statements {
                let outcome = run(&client, &block.context, &st.sql).await;
                let ok = match (&outcome, &st.error) {
                    (Outcome::Error(code, message), Some((want_code, want_message))) => {
                        code == want_code && matches(want_message, message)
                    }
                    (Outcome::Rows(rows), None) => {
                        st.expected.is_empty()
                            || (rows.len() == st.expected.len()
                                && rows.iter().zip(&st.expected).all(|(a, e)| matches(e, a)))
                    }
                    _ => false,
                };
                if ok {
                    continue;
                }
                let shown = match &outcome {
                    Outcome::Rows(rows) => {
                        rows.iter().map(|r| format!("--  {r}")).collect::<Vec<_>>()
                    }
                    Outcome::Error(code, message) => vec![format!("-- ERROR:  {code}: {message}")],
                };
                failures.push(format!(
                    "{file}: {}\nit shows:\n{}\nit gives:\n{}",
                    st.sql.trim(),
                    if let Some((c, m)) = &st.error {
                        format!("-- ERROR:  {c}: {m}")
                    } else {
                        st.expected
                            .iter()
                            .map(|e| format!("--  {e}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    },
                    shown.join("\n")
                ));
                rewrites.push((st.expected_lines.clone(), shown));
            }
        }
        if !rewrites.is_empty() && std::env::var_os("UPDATE_README").is_some() {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            for (range, new) in rewrites.into_iter().rev() {
                // Keep prose comments that followed the statement; replace the output lines.
                let kept: Vec<String> = lines[range.clone()]
                    .iter()
                    .filter(|l| {
                        let c = l.trim_start();
                        !c.starts_with("--  ") && !c.starts_with("-- ERROR:")
                    })
                    .cloned()
                    .collect();
                lines.splice(range, new.into_iter().chain(kept));
            }
            std::fs::write(doc_path(file), lines.join("\n") + "\n").unwrap();
        }
    }
    assert!(
        failures.is_empty(),
        "the docs differ from what their SQL does:\n\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn the_docs_error_table_is_the_one_table() {
    let errors = std::fs::read_to_string(doc_path("docs/errors.md")).unwrap();
    let table = stripe_billing_core::errors::markdown_table();
    assert!(
        errors.contains(&table),
        "docs/errors.md's table differs from core/src/errors.rs; it should read:\n{table}"
    );
}

#[test]
fn every_sqlstate_the_sql_raises_is_in_the_table() {
    let root = shipped_sql::upgrade::repo_root();
    let mut missing = Vec::new();
    // Every schema file, and the pure-SQL migration (its twins and its install guard).
    let mut sources: Vec<(String, String)> = shipped_sql::upgrade::manifest(&root)
        .unwrap()
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(root.join("sql").join(&f.path)).unwrap();
            (f.path, text)
        })
        .collect();
    sources.push((
        "the pure-SQL migration".to_string(),
        shipped_sql::pure_sql::current_install_script(),
    ));
    for (path, text) in sources {
        for (n, part) in text.split("ERRCODE = '").enumerate().skip(1) {
            let code = part.split('\'').next().unwrap_or_default();
            let known = stripe_billing_core::errors::by_sqlstate(code)
                .or_else(|| stripe_billing_core::errors::by_name(code));
            if known.is_none() {
                missing.push(format!("{path} (#{n}): {code}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "raised but not in core/src/errors.rs: {missing:?}"
    );
}

#[test]
fn wildcards_match_any_text() {
    assert!(matches("a…c", "abbbc"));
    assert!(matches("…", "anything"));
    assert!(matches(
        "{\"id\": \"…\", \"ok\": true}",
        "{\"id\": \"x1\", \"ok\": true}"
    ));
    assert!(!matches("a…c", "abd"));
    assert!(!matches("abc", "abcd"));
}

#[test]
fn the_docs_list_exactly_the_event_types_the_product_applies() {
    let readme = std::fs::read_to_string(doc_path("docs/events-and-refunds.md")).unwrap();
    let start = readme
        .find("Enable these events on the endpoint")
        .expect("the Webhooks section lists the events to enable");
    let end = start
        + readme[start..]
            .find("Others are stored")
            .expect("end of the list");
    let listed: std::collections::BTreeSet<&str> = readme[start..end]
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.contains('.') && !t.contains("::"))
        .collect();
    let applied: std::collections::BTreeSet<&str> = stripe_billing_core::event::APPLIED_TYPES
        .iter()
        .copied()
        .collect();
    assert_eq!(listed, applied);
}

/// Every fenced block of the README and the docs says how it is checked, and the checks it names
/// exist: a file shown is the file, a transcript is compared by a test (or by the script that
/// prints it), and a skipped block says why.
#[test]
fn every_block_of_the_docs_is_run_or_says_why_not() {
    let mut problems = Vec::new();
    let sources: String = ["tests/tests", "scripts"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(docs::root().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    // Calls as rustfmt and shells lay them out, whitespace aside.
    let compact: String = sources.split_whitespace().collect();
    for file in docs::all_files() {
        for fence in docs::fences(&file) {
            let at = format!("{}:{} (```{})", fence.file, fence.line, fence.lang);
            let marker = fence.marker.clone().unwrap_or_default();
            if let Some(path) = marker.strip_prefix("docs-test: file ") {
                let actual = std::fs::read_to_string(docs::repo_path(path.trim()))
                    .unwrap_or_else(|e| panic!("{at}: {path}: {e}"));
                if actual.trim_end() != fence.body.trim_end() {
                    problems.push(format!("{at}: differs from the file {path}"));
                }
            } else if let Some(name) = marker.strip_prefix("docs-test: transcript ") {
                let name = name.trim();
                let claimed = [
                    format!("assert_transcript(\"{name}\""),
                    format!("docs-transcript.py\"{name}"),
                    format!("docs-transcript.py{name}"),
                ]
                .iter()
                .any(|call| compact.contains(call));
                if !claimed {
                    problems.push(format!("{at}: no test compares the transcript {name}"));
                }
            } else if let Some(name) = marker.strip_prefix("docs-test: run ") {
                if !compact.contains(&format!("docs::script(\"{}\")", name.trim())) {
                    problems.push(format!("{at}: no test runs {}", name.trim()));
                }
            } else if let Some(why) = marker
                .strip_prefix("docs-test: skip:")
                .or_else(|| marker.strip_prefix("readme-test: skip:"))
            {
                if why.trim().is_empty() {
                    problems.push(format!("{at}: skipped without a reason"));
                }
            } else if marker.starts_with("readme-test:") {
                if fence.lang != "sql" {
                    problems.push(format!("{at}: readme-test runs ```sql blocks only"));
                }
            } else if !marker.starts_with("doctor-output: ") {
                problems.push(format!(
                    "{at}: no marker (docs-test: file/transcript/skip, readme-test, doctor-output)"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_sql_reference_is_generated_from_the_current_comments() {
    let (path, generated) = shipped_sql::sql_reference::generate_current().expect("generate");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run `make supabase-sql` (or `cargo run -p xtask -- sql-reference`) and commit the result",
        path.display()
    );
}
