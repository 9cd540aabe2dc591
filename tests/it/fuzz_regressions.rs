//! Inputs the fuzz targets (`fuzz/`) found or that are worth keeping: each goes through the same
//! functions as its target and must give the answer written here, without panicking. A crash
//! that a fuzz target finds becomes a test here (fuzz/README.md says how).

use std::path::Path;

use hookfan::config::{Config, ConfigError};
use hookfan::ingress::hooks::parse;
use hookfan::mapping::{self, Mapper, Templates, Verdict, check_expression, check_template};
use hookfan::payload;
use serde_json::Value;

/// 2026-11-20T09:15:00Z in Unix milliseconds, as in the fuzz targets.
const RECEIVED_MS: i64 = 1_795_166_100_000;
const RECEIVED_ISO: &str = "2026-11-20T09:15:00Z";

/// The `ingress` target: parse, then both contexts. Returns the normalised view, or parse's error.
fn ingress(body: &[u8]) -> Result<Value, String> {
    let (doc, id) = parse(body)?;
    let _ = mapping::context(doc.clone(), RECEIVED_MS);
    let view = payload::context(&doc, RECEIVED_ISO);
    assert_eq!(view["participation"]["id"].as_str(), Some(id.as_str()));
    Ok(view)
}

/// The `config` target: any text as a config file.
fn config(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("fuzz.toml"), &|_| None)
}

