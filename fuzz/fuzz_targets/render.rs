//! Template rendering with arbitrary payloads: one fixed config whose fields use the custom and
//! built-in filters and whose destination has a `when`, rendered and routed for every input that
//! is JSON. A field may fail to render (`Err`, the delivery is dead), never panic.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use hookfan::config::Config;
use hookfan::mapping::{Mapper, Verdict, context};
use hookfan::router::route;
use libfuzzer_sys::fuzz_target;

/// 2026-11-20T09:15:00Z in Unix milliseconds.
const RECEIVED_MS: i64 = 1_795_166_100_000;

/// The fields of destination `d`, in order.
const FIELDS: &[&str] = &[
    "email",
    "name",
    "sports",
    "played",
    "started",
    "born",
    "unix",
    "newsletter",
    "consents",
    "note",
    "address",
    "city",
    "answers",
    "count",
    "raw",
    "variables",
    "form",
];

const CONFIG: &str = r#"
[sources.qualifio]
auth = "none"

[sources.other]
auth = "none"

[destinations.d]
type = "file"
path = "out.jsonl"
when = '(consent.newsletter | yesno) == "yes" or participation.completed_at | date("%Y") > "2020"'

[destinations.d.fields]
email = "{{ participant.email | trim | lower }}"
name = "{{ participant.firstname | title }} {{ participant.lastname | upper }}"
sports = "{{ participant.sports | join(', ') }}"
played = "{{ participation.completed_at | date('%d/%m/%Y %H:%M', tz='Europe/Brussels') }}"
started = "{{ participation.started_at | date }}"
born = "{{ participant.birthdate | date('%Y-%m-%d') }}"
unix = "{{ dateStartServer | date('%s %A %B %j', tz='America/New_York') }}"
newsletter = "{{ consent.newsletter | yesno('Oui', 'Non') }}"
consents = "{% for k, v in consent | items %}{{ k }}={{ v | yesno }};{% endfor %}"
note = "{{ answer.comment | truncate(20) }}"
address = "{{ crm.address | default('n/a') | truncate(length=5, killwords=true, end='…', leeway=0) }}"
city = "{{ crm.locality | default('unknown') | upper }}"
answers = "{{ answer | tojson }}"
count = "{{ form | length }}"
raw = "{{ id }}-{{ campaign.name | default('none') }}-{{ game.channel.sitename }}"
variables = "{{ questionnaire | map(attribute='variable') | join('|') }}"
form = "{% for f in form %}{{ f.variable }}={{ f.responses | map(attribute='value') | join('/') }};{% endfor %}"

[destinations.off]
type = "file"
path = "off.jsonl"
enabled = false

[destinations.off.fields]
id = "{{ participation.id }}"

[destinations.elsewhere]
type = "file"
path = "elsewhere.jsonl"
sources = ["other"]

[destinations.elsewhere.fields]
id = "{{ participation.id | default('?') }}"
"#;

fn setup() -> &'static (Config, Mapper) {
    static SETUP: OnceLock<(Config, Mapper)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let config = Config::parse(CONFIG, Path::new("hookfan.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("the fixed config: {e}"));
        let mapper = config.mapper().unwrap_or_else(|e| panic!("{e}"));
        (config, mapper)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let (config, mapper) = setup();
    let ctx = context(doc, RECEIVED_MS);

    if let Ok(fields) = mapper.fields("d", &ctx) {
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, FIELDS, "fields out of order");
    }
    let verdict = mapper.when("d", &ctx);

    let routes = route(config, mapper, Some("qualifio"), &ctx);
    let decided: Vec<(&str, bool)> = routes
        .iter()
        .map(|r| (r.destination.as_str(), r.routed))
        .collect();
    assert_eq!(
        decided,
        [
            ("d", verdict == Verdict::Routed),
            ("off", false),
            ("elsewhere", false)
        ]
    );
    for r in &routes {
        assert_eq!(r.routed, r.reason.is_none(), "{r:?}");
    }
    // Without a source (preview), `elsewhere` has no `when` and is routed.
    let preview = route(config, mapper, None, &ctx);
    assert!(
        preview
            .iter()
            .any(|r| r.destination == "elsewhere" && r.routed)
    );
});
