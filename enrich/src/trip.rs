//! One trip being enriched: its point set, the pass over it, and its summary.

use std::collections::BTreeSet;

use tripline_model::time::to_datetime;
use tripline_model::{
    DroppedPoints, Event, EventCounts, Place, Point, TripId, TripStatus, TripSummary, VehicleId, point_key,
};

use crate::Enricher;
use crate::fold::{EnrichedPoint, Fold};
use crate::score::{SCORE_VERSION, ScoreInputs, score};
use crate::track::{Insertion, TripPoints, canonical_cmp};

/// What adding points did to a trip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Points that were new.
    pub added: usize,
    /// Points that duplicated one already there.
    pub duplicates: usize,
    /// Whether a point landed before the end, so the trip is recomputed from its first point.
    pub recompute: bool,
}

/// Kept points a live trip holds in memory after [`TripEngine::trim`]: enough for the pass to
/// continue, and for a message or two arriving slightly out of order.
pub(crate) const HELD_POINTS: usize = 64;

/// Keys of the decoder's rejected points a trip remembers at most (8 bytes each); beyond it,
/// more are counted without telling a repeat from a new one.
pub const MAX_REJECTED_KEYS: usize = 4096;
/// Jumps a trip keeps whole in its [`DroppedPoints`] at most; beyond it, only their count.
pub const MAX_STORED_JUMPS: usize = 1024;

/// Everything the engine says about a trip.
#[derive(Clone, Debug, PartialEq)]
pub struct TripReport {
    /// The contract's summary.
    pub summary: TripSummary,
    /// Every event, in time order.
    pub events: Vec<Event>,
}

/// A trip under enrichment. Feed it points in any order; its report depends only on the set.
#[derive(Clone, Debug)]
pub struct TripEngine {
    vehicle_id: VehicleId,
    trip_id: TripId,
    points: TripPoints,
    /// Points dropped before enrichment (by the decoder's per-point rules), by
    /// [`point_key`], at most [`MAX_REJECTED_KEYS`].
    rejected: BTreeSet<u64>,
    /// Decoder-rejected points beyond `rejected`.
    rejected_beyond: u64,
    /// Jumps known only by their count (restored from a trip that had more than
    /// [`MAX_STORED_JUMPS`]).
    jumps_beyond: u64,
    fold: Fold,
    /// How many points (counted from the trip's first) the fold has consumed; `None` when it
    /// must start over.
    folded: Option<usize>,
    /// A point landed among points no longer held: the trip must be rebuilt from all its points.
    needs_history: bool,
}

impl TripEngine {
    /// An empty trip.
    pub fn new(vehicle_id: VehicleId, trip_id: TripId) -> Self {
        TripEngine {
            vehicle_id,
            trip_id,
            points: TripPoints::default(),
            rejected: BTreeSet::new(),
            rejected_beyond: 0,
            jumps_beyond: 0,
            fold: Fold::default(),
            folded: Some(0),
            needs_history: false,
        }
    }

    /// The trip's id.
    pub fn trip_id(&self) -> &TripId {
        &self.trip_id
    }

    /// Gives the trip another id (an automatically cut trip whose start moved).
    pub fn rename(&mut self, trip_id: TripId) {
        self.trip_id = trip_id;
    }

    /// The trip's vehicle.
    pub fn vehicle_id(&self) -> &VehicleId {
        &self.vehicle_id
    }

    /// Adds points (kept by the decoder) in any order.
    pub fn add_points(&mut self, points: impl IntoIterator<Item = Point>) -> AddOutcome {
        let mut outcome = AddOutcome::default();
        for point in points {
            match self.points.insert(point) {
                Insertion::Appended => outcome.added += 1,
                Insertion::Changed => {
                    outcome.added += 1;
                    outcome.recompute = true;
                    self.folded = None;
                    self.needs_history |= self.points.trimmed() > 0;
                }
                Insertion::Duplicate => outcome.duplicates += 1,
            }
        }
        outcome
    }

