//! A marketer maps Qualifio participations to columns without knowing which of Qualifio's two
//! formats arrives: the normalised view must give the same names, with exact values, for both
//! sample payloads; missing data must render as nothing; filters must read Qualifio's loose dates.

use std::path::Path;

use hookfan::commands::preview::{DestinationPreview, preview};
use hookfan::config::Config;
use hookfan::mapping::{RenderError, Verdict, context};
use serde_json::{Value, json};

/// When hookfan "accepted" the notification (2026-11-20T09:15:00Z, in Unix milliseconds),
/// fixed so `participation.received_at` is exact.
const RECEIVED: i64 = 1_795_166_100_000;
/// The same time as the normalised view writes it.
const RECEIVED_ISO: &str = "2026-11-20T09:15:00Z";

fn fixture_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&fixture_text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// One file destination named `d` with these fields (and `when`, if any).
fn config_with(fields: &[(&str, &str)], when: Option<&str>) -> Config {
    let mut text = format!(
        "{}\n[destinations.d]\ntype = \"file\"\npath = \"out.jsonl\"\n",
        crate::support::OPEN_SOURCE
    );
    if let Some(when) = when {
        text.push_str(&format!("when = {}\n", quoted(when)));
    }
    text.push_str("[destinations.d.fields]\n");
    for (name, template) in fields {
        text.push_str(&format!("{} = {}\n", quoted(name), quoted(template)));
    }
    Config::parse(&text, Path::new("hookfan.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}\nin:\n{text}"))
}

/// Renders destination `d`'s fields for a payload.
fn try_render(
    fields: &[(&str, &str)],
    payload: &Value,
) -> Result<Vec<(String, String)>, RenderError> {
    let config = config_with(fields, None);
    let mapper = config.mapper().unwrap_or_else(|e| panic!("{e}"));
    let ctx = context(payload.clone(), RECEIVED);
    mapper.fields("d", &ctx)
}

fn render(fields: &[(&str, &str)], payload: &Value) -> Vec<(String, String)> {
    try_render(fields, payload).unwrap_or_else(|e| panic!("{e}"))
}

/// Renders one template.
fn one(template: &str, payload: &Value) -> String {
    render(&[("f", template)], payload).remove(0).1
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Every name of the normalised view as a template, with its expected value for v1 and v2.
const VIEW: &[(&str, &str, &str)] = &[
    (
        "participation.id",
        "5BA43A1F-2714-4833-8497-6973867E6D7C",
        "9C2E41F0-55B7-4D0E-8E0B-2F6A7D1C3B88",
    ),
    ("participation.format", "v1", "v2"),
    ("participation.state", "COMPLETED", "COMPLETED"),
    ("participation.campaign_id", "650135", "771204"),
    (
        "participation.campaign_name",
        "Test Mr.Wonderful",
        "Winter quiz 2026",
    ),
    ("participation.website", "S&Q News", "Sports Daily"),
    (
        "participation.started_at",
        "2019-07-24T12:48:55Z",
        "2026-11-20T09:12:03Z",
    ),
    (
        "participation.completed_at",
        "2019-07-24T12:49:18Z",
        "2026-11-20T09:14:41Z",
    ),
    ("participation.received_at", RECEIVED_ISO, RECEIVED_ISO),
    ("participant.firstname", "Quentin", "Amélie"),
    ("participant.lastname", "Lebrun", "Dupont-Nguyễn"),
    // v1's form left the e-mail empty; v2 has one.
    ("participant.email", "", "amelie.dupont@example.org"),
    ("answer.q_winner", "", "Team Blue"),
];

#[test]
fn both_formats_give_the_same_names() {
    let fields: Vec<(&str, String)> = VIEW
        .iter()
        .map(|(name, _, _)| (*name, format!("{{{{ {name} }}}}")))
        .collect();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, t)| (*n, t.as_str())).collect();
    for (file, column) in [("participation-v1.json", 1), ("participation-v2.json", 2)] {
        let got = render(&fields, &fixture(file));
        let expected: Vec<(String, String)> = VIEW
            .iter()
            .map(|row| {
                let value = if column == 1 { row.1 } else { row.2 };
                (row.0.to_string(), value.to_string())
            })
            .collect();
        assert_eq!(got, expected, "{file}");
    }
}

