//! The template text itself from the fuzzer: as a field template and as a `when` expression,
//! checked as config validation checks them; what passes the check must compile in a `Mapper`
//! and render against the sample v2 payload without panicking.

#![no_main]

use std::sync::OnceLock;

use hookfan::mapping::{Mapper, Templates, Verdict, check_expression, check_template, context};
use libfuzzer_sys::fuzz_target;
use minijinja::Value;

const SAMPLE: &str = include_str!("../../tests/fixtures/participation-v2.json");
const RECEIVED_MS: i64 = 1_795_166_100_000;

fn sample() -> &'static Value {
    static CTX: OnceLock<Value> = OnceLock::new();
    CTX.get_or_init(|| {
        let doc: serde_json::Value = serde_json::from_str(SAMPLE).unwrap();
        context(doc, RECEIVED_MS)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if check_template(text).is_ok() {
        let fields = [("f".to_string(), text.to_string())];
        let mapper = Mapper::new([Templates {
            destination: "d",
            fields: &fields,
            when: None,
        }])
        .unwrap_or_else(|e| panic!("check_template accepted what Mapper refuses: {e}"));
        if let Ok(out) = mapper.fields("d", sample()) {
            assert_eq!(out.len(), 1);
        }
    }

    if check_expression(text).is_ok() {
        let mapper = Mapper::new([Templates {
            destination: "d",
            fields: &[],
            when: Some(text),
        }])
        .unwrap_or_else(|e| panic!("check_expression accepted what Mapper refuses: {e}"));
        // Routed, false or an error at run time; which one depends on the text.
        let _: Verdict = mapper.when("d", sample());
    }
});
