//! The marketer's loop from a terminal: `hookfan check` the file, `hookfan preview` a real payload,
//! read the errors. These run the real binary, as a user would.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const V2: &str = "tests/fixtures/participation-v2.json";

/// `hookfan ARGS…` from the repository's root, with no config-related variables leaking in.
fn hookfan(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookfan"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("HOOKFAN_CONFIG")
        .env_remove("HOOKFAN_PASSWORD")
        .env_remove("CRM_URL")
        .env_remove("CRM_TOKEN");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run hookfan: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(out)))
}

/// A config file in a fresh folder; the folder lives as long as the returned guard.
fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("hookfan.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    (dir, path)
}

// ---------------------------------------------------------------------------------------------
// check

#[tokio::test]
async fn check_and_serve_name_a_removed_destination_that_still_has_work() {
    let (dir, path) = config_file(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}[destinations.archive]\ntype = \"file\"\npath = \"a.jsonl\"\n",
        crate::support::OPEN_SOURCE
    ));
    // Work for `old_crm`, a destination since removed from the file.
    let store = hookfan::store::SqliteStore::open(&dir.path().join("hookfan.db"))
        .await
        .unwrap();
    for id in ["p1", "p2"] {
        hookfan::store::Store::accept(
            &store,
            crate::support::incoming(crate::support::v2_with_id(id), &["old_crm"]),
        )
        .await
        .unwrap();
    }
    drop(store);

    let path = path.to_str().unwrap();
    let out = run(&mut hookfan(&["check", "--config", path]));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("stranded work (destinations no longer in this file):\n  old_crm          2 pending deliveries"),
        "{text}"
    );
    let out = run(&mut hookfan(&["check", "--config", path, "--json"]));
    assert_eq!(
        json(&out)["stranded"],
        serde_json::json!([{"destination": "old_crm", "pending": 2}])
    );

    // `serve` says so at start.
    let log = dir.path().join("serve.log");
    let mut child = hookfan(&["serve", "--config", path, "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains("old_crm")) {
            break l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning in:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["destination"], "old_crm");
    assert_eq!(line["pending"], 2);
}

#[tokio::test]
async fn check_accepts_postgres_reads_its_stranded_work_and_never_shows_the_password() {
    let Some(schema) = crate::backends::PgSchema::create().await else {
        return;
    };
    // The test server trusts local connections, so any password does; it must never show.
    let mut url = url::Url::parse(&schema.url).unwrap();
    url.set_password(Some("pg-secret-pw")).unwrap();
    let store = hookfan::store::open(url.as_str()).await.unwrap();
    store
        .accept(crate::support::incoming(
            crate::support::v2_with_id("pg-stranded"),
            &["old_crm"],
        ))
        .await
        .unwrap();
    let (_dir, path) = config_file(&format!(
        "[storage]\nurl = \"{url}\"\n{}[destinations.archive]\ntype = \"file\"\npath = \"a.jsonl\"\n",
        crate::support::OPEN_SOURCE
    ));
    let out = run(&mut hookfan(&["check", "--config", path.to_str().unwrap()]));
    assert_exit(&out, 0);
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("storage postgres://postgres:***@"), "{text}");
    assert!(
        text.contains("old_crm          1 pending delivery"),
        "{text}"
    );
    assert!(!text.contains("pg-secret-pw"), "{text}");
}

#[tokio::test]
async fn the_deploy_config_is_valid_and_every_file_compose_mounts_is_there() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let mounted: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(mounted, ["hookfan.toml", "Caddyfile"]);
    for file in mounted.iter().chain(&["Dockerfile", "env.example"]) {
        assert!(deploy.join(file).is_file(), "deploy/{file} is missing");
    }
    // The instances' config, with the environment compose gives them.
    let schema = crate::backends::PgSchema::create().await;
    let database = schema.as_ref().map_or(
        "postgres://hookfan:pw@127.0.0.1:1/hookfan".to_string(),
        |s| s.url.clone(),
    );
    let out = run(hookfan(&["check", "--config", "deploy/hookfan.toml"])
        .env("HOOKFAN_DATABASE_URL", &database)
        .env("HOOKFAN_PASSWORD", "deploy-password")
        .env("HOOKFAN_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")
        .env("CRM_URL", "https://crm.example.com/in")
        .env("CRM_TOKEN", "crm-token"));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("listen 0.0.0.0:8080, storage postgres://"),
        "{text}"
    );
    assert!(text.contains("rate limit: 50/10s"), "{text}");
}

#[test]
fn gen_secret_prints_a_fresh_32_byte_token_each_time() {
    let one = stdout(&run(&mut hookfan(&["gen-secret"])));
    let two = stdout(&run(&mut hookfan(&["gen-secret"])));
    for s in [&one, &two] {
        let s = s.trim_end();
        assert_eq!(s.len(), 64, "{s}");
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()), "{s}");
    }
    assert_ne!(one, two);
}

