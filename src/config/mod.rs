//! The config file: TOML → raw structs (unknown keys denied) → validation (pure) → [`Config`].
//!
//! - `types`: what a loaded config holds.
//! - `load`: reading the file, `${VAR}` substitution (`env`), serde with key paths.
//! - `validate`: defaults and checks, every problem at its key; destination types' own keys
//!   are read and checked through [`crate::destinations`].
//! - `locate`: key path → file, line and column.
//!
//! Strings may use `${VAR}` / `${VAR:-default}`. Every problem names the file, line, column and
//! key path; all problems found are reported together.

mod env;
mod load;
pub mod locate;
mod raw;
mod types;
mod validate;

use std::path::PathBuf;

pub use hookfan_connectors::{KeyPart, KeyPath};
pub use locate::Problem;
pub use types::*;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}
