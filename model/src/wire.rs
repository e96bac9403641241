//! Payloads of the contract's MQTT topics, and their encoding (as `tripline replay` sends them).

use serde::{Deserialize, Serialize};

use crate::ids::TripId;
use crate::point::{Point, RawPoint};

/// Largest payload the contract accepts: 256 KiB.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Most points one Telemetry message may carry.
pub const MAX_POINTS_PER_MESSAGE: usize = 1000;

/// A Telemetry payload as it arrives: structure only, nothing validated yet.
#[derive(Debug, Deserialize)]
pub(crate) struct RawTelemetry {
    #[serde(default)]
    pub(crate) trip_id: Option<String>,
    /// Not part of the contract's payload, but accepted when it agrees with the topic.
    #[serde(default)]
    pub(crate) vehicle_id: Option<String>,
    pub(crate) points: Vec<RawPoint>,
    #[serde(flatten)]
    pub(crate) unknown: serde_json::Map<String, serde_json::Value>,
}

/// A TripMarker payload as it arrives.
#[derive(Debug, Deserialize)]
pub(crate) struct RawTripMarker {
    pub(crate) trip_id: String,
    pub(crate) event: MarkerEvent,
    #[serde(default)]
    pub(crate) ts: Option<String>,
    #[serde(default)]
    pub(crate) ts_ms: Option<i64>,
    #[serde(default)]
    pub(crate) vehicle_id: Option<String>,
    #[serde(flatten)]
    pub(crate) unknown: serde_json::Map<String, serde_json::Value>,
}

/// Whether a marker opens or closes a trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkerEvent {
    /// The device started a trip.
    Start,
    /// The device ended a trip.
    End,
}

/// A validated trip marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripMarker {
    /// The trip the marker is about.
    pub trip_id: TripId,
    /// Start or end.
    pub event: MarkerEvent,
    /// When, Unix milliseconds (`ts`, RFC 3339, on the wire).
    #[serde(rename = "ts", with = "crate::time::rfc3339_ms")]
    pub ts_ms: i64,
}

#[derive(Serialize)]
struct TelemetryOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    trip_id: Option<&'a TripId>,
    points: &'a [Point],
}

/// Encodes a Telemetry payload (what a vehicle publishes).
pub fn encode_telemetry(trip_id: Option<&TripId>, points: &[Point]) -> Vec<u8> {
    // Serializing plain structs of strings and finite-or-not floats cannot fail; non-finite
    // floats are written as `null`, which the decoder then reports as a schema error.
    serde_json::to_vec(&TelemetryOut { trip_id, points }).unwrap_or_default()
}

/// Encodes a TripMarker payload.
pub fn encode_marker(marker: &TripMarker) -> Vec<u8> {
    serde_json::to_vec(marker).unwrap_or_default()
}
