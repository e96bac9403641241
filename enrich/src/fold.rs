//! The per-trip computation: one pass over a trip's points in time order.
//!
//! The pass only ever looks backwards, so continuing it with points appended at the end gives
//! exactly what a pass over all points from scratch gives (same operations, same order, same
//! floating-point results). That is how live trips are updated incrementally and still equal a
//! full recompute.
//!
//! Each point goes through named steps ([`Fold::push`]): jump rejection, outlier check of the
//! previous fix (which needs this one), movement, the motion estimate over a trailing time
//! window ([`crate::kinematics`]), harsh episodes, and speeding and time accounting. A point's
//! estimate feeds the harsh episodes one point late, once the next fix has confirmed it was not
//! an outlier. Movement (where a vehicle without reported speed stopped and pulled away) is in
//! [`movement`], the time accounting in [`time`].

use chrono_tz::Tz;
use geo::{Distance, Haversine, Point as GeoPoint};
use tripline_model::time::to_datetime;
use tripline_model::{Event, EventKind, Point};

use crate::kinematics::{self, FitSums, Fix, Motion, ReportedSums, Sliding, max_bend_m, off_track_m};
use crate::regions::RegionId;
use crate::track::canonical_cmp;
use crate::trip::MAX_STORED_JUMPS;
use crate::{EnrichConfig, Enricher};

mod movement;
mod time;

use movement::Movement;
use time::{Found, Halt};

const KMH_PER_MPS: f64 = 3.6;
/// Reported headings below this speed are compass noise; so is a course from positions.
const MIN_HEADING_SPEED_MPS: f64 = 2.0;
/// The longest window (kinematics, reported speeds, stop detection) a setting may ask for: the
/// pass holds at least this much of a live trip's past.
pub(crate) const MAX_WINDOW_S: f64 = 10.0;
/// The longest gap between fixes a setting may let a fit's window span: a window never spans
/// more than this or `MAX_WINDOW_S`, which keeps the fit's exact sums bounded.
pub(crate) const MAX_KINEMATICS_GAP_S: f64 = 600.0;
const _: () = assert!(MAX_KINEMATICS_GAP_S * 1000.0 <= kinematics::MAX_FIT_SPAN_MS as f64);
const _: () = assert!(MAX_WINDOW_S * 1000.0 <= kinematics::MAX_FIT_SPAN_MS as f64);
/// How far back a change of movement is looked for (where the estimated speed crossed the
/// moving threshold): leaving a stop's radius and confirming it takes this long at most.
const CROSSING_HORIZON_S: f64 = 20.0;
/// The most held points a look-back walks: bounds the work per point at any sampling rate
/// (20 Hz for the crossing horizon).
const MAX_LOOKBACK: usize = 400;
const _: () = assert!(MAX_LOOKBACK < kinematics::MAX_FIT_FIXES);
/// Road vehicles' manoeuvres stay below this (0.7 g): a fix off its neighbours' track by more
/// than this explains (plus a margin) is an outlier.
const MAX_PLAUSIBLE_ACCEL_MPS2: f64 = 7.0;
/// A window reaches back (within `max_kinematics_gap_s`) to hold at least this many fixes, the
/// fewest a quadratic needs. (Four would average out more noise at 1 Hz, but smear a 1.5 s
/// manoeuvre below any threshold: docs/kinematics.md.)
const MIN_FIT_POINTS: usize = 3;
/// The fewest kept points a trim leaves.
pub(crate) const MIN_HELD: usize = 10;

/// A kept point with what the engine derived for it.
#[derive(Clone, Debug, PartialEq)]
pub struct EnrichedPoint {
    /// The point as received.
    pub point: Point,
    /// Distance this point adds to the trip (0 while standing still).
    pub distance_m: f64,
    /// Speed: reported, or estimated from positions.
    pub speed_mps: f64,
    /// Whether `speed_mps` was estimated from positions.
    pub speed_derived: bool,
    /// Course: reported (when moving) or estimated from positions.
    pub heading_deg: Option<f64>,
    /// Longitudinal acceleration over the trailing estimation window.
    pub accel_mps2: Option<f64>,
    /// Lateral acceleration over the trailing estimation window (positive: turning right).
    pub lateral_accel_mps2: Option<f64>,
    /// Region containing the point.
    pub region: Option<RegionId>,
    /// Whether the vehicle moved into this point.
    pub moving: bool,
    /// Whether the next fix showed this one off the track of its neighbours (multipath): it is
    /// left out of estimates, events and distance from then on.
    pub outlier: bool,
    /// The speed estimated from the positions of the trailing window, and the time it holds
    /// (the window's mean time): where standing turned into moving and back.
    pub(crate) fit_speed: Option<(i64, f64)>,
    /// The point as the motion estimate's sums take it.
    fix: Fix,
}

