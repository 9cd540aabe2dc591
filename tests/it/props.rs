//! Whatever arrives at the door, mapping must not crash the relay: any JSON, with Qualifio's keys
//! holding any shape, goes through the context, every kind of field template and `when`, and
//! comes out as values or as errors, never as a panic.

use std::path::Path;

use hookfan::config::Config;
use hookfan::mapping::{Verdict, context};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Map, Value};

/// Keys Qualifio uses, at every level, so arbitrary shapes land where the mapping looks.
const KEYS: &[&str] = &[
    "id",
    "configuration",
    "crm",
    "sso",
    "form",
    "optins",
    "questionnaire",
    "game",
    "campaign",
    "channel",
    "website",
    "sitename",
    "name",
    "state",
    "startedAt",
    "completedAt",
    "dateStartServer",
    "dateendserver",
    "variable",
    "responses",
    "response",
    "value",
    "file",
    "path",
    "email",
    "firstname",
    "birthday",
    "newsletter_bit",
    "sports",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z_é]{0,8}",
    ]
}

/// Strings that look like what Qualifio sends, and some that do not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("pushWebhookParticipationV1".to_string()),
        Just("1".to_string()),
        Just("0".to_string()),
        Just(String::new()),
        Just("2026-11-20T09:12:03.000Z".to_string()),
        Just("2019-07-24 14:48:52".to_string()),
        Just("+002019-07-24T14:48:52+14:00".to_string()),
        (-400_000_000_000i64..400_000_000_000).prop_map(|n| n.to_string()),
        "\\PC{0,12}",
        "[0-9 :T.Z+-]{0,24}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Around jiff's range of instants, where conversions may fail.
        (-400_000_000_000i64..400_000_000_000).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A v2-like list entry (`form`, `optins`, `questionnaire`) whose parts may have any shape.
fn entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof![text().prop_map(Value::String), json()],
        prop_oneof![
            prop::collection::vec(
                (json(), json()).prop_map(|(value, file)| {
                    serde_json::json!({"value": value, "file": {"path": file}})
                }),
                0..4
            )
            .prop_map(Value::Array),
            json(),
        ],
        json(),
    )
        .prop_map(|(variable, responses, response)| {
            serde_json::json!({"variable": variable, "responses": responses, "response": response})
        })
}

/// A notification: any JSON at all, or an object whose Qualifio keys hold arbitrary shapes.
fn payload() -> impl Strategy<Value = Value> {
    let object = (
        prop::collection::vec((key(), json()), 0..10),
        prop::option::of(prop::collection::vec(entry(), 0..4)),
        prop::option::of(prop::collection::vec(entry(), 0..3)),
        prop::option::of(prop::collection::vec(entry(), 0..3)),
        any::<bool>(),
    )
        .prop_map(|(pairs, form, optins, questionnaire, v1)| {
            let mut map: Map<String, Value> = pairs.into_iter().collect();
            for (k, list) in [
                ("form", form),
                ("optins", optins),
                ("questionnaire", questionnaire),
            ] {
                if let Some(list) = list {
                    map.insert(k.into(), Value::Array(list));
                }
            }
            if v1 {
                map.insert(
                    "configuration".into(),
                    Value::from("pushWebhookParticipationV1"),
                );
            }
            Value::Object(map)
        });
    prop_oneof![4 => object, 1 => json()]
}

/// Field templates touching every part of the view, with every custom filter.
const FIELDS: &[&str] = &[
    "{{ participation.id }}",
    "{{ participation.format }}",
    "{{ participation.state }}",
    "{{ participation.campaign_id }}{{ participation.campaign_name }}{{ participation.website }}",
    "{{ participation.started_at | date('%d/%m/%Y %H:%M', tz='Europe/Brussels') }}",
    "{{ participation.completed_at | date }}",
    "{{ dateStartServer | date('%Y-%m-%d') }}",
    "{{ dateendserver | date('%s %Z %z') }}",
    "{{ startedAt | date(tz='America/New_York') }}",
    "{{ crm.birthday | date('%d/%m/%Y') }}",
    "{{ participant.firstname | default('?') | upper | trim }}",
    "{{ participant.sports | join(', ') }}",
    "{{ participant.email | truncate(5) }}",
    "{{ participant.email | truncate(3, true, '', leeway=0) }}",
    "{{ consent.newsletter | yesno }}",
    "{{ consent.partners | yesno('Oui', 'Non') }}",
    "{{ answer.q_winner | join('|') | default('-') }}",
    "{{ form[0].responses[0].value }}{{ optins[1].response }}{{ campaign.channel.website.name }}",
    "{{ crm.email }}{{ sso.FNAME }}{{ game.channel.sitename }}",
    "{% for k, v in participant | items %}{{ k }}={{ v }};{% endfor %}",
    "{{ consent | tojson }}",
];

const WHENS: &[&str] = &[
    "consent.newsletter == \"1\"",
    "consent.partners != \"0\" and participant.email",
    "\"cycling\" in participant.sports",
    "participation.started_at | date('%Y') == '2026'",
    "(answer.q_winner | length) > 2",
    "participation.format == 'v1' or crm.locality | lower == 'namur'",
];

