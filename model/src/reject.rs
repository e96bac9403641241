//! Why tripline did not use a message or a point: stable snake_case codes, part of the contract.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{TenantId, VehicleId};

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

/// A rejected message or point, kept with its raw bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Deterministic id (hash of topic, payload and point index): a redelivered message maps to
    /// the same rejection.
    pub id: String,
    /// The tenant, when the vehicle is known; `None` for messages no tenant owns.
    pub tenant: Option<TenantId>,
    /// The topic's vehicle, when it could be read.
    pub vehicle_id: Option<VehicleId>,
    /// When tripline first saw it (kept on rewrites).
    pub received_at_ms: i64,
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
    /// The MQTT topic.
    pub topic: String,
    /// For a dropped point, its index in the message's `points`.
    pub point_index: Option<u32>,
    /// The raw payload (for a dropped point: the point's JSON), its first
    /// [`MAX_KEPT_PAYLOAD`] bytes ([`Rejection::kept_payload`]). Stored as base64; records
    /// written before as an array of numbers still read.
    #[serde(with = "payload_bytes")]
    pub payload: Vec<u8>,
    /// The whole payload's size in bytes (0 in records written before it was kept: then the
    /// payload is whole).
    #[serde(default)]
    pub payload_size: u64,
    /// The whole payload's SHA-256, hex (empty in records written before it was kept).
    #[serde(default)]
    pub payload_sha256: String,
}

/// The most of a rejected payload that is kept: a 1 MiB junk message costs 16 KiB.
pub const MAX_KEPT_PAYLOAD: usize = 16 * 1024;

/// The payload as base64 text; an array of numbers (records before) still reads.
mod payload_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Base64(String),
        Numbers(Vec<u8>),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        match Stored::deserialize(deserializer)? {
            Stored::Base64(text) => STANDARD.decode(text).map_err(serde::de::Error::custom),
            Stored::Numbers(bytes) => Ok(bytes),
        }
    }
}

impl Rejection {
    /// What is kept of a rejected `payload`: its first [`MAX_KEPT_PAYLOAD`] bytes, its size and
    /// its SHA-256 (hex) — the three payload fields.
    pub fn kept_payload(payload: &[u8]) -> (Vec<u8>, u64, String) {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(payload);
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        (payload[..payload.len().min(MAX_KEPT_PAYLOAD)].to_vec(), payload.len() as u64, hex)
    }

    /// The whole payload's size (also for records written before sizes were kept).
    pub fn full_size(&self) -> u64 {
        self.payload_size.max(self.payload.len() as u64)
    }

    /// The deterministic id of a rejection of `payload` on `topic` (point `index`, if any).
    pub fn id_for(topic: &str, payload: &[u8], point_index: Option<u32>) -> String {
        // FNV-1a over the parts, 128 bits from two seeds: stable across versions and platforms.
        let hash = |seed: u64| {
            let index = point_index.map_or(u32::MAX, |i| i).to_le_bytes();
            crate::hash::Fnv1a64::with_seed(seed)
                .write(topic.as_bytes())
                .write(&[0])
                .write(payload)
                .write(&index)
                .finish()
        };
        format!("{:016x}{:016x}", hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4))
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

    #[test]
    fn a_rejection_keeps_16_kib_of_its_payload_as_base64_and_reads_records_written_before() {
        let junk = vec![0xAB; 1024 * 1024];
        let (payload, payload_size, payload_sha256) = Rejection::kept_payload(&junk);
        assert_eq!((payload.len(), payload_size, payload_sha256.len()), (MAX_KEPT_PAYLOAD, 1024 * 1024, 64));
        let rejection = Rejection {
            id: "r1".to_owned(),
            tenant: None,
            vehicle_id: None,
            received_at_ms: 5,
            reason: RejectReason::PayloadTooLarge,
            detail: "too large".to_owned(),
            topic: "vehicles/car-1/telemetry".to_owned(),
            point_index: None,
            payload,
            payload_size,
            payload_sha256,
        };
        let json = serde_json::to_string(&rejection).unwrap();
        assert!(json.len() < MAX_KEPT_PAYLOAD * 4 / 3 + 512, "base64, not an array of numbers: {}", json.len());
        assert_eq!(serde_json::from_str::<Rejection>(&json).unwrap(), rejection);
        // A record written before: the payload as numbers, no size or hash.
        let old = r#"{"id":"r0","tenant":null,"vehicle_id":null,"received_at_ms":1,"reason":"malformed_json",
            "detail":"EOF","topic":"t","point_index":null,"payload":[123,110]}"#;
        let old: Rejection = serde_json::from_str(old).unwrap();
        assert_eq!((old.full_size(), old.payload), (2, b"{n".to_vec()));
    }
}
