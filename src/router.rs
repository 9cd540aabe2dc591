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

/// The names of the destinations that take a notification from `source`. The template
/// context costs a second parse of the payload and its normalised view, so `context` is called
/// only when a candidate destination has a `when` to evaluate, and then once.
pub fn routed(
    config: &Config,
    mapper: &Mapper,
    source: &str,
    context: impl FnOnce() -> Value,
) -> Vec<String> {
    let candidates: Vec<&Destination> = config
        .destinations
        .iter()
        .filter(|d| d.enabled && d.takes_source(source))
        .collect();
    let ctx = candidates.iter().any(|d| d.when.is_some()).then(context);
    candidates
        .into_iter()
        .filter(|d| match &ctx {
            Some(ctx) if d.when.is_some() => decide(d, mapper, Some(source), ctx).routed,
            _ => true,
        })
        .map(|d| d.name.clone())
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