#[test]
fn the_v1_view_in_full() {
    let ctx = hookfan::payload::context(&fixture("participation-v1.json"), RECEIVED_ISO);
    assert_eq!(
        ctx["participation"],
        json!({
            "id": "5BA43A1F-2714-4833-8497-6973867E6D7C",
            "format": "v1",
            "state": "COMPLETED",
            "campaign_id": "650135",
            "campaign_name": "Test Mr.Wonderful",
            "website": "S&Q News",
            "started_at": "2019-07-24T12:48:55Z",
            "completed_at": "2019-07-24T12:49:18Z",
            "received_at": RECEIVED_ISO,
        })
    );
    // crm first, then sso for what crm lacks.
    assert_eq!(
        ctx["participant"],
        json!({
            "address": "Rue de la noix",
            "birthday": "567903600",
            "email": "",
            "firstname": "Quentin",
            "label10_bit": "1",
            "label1_bit": "1",
            "lastname": "Lebrun",
            "locality": "namur",
            "number": "12",
            "phone": "0408/27.36.40",
            "zipcode": "5000",
            "EMAIL": "",
            "FNAME": "Quentin",
            "LNAME": "Lebrun",
            "dailynews": "1",
            "sportnews": "1",
        })
    );
    // The `_bit` opt-ins, named without the suffix.
    assert_eq!(ctx["consent"], json!({"label10": "1", "label1": "1"}));
    assert_eq!(ctx["answer"], json!({}));
    // The raw payload stays at the top level.
    assert_eq!(ctx["crm"]["locality"], "namur");
    assert_eq!(ctx["game"]["channel"]["sitename"], "S&Q News");
}

#[test]
fn the_v2_view_in_full() {
    let ctx = hookfan::payload::context(&fixture("participation-v2.json"), RECEIVED_ISO);
    assert_eq!(
        ctx["participation"],
        json!({
            "id": "9C2E41F0-55B7-4D0E-8E0B-2F6A7D1C3B88",
            "format": "v2",
            "state": "COMPLETED",
            "campaign_id": "771204",
            "campaign_name": "Winter quiz 2026",
            "website": "Sports Daily",
            "started_at": "2026-11-20T09:12:03Z",
            "completed_at": "2026-11-20T09:14:41Z",
            "received_at": RECEIVED_ISO,
        })
    );
    assert_eq!(
        ctx["participant"],
        json!({
            "firstname": "Amélie",
            "lastname": "Dupont-Nguyễn",
            "email": "amelie.dupont@example.org",
            "gender": "F",
            // Check boxes: several responses make a list.
            "sports": ["cycling", "tennis"],
            // A file upload's value is its URL.
            "photo": "https://files.qualifio.com/upload/example/photo-2006.png",
        })
    );
    assert_eq!(ctx["consent"], json!({"newsletter": "1", "partners": "0"}));
    assert_eq!(ctx["answer"], json!({"q_winner": "Team Blue"}));
    assert_eq!(
        ctx["campaign"]["channel"]["website"]["domain"],
        "sportsdaily.example"
    );
}

#[test]
fn accented_and_non_latin_names_survive_unchanged() {
    let v2 = fixture("participation-v2.json");
    let got = render(
        &[
            ("Prénom", "{{ participant.firstname }}"),
            ("名前", "{{ participant.lastname }}"),
            ("upper", "{{ participant.lastname | upper }}"),
            ("raw", "{{ form[1].responses[0].value }}"),
        ],
        &v2,
    );
    assert_eq!(
        got,
        pairs(&[
            ("Prénom", "Amélie"),
            ("名前", "Dupont-Nguyễn"),
            ("upper", "DUPONT-NGUYỄN"),
            ("raw", "Dupont-Nguyễn"),
        ])
    );
}

#[test]
fn several_responses_are_a_list_to_join() {
    let v2 = fixture("participation-v2.json");
    assert_eq!(
        one("{{ participant.sports | join(\", \") }}", &v2),
        "cycling, tennis"
    );
    assert_eq!(one("{{ participant.sports | length }}", &v2), "2");
    assert_eq!(one("{{ participant.sports[1] }}", &v2), "tennis");
    // A check-box field with a single response is its value; `join` keeps it whole instead of
    // joining its letters ("c, y, c, l, i, n, g"), so one mapping serves both cases.
    assert_eq!(one("{{ participant.gender | join(\", \") }}", &v2), "F");
    let mut one_sport = v2.clone();
    one_sport["form"][4]["responses"] = json!([{"label": "Cycling", "value": "cycling"}]);
    assert_eq!(
        one("{{ participant.sports | join(\", \") }}", &one_sport),
        "cycling"
    );
    // And a missing field joins to nothing.
    assert_eq!(one("{{ participant.hobbies | join(\", \") }}", &v2), "");
}

