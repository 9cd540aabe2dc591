//! The ingress path: a request body as Qualifio (or anyone who gets past authentication) sends it,
//! read as accepting reads it (checked against a full parse), then turned into the mapping
//! context and the normalised view.
//! Whatever the bytes, this must answer `Ok` or `Err`, never panic.

#![no_main]

use hookfan::{mapping, payload};
use libfuzzer_sys::fuzz_target;

/// 2026-11-20T09:15:00Z in Unix milliseconds, as the ingress would stamp it.
const RECEIVED_MS: i64 = 1_795_166_100_000;
const RECEIVED_ISO: &str = "2026-11-20T09:15:00Z";

fuzz_target!(|body: &[u8]| {
    // Accepting reads only the id and the format, in one pass that must agree with a full parse:
    // what it accepts, every later mapping must be able to read.
    let head = hookfan::ingress::hooks::parse_head(body);
    let full = serde_json::from_slice::<serde_json::Value>(body);
    match (&head, &full) {
        (Ok((id, format)), Ok(doc)) => {
            assert_eq!(doc.get("id").and_then(|v| v.as_str()), Some(id.as_str()));
            assert_eq!(*format, payload::Format::detect(doc));
        }
        (Ok(_), Err(e)) => panic!("accepted what a full parse refuses: {e}"),
        (Err(why), Ok(doc)) => {
            let has_id = doc
                .get("id")
                .and_then(|v| v.as_str())
                .is_some_and(|id| !id.trim().is_empty());
            // Deep nesting is refused before parsing (at 64 levels, serde_json's own limit is 128).
            assert!(
                !has_id || why.contains("nested deeper"),
                "refused a valid notification: {why}"
            );
        }
        (Err(_), Err(_)) => {}
    }
    let Ok((doc, id)) = hookfan::ingress::hooks::parse(body) else {
        return;
    };
    // What `parse` promises the store: an object with a non-empty string `id`.
    assert!(doc.is_object(), "parse accepted a non-object");
    assert!(!id.trim().is_empty(), "parse accepted an empty id");
    assert_eq!(doc.get("id").and_then(|v| v.as_str()), Some(id.as_str()));

    let _ctx = mapping::context(doc.clone(), RECEIVED_MS);

    let view = payload::context(&doc, RECEIVED_ISO);
    // The normalised view is always there, on top of the payload's own keys.
    let participation = &view["participation"];
    assert_eq!(participation["id"].as_str(), Some(id.as_str()));
    assert_eq!(participation["received_at"].as_str(), Some(RECEIVED_ISO));
    assert!(matches!(
        participation["format"].as_str(),
        Some("v1" | "v2")
    ));
    for part in ["participant", "consent", "answer"] {
        assert!(view[part].is_object(), "{part} is not an object");
    }
});