impl EnrichedPoint {
    /// The time the estimated speed and accelerations hold (the middle of the trailing window
    /// they were fitted over), when they come from such a fit.
    pub fn estimated_at_ms(&self) -> Option<i64> {
        self.fit_speed.map(|(at_ms, _)| at_ms)
    }

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
    /// Time the value has been beyond the threshold (harsh episodes); 0 for speeding, whose
    /// duration is its span.
    beyond_s: f64,
}

impl Episode {
    /// An episode starting at `start_ts_ms` where the vehicle was at `lat`, `lon`.
    fn new(start_ts_ms: i64, lat: f64, lon: f64, peak: f64) -> Self {
        Episode { start_ts_ms, last_ts_ms: start_ts_ms, lat, lon, peak, beyond_s: 0.0 }
    }

    fn span_s(&self) -> f64 {
        (self.last_ts_ms - self.start_ts_ms) as f64 / 1000.0
    }

    fn to_event(self, kind: EventKind, duration_s: f64) -> Event {
        let unit = if kind == EventKind::Speeding { "km/h" } else { "m/s2" };
        Event {
            kind,
            ts: to_datetime(self.start_ts_ms),
            lat: self.lat,
            lon: self.lon,
            value: (self.peak * 100.0).round() / 100.0,
            unit: unit.to_owned(),
            duration_s: (duration_s * 10.0).round() / 10.0,
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

/// A harsh episode, once started, lasts while its value stays beyond this share of the
/// threshold (hysteresis).
const HARSH_RELEASE: f64 = 0.8;

/// Harsh kinds tracked as episodes, in this order.
const HARSH: [EventKind; 3] = [EventKind::HarshBraking, EventKind::HarshAcceleration, EventKind::HarshCornering];

/// A point's motion estimate, waiting for the next fix to confirm the point.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Estimate {
    motion: Motion,
    /// The time this estimate stands for: since the previous confirmed fix, at most a window.
    support_s: f64,
    /// Where the vehicle was at the estimate's time.
    lat: f64,
    lon: f64,
}

/// What the step from the previous kept point to this one is.
#[derive(Clone, Copy, Debug)]
struct Step {
    prev_ts_ms: i64,
    dt_s: f64,
    in_gap: bool,
}

/// State of the pass after some prefix of a trip's points.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fold {
    /// The kept points held: all, or the recent ones after [`Fold::trim`].
    pub(crate) kept: Vec<EnrichedPoint>,
    /// Kept points dropped from the front of `kept`.
    pub(crate) kept_trimmed: usize,
    /// The first kept point, once the front was trimmed.
    first_kept: Option<EnrichedPoint>,
    /// Points dropped as implausible jumps: the first [`MAX_STORED_JUMPS`] in time order, as
    /// many as a trip record keeps (never trimmed: they are not in the store, so a rebuild of a
    /// trimmed trip needs them from here).
    pub(crate) jumps: Vec<Point>,
    /// Jumps beyond those that are still among the trip's held points (a rebuild finds them
    /// there again), in time order.
    jumps_over_held: Vec<Point>,
    /// Jumps beyond those that a trim let go: only counted, so a device sending wild fixes
    /// cannot grow a live trip's memory.
    pub(crate) jumps_over_trimmed: usize,
    /// The latest jump: three agreeing ones in a row start a new stretch.
    last_jump: Option<Point>,
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
    /// Since when the fixes stay within the stop's radius while moving (the estimated speed
    /// not yet below the threshold).
    still_since_ms: Option<i64>,
    /// Without a reported speed: since when the vehicle moves (movement confirmed).
    moving_since_ms: Option<i64>,
    /// The last point's estimate, fed to the harsh episodes when the next fix confirms it.
    pending: Option<Estimate>,
    halt: Halt,
    /// The sums of the motion estimate's fit, and of its reported speeds and headings: they
    /// slide with the window.
    fit: Slide<FitSums>,
    speeds: Slide<ReportedSums>,
    /// The newest kept point (counted from the trip's first) with a reported speed.
    last_reported_speed: Option<usize>,
    /// The raw and unwrapped heading of the last kept fix with one (microdegrees): headings
    /// are unwrapped fix to fix.
    headings: Option<(i64, i64)>,
    /// Where the last look-back over the stop window ended (counted from the trip's first kept
    /// point): where the next starts looking.
    stop_hint: usize,
    /// A UTC minute, a zone and whether that minute is at night there.
    night_minute: Option<(i64, Tz, bool)>,
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
        self.jumps.len() + self.jumps_over_held.len() + self.jumps_over_trimmed
    }

