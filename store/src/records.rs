//! What the store keeps: enriched points, trips, rejections, the registry and the change feed.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tripline_model::{Event, Notice, Point, PushMessage, TenantId, TripId, TripNotices, TripSummary, VehicleId};
pub use tripline_model::{MAX_KEPT_PAYLOAD, Rejection};

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

/// One rejection per id, the earliest receipt of each, in their order otherwise: a write may
/// hold a message and its redelivery, and a rejection id is stored once, at its first receipt.
pub(crate) fn first_receipts(rejections: Vec<Rejection>) -> Vec<Rejection> {
    let mut first: HashMap<String, usize> = HashMap::with_capacity(rejections.len());
    let mut kept: Vec<Rejection> = Vec::with_capacity(rejections.len());
    for rejection in rejections {
        match first.get(rejection.id.as_str()) {
            Some(&at) if kept[at].received_at_ms <= rejection.received_at_ms => {}
            Some(&at) => kept[at] = rejection,
            None => {
                first.insert(rejection.id.clone(), kept.len());
                kept.push(rejection);
            }
        }
    }
    kept
}

/// The page cursor that continues after `rejection` (in `/v1/rejections`).
pub fn rejection_cursor(rejection: &Rejection) -> String {
    crate::codec::rejection_cursor(rejection.received_at_ms, &rejection.id)
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
