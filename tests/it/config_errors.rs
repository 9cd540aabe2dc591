//! A marketer edits `hookfan.toml` and gets it wrong in every way we could think of. Each mistake
//! must come back as `file:line:column: key: message`, pointing at the right spot, with words that
//! say how to fix it. And a right file must load with the documented defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookfan::config::{Config, ConfigError, Problem, RetryPolicy};

use crate::support::OPEN_SOURCE as SOURCE;

/// The environment the tests pretend to run in.
fn env(name: &str) -> Option<String> {
    match name {
        "QUALIFIO_TOKEN" => Some("tok-0123456789abcdef".into()),
        "CRM_PASSWORD" => Some("pw-crm-hunter2".into()),
        _ => None,
    }
}

/// Writes config text without the indentation it has in this file, so columns are predictable.
fn doc(text: &str) -> String {
    let mut out: String = text
        .trim_start_matches('\n')
        .lines()
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(&doc(text), Path::new("hookfan.toml"), &env)
}

fn load(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("expected config errors, but it loaded:\n{}", doc(text)),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(e) => panic!("expected ConfigError::Invalid, got {e:?}"),
    }
}

/// The file must have exactly one problem.
fn problem(text: &str) -> Problem {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "expected one problem, got {all:#?}");
    all.remove(0)
}

/// Checks where a problem is and that its message says each of `words`.
#[track_caller]
fn assert_at(p: &Problem, line: usize, column: usize, key: &str, words: &[&str]) {
    assert_eq!(p.file, PathBuf::from("hookfan.toml"), "{p}");
    assert_eq!(
        (p.line, p.column, p.key.as_str()),
        (line, column, key),
        "{p}"
    );
    for w in words {
        assert!(p.message.contains(w), "message lacks {w:?}: {p}");
    }
}

/// The smallest valid start: one source.

// ---------------------------------------------------------------------------------------------
// TOML itself

#[test]
fn a_toml_syntax_error_names_its_line() {
    let p = problem(
        r#"
        [server]
        listen = "127.0.0.1:8080
        "#,
    );
    assert_at(&p, 2, 25, "", &["TOML syntax error"]);
    // The printed form has no key part when there is no key.
    assert!(
        p.to_string()
            .starts_with("hookfan.toml:2:25: TOML syntax error"),
        "{p}"
    );
}

#[test]
fn a_key_written_twice_is_a_syntax_error_at_the_second() {
    let p = problem(
        r#"
        [server]
        listen = "127.0.0.1:8080"
        listen = "127.0.0.1:9090"
        "#,
    );
    assert_eq!((p.line, p.key.as_str()), (3, ""), "{p}");
    assert!(p.message.contains("duplicate key"), "{p}");
}

// ---------------------------------------------------------------------------------------------
// Unknown keys: each names the key, and the valid ones

#[test]
fn an_unknown_top_level_key() {
    // Above the first table: a key after `[sources.qualifio]` would belong to the source.
    let p = problem(&format!("colour = \"blue\"\n{SOURCE}"));
    assert_at(
        &p,
        1,
        1,
        "colour",
        &["unknown field `colour`", "`server`", "`destinations`"],
    );
}

#[test]
fn an_unknown_key_in_server() {
    let p = problem(&format!("[server]\nlissen = \"0.0.0.0:80\"\n{SOURCE}"));
    assert_at(
        &p,
        2,
        1,
        "server.lissen",
        &["unknown field `lissen`", "`listen`", "`max_body`"],
    );
    assert_eq!(
        p.to_string(),
        format!("hookfan.toml:2:1: server.lissen: {}", p.message)
    );
}

#[test]
fn an_unknown_key_in_a_source() {
    let p = problem(
        r#"
        [sources.qualifio]
        basic = { username = "q", pasword = "x" }
        "#,
    );
    assert_at(
        &p,
        2,
        27,
        "sources.qualifio.basic.pasword",
        &["unknown field `pasword`", "`password`"],
    );
    let p = problem(
        r#"
        [sources.qualifio]
        auth = "none"
        secret = "x"
        "#,
    );
    assert_at(
        &p,
        3,
        1,
        "sources.qualifio.secret",
        &[
            "unknown field `secret`",
            "`token`",
            "`hmac_secrets`",
            "`auth`",
        ],
    );
}

