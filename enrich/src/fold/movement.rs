//! Step 3 of the pass, movement: whether the vehicle moved into a point and the distance it
//! adds; without a reported speed, where it stopped and pulled away (docs/kinematics.md, "Idle
//! and moving time").

use geo::{Distance, Haversine};
use tripline_model::Point;

use super::{Anchor, CROSSING_HORIZON_S, Fold, KMH_PER_MPS, MAX_LOOKBACK, geo};
use crate::EnrichConfig;

/// Without a reported speed, fixes must keep leaving a stop's radius this long before the
/// vehicle counts as moving.
const MOVE_CONFIRM_S: f64 = 2.0;

/// The least time between the two estimates a crossing is extrapolated from.
const REFINE_SPACING_MS: i64 = 1500;

/// Whether the vehicle moved into a point, and the distance it adds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Movement {
    pub(super) moving: bool,
    pub(super) distance_m: f64,
    /// The share of the step into the point spent moving, where movement changed within it
    /// (recognised from positions alone).
    pub(super) moving_share: Option<f64>,
}

impl Movement {
    fn whole_step(moving: bool, distance_m: f64) -> Self {
        Movement { moving, distance_m, moving_share: None }
    }
}

/// The share of the step from `prev_ms` to `now_ms` spent moving when movement began (`rising`)
/// or ended at `change_ms`.
fn step_share(prev_ms: i64, now_ms: i64, change_ms: i64, rising: bool) -> f64 {
    if now_ms <= prev_ms {
        return f64::from(u8::from(rising));
    }
    let before = ((change_ms - prev_ms) as f64 / (now_ms - prev_ms) as f64).clamp(0.0, 1.0);
    if rising { 1.0 - before } else { before }
}

/// Where a change of movement was placed.
#[derive(Clone, Copy, Debug)]
struct Placed {
    at_ms: i64,
    /// Placed by the constant-acceleration model, or at the stretch's start; else only
    /// interpolated between the two estimates around the threshold, which the windows'
    /// averaging biases.
    firm: bool,
}

/// A change of movement looked for in the speeds estimated from positions.
#[derive(Clone, Copy, Debug)]
struct Change {
    /// A pull-away (else a stop).
    rising: bool,
    threshold_mps: f64,
    /// How far a placement from the constant-acceleration model may move the crossing the
    /// estimates show: half the kinematics window.
    reach_ms: i64,
}

/// A held speed estimate: the time its window ends (its fix's), the time it holds for (the
/// window's mean time), and the speed.
type Estimated = (i64, i64, f64);

/// The first of `side` and the first after it at least [`REFINE_SPACING_MS`] away.
fn near_and_far(mut side: impl Iterator<Item = Estimated>) -> Option<(Estimated, Estimated)> {
    let near = side.next()?;
    let far = side.find(|&(_, at, _)| (at - near.1).abs() >= REFINE_SPACING_MS)?;
    Some((near, far))
}

impl Fold {
    /// Step 3, movement: whether the vehicle moved into `point`, and the distance it adds.
    pub(super) fn movement(&mut self, point: &Point, fit: Option<(i64, f64)>, cfg: &EnrichConfig) -> Movement {
        // A fix is typically within its accuracy; twice that covers nearly all of its wander.
        let radius_m = point
            .accuracy_m
            .map_or(cfg.jitter_radius_m, |a| (2.0 * a).clamp(cfg.jitter_radius_m, cfg.max_jitter_radius_m));
        let from_anchor_m = Haversine.distance(self.anchor.position(), geo(point));
        match point.speed_mps {
            Some(v) => {
                // The reported speed decides; the anchor stays at the last moving point, so a slow
                // crawl below the threshold is counted once the vehicle moves again.
                let moving = v * KMH_PER_MPS >= cfg.moving_speed_kmh;
                self.standing = !moving;
                if moving {
                    self.anchor = Anchor::at(point);
                }
                Movement::whole_step(moving, if moving { from_anchor_m } else { 0.0 })
            }
            None => self.movement_from_positions(point, radius_m, from_anchor_m, fit, cfg),
        }
    }

