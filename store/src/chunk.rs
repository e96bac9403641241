//! Points stored as chunks: many points of one vehicle's trip in one row, column by column.
//!
//! **Layout.** A chunk holds the points of one trip within one UTC day, in key order, at most
//! [`MAX_CHUNK_POINTS`] of them spanning at most [`MAX_CHUNK_SPAN_MS`]. It is stored under
//! `(vehicle, day)`, `(start_ts, stamp)` with its trip id, last timestamp and whether it is
//! sealed. Its bytes ([`encode`]) are a version byte, the point count, then one column per field
//! ([`crate::columns`]): time and position as delta-of-delta, the device's floats fixed-point at
//! their own precision (at most `tripline_model::PointPrecision`, to which decoding keeps them;
//! lossless for what is given), the derived values at the fixed precision of
//! [`DerivedPrecision`], flags as bitmaps, regions as runs over a dictionary.
//!
//! **Exactly once on read.** Every chunk has a stamp, larger for later writes
//! ([`next_stamp`]). The same point (same [`PointKey`]) may be in several chunks — a redelivered
//! message, a trip rewritten after a late point, a renamed trip — and a read keeps the copy of
//! the chunk with the largest stamp ([`Resolved`]), so every point comes back once, as last
//! written, with the trip it last belonged to.
//!
//! **Sealing.** When a trip completes, its points are rewritten as a few large sealed chunks under
//! a new stamp, then the chunks they replace are deleted ([`SealPlan`]). A crash between the two
//! steps leaves both, which reads resolve to the same points; running the seal again finishes it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use tripline_model::hash::Fnv1a64;
use tripline_model::time::now_ms;
use tripline_model::{Point, TenantId, TripId, VehicleId, quantise};

use crate::columns::{ColumnReader, ColumnWriter, Order, ReadResult, Truncated};
use crate::records::{DAY_MS, Derived, MAX_POINT_RANGE_DAYS, Page, PointKey, StoredPoint, TripRecord, day_of};
use crate::{StoreError, StoreResult};

/// Points per chunk at most: a sealed hour at 1 Hz fits in one (about 30 KB), and a page of
/// points never decodes more than a few chunks it does not return.
pub const MAX_CHUNK_POINTS: usize = 4096;

/// Time a chunk may span at most: a read of `[from, to)` looks for chunks starting this much
/// before `from`, and no earlier.
pub const MAX_CHUNK_SPAN_MS: i64 = 3_600_000;

/// Version byte of the chunk encoding.
const CHUNK_V1: u8 = 1;

/// Fixed precision (decimals) of derived values, which are computed, not measured: finer than
/// anything the API or the score uses, coarse enough to pack in a few bits.
pub struct DerivedPrecision;

impl DerivedPrecision {
    /// Distance a point adds: 1 cm.
    pub const DISTANCE_M: u8 = 2;
    /// Derived speed: 0.01 m/s (0.036 km/h).
    pub const SPEED_MPS: u8 = 2;
    /// Derived course: 0.1°.
    pub const HEADING_DEG: u8 = 1;
    /// Accelerations: 0.01 m/s² (a thousandth of g).
    pub const ACCEL_MPS2: u8 = 2;
}

/// A chunk's place: its partition (vehicle, day) and its key within it (start, stamp).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ChunkId {
    pub(crate) day: i32,
    pub(crate) start_ts: i64,
    pub(crate) stamp: i64,
}

/// A chunk as stored: where it is, what it holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChunkRow {
    pub(crate) id: ChunkId,
    pub(crate) trip_id: TripId,
    pub(crate) end_ts: i64,
    pub(crate) sealed: bool,
    /// The point columns ([`encode`]).
    pub(crate) points: Vec<u8>,
}

