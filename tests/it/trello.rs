//! The Trello destination against a fake Trello: one card per participation with the configured
//! fields, custom fields and attachments; retries that repeat only what is missing and never make
//! a second card; Trello's refusals in words; secrets only in the `Authorization` header.

use std::time::Duration;

use hookfan::store::{DeliveryRow, SqliteStore, Status, Store};
use serde_json::{Value, json};

use crate::fakes::crm::Reply;
use crate::fakes::trello::{
    BOARD_NAME, FakeTrello, KEY, LIST, LIST_NAME, TOKEN, expected_authorization,
};
use crate::support::{
    Relay, fixture, for_destination, incoming, leave_a_dead_claim, v2_with_id, wait_deliveries,
    write_config,
};

const WAIT: Duration = Duration::from_secs(10);

/// Custom field ids and list option ids, as Trello writes them.
const CF_TEXT: &str = "6a0000000000000000000e01";
const CF_NUMBER: &str = "6a0000000000000000000e02";
const CF_DATE: &str = "6a0000000000000000000e03";
const CF_CHECKBOX: &str = "6a0000000000000000000e04";
const CF_LIST: &str = "6a0000000000000000000e05";
const CF_EMPTY: &str = "6a0000000000000000000e06";
const OPTION_F: &str = "6a0000000000000000000f01";

/// One open source, a short retry schedule, and a `winners` Trello destination on the fake
/// with `extra` keys (and sub-tables) after the required ones.
fn config(trello: &FakeTrello, extra: &str) -> String {
    crate::support::config(&destination("winners", trello, KEY, TOKEN, LIST, extra))
}

fn destination(
    name: &str,
    trello: &FakeTrello,
    key: &str,
    token: &str,
    list: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[destinations.{name}]
type = "trello"
key = "{key}"
token = "{token}"
list_id = "{list}"
api_base = "{base}"
name = "{{{{ participant.firstname }}}} {{{{ participant.lastname }}}}"
{extra}
"#,
        base = trello.base
    )
}

fn custom_fields() -> String {
    format!(
        r#"
[destinations.winners.custom_fields]
{CF_TEXT} = {{ type = "text", value = "{{{{ participant.email }}}}" }}
{CF_NUMBER} = {{ type = "number", value = "{{{{ participation.campaign_id }}}}" }}
{CF_DATE} = {{ type = "date", value = "{{{{ participation.started_at }}}}" }}
{CF_CHECKBOX} = {{ type = "checkbox", value = "{{{{ consent.newsletter }}}}" }}
{CF_LIST} = {{ type = "list", value = "{{% if participant.gender == 'F' %}}{OPTION_F}{{% endif %}}" }}
{CF_EMPTY} = {{ type = "text", value = "{{{{ participant.locality }}}}" }}
"#
    )
}

/// Every request the fake saw carried the credentials in the header and nowhere else, and the
/// delivery log does not hold them either.
/// Waits until the `winners` destination has `count` deliveries, all in `status`.
async fn winners(store: &SqliteStore, status: Status, count: usize) -> Vec<DeliveryRow> {
    wait_deliveries(store, for_destination("winners"), status, count, WAIT).await
}

async fn assert_secrets_only_in_the_header(
    trello: &FakeTrello,
    store: &SqliteStore,
    tokens: &[&str],
) {
    let received = trello.received();
    assert!(!received.is_empty());
    for r in &received {
        for secret in [KEY].iter().chain(tokens) {
            assert!(!r.path.contains(secret), "a secret in the path of {r:?}");
            assert!(!r.query.contains(secret), "a secret in the query of {r:?}");
            assert!(!r.body.contains(secret), "a secret in the body of {r:?}");
        }
        let auth = r.header("authorization").unwrap_or_default();
        assert!(auth.starts_with("OAuth oauth_consumer_key=\""), "{r:?}");
        assert!(auth.contains(KEY), "{r:?}");
    }
    for row in store
        .list(&hookfan::store::Filter::default())
        .await
        .unwrap()
    {
        let (row, attempts) = store.show(row.id).await.unwrap().unwrap();
        let log = format!("{row:?}{attempts:?}");
        for secret in [KEY].iter().chain(tokens) {
            assert!(!log.contains(secret), "a secret in the delivery log: {log}");
        }
    }
}

/// (method, path) of every request, for checking which steps ran.
fn calls(trello: &FakeTrello) -> Vec<(String, String)> {
    trello
        .received()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect()
}

