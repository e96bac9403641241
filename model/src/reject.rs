//! Why tripline did not use a message or a point: stable snake_case codes, part of the contract.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rejection reason. The codes (`as_str`) are stable: they appear in the API, in the store and
/// in metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload is not JSON (or not UTF-8).
    MalformedJson,
    /// The payload is JSON but not a valid Telemetry or TripMarker.
    Schema,
    /// The payload is larger than the contract's 256 KiB.
    PayloadTooLarge,
    /// The topic's vehicle is not registered to any tenant.
    UnknownVehicle,
    /// The payload names a different vehicle than its topic.
    TopicMismatch,
    /// The topic is not `vehicles/{vehicle_id}/telemetry` or `vehicles/{vehicle_id}/trips`.
    InvalidTopic,
    /// A point's coordinates are non-finite or outside [-90, 90] × [-180, 180].
    InvalidCoordinates,
    /// A point sits at (0, 0), the usual sign of a GPS receiver without a fix.
    NullIsland,
    /// A point's timestamp is further in the future than the configured tolerance.
    TimestampFuture,
    /// A point's timestamp is older than the configured late window.
    TimestampTooOld,
    /// A point implies a speed above the configured maximum from its neighbours.
    ImplausibleJump,
    /// An authenticated vehicle published to another vehicle's topic (stored as the publisher's).
    NotAuthorized,
}

/// Whether a reason rejects a whole message or a single point of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectScope {
    /// The message could not be used at all.
    Message,
    /// One point was dropped; the rest of the message was used.
    Point,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::MalformedJson,
        RejectReason::Schema,
        RejectReason::PayloadTooLarge,
        RejectReason::UnknownVehicle,
        RejectReason::TopicMismatch,
        RejectReason::InvalidTopic,
        RejectReason::InvalidCoordinates,
        RejectReason::NullIsland,
        RejectReason::TimestampFuture,
        RejectReason::TimestampTooOld,
        RejectReason::ImplausibleJump,
        RejectReason::NotAuthorized,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::Schema => "schema",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::UnknownVehicle => "unknown_vehicle",
            RejectReason::TopicMismatch => "topic_mismatch",
            RejectReason::InvalidTopic => "invalid_topic",
            RejectReason::InvalidCoordinates => "invalid_coordinates",
            RejectReason::NullIsland => "null_island",
            RejectReason::TimestampFuture => "timestamp_future",
            RejectReason::TimestampTooOld => "timestamp_too_old",
            RejectReason::ImplausibleJump => "implausible_jump",
            RejectReason::NotAuthorized => "not_authorized",
        }
    }

    /// Whether this reason drops a whole message or one point.
    pub fn scope(self) -> RejectScope {
        match self {
            RejectReason::MalformedJson
            | RejectReason::Schema
            | RejectReason::PayloadTooLarge
            | RejectReason::UnknownVehicle
            | RejectReason::TopicMismatch
            | RejectReason::InvalidTopic
            | RejectReason::NotAuthorized => RejectScope::Message,
            RejectReason::InvalidCoordinates
            | RejectReason::NullIsland
            | RejectReason::TimestampFuture
            | RejectReason::TimestampTooOld
            | RejectReason::ImplausibleJump => RejectScope::Point,
        }
    }

    /// The reason with code `code`, if any.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == code)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_serde_names_and_parse_back() {
        for reason in RejectReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
            assert_eq!(RejectReason::from_code(reason.as_str()), Some(reason));
        }
        assert_eq!(RejectReason::from_code("nope"), None);
    }
}
