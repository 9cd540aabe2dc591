//! hookfan's integration tests: one binary, one module per story.

// Test code: a panic is a failed test, which is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod config_errors;
mod mapping;
mod props;