    /// Jumps beyond the first [`MAX_STORED_JUMPS`], held or let go.
    pub(crate) fn jumps_over(&self) -> usize {
        self.jumps_over_held.len() + self.jumps_over_trimmed
    }

    /// The trip's held points before `oldest` were let go: the jumps beyond the first
    /// [`MAX_STORED_JUMPS`] among them are only counted from now on.
    pub(crate) fn let_go_jumps_before(&mut self, oldest: &Point) {
        let n = self.jumps_over_held.partition_point(|p| canonical_cmp(p, oldest) == std::cmp::Ordering::Less);
        self.jumps_over_held.drain(..n);
        self.jumps_over_trimmed += n;
    }

    /// Drops the kept points before number `upto` (counted from the trip's first), leaving at
    /// least [`MIN_HELD`] and every point a look-back may still reach. Returns the first point
    /// held when something was dropped.
    pub(crate) fn trim(&mut self, upto: usize) -> Option<&Point> {
        let reach = self.kept.last().map_or(0, |last| {
            let horizon_ms = last.point.ts_ms - ((MAX_WINDOW_S.max(CROSSING_HORIZON_S) + 1.0) * 1000.0) as i64;
            let inside = self.kept.len() - self.kept.partition_point(|p| p.point.ts_ms < horizon_ms);
            inside.min(MAX_LOOKBACK + 1)
        });
        let held_from = upto.min(self.kept_count().saturating_sub(MIN_HELD.max(reach)));
        if held_from <= self.kept_trimmed {
            return None;
        }
        let n = held_from - self.kept_trimmed;
        if self.first_kept.is_none() {
            self.first_kept = self.kept.first().cloned();
        }
        self.kept.drain(..n);
        crate::track::release_spare(&mut self.kept);
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
        let prev_ts_ms = prev.point.ts_ms;
        let dt_s = (point.ts_ms - prev_ts_ms) as f64 / 1000.0;
        let cos_lat = point.lat.to_radians().cos();
        match self.reject_jump(point, cos_lat, cfg.max_speed_kmh / KMH_PER_MPS) {
            Jump::Dropped => return,
            Jump::Restart => {
                self.close_all_episodes(cfg);
                self.start_stretch(point, region);
                return;
            }
            Jump::None => {}
        }
        let step = Step { prev_ts_ms, dt_s, in_gap: dt_s > cfg.trip_gap_s };
        self.check_previous(point, cos_lat, cfg);
        let fix = Fix::of(point, &mut self.headings, MIN_HEADING_SPEED_MPS);
        let fit = self.estimate(point, fix, cos_lat, cfg);
        let fit_speed = fit.map(|m| (m.at_ms, m.speed_mps));
        let Movement { moving, distance_m, moving_share } = self.movement(point, fit_speed, cfg);
        let (speed_mps, heading_deg) = self.speed_and_course(point, fit, moving, cfg);
        // Without a reported speed, what positions say is wander, not motion, while standing; and
        // for events, also for a stop window after movement was confirmed (noisy enough fixes
        // can look like a start for a few seconds).
        let motion = fit
            .filter(|_| point.speed_mps.is_some() || moving)
            .map(|m| Motion { speed_mps: point.speed_mps.unwrap_or(m.speed_mps), ..m });
        let settled = point.speed_mps.is_some()
            || self.moving_since_ms.is_some_and(|t| (point.ts_ms - t) as f64 / 1000.0 >= cfg.stop_window_s);
        self.harsh_episodes(cfg);
        self.pending = motion.filter(|_| settled).map(|motion| self.estimate_at(motion, point, step, cfg));
        let moving_share = moving_share.unwrap_or_else(|| self.moving_share(point, moving, cfg));
        let found = Found { region, moving, moving_share, speed_mps };
        self.speeding_and_time(point, step, found, engine);

        self.distance_m += distance_m;
        self.max_speed_mps = self.max_speed_mps.max(speed_mps);
        self.note_region(region);
        self.keep(EnrichedPoint {
            point: point.clone(),
            distance_m,
            speed_mps,
            speed_derived: point.speed_mps.is_none(),
            heading_deg,
            accel_mps2: motion.and_then(|m| m.longitudinal_mps2),
            lateral_accel_mps2: motion.and_then(|m| m.lateral_mps2),
            region,
            moving,
            outlier: false,
            fit_speed,
            fix,
        });
    }

