//! The files that deploy the worker (`worker/deploy/`, shown in docs/worker.md) work: the systemd
//! unit passes `systemd-analyze verify` and avoids what verify does not catch but breaks a start
//! (an end-of-line comment in a value, `After=network-online.target` without `Wants=`, a
//! `DynamicUser` with a password-less `DATABASE_URL`), and the example environment file, loaded
//! the way systemd loads it, starts the worker with the unit's command line. `make install`
//! builds the release extension.
mod worker_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stripe_billing_tests::docs;
use stripe_billing_tests::pg::TestDb;
use worker_support::{free_port, worker_binary, Emulator, SECRET_KEY};

const UNIT: &str = "worker/deploy/stripe-billing-worker.service";
const ENV_FILE: &str = "worker/deploy/worker.env.example";

fn read(path: &str) -> String {
    std::fs::read_to_string(docs::repo_path(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A unit file's settings: (section, key) → values, in order.
fn unit_settings(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        out.entry((section.clone(), key.trim().to_string()))
            .or_default()
            .push(value.trim().to_string());
    }
    out
}

/// An environment file as systemd reads it: `NAME=value` lines, comments only at line start.
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// What systemd does not report but gets wrong at start: the mistakes of 0.2.0's unit.
fn unit_mistakes(unit: &str, env: &str) -> Vec<String> {
    let settings = unit_settings(unit);
    let get = |section: &str, key: &str| {
        settings
            .get(&(section.to_string(), key.to_string()))
            .cloned()
            .unwrap_or_default()
    };
    let mut mistakes = Vec::new();
    for ((section, key), values) in &settings {
        for v in values {
            if v.contains(" #") || v.contains(" ;") || v.contains("\t#") {
                mistakes.push(format!(
                    "[{section}] {key}={v}: systemd has no end-of-line comments; the comment is part of the value"
                ));
            }
        }
    }
    let words = |values: Vec<String>| -> Vec<String> {
        values
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let after = words(get("Unit", "After"));
    let wants = [words(get("Unit", "Wants")), words(get("Unit", "Requires"))].concat();
    if after.iter().any(|t| t == "network-online.target")
        && !wants.iter().any(|t| t == "network-online.target")
    {
        mistakes.push(
            "After=network-online.target without Wants=network-online.target: nothing pulls the target in, so the ordering waits for nothing".into(),
        );
    }
    let mut database_urls: Vec<String> = get("Service", "Environment")
        .iter()
        .filter_map(|e| {
            e.trim_matches('"')
                .strip_prefix("DATABASE_URL=")
                .map(str::to_string)
        })
        .collect();
    if !get("Service", "EnvironmentFile").is_empty() {
        database_urls.extend(
            env_file(env)
                .into_iter()
                .filter(|(k, _)| k == "DATABASE_URL")
                .map(|(_, v)| v),
        );
    }
    let dynamic = get("Service", "DynamicUser")
        .iter()
        .any(|v| v == "yes" || v == "true");
    for url in database_urls {
        let has_password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
            || url.contains("password=");
        if dynamic && !has_password {
            mistakes.push(format!(
                "DynamicUser=yes with DATABASE_URL={url}: the dynamic user's name is no database role, so peer authentication cannot work and the URL needs a password"
            ));
        }
    }
    mistakes
}

#[test]
fn the_unit_has_none_of_the_mistakes_systemd_verify_misses() {
    let mistakes = unit_mistakes(&read(UNIT), &read(ENV_FILE));
    assert!(mistakes.is_empty(), "{}", mistakes.join("\n"));
}

#[test]
fn the_mistakes_of_the_unit_0_2_0_showed_are_found() {
    let old = "[Unit]\nDescription=stripe_billing worker\nAfter=network-online.target postgresql.service\n\n\
               [Service]\nEnvironment=DATABASE_URL=postgres://billing_worker@localhost/app\n\
               EnvironmentFile=/etc/stripe-billing/worker.env   # STRIPE_SECRET_KEY=sk_live_...\n\
               ExecStart=/usr/local/bin/stripe-billing-worker --listen 127.0.0.1:8080 --log-format json\n\
               Restart=always\nDynamicUser=yes\n\n[Install]\nWantedBy=multi-user.target\n";
    let mistakes = unit_mistakes(old, "");
    assert_eq!(mistakes.len(), 3, "{mistakes:#?}");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("SKIPPED: systemd-analyze is not installed, so the unit file is not verified");
        return;
    };
    assert!(version.status.success());
    // verify checks that ExecStart's program exists: point it at the binary the tests built.
    let unit = read(UNIT).replace(
        "/usr/local/bin/stripe-billing-worker",
        &worker_binary().to_string_lossy(),
    );
    let dir = std::env::temp_dir().join(format!("deploy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stripe-billing-worker.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// The variables the worker reads, from its `--help` (`[env: NAME=…]`).
fn worker_variables() -> Vec<String> {
    let help = std::process::Command::new(worker_binary())
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    String::from_utf8_lossy(&help.stdout)
        .split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn the_example_environment_starts_the_worker_with_the_units_command_line() {
    let known = worker_variables();
    assert!(known.contains(&"DATABASE_URL".to_string()), "{known:?}");
    let env = read(ENV_FILE);
    // Every line, commented out or not, names a variable the worker reads.
    for line in env.lines() {
        let Some((name, _)) = line.trim_start_matches('#').split_once('=') else {
            continue;
        };
        if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            assert!(
                known.iter().any(|k| k == name),
                "{ENV_FILE}: the worker has no {name}"
            );
        }
    }
    let settings = unit_settings(&read(UNIT));
    let exec = &settings[&("Service".to_string(), "ExecStart".to_string())][0];
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();

    let db = TestDb::new().await;
    let emulator = Emulator::start(None).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut vars = env_file(&env);
    for (k, v) in vars.iter_mut() {
        // The example's placeholders, replaced as an operator would.
        match k.as_str() {
            "DATABASE_URL" => *v = db.dsn.clone(),
            "STRIPE_SECRET_KEY" => *v = SECRET_KEY.to_string(),
            "WORKER_LISTEN" => *v = listen.clone(),
            _ => {}
        }
    }
    vars.push(("STRIPE_API_BASE".into(), emulator.url.clone()));
    let mut child = tokio::process::Command::new(worker_binary())
        .args(&args)
        .env_clear()
        .envs(vars)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let health = format!("http://{listen}/healthz");
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(&health).await {
            ok = r.status().is_success();
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the worker exited with {status} under the example environment");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.ok();
    assert!(ok, "the worker did not answer {health}");
}

/// `make -n TARGET`: the commands the target would run.
fn make_dry_run(target: &str) -> String {
    let root: PathBuf = docs::root();
    let out = std::process::Command::new("make")
        .args(["-n", "--no-print-directory", target])
        .current_dir(Path::new(&root))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn make_install_builds_the_release_extension() {
    let commands = make_dry_run("install");
    let pgrx = commands
        .lines()
        .find(|l| l.contains("cargo pgrx install"))
        .unwrap_or_else(|| panic!("make install runs no cargo pgrx install:\n{commands}"));
    assert!(
        pgrx.contains("--release"),
        "make install builds debug: {pgrx}"
    );
}

#[test]
fn the_package_holds_the_worker_unit_and_environment_file() {
    let script = read("scripts/package.sh");
    for shipped in [UNIT, ENV_FILE, "release/stripe-billing-worker"] {
        assert!(
            script.contains(shipped),
            "scripts/package.sh does not ship {shipped}"
        );
    }
}
