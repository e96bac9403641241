//! # tripline-ingest
//!
//! The MQTT source: subscribes to the contract's topics, decodes and validates each message,
//! routes points by vehicle to the enrichment workers, writes the results and acknowledges each
//! message to the broker in receive order once everything derived from it is durable.
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
pub mod route;
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