    /// The speed and course of `point`: reported, else estimated (the speed also while a
    /// pull-away is not yet confirmed: the fixes left the stop's radius and the estimate is past
    /// the moving threshold); 0 and none while standing.
    fn speed_and_course(
        &self,
        point: &Point,
        fit: Option<Motion>,
        moving: bool,
        cfg: &EnrichConfig,
    ) -> (f64, Option<f64>) {
        let threshold_mps = cfg.moving_speed_kmh / KMH_PER_MPS;
        let speed_mps = match (point.speed_mps, fit) {
            (Some(v), _) => v,
            (None, Some(m)) if moving || (self.left_radius_at_ms.is_some() && m.speed_mps >= threshold_mps) => {
                m.speed_now_mps
            }
            (None, _) if !moving => 0.0,
            (None, _) => self.hop_speed(point),
        };
        let heading_deg = match point.heading_deg {
            Some(h) if speed_mps >= MIN_HEADING_SPEED_MPS => Some(h),
            _ if moving => fit.and_then(|m| m.heading_deg),
            _ => None,
        };
        (speed_mps, heading_deg)
    }

    /// Step 1, jump rejection: a point implying more than `max_speed_mps` from the last kept
    /// point is dropped, unless three such in a row agree with each other (then the earlier
    /// anchor was the outlier, or the vehicle really reappeared elsewhere: a new stretch
    /// starts, and nothing is measured across the jump).
    /// `cos_lat`: the cosine of `point`'s latitude.
    fn reject_jump(&mut self, point: &Point, cos_lat: f64, max_speed_mps: f64) -> Jump {
        let Some(prev) = self.kept.last() else { return Jump::None };
        let dt_s = (point.ts_ms - prev.point.ts_ms) as f64 / 1000.0;
        let limit_m = max_speed_mps * dt_s.max(1.0);
        // Most steps are well within the limit by a bound that needs no trigonometry.
        if distance_bound_m(&prev.point, point, cos_lat) <= limit_m
            || Haversine.distance(prev.geo(), geo(point)) <= limit_m
        {
            self.jump_streak = 0;
            return Jump::None;
        }
        let restart = self.jump_streak >= 2
            && self.last_jump.as_ref().is_some_and(|last| {
                let dt = (point.ts_ms - last.ts_ms) as f64 / 1000.0;
                Haversine.distance(geo(last), geo(point)) / dt.max(1.0) <= max_speed_mps
            });
        if restart {
            return Jump::Restart;
        }
        self.jump_streak += 1;
        if self.jumps.len() < MAX_STORED_JUMPS {
            self.jumps.push(point.clone());
        } else {
            self.jumps_over_held.push(point.clone());
        }
        self.last_jump = Some(point.clone());
        Jump::Dropped
    }

    /// Step 2, outlier check of the previous fix, which `point` makes possible: it is an outlier
    /// when it is off both the line from the fix before it to `point` and the line through the
    /// two confirmed fixes before it, by more than 1 g of manoeuvre explains plus the margin (a
    /// wild `point` itself moves only the first). An outlier adds no distance, and later
    /// estimates leave it out.
    fn check_previous(&mut self, point: &Point, cos_lat: f64, cfg: &EnrichConfig) {
        let stretch = self.stretch_index();
        let Some(mid) = self.kept.len().checked_sub(1).filter(|&mid| mid > stretch) else { return };
        let mut confirmed = (stretch..mid).rev().filter(|&i| !self.kept[i].outlier);
        let Some(before) = confirmed.next() else { return };
        let earlier = confirmed.next();
        let off = |a: &Point, m: &Point, b: &Point| {
            off_track_m(a, m, b, cos_lat)
                > max_bend_m(a.ts_ms, m.ts_ms, b.ts_ms, MAX_PLAUSIBLE_ACCEL_MPS2) + cfg.outlier_margin_m
        };
        let (b, m) = (&self.kept[before].point, &self.kept[mid].point);
        if earlier.is_none() && off(m, b, point) {
            // `before` is the stretch's first fix, with no history to vouch for it: when it is
            // off the line back from the two after it, it is the outlier.
            self.flag_outlier(before, mid);
            return;
        }
        // Most fixes are on the line: the second test only runs for those off it.
        if off(b, m, point)
            && earlier.is_none_or(|e| {
                let e = &self.kept[e].point;
                off(e, m, b) || history_prefers_next(e, b, m, point, cos_lat, cfg.outlier_margin_m)
            })
        {
            self.flag_outlier(mid, before);
        }
    }

