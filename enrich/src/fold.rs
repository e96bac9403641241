//! The per-trip computation: one pass over a trip's points in time order.
//!
//! The pass only ever looks backwards, so continuing it with points appended at the end gives
//! exactly what a pass over all points from scratch gives (same operations, same order, same
//! floating-point results). That is how live trips are updated incrementally and still equal a
//! full recompute.

use chrono::{TimeZone, Timelike};
use chrono_tz::Tz;
use geo::{Bearing, Distance, Haversine, Point as GeoPoint};
use tripline_model::time::to_datetime;
use tripline_model::{Event, EventKind, Point};

use crate::Enricher;
use crate::regions::RegionId;

const KMH_PER_MPS: f64 = 3.6;
/// Reported headings below this speed are compass noise.
const MIN_HEADING_SPEED_MPS: f64 = 2.0;
/// Without a reported speed, fixes must keep leaving a stop's radius this long before the
/// vehicle counts as moving.
const MOVE_CONFIRM_S: f64 = 2.0;
/// How far back the pass looks for a point to derive speed and heading over a baseline.
const BASELINE_LOOKBACK: usize = 8;

/// A kept point with what the engine derived for it.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrichedPoint {
    /// The point as received.
    pub point: Point,
    /// Distance this point adds to the trip (0 while standing still).
    pub distance_m: f64,
    /// Speed: reported, or derived from positions.
    pub speed_mps: f64,
    /// Whether `speed_mps` was derived from positions.
    pub speed_derived: bool,
    /// Course: reported (when moving) or derived from positions.
    pub heading_deg: Option<f64>,
    /// Longitudinal acceleration since the reference point.
    pub accel_mps2: Option<f64>,
    /// Lateral acceleration (speed × turn rate).
    pub lateral_accel_mps2: Option<f64>,
    /// Region containing the point.
    pub region: Option<RegionId>,
    /// Whether the vehicle moved into this point.
    pub moving: bool,
}

impl EnrichedPoint {
    fn geo(&self) -> GeoPoint<f64> {
        GeoPoint::new(self.point.lon, self.point.lat)
    }
}

fn geo(point: &Point) -> GeoPoint<f64> {
    GeoPoint::new(point.lon, point.lat)
}

/// An event still growing.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Episode {
    start_ts_ms: i64,
    last_ts_ms: i64,
    lat: f64,
    lon: f64,
    peak: f64,
}

impl Episode {
    fn duration_s(&self) -> f64 {
        (self.last_ts_ms - self.start_ts_ms) as f64 / 1000.0
    }

    fn to_event(self, kind: EventKind) -> Event {
        let unit = if kind == EventKind::Speeding { "km/h" } else { "m/s2" };
        Event {
            kind,
            ts: to_datetime(self.start_ts_ms),
            lat: self.lat,
            lon: self.lon,
            value: (self.peak * 100.0).round() / 100.0,
            unit: unit.to_owned(),
            duration_s: (self.duration_s() * 10.0).round() / 10.0,
        }
    }
}

/// Running mean of positions since the vehicle stopped (or of the last moving point).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Anchor {
    lat_sum: f64,
    lon_sum: f64,
    n: u32,
}

/// Stationary samples beyond this many no longer move the mean (keeps it cheap and stable).
const MAX_ANCHOR_SAMPLES: u32 = 64;

impl Anchor {
    fn at(point: &Point) -> Self {
        Anchor { lat_sum: point.lat, lon_sum: point.lon, n: 1 }
    }

    fn position(&self) -> GeoPoint<f64> {
        let n = f64::from(self.n.max(1));
        GeoPoint::new(self.lon_sum / n, self.lat_sum / n)
    }

    fn absorb(&mut self, point: &Point) {
        if self.n < MAX_ANCHOR_SAMPLES {
            self.lat_sum += point.lat;
            self.lon_sum += point.lon;
            self.n += 1;
        }
    }
}

/// Harsh kinds tracked as episodes, in this order.
const HARSH: [EventKind; 3] = [EventKind::HarshBraking, EventKind::HarshAcceleration, EventKind::HarshCornering];

