//! hookfan's integration tests: one binary, one module per story.

// Test code: a panic is a failed test, which is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod cli;
mod config_errors;
mod delivery;
mod fakes;
mod fuzz_regressions;
mod ingress;
mod instances;
mod mapping;
mod operators;
mod page;
mod props;
mod reload;
mod restart;
mod secrets;
mod sheets;
mod store;
mod support;
mod trello;