    /// Marks held point `i` an outlier: the distance it added goes, and so does the distance
    /// `next` measured from it (anchors move to `instead`, a confirmed fix).
    fn flag_outlier(&mut self, i: usize, instead: usize) {
        if !self.kept[i].outlier {
            let (at, fix) = (self.kept_trimmed + i, self.kept[i].fix);
            self.fit.forget(at, &fix);
            self.speeds.forget(at, &fix);
        }
        self.kept[i].outlier = true;
        self.distance_m -= self.kept[i].distance_m;
        self.kept[i].distance_m = 0.0;
        if i + 1 < self.kept.len() {
            // The fix after the outlier measured its distance from it.
            self.distance_m -= self.kept[i + 1].distance_m;
            self.kept[i + 1].distance_m = 0.0;
        }
        // Moving, distance was counted from the outlier: count on from the confirmed fix.
        // Standing, the anchor is the stop's mean, and stays.
        if !self.standing {
            self.anchor = Anchor::at(&self.kept[instead].point);
        }
        self.left_radius_at_ms = None;
        self.pending = None;
    }

    /// Step 4, the motion estimate: the quadratic through the confirmed fixes of this stretch in
    /// the trailing `kinematics_window_s` (at least three, none across a gap longer than
    /// `max_kinematics_gap_s`), `point` included.
    fn estimate(&mut self, point: &Point, newest: Fix, cos_lat: f64, cfg: &EnrichConfig) -> Option<Motion> {
        let lowest = self.stretch_index().max(self.kept.len().saturating_sub(MAX_LOOKBACK));
        let first = self.window_start(point, lowest, cfg);
        let trimmed = self.kept_trimmed;
        self.fit.slide(&self.kept, trimmed, first);
        let speeds_from = self.speed_window_start(&newest, first, cfg);
        self.speeds.slide(&self.kept, trimmed, speeds_from);
        // The newest fix goes in for the estimate and out again (the sums are exact).
        if self.fit.sums.count() == 0 {
            self.fit.sums = FitSums::empty(&newest);
        }
        self.fit.sums.add(&newest);
        self.speeds.sums.add(&newest);
        let motion = kinematics::motion(&self.fit.sums, point.ts_ms, &self.speeds.sums, cos_lat, MIN_HEADING_SPEED_MPS);
        self.fit.sums.remove(&newest);
        self.speeds.sums.remove(&newest);
        motion
    }

    /// Holds `kept` as the newest kept point.
    fn keep(&mut self, kept: EnrichedPoint) {
        if kept.fix.has_speed() {
            self.last_reported_speed = Some(self.kept_trimmed + self.kept.len());
        }
        self.kept.push(kept);
    }

    /// Where the reported speeds of the estimate for `newest` start in `kept` (from `first`,
    /// where its window starts): those of the last `speed_window_s`, and at least the last two.
    fn speed_window_start(&self, newest: &Fix, first: usize, cfg: &EnrichConfig) -> usize {
        if self.last_reported_speed.is_none_or(|i| i < self.kept_trimmed + first) {
            return self.kept.len();
        }
        let span_ms = (cfg.speed_window_s * 1000.0 + 1e-6).floor() as i64;
        let hint = self.speeds.summed.start;
        let recent = self.partition_near(first, hint, |p| newest.ts_ms() - p.point.ts_ms > span_ms);
        let reports = |i: &usize| !self.kept[*i].outlier && self.kept[*i].fix.has_speed();
        let wanted = if newest.has_speed() { 1 } else { 2 };
        let mut inside = (recent..self.kept.len()).filter(reports);
        match inside.next() {
            Some(start) if wanted == 1 || inside.next().is_some() => start,
            // Fewer than two in the span: the last two of the window.
            found => {
                let before = (first..recent).rev().filter(reports);
                let missing = wanted - usize::from(found.is_some());
                before.take(missing).last().or(found).unwrap_or(self.kept.len())
            }
        }
    }