/// The next chunk stamp of this process: increasing, and ahead of every stamp given out by an
/// earlier process as long as the clock does not go back (1,024 stamps per millisecond).
pub(crate) fn next_stamp() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let floor = now_ms().saturating_mul(1024);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = floor.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Groups points into chunk rows: by vehicle, trip and day, in key order, split at
/// [`MAX_CHUNK_POINTS`] and [`MAX_CHUNK_SPAN_MS`]. A point given twice is written once (the
/// later copy). Every row gets a new stamp.
pub(crate) fn chunk_rows(points: &[StoredPoint], sealed: bool) -> Vec<(VehicleId, ChunkRow)> {
    let mut groups: BTreeMap<(&VehicleId, &TripId, i32), BTreeMap<PointKey, &StoredPoint>> = BTreeMap::new();
    for p in points {
        groups.entry((&p.vehicle_id, &p.trip_id, day_of(p.point.ts_ms))).or_default().insert(p.key(), p);
    }
    let mut rows = Vec::new();
    for ((vehicle, trip_id, day), group) in groups {
        let sorted: Vec<&StoredPoint> = group.into_values().collect();
        let mut rest = sorted.as_slice();
        while let Some(first) = rest.first() {
            let start_ts = first.point.ts_ms;
            let len = rest
                .iter()
                .take(MAX_CHUNK_POINTS)
                .take_while(|p| p.point.ts_ms - start_ts < MAX_CHUNK_SPAN_MS)
                .count()
                .max(1);
            let (run, tail) = rest.split_at(len);
            rest = tail;
            let end_ts = run.last().map_or(start_ts, |p| p.point.ts_ms);
            let row = ChunkRow {
                id: ChunkId { day, start_ts, stamp: next_stamp() },
                trip_id: trip_id.clone(),
                end_ts,
                sealed,
                points: encode(run),
            };
            rows.push((vehicle.clone(), row));
        }
    }
    rows
}

/// The columns of one trip's points, given in key order.
pub(crate) fn encode(points: &[&StoredPoint]) -> Vec<u8> {
    let mut w = ColumnWriter { out: Vec::with_capacity(16 + points.len() * 12) };
    w.out.push(CHUNK_V1);
    w.varint(points.len() as u64);
    let raw = |f: fn(&Point) -> Option<f64>| points.iter().map(|p| f(&p.point)).collect::<Vec<_>>();
    let derived = |f: fn(&Derived) -> Option<f64>, decimals: u8| {
        points.iter().map(|p| f(&p.derived).map(|v| quantise(v, decimals))).collect::<Vec<_>>()
    };
    w.sequence(&points.iter().map(|p| p.point.ts_ms).collect::<Vec<_>>(), Order::DeltaOfDelta);
    w.flags(points.iter().map(|p| p.point.seq.is_some()));
    let seqs: Vec<i64> = points.iter().filter_map(|p| p.point.seq).map(|s| s as i64).collect();
    w.sequence(&seqs, Order::DeltaOfDelta);
    w.floats(&points.iter().map(|p| p.point.lat).collect::<Vec<_>>(), Order::DeltaOfDelta);
    w.floats(&points.iter().map(|p| p.point.lon).collect::<Vec<_>>(), Order::DeltaOfDelta);
    w.optional_floats(&raw(|p| p.speed_mps), Order::Delta);
    w.optional_floats(&raw(|p| p.heading_deg), Order::Delta);
    w.optional_floats(&raw(|p| p.accuracy_m), Order::Delta);
    w.optional_floats(&raw(|p| p.alt_m), Order::Delta);
    w.optional_floats(&raw(|p| p.odometer_m), Order::DeltaOfDelta);
    w.flags(points.iter().map(|p| p.point.ignition.is_some()));
    w.flags(points.iter().filter_map(|p| p.point.ignition).collect::<Vec<_>>().into_iter());
    w.floats(
        &points.iter().map(|p| quantise(p.derived.distance_m, DerivedPrecision::DISTANCE_M)).collect::<Vec<_>>(),
        Order::Delta,
    );
    w.flags(points.iter().map(|p| p.derived.speed_derived));
    // Derived speed and course mostly repeat what the device reported: only the others are kept.
    let speed_same: Vec<bool> = points.iter().map(|p| p.point.speed_mps == Some(p.derived.speed_mps)).collect();
    w.flags(speed_same.iter().copied());
    let speeds: Vec<f64> = points
        .iter()
        .zip(&speed_same)
        .filter(|(_, same)| !**same)
        .map(|(p, _)| quantise(p.derived.speed_mps, DerivedPrecision::SPEED_MPS))
        .collect();
    w.floats(&speeds, Order::Delta);
    let heading_same: Vec<bool> = points.iter().map(|p| p.point.heading_deg == p.derived.heading_deg).collect();
    w.flags(heading_same.iter().copied());
    let headings: Vec<Option<f64>> = derived(|d| d.heading_deg, DerivedPrecision::HEADING_DEG)
        .into_iter()
        .zip(&heading_same)
        .filter(|(_, same)| !**same)
        .map(|(h, _)| h)
        .collect();
    w.optional_floats(&headings, Order::Delta);
    w.optional_floats(&derived(|d| d.accel_mps2, DerivedPrecision::ACCEL_MPS2), Order::Delta);
    w.optional_floats(&derived(|d| d.lateral_accel_mps2, DerivedPrecision::ACCEL_MPS2), Order::Delta);
    w.flags(points.iter().map(|p| p.derived.moving));
    write_regions(&mut w, points);
    w.out
}

