//! What tests/tests/editions.rs uses: a database of each edition, and
//! running one call on both.
#![allow(dead_code)]

use serde_json::{json, Value};
use stripe_billing_tests::edition::{self, Edition};
use stripe_billing_tests::pg::TestDb;
use tokio_postgres::Client;

/// A database of each edition.
pub struct Both {
    pub extension: Client,
    pub pure: Client,
    _dbs: (TestDb, TestDb),
}

/// A database of each edition, or None (and a note) on a server without the extension: the run
/// against PostgreSQL 17 has the pure-SQL edition only (stripe_billing_tests::edition).
pub async fn both() -> Option<Both> {
    if !edition::full_installation() {
        eprintln!("skipped: this server has no build of the extension to compare with");
        return None;
    }
    let (ext, pure) = tokio::join!(
        TestDb::with_edition(Edition::Extension),
        TestDb::with_edition(Edition::Pure)
    );
    Some(Both {
        extension: ext.owner().await,
        pure: pure.owner().await,
        _dbs: (ext, pure),
    })
}

/// What one call gave: its value as JSON, or its error.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Value(Value),
    Error {
        code: String,
        message: String,
        hint: Option<String>,
        detail: Option<String>,
    },
}

/// Runs `select` (one expression; `$n` are text parameters) and returns its value as JSON.
pub async fn outcome(client: &Client, select: &str, params: &[Option<String>]) -> Outcome {
    let sql = format!("SELECT to_jsonb(({select}))");
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    match client.query_one(&sql, &refs).await {
        Ok(row) => Outcome::Value(row.get::<_, Option<Value>>(0).unwrap_or(Value::Null)),
        Err(e) => {
            let db = e.as_db_error().unwrap_or_else(|| panic!("{select}: {e}"));
            Outcome::Error {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                hint: db.hint().map(str::to_string),
                detail: db.detail().map(str::to_string),
            }
        }
    }
}

impl Both {
    /// Runs the call on both editions and returns the extension's outcome, failing when the
    /// pure-SQL edition's differs. A detail is only compared for `compare_detail`.
    pub async fn same(&self, label: &str, select: &str, params: &[Option<String>]) -> Outcome {
        let (a, b) = tokio::join!(
            outcome(&self.extension, select, params),
            outcome(&self.pure, select, params)
        );
        let strip = |o: Outcome| match o {
            Outcome::Error {
                code,
                message,
                hint,
                detail,
            } => Outcome::Error {
                // The text of a JSON syntax error is the parser's own (serde's or Postgres').
                detail: if code == "22032" { None } else { detail },
                code,
                message,
                hint,
            },
            Outcome::Value(v) => Outcome::Value(numbers_as_f64(v)),
        };
        let a = strip(a);
        let b = strip(b);
        assert_eq!(
            a, b,
            "{label}: the extension (left) and the pure-SQL edition (right) differ"
        );
        a
    }
}

/// The same number written differently (1000 and 1000.0, 1.5 and 1.50) is the same value, as
/// jsonb compares numbers (the extension's construct_event reads them as serde's f64).
pub fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        v => v,
    }
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

pub const T0: i64 = 1_700_000_000;

pub async fn schema_owner(client: &Client) -> String {
    client
        .query_one(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'billing'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}