    /// Where the estimate's window for `point` starts in `kept` (from `lowest`): the confirmed
    /// fixes of the trailing `kinematics_window_s`, and at least three (with `point`) within
    /// `max_kinematics_gap_s`, none across a gap longer than that. `kept.len()` when none.
    fn window_start(&self, point: &Point, lowest: usize, cfg: &EnrichConfig) -> usize {
        let max_gap_ms = (cfg.max_kinematics_gap_s * 1000.0) as i64;
        let window_ms = (cfg.kinematics_window_s * 1000.0) as i64;
        // Held points are in time order: those inside the window are the last ones. With no gap
        // inside the window too long and at least two confirmed fixes in it, those are the
        // window (the common case, found without walking it).
        let inside = self.partition_near(lowest, self.fit.summed.start, |p| point.ts_ms - p.point.ts_ms > window_ms);
        if window_ms <= max_gap_ms {
            let mut confirmed = (inside..self.kept.len()).filter(|&i| !self.kept[i].outlier);
            if let (Some(first), Some(_)) = (confirmed.next(), confirmed.next()) {
                return first;
            }
        }
        let mut first = self.kept.len();
        let (mut count, mut newer_ts) = (1usize, point.ts_ms);
        for i in (lowest..self.kept.len()).rev() {
            let p = &self.kept[i];
            if p.outlier {
                continue;
            }
            let inside = point.ts_ms - p.point.ts_ms <= window_ms;
            let spread_ok = point.ts_ms - p.point.ts_ms <= max_gap_ms;
            if newer_ts - p.point.ts_ms > max_gap_ms || !(inside || (count < MIN_FIT_POINTS && spread_ok)) {
                break;
            }
            first = i;
            count += 1;
            newer_ts = p.point.ts_ms;
        }
        first
    }

    /// What `motion` (the estimate at `point`) stands for in the harsh episodes.
    fn estimate_at(&self, motion: Motion, point: &Point, step: Step, cfg: &EnrichConfig) -> Estimate {
        let support_s = if step.in_gap { 0.0 } else { step.dt_s.min(cfg.kinematics_window_s) };
        // The held fix nearest the estimate's time (the window is held, so it is there).
        let after = self.partition_from_end(0, |p| p.point.ts_ms < motion.at_ms);
        let nearest = [after.checked_sub(1), Some(after)]
            .into_iter()
            .flatten()
            .filter_map(|i| self.kept.get(i).map(|p| &p.point))
            .chain(std::iter::once(point))
            .min_by_key(|p| (p.ts_ms - motion.at_ms).abs())
            .unwrap_or(point);
        Estimate { motion, support_s, lat: nearest.lat, lon: nearest.lon }
    }

    /// Step 5, harsh episodes: the previous point's estimate, now confirmed, extends or closes
    /// each kind's episode. An episode becomes an event when its value stayed beyond the
    /// threshold for `harsh_min_duration_s`.
    fn harsh_episodes(&mut self, cfg: &EnrichConfig) {
        let Some(estimate) = self.pending.take() else { return };
        let m = estimate.motion;
        let fast = m.speed_mps * KMH_PER_MPS >= cfg.min_event_speed_kmh;
        // Each kind's value (positive beyond its threshold) and threshold.
        let values = [
            (m.longitudinal_mps2.map(|a| -a), -cfg.harsh_braking_mps2),
            (m.longitudinal_mps2, cfg.harsh_acceleration_mps2),
            (m.lateral_mps2.map(f64::abs), cfg.harsh_cornering_mps2),
        ];
        for (slot, (value, threshold)) in values.into_iter().enumerate() {
            let value = value.filter(|_| fast).unwrap_or(0.0);
            let open = self.open_harsh[slot].is_some();
            // An episode starts beyond the threshold and lasts while the value stays beyond
            // `HARSH_RELEASE` of it: noise around the threshold does not split one manoeuvre.
            if value >= threshold || (open && value >= HARSH_RELEASE * threshold) {
                let episode =
                    self.open_harsh[slot].get_or_insert(Episode::new(m.at_ms, estimate.lat, estimate.lon, value));
                episode.peak = episode.peak.max(value);
                episode.last_ts_ms = m.at_ms;
                if value >= threshold {
                    episode.beyond_s += estimate.support_s;
                }
            } else {
                self.close_harsh(slot, cfg.harsh_min_duration_s);
            }
        }
    }

    fn start_stretch(&mut self, point: &Point, region: Option<RegionId>) {
        self.jump_streak = 0;
        self.standing = true;
        self.left_radius_at_ms = None;
        self.still_since_ms = None;
        self.pending = None;
        self.stretch_start = self.kept_trimmed + self.kept.len();
        self.anchor = Anchor::at(point);
        let speed_mps = point.speed_mps.unwrap_or(0.0);
        self.max_speed_mps = self.max_speed_mps.max(speed_mps);
        self.note_region(region);
        let fix = Fix::of(point, &mut self.headings, MIN_HEADING_SPEED_MPS);
        self.keep(EnrichedPoint {
            speed_mps,
            speed_derived: point.speed_mps.is_none(),
            heading_deg: point.heading_deg.filter(|_| speed_mps >= MIN_HEADING_SPEED_MPS),
            region,
            ..EnrichedPoint::incoming(point, fix)
        });
    }