#[test]
fn check_summarises_the_example() {
    let out = run(&mut hookfan(&["check", "--config", "config.example.toml"]));
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("config.example.toml: valid\n"), "{text}");
    // Each source with its path and auth kinds; each destination with its type and target.
    assert!(
        text.contains("qualifio         POST /hooks/qualifio  auth: basic"),
        "{text}"
    );
    assert!(
        text.contains("archive          file           8 fields, when: always, rate limit: none"),
        "{text}"
    );
    assert!(text.contains("participations.jsonl"), "{text}");
    assert!(
        text.contains(
            "crm              webhook        (disabled) 6 fields, when: `consent.newsletter == \"1\"`, rate limit: 50/min"
        ),
        "{text}"
    );
    assert!(
        text.contains("→ POST https://crm.example.com/hooks/qualifio"),
        "{text}"
    );
}

#[test]
fn check_json_lists_sources_and_destinations() {
    let out = run(&mut hookfan(&[
        "check",
        "--config",
        "config.example.toml",
        "--json",
    ]));
    assert_exit(&out, 0);
    let v = json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(v["listen"], "127.0.0.1:8080");
    assert_eq!(
        v["sources"],
        serde_json::json!([{"name": "qualifio", "path": "/hooks/qualifio", "auth": ["basic"]}])
    );
    let destinations = v["destinations"]
        .as_array()
        .unwrap_or_else(|| panic!("no destinations in {v}"));
    let summary: Vec<(&str, &str, bool, u64)> = destinations
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or_default(),
                d["type"].as_str().unwrap_or_default(),
                d["enabled"].as_bool().unwrap_or_default(),
                d["fields"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("archive", "file", true, 8),
            ("crm", "webhook", false, 6),
            ("winners", "trello", false, 2),
            ("results", "google_sheets", false, 6)
        ]
    );
    assert_eq!(destinations[1]["when"], "consent.newsletter == \"1\"");
    assert_eq!(destinations[1]["rate_limit"], "50/min");
    assert_eq!(destinations[1]["sources"], serde_json::json!(["qualifio"]));
    assert_eq!(destinations[0]["when"], Value::Null);
}

#[test]
fn a_broken_config_exits_1_with_file_line_column_key_and_message() {
    let (_dir, path) = config_file(
        "[server]\nlisten = \"127.0.0.1:8080\"\nlissen = \"0.0.0.0:80\"\n[sources.q]\nauth = \"none\"\n",
    );
    let path_text = path.display().to_string();
    let out = run(&mut hookfan(&["check", "--config", &path_text]));
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "{path_text}:3:1: server.lissen: unknown field `lissen`, expected one of `listen`"
        )),
        "{err}"
    );
    assert_eq!(stdout(&out), "");

    // The same problem as JSON, for editors and CI.
    let out = run(&mut hookfan(&["check", "--config", &path_text, "--json"]));
    assert_exit(&out, 1);
    let v = json(&out);
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(
        (&e["file"], &e["line"], &e["column"], &e["key"]),
        (
            &Value::from(path_text.as_str()),
            &Value::from(3),
            &Value::from(1),
            &Value::from("server.lissen")
        )
    );
}

