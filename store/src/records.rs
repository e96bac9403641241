//! What the store keeps: enriched points, trips, rejections, the registry and the change feed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tripline_model::hash::Fnv1a64;
use tripline_model::{
    Event, Notice, Point, PushMessage, RejectReason, TenantId, TripId, TripNotices, TripSummary, VehicleId,
};

/// Milliseconds in a UTC day: points are partitioned by (vehicle, day).
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// Widest time range one point read may span, in days (ScyllaDB reads one partition per day).
pub const MAX_POINT_RANGE_DAYS: i64 = 31;

/// The UTC day number of a Unix-millisecond timestamp.
pub fn day_of(ts_ms: i64) -> i32 {
    i32::try_from(ts_ms.div_euclid(DAY_MS)).unwrap_or(if ts_ms < 0 { i32::MIN } else { i32::MAX })
}

/// What the engine derived for a point.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    /// Distance the point adds to its trip.
    pub distance_m: f64,
    /// Speed, reported or derived.
    pub speed_mps: f64,
    /// Whether `speed_mps` was derived from positions.
    pub speed_derived: bool,
    /// Course, reported or derived.
    pub heading_deg: Option<f64>,
    /// Longitudinal acceleration.
    pub accel_mps2: Option<f64>,
    /// Lateral acceleration.
    pub lateral_accel_mps2: Option<f64>,
    /// Region name.
    pub region: Option<String>,
    /// Whether the vehicle moved into this point.
    pub moving: bool,
}

/// One enriched point of a trip.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPoint {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// The trip it belongs to.
    pub trip_id: TripId,
    /// The point as received.
    pub point: Point,
    /// What enrichment derived.
    pub derived: Derived,
}

impl StoredPoint {
    /// The clustering key within a (vehicle, day) partition: time, then `seq` (or, without one,
    /// a value derived from the position), so a replay rewrites the same rows.
    pub fn key(&self) -> PointKey {
        PointKey::of(&self.point)
    }
}

/// Position of a point within its vehicle's time line; also the cursor for paging points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PointKey {
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// `seq` as a signed 64-bit value, or a negative value derived from the position.
    pub seq_key: i64,
}

impl PointKey {
    /// The key of `point`.
    pub fn of(point: &Point) -> Self {
        let seq_key = match point.seq {
            Some(seq) => i64::from_ne_bytes(seq.to_ne_bytes()),
            None => {
                let mixed = point.lat.to_bits().rotate_left(17) ^ point.lon.to_bits();
                -1 - i64::try_from(mixed >> 2).unwrap_or(0)
            }
        };
        PointKey { ts_ms: point.ts_ms, seq_key }
    }
}

/// A trip as stored: its tenant, summary and events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TripRecord {
    /// The tenant owning the trip's vehicle.
    pub tenant: TenantId,
    /// The summary (carries trip and vehicle ids).
    pub summary: TripSummary,
    /// Every event, in time order.
    pub events: Vec<Event>,
    /// The geohash cells the trip passed ([`tripline_model::cell`]), for searching by box.
    #[serde(default)]
    pub cells: Vec<String>,
    /// What the trip dropped, kept so that a reopened trip counts its rejected points as before.
    #[serde(default, skip_serializing_if = "tripline_model::DroppedPoints::is_empty")]
    pub dropped: tripline_model::DroppedPoints,
}

/// A trip as this process last wrote it ([`crate::TripStore::take_written`]).
#[derive(Clone, Debug, PartialEq)]
pub enum KeptWrite {
    /// Written: the record.
    Written(Box<TripRecord>),
    /// Deleted (an automatically cut trip renamed).
    Deleted,
}

impl KeptWrite {
    /// The trip as it now is in the store: `None` when deleted.
    pub fn into_record(self) -> Option<TripRecord> {
        match self {
            KeptWrite::Written(record) => Some(*record),
            KeptWrite::Deleted => None,
        }
    }
}

impl From<Option<TripRecord>> for KeptWrite {
    fn from(record: Option<TripRecord>) -> Self {
        record.map_or(KeptWrite::Deleted, |record| KeptWrite::Written(Box::new(record)))
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

    /// The page cursor that continues after this rejection.
    pub fn cursor(&self) -> String {
        crate::codec::rejection_cursor(self.received_at_ms, &self.id)
    }

    /// The deterministic id of a rejection of `payload` on `topic` (point `index`, if any).
    pub fn id_for(topic: &str, payload: &[u8], point_index: Option<u32>) -> String {
        // FNV-1a over the parts, 128 bits from two seeds: stable across versions and platforms.
        let hash = |seed: u64| {
            let index = point_index.map_or(u32::MAX, |i| i).to_le_bytes();
            Fnv1a64::with_seed(seed).write(topic.as_bytes()).write(&[0]).write(payload).write(&index).finish()
        };
        format!("{:016x}{:016x}", hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4))
    }
}

