//! docs/app.md's JavaScript examples parse: each ```js block is written to a file and checked
//! with `node --check` as an ES module (imports are not resolved; top-level await is allowed),
//! so an example a reader copies is at least valid JavaScript. Skipped, saying so, without
//! node.
use std::process::Command;

fn js_blocks(markdown: &str) -> Vec<String> {
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

#[test]
fn every_js_example_of_docs_app_parses() {
    let root = shipped_sql::upgrade::repo_root();
    let doc = std::fs::read_to_string(root.join("docs/app.md")).expect("docs/app.md");
    let blocks = js_blocks(&doc);
    assert!(blocks.len() >= 6, "found {} js blocks", blocks.len());
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED: node is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("app_docs_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        let file = dir.join(format!("example{i}.mjs"));
        std::fs::write(&file, block).unwrap();
        let out = Command::new("node")
            .arg("--check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "js block {i} of docs/app.md does not parse:\n{block}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
