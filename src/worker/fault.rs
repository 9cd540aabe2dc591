//! Faults and knobs a test can switch on from outside, in debug builds only (the builds tests
//! run). Release builds compile them out.
//! - `HOOKFAN_TEST_FAULT=lane-panic:NAME` makes destination NAME's lane panic at its first
//!   claim, so the tests can see a dead background task stop the process.
//! - `HOOKFAN_TEST_LEASE=2s` sets the lease of every claim, so a test that kills an instance
//!   sees its claims taken over in seconds rather than after the usual minute.

/// Whether the lane of `destination` should panic.
#[cfg(debug_assertions)]
pub fn lane_panics(destination: &str) -> bool {
    std::env::var("HOOKFAN_TEST_FAULT")
        .is_ok_and(|f| f.strip_prefix("lane-panic:") == Some(destination))
}

#[cfg(not(debug_assertions))]
pub fn lane_panics(_destination: &str) -> bool {
    false
}

/// The lease a test asked for, if any.
#[cfg(debug_assertions)]
pub fn lease() -> Option<std::time::Duration> {
    let text = std::env::var("HOOKFAN_TEST_LEASE").ok()?;
    hookfan_connectors::units::parse_duration(&text).ok()
}

#[cfg(not(debug_assertions))]
pub fn lease() -> Option<std::time::Duration> {
    None
}
