//! No configured secret leaks: after a full run of the real binary with every destination type
//! and every kind of source credential set to recognisable values, and a CRM that echoes our
//! request headers in its 400 answer, no secret is in the database files, the logs, the CLI's
//! outputs or the metrics.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hookfan::store::{SqliteStore, Status, Store};
use sha2::Sha256;

use crate::fakes::crm::{FakeCrm, Reply};
use crate::fakes::google::FakeGoogle;
use crate::fakes::trello::{FakeTrello, KEY, LIST, TOKEN};
use crate::support::{
    FIXTURES, for_destination, free_port, serve, terminate, v2_with_id, wait_deliveries, wait_up,
};

const WAIT: Duration = Duration::from_secs(15);
const BASIC_PASS: &str = "src-basic-pass-7c1f";
const SOURCE_TOKEN: &str = "src-token-0123456789abcd";
const HEADER_VALUE: &str = "src-header-secret-9a8b";
const HMAC_SECRET: &str = "src-hmac-secret-55aa";
const CRM_HEADER: &str = "Bearer crm-header-token-3d2e";
const CRM_URL_PASS: &str = "crm-url-pass-8f7e";
const SIGNING_SECRET: &str = "whsec_c2lnbmluZy1zZWNyZXQtZm9yLXRoZS10ZXN0";
const ADMIN_TOKEN: &str = "admin-secret-token-0123456789";

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// `hookfan ARGS --config FILE`, its stdout and stderr together.
fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hookfan"))
        .args(args)
        .args(["--config", "hookfan.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_secret_is_stored_logged_printed_or_exported() {
    crate::support::init();
    let crm = FakeCrm::start().await;
    // A CRM that echoes every header we sent (Authorization included) in its error.
    crm.set_default(Reply::status(400).echo());
    let (google, trello) = (FakeGoogle::start().await, FakeTrello::start().await);
    let dir = tempfile::tempdir().unwrap();
    let key_file = google.write_key(dir.path());
    google.add_tab(
        "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
        "Participations",
        &[&["email"]],
    );
    let (port, admin) = (free_port(), free_port());
    let crm_url = crm
        .url("/in")
        .replace("http://", &format!("http://crmuser:{CRM_URL_PASS}@"));
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"

[admin]
listen = "127.0.0.1:{admin}"
token = "{ADMIN_TOKEN}"

[sources.basic]
basic = {{ username = "qualifio", password = "{BASIC_PASS}" }}
[sources.token]
token = "{SOURCE_TOKEN}"
[sources.signed]
header = {{ name = "X-Api-Token", value = "{HEADER_VALUE}" }}
hmac_secrets = ["{HMAC_SECRET}"]

[retry]
schedule = ["200ms"]
jitter = 0.0

[destinations.crm]
type = "webhook"
url = "{crm_url}"
headers = {{ Authorization = "{CRM_HEADER}" }}
signing_secret = "{SIGNING_SECRET}"
[destinations.crm.fields]
email = "{{{{ participant.email }}}}"

[destinations.sheet]
type = "google_sheets"
spreadsheet_id = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
sheet = "Participations"
credentials = "{key}"
api_base = "{google}"
[destinations.sheet.fields]
email = "{{{{ participant.email }}}}"

[destinations.card]
type = "trello"
key = "{KEY}"
token = "{TOKEN}"
list_id = "{LIST}"
api_base = "{trello}"
name = "{{{{ participant.firstname }}}}"

[destinations.archive]
type = "file"
path = "archive.jsonl"
[destinations.archive.fields]
id = "{{{{ participation.id }}}}"
"#,
        key = key_file.display(),
        google = google.base,
        trello = trello.base,
    );
    std::fs::write(dir.path().join("hookfan.toml"), &config).unwrap();
    let log = dir.path().join("serve.log");
    // As talkative as it gets.
    let child = serve(dir.path(), "serve.log", &[("RUST_LOG", "debug")]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_up(&client, &base).await;

    // Every source, with its credentials; and each once with a wrong one.
    let body = v2_with_id("secret-1");
    let r = client
        .post(format!("{base}/hooks/basic"))
        .basic_auth("qualifio", Some(BASIC_PASS))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let body2 = v2_with_id("secret-2");
    let r = client
        .post(format!("{base}/hooks/token/{SOURCE_TOKEN}"))
        .body(body2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let body3 = v2_with_id("secret-3");
    let r = client
        .post(format!("{base}/hooks/signed"))
        .header("X-Api-Token", HEADER_VALUE)
        .header("X-Qualifio-Signature", sign(&body3))
        .body(body3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let r = client
        .post(format!("{base}/hooks/basic"))
        .basic_auth("qualifio", Some("wrong-password"))
        .body(v2_with_id("secret-4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let store = SqliteStore::open(&dir.path().join("hookfan.db"))
        .await
        .unwrap();
    wait_deliveries(&store, for_destination("crm"), Status::Dead, 3, WAIT).await;
    wait_deliveries(&store, for_destination("card"), Status::Delivered, 3, WAIT).await;
    wait_deliveries(&store, for_destination("sheet"), Status::Delivered, 3, WAIT).await;
    // The CRM did echo our headers back: the delivery log kept the answer, without them.
    let dead = store.list(&for_destination("crm")).await.unwrap();
    let (_, attempts) = store.show(dead[0].id).await.unwrap().unwrap();
    let answer = attempts[0].response.clone().unwrap();
    assert!(answer.contains("authorization: ***"), "{answer}");

    // What operators read.
    let mut outputs = String::new();
    for args in [
        vec!["check"],
        vec!["check", "--json"],
        vec!["deliveries", "list", "--json"],
        vec!["stats", "--json"],
        vec!["preview", "--json", "payload.json"],
    ] {
        if args.contains(&"payload.json") {
            std::fs::copy(
                Path::new(FIXTURES).join("participation-v2.json"),
                dir.path().join("payload.json"),
            )
            .unwrap();
        }
        outputs.push_str(&cli(dir.path(), &args));
    }
    for row in store.list(&Default::default()).await.unwrap() {
        outputs.push_str(&cli(
            dir.path(),
            &["deliveries", "show", &row.id.to_string(), "--json"],
        ));
    }
    let admin_base = format!("http://127.0.0.1:{admin}");
    for path in [
        "/metrics",
        "/api/deliveries",
        "/api/stats",
        "/api/deliveries/1",
    ] {
        outputs.push_str(
            &client
                .get(format!("{admin_base}{path}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    assert!(terminate(child).await.success());

    let pem_line = std::fs::read_to_string(
        Path::new(FIXTURES).join("google-TEST-ONLY-service-account-key.pem"),
    )
    .unwrap()
    .lines()
    .nth(3)
    .unwrap()
    .to_string();
    let secrets = [
        BASIC_PASS.to_string(),
        STANDARD.encode(format!("qualifio:{BASIC_PASS}")),
        SOURCE_TOKEN.into(),
        HEADER_VALUE.into(),
        HMAC_SECRET.into(),
        "crm-header-token-3d2e".into(),
        CRM_URL_PASS.into(),
        STANDARD.encode(format!("crmuser:{CRM_URL_PASS}")),
        SIGNING_SECRET.into(),
        SIGNING_SECRET.trim_start_matches("whsec_").into(),
        KEY.into(),
        TOKEN.into(),
        ADMIN_TOKEN.into(),
        pem_line,
    ];
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("\"message\":\"attempt\""),
        "the logs are too quiet"
    );
    let mut database = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("hookfan.db")
        {
            database.extend(std::fs::read(entry.path()).unwrap());
        }
    }
    let mut found = Vec::new();
    for secret in &secrets {
        for (place, text) in [("logs", logs.as_bytes()), ("outputs", outputs.as_bytes())] {
            if text.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                found.push(format!("{secret:?} in the {place}"));
            }
        }
        if database
            .windows(secret.len())
            .any(|w| w == secret.as_bytes())
        {
            found.push(format!("{secret:?} in the database files"));
        }
    }
    eprintln!(
        "secrets scan: {} secrets in {} bytes of logs, {} of outputs and metrics, {} of database files: {} found",
        secrets.len(),
        logs.len(),
        outputs.len(),
        database.len(),
        found.len()
    );
    assert!(found.is_empty(), "{found:#?}");
}