    /// Where `pred`, true for a prefix of `kept[lowest..]` (held points are in time order),
    /// turns false: searched from `hint` (counted from the trip's first kept point), where it
    /// turned false for an earlier point. Windows move forward a point or two per point, so this
    /// is a step or two, in cache and predictable.
    fn partition_near(&self, lowest: usize, hint: usize, pred: impl Fn(&EnrichedPoint) -> bool) -> usize {
        let len = self.kept.len();
        let mut i = hint.saturating_sub(self.kept_trimmed).clamp(lowest, len);
        while i < len && pred(&self.kept[i]) {
            i += 1;
        }
        while i > lowest && !pred(&self.kept[i - 1]) {
            i -= 1;
        }
        i
    }

    /// Where `pred`, true for a prefix of `kept[lowest..]` (held points are in time order),
    /// turns false: searched from the end, galloping back, as the answer is usually a few points
    /// back and a search from the end stays in cache.
    fn partition_from_end(&self, lowest: usize, pred: impl Fn(&EnrichedPoint) -> bool) -> usize {
        // Everything from `hi` on fails `pred`.
        let (mut hi, mut step) = (self.kept.len(), 1);
        while hi > lowest {
            let probe = hi.saturating_sub(step).max(lowest);
            if pred(&self.kept[probe]) {
                return probe + 1 + self.kept[probe + 1..hi].partition_point(&pred);
            }
            hi = probe;
            step *= 2;
        }
        lowest
    }

    /// Where the current stretch starts in the held points (0 when its start was trimmed).
    fn stretch_index(&self) -> usize {
        self.stretch_start.saturating_sub(self.kept_trimmed)
    }

    fn note_region(&mut self, region: Option<RegionId>) {
        if let Some(id) = region
            && !self.regions.contains(&id)
        {
            self.regions.push(id);
        }
    }

    fn close_harsh(&mut self, slot: usize, min_duration_s: f64) {
        if let Some(episode) = self.open_harsh[slot].take()
            && episode.beyond_s >= min_duration_s
        {
            self.events.push(episode.to_event(HARSH[slot], episode.beyond_s));
        }
    }

    fn close_speeding(&mut self, min_duration_s: f64) {
        if let Some(run) = self.open_speeding.take()
            && run.span_s() >= min_duration_s
        {
            self.speeding_s += run.span_s();
            self.events.push(run.to_event(EventKind::Speeding, run.span_s()));
        }
    }

    fn close_all_episodes(&mut self, cfg: &EnrichConfig) {
        for slot in 0..HARSH.len() {
            self.close_harsh(slot, cfg.harsh_min_duration_s);
        }
        self.close_speeding(cfg.speeding_min_duration_s);
    }

    /// Events, speeding, moving and idle time as if the trip ended here: open episodes closed, a
    /// halt too short to be idle counted as driving. Leaves `self` untouched (and copies only the
    /// small episode state) so the pass can go on.
    pub(crate) fn finished(&self, cfg: &EnrichConfig) -> Closing {
        let mut events = self.events.clone();
        let mut speeding_s = self.speeding_s;
        for (slot, episode) in self.open_harsh.iter().enumerate() {
            if let Some(episode) = episode
                && episode.beyond_s >= cfg.harsh_min_duration_s
            {
                events.push(episode.to_event(HARSH[slot], episode.beyond_s));
            }
        }
        if let Some(run) = self.open_speeding
            && run.span_s() >= cfg.speeding_min_duration_s
        {
            speeding_s += run.span_s();
            events.push(run.to_event(EventKind::Speeding, run.span_s()));
        }
        events.sort_by_key(|e| (e.ts, e.kind));
        let (mut moving_s, mut night_s) = (self.moving_s, self.night_s);
        if !self.halt.idle {
            moving_s += self.halt.standing_s;
            night_s += self.halt.night_s;
        }
        Closing { events, speeding_s, moving_s, night_s }
    }
}

impl EnrichedPoint {
    /// A point as it arrives, before the pass derived anything.
    fn incoming(point: &Point, fix: Fix) -> Self {
        EnrichedPoint {
            point: point.clone(),
            distance_m: 0.0,
            speed_mps: 0.0,
            speed_derived: true,
            heading_deg: None,
            accel_mps2: None,
            lateral_accel_mps2: None,
            region: None,
            moving: false,
            outlier: false,
            fit_speed: None,
            fix,
        }
    }
}

