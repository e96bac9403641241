//! A trip's points as a set: sorted by time, duplicates collapsed to one canonical point.
//!
//! Two points are duplicates when they carry the same `seq`, or the same timestamp and the same
//! position. Of a group of duplicates the smallest in [`canonical_cmp`] order stays, so the set is
//! the same whatever order the points arrived in.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use tripline_model::Point;

fn opt_bits(value: Option<f64>) -> u64 {
    value.map_or(u64::MAX, f64::to_bits)
}

/// A total order on points: time, then `seq`, then position, then every other field.
pub fn canonical_cmp(a: &Point, b: &Point) -> Ordering {
    (a.ts_ms, a.seq.unwrap_or(u64::MAX), a.lat.to_bits(), a.lon.to_bits())
        .cmp(&(b.ts_ms, b.seq.unwrap_or(u64::MAX), b.lat.to_bits(), b.lon.to_bits()))
        .then_with(|| {
            [
                opt_bits(a.speed_mps),
                opt_bits(a.heading_deg),
                opt_bits(a.accuracy_m),
                opt_bits(a.alt_m),
                opt_bits(a.odometer_m),
            ]
            .cmp(&[
                opt_bits(b.speed_mps),
                opt_bits(b.heading_deg),
                opt_bits(b.accuracy_m),
                opt_bits(b.alt_m),
                opt_bits(b.odometer_m),
            ])
        })
        .then_with(|| a.ignition.cmp(&b.ignition))
}

/// What inserting a point did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insertion {
    /// It is now the last point: earlier results stay valid and can be extended.
    Appended,
    /// It landed before the last point or replaced a duplicate: results must be recomputed.
    Changed,
    /// A duplicate of a point already kept (or of one preferred over it): nothing changed.
    Duplicate,
}

/// The sorted, de-duplicated points of one trip: all of them, or (after [`TripPoints::trim_before`])
/// the recent ones, with the first point remembered.
#[derive(Clone, Debug, Default)]
pub struct TripPoints {
    points: Vec<Point>,
    ts_by_seq: HashMap<u64, i64>,
    /// Points dropped from the front.
    trimmed: usize,
    /// The first point, once the front was trimmed.
    first: Option<Point>,
    /// A 64-bit hash of every field of each point dropped from the front, the last
    /// [`MAX_TRIMMED_HASHES`]: a redelivered point is recognised as a duplicate without holding
    /// it (8 bytes a point instead of a point).
    trimmed_hashes: HashSet<u64, BuildHasherDefault<Prehashed>>,
    /// The same hashes in the order they were dropped, to forget the oldest.
    trimmed_order: VecDeque<u64>,
}

/// Below this many elements a trimmed container keeps its capacity (see [`spare_target`]).
const SPARE_FLOOR: usize = 64;

/// The capacity a trimmed container of `len` elements shrinks to when it holds less than a
/// quarter of its `capacity`: after a trim that let go of many points at once (a trip reopened or
/// rebuilt from the store holds all its points until its first write), not in the steady trims
/// of a live trip, whose capacity stays within that bound.
fn spare_target(capacity: usize, len: usize) -> Option<usize> {
    (capacity > 4 * len.max(SPARE_FLOOR)).then(|| 2 * len.max(SPARE_FLOOR))
}

/// Gives back a vector's spare capacity (see [`spare_target`]).
pub(crate) fn release_spare<T>(v: &mut Vec<T>) {
    if let Some(target) = spare_target(v.capacity(), v.len()) {
        v.shrink_to(target);
    }
}

/// Hashes of trimmed points a trip remembers at most (about 256 KiB with the set's overhead):
/// 4.5 hours at 1 Hz, 27 minutes at 10 Hz. A redelivered point older than that is not known as a
/// duplicate: it reads as a change before the points held, and the trip is rebuilt from the store
/// (which de-duplicates it) — correct, only slower, and only for a redelivery that late.
pub const MAX_TRIMMED_HASHES: usize = 16_384;

/// The hasher of a set of values that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A 64-bit hash of every field of `point` (a multiply-xorshift mix of the bit patterns; a
/// collision would need a vehicle's own two points to collide).
fn full_hash(point: &Point) -> u64 {
    let fields = [
        point.ts_ms as u64,
        point.seq.unwrap_or(u64::MAX),
        point.lat.to_bits(),
        point.lon.to_bits(),
        opt_bits(point.speed_mps),
        opt_bits(point.heading_deg),
        opt_bits(point.accuracy_m),
        opt_bits(point.alt_m),
        opt_bits(point.odometer_m),
        point.ignition.map_or(2, u64::from),
    ];
    fields.iter().fold(0x9e37_79b9_7f4a_7c15_u64, |h, &x| {
        let h = (h ^ x).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 29)
    })
}

impl TripPoints {
    /// The points held, in canonical order (the recent ones after a trim).
    pub fn as_slice(&self) -> &[Point] {
        &self.points
    }

    /// How many points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// How many points were dropped from the front.
    pub fn trimmed(&self) -> usize {
        self.trimmed
    }

    /// The first point of the trip (held or not).
    pub fn first(&self) -> Option<&Point> {
        self.first.as_ref().or(self.points.first())
    }