fn count(calls: &[(String, String)], method: &str, path: &str) -> usize {
    calls
        .iter()
        .filter(|(m, p)| m == method && p == path)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_has_the_configured_fields() {
    let trello = FakeTrello::start().await;
    let extra = r#"
desc = "{{ participant.email }} played {{ participation.campaign_name }}"
due = "{{ participation.completed_at }}"
pos = "top"
labels = ["6a00000000000000000000c1", "6a00000000000000000000c2"]
members = ["6a00000000000000000000d1"]
"#;
    let relay = Relay::start(&config(&trello, extra)).await;
    relay.accept(v2_with_id("card-1")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Delivered, 1).await;
    let cards = trello.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(
        cards[0].body,
        json!({
            "idList": LIST,
            "name": "Amélie Dupont-Nguyễn",
            "desc": "amelie.dupont@example.org played Winter quiz 2026",
            "pos": "top",
            "due": "2026-11-20T09:14:41.000Z",
            "idLabels": "6a00000000000000000000c1,6a00000000000000000000c2",
            "idMembers": "6a00000000000000000000d1",
        })
    );
    let got = trello.received();
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(
        got[0].header("authorization"),
        Some(expected_authorization().as_str())
    );
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].response.as_deref(),
        Some(
            format!(
                "card {} (https://trello.com/c/fake1): 0 custom fields, 0 attachments",
                cards[0].id
            )
            .as_str()
        )
    );
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_fields_of_each_type_are_set() {
    let trello = FakeTrello::start().await;
    let relay = Relay::start(&config(&trello, &custom_fields())).await;
    relay.accept(v2_with_id("fields-1")).await;

    let store = relay.store().await;
    winners(&store, Status::Delivered, 1).await;
    let cards = trello.cards();
    assert_eq!(cards.len(), 1);
    let set: Vec<(&str, &Value)> = cards[0]
        .custom_fields
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert_eq!(
        set,
        [
            (
                CF_TEXT,
                &json!({"value": {"text": "amelie.dupont@example.org"}})
            ),
            (CF_NUMBER, &json!({"value": {"number": "771204"}})),
            (
                CF_DATE,
                &json!({"value": {"date": "2026-11-20T09:12:03.000Z"}})
            ),
            (CF_CHECKBOX, &json!({"value": {"checked": "true"}})),
            (CF_LIST, &json!({"idValue": OPTION_F})),
        ]
    );
    // A field that rendered empty is left unset: nothing was sent for it.
    let calls = calls(&trello);
    assert!(
        !calls.iter().any(|(_, p)| p.contains(CF_EMPTY)),
        "{calls:?}"
    );
    assert_eq!(
        trello.received()[1].header("content-type"),
        Some("application/json")
    );
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_v2_upload_are_attached_by_url() {
    let trello = FakeTrello::start().await;
    let relay = Relay::start(&config(&trello, "attach_files = true")).await;
    relay.accept(fixture("participation-v2.json")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Delivered, 1).await;
    let cards = trello.cards();
    assert_eq!(cards.len(), 1);
    assert_eq!(
        cards[0].attachments,
        [json!({
            "url": "https://files.qualifio.com/upload/example/photo-2006.png",
            "name": "photo-2006.png",
            "mimeType": "image/png",
        })]
    );
    let path = format!("/1/cards/{}/attachments", cards[0].id);
    assert_eq!(count(&calls(&trello), "POST", &path), 1);
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    assert!(
        attempts[0]
            .response
            .as_deref()
            .unwrap_or_default()
            .ends_with("1 attachment"),
        "{attempts:?}"
    );
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_after_the_card_repeats_only_the_missing_steps() {
    let trello = FakeTrello::start().await;
    trello.fail_once(
        "PUT",
        &format!("/customField/{CF_NUMBER}/"),
        Reply::status(500).body("oops"),
    );
    let extra = format!("attach_files = true\n{}", custom_fields());
    let relay = Relay::start(&config(&trello, &extra)).await;
    relay.accept(v2_with_id("resume-1")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Delivered, 1).await;
    let cards = trello.cards();
    assert_eq!(cards.len(), 1, "a retry made a second card");
    assert_eq!(cards[0].custom_fields.len(), 5);
    assert_eq!(cards[0].attachments.len(), 1);

    let calls = calls(&trello);
    let card = &cards[0].id;
    let field = |id: &str| format!("/1/cards/{card}/customField/{id}/item");
    assert_eq!(count(&calls, "POST", "/1/cards"), 1);
    assert_eq!(
        count(&calls, "PUT", &field(CF_TEXT)),
        1,
        "done steps are not repeated"
    );
    assert_eq!(
        count(&calls, "PUT", &field(CF_NUMBER)),
        2,
        "the failed step is"
    );
    assert_eq!(count(&calls, "PUT", &field(CF_DATE)), 1);
    assert_eq!(
        count(&calls, "POST", &format!("/1/cards/{card}/attachments")),
        1
    );

    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    let summary = crate::support::attempt_summary(&store, rows[0].id).await;
    assert_eq!(
        summary,
        [(1, "retry", Some(500)), (2, "delivered", Some(200))]
    );
    assert_eq!(
        attempts[0].error.as_deref(),
        Some(
            format!(
                "HTTP 500 Internal Server Error while setting custom field {CF_NUMBER} on card {card}"
            )
            .as_str()
        )
    );
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_creation_finds_its_card_instead_of_making_another() {
    let trello = FakeTrello::start().await;
    // Trello made the card, but the gateway timed out before the answer came back.
    trello.do_then_answer(
        "POST",
        "/1/cards",
        Reply::status(504).body("gateway timeout"),
    );
    // The participation id in the description tells cards of one participant apart.
    let extra = format!("desc = \"{{{{ participation.id }}}}\"\n{}", custom_fields());
    let relay = Relay::start(&config(&trello, &extra)).await;
    relay.accept(v2_with_id("unanswered-1")).await;

    let store = relay.store().await;
    winners(&store, Status::Delivered, 1).await;
    let cards = trello.cards();
    assert_eq!(cards.len(), 1, "the retry made a second card");
    assert_eq!(cards[0].custom_fields.len(), 5);
    let seen = calls(&trello);
    assert_eq!(count(&seen, "POST", "/1/cards"), 1);
    assert_eq!(seen[1], ("GET".into(), format!("/1/lists/{LIST}/cards")));

    // The same participant again, and a 503 that made nothing: the look finds only the first
    // participation's card, which is not this one, so a card is made.
    trello.fail_once("POST", "/1/cards", Reply::status(503));
    relay.accept(v2_with_id("unanswered-2")).await;
    winners(&store, Status::Delivered, 2).await;
    let cards = trello.cards();
    assert_eq!(cards.len(), 2, "one card per participation");
    assert_eq!(cards[1].body["desc"], "unanswered-2");
    assert_eq!(cards[1].custom_fields.len(), 5);
    let seen = calls(&trello);
    let first = format!("/1/cards/{}/", cards[0].id);
    let on_first = seen.iter().filter(|(_, p)| p.starts_with(&first)).count();
    assert_eq!(on_first, 5, "the first participation's card was left alone");
    assert_eq!(count(&seen, "POST", "/1/cards"), 3);
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_list_of_cards_is_no_proof_of_no_card() {
    let trello = FakeTrello::start().await;
    trello.do_then_answer(
        "POST",
        "/1/cards",
        Reply::status(504).body("gateway timeout"),
    );
    // The look-up that follows gets a list cut short: it cannot tell, so it tries again later
    // rather than make a second card.
    trello.fail_once(
        "GET",
        &format!("/1/lists/{LIST}/cards"),
        Reply::status(200).body("[{\"id\":\"6a0000"),
    );
    let extra = "desc = \"{{ participation.id }}\"\n";
    let relay = Relay::start(&config(&trello, extra)).await;
    relay.accept(v2_with_id("cut-1")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Delivered, 1).await;
    assert_eq!(trello.cards().len(), 1, "a second card was made");
    let seen = calls(&trello);
    assert_eq!(count(&seen, "POST", "/1/cards"), 1);
    assert_eq!(count(&seen, "GET", &format!("/1/lists/{LIST}/cards")), 2);
    let summary = crate::support::attempt_summary(&store, rows[0].id).await;
    assert_eq!(
        summary,
        [
            (1, "retry", Some(504)),
            (2, "retry", Some(200)),
            // The look-up found the card and nothing was left to do: no call, no status.
            (3, "delivered", None)
        ]
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_card_counts_against_the_rate_limit() {
    let trello = FakeTrello::start().await;
    // A card with six custom fields is seven calls.
    let extra = format!("rate_limit = \"2/2s\"\n{}", custom_fields());
    let relay = Relay::start(&config(&trello, &extra)).await;
    relay.accept(v2_with_id("paced-1")).await;
    let store = relay.store().await;
    winners(&store, Status::Delivered, 1).await;
    let got = trello.received();
    assert!(got.len() >= 6, "{} calls", got.len());
    let times: Vec<_> = got.iter().map(|r| r.at).collect();
    crate::support::assert_at_most_per_window(&times, 2, Duration::from_secs(2));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_the_time_trello_asks() {
    let trello = FakeTrello::start().await;
    trello.fail_once(
        "POST",
        "/1/cards",
        Reply::status(429)
            .header("Retry-After", "1")
            .body("{\"message\":\"API_TOKEN_LIMIT_EXCEEDED\"}"),
    );
    let relay = Relay::start(&config(&trello, "")).await;
    relay.accept(v2_with_id("slow-down-1")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Delivered, 1).await;
    assert_eq!(trello.cards().len(), 1);
    let got = trello.received();
    assert_eq!(got.len(), 2, "a 429 proves no card was made: no look-up");
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    let (_, attempts) = store.show(rows[0].id).await.unwrap().unwrap();
    assert_eq!(attempts[0].status_code, Some(429));
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("HTTP 429 Too Many Requests while creating the card")
    );
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_and_a_missing_list_are_dead_with_their_reason() {
    let trello = FakeTrello::start().await;
    let wrong_token = "ATTAwrongtoken000000000000000000";
    let missing_list = "6a00000000000000000000aa";
    let cfg = format!(
        "{}[retry]\nschedule = [\"200ms\"]\njitter = 0.0\n{}{}",
        crate::support::OPEN_SOURCE,
        destination("bad_token", &trello, KEY, wrong_token, LIST, ""),
        destination("no_list", &trello, KEY, TOKEN, missing_list, ""),
    );
    let relay = Relay::start(&cfg).await;
    relay.accept(v2_with_id("refused-1")).await;

    let store = relay.store().await;
    let rows = wait_deliveries(&store, for_destination("bad_token"), Status::Dead, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 1, "a 401 is not retried");
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some(
            "HTTP 401: Trello rejected the key or token: check `key` and `token` (creating the card) (Trello: invalid token)"
        )
    );
    let rows = wait_deliveries(&store, for_destination("no_list"), Status::Dead, 1, WAIT).await;
    assert_eq!(rows[0].attempts, 1, "a 404 is not retried");
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some(
            format!(
                "HTTP 404: list {missing_list} not found: it was deleted, or the token's member cannot see its board (Trello: The requested resource was not found.)"
            )
            .as_str()
        )
    );
    assert!(trello.cards().is_empty());
    assert_secrets_only_in_the_header(&trello, &store, &[TOKEN, wrong_token]).await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_dead_with_trellos_text() {
    let trello = FakeTrello::start().await;
    trello.fail_once(
        "POST",
        "/1/cards",
        Reply::status(400).body("invalid value for idLabels"),
    );
    let relay = Relay::start(&config(&trello, "")).await;
    relay.accept(v2_with_id("bad-request-1")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Dead, 1).await;
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("HTTP 400 from Trello while creating the card: invalid value for idLabels")
    );
    assert!(trello.cards().is_empty());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_that_is_no_date_is_dead_before_any_card() {
    let trello = FakeTrello::start().await;
    let relay = Relay::start(&config(&trello, "due = \"{{ participant.email }}\"")).await;
    relay.accept(v2_with_id("bad-due-1")).await;

    let store = relay.store().await;
    let rows = winners(&store, Status::Dead, 1).await;
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("due: cannot read \"amelie.dupont@example.org\" as a date"),
        "{error}"
    );
    assert!(trello.received().is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn preview_shows_the_card_with_secrets_redacted() {
    let trello = FakeTrello::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "desc = \"{{{{ participant.email }}}}\"\ndue = \"{{{{ participation.completed_at }}}}\"\nlabels = [\"6a00000000000000000000c1\"]\nattach_files = true\n{}",
        custom_fields()
    );
    let config = write_config(dir.path(), &config(&trello, &extra));
    let previews = hookfan::commands::preview::preview(
        &config,
        &fixture("participation-v2.json"),
        Some("winners"),
        None,
    )
    .unwrap();
    assert_eq!(previews.len(), 1);
    let p = &previews[0];
    assert_eq!(
        (p.kind.as_str(), p.routed, &p.error),
        ("trello", true, &None)
    );
    let request = p.request.as_ref().unwrap();
    assert_eq!(
        request.action,
        format!(
            "POST {}/1/cards, then PUT /1/cards/{{card}}/customField/{{id}}/item × 5, then POST /1/cards/{{card}}/attachments × 1",
            trello.base
        )
    );
    assert!(request.headers.contains(&(
        "authorization".into(),
        "OAuth oauth_consumer_key=\"***\", oauth_token=\"***\"".into()
    )));
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(
        body["card"],
        json!({
            "idList": LIST,
            "name": "Amélie Dupont-Nguyễn",
            "desc": "amelie.dupont@example.org",
            "pos": "bottom",
            "due": "2026-11-20T09:14:41.000Z",
            "idLabels": "6a00000000000000000000c1",
        })
    );
    assert_eq!(body["custom_fields"][CF_LIST], json!({"idValue": OPTION_F}));
    assert_eq!(
        body["attachments"][0]["url"],
        "https://files.qualifio.com/upload/example/photo-2006.png"
    );
    let text = hookfan::commands::preview::to_text(&previews);
    assert!(text.contains("winners (trello): routed\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("name ") && l.ends_with("= Amélie Dupont-Nguyễn")),
        "{text}"
    );
    let json = hookfan::commands::preview::to_json(&previews).to_string();
    for shown in [&text, &json] {
        assert!(!shown.contains(KEY) && !shown.contains(TOKEN), "{shown}");
    }
    assert!(trello.received().is_empty(), "preview calls nothing");
}

#[tokio::test]
async fn check_online_names_the_list_and_its_board() {
    let trello = FakeTrello::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}{}{}{}",
        crate::support::OPEN_SOURCE,
        destination("winners", &trello, KEY, TOKEN, LIST, ""),
        destination(
            "bad_token",
            &trello,
            KEY,
            "ATTAwrongtoken000000000000000000",
            LIST,
            ""
        ),
        destination(
            "no_list",
            &trello,
            KEY,
            TOKEN,
            "6a00000000000000000000aa",
            ""
        ),
    );
    let config = write_config(dir.path(), &cfg);
    let reached = hookfan::commands::check::online(&config, None)
        .await
        .unwrap();
    let summary: Vec<(&str, bool, &str)> = reached
        .iter()
        .map(|r| (r.name.as_str(), r.ok, r.detail.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "winners",
                true,
                format!(
                    "list \"{LIST_NAME}\" ({LIST}) on board \"{BOARD_NAME}\" (https://trello.com/b/fakeboard/winter-quiz-2026)"
                )
                .as_str()
            ),
            (
                "bad_token",
                false,
                "HTTP 401: Trello rejected the key or token: check `key` and `token` (reading the list) (Trello: invalid token)"
            ),
            (
                "no_list",
                false,
                "HTTP 404: list 6a00000000000000000000aa not found: it was deleted, or the token's member cannot see its board (Trello: The requested resource was not found.)"
            ),
        ]
    );
    let lists = format!("/1/lists/{LIST}");
    let first = &trello.received()[0];
    assert_eq!(
        (first.path.as_str(), first.query.as_str()),
        (lists.as_str(), "fields=name,closed,idBoard")
    );
    let text = hookfan::commands::check::online_text(&reached);
    assert!(
        text.contains("winners          ok: list \"Prize winners\""),
        "{text}"
    );
    for r in trello.received() {
        assert!(!r.path.contains(TOKEN) && !r.query.contains(TOKEN), "{r:?}");
        assert!(!r.query.contains(KEY), "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_died_after_creating_the_card_does_not_cause_a_second() {
    crate::support::init();
    let trello = FakeTrello::start().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let store = SqliteStore::open(&dir.path().join("hookfan.db"))
        .await
        .unwrap();
    store
        .accept(incoming(v2_with_id("in-doubt-1"), &["winners"]))
        .await
        .unwrap();
    // A worker claims it, makes the card, and dies before recording anything.
    leave_a_dead_claim(&store, "winners").await;
    let made = reqwest::Client::new()
        .post(format!("{}/1/cards", trello.base))
        .header("Authorization", expected_authorization())
        .json(&json!({"idList": LIST, "name": "Amélie Dupont-Nguyễn", "desc": "in-doubt-1"}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());

    let extra = "desc = \"{{ participation.id }}\"";
    let relay = Relay::with(&config(&trello, extra)).dir(dir).start().await;
    let rows = winners(&store, Status::Delivered, 1).await;
    assert_eq!(rows[0].attempts, 1);
    assert_eq!(trello.cards().len(), 1, "the new worker made a second card");
    // It looked before it made anything.
    let seen = calls(&trello);
    assert_eq!(count(&seen, "POST", "/1/cards"), 1);
    assert_eq!(count(&seen, "GET", &format!("/1/lists/{LIST}/cards")), 1);
    relay.stop().await;
}
