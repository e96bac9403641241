//! The enrichment engine's integration tests: one binary, scenarios as modules.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod golden;
mod properties;
mod rates;
mod real_data;
mod scenarios;
mod support;
