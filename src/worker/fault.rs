//! Faults a test can switch on from outside, in debug builds only (the builds tests run):
//! `HOOKFAN_TEST_FAULT=lane-panic:NAME` makes destination NAME's lane panic at its first claim,
//! so the tests can see a dead background task stop the process. Release builds compile this
//! out.

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
