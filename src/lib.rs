//! # hookfan
//!
//! Accepts Qualifio participation notifications, stores them durably, and relays each to every
//! destination whose filter matches.
//!
//! # Layout
//! - [`config`]: the TOML file → a validated [`config::Config`].
//! - [`payload`]: Qualifio's v1/v2 formats and the normalised view.
//! - [`mapping`]: minijinja templates (`fields`, `when`) and custom filters.
//! - [`router`]: which destinations take a notification.
//! - [`connect`]: a connector for each destination (from `hookfan-connectors`).
//! - [`commands`]: what `hookfan check` and `hookfan preview` print.

pub mod commands;
pub mod config;
pub mod connect;
pub mod mapping;
pub mod payload;
pub mod router;