/// Whether the line through the confirmed fixes `e` and `b` (in that order) predicts `next` better
/// than `mid` (between `b` and `next`), each measured against what 0.7 g of manoeuvre (plus
/// `margin_m`) explains at its distance from them. The test of `mid` against that line alone
/// must allow for a manoeuvre that began after `b`; at 1 Hz that is 10 m, as much as a
/// multipath outlier along the road. A real manoeuvre continues into `next`; an outlier
/// does not, and `next` is back on the line `mid` left.
fn history_prefers_next(e: &Point, b: &Point, mid: &Point, next: &Point, cos_lat: f64, margin_m: f64) -> bool {
    let share = |p: &Point| {
        off_track_m(e, p, b, cos_lat) / (max_bend_m(e.ts_ms, p.ts_ms, b.ts_ms, MAX_PLAUSIBLE_ACCEL_MPS2) + margin_m)
    };
    2.0 * share(next) < share(mid)
}

/// What jump rejection made of a point.
enum Jump {
    /// A plausible step.
    None,
    /// Implausible: dropped.
    Dropped,
    /// Implausible, but it and the last two dropped agree: a new stretch starts here.
    Restart,
}

/// What closing the open episodes adds to a pass's totals.
pub(crate) struct Closing {
    pub(crate) events: Vec<Event>,
    pub(crate) speeding_s: f64,
    pub(crate) moving_s: f64,
    pub(crate) night_s: f64,
}

/// Sums over the held points of a window that slide with it: as the window moves, the points
/// that left are taken out and those that entered taken in. The sums are exact, so they are the
/// same as if built afresh from the window.
#[derive(Clone, Debug, Default)]
struct Slide<S> {
    sums: S,
    /// The held points summed, counted from the trip's first kept point (outliers excepted).
    summed: std::ops::Range<usize>,
}

impl<S: Sliding> Slide<S> {
    /// Slides to the points of `kept` (its first `trimmed` dropped) from `first` to the last.
    fn slide(&mut self, kept: &[EnrichedPoint], trimmed: usize, first: usize) {
        let end = trimmed + kept.len();
        let Some(first_fix) = kept.get(first).map(|p| p.fix) else {
            (self.sums, self.summed) = (S::default(), end..end);
            return;
        };
        let from = trimmed + first;
        let held = |i: usize| Some(&kept[i - trimmed]).filter(|p| !p.outlier).map(|p| &p.fix);
        let (mut lo, mut hi) = (self.summed.start, self.summed.end);
        if from > hi || lo < trimmed {
            // Nothing summed is left in the window, or what left was trimmed: afresh.
            (self.sums, lo, hi) = (S::empty(&first_fix), from, from);
        }
        (lo..from).filter_map(held).for_each(|fix| self.sums.remove(fix));
        self.sums.rebase(&first_fix);
        (from..lo).chain(hi..end).filter_map(held).for_each(|fix| self.sums.add(fix));
        self.summed = from..end;
    }

    /// Point `at` (counted from the trip's first kept point), summed unless outside, turned out
    /// an outlier.
    fn forget(&mut self, at: usize, fix: &Fix) {
        if self.summed.contains(&at) {
            self.sums.remove(fix);
        }
    }
}

/// An upper bound of the great-circle distance from `a` to `b` (`cos_lat_b`: the cosine of
/// `b`'s latitude), metres: along the meridian, then along the parallel where it is longest (the
/// cosine of `a`'s latitude is within the latitudes' difference of `b`'s), with a margin for
/// rounding (on the sphere the haversine distances use).
fn distance_bound_m(a: &Point, b: &Point, cos_lat_b: f64) -> f64 {
    let d_lat = (a.lat - b.lat).abs().to_radians();
    let d_lon = (a.lon - b.lon).abs().to_radians();
    1.001 * Haversine.radius() * (d_lat + d_lon * (cos_lat_b + d_lat).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_distance_bound_is_never_below_the_great_circle_distance() {
        let mut rng = crate::sim::Rng::new(7);
        for _ in 0..100_000 {
            let (lat, lon) = (rng.range(-89.9, 89.9), rng.range(-180.0, 180.0));
            // Steps from centimetres to hundreds of kilometres.
            let scale = 10f64.powf(rng.range(-7.0, 0.5));
            let b = Point::new(
                0,
                (lat + rng.range(-1.0, 1.0) * scale).clamp(-90.0, 90.0),
                lon + rng.range(-1.0, 1.0) * scale,
            );
            let a = Point::new(0, lat, lon);
            let exact = Haversine.distance(geo(&a), geo(&b));
            let bound = distance_bound_m(&a, &b, b.lat.to_radians().cos());
            assert!(bound >= exact, "{a:?} {b:?}: {bound} < {exact}");
            assert!(scale > 0.1 || bound <= 1.5 * exact + 1e-6, "a loose bound: {bound} against {exact}");
        }
    }
}
