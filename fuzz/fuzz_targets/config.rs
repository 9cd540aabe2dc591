//! Config parsing: any text as a config file (TOML, `${VAR}` substitution, validation). It must
//! answer `Ok` or `Err`, never panic; and a config that validates must compile its templates.

#![no_main]

use std::path::Path;

use hookfan::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml"), &|_| None) {
        Ok(config) => {
            // Validation checks every template, so compiling them cannot fail.
            if let Err(e) = config.mapper() {
                panic!("a config that validates has a template that does not compile: {e}");
            }
        }
        Err(e) => {
            // Every error can be shown to the operator.
            let _ = e.to_string();
        }
    }
});