/// State of the pass after some prefix of a trip's points.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fold {
    /// The kept points held: all, or the recent ones after [`Fold::trim`].
    pub(crate) kept: Vec<EnrichedPoint>,
    /// Kept points dropped from the front of `kept`.
    pub(crate) kept_trimmed: usize,
    /// The first kept point, once the front was trimmed.
    first_kept: Option<EnrichedPoint>,
    /// Points dropped as implausible jumps, all of them (never trimmed: they are rare, and not
    /// in the store, so a rebuild of a trimmed trip needs them from here).
    pub(crate) jumps: Vec<Point>,
    jump_streak: u32,
    /// Kept point (counted from the trip's first, trimmed or not) where the current continuous
    /// stretch began (after a re-anchoring jump).
    stretch_start: usize,
    /// Where distance was last counted from: the last moving point, or while standing still the
    /// running mean of the stationary samples (a mean wanders far less than single samples).
    anchor: Anchor,
    /// Without a reported speed: whether the vehicle is standing (movement is inferred from
    /// positions with hysteresis), and whether the last fix already left the stop's radius.
    standing: bool,
    /// Time of the first fix in a row outside the stop's radius, while standing.
    left_radius_at_ms: Option<i64>,
    pub(crate) distance_m: f64,
    pub(crate) moving_s: f64,
    pub(crate) idle_s: f64,
    pub(crate) speeding_s: f64,
    pub(crate) night_s: f64,
    pub(crate) max_speed_mps: f64,
    pub(crate) regions: Vec<RegionId>,
    pub(crate) events: Vec<Event>,
    open_harsh: [Option<Episode>; 3],
    open_speeding: Option<Episode>,
}

/// The fewest kept points a trim leaves: the pass looks back at most this far.
pub(crate) const MIN_HELD: usize = BASELINE_LOOKBACK + 2;

impl Fold {
    /// The first kept point of the trip.
    pub(crate) fn first_kept(&self) -> Option<&EnrichedPoint> {
        self.first_kept.as_ref().or(self.kept.first())
    }

    /// Kept points in all, held or trimmed.
    pub(crate) fn kept_count(&self) -> usize {
        self.kept_trimmed + self.kept.len()
    }

    /// Jumps in all.
    pub(crate) fn jump_count(&self) -> usize {
        self.jumps.len()
    }

    /// Drops the kept points before number `upto` (counted from the trip's first), leaving at
    /// least [`MIN_HELD`]. Returns the first point held when something was dropped.
    pub(crate) fn trim(&mut self, upto: usize) -> Option<&Point> {
        let held_from = upto.min(self.kept_count().saturating_sub(MIN_HELD));
        if held_from <= self.kept_trimmed {
            return None;
        }
        let n = held_from - self.kept_trimmed;
        if self.first_kept.is_none() {
            self.first_kept = self.kept.first().cloned();
        }
        self.kept.drain(..n);
        self.kept_trimmed += n;
        self.kept.first().map(|p| &p.point)
    }