    /// Drops the points before `point` in canonical order (they are durable elsewhere); a point
    /// inserted before the ones held afterwards is reported as [`Insertion::Changed`].
    pub fn trim_before(&mut self, point: &Point) {
        let n = self.points.partition_point(|p| canonical_cmp(p, point) == Ordering::Less);
        if n == 0 {
            return;
        }
        if self.first.is_none() {
            self.first = self.points.first().cloned();
        }
        for removed in self.points.drain(..n) {
            if let Some(seq) = removed.seq {
                self.ts_by_seq.remove(&seq);
            }
            let hash = full_hash(&removed);
            if self.trimmed_hashes.insert(hash) {
                self.trimmed_order.push_back(hash);
            }
        }
        while self.trimmed_order.len() > MAX_TRIMMED_HASHES {
            if let Some(oldest) = self.trimmed_order.pop_front() {
                self.trimmed_hashes.remove(&oldest);
            }
        }
        self.trimmed += n;
        release_spare(&mut self.points);
        if let Some(target) = spare_target(self.ts_by_seq.capacity(), self.ts_by_seq.len()) {
            self.ts_by_seq.shrink_to(target);
        }
    }

    /// Bytes its containers hold (from their capacities; what the points own beside them, such
    /// as nothing for a plain [`Point`], is not counted).
    pub(crate) fn held_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<Point>()
            + self.ts_by_seq.capacity() * (std::mem::size_of::<(u64, i64)>() + 1)
            + self.trimmed_hashes.capacity() * (std::mem::size_of::<u64>() + 1)
            + self.trimmed_order.capacity() * std::mem::size_of::<u64>()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    fn same_ts_range(&self, ts_ms: i64) -> std::ops::Range<usize> {
        let start = self.points.partition_point(|p| p.ts_ms < ts_ms);
        let end = start + self.points[start..].partition_point(|p| p.ts_ms == ts_ms);
        start..end
    }

    /// Adds `point` unless an equal or preferred duplicate is already there. A point before
    /// those held after a trim is a duplicate when it equals a dropped one, else `Changed`.
    pub fn insert(&mut self, point: Point) -> Insertion {
        if self.trimmed > 0
            && self.points.first().is_none_or(|first| canonical_cmp(&point, first) == Ordering::Less)
            && self.trimmed_hashes.contains(&full_hash(&point))
        {
            return Insertion::Duplicate;
        }
        // Indices of the duplicates `point` would replace.
        let mut duplicates: Vec<usize> = Vec::new();
        if let Some(seq) = point.seq
            && let Some(&ts_ms) = self.ts_by_seq.get(&seq)
        {
            duplicates.extend(self.same_ts_range(ts_ms).filter(|&i| self.points[i].seq == Some(seq)));
        }
        for i in self.same_ts_range(point.ts_ms) {
            let other = &self.points[i];
            if other.lat.to_bits() == point.lat.to_bits()
                && other.lon.to_bits() == point.lon.to_bits()
                && !duplicates.contains(&i)
            {
                duplicates.push(i);
            }
        }
        if duplicates.iter().any(|&i| canonical_cmp(&self.points[i], &point) != Ordering::Greater) {
            return Insertion::Duplicate;
        }
        let replaced = !duplicates.is_empty();
        duplicates.sort_unstable();
        for &i in duplicates.iter().rev() {
            let removed = self.points.remove(i);
            if let Some(seq) = removed.seq {
                self.ts_by_seq.remove(&seq);
            }
        }
        if let Some(seq) = point.seq {
            self.ts_by_seq.insert(seq, point.ts_ms);
        }
        let at_end = self.points.last().is_none_or(|last| canonical_cmp(last, &point) == Ordering::Less);
        if at_end {
            self.points.push(point);
            if replaced { Insertion::Changed } else { Insertion::Appended }
        } else {
            let at = self.points.partition_point(|p| canonical_cmp(p, &point) == Ordering::Less);
            self.points.insert(at, point);
            Insertion::Changed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts_ms: i64, seq: Option<u64>, lat: f64) -> Point {
        Point { seq, ..Point::new(ts_ms, lat, 7.0) }
    }

    #[test]
    fn in_order_points_append_and_late_points_change() {
        let mut t = TripPoints::default();
        assert_eq!(t.insert(p(1000, Some(1), 51.0)), Insertion::Appended);
        assert_eq!(t.insert(p(3000, Some(3), 51.0)), Insertion::Appended);
        assert_eq!(t.insert(p(2000, Some(2), 51.0)), Insertion::Changed);
        assert_eq!(t.as_slice().iter().map(|p| p.ts_ms).collect::<Vec<_>>(), vec![1000, 2000, 3000]);
    }

    #[test]
    fn same_seq_or_same_time_and_place_are_duplicates() {
        let mut t = TripPoints::default();
        t.insert(p(1000, Some(1), 51.0));
        assert_eq!(t.insert(p(1000, Some(1), 51.0)), Insertion::Duplicate);
        assert_eq!(t.insert(p(1000, Some(9), 51.0)), Insertion::Duplicate, "same time and place, other seq");
        assert_eq!(t.insert(p(5000, Some(1), 52.0)), Insertion::Duplicate, "same seq, later");
        assert_eq!(t.insert(p(500, Some(1), 52.0)), Insertion::Changed, "same seq, earlier: preferred");
        assert_eq!(t.len(), 1);
        assert_eq!(t.as_slice()[0].ts_ms, 500);
    }

    #[test]
    fn only_the_last_trimmed_points_are_remembered_and_an_older_one_reads_as_a_change() {
        let mut t = TripPoints::default();
        let n = MAX_TRIMMED_HASHES as i64 + 100;
        for i in 0..=n {
            t.insert(p(i * 1000, Some(i as u64), 51.0));
        }
        t.trim_before(&p(n * 1000, Some(n as u64), 51.0));
        assert_eq!(t.trimmed(), n as usize);
        assert_eq!(t.trimmed_hashes.len(), MAX_TRIMMED_HASHES);
        let recent = n - 1;
        assert_eq!(t.insert(p(recent * 1000, Some(recent as u64), 51.0)), Insertion::Duplicate);
        assert_eq!(t.insert(p(5_000, Some(5), 51.0)), Insertion::Changed, "forgotten: the trip needs its history");
    }
}