#[test]
fn an_unknown_common_key_in_a_destination_lists_both_kinds_of_keys() {
    let p = problem(&format!(
        "{SOURCE}[destinations.archive]\ntype = \"file\"\npath = \"out.jsonl\"\nenable = false\n"
    ));
    assert_at(
        &p,
        6,
        1,
        "destinations.archive.enable",
        &[
            "unknown field `enable`",
            // the file type's own keys…
            "`path`",
            "`body`",
            // …and the keys every destination has.
            "enabled",
            "rate_limit",
        ],
    );
}

#[test]
fn an_unknown_webhook_key_lists_the_webhook_keys() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"https://crm.example/in\"\nmethd = \"PUT\"\n"
    ));
    assert_at(
        &p,
        6,
        1,
        "destinations.crm.methd",
        &[
            "unknown field `methd`",
            "`url`",
            "`method`",
            "`format`",
            "`headers`",
            "`timeout`",
            "`signing_secret`",
            "when",
        ],
    );
}

#[test]
fn plain_http_to_another_host_is_refused_unless_allowed() {
    let crm = |url: &str, extra: &str| {
        format!("{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"{url}\"\n{extra}")
    };
    let p = problem(&crm("http://crm.example/in", ""));
    assert_at(
        &p,
        5,
        1,
        "destinations.crm.url",
        &["plain http://", "in clear", "https://", "allow_http = true"],
    );
    // Loopback (a local proxy) and https are fine; so is http once explicitly allowed.
    load(&crm("http://127.0.0.1:9000/in", ""));
    load(&crm("https://crm.example/in", ""));
    load(&crm("http://crm.internal/in", "allow_http = true\n"));
}

#[test]
fn an_unknown_key_in_a_destination_retry_table() {
    let p = problem(&format!(
        "{SOURCE}[destinations.archive]\ntype = \"file\"\npath = \"out.jsonl\"\n[destinations.archive.retry]\njiter = 0.1\n"
    ));
    assert_at(
        &p,
        7,
        1,
        "destinations.archive.retry.jiter",
        &["unknown field `jiter`", "`jitter`"],
    );
}

// ---------------------------------------------------------------------------------------------
// Destination types

#[test]
fn an_unknown_type_lists_the_valid_ones() {
    let p = problem(&format!("{SOURCE}[destinations.chat]\ntype = \"slack\"\n"));
    assert_at(
        &p,
        4,
        1,
        "destinations.chat.type",
        &["unknown type \"slack\": valid types are webhook, google_sheets, trello, file"],
    );
}

#[test]
fn a_destination_without_type() {
    let p = problem(&format!(
        "{SOURCE}[destinations.archive]\npath = \"out.jsonl\"\n"
    ));
    // Points at the destination's name in its table header.
    assert_at(
        &p,
        3,
        15,
        "destinations.archive",
        &["missing `type`", "webhook, google_sheets, trello, file"],
    );
}

// ---------------------------------------------------------------------------------------------
// Sources and authentication

#[test]
fn a_source_without_authentication_says_why_it_needs_one() {
    let p = problem(
        r#"
        [sources.qualifio]
        path = "/hooks/q"
        "#,
    );
    assert_at(
        &p,
        1,
        10,
        "sources.qualifio",
        &[
            "no authentication",
            "Qualifio must post to an authenticated URL",
            "auth = \"none\"",
        ],
    );
}

#[test]
fn auth_none_beside_credentials_is_a_contradiction() {
    let p = problem(
        r#"
        [sources.qualifio]
        token = "${QUALIFIO_TOKEN}"
        auth = "none"
        "#,
    );
    assert_at(&p, 3, 1, "sources.qualifio.auth", &["contradicts"]);
}

#[test]
fn two_sources_on_one_path() {
    // `b` says explicitly what `qualifio` gets by default.
    let p = problem(
        r#"
        [sources.qualifio]
        auth = "none"
        [sources.b]
        path = "/hooks/qualifio"
        auth = "none"
        "#,
    );
    assert_at(
        &p,
        4,
        1,
        "sources.b.path",
        &["/hooks/qualifio overlaps the path of source \"qualifio\""],
    );
}

