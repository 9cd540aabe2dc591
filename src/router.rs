//! Which destinations a notification goes to: enabled, listening to its source, and `when` true.
//! Decided once, at accept time.

use minijinja::Value;

use crate::config::{Config, Destination};
use crate::mapping::{Mapper, Verdict};

/// The decision for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: String,
    pub routed: bool,
    /// Why not, when not routed.
    pub reason: Option<String>,
}

/// Decides every destination, in config order. `source` is `None` when previewing without one.
pub fn route(config: &Config, mapper: &Mapper, source: Option<&str>, ctx: &Value) -> Vec<Route> {
    config
        .destinations
        .iter()
        .map(|d| decide(d, mapper, source, ctx))
        .collect()
}

/// The names of the destinations that take it.
pub fn routed(config: &Config, mapper: &Mapper, source: &str, ctx: &Value) -> Vec<String> {
    route(config, mapper, Some(source), ctx)
        .into_iter()
        .filter(|r| r.routed)
        .map(|r| r.destination)
        .collect()
}

fn decide(d: &Destination, mapper: &Mapper, source: Option<&str>, ctx: &Value) -> Route {
    let not = |reason: String| Route {
        destination: d.name.clone(),
        routed: false,
        reason: Some(reason),
    };
    if !d.enabled {
        return not("disabled (enabled = false)".into());
    }
    if let Some(source) = source
        && !d.takes_source(source)
    {
        return not(format!(
            "source {source:?} is not in sources [{}]",
            d.sources.as_deref().unwrap_or_default().join(", ")
        ));
    }
    match mapper.when(&d.name, ctx) {
        Verdict::Routed => Route {
            destination: d.name.clone(),
            routed: true,
            reason: None,
        },
        Verdict::False => not(format!(
            "when `{}` is false",
            d.when.as_deref().unwrap_or_default()
        )),
        Verdict::Error(e) => {
            // The error can quote the value that failed (a date filter on an e-mail): only our
            // own words go to the log; `hookfan preview` shows the whole reason.
            tracing::warn!(destination = %d.name, "`when` failed on this notification; not routed");
            not(format!(
                "when `{}` failed: {e}",
                d.when.as_deref().unwrap_or_default()
            ))
        }
    }
}