    /// Movement inferred from positions alone, with hysteresis. Standing: the anchor is the mean
    /// of the fixes within the radius; the vehicle starts moving only when fixes outside the
    /// radius keep coming for `MOVE_CONFIRM_S` (at least two fixes): a stray fix or two is wander.
    /// Moving: distance is counted hop by hop; the vehicle stands again when the last
    /// `stop_window_s` (and at least two intervals) brought it less than the radius and the
    /// speed estimated from positions is below the moving threshold. Distance is counted from
    /// the anchor, so the delays lose none; the time they misfile is refiled when the state
    /// changes, back to where the speed crossed the threshold ([`Fold::speed_crossing`], and
    /// for a pull-away between sparse fixes [`Fold::pull_away_from_positions`]); the step into
    /// the fix that recognises the change is split there.
    fn movement_from_positions(
        &mut self,
        point: &Point,
        radius_m: f64,
        from_anchor_m: f64,
        fit: Option<(i64, f64)>,
        cfg: &EnrichConfig,
    ) -> Movement {
        let (stop_window_s, threshold_mps) = (cfg.stop_window_s, cfg.moving_speed_kmh / KMH_PER_MPS);
        let prev_ts_ms = self.kept.last().map_or(point.ts_ms, |p| p.point.ts_ms);
        let reach_ms = (cfg.kinematics_window_s * 500.0).round() as i64;
        let change = |rising| Change { rising, threshold_mps, reach_ms };
        if self.standing {
            if from_anchor_m < radius_m {
                self.anchor.absorb(point);
                self.left_radius_at_ms = None;
                return Movement::whole_step(false, 0.0);
            }
            let since = *self.left_radius_at_ms.get_or_insert(point.ts_ms);
            if since == point.ts_ms || ((point.ts_ms - since) as f64 / 1000.0) < MOVE_CONFIRM_S {
                return Movement::whole_step(false, 0.0);
            }
            self.left_radius_at_ms = None;
            self.standing = false;
            self.moving_since_ms = Some(point.ts_ms);
            let began_ms = match self.speed_crossing(point.ts_ms, fit, change(true)) {
                Some(Placed { at_ms, firm: true }) => at_ms,
                crossed => {
                    let (model_ms, inside_ms) =
                        self.pull_away_from_positions(point, since, from_anchor_m, threshold_mps);
                    model_ms.or(crossed.map(|c| c.at_ms)).unwrap_or(inside_ms)
                }
            }
            .min(since);
            self.anchor = Anchor::at(point);
            // The halt was counted up to the previous fix: what of it came after `began_ms` was
            // driving; of the step into this fix, the part after `began_ms`.
            self.refile_halt_as_moving((prev_ts_ms - began_ms) as f64 / 1000.0, cfg.min_idle_s);
            let moving_share = step_share(prev_ts_ms, point.ts_ms, began_ms, true);
            return Movement { moving: true, distance_m: from_anchor_m, moving_share: Some(moving_share) };
        }
        let last = self.kept.len() - 1;
        let start = self.lookback(point.ts_ms, stop_window_s).min(last.saturating_sub(1));
        let window_start = &self.kept[start];
        let window_s = (point.ts_ms - window_start.point.ts_ms) as f64 / 1000.0;
        let still = window_s >= stop_window_s && Haversine.distance(window_start.geo(), geo(point)) < radius_m;
        let still_since = if still { *self.still_since_ms.get_or_insert(point.ts_ms) } else { point.ts_ms };
        if !still {
            self.still_since_ms = None;
        }
        // Slow: the estimated speed says so (the last metres of a stop are still driving), or the
        // fixes stayed within the radius for another window (too noisy for an estimate to settle).
        let slow =
            fit.is_none_or(|(_, v)| v < threshold_mps) || (point.ts_ms - still_since) as f64 / 1000.0 >= stop_window_s;
        if slow && still {
            self.standing = true;
            self.left_radius_at_ms = None;
            self.still_since_ms = None;
            self.anchor = Anchor::at(point);
            let window_start_ms = window_start.point.ts_ms;
            let stopped_ms = self
                .speed_crossing(point.ts_ms, fit, change(false))
                .map_or(window_start_ms, |c| c.at_ms)
                .max(window_start_ms);
            // Driving was counted up to the previous fix: what of it came after `stopped_ms` was
            // standing; of the step into this fix, the part before `stopped_ms` was driving.
            self.refile_moving_as_halt((prev_ts_ms - stopped_ms) as f64 / 1000.0);
            let moving_share = step_share(prev_ts_ms, point.ts_ms, stopped_ms, false);
            return Movement { moving: false, distance_m: 0.0, moving_share: Some(moving_share) };
        }
        self.anchor = Anchor::at(point);
        Movement::whole_step(true, from_anchor_m)
    }