#[test]
fn a_missing_crm_renders_empty_values() {
    let no_crm = fixture("participation-v1-no-crm.json");
    let got = render(
        &[
            ("locality", "{{ crm.locality }}"),
            ("first", "{{ participant.firstname }}"),
            ("sso_first", "{{ participant.FNAME }}"),
            ("consent", "{{ consent.label1 }}"),
            ("deep", "{{ crm.address.street.number }}"),
            ("id", "{{ participation.id }}"),
        ],
        &no_crm,
    );
    assert_eq!(
        got,
        pairs(&[
            ("locality", ""),
            ("first", ""),
            // sso still fills the participant.
            ("sso_first", "Quentin"),
            ("consent", ""),
            ("deep", ""),
            ("id", "0C7F3E2A-1B4D-4E5F-9A8B-7C6D5E4F3A2B"),
        ])
    );
}

/// The previews of a config for a payload, by destination name.
fn previews(config: &Config, payload: &str) -> Vec<DestinationPreview> {
    preview(config, payload, None, None).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_refused_consent_is_filtered_out_by_when() {
    let config = Config::parse(
        r#"
[sources.qualifio]
auth = "none"

[destinations.newsletter]
type = "file"
path = "newsletter.jsonl"
when = 'consent.newsletter == "1"'
fields = { email = "{{ participant.email }}" }

[destinations.partners]
type = "file"
path = "partners.jsonl"
when = 'consent.partners == "1"'
fields = { email = "{{ participant.email }}" }
"#,
        Path::new("hookfan.toml"),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let got = previews(&config, &fixture_text("participation-v2.json"));
    let routes: Vec<(&str, bool, Option<&str>)> = got
        .iter()
        .map(|p| (p.name.as_str(), p.routed, p.reason.as_deref()))
        .collect();
    assert_eq!(
        routes,
        [
            ("newsletter", true, None),
            (
                "partners",
                false,
                Some("when `consent.partners == \"1\"` is false")
            ),
        ]
    );
    // The preview still shows what would have been sent.
    assert_eq!(
        got[1].fields,
        pairs(&[("email", "amelie.dupont@example.org")])
    );
}

#[test]
fn routing_names_every_reason() {
    let config = Config::parse(
        r#"
[sources.qualifio]
auth = "none"
[sources.other]
auth = "none"

[destinations.off]
type = "file"
path = "a.jsonl"
enabled = false

[destinations.elsewhere]
type = "file"
path = "b.jsonl"
sources = ["other"]

[destinations.broken]
type = "file"
path = "c.jsonl"
# Fine at load (nothing to divide yet), fails on this payload's "0".
when = '1 / (consent.partners | int) == 1'

[destinations.always]
type = "file"
path = "d.jsonl"
"#,
        Path::new("hookfan.toml"),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mapper = config.mapper().unwrap_or_else(|e| panic!("{e}"));
    let ctx = context(fixture("participation-v2.json"), RECEIVED);
    let routes = hookfan::router::route(&config, &mapper, Some("qualifio"), &ctx);
    let got: Vec<(&str, bool, Option<&str>)> = routes
        .iter()
        .map(|r| (r.destination.as_str(), r.routed, r.reason.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("off", false, Some("disabled (enabled = false)")),
            (
                "elsewhere",
                false,
                Some("source \"qualifio\" is not in sources [other]")
            ),
            (
                "broken",
                false,
                Some("when `1 / (consent.partners | int) == 1` failed: unable to calculate 1 / 0")
            ),
            ("always", true, None),
        ]
    );
    assert_eq!(
        hookfan::router::routed(&config, &mapper, "other", || ctx.clone()),
        ["elsewhere", "always"]
    );
}

#[test]
fn a_when_that_fails_at_run_time_is_not_routed_and_does_not_panic() {
    let v2 = fixture("participation-v2.json");
    for (when, reason) in [
        // A list has no `upper` method.
        (
            "participant.sports.upper() == 'X'",
            "has no method named upper",
        ),
        (
            "(participant.sports | length) // 0 == 1",
            "unable to calculate 2 // 0",
        ),
        ("participation.id | date", "date: cannot read"),
    ] {
        let config = config_with(&[], Some(when));
        let mapper = config.mapper().unwrap_or_else(|e| panic!("{e}"));
        let ctx = context(v2.clone(), RECEIVED);
        match mapper.when("d", &ctx) {
            Verdict::Error(e) => assert!(e.contains(reason), "{when}: {e}"),
            other => panic!("{when}: expected an error, got {other:?}"),
        }
    }
}

#[test]
fn the_date_filter_reads_qualifio_dates() {
    let v1 = fixture("participation-v1.json");
    let v2 = fixture("participation-v2.json");
    let got = render(
        &[
            // Unix seconds as a number, and as a string.
            ("start", "{{ dateStartServer | date('%Y-%m-%d %H:%M') }}"),
            ("end", "{{ dateendserver | date }}"),
            // Qualifio's local `YYYY-MM-DD HH:MM:SS`, already in local time.
            ("play", "{{ playTime | date('%d/%m/%Y %Hh%M') }}"),
            // An instant shown in Brussels: summer time is UTC+2.
            (
                "start_be",
                "{{ participation.started_at | date('%H:%M:%S %Z', tz='Europe/Brussels') }}",
            ),
            // The birthday is midnight in Brussels, still the day before in UTC.
            ("birthday_utc", "{{ crm.birthday | date('%d/%m/%Y') }}"),
            (
                "birthday_be",
                "{{ crm.birthday | date('%d/%m/%Y', tz='Europe/Brussels') }}",
            ),
            ("missing", "{{ crm.weddingday | date('%Y') }}"),
            ("empty", "{{ crm.email | date('%Y') }}"),
        ],
        &v1,
    );
    assert_eq!(
        got,
        pairs(&[
            ("start", "2019-07-24 12:48"),
            ("end", "2019-07-24 12:49:18"),
            ("play", "24/07/2019 14h48"),
            ("start_be", "14:48:55 CEST"),
            ("birthday_utc", "30/12/1987"),
            ("birthday_be", "31/12/1987"),
            ("missing", ""),
            ("empty", ""),
        ])
    );
    // ISO 8601 with fractions and `Z`, in winter time (UTC+1).
    assert_eq!(
        one(
            "{{ completedAt | date('%d/%m/%Y %H:%M', tz='Europe/Brussels') }}",
            &v2
        ),
        "20/11/2026 10:14"
    );
    assert_eq!(one("{{ startedAt | date('%Y-%m-%d') }}", &v2), "2026-11-20");
}

#[test]
fn a_date_that_is_not_one_fails_its_field() {
    let v2 = fixture("participation-v2.json");
    for (template, words) in [
        (
            "{{ participant.firstname | date }}",
            "cannot read Amélie as a date",
        ),
        ("{{ campaign.themes | date }}", "cannot read"),
        ("{{ true | date }}", "as a date"),
        (
            "{{ startedAt | date(tz='Europe/Bruxelles') }}",
            "unknown time zone \"Europe/Bruxelles\"",
        ),
    ] {
        let fields = [("email", "{{ participant.email }}"), ("when", template)];
        match try_render(&fields, &v2) {
            Err(e) => {
                assert_eq!(e.field, "when", "{template}");
                assert!(e.message.contains(words), "{template}: {e}");
            }
            Ok(got) => panic!("{template}: expected an error, got {got:?}"),
        }
    }
}

#[test]
fn yesno() {
    let v2 = fixture("participation-v2.json");
    let got = render(
        &[
            ("newsletter", "{{ consent.newsletter | yesno }}"),
            ("partners", "{{ consent.partners | yesno }}"),
            ("fr", "{{ consent.newsletter | yesno('Oui', 'Non') }}"),
            ("fr_no", "{{ consent.partners | yesno('Oui', 'Non') }}"),
            ("missing", "{{ consent.sms | yesno }}"),
            (
                "bool",
                "{{ questionnaire[0].responses[0].isCorrect | yesno }}",
            ),
        ],
        &v2,
    );
    assert_eq!(
        got,
        pairs(&[
            ("newsletter", "yes"),
            ("partners", "no"),
            ("fr", "Oui"),
            ("fr_no", "Non"),
            ("missing", ""),
            ("bool", "yes"),
        ])
    );
}

#[test]
fn built_in_filters_work_on_present_and_missing_values() {
    let v2 = fixture("participation-v2.json");
    let got = render(
        &[
            (
                "default_present",
                "{{ participant.firstname | default('n/a') }}",
            ),
            ("default_missing", "{{ crm.firstname | default('n/a') }}"),
            ("upper_present", "{{ participant.email | upper }}"),
            ("upper_missing", "{{ crm.email | upper }}"),
            ("trim_present", "{{ '  Namur ' | trim }}"),
            ("trim_missing", "{{ crm.locality | trim }}"),
            ("join_missing", "{{ crm.tags | join(', ') }}"),
            // 16 characters: more than 10 + the default leeway of 5, cut at a word.
            (
                "truncate_present",
                "{{ participation.campaign_name | truncate(10) }}",
            ),
            (
                "truncate_short",
                "{{ participant.firstname | truncate(10) }}",
            ),
            (
                "truncate_kill",
                "{{ participation.campaign_name | truncate(8, true, '…', leeway=0) }}",
            ),
            ("truncate_missing", "{{ crm.locality | truncate(3) }}"),
            (
                "chain_missing",
                "{{ crm.locality | trim | upper | truncate(3) | default('-') }}",
            ),
        ],
        &v2,
    );
    assert_eq!(
        got,
        pairs(&[
            ("default_present", "Amélie"),
            ("default_missing", "n/a"),
            ("upper_present", "AMELIE.DUPONT@EXAMPLE.ORG"),
            ("upper_missing", ""),
            ("trim_present", "Namur"),
            ("trim_missing", ""),
            ("join_missing", ""),
            ("truncate_present", "Winter..."),
            ("truncate_short", "Amélie"),
            ("truncate_kill", "Winter …"),
            ("truncate_missing", ""),
            // `trim` of a missing value is "", which `default` keeps: it only replaces missing.
            ("chain_missing", ""),
        ])
    );
}

#[test]
fn preview_maps_in_field_order() {
    let config = config_with(
        &[
            ("id", "{{ participation.id }}"),
            (
                "name",
                "{{ participant.firstname }} {{ participant.lastname }}",
            ),
            ("sports", "{{ participant.sports | join(', ') }}"),
            ("newsletter", "{{ consent.newsletter | yesno }}"),
            ("received", "{{ participation.received_at }}"),
        ],
        None,
    );
    let got = previews(&config, &fixture_text("participation-v2.json"));
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(
        (d.name.as_str(), d.kind.as_str(), d.routed),
        ("d", "file", true)
    );
    assert_eq!(d.error, None);
    let names: Vec<&str> = d.fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["id", "name", "sports", "newsletter", "received"]);
    assert_eq!(
        d.fields[..4],
        pairs(&[
            ("id", "9C2E41F0-55B7-4D0E-8E0B-2F6A7D1C3B88"),
            ("name", "Amélie Dupont-Nguyễn"),
            ("sports", "cycling, tennis"),
            ("newsletter", "yes"),
        ])
    );
    // Preview stamps "now" as the time it was received.
    let received = &d.fields[4].1;
    assert!(
        received.len() == 20 && received.ends_with('Z') && received.contains('T'),
        "{received}"
    );
    // The file connector would append one JSON line with the same fields, in the same order.
    let request = d
        .request
        .as_ref()
        .unwrap_or_else(|| panic!("no request in the preview"));
    assert!(
        request.body.starts_with(
            "{\"id\":\"9C2E41F0-55B7-4D0E-8E0B-2F6A7D1C3B88\",\"name\":\"Amélie Dupont-Nguyễn\","
        ),
        "{}",
        request.body
    );
}

#[test]
fn a_failing_field_shows_as_the_preview_error() {
    let config = config_with(
        &[
            ("email", "{{ participant.email }}"),
            ("born", "{{ participant.firstname | date }}"),
        ],
        None,
    );
    let got = previews(&config, &fixture_text("participation-v2.json"));
    assert_eq!(got[0].fields, []);
    let error = got[0].error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("field \"born\": date: cannot read Amélie as a date"),
        "{error}"
    );
}

#[test]
fn preview_rejects_what_is_not_a_participation() {
    let config = config_with(&[("id", "{{ participation.id }}")], None);
    let err = |payload: &str, only: Option<&str>| match preview(&config, payload, only, None) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e.to_string(),
    };
    assert!(err("{not json", None).starts_with("the payload is not JSON"));
    assert_eq!(err("[1, 2]", None), "the payload must be a JSON object");
    assert_eq!(err("{}", Some("nope")), "no destination named \"nope\"");
    // A misspelt source would otherwise pass for one no destination listens to.
    match preview(&config, "{}", None, Some("qualifo")) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => assert_eq!(
            e.to_string(),
            "no source named \"qualifo\" (sources: qualifio)"
        ),
    }
}