#[test]
fn a_missing_config_file_exits_1() {
    let out = run(&mut hookfan(&["check", "--config", "no/such/hookfan.toml"]));
    assert_exit(&out, 1);
    assert!(
        stderr(&out).starts_with("cannot read config file no/such/hookfan.toml:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_config_comes_from_hookfan_config_then_the_current_folder() {
    let (dir, path) = config_file("[sources.from_file]\nauth = \"none\"\n");
    // $HOOKFAN_CONFIG when there is no --config…
    let out = run(hookfan(&["check", "--json"]).env("HOOKFAN_CONFIG", &path));
    assert_exit(&out, 0);
    assert_eq!(json(&out)["sources"][0]["name"], "from_file");
    // …and ./hookfan.toml when there is neither.
    let out = run(hookfan(&["check", "--json"]).current_dir(dir.path()));
    assert_exit(&out, 0);
    assert_eq!(json(&out)["sources"][0]["path"], "/hooks/from_file");
}

// ---------------------------------------------------------------------------------------------
// preview

#[test]
fn preview_prints_the_mapped_fields() {
    let out = run(&mut hookfan(&[
        "preview",
        "--config",
        "config.example.toml",
        V2,
    ]));
    assert_exit(&out, 0);
    let text = stdout(&out);
    for line in [
        "archive (file): routed\n",
        "  participation = 9C2E41F0-55B7-4D0E-8E0B-2F6A7D1C3B88\n",
        "  format        = v2\n",
        "  campaign      = Winter quiz 2026\n",
        "  completed     = 2026-11-20 10:14\n",
        "  email         = amelie.dupont@example.org\n",
        "  first_name    = Amélie\n",
        "  last_name     = Dupont-Nguyễn\n",
        "  newsletter    = yes\n",
        "crm (webhook): not routed: disabled (enabled = false)\n",
        // A secret header is named but never shown.
        "    authorization: ***\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Fields in file order.
    let first = text.find("participation =");
    let last = text.find("newsletter    =");
    assert!(first < last, "{text}");
}

#[test]
fn preview_json_has_the_documented_shape() {
    let out = run(&mut hookfan(&[
        "preview",
        "--config",
        "config.example.toml",
        "--json",
        V2,
    ]));
    assert_exit(&out, 0);
    let v = json(&out);
    let list = v["destinations"]
        .as_array()
        .unwrap_or_else(|| panic!("no destinations in {v}"));
    assert_eq!(list.len(), 4);
    let archive = &list[0];
    assert_eq!(archive["name"], "archive");
    assert_eq!(archive["type"], "file");
    assert_eq!(archive["routed"], true);
    assert_eq!(archive["reason"], Value::Null);
    assert_eq!(
        archive["fields"],
        serde_json::json!([
            ["participation", "9C2E41F0-55B7-4D0E-8E0B-2F6A7D1C3B88"],
            ["format", "v2"],
            ["campaign", "Winter quiz 2026"],
            ["completed", "2026-11-20 10:14"],
            ["email", "amelie.dupont@example.org"],
            ["first_name", "Amélie"],
            ["last_name", "Dupont-Nguyễn"],
            ["newsletter", "yes"],
        ])
    );
    let crm = &list[1];
    assert_eq!(
        (&crm["name"], &crm["type"], &crm["routed"], &crm["reason"]),
        (
            &Value::from("crm"),
            &Value::from("webhook"),
            &Value::from(false),
            &Value::from("disabled (enabled = false)")
        )
    );
    assert_eq!(crm["fields"][3], serde_json::json!(["address.city", ""]));
}

#[test]
fn preview_one_destination() {
    let out = run(&mut hookfan(&[
        "preview",
        "--config",
        "config.example.toml",
        "--destination",
        "crm",
        "--json",
        V2,
    ]));
    assert_exit(&out, 0);
    let v = json(&out);
    let names: Vec<&str> = v["destinations"]
        .as_array()
        .map(|l| l.iter().filter_map(|d| d["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["crm"]);

    let out = run(&mut hookfan(&[
        "preview",
        "--config",
        "config.example.toml",
        "--destination",
        "nope",
        V2,
    ]));
    assert_exit(&out, 1);
    assert_eq!(stderr(&out), "no destination named \"nope\"\n");
}

#[test]
fn preview_reads_the_payload_from_stdin() {
    let mut child = hookfan(&["preview", "--config", "config.example.toml", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let payload = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(V2))
        .unwrap_or_else(|e| panic!("{e}"));
    child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("no stdin"))
        .write_all(&payload)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_exit(&out, 0);
    assert_eq!(
        json(&out)["destinations"][0]["fields"][5],
        serde_json::json!(["first_name", "Amélie"])
    );
}

#[test]
fn preview_of_a_bad_payload_exits_1() {
    let out = run(&mut hookfan(&[
        "preview",
        "--config",
        "config.example.toml",
        "no/such/payload.json",
    ]));
    assert_exit(&out, 1);
    assert!(
        stderr(&out).starts_with("cannot read no/such/payload.json:"),
        "{}",
        stderr(&out)
    );
    let out = run(&mut hookfan(&[
        "preview",
        "--config",
        "config.example.toml",
        "Cargo.toml",
    ]));
    assert_exit(&out, 1);
    assert!(
        stderr(&out).starts_with("the payload is not JSON"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// usage

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["check", "--bogus"],
        &["preview", "--config", "config.example.toml"],
        &[],
    ] {
        let out = run(&mut hookfan(args));
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("Usage: hookfan"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn every_command_has_help() {
    let out = run(&mut hookfan(&["--help"]));
    assert_exit(&out, 0);
    let text = stdout(&out);
    // The commands `hookfan --help` lists, so a new one is covered too.
    let commands: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    for expected in ["check", "preview"] {
        assert!(commands.iter().any(|c| c == expected), "{text}");
    }
    for command in &commands {
        let out = run(&mut hookfan(&[command, "--help"]));
        assert_exit(&out, 0);
        let help = stdout(&out);
        assert!(
            help.contains(&format!("Usage: hookfan {command}")),
            "{command}: {help}"
        );
        if command == "check" || command == "preview" {
            assert!(help.contains("--config"), "{command}: {help}");
        }
    }
    let out = run(&mut hookfan(&["preview", "--help"]));
    let help = stdout(&out);
    for flag in ["--destination", "--json", "PAYLOAD"] {
        assert!(help.contains(flag), "{help}");
    }
}
