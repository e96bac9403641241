//! Ingest's MQTT sides: the source of an external broker (against a real Mosquitto) and the
//! embedded endpoint vehicles connect to.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod endpoint;
mod source;