/// A config with one destination holding every field template, one per `when`.
fn config() -> Config {
    let mut text = String::from(crate::support::OPEN_SOURCE);
    text.push_str("[destinations.fields]\ntype = \"file\"\npath = \"f.jsonl\"\n");
    text.push_str("[destinations.fields.fields]\n");
    for (i, template) in FIELDS.iter().enumerate() {
        text.push_str(&format!(
            "f{i} = {}\n",
            toml::Value::String(template.to_string())
        ));
    }
    for (i, when) in WHENS.iter().enumerate() {
        text.push_str(&format!(
            "[destinations.w{i}]\ntype = \"file\"\npath = \"w.jsonl\"\nwhen = {}\n",
            toml::Value::String(when.to_string())
        ));
    }
    Config::parse(&text, Path::new("hookfan.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// 256 cases keep the suite fast; `PROPTEST_CASES=10000` searches harder.
fn runner_config() -> RunnerConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    RunnerConfig::with_cases(cases)
}

#[test]
fn mapping_never_panics_on_arbitrary_json() {
    let config = config();
    let mapper = config.mapper().unwrap_or_else(|e| panic!("{e}"));
    let fields = config.destinations[0].name.as_str();
    let mut runner = TestRunner::new(runner_config());
    let result = runner.run(&payload(), |doc| {
        let view = hookfan::payload::context(&doc, "2026-11-20T09:15:00Z");
        // The normalised names are always there and always text, whatever the payload held.
        let participation = &view["participation"];
        for name in [
            "id",
            "format",
            "state",
            "campaign_id",
            "campaign_name",
            "website",
            "started_at",
            "completed_at",
            "received_at",
        ] {
            prop_assert!(participation[name].is_string(), "{name}: {participation}");
        }
        prop_assert!(matches!(
            participation["format"].as_str(),
            Some("v1" | "v2")
        ));
        for part in ["participant", "consent", "answer"] {
            prop_assert!(view[part].is_object(), "{part}: {view}");
        }

        let ctx = context(doc.clone(), 1_795_166_100_000);
        // Errors are allowed (a date that is not one); panics are not.
        let rendered = mapper.fields(fields, &ctx);
        if let Ok(values) = &rendered {
            prop_assert_eq!(values.len(), FIELDS.len());
            // Plain paths never fail, and the format is known.
            prop_assert!(matches!(values[1].1.as_str(), "v1" | "v2"));
        }
        for (i, _) in WHENS.iter().enumerate() {
            let verdict = mapper.when(&format!("w{i}"), &ctx);
            prop_assert!(matches!(
                verdict,
                Verdict::Routed | Verdict::False | Verdict::Error(_)
            ));
        }
        let routes = hookfan::router::route(&config, &mapper, Some("qualifio"), &ctx);
        prop_assert_eq!(routes.len(), config.destinations.len());
        for r in routes.iter().filter(|r| !r.routed) {
            prop_assert!(r.reason.is_some());
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Each plain path template on its own: printing any value, present or not, never fails.
#[test]
fn printing_any_value_never_fails() {
    let text = format!(
        "{}[destinations.d]\ntype = \"file\"\npath = \"f.jsonl\"\nfields = {{ a = \"{{{{ crm }}}}\", b = \"{{{{ form }}}}\", c = \"{{{{ participant.x.y }}}}\", d = \"{{{{ campaign.channel.website }}}}\" }}\n",
        crate::support::OPEN_SOURCE
    );
    let config = Config::parse(&text, Path::new("hookfan.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mapper = config.mapper().unwrap_or_else(|e| panic!("{e}"));
    let mut runner = TestRunner::new(runner_config());
    let result = runner.run(&payload(), |doc| {
        let ctx = context(doc.clone(), 1_795_166_100_000);
        let rendered = mapper.fields("d", &ctx);
        prop_assert!(rendered.is_ok(), "{rendered:?} for {doc}");
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Templates read the context a key at a time (`mapping::context` converts only what they read):
/// whatever they do with it, they see what the whole normalised view, converted at once, holds.
#[test]
fn templates_see_the_whole_normalised_view() {
    const SEEN: &[&str] = &[
        "{{ participation | tojson }}",
        "{{ participant | tojson }}",
        "{% for k, v in participant | items %}{{ k }}={{ v }};{% endfor %}",
        "{{ consent | length }} {{ answer | tojson }}",
        "{{ crm | tojson }} {{ form | tojson }} {{ game.name }} {{ campaign.name }}",
        "{{ id }}{{ participation.id }}{{ participation.id }}",
        // The one way to list the whole context.
        "{{ debug() }}",
    ];
    let fields: Vec<(String, String)> = SEEN
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("f{i}"), t.to_string()))
        .collect();
    let mapper = hookfan::mapping::Mapper::new([hookfan::mapping::Templates {
        destination: "d",
        fields: &fields,
        when: None,
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut runner = TestRunner::new(runner_config());
    let result = runner.run(&payload(), |mut doc| {
        // The view's names taken by the payload too: the view wins.
        if let Some(map) = doc.as_object_mut() {
            map.insert("participant".into(), serde_json::json!({"own": "key"}));
            map.insert("answer".into(), Value::from("own"));
        }
        let whole = hookfan::payload::context(&doc, "2026-11-20T09:15:00Z");
        let whole = minijinja::Value::from(minijinja::value::Serde(whole));
        let lazy = context(doc.clone(), 1_795_166_100_000);
        prop_assert_eq!(
            mapper.fields("d", &lazy),
            mapper.fields("d", &whole),
            "{}",
            doc
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
