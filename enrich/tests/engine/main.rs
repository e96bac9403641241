//! The enrichment engine's integration tests: one binary, scenarios as modules.

mod golden;
mod properties;
mod real_data;
mod scenarios;
mod support;