#[test]
fn a_source_path_under_another_is_refused() {
    // `/hooks/qualifio/<token>` is a route of `qualifio`: `/hooks/qualifio/eu` would be caught by it.
    let p = problem(
        r#"
        [sources.qualifio]
        auth = "none"
        [sources.eu]
        path = "/hooks/qualifio/eu"
        auth = "none"
        "#,
    );
    assert_at(
        &p,
        4,
        1,
        "sources.eu.path",
        &["/hooks/qualifio/eu overlaps the path of source \"qualifio\" (/hooks/qualifio)"],
    );
}

// ---------------------------------------------------------------------------------------------
// ${VAR}

#[test]
fn a_missing_variable_names_the_variable_and_the_key() {
    let p = problem(
        r#"
        [sources.qualifio]
        header = { name = "X-Api-Token", value = "${QUALIFIO_HEADER}" }
        "#,
    );
    assert_at(
        &p,
        2,
        34,
        "sources.qualifio.header.value",
        &["QUALIFIO_HEADER is not set"],
    );
}

#[test]
fn every_missing_variable_is_named_at_its_own_place() {
    let all = problems(
        r#"
        [sources.qualifio]
        hmac_secrets = ["${QUALIFIO_SECRET}", "${QUALIFIO_OLD_SECRET}"]
        "#,
    );
    let found: Vec<(usize, usize, &str, &str)> = all
        .iter()
        .map(|p| (p.line, p.column, p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                2,
                17,
                "sources.qualifio.hmac_secrets[0]",
                "environment variable QUALIFIO_SECRET is not set (write ${QUALIFIO_SECRET:-default} to give a default)"
            ),
            (
                2,
                39,
                "sources.qualifio.hmac_secrets[1]",
                "environment variable QUALIFIO_OLD_SECRET is not set (write ${QUALIFIO_OLD_SECRET:-default} to give a default)"
            ),
        ]
    );
}

#[test]
fn variables_and_defaults_are_substituted() {
    let config = load(
        r#"
        [server]
        listen = "${HOOKFAN_LISTEN:-0.0.0.0:9000}"
        [sources.qualifio]
        token = "${QUALIFIO_TOKEN:-unused-default-value}"
        "#,
    );
    // Not set: the default. Set: the environment wins over the default.
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
    let token = config.sources[0].auth.token.as_ref().map(|t| t.expose());
    assert_eq!(token, Some("tok-0123456789abcdef"));
}

// ---------------------------------------------------------------------------------------------
// Units

#[test]
fn bad_durations_sizes_and_rates() {
    let p = problem(&format!("[storage]\nretention = \"a month\"\n{SOURCE}"));
    assert_at(
        &p,
        2,
        1,
        "storage.retention",
        &["invalid duration \"a month\"", "\"30d\""],
    );

    let p = problem(&format!("[server]\nmax_body = \"1 MegaByte\"\n{SOURCE}"));
    assert_at(
        &p,
        2,
        1,
        "server.max_body",
        &["invalid size \"1 MegaByte\"", "\"1MiB\""],
    );

    let p = problem(&format!(
        "{SOURCE}[destinations.archive]\ntype = \"file\"\npath = \"o.jsonl\"\nrate_limit = \"50 per minute\"\n"
    ));
    assert_at(
        &p,
        6,
        1,
        "destinations.archive.rate_limit",
        &["invalid rate \"50 per minute\"", "\"50/min\""],
    );

    // One bad delay in a list points at that element.
    let p = problem(&format!(
        "[retry]\nschedule = [\"10s\", \"soon\"]\n{SOURCE}"
    ));
    assert_at(
        &p,
        2,
        20,
        "retry.schedule[1]",
        &["invalid duration \"soon\""],
    );
}