/// Regions as runs of equal values over a dictionary of the chunk's names.
fn write_regions(w: &mut ColumnWriter, points: &[&StoredPoint]) {
    let mut names: Vec<&str> = Vec::new();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for p in points {
        let index = match p.derived.region.as_deref() {
            None => 0,
            Some(name) => match names.iter().position(|n| *n == name) {
                Some(i) => i as u64 + 1,
                None => {
                    names.push(name);
                    names.len() as u64
                }
            },
        };
        match runs.last_mut() {
            Some((last, len)) if *last == index => *len += 1,
            _ => runs.push((index, 1)),
        }
    }
    w.varint(names.len() as u64);
    for name in names {
        w.bytes(name.as_bytes());
    }
    w.varint(runs.len() as u64);
    for (index, len) in runs {
        w.varint(index);
        w.varint(len);
    }
}

/// The points of a chunk of `vehicle`'s trip `trip_id`.
pub(crate) fn decode(vehicle: &VehicleId, trip_id: &TripId, bytes: &[u8]) -> StoreResult<Vec<StoredPoint>> {
    decode_columns(vehicle, trip_id, bytes).map_err(|Truncated| StoreError::Corrupt {
        table: "point_chunks",
        detail: format!("chunk of trip {trip_id} of {vehicle} cannot be decoded"),
    })
}

fn decode_columns(vehicle: &VehicleId, trip_id: &TripId, bytes: &[u8]) -> ReadResult<Vec<StoredPoint>> {
    let mut r = ColumnReader::new(bytes);
    if r.byte()? != CHUNK_V1 {
        return Err(Truncated);
    }
    let n = r.count(MAX_CHUNK_POINTS)?;
    let ts = r.sequence(n, Order::DeltaOfDelta)?;
    let seq_present = r.flags(n)?;
    let mut seqs = r.sequence(seq_present.iter().filter(|&&p| p).count(), Order::DeltaOfDelta)?.into_iter();
    let lat = r.floats(n, Order::DeltaOfDelta)?;
    let lon = r.floats(n, Order::DeltaOfDelta)?;
    let speed = r.optional_floats(n, Order::Delta)?;
    let heading = r.optional_floats(n, Order::Delta)?;
    let accuracy = r.optional_floats(n, Order::Delta)?;
    let alt = r.optional_floats(n, Order::Delta)?;
    let odometer = r.optional_floats(n, Order::DeltaOfDelta)?;
    let ignition_present = r.flags(n)?;
    let mut ignition = r.flags(ignition_present.iter().filter(|&&p| p).count())?.into_iter();
    let distance = r.floats(n, Order::Delta)?;
    let speed_derived = r.flags(n)?;
    let speed_same = r.flags(n)?;
    let mut speeds = r.floats(speed_same.iter().filter(|&&s| !s).count(), Order::Delta)?.into_iter();
    let heading_same = r.flags(n)?;
    let mut headings = r.optional_floats(heading_same.iter().filter(|&&s| !s).count(), Order::Delta)?.into_iter();
    let accel = r.optional_floats(n, Order::Delta)?;
    let lateral = r.optional_floats(n, Order::Delta)?;
    let moving = r.flags(n)?;
    let regions = read_regions(&mut r, n)?;
    if !r.is_empty() {
        return Err(Truncated);
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let point = Point {
            seq: if seq_present[i] { Some(seqs.next().ok_or(Truncated)? as u64) } else { None },
            ts_ms: ts[i],
            lat: lat[i],
            lon: lon[i],
            speed_mps: speed[i],
            heading_deg: heading[i],
            accuracy_m: accuracy[i],
            alt_m: alt[i],
            ignition: if ignition_present[i] { Some(ignition.next().ok_or(Truncated)?) } else { None },
            odometer_m: odometer[i],
        };
        let derived = Derived {
            distance_m: distance[i],
            speed_mps: match (speed_same[i], point.speed_mps) {
                (true, Some(reported)) => reported,
                (true, None) => return Err(Truncated),
                (false, _) => speeds.next().ok_or(Truncated)?,
            },
            speed_derived: speed_derived[i],
            heading_deg: if heading_same[i] { point.heading_deg } else { headings.next().ok_or(Truncated)? },
            accel_mps2: accel[i],
            lateral_accel_mps2: lateral[i],
            region: regions[i].clone(),
            moving: moving[i],
        };
        out.push(StoredPoint { vehicle_id: vehicle.clone(), trip_id: trip_id.clone(), point, derived });
    }
    Ok(out)
}