    /// Where a pull-away crossed `threshold_mps` by positions alone, for fixes too sparse for
    /// two estimates after the start: the vehicle accelerated evenly from rest at the stop's
    /// anchor to the first fix outside the radius (at `since_ms`), reaching there the speed it
    /// kept on to `point`, so it covered that distance at half that speed. Kept between the last
    /// fix inside the radius and `since_ms`; `None` when the fixes do not fit that. Also returns
    /// the time of the last fix inside the radius.
    fn pull_away_from_positions(
        &self,
        point: &Point,
        since_ms: i64,
        from_anchor_m: f64,
        threshold_mps: f64,
    ) -> (Option<i64>, i64) {
        let mut before = self.kept.iter().rev().filter(|p| p.point.ts_ms <= since_ms && !p.outlier);
        let (Some(left), inside) = (before.next(), before.next()) else { return (None, since_ms) };
        let inside_ms = inside.map_or(since_ms, |p| p.point.ts_ms);
        if left.point.ts_ms != since_ms || point.ts_ms <= since_ms {
            return (None, inside_ms);
        }
        let left_m = Haversine.distance(self.anchor.position(), left.geo());
        let speed_mps = Haversine.distance(left.geo(), geo(point)) / ((point.ts_ms - since_ms) as f64 / 1000.0);
        if speed_mps <= threshold_mps || from_anchor_m <= left_m {
            return (None, inside_ms);
        }
        let accelerating_s = 2.0 * left_m / speed_mps;
        let crossed_s = accelerating_s * (1.0 - threshold_mps / speed_mps);
        (Some((since_ms - (crossed_s * 1000.0).round() as i64).clamp(inside_ms, since_ms)), inside_ms)
    }

    /// When the speed estimated from positions (held, then `newest`) last crossed
    /// `threshold_mps` (upwards when `rising`), interpolated between the two estimates around
    /// the crossing; the stretch's start when every estimate since is past it; `None` when the
    /// held estimates show no crossing.
    fn speed_crossing(&self, now_ms: i64, newest: Option<(i64, f64)>, change: Change) -> Option<Placed> {
        let Change { rising, threshold_mps, .. } = change;
        // Only as far back as every pass holds, trimmed or not: [`CROSSING_HORIZON_S`], at most
        // [`MAX_LOOKBACK`] fixes, this stretch.
        let stretch = self.stretch_index();
        let lowest = stretch.max(self.kept.len().saturating_sub(MAX_LOOKBACK));
        let horizon_ms = now_ms - (CROSSING_HORIZON_S * 1000.0) as i64;
        let held = self.kept[lowest..].iter().rev().take_while(|p| p.point.ts_ms >= horizon_ms);
        let mut later = newest;
        let mut oldest_ms = None;
        for p in held {
            oldest_ms = Some(p.point.ts_ms);
            let Some((at_ms, speed)) = p.fit_speed.filter(|_| !p.outlier) else { continue };
            if let Some((later_ms, later_speed)) = later {
                let crossed = if rising {
                    speed < threshold_mps && later_speed >= threshold_mps
                } else {
                    speed >= threshold_mps && later_speed < threshold_mps
                };
                if crossed {
                    let f = (threshold_mps - speed) / (later_speed - speed);
                    let crossing_ms = at_ms + (f * (later_ms - at_ms) as f64).round() as i64;
                    return Some(match self.refine_crossing(crossing_ms, change, now_ms, newest, lowest) {
                        Some(at_ms) => Placed { at_ms, firm: true },
                        None => Placed { at_ms: crossing_ms, firm: false },
                    });
                }
            }
            later = Some((at_ms, speed));
        }
        // Every estimate back to the stretch's first fix is past the threshold: the change
        // happened before any estimate, at the stretch's start.
        let stretch_first_ms = (self.kept_trimmed <= self.stretch_start && lowest == stretch)
            .then(|| self.kept.get(stretch).map(|p| p.point.ts_ms))
            .flatten();
        let past = later.is_some_and(|(_, v)| (v >= threshold_mps) == rising);
        stretch_first_ms.filter(|&first| past && oldest_ms == Some(first)).map(|at_ms| Placed { at_ms, firm: true })
    }