    /// Feeds the next point (not earlier than any point fed before).
    pub(crate) fn push(&mut self, point: &Point, engine: &Enricher) {
        let cfg = &engine.config;
        let hint = self.kept.last().and_then(|p| p.region);
        let region = engine.regions.locate_near(point.lat, point.lon, hint);
        let Some(prev) = self.kept.last() else {
            self.start_stretch(point, region);
            return;
        };
        let (prev_ts_ms, prev_speed_mps, prev_speed_derived) = (prev.point.ts_ms, prev.speed_mps, prev.speed_derived);
        let dt_s = (point.ts_ms - prev_ts_ms) as f64 / 1000.0;
        let hop_m = Haversine.distance(prev.geo(), geo(point));
        let max_speed_mps = cfg.max_speed_kmh / KMH_PER_MPS;
        if hop_m / dt_s.max(1.0) > max_speed_mps {
            // Three implausible points in a row that agree with each other: the earlier anchor
            // was the outlier (or the vehicle really reappeared elsewhere). Start a new stretch;
            // nothing is measured across the jump.
            let restart = self.jump_streak >= 2
                && self.jumps.last().is_some_and(|last| {
                    let dt = (point.ts_ms - last.ts_ms) as f64 / 1000.0;
                    Haversine.distance(geo(last), geo(point)) / dt.max(1.0) <= max_speed_mps
                });
            if !restart {
                self.jump_streak += 1;
                self.jumps.push(point.clone());
                return;
            }
            self.close_all_episodes(cfg.speeding_min_duration_s);
            self.start_stretch(point, region);
            return;
        }
        self.jump_streak = 0;

        let in_gap = dt_s > cfg.trip_gap_s;
        // A fix is typically within its accuracy; twice that covers nearly all of its wander.
        let radius_m = point
            .accuracy_m
            .map_or(cfg.jitter_radius_m, |a| (2.0 * a).clamp(cfg.jitter_radius_m, cfg.max_jitter_radius_m));
        let from_anchor_m = Haversine.distance(self.anchor.position(), geo(point));
        let (moving, distance_m) = match point.speed_mps {
            Some(v) => {
                // The reported speed decides; the anchor stays at the last moving point, so a slow
                // crawl below the threshold is counted once the vehicle moves again.
                let moving = v * KMH_PER_MPS >= cfg.moving_speed_kmh;
                self.standing = !moving;
                if moving {
                    self.anchor = Anchor::at(point);
                }
                (moving, if moving { from_anchor_m } else { 0.0 })
            }
            None => self.movement_from_positions(point, radius_m, from_anchor_m, cfg.stop_window_s),
        };
        // The reference for derived values: the latest point of this stretch at least one
        // baseline back (smooths 1 Hz noise), else the previous point.
        let reference = self.baseline_reference(point.ts_ms, cfg.min_derivation_baseline_s);
        let (speed_mps, speed_derived) = match point.speed_mps {
            Some(v) => (v, false),
            None if !moving => (0.0, true),
            None => {
                let r = &self.kept[reference];
                let dt = (point.ts_ms - r.point.ts_ms) as f64 / 1000.0;
                let v = if dt > 0.0 { Haversine.distance(r.geo(), geo(point)) / dt } else { prev_speed_mps };
                (v, true)
            }
        };
        let heading_deg = match point.heading_deg {
            Some(h) if speed_mps >= MIN_HEADING_SPEED_MPS => Some(h),
            _ if moving => {
                let r = &self.kept[reference];
                (Haversine.distance(r.geo(), geo(point)) >= radius_m).then(|| Haversine.bearing(r.geo(), geo(point)))
            }
            _ => None,
        };

        // Kinematics: between reported speeds the previous point is the reference; derived
        // speeds need the baseline reference.
        let kin_ref = if !speed_derived && !prev_speed_derived { self.kept.len() - 1 } else { reference };
        let r = &self.kept[kin_ref];
        let kin_dt = (point.ts_ms - r.point.ts_ms) as f64 / 1000.0;
        // Speeds derived from positions are only compared between two moving points: a fix
        // leaving or entering a stop says little about acceleration.
        let trusted = !speed_derived || (moving && r.moving);
        let kinematic = trusted && !in_gap && kin_dt > 0.0 && kin_dt <= cfg.max_kinematics_gap_s;
        let accel_mps2 = kinematic.then(|| (speed_mps - r.speed_mps) / kin_dt);
        let lateral_accel_mps2 = match (kinematic, r.heading_deg, heading_deg) {
            (true, Some(h0), Some(h1)) => {
                let turn_deg = (h1 - h0 + 540.0).rem_euclid(360.0) - 180.0;
                Some(turn_deg.to_radians() / kin_dt * (speed_mps + r.speed_mps) / 2.0)
            }
            _ => None,
        };
        let event_speed_ok = speed_mps.max(r.speed_mps) * KMH_PER_MPS >= cfg.min_event_speed_kmh;
        let (start_ts, start_lat, start_lon) = (r.point.ts_ms, r.point.lat, r.point.lon);

        let harsh_values = [
            accel_mps2.filter(|a| event_speed_ok && *a <= cfg.harsh_braking_mps2).map(f64::abs),
            accel_mps2.filter(|a| event_speed_ok && *a >= cfg.harsh_acceleration_mps2),
            lateral_accel_mps2.filter(|a| event_speed_ok && a.abs() >= cfg.harsh_cornering_mps2).map(f64::abs),
        ];
        for (slot, value) in harsh_values.into_iter().enumerate() {
            match value {
                Some(value) => {
                    let episode = self.open_harsh[slot].get_or_insert(Episode {
                        start_ts_ms: start_ts,
                        last_ts_ms: start_ts,
                        lat: start_lat,
                        lon: start_lon,
                        peak: value,
                    });
                    episode.peak = episode.peak.max(value);
                    episode.last_ts_ms = point.ts_ms;
                }
                None => self.close_harsh(slot),
            }
        }

        if !in_gap && dt_s > 0.0 {
            let limit_kmh = region
                .and_then(|id| engine.regions.get(id))
                .and_then(|r| r.speed_limit_kmh)
                .unwrap_or(cfg.default_speed_limit_kmh);
            let speed_kmh = speed_mps * KMH_PER_MPS;
            if moving && speed_kmh > limit_kmh + cfg.speeding_tolerance_kmh {
                let run = self.open_speeding.get_or_insert(Episode {
                    start_ts_ms: prev_ts_ms,
                    last_ts_ms: prev_ts_ms,
                    lat: point.lat,
                    lon: point.lon,
                    peak: speed_kmh,
                });
                run.peak = run.peak.max(speed_kmh);
                run.last_ts_ms = point.ts_ms;
            } else {
                self.close_speeding(cfg.speeding_min_duration_s);
            }
            if moving {
                self.moving_s += dt_s;
                let tz =
                    region.and_then(|id| engine.regions.get(id)).and_then(|r| r.timezone).unwrap_or(engine.default_tz);
                if is_night(prev_ts_ms, tz, cfg.night_start_hour, cfg.night_end_hour) {
                    self.night_s += dt_s;
                }
            } else if point.ignition != Some(false) {
                self.idle_s += dt_s;
            }
        } else if in_gap {
            self.close_speeding(cfg.speeding_min_duration_s);
        }

        self.distance_m += distance_m;
        self.max_speed_mps = self.max_speed_mps.max(speed_mps);
        self.note_region(region);
        self.kept.push(EnrichedPoint {
            point: point.clone(),
            distance_m,
            speed_mps,
            speed_derived,
            heading_deg,
            accel_mps2,
            lateral_accel_mps2,
            region,
            moving,
        });
    }