fn read_regions(r: &mut ColumnReader<'_>, n: usize) -> ReadResult<Vec<Option<String>>> {
    let count = r.count(n)?;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        names.push(String::from_utf8(r.bytes()?.to_vec()).map_err(|_| Truncated)?);
    }
    let runs = r.count(n)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..runs {
        let index = r.count(names.len())?;
        let len = r.count(n - out.len())?;
        let name = if index == 0 { None } else { Some(names[index - 1].clone()) };
        out.extend(std::iter::repeat_n(name, len));
    }
    if out.len() != n {
        return Err(Truncated);
    }
    Ok(out)
}

/// Points of several chunks, each kept once: the copy of the chunk with the largest stamp.
#[derive(Default)]
pub(crate) struct Resolved {
    points: BTreeMap<PointKey, (i64, StoredPoint)>,
}

impl Resolved {
    /// Adds the points of a chunk written under `stamp`.
    pub(crate) fn add(&mut self, stamp: i64, points: Vec<StoredPoint>) {
        for p in points {
            match self.points.entry(p.key()) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert((stamp, p));
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    if stamp > slot.get().0 {
                        slot.insert((stamp, p));
                    }
                }
            }
        }
    }

    /// Every point in `[from_ms, to_ms)`, in key order.
    pub(crate) fn within(self, from_ms: i64, to_ms: i64) -> Vec<StoredPoint> {
        self.points
            .into_values()
            .map(|(_, p)| p)
            .filter(|p| p.point.ts_ms >= from_ms && p.point.ts_ms < to_ms)
            .collect()
    }

    /// The stamp of the copy of `key` that a read returns.
    fn winner(&self, key: &PointKey) -> Option<i64> {
        self.points.get(key).map(|(stamp, _)| *stamp)
    }
}

/// A page of one trip's points, built from chunks given in `(start_ts, stamp)` order.
pub(crate) struct TripPage {
    trip_id: TripId,
    vehicle: VehicleId,
    tag: u32,
    after: Option<PointKey>,
    start_ms: i64,
    end_ms: i64,
    limit: usize,
    resolved: Resolved,
}

impl TripPage {
    /// A page of `limit` points of `trip` (the tenant's) after `cursor`, refused when the cursor
    /// was not issued for this trip or lies outside it ([`parse_point_cursor`]).
    pub(crate) fn for_trip(trip: &TripRecord, cursor: Option<&str>, limit: usize) -> StoreResult<Self> {
        let summary = &trip.summary;
        let start_ms = summary.start_time.timestamp_millis();
        let end_ms = summary.end_time.timestamp_millis().saturating_add(1);
        let tag = trip_tag(&trip.tenant, &summary.trip_id);
        let after = cursor.map(|c| parse_point_cursor(c, tag, start_ms, end_ms)).transpose()?;
        Ok(TripPage {
            trip_id: summary.trip_id.clone(),
            vehicle: summary.vehicle_id.clone(),
            tag,
            after,
            start_ms,
            end_ms,
            limit: limit.max(1),
            resolved: Resolved::default(),
        })
    }

    /// The trip's vehicle, whose chunks to read.
    pub(crate) fn vehicle(&self) -> &VehicleId {
        &self.vehicle
    }

    /// The time range whose chunks to read, in order (from the cursor on).
    pub(crate) fn range(&self) -> (i64, i64) {
        (self.after.map_or(self.start_ms, |k| k.ts_ms), self.end_ms)
    }

    /// Adds a chunk (chunks of other trips too: a later copy of a point may have moved it).
    pub(crate) fn add(&mut self, row: &ChunkRow) -> StoreResult<()> {
        let lower = self.after.map_or(i64::MIN, |k| k.ts_ms);
        if row.end_ts < lower {
            return Ok(());
        }
        let points = decode(&self.vehicle, &row.trip_id, &row.points)?;
        let after = self.after;
        let end_ms = self.end_ms;
        self.resolved.add(
            row.id.stamp,
            points.into_iter().filter(|p| after.is_none_or(|a| p.key() > a) && p.point.ts_ms < end_ms).collect(),
        );
        Ok(())
    }