/// A trip's full identity: tenant, vehicle, trip (ordered in that order).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TripKey {
    /// The tenant owning the vehicle.
    pub tenant: TenantId,
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// The trip.
    pub trip_id: TripId,
}

impl TripKey {
    /// The key of `trip_id` of `vehicle_id` of `tenant`.
    pub fn new(tenant: &TenantId, vehicle_id: &VehicleId, trip_id: &TripId) -> TripKey {
        TripKey { tenant: tenant.clone(), vehicle_id: vehicle_id.clone(), trip_id: trip_id.clone() }
    }

    /// The key of a stored trip.
    pub fn of(record: &TripRecord) -> TripKey {
        TripKey::new(&record.tenant, &record.summary.vehicle_id, &record.summary.trip_id)
    }
}

/// "This trip changed": an entry of the change feed the indexer and the push side follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The tenant.
    pub tenant: TenantId,
    /// The trip's vehicle.
    pub vehicle_id: VehicleId,
    /// The trip.
    pub trip_id: TripId,
    /// The writer that wrote the entry (set by [`crate::ChangeFeed::read_changes`]; the feed
    /// keeps it in its key, not in the entry).
    #[serde(skip)]
    pub writer: String,
    /// The entry's sequence number at its writer (set by `read_changes`, like `writer`).
    #[serde(skip)]
    pub seq: u64,
    /// When the store wrote the entry, Unix milliseconds (0 in entries written before it was
    /// kept).
    #[serde(default)]
    pub at_ms: i64,
    /// What the write tells insurers on the live stream and to webhooks, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices: Option<Box<TripNotices>>,
}

impl Change {
    /// A change of one trip, before the store gives it a place in the feed.
    pub fn of(tenant: &TenantId, vehicle: &VehicleId, trip: &TripId) -> Change {
        Change {
            tenant: tenant.clone(),
            vehicle_id: vehicle.clone(),
            trip_id: trip.clone(),
            writer: String::new(),
            seq: 0,
            at_ms: 0,
            notices: None,
        }
    }

    /// The entry announcing `record`'s write at `at_ms`, telling `notices` (if any).
    pub fn of_write(record: &TripRecord, notices: Option<&Vec<Notice>>, at_ms: i64) -> Change {
        let notices = notices
            .filter(|notices| !notices.is_empty())
            .map(|notices| Box::new(TripNotices { notices: notices.clone(), trip: record.summary.clone() }));
        Change { at_ms, notices, ..Change::of(&record.tenant, &record.summary.vehicle_id, &record.summary.trip_id) }
    }

    /// The messages this entry tells (none for most entries).
    pub fn messages(&self) -> Vec<PushMessage> {
        self.notices.as_ref().map_or_else(Vec::new, |n| n.messages(&self.tenant, self.at_ms))
    }

    /// The trip it names.
    pub fn key(&self) -> TripKey {
        TripKey::new(&self.tenant, &self.vehicle_id, &self.trip_id)
    }
}

/// How far a reader has followed the change feed: per writer, the last sequence number read.
/// Serialisable, so an indexer can commit it with its index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Writer id → last sequence number consumed.
    pub positions: BTreeMap<String, u64>,
}

impl Checkpoint {
    /// The position for `writer` (0: nothing read).
    pub fn position(&self, writer: &str) -> u64 {
        self.positions.get(writer).copied().unwrap_or(0)
    }

    /// Whether `self` is at or past `other` for every writer of `other`.
    pub fn covers(&self, other: &Checkpoint) -> bool {
        other.positions.iter().all(|(writer, seq)| self.position(writer) >= *seq)
    }

    /// Moves `writer`'s position to `seq` if that is further on (never back).
    pub fn advance(&mut self, writer: &str, seq: u64) {
        if seq > self.position(writer) {
            self.positions.insert(writer.to_owned(), seq);
        }
    }

    /// Moves every position to `other`'s where that is further on.
    pub fn advance_to(&mut self, other: &Checkpoint) {
        for (writer, seq) in &other.positions {
            self.advance(writer, *seq);
        }
    }
}

/// Changes read from the feed, and the checkpoint after them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeBatch {
    /// In order per writer.
    pub changes: Vec<Change>,
    /// Where the next read continues.
    pub checkpoint: Checkpoint,
}

/// One page of a listing and the cursor for the next (`None`: last page).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Opaque cursor for the next page.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

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