    /// Movement inferred from positions alone, with hysteresis. Standing: the anchor is the mean
    /// of the fixes within the radius; the vehicle starts moving only when fixes outside the
    /// radius keep coming for `MOVE_CONFIRM_S` (at least two fixes): a stray fix or two is wander.
    /// Moving: distance is counted hop by hop; the vehicle stands again when the last
    /// `stop_window_s` (and at least two intervals) brought it less than the radius. Distance is
    /// counted from the anchor, so the delays lose none.
    fn movement_from_positions(
        &mut self,
        point: &Point,
        radius_m: f64,
        from_anchor_m: f64,
        stop_window_s: f64,
    ) -> (bool, f64) {
        if self.standing {
            if from_anchor_m < radius_m {
                self.anchor.absorb(point);
                self.left_radius_at_ms = None;
                return (false, 0.0);
            }
            let since = *self.left_radius_at_ms.get_or_insert(point.ts_ms);
            if since == point.ts_ms || ((point.ts_ms - since) as f64 / 1000.0) < MOVE_CONFIRM_S {
                return (false, 0.0);
            }
            self.left_radius_at_ms = None;
            self.standing = false;
            self.anchor = Anchor::at(point);
            return (true, from_anchor_m);
        }
        let last = self.kept.len() - 1;
        let window_start = &self.kept[self.baseline_reference(point.ts_ms, stop_window_s).min(last.saturating_sub(1))];
        let window_s = (point.ts_ms - window_start.point.ts_ms) as f64 / 1000.0;
        if window_s >= stop_window_s && Haversine.distance(window_start.geo(), geo(point)) < radius_m {
            self.standing = true;
            self.left_radius_at_ms = None;
            self.anchor = Anchor::at(point);
            return (false, 0.0);
        }
        self.anchor = Anchor::at(point);
        (true, from_anchor_m)
    }