#[test]
fn units_may_be_written_in_words() {
    let config = load(&format!(
        "[storage]\nretention = \"2 days\"\n[retry]\nschedule = [\"30 seconds\", \"1 minute\", \"1h30m\"]\n{SOURCE}[destinations.archive]\ntype = \"file\"\npath = \"o.jsonl\"\nrate_limit = \"100/minute\"\n"
    ));
    assert_eq!(config.storage.retention, Duration::from_secs(2 * 86_400));
    let secs: Vec<u64> = config
        .retry
        .schedule
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(secs, [30, 60, 5_400]);
    let rate = config.destinations[0].rate_limit;
    assert_eq!(rate.map(|r| r.to_string()).as_deref(), Some("100/min"));
    assert_eq!(
        rate.map(|r| (r.count, r.per)),
        Some((100, Duration::from_secs(60)))
    );
}

#[test]
fn retry_jitter_out_of_range() {
    let p = problem(&format!("[retry]\njitter = 1.5\n{SOURCE}"));
    assert_at(&p, 2, 1, "retry.jitter", &["between 0 and 1"]);
    let p = problem(&format!(
        "{SOURCE}[destinations.archive]\ntype = \"file\"\npath = \"o.jsonl\"\nretry = {{ jitter = -0.1 }}\n"
    ));
    assert_at(
        &p,
        6,
        11,
        "destinations.archive.retry.jitter",
        &["between 0 and 1"],
    );
}

#[test]
fn an_empty_retry_schedule() {
    let p = problem(&format!("[retry]\nschedule = []\n{SOURCE}"));
    assert_at(&p, 2, 1, "retry.schedule", &["needs at least one delay"]);
}

// ---------------------------------------------------------------------------------------------
// Mapping: templates and `when`

#[test]
fn a_template_syntax_error_names_destination_and_field() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\n[destinations.crm.fields]\nfirst = \"{{{{ participant.firstname }}}}\"\nemail = \"{{{{ participant.email \"\n"
    ));
    assert_at(
        &p,
        8,
        1,
        "destinations.crm.fields.email",
        &["template error"],
    );
}

#[test]
fn a_misspelt_filter_is_caught_at_load_not_at_delivery() {
    // A typo in a filter name is not a syntax error, but it would fail every delivery.
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\nfields = {{ email = \"{{{{ participant.email | lowr }}}}\" }}\n"
    ));
    assert_at(
        &p,
        6,
        12,
        "destinations.crm.fields.email",
        &["template error", "lowr"],
    );
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\nwhen = 'consent.newsletter | yesnoo'\n"
    ));
    assert_at(
        &p,
        6,
        1,
        "destinations.crm.when",
        &["expression error", "yesnoo"],
    );
}

#[test]
fn a_bad_when_expression() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\nwhen = 'consent.newsletter =='\n"
    ));
    assert_at(&p, 6, 1, "destinations.crm.when", &["expression error"]);
}

#[test]
fn a_destination_naming_an_unknown_source() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\nsources = [\"qualifio\", \"nope\"]\n"
    ));
    assert_at(
        &p,
        6,
        24,
        "destinations.crm.sources[1]",
        &["no source named \"nope\" (sources: qualifio)"],
    );
}

// ---------------------------------------------------------------------------------------------
// Server and webhook values

#[test]
fn a_bad_listen_address() {
    let p = problem(&format!("[server]\nlisten = \"localhost\"\n{SOURCE}"));
    assert_at(
        &p,
        2,
        1,
        "server.listen",
        &["\"localhost\" is not an address and port", "0.0.0.0:8080"],
    );
}

#[test]
fn a_webhook_with_a_bad_url() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"crm.example/in\"\n"
    ));
    assert_at(&p, 5, 1, "destinations.crm.url", &["not a valid URL"]);
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"ftp://crm.example/in\"\n"
    ));
    assert_at(
        &p,
        5,
        1,
        "destinations.crm.url",
        &["unsupported scheme \"ftp\""],
    );
}

#[test]
fn a_json_body_cannot_hold_both_a_and_a_dot_b() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"https://crm.example/in\"\n[destinations.crm.fields]\naddress = \"{{{{ participant.address }}}}\"\n\"address.city\" = \"{{{{ participant.locality }}}}\"\n"
    ));
    assert_at(
        &p,
        6,
        19,
        "destinations.crm.fields",
        &["field \"address\" is a value, so \"address.city\" cannot nest under it"],
    );
    // A form body keeps names flat, so the same fields are fine there.
    load(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"https://crm.example/in\"\nformat = \"form\"\n[destinations.crm.fields]\naddress = \"{{{{ participant.address }}}}\"\n\"address.city\" = \"{{{{ participant.locality }}}}\"\n"
    ));
}

