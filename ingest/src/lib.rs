//! # tripline-ingest
//!
//! Where messages come in: the embedded MQTT endpoint ([`endpoint`]) or a subscription to an
//! external broker ([`source`]); the intake ([`intake`]) decodes and validates each message, finds
//! its vehicle's tenant and hands it to the pipeline (`tripline-pipeline`, which routes it by
//! vehicle to a worker and completes it once its results are durable); each message is
//! acknowledged to its publisher in receive order once completed.
//!
//! **Promises** (see ARCHITECTURE.md): nothing acknowledged before it is durable;
//! acknowledgements leave in receive order and never across connections ([`ack`]); redelivered
//! messages change nothing; bad input is rejected, stored and acknowledged.

pub mod ack;
pub mod budget;
pub mod credentials;
pub mod endpoint;
pub mod intake;
pub mod metrics;
pub mod source;
pub mod tenants;
pub mod tls;

/// What can go wrong in ingest.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A setting is unusable.
    #[error("ingest config: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
    /// The embedded MQTT endpoint cannot listen where it was told to.
    #[error("mqtt endpoint: listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The MQTT client failed in a way reconnecting cannot fix.
    #[error("mqtt: {detail}")]
    Mqtt {
        /// What failed.
        detail: String,
    },
}