    fn start_stretch(&mut self, point: &Point, region: Option<RegionId>) {
        self.jump_streak = 0;
        self.standing = true;
        self.left_radius_at_ms = None;
        self.stretch_start = self.kept_trimmed + self.kept.len();
        self.anchor = Anchor::at(point);
        let speed_mps = point.speed_mps.unwrap_or(0.0);
        self.max_speed_mps = self.max_speed_mps.max(speed_mps);
        self.note_region(region);
        self.kept.push(EnrichedPoint {
            point: point.clone(),
            distance_m: 0.0,
            speed_mps,
            speed_derived: point.speed_mps.is_none(),
            heading_deg: point.heading_deg.filter(|_| speed_mps >= MIN_HEADING_SPEED_MPS),
            accel_mps2: None,
            lateral_accel_mps2: None,
            region,
            moving: false,
        });
    }

    fn baseline_reference(&self, ts_ms: i64, baseline_s: f64) -> usize {
        let last = self.kept.len() - 1;
        // `kept` holds at least `BASELINE_LOOKBACK + 1` points when trimmed, so a stretch that
        // began before the trim is never the bound.
        let lowest = last.saturating_sub(BASELINE_LOOKBACK).max(self.stretch_start.saturating_sub(self.kept_trimmed));
        (lowest..=last)
            .rev()
            .find(|&i| (ts_ms - self.kept[i].point.ts_ms) as f64 / 1000.0 >= baseline_s)
            .unwrap_or(last)
    }

    fn note_region(&mut self, region: Option<RegionId>) {
        if let Some(id) = region
            && !self.regions.contains(&id)
        {
            self.regions.push(id);
        }
    }

    fn close_harsh(&mut self, slot: usize) {
        if let Some(episode) = self.open_harsh[slot].take() {
            self.events.push(episode.to_event(HARSH[slot]));
        }
    }

    fn close_speeding(&mut self, min_duration_s: f64) {
        if let Some(run) = self.open_speeding.take()
            && run.duration_s() >= min_duration_s
        {
            self.speeding_s += run.duration_s();
            self.events.push(run.to_event(EventKind::Speeding));
        }
    }

    fn close_all_episodes(&mut self, min_speeding_s: f64) {
        for slot in 0..HARSH.len() {
            self.close_harsh(slot);
        }
        self.close_speeding(min_speeding_s);
    }

    /// Events and speeding time as if the trip ended here: open episodes closed. Leaves `self`
    /// untouched (and copies only the small episode state) so the pass can go on.
    pub(crate) fn finished(&self, min_speeding_s: f64) -> Closing {
        let mut events = self.events.clone();
        let mut speeding_s = self.speeding_s;
        for (slot, episode) in self.open_harsh.iter().enumerate() {
            if let Some(episode) = episode {
                events.push(episode.to_event(HARSH[slot]));
            }
        }
        if let Some(run) = self.open_speeding
            && run.duration_s() >= min_speeding_s
        {
            speeding_s += run.duration_s();
            events.push(run.to_event(EventKind::Speeding));
        }
        events.sort_by_key(|e| (e.ts, e.kind));
        Closing { events, speeding_s }
    }
}

/// What closing the open episodes adds to a pass's totals.
pub(crate) struct Closing {
    pub(crate) events: Vec<Event>,
    pub(crate) speeding_s: f64,
}

/// Whether `ts_ms` falls in the night window in zone `tz` (a window may wrap past midnight).
fn is_night(ts_ms: i64, tz: Tz, start_hour: u32, end_hour: u32) -> bool {
    let hour = tz.from_utc_datetime(&to_datetime(ts_ms).naive_utc()).hour();
    if start_hour <= end_hour { (start_hour..end_hour).contains(&hour) } else { hour >= start_hour || hour < end_hour }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn night_windows_wrap_past_midnight_in_local_time() {
        let ts = |s: &str| tripline_model::time::parse_rfc3339_ms(s).unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert!(is_night(ts("2026-07-01T21:30:00Z"), berlin, 23, 5), "23:30 CEST");
        assert!(!is_night(ts("2026-07-01T20:30:00Z"), berlin, 23, 5), "22:30 CEST");
        assert!(is_night(ts("2026-07-01T02:30:00Z"), berlin, 23, 5), "04:30 CEST");
        assert!(!is_night(ts("2026-07-01T03:30:00Z"), berlin, 23, 5), "05:30 CEST");
        assert!(is_night(ts("2026-07-01T10:00:00Z"), chrono_tz::UTC, 9, 11));
    }
}
