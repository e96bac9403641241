//! One trip being enriched: its point set, the pass over it, and its summary.

use std::collections::BTreeSet;

use tripline_model::time::to_datetime;
use tripline_model::{Event, EventCounts, Place, Point, TripId, TripStatus, TripSummary, VehicleId};

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
    /// Points dropped before enrichment (by the decoder's per-point rules), as a set.
    rejected: BTreeSet<(i64, u64, u64, u64)>,
    fold: Fold,
    /// How many of `points` the fold has consumed; `None` when it must start over.
    folded: Option<usize>,
}

impl TripEngine {
    /// An empty trip.
    pub fn new(vehicle_id: VehicleId, trip_id: TripId) -> Self {
        TripEngine {
            vehicle_id,
            trip_id,
            points: TripPoints::default(),
            rejected: BTreeSet::new(),
            fold: Fold::default(),
            folded: Some(0),
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
        points
            .into_iter()
            .filter(|p| self.rejected.insert((p.ts_ms, p.seq.unwrap_or(u64::MAX), p.lat.to_bits(), p.lon.to_bits())))
            .count()
    }

    /// Brings the pass up to date with every point added.
    pub fn refresh(&mut self, engine: &Enricher) {
        let start = match self.folded {
            Some(n) => n,
            None => {
                self.fold = Fold::default();
                0
            }
        };
        for point in &self.points.as_slice()[start..] {
            self.fold.push(point, engine);
        }
        self.folded = Some(self.points.len());
    }

    /// Every point kept by the pass, enriched, in time order (after [`TripEngine::refresh`]).
    pub fn enriched(&self) -> &[EnrichedPoint] {
        &self.fold.kept
    }

    /// Points the pass dropped as implausible jumps (after [`TripEngine::refresh`]).
    pub fn jumps(&self) -> &[Point] {
        &self.fold.jumps
    }

    /// All points added and not duplicates, in canonical order.
    pub fn points(&self) -> &[Point] {
        self.points.as_slice()
    }

    /// The trip's report with the given status and update time; `None` while no point is kept.
    pub fn report(&mut self, engine: &Enricher, status: TripStatus, updated_at_ms: Option<i64>) -> Option<TripReport> {
        self.refresh(engine);
        let fold = &self.fold;
        let closing = fold.finished(engine.config.speeding_min_duration_s);
        let first = fold.kept.first()?;
        let last = fold.kept.last()?;
        let mut events = EventCounts::default();
        for event in &closing.events {
            events.add(event.kind);
        }
        let region_name = |p: &EnrichedPoint| p.region.and_then(|id| engine.regions.get(id)).map(|r| r.name.clone());
        let place = |p: &EnrichedPoint| Place { lat: p.point.lat, lon: p.point.lon, region: region_name(p) };
        let distance_km = fold.distance_m / 1000.0;
        let moving_time_s = fold.moving_s;
        let score = score(&ScoreInputs {
            events,
            distance_km,
            moving_time_s,
            speeding_s: closing.speeding_s,
            night_driving_s: fold.night_s,
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
            night_driving_s: round(fold.night_s, 1),
            point_count: fold.kept.len() as u64,
            rejected_point_count: (fold.jumps.len() + self.rejected.len()) as u64,
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