    /// Records points the decoder dropped, so the summary counts each once however often it
    /// arrives.
    /// Returns how many of them were new.
    pub fn add_rejected<'a>(&mut self, points: impl IntoIterator<Item = &'a Point>) -> usize {
        let mut new = 0;
        for point in points {
            let key = point_key(point);
            if self.rejected.contains(&key) {
                continue;
            }
            if self.rejected.len() < MAX_REJECTED_KEYS {
                self.rejected.insert(key);
            } else {
                self.rejected_beyond += 1;
            }
            new += 1;
        }
        new
    }

    /// What the trip dropped, to store with it (after [`TripEngine::refresh`]).
    pub fn dropped(&self) -> DroppedPoints {
        // The fold holds at most `MAX_STORED_JUMPS` jumps and counts the rest.
        DroppedPoints {
            jumps: self.fold.jumps.clone(),
            jumps_beyond: self.jumps_beyond + self.fold.jumps_over() as u64,
            rejected_keys: self.rejected.iter().copied().collect(),
            rejected_beyond: self.rejected_beyond,
        }
    }

    /// Takes back what a stored trip dropped ([`TripEngine::dropped`]), with its stored points:
    /// the jumps join the points (the pass drops them again), the rejected keys are remembered.
    pub fn restore_dropped(&mut self, dropped: DroppedPoints) {
        self.add_points(dropped.jumps);
        self.jumps_beyond = dropped.jumps_beyond;
        self.rejected.extend(dropped.rejected_keys);
        self.rejected_beyond = dropped.rejected_beyond;
    }

    /// Whether a point landed among points this engine no longer holds (see
    /// [`TripEngine::trim`]): it cannot compute the trip until rebuilt from all the trip's
    /// points (the stored ones and [`TripEngine::points`]).
    pub fn needs_history(&self) -> bool {
        self.needs_history
    }

    /// Brings the pass up to date with every point added (nothing while it
    /// [needs history](TripEngine::needs_history)).
    pub fn refresh(&mut self, engine: &Enricher) {
        if self.needs_history {
            return;
        }
        let start = match self.folded {
            Some(n) => n,
            None => {
                self.fold = Fold::default();
                0
            }
        };
        let trimmed = self.points.trimmed();
        for point in &self.points.as_slice()[start - trimmed..] {
            self.fold.push(point, engine);
        }
        self.folded = Some(trimmed + self.points.len());
    }

    /// The kept points held, enriched, in time order (after [`TripEngine::refresh`]): all of
    /// them, or the most recent after a trim.
    pub fn enriched(&self) -> &[EnrichedPoint] {
        &self.fold.kept
    }

    /// The kept points from number `from` (counted from the trip's first) that are held.
    pub fn enriched_from(&self, from: usize) -> &[EnrichedPoint] {
        let kept = &self.fold.kept;
        &kept[from.saturating_sub(self.fold.kept_trimmed).min(kept.len())..]
    }

    /// How many points the pass kept in all (after [`TripEngine::refresh`]).
    pub fn kept_count(&self) -> usize {
        self.fold.kept_count()
    }

    /// Points the pass dropped as implausible jumps (after [`TripEngine::refresh`]): the first
    /// [`MAX_STORED_JUMPS`] in time order, kept through trims ([`TripEngine::jump_count`]
    /// counts the rest).
    pub fn jumps(&self) -> &[Point] {
        &self.fold.jumps
    }

    /// How many points the pass dropped as implausible jumps in all.
    pub fn jump_count(&self) -> usize {
        self.fold.jump_count()
    }

    /// The points held (all added and not duplicates, or the recent ones after a trim, beside
    /// [`TripEngine::jumps`]), in canonical order.
    pub fn points(&self) -> &[Point] {
        self.points.as_slice()
    }

    /// The trip's first point.
    pub fn first_point(&self) -> Option<&Point> {
        self.points.first()
    }

    /// Starts the trip over from all its points: `stored` (its kept points, from the store) and
    /// what this engine still holds (the points not yet written and the jumps, which the store
    /// does not have), keeping the decoder's rejected points. What a trip that
    /// [needs history](TripEngine::needs_history) is rebuilt with.
    pub fn rebuild(&mut self, stored: Vec<Point>) {
        let mut rebuilt = TripEngine::new(self.vehicle_id.clone(), self.trip_id.clone());
        rebuilt.add_points(stored);
        rebuilt.add_points(self.fold.jumps.iter().cloned());
        rebuilt.add_points(self.points.as_slice().iter().cloned());
        rebuilt.rejected = std::mem::take(&mut self.rejected);
        rebuilt.rejected_beyond = self.rejected_beyond;
        // Jumps beyond the kept ones that are still held come back with the held points.
        rebuilt.jumps_beyond = self.jumps_beyond + self.fold.jumps_over_trimmed as u64;
        *self = rebuilt;
    }

    /// Forgets all but the last `HELD_POINTS` (64) kept points, and never any of the first
    /// `durable` (counted from the trip's first): those must be in the store, since a point
    /// landing among them makes the engine [need history](TripEngine::needs_history). Bounds a
    /// live trip's memory whatever its length. Call after [`TripEngine::refresh`].
    pub fn trim(&mut self, durable: usize) {
        if self.needs_history || self.folded != Some(self.points.trimmed() + self.points.len()) {
            return;
        }
        // Trim in steps of `HELD_POINTS`, not at every batch: each trim moves what stays held.
        if self.fold.kept.len() < 2 * HELD_POINTS {
            return;
        }
        let upto = durable.min(self.fold.kept_count().saturating_sub(HELD_POINTS));
        if let Some(oldest) = self.fold.trim(upto) {
            let oldest = oldest.clone();
            self.points.trim_before(&oldest);
            self.fold.let_go_jumps_before(&oldest);
            self.folded = Some(self.points.trimmed() + self.points.len());
        }
    }

    /// Bytes the trip's point containers hold in memory, estimated from their capacities: the
    /// points, their enriched copies and the hashes of trimmed points.
    pub fn held_bytes(&self) -> usize {
        self.points.held_bytes() + self.fold.kept.capacity() * std::mem::size_of::<EnrichedPoint>()
    }

    /// The trip's report with the given status and update time; `None` while no point is kept.
    pub fn report(&mut self, engine: &Enricher, status: TripStatus, updated_at_ms: Option<i64>) -> Option<TripReport> {
        self.refresh(engine);
        if self.needs_history {
            return None;
        }
        let fold = &self.fold;
        let closing = fold.finished(&engine.config);
        let first = fold.first_kept()?;
        let last = fold.kept.last()?;
        let mut events = EventCounts::default();
        for event in &closing.events {
            events.add(event.kind);
        }
        let region_name = |p: &EnrichedPoint| p.region.and_then(|id| engine.regions.get(id)).map(|r| r.name.clone());
        let place = |p: &EnrichedPoint| Place { lat: p.point.lat, lon: p.point.lon, region: region_name(p) };
        let distance_km = fold.distance_m / 1000.0;
        let moving_time_s = closing.moving_s;
        let score = score(&ScoreInputs {
            events,
            distance_km,
            moving_time_s,
            speeding_s: closing.speeding_s,
            night_driving_s: closing.night_s,
        });
        let round = |v: f64, digits: i32| {
            let f = 10f64.powi(digits);
            (v * f).round() / f
        };
        let avg_speed_kmh = if moving_time_s > 0.0 { distance_km / (moving_time_s / 3600.0) } else { 0.0 };
        let summary = TripSummary {
            trip_id: self.trip_id.clone(),
            vehicle_id: self.vehicle_id.clone(),
            status,
            start_time: to_datetime(first.point.ts_ms),
            end_time: to_datetime(last.point.ts_ms),
            duration_s: round((last.point.ts_ms - first.point.ts_ms) as f64 / 1000.0, 1),
            moving_time_s: round(moving_time_s, 1),
            idle_time_s: round(fold.idle_s, 1),
            distance_km: round(distance_km, 3),
            max_speed_kmh: round(fold.max_speed_mps * 3.6, 1),
            avg_speed_kmh: round(avg_speed_kmh, 1),
            start: place(first),
            end: place(last),
            regions: fold.regions.iter().filter_map(|id| engine.regions.get(*id)).map(|r| r.name.clone()).collect(),
            events,
            speeding_s: round(closing.speeding_s, 1),
            night_driving_s: round(closing.night_s, 1),
            point_count: fold.kept_count() as u64,
            rejected_point_count: (fold.jump_count() + self.rejected.len()) as u64
                + self.jumps_beyond
                + self.rejected_beyond,
            score,
            score_version: SCORE_VERSION,
            updated_at: to_datetime(updated_at_ms.unwrap_or(last.point.ts_ms)),
        };
        Some(TripReport { summary, events: closing.events })
    }
}

/// Sorts points into the engine's canonical order (helper for callers that cut trips first).
pub fn sort_points(points: &mut [Point]) {
    points.sort_by(canonical_cmp);
}
