//! One integration-test binary for the whole system (one link on 2 cores); scenarios are modules.
//! It belongs to the `tripline` package, so `CARGO_BIN_EXE_tripline` is the real binary.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod abuse;
mod api_fuzz;
mod cli;
mod e2e;
mod embedded;
mod explorer;
mod ingest;
mod mosquitto_auth;
mod pipeline;
mod smoke;
mod sse;
mod tls;
mod webhooks;
