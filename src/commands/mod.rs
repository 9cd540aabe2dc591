//! What the commands print: `check`, `preview`, and the operators' `deliveries`, `stats`,
//! `replay`, `cancel`, `forget`, `purge`. The binary parses arguments and calls these; the admin
//! API serves the same structs as JSON.

pub mod check;
pub mod log;
pub mod operate;
pub mod preview;

use serde_json::json;

use crate::config::{ConfigError, Problem};

/// A config error as the commands print it: text lines, or JSON with each problem's position.
pub fn config_error_json(err: &ConfigError) -> serde_json::Value {
    let problems: Vec<serde_json::Value> = match err {
        ConfigError::Invalid(list) => list.iter().map(problem_json).collect(),
        ConfigError::Read { .. } => vec![json!({"message": err.to_string()})],
    };
    json!({"valid": false, "errors": problems})
}

fn problem_json(p: &Problem) -> serde_json::Value {
    json!({
        "file": p.file.display().to_string(),
        "line": p.line,
        "column": p.column,
        "key": p.key,
        "message": p.message,
    })
}
