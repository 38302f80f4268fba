//! What app_docs.rs and app_docs_postgrest.rs share: the ```js blocks of the docs, and node
//! with the npm packages of scripts/app-js.sh.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use uuid::Uuid;

/// The ```js blocks of a markdown text.
pub fn js_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```js") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The ```js blocks of a file of the repository.
pub fn js_blocks_of(file: &str) -> Vec<String> {
    let root = shipped_sql::upgrade::repo_root();
    js_blocks(&std::fs::read_to_string(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")))
}

/// The one block of `file` that contains every one of `needles`.
pub fn example(file: &str, needles: &[&str]) -> String {
    let found: Vec<String> = js_blocks_of(file)
        .into_iter()
        .filter(|b| needles.iter().all(|n| b.contains(n)))
        .collect();
    assert_eq!(found.len(), 1, "{file}: one js block with {needles:?}");
    found.into_iter().next().unwrap()
}

pub fn have_node() -> bool {
    Command::new("node").arg("--version").output().is_ok()
}

/// A new scratch directory for one test's files.
pub fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("app_docs_{what}_{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// supabase-js (2.119) makes its Realtime client when it is created, and stops there without a
/// WebSocket: Node 22 has one, Node 20 only with `--experimental-websocket` (docs/app.md says so).
pub fn websocket_flag() -> Vec<&'static str> {
    let has = Command::new("node")
        .args([
            "-e",
            "process.exit(typeof WebSocket === 'function' ? 0 : 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if has {
        vec![]
    } else {
        vec!["--experimental-websocket"]
    }
}

/// The node_modules of scripts/app-js.sh (installed on first use).
pub fn app_js_modules() -> PathBuf {
    let root = shipped_sql::upgrade::repo_root();
    let out = Command::new(root.join("scripts/app-js.sh"))
        .output()
        .expect("run scripts/app-js.sh");
    assert!(
        out.status.success(),
        "scripts/app-js.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}