/// One field template rendered against `payload` (the `render` target's path, one field).
fn render(template: &str, payload: &Value) -> Result<String, String> {
    let fields = [("f".to_string(), template.to_string())];
    let mapper = Mapper::new([Templates {
        destination: "d",
        fields: &fields,
        when: None,
    }])
    .map_err(|e| e.to_string())?;
    let ctx = mapping::context(payload.clone(), RECEIVED_MS);
    mapper
        .fields("d", &ctx)
        .map(|mut f| f.remove(0).1)
        .map_err(|e| e.message)
}

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn ingress_refuses_what_is_not_a_json_object_with_an_id() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "not valid JSON"),
        // Invalid UTF-8 inside a string, and a lone surrogate escape.
        (b"{\"id\":\"\xff\xfe\"}", "not valid JSON"),
        (br#"{"id":"\ud800"}"#, "not valid JSON"),
        // A byte-order mark is not JSON.
        (b"\xef\xbb\xbf{\"id\":\"x\"}", "not valid JSON"),
        // Past f64: refused, not turned into infinity.
        (br#"{"id":"x","n":1e400}"#, "not valid JSON"),
        (b"{\"id\":\"x\"} {}", "not valid JSON"),
        (b"[\"id\"]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (br#"{"id":" \t\n"}"#, "non-empty string"),
        (br#"{"id":7}"#, "non-empty string"),
        (br#"{"ID":"x"}"#, "no `id`"),
    ];
    for (body, expected) in cases {
        let err = ingress(body).expect_err(&String::from_utf8_lossy(body));
        assert!(
            err.contains(expected),
            "{:?}: {err:?} should say {expected:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn ingress_refuses_deep_nesting_without_overflowing_the_stack() {
    // Nesting is measured before parsing and refused past 64 levels: an error, not a stack
    // overflow, even on a test thread's small stack.
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let body = format!(
            "{{\"id\":\"x\",\"crm\":{}}}",
            nested(open, close, 100_000, "1")
        );
        let err = ingress(body.as_bytes()).unwrap_err();
        assert!(err.contains("nested deeper than 64 levels"), "{err}");
    }
    // Shallow nesting in every place the view reads is accepted and ignored.
    let deep = nested("[", "]", 20, "{\"value\":1}");
    let body = format!(
        r#"{{"id":"x","form":[{{"variable":"v","responses":{deep}}}],"crm":{deep},"game":{deep}}}"#
    );
    let view = ingress(body.as_bytes()).unwrap();
    assert_eq!(view["participant"]["v"], "");
}

#[test]
fn ingress_reads_extreme_numbers_and_odd_keys_as_nothing() {
    // Unix seconds past any calendar (jiff's range ends in year 9999) give no date, not a panic.
    for secs in [
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "253402300800",
        "1e300",
        "\"99999999999999999999\"",
        "\"-1\"",
    ] {
        let body = format!(
            r#"{{"id":"x","configuration":"pushWebhookParticipationV1","dateStartServer":{secs}}}"#
        );
        let view = ingress(body.as_bytes()).unwrap();
        let started = view["participation"]["started_at"].as_str().unwrap();
        if secs == "\"-1\"" {
            assert_eq!(started, "1969-12-31T23:59:59Z");
        } else {
            assert_eq!(started, "", "{secs}");
        }
    }
    // A repeated key: the last one wins, as for every key serde_json reads.
    let view = ingress(br#"{"id":"first","id":"second"}"#).unwrap();
    assert_eq!(view["participation"]["id"], "second");
    // The payload's own `participation` is replaced by the normalised view.
    let view = ingress(br#"{"id":"x","participation":{"id":"forged","format":"v9"}}"#).unwrap();
    assert_eq!(view["participation"]["id"], "x");
    assert_eq!(view["participation"]["format"], "v2");
    // A NUL and an emoji in the id are kept as they are.
    let view = ingress(b"{\"id\":\"a\\u0000\xf0\x9f\x98\x80\"}").unwrap();
    assert_eq!(view["participation"]["id"], "a\u{0}\u{1F600}");
}

#[test]
fn filters_fail_or_give_nothing_on_hostile_values() {
    let payload: Value = serde_json::json!({
        "id": "x",
        "big": 1e308,
        "max": i64::MAX,
        "min": i64::MIN,
        "text": "Amélie Dupont-Nguyễn",
        "list": [1, [2, [3]], {"a": null}],
        "empty": "",
    });
    // Dates past jiff's range, or that are no date at all: a render error naming the value.
    for value in ["big", "max", "min", "list", "text"] {
        let err = render(&format!("{{{{ {value} | date }}}}"), &payload).unwrap_err();
        assert!(err.contains("cannot read"), "{value}: {err}");
    }
    assert_eq!(render("{{ empty | date }}", &payload).unwrap(), "");
    assert_eq!(render("{{ nothing.at.all | date }}", &payload).unwrap(), "");
    // A strftime directive jiff does not know is an error, not a panic.
    let err = render("{{ '2026-11-20' | date('%Y %') }}", &payload).unwrap_err();
    assert!(err.contains("bad format"), "{err}");
    // truncate counts characters, never cuts inside one, and takes lengths of 0 and usize::MAX.
    assert_eq!(
        render("{{ text | truncate(3, true, '', leeway=0) }}", &payload).unwrap(),
        "Amé"
    );
    assert_eq!(
        render("{{ text | truncate(0, leeway=0) }}", &payload).unwrap(),
        "..."
    );
    assert_eq!(
        render(
            "{{ text | truncate(18446744073709551615, leeway=18446744073709551615) }}",
            &payload
        )
        .unwrap(),
        "Amélie Dupont-Nguyễn"
    );
    assert_eq!(render("{{ list | yesno }}", &payload).unwrap(), "yes");
    // A template can be written to be slow (the `template` fuzz target found a 24 s one that
    // builds a list of 2.4 million strings), but repetition is capped: an error, not 10 GB.
    let err = render("{{ 'x' * 10000000000 }}", &payload).unwrap_err();
    assert!(err.contains("too large"), "{err}");
    let err = render("{{ [1] * 10000000000 }}", &payload).unwrap_err();
    assert!(err.contains("too large"), "{err}");
    assert_eq!(
        render("{{ text | join(', ') }}", &payload).unwrap(),
        "Amélie Dupont-Nguyễn"
    );
}

#[test]
fn unfinished_templates_and_expressions_are_refused() {
    for template in [
        "{{",
        "{{ participant.email",
        "{{ participant.email }",
        "{%",
        "{% if consent.newsletter %}yes",
        "{% for x in form %}",
        "{#",
        "{{ x | }}",
        "{{ x | date( }}",
    ] {
        assert!(check_template(template).is_err(), "{template:?}");
    }
    assert!(check_template("}} %} #}").is_ok());
    for expression in [
        "",
        "consent.newsletter ==",
        "(((",
        // An attempt to close the `{% if %}` a `when` is wrapped in.
        "x %}{% endif %}{% if y",
        "x %}",
        "x }}",
        "a | nosuchfilter",
    ] {
        assert!(check_expression(expression).is_err(), "{expression:?}");
    }
    assert!(check_expression("consent.newsletter == \"1\"").is_ok());
}

#[test]
fn deeply_nested_templates_are_refused_without_overflowing_the_stack() {
    for template in [
        nested("{{ ", " }}", 1, &nested("(", ")", 10_000, "1")),
        nested("{{ ", " }}", 1, &nested("[", "]", 10_000, "")),
        nested("{% if x %}", "{% endif %}", 10_000, ""),
    ] {
        let err = check_template(&template).unwrap_err();
        assert!(err.contains("recursion"), "{err}");
    }
    let err = check_expression(&nested("(", ")", 10_000, "1")).unwrap_err();
    assert!(err.contains("recursion"), "{err}");
}

#[test]
fn config_text_that_is_not_a_config_is_an_error_with_a_place() {
    // (text, what the error says; None: accepted)
    let cases = [
        ("", Some("fuzz.toml:1:1: sources: no sources")),
        (
            "[sources.q]\ntoken = \"${TOKEN\"\n",
            Some("unclosed \"${\""),
        ),
        (
            "[sources.q]\ntoken = \"${}\"\n",
            Some("not a valid variable reference"),
        ),
        (
            "[sources.q]\ntoken = \"${1X:-y}\"\n",
            Some("not a valid variable reference"),
        ),
        (
            "[sources.q]\nauth = \"none\"\n[destinations.d]\ntype = \"file\"\npath = \"o\"\n[destinations.d.fields]\na = \"{{ x\"\n",
            Some("destinations.d.fields.a"),
        ),
        (
            "[sources.q]\nauth = \"none\"\n[destinations.d]\ntype = \"file\"\npath = \"o\"\nwhen = \"x %}{% endif %}{% if y\"\n",
            Some("destinations.d.when"),
        ),
        // An unterminated string after multi-byte characters: the column counts characters.
        (
            "a = \"\u{e9}\u{e9}\u{e9}",
            Some("fuzz.toml:1:9: TOML syntax error"),
        ),
        // A byte-order mark before the first table is allowed.
        ("\u{feff}[sources.q]\nauth = \"none\"\n", None),
    ];
    for (text, expected) in cases {
        match (config(text), expected) {
            (Ok(_), None) => {}
            (Ok(_), Some(message)) => panic!("{text:?} was accepted; expected {message:?}"),
            (Err(e), None) => panic!("{text:?}: {e}"),
            (Err(e), Some(message)) => {
                assert!(e.to_string().contains(message), "{text:?}: {e}")
            }
        }
    }
}

#[test]
fn deeply_nested_toml_does_not_overflow_the_stack() {
    for text in [
        format!("a = {}", nested("[", "]", 100_000, "")),
        format!("a = {}", nested("{ b = ", " }", 100_000, "1")),
        format!("[{}]\nb = 1\n", vec!["x"; 10_000].join(".")),
    ] {
        assert!(config(&text).is_err());
    }
}

#[test]
fn a_config_that_validates_compiles_its_templates() {
    let text = r#"
[sources.q]
auth = "none"
[destinations.d]
type = "file"
path = "o.jsonl"
when = 'participation.completed_at | date("%Y") > "2020"'
[destinations.d.fields]
played = "{{ participation.completed_at | date('%d/%m/%Y', tz='Europe/Brussels') }}"
"#;
    let config = config(text).unwrap();
    let mapper = config.mapper().unwrap();
    // An e-mail where a date should be: `when` fails, and the destination is not routed.
    let doc = serde_json::json!({"id": "x", "completedAt": "a@b.c"});
    let ctx = mapping::context(doc, RECEIVED_MS);
    assert!(matches!(mapper.when("d", &ctx), Verdict::Error(_)));
    let routes = hookfan::router::route(&config, &mapper, Some("q"), &ctx);
    assert!(!routes[0].routed);
}