    /// Where the speed crossed the threshold under constant acceleration, extrapolated from two
    /// estimates at least [`REFINE_SPACING_MS`] apart whose windows lie wholly on the moving side
    /// of `crossing_ms` (before it for a stop, after it for a pull-away). An estimate whose
    /// window holds the stop's (or the start's) kink averages standing with moving and reads
    /// fast, which places a stop late and a pull-away early by up to half a window; so the
    /// result stays within the change's reach of `crossing_ms`, on the moving side of the
    /// nearer estimate and not after `now_ms`. `None` without two such estimates, or when they
    /// do not show the speed changing the right way.
    fn refine_crossing(
        &self,
        crossing_ms: i64,
        change: Change,
        now_ms: i64,
        newest: Option<(i64, f64)>,
        lowest: usize,
    ) -> Option<i64> {
        let Change { rising, threshold_mps, reach_ms } = change;
        // The held estimates and the newest one, in time order; a window starts about as far
        // before its estimate time as it ends after it.
        let held = self.kept[lowest..]
            .iter()
            .filter(|p| !p.outlier)
            .filter_map(|p| p.fit_speed.map(|(at, v)| (p.point.ts_ms, at, v)));
        let newest = newest.map(|(at, v)| (now_ms, at, v));
        let found = if rising {
            near_and_far(held.chain(newest).filter(|&(end, at, _)| 2 * at - end >= crossing_ms))
        } else {
            near_and_far(newest.into_iter().chain(held.rev()).filter(|&(end, _, _)| end <= crossing_ms))
        };
        let ((_, t1, v1), (_, t2, v2)) = found?;
        let slope = (v1 - v2) / (t1 - t2) as f64;
        if slope == 0.0 || (slope > 0.0) != rising || v1 < threshold_mps {
            return None;
        }
        let at_ms = t1 + ((threshold_mps - v1) / slope).round() as i64;
        Some(if rising {
            at_ms.clamp((crossing_ms - reach_ms).min(t1), t1)
        } else {
            at_ms.clamp(t1, (crossing_ms + reach_ms).min(now_ms).max(t1))
        })
    }

    /// Speed from the previous kept point (when no window can be fitted).
    pub(super) fn hop_speed(&self, point: &Point) -> f64 {
        self.kept.last().map_or(0.0, |prev| {
            let dt = (point.ts_ms - prev.point.ts_ms) as f64 / 1000.0;
            if dt > 0.0 { Haversine.distance(prev.geo(), geo(point)) / dt } else { prev.speed_mps }
        })
    }

    /// The latest point of this stretch at least `span_s` before `ts_ms` (within
    /// [`MAX_LOOKBACK`] held points), else the last point.
    pub(super) fn lookback(&mut self, ts_ms: i64, span_s: f64) -> usize {
        let last = self.kept.len() - 1;
        let lowest = last.saturating_sub(MAX_LOOKBACK).max(self.stretch_index());
        let span_ms = (span_s * 1000.0).ceil() as i64;
        // Held points are in time order: those at least `span_ms` before are the first ones.
        let found = self.partition_near(lowest, self.stop_hint, |p| ts_ms - p.point.ts_ms >= span_ms);
        self.stop_hint = self.kept_trimmed + found;
        match found - lowest {
            0 => last,
            n => lowest + n - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_split_where_movement_changed() {
        // From 10 s to 12 s, the change at 10.5 s.
        assert_eq!(step_share(10_000, 12_000, 10_500, true), 0.75);
        assert_eq!(step_share(10_000, 12_000, 10_500, false), 0.25);
        // A change placed outside the step moves all of it or none.
        assert_eq!(step_share(10_000, 12_000, 9_000, true), 1.0);
        assert_eq!(step_share(10_000, 12_000, 13_000, false), 1.0);
        assert_eq!(step_share(10_000, 10_000, 10_000, false), 0.0);
    }

    #[test]
    fn the_far_estimate_is_the_first_far_enough_from_the_near_one() {
        let estimates = [(3_000, 2_000, 1.0), (4_000, 3_000, 2.0), (5_000, 4_000, 3.0)];
        assert_eq!(near_and_far(estimates.into_iter()), Some((estimates[0], estimates[2])));
        assert_eq!(near_and_far(estimates[..2].iter().copied()), None);
        assert_eq!(near_and_far(estimates.into_iter().rev()), Some((estimates[2], estimates[0])));
    }
}
