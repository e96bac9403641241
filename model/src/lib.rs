//! # tripline-model
//!
//! The domain types and the wire format every other tripline crate speaks: identifiers
//! ([`VehicleId`], [`TripId`]), samples ([`Point`]), the MQTT payloads of the contract
//! (Telemetry, [`TripMarker`]), what tripline says about a trip ([`TripSummary`], [`Event`]),
//! and why it refused something ([`RejectReason`]).
//!
//! **Promises.** Identifiers are validated once, when they are constructed. [`decode`] turns any
//! `(topic, bytes)` into either typed, validated points or a rejection carrying one of the
//! contract's stable reason codes; it never panics and does no I/O: "now" is a parameter.
//! Units are in field names (`speed_mps`, `ts_ms`, `distance_km`); coordinates are WGS84 degrees.
//! No tokio, no I/O in this crate.

pub mod cell;
mod decode;
mod decoded;
pub mod dropped;
pub mod hash;
pub mod ids;
pub mod point;
pub mod push;
pub mod reject;
pub mod summary;
pub mod time;
pub mod topic;
pub mod tripfile;
pub mod wire;

pub use decode::{DecodeConfig, Message, MessageRejection, PointRejection, Telemetry, decode};
pub use decoded::Decoded;
pub use dropped::{DroppedPoints, point_key};
pub use ids::{TenantId, TripId, VehicleId};
pub use point::{Point, PointPrecision, PointRules, RawPoint, quantise};
pub use push::{Notice, NoticeKind, PushData, PushMessage, TripNotices};
pub use reject::{MAX_KEPT_PAYLOAD, RejectReason, RejectScope, Rejection};
pub use summary::{Event, EventCounts, EventKind, Place, TripDetail, TripStatus, TripSummary};
pub use topic::{Topic, TopicKind};
pub use wire::{MarkerEvent, TripMarker, encode_marker, encode_telemetry};

/// What can be wrong with a value as tripline reads it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// An identifier outside the contract's alphabet or length.
    #[error("invalid {kind} {value:?}: expected 1 to 64 characters of [A-Za-z0-9._:-]")]
    InvalidId {
        /// Which identifier (`vehicle_id`, `trip_id`).
        kind: &'static str,
        /// The offending value (shortened).
        value: String,
    },
    /// A timestamp that is not RFC 3339 with an offset, or out of range.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTimestamp {
        /// The offending value (shortened).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A well-formed timestamp outside years 1 to 9999 (e.g. year 10000): a clock problem of one
    /// sample rather than a malformed message.
    #[error("timestamp {value:?} is outside years 1 to 9999")]
    TimestampOutOfRange {
        /// The offending value (shortened).
        value: String,
        /// After year 9999 (else before year 1).
        future: bool,
    },
    /// A topic outside `vehicles/{vehicle_id}/telemetry|trips`.
    #[error(
        "not a tripline topic: {topic:?} (expected vehicles/{{vehicle_id}}/telemetry or vehicles/{{vehicle_id}}/trips)"
    )]
    InvalidTopic {
        /// The offending topic (shortened).
        topic: String,
    },
    /// A structural problem in a payload.
    #[error("{detail}")]
    Schema {
        /// What is wrong.
        detail: String,
    },
}