#[test]
fn a_dotted_field_name_must_be_quoted() {
    // Unquoted, `address.city` is a table `address` holding `city`, not a field with a dot.
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\n[destinations.crm.fields]\naddress.city = \"{{{{ participant.locality }}}}\"\n"
    ));
    assert_at(
        &p,
        7,
        1,
        "destinations.crm.fields.address",
        &["to name a field with a dot, quote it: \"address.city\" = \"…\""],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = problems(&format!(
        "[server]\nlisten = \"nowhere\"\n{SOURCE}[destinations.crm]\ntype = \"file\"\npath = \"o.jsonl\"\nwhen = 'x =='\n"
    ));
    let keys: Vec<&str> = all.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["server.listen", "destinations.crm.when"]);
    let text = ConfigError::Invalid(all).to_string();
    assert!(
        text.starts_with("hookfan.toml:2:1: server.listen: \"nowhere\" is not"),
        "{text}"
    );
    assert!(
        text.contains("\nhookfan.toml:8:1: destinations.crm.when: expression error"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// What a valid file gives

#[test]
fn defaults() {
    let config = Config::parse(SOURCE, Path::new("/etc/hookfan/hookfan.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.max_body, 1024 * 1024);
    assert!(config.server.tls.is_none());
    // Relative to the config file's folder, not to wherever hookfan was started.
    assert_eq!(config.storage.url, "sqlite:///etc/hookfan/hookfan.db");
    assert_eq!(
        config.storage.retention,
        Duration::from_secs(30 * 24 * 3600)
    );
    let secs: Vec<u64> = config
        .retry
        .schedule
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(
        secs,
        [
            10,
            60,
            5 * 60,
            30 * 60,
            2 * 3600,
            6 * 3600,
            12 * 3600,
            24 * 3600
        ]
    );
    assert_eq!(config.retry.jitter, 0.2);
    assert_eq!(config.sources[0].name, "qualifio");
    assert_eq!(config.sources[0].path, "/hooks/qualifio");
    assert_eq!(config.sources[0].auth.kinds(), ["none"]);
    assert!(config.destinations.is_empty());
}

#[test]
fn destination_defaults_and_paths_relative_to_the_config() {
    let text = format!(
        "{SOURCE}[destinations.archive]\ntype = \"file\"\npath = \"out/participations.jsonl\"\n"
    );
    let config = Config::parse(&text, Path::new("/srv/relay/hookfan.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let d = &config.destinations[0];
    assert_eq!(d.name, "archive");
    assert!(d.enabled);
    assert_eq!(d.sources, None);
    assert_eq!(d.when, None);
    assert!(d.fields.is_empty());
    assert_eq!(d.rate_limit, None);
    assert_eq!(d.concurrency, 4);
    assert_eq!(d.retry, RetryPolicy::default());
    assert_eq!(d.type_name, "file");
    assert_eq!(
        d.kind.summary(),
        "append to /srv/relay/out/participations.jsonl"
    );

    // A config named by a relative path still anchors at its own folder.
    let config = Config::parse(SOURCE, Path::new("conf/hookfan.toml"), &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let expected = std::env::current_dir()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("conf/hookfan.db");
    assert_eq!(
        config.storage.url,
        format!("sqlite://{}", expected.display())
    );
}

#[test]
fn fields_keep_file_order() {
    // Column order matters for a spreadsheet, so not alphabetical and not hashed.
    let config = load(&format!(
        "{SOURCE}[destinations.sheet]\ntype = \"file\"\npath = \"o.jsonl\"\n[destinations.sheet.fields]\nzeta = \"1\"\nalpha = \"2\"\n\"Prénom\" = \"3\"\nmid = \"4\"\naa = \"5\"\n"
    ));
    let names: Vec<&str> = config.destinations[0]
        .fields
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["zeta", "alpha", "Prénom", "mid", "aa"]);
    assert_eq!(config.destinations[0].fields[2].1, "3");
}

#[test]
fn a_destination_retry_overrides_only_what_it_sets() {
    let config = load(&format!(
        r#"
        [retry]
        schedule = ["1m", "2m"]
        jitter = 0.1
        {SOURCE}
        [destinations.only_jitter]
        type = "file"
        path = "a.jsonl"
        retry = {{ jitter = 0.5 }}
        [destinations.only_schedule]
        type = "file"
        path = "b.jsonl"
        retry = {{ schedule = ["5s"] }}
        [destinations.inherits]
        type = "file"
        path = "c.jsonl"
        "#
    ));
    let policy = |name: &str| {
        config
            .destination(name)
            .map(|d| d.retry.clone())
            .unwrap_or_else(|| panic!("no destination {name}"))
    };
    let m = Duration::from_secs;
    assert_eq!(
        policy("only_jitter"),
        RetryPolicy {
            schedule: vec![m(60), m(120)],
            jitter: 0.5
        }
    );
    assert_eq!(
        policy("only_schedule"),
        RetryPolicy {
            schedule: vec![m(5)],
            jitter: 0.1
        }
    );
    assert_eq!(policy("inherits"), config.retry);
    assert_eq!(
        config.retry,
        RetryPolicy {
            schedule: vec![m(60), m(120)],
            jitter: 0.1
        }
    );
}

#[test]
fn a_database_password_never_shows() {
    let storage = hookfan::config::Storage {
        url: "postgres://hookfan:pg-secret/pw@db.internal/hookfan?sslmode=require&password=pg-query-pw"
            .into(),
        retention: std::time::Duration::from_secs(60),
    };
    let shown = format!("{storage:?} {}", storage.redacted_url());
    assert!(
        !shown.contains("pg-secret") && !shown.contains("pg-query-pw"),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://hookfan:***@db.internal/hookfan?sslmode=require&password=***"),
        "{shown}"
    );
}

#[test]
fn postgres_storage_is_accepted_and_a_broken_url_is_named_without_its_password() {
    let url = "postgres://hookfan:pw-1234@db.internal:5432/hookfan?sslmode=require";
    let config = load(&format!("[storage]\nurl = \"{url}\"\n{SOURCE}"));
    assert_eq!(config.storage.url, url, "kept as written");
    let p = problem(&format!(
        "[storage]\nurl = \"postgres://hookfan:pw-1234@db.internal:port/hookfan\"\n{SOURCE}"
    ));
    assert_at(&p, 2, 1, "storage.url", &["not a valid PostgreSQL URL"]);
    assert!(!p.to_string().contains("pw-1234"), "{p}");
    let p = problem(&format!(
        "[storage]\nurl = \"mysql://hookfan@db/hookfan\"\n{SOURCE}"
    ));
    assert_at(&p, 2, 1, "storage.url", &["sqlite://", "postgres://"]);
}

#[test]
fn secrets_never_show() {
    let config = load(
        r#"
        [sources.qualifio]
        basic = { username = "qualifio", password = "basic-secret-pw" }
        token = "${QUALIFIO_TOKEN}"
        header = { name = "X-Api-Token", value = "header-secret-value" }
        hmac_secrets = ["hmac-secret-new", "hmac-secret-old"]
        [destinations.crm]
        type = "webhook"
        url = "https://bob:${CRM_PASSWORD}@crm.example/in?api_key=url-key-secret&list=7"
        headers = { Authorization = "Bearer header-bearer-secret" }
        signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        "#,
    );
    let shown = [
        format!("{config:?}"),
        format!("{config:#?}"),
        hookfan::commands::check::summary_text(&config),
        hookfan::commands::check::summary_json(&config).to_string(),
    ];
    for text in &shown {
        for secret in [
            "basic-secret-pw",
            "tok-0123456789abcdef",
            "header-secret-value",
            "hmac-secret-new",
            "hmac-secret-old",
            "pw-crm-hunter2",
            "url-key-secret",
            "header-bearer-secret",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(!text.contains(secret), "{secret} shows in:\n{text}");
        }
        assert!(text.contains("***"), "{text}");
    }
    // Non-secret parts stay readable, so the summary is still useful.
    assert!(
        shown[2].contains("https://bob:***@crm.example/in?api_key=***&list=7"),
        "{}",
        shown[2]
    );
}

#[test]
fn tls_files_are_relative_to_the_config_and_must_exist() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("hookfan.toml");
    let text = format!("[server.tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n{SOURCE}");
    std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let problems = match Config::load(&path) {
        Err(ConfigError::Invalid(p)) => p,
        other => panic!("expected missing TLS files, got {other:?}"),
    };
    let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(found, [(2, "server.tls.cert"), (3, "server.tls.key")]);
    let cert = dir.path().join("tls/cert.pem");
    assert!(
        problems[0]
            .message
            .starts_with(&format!("cannot read {}", cert.display())),
        "{}",
        problems[0]
    );

    // Once they exist, the config loads and points at them.
    std::fs::create_dir(dir.path().join("tls")).unwrap_or_else(|e| panic!("{e}"));
    for f in ["cert.pem", "key.pem"] {
        std::fs::write(dir.path().join("tls").join(f), "x").unwrap_or_else(|e| panic!("{e}"));
    }
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.server.tls.unwrap_or_else(|| panic!("no tls"));
    assert_eq!(tls.cert, cert);
    assert_eq!(tls.key, dir.path().join("tls/key.pem"));
}

// ---------------------------------------------------------------------------------------------
// The example file shipped at the repository's root

#[test]
fn the_example_config_loads_and_needs_no_credentials() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let enabled: Vec<(&str, &str)> = config
        .destinations
        .iter()
        .filter(|d| d.enabled)
        .map(|d| (d.name.as_str(), d.type_name))
        .collect();
    assert_eq!(enabled, [("archive", "file")]);
    let crm = config
        .destination("crm")
        .unwrap_or_else(|| panic!("the example has no crm destination"));
    assert_eq!(crm.type_name, "webhook");
    assert!(!crm.enabled);
    assert_eq!(crm.when.as_deref(), Some("consent.newsletter == \"1\""));
    assert_eq!(config.sources[0].path, "/hooks/qualifio");
    // The example states every default, so it must agree with the code's.
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.retry, RetryPolicy::default());
}

#[test]
fn a_secret_written_in_the_wrong_shape_is_not_printed() {
    // The brackets were forgotten: serde would quote the value it refused.
    let p = problem(
        r#"
        [sources.qualifio]
        hmac_secrets = "topsecret-hmac"
        "#,
    );
    assert_at(
        &p,
        2,
        1,
        "sources.qualifio.hmac_secrets",
        &["invalid type: string (value hidden), expected a sequence"],
    );
    assert!(!p.to_string().contains("topsecret"), "{p}");
}

#[test]
fn concurrency_has_bounds() {
    for (value, ok) in [
        ("0", false),
        ("1", true),
        ("1000", true),
        ("1001", false),
        ("4611686018427387904", false),
    ] {
        let text = format!(
            "{SOURCE}[destinations.f]\ntype = \"file\"\npath = \"out.jsonl\"\nconcurrency = {value}\n"
        );
        match parse(&text) {
            Ok(_) => assert!(ok, "concurrency = {value} was accepted"),
            Err(ConfigError::Invalid(p)) => {
                assert!(!ok, "concurrency = {value}: {p:?}");
                assert_eq!(p[0].key, "destinations.f.concurrency");
                assert!(p[0].message.contains("between 1 and 1000"), "{}", p[0]);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_connector_issue_points_at_the_key_even_with_dots_and_indexes() {
    let p = problem(&format!(
        "{SOURCE}[destinations.crm]\ntype = \"webhook\"\nurl = \"https://crm.example/in\"\n[destinations.crm.headers]\n\"X.Bad Name\" = \"v\"\n"
    ));
    assert_at(
        &p,
        7,
        1,
        "destinations.crm.headers.\"X.Bad Name\"",
        &["not a valid header name"],
    );
    let p = problem(&format!(
        "{SOURCE}[destinations.w]\ntype = \"trello\"\nkey = \"k\"\ntoken = \"t\"\nlist_id = \"abc123\"\nname = \"n\"\nlabels = [\"ok1\",\n  \"a,b\"]\n"
    ));
    assert_at(
        &p,
        10,
        1,
        "destinations.w.labels[1]",
        &["must be a Trello id"],
    );
}