    /// Whether the page is complete once the next chunk starts at `next_start_ms`: it has
    /// `limit` points of the trip, all before that chunk, which therefore cannot hold a later
    /// copy of any of them.
    pub(crate) fn is_complete(&self, next_start_ms: i64) -> bool {
        let mut count = 0;
        for (key, (_, p)) in &self.resolved.points {
            if key.ts_ms >= next_start_ms {
                return false;
            }
            if p.trip_id == self.trip_id {
                count += 1;
                if count == self.limit {
                    return true;
                }
            }
        }
        false
    }

    /// The page and its cursor.
    pub(crate) fn finish(self) -> Page<StoredPoint> {
        let (trip_id, tag) = (self.trip_id, self.tag);
        let items: Vec<StoredPoint> = self
            .resolved
            .points
            .into_values()
            .map(|(_, p)| p)
            .filter(|p| p.trip_id == trip_id)
            .take(self.limit)
            .collect();
        let next = (items.len() == self.limit).then(|| items.last().map(|p| point_cursor(p.key(), tag))).flatten();
        Page { items, next }
    }
}

/// What sealing a trip writes and deletes.
#[derive(Debug, Default)]
pub(crate) struct SealPlan {
    /// The trip's points, to be written as sealed chunks.
    pub(crate) points: Vec<StoredPoint>,
    /// Chunks every point of which is in `points` or was rewritten later elsewhere.
    pub(crate) obsolete: Vec<ChunkId>,
}

impl SealPlan {
    /// The plan for `trip_id` whose points lie in `[from_ms, to_ms]`, from every chunk that may
    /// hold points in that range (in any order); `None` when the trip is already one set of
    /// sealed chunks. Only points in the range are known in all their copies (a chunk holding one
    /// overlaps the range, so it was read): the plan seals those, and deletes a chunk only when
    /// all its points lie in the range and each is sealed now or was rewritten later elsewhere.
    pub(crate) fn of(
        vehicle: &VehicleId,
        trip_id: &TripId,
        (from_ms, to_ms): (i64, i64),
        rows: &[ChunkRow],
    ) -> StoreResult<Option<SealPlan>> {
        let inside = |key: &PointKey| key.ts_ms >= from_ms && key.ts_ms <= to_ms;
        let mut resolved = Resolved::default();
        let mut decoded = Vec::with_capacity(rows.len());
        for row in rows {
            let points = decode(vehicle, &row.trip_id, &row.points)?;
            let keys: Vec<PointKey> = points.iter().map(StoredPoint::key).collect();
            resolved.add(row.id.stamp, points);
            decoded.push((row, keys));
        }
        let obsolete: Vec<&ChunkRow> = decoded
            .iter()
            .filter(|(row, keys)| {
                // The trip's own points go into the sealed chunks, which are written first.
                keys.iter().all(|k| {
                    inside(k) && (&row.trip_id == trip_id || resolved.winner(k).is_some_and(|w| w != row.id.stamp))
                })
            })
            .map(|(row, _)| *row)
            .collect();
        let untouched = rows.iter().filter(|r| &r.trip_id == trip_id).all(|r| r.sealed)
            && obsolete.iter().all(|r| &r.trip_id == trip_id);
        if untouched {
            return Ok(None);
        }
        let points: Vec<StoredPoint> = resolved
            .points
            .into_iter()
            .filter(|(key, (_, p))| inside(key) && &p.trip_id == trip_id)
            .map(|(_, (_, p))| p)
            .collect();
        Ok(Some(SealPlan { points, obsolete: obsolete.into_iter().map(|r| r.id.clone()).collect() }))
    }
}

/// A short tag of a trip's identity, carried in its points cursors so a cursor cannot address
/// another trip's points.
pub(crate) fn trip_tag(tenant: &TenantId, trip_id: &TripId) -> u32 {
    let hash = Fnv1a64::with_seed(0x7472_6970_6c69_6e65)
        .write(tenant.as_str().as_bytes())
        .write(&[0])
        .write(trip_id.as_str().as_bytes())
        .finish();
    (hash >> 32) as u32 ^ hash as u32
}

/// Cursor text for a trip's point position: `{ts_ms}.{seq_key}.{tag:08x}`.
pub(crate) fn point_cursor(key: PointKey, tag: u32) -> String {
    format!("{}.{}.{tag:08x}", key.ts_ms, key.seq_key)
}

/// The position of a points cursor, refused unless it was issued for this trip (`tag`) and lies
/// within the trip's time range `[start_ms, end_ms]`.
pub(crate) fn parse_point_cursor(cursor: &str, tag: u32, start_ms: i64, end_ms: i64) -> StoreResult<PointKey> {
    let mut parts = cursor.splitn(3, '.');
    let (Some(ts), Some(seq), Some(cursor_tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(StoreError::BadCursor);
    };
    let key = PointKey {
        ts_ms: ts.parse().map_err(|_| StoreError::BadCursor)?,
        seq_key: seq.parse().map_err(|_| StoreError::BadCursor)?,
    };
    if cursor_tag.len() != 8 || u32::from_str_radix(cursor_tag, 16).ok() != Some(tag) {
        return Err(StoreError::BadCursor);
    }
    if key.ts_ms < start_ms || key.ts_ms > end_ms {
        return Err(StoreError::BadCursor);
    }
    Ok(key)
}

/// Refuses a point read over more than [`MAX_POINT_RANGE_DAYS`] days (ScyllaDB reads one
/// partition per day).
pub(crate) fn check_point_range(from_ms: i64, to_ms: i64) -> StoreResult<()> {
    if from_ms < to_ms && i64::from(day_of(to_ms - 1)) - i64::from(day_of(from_ms)) > MAX_POINT_RANGE_DAYS {
        return Err(StoreError::Refused {
            detail: format!("a point range may span at most {MAX_POINT_RANGE_DAYS} days"),
        });
    }
    Ok(())
}

/// The first and last day partitions of `[from_ms, to_ms)` and, per day, the range of chunk
/// starts to read: chunks never cross a day, and start at most [`MAX_CHUNK_SPAN_MS`] before
/// the first point they hold.
pub(crate) fn day_ranges(from_ms: i64, to_ms: i64) -> Vec<(i32, i64, i64)> {
    if from_ms >= to_ms {
        return Vec::new();
    }
    let lo = from_ms.saturating_sub(MAX_CHUNK_SPAN_MS);
    (day_of(lo)..=day_of(to_ms - 1))
        .map(|day| {
            let day_start = i64::from(day) * DAY_MS;
            (day, lo.max(day_start), to_ms.min(day_start + DAY_MS))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    const T0: i64 = 1_795_564_740_000;

    fn point(trip: &str, i: i64) -> StoredPoint {
        StoredPoint {
            vehicle_id: VehicleId::parse("car-1").unwrap(),
            trip_id: TripId::parse(trip).unwrap(),
            point: Point {
                seq: Some(100 + i as u64),
                ts_ms: T0 + i * 1000,
                // As devices send them: decimal degrees with at most 7 decimals.
                lat: (525_200_080 + i * 1230) as f64 / 1e7,
                lon: (134_049_540 + i * 2010 + i % 7) as f64 / 1e7,
                speed_mps: Some(13.9),
                heading_deg: Some(271.0),
                accuracy_m: Some(4.5),
                alt_m: None,
                ignition: Some(true),
                odometer_m: None,
            },
            derived: Derived {
                distance_m: 13.87,
                speed_mps: 13.9,
                speed_derived: false,
                heading_deg: Some(271.0),
                accel_mps2: Some(0.12),
                lateral_accel_mps2: Some(-0.03),
                region: (i > 5).then(|| "Berlin".to_owned()),
                moving: true,
            },
        }
    }

    fn record(trip: &str, from: i64, to: i64) -> TripRecord {
        let at = |i: i64| tripline_model::time::to_datetime(T0 + i * 1000);
        let summary: tripline_model::TripSummary = serde_json::from_value(serde_json::json!({
            "trip_id": trip, "vehicle_id": "car-1", "status": "completed", "start_time": at(from), "end_time": at(to),
            "duration_s": 0.0, "moving_time_s": 0.0, "idle_time_s": 0.0, "distance_km": 0.0, "max_speed_kmh": 0.0,
            "avg_speed_kmh": 0.0, "start": {"lat": 0.0, "lon": 0.0, "region": null},
            "end": {"lat": 0.0, "lon": 0.0, "region": null}, "regions": [],
            "events": {"harsh_braking": 0, "harsh_acceleration": 0, "harsh_cornering": 0, "speeding": 0},
            "speeding_s": 0.0, "night_driving_s": 0.0, "point_count": 0, "rejected_point_count": 0, "score": 100.0,
            "score_version": 1, "updated_at": at(to)
        }))
        .unwrap();
        TripRecord {
            tenant: TenantId::parse("acme").unwrap(),
            summary,
            events: Vec::new(),
            cells: Vec::new(),
            dropped: Default::default(),
        }
    }

    fn stored(points: &[StoredPoint]) -> Vec<ChunkRow> {
        chunk_rows(points, false).into_iter().map(|(_, row)| row).collect()
    }

    #[test]
    fn a_steady_drive_costs_a_few_bytes_a_point() {
        // From midnight on: one day, one chunk.
        let points: Vec<StoredPoint> = (60..3660).map(|i| point("t1", i)).collect();
        let rows = stored(&points);
        assert_eq!(rows.len(), 1);
        let per_point = rows[0].points.len() as f64 / points.len() as f64;
        assert!(per_point < 2.0, "{per_point} bytes a point");
        let back = decode(&points[0].vehicle_id, &points[0].trip_id, &rows[0].points).unwrap();
        assert_eq!(back, points);
    }

    #[test]
    fn chunks_split_at_days_span_and_size() {
        // T0 is a minute before midnight: 61 points cross the day.
        let points: Vec<StoredPoint> = (0..61).map(|i| point("t1", i)).collect();
        let rows = stored(&points);
        assert_eq!(rows.iter().map(|r| r.id.day).collect::<Vec<_>>(), vec![day_of(T0), day_of(T0) + 1]);
        let long: Vec<StoredPoint> = (0..5000).map(|i| point("t1", 100 + i)).collect();
        let rows = stored(&long);
        assert!(rows.iter().all(|r| r.end_ts - r.id.start_ts < MAX_CHUNK_SPAN_MS));
        assert!(rows.len() >= 2);
    }

    #[test]
    fn derived_values_keep_their_fixed_precision() {
        let mut p = point("t1", 0);
        p.derived.distance_m = 12.345_678;
        p.derived.speed_mps = 7.777_7;
        p.derived.heading_deg = Some(12.34);
        let rows = stored(std::slice::from_ref(&p));
        let back = decode(&p.vehicle_id, &p.trip_id, &rows[0].points).unwrap();
        assert_eq!(back[0].derived.distance_m, 12.35);
        assert_eq!(back[0].derived.speed_mps, 7.78);
        assert_eq!(back[0].derived.heading_deg, Some(12.3));
        assert_eq!(back[0].point, p.point, "what the device sent comes back exactly");
    }

    #[test]
    fn the_latest_copy_of_a_point_wins() {
        let first = stored(&(0..10).map(|i| point("t1", i)).collect::<Vec<_>>());
        let moved = stored(&(5..15).map(|i| point("t2", i)).collect::<Vec<_>>());
        let mut resolved = Resolved::default();
        for row in moved.iter().chain(&first) {
            let vehicle = VehicleId::parse("car-1").unwrap();
            resolved.add(row.id.stamp, decode(&vehicle, &row.trip_id, &row.points).unwrap());
        }
        let points = resolved.within(i64::MIN, i64::MAX);
        assert_eq!(points.len(), 15, "each point once");
        assert_eq!(points.iter().filter(|p| p.trip_id.as_str() == "t2").count(), 10);
    }

    #[test]
    fn a_seal_replaces_the_trips_chunks_and_then_has_nothing_to_do() {
        let vehicle = VehicleId::parse("car-1").unwrap();
        let trip = TripId::parse("t1").unwrap();
        let mut rows: Vec<ChunkRow> = (0..10).flat_map(|i| stored(&[point("t1", i), point("t1", i + 1)])).collect();
        let plan = SealPlan::of(&vehicle, &trip, (T0, T0 + 60_000), &rows).unwrap().unwrap();
        assert_eq!(plan.points.len(), 11);
        assert_eq!(plan.obsolete.len(), 10);
        let sealed: Vec<ChunkRow> = chunk_rows(&plan.points, true).into_iter().map(|(_, r)| r).collect();
        // A crash before the deletions: both are read, each point once.
        rows.extend(sealed.iter().cloned());
        let mut page = TripPage { limit: 100, ..TripPage::for_trip(&record("t1", 0, 20), None, 1).unwrap() };
        for row in &rows {
            page.add(row).unwrap();
        }
        assert_eq!(page.finish().items.len(), 11);
        assert!(SealPlan::of(&vehicle, &trip, (T0, T0 + 60_000), &sealed).unwrap().is_none());
    }

    #[test]
    fn a_seal_keeps_what_it_cannot_see_every_copy_of() {
        let vehicle = VehicleId::parse("car-1").unwrap();
        let trip = TripId::parse("t1").unwrap();
        // One chunk of t1 reaching past the range sealed; its last point went to t2 later, in a
        // chunk starting after the range (not read).
        let rows = stored(&(0..10).map(|i| point("t1", i)).collect::<Vec<_>>());
        let plan = SealPlan::of(&vehicle, &trip, (T0, T0 + 8_000), &rows).unwrap().unwrap();
        assert_eq!(plan.points.len(), 9, "only the points in the range");
        assert!(plan.obsolete.is_empty(), "the chunk still holds the only copy the seal saw of point 9");
    }

    #[test]
    fn cursors_address_only_their_own_trip() {
        let tenant = TenantId::parse("acme").unwrap();
        let (one, two) = (TripId::parse("t1").unwrap(), TripId::parse("t2").unwrap());
        let key = PointKey { ts_ms: T0 + 5000, seq_key: 105 };
        let cursor = point_cursor(key, trip_tag(&tenant, &one));
        assert_eq!(parse_point_cursor(&cursor, trip_tag(&tenant, &one), T0, T0 + 10_000).unwrap(), key);
        assert!(parse_point_cursor(&cursor, trip_tag(&tenant, &two), T0, T0 + 10_000).is_err());
        assert!(parse_point_cursor(&cursor, trip_tag(&tenant, &one), T0 + 6000, T0 + 10_000).is_err());
        assert!(parse_point_cursor("1.2", trip_tag(&tenant, &one), 0, 10).is_err());
    }

    fn arb_point() -> impl Strategy<Value = StoredPoint> {
        (
            0i64..200,
            proptest::option::of(any::<u64>()),
            (-900_000_000i64..900_000_000, any::<f64>()),
            proptest::option::of(prop_oneof![any::<f64>(), (0u32..5000).prop_map(|v| f64::from(v) / 100.0)]),
            proptest::option::of(any::<bool>()),
            (any::<f64>(), any::<bool>(), proptest::option::of(-50i32..50), any::<bool>(), 0u8..3),
        )
            .prop_map(|(i, seq, (lat, lon), speed, ignition, (distance, derived, accel, moving, region))| {
                let mut p = point("t1", i);
                p.point.seq = seq;
                p.point.lat = lat as f64 / 1e7;
                p.point.lon = lon;
                p.point.speed_mps = speed;
                p.point.heading_deg = speed.map(|s| s * 3.0);
                p.point.ignition = ignition;
                p.point.odometer_m = speed;
                p.derived.distance_m = distance;
                p.derived.speed_derived = derived;
                p.derived.speed_mps = if derived { 3.25 } else { speed.unwrap_or(0.0) };
                p.derived.accel_mps2 = accel.map(|a| f64::from(a) / 10.0);
                p.derived.moving = moving;
                p.derived.region = (region > 0).then(|| format!("r{region}"));
                p
            })
    }

    proptest! {
        #[test]
        fn what_the_device_sent_round_trips_exactly(points in proptest::collection::vec(arb_point(), 1..300)) {
            let rows = stored(&points);
            let vehicle = VehicleId::parse("car-1").unwrap();
            let mut back = Vec::new();
            for row in &rows {
                back.extend(decode(&vehicle, &row.trip_id, &row.points).unwrap());
            }
            let mut expected: BTreeMap<PointKey, StoredPoint> = BTreeMap::new();
            for p in &points {
                expected.insert(p.key(), p.clone());
            }
            prop_assert_eq!(back.len(), expected.len());
            for (got, want) in back.iter().zip(expected.values()) {
                prop_assert_eq!(format!("{:?}", got.point), format!("{:?}", want.point));
                prop_assert_eq!(got.derived.speed_derived, want.derived.speed_derived);
                prop_assert_eq!(got.derived.moving, want.derived.moving);
                prop_assert_eq!(&got.derived.region, &want.derived.region);
                prop_assert_eq!(got.derived.accel_mps2, want.derived.accel_mps2);
            }
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let vehicle = VehicleId::parse("car-1").unwrap();
            let trip = TripId::parse("t1").unwrap();
            let mut with_version = vec![CHUNK_V1];
            with_version.extend_from_slice(&bytes);
            let _ = decode(&vehicle, &trip, &bytes);
            let _ = decode(&vehicle, &trip, &with_version);
        }
    }
}
