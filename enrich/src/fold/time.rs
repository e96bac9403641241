//! Step 6 of the pass, speeding and time accounting: moving, idle and night time over each
//! step, halts that become idle, and the time a change of movement recognised late refiles.

use chrono::{Offset, TimeZone, Timelike};
use chrono_tz::Tz;
use tripline_model::Point;
use tripline_model::time::to_datetime;

use super::{Episode, Fold, KMH_PER_MPS, Step};
use crate::regions::RegionId;
use crate::{EnrichConfig, Enricher};

/// Standing time not yet counted: a halt is idle only once it lasts `min_idle_s`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Halt {
    pub(super) standing_s: f64,
    pub(super) night_s: f64,
    /// Whether it was long enough and is counted as idle as it goes.
    pub(super) idle: bool,
}

/// What the pass found about the vehicle over a step, for speeding and time accounting.
#[derive(Clone, Copy, Debug)]
pub(super) struct Found {
    pub(super) region: Option<RegionId>,
    pub(super) moving: bool,
    /// Share of the step spent moving.
    pub(super) moving_share: f64,
    pub(super) speed_mps: f64,
}

/// Whether `ts_ms` falls in the night window in zone `tz` (a window may wrap past midnight).
fn is_night(ts_ms: i64, tz: Tz, start_hour: u32, end_hour: u32) -> bool {
    let hour = tz.from_utc_datetime(&to_datetime(ts_ms).naive_utc()).hour();
    if start_hour <= end_hour { (start_hour..end_hour).contains(&hour) } else { hour >= start_hour || hour < end_hour }
}

impl Fold {
    /// Step 6, speeding and time accounting over the step into `point`.
    pub(super) fn speeding_and_time(&mut self, point: &Point, step: Step, found: Found, engine: &Enricher) {
        let cfg = &engine.config;
        let Found { region, moving, moving_share, speed_mps } = found;
        if step.in_gap {
            self.close_speeding(cfg.speeding_min_duration_s);
            return;
        }
        if step.dt_s <= 0.0 {
            return;
        }
        let limit_kmh = region
            .and_then(|id| engine.regions.get(id))
            .and_then(|r| r.speed_limit_kmh)
            .unwrap_or(cfg.default_speed_limit_kmh);
        let speed_kmh = speed_mps * KMH_PER_MPS;
        if moving && speed_kmh > limit_kmh + cfg.speeding_tolerance_kmh {
            let run = self.open_speeding.get_or_insert(Episode::new(step.prev_ts_ms, point.lat, point.lon, speed_kmh));
            run.peak = run.peak.max(speed_kmh);
            run.last_ts_ms = point.ts_ms;
        } else {
            self.close_speeding(cfg.speeding_min_duration_s);
        }
        // Night time counts toward driving, or toward a halt not yet idle; an idle halt needs none.
        let night = if moving_share > 0.0 || !self.halt.idle {
            let tz = region.and_then(|id| engine.regions.get(id)).and_then(|r| r.timezone).unwrap_or(engine.default_tz);
            if self.night_at(step.prev_ts_ms, tz, cfg) { step.dt_s } else { 0.0 }
        } else {
            0.0
        };
        let (driving_s, standing_s) = (step.dt_s * moving_share, step.dt_s * (1.0 - moving_share));
        if moving {
            // A halt ends; its share of this step came first.
            self.add_halt(standing_s, night * (1.0 - moving_share), cfg.min_idle_s);
            self.end_halt();
            self.moving_s += driving_s;
            self.night_s += night * moving_share;
        } else if point.ignition != Some(false) {
            self.moving_s += driving_s;
            self.night_s += night * moving_share;
            self.add_halt(standing_s, night * (1.0 - moving_share), cfg.min_idle_s);
        }
    }

    /// Standing time: idle once the halt lasts `min_idle_s`.
    fn add_halt(&mut self, standing_s: f64, night_s: f64, min_idle_s: f64) {
        if standing_s <= 0.0 {
            return;
        }
        self.halt.standing_s += standing_s;
        if self.halt.idle {
            self.idle_s += standing_s;
            return;
        }
        self.halt.night_s += night_s;
        if self.halt.standing_s >= min_idle_s {
            self.halt.idle = true;
            self.idle_s += self.halt.standing_s;
        }
    }

    /// The share of the step into `point` spent moving. With reported speeds: up to (or from)
    /// where the speed crossed the moving threshold, interpolated between the two samples.
    /// Otherwise the whole step or none (the transitions are refiled when recognised).
    pub(super) fn moving_share(&self, point: &Point, moving: bool, cfg: &EnrichConfig) -> f64 {
        let threshold = cfg.moving_speed_kmh / KMH_PER_MPS;
        let before = self.kept.last().and_then(|p| p.point.speed_mps);
        match (before, point.speed_mps) {
            (Some(v0), Some(v1)) if (v0 >= threshold) != moving && v0 != v1 => {
                let crossed = ((threshold - v0) / (v1 - v0)).clamp(0.0, 1.0);
                if moving { 1.0 - crossed } else { crossed }
            }
            _ => f64::from(u8::from(moving)),
        }
    }

    /// The vehicle moves again: a halt too short to be idle was driving.
    fn end_halt(&mut self) {
        let halt = std::mem::take(&mut self.halt);
        if !halt.idle {
            self.moving_s += halt.standing_s;
            self.night_s += halt.night_s;
        }
    }

    /// Movement was confirmed `since_s` after the fixes left the stop: that time was driving.
    pub(super) fn refile_halt_as_moving(&mut self, since_s: f64, min_idle_s: f64) {
        let moved = since_s.min(self.halt.standing_s);
        if moved <= 0.0 {
            return;
        }
        let night = if self.halt.standing_s > 0.0 { self.halt.night_s * moved / self.halt.standing_s } else { 0.0 };
        self.halt.standing_s -= moved;
        self.halt.night_s -= night;
        if self.halt.idle {
            self.idle_s -= moved;
            // What is left of the halt is too short to be idle: it is driving too (the halt ends).
            if self.halt.standing_s < min_idle_s {
                self.idle_s -= self.halt.standing_s;
                self.halt.idle = false;
            }
        }
        self.moving_s += moved;
        self.night_s += night;
    }

    /// A stop was recognised `window_s` after it began: that time was standing.
    pub(super) fn refile_moving_as_halt(&mut self, window_s: f64) {
        let moved = window_s.clamp(0.0, self.moving_s);
        self.moving_s -= moved;
        self.halt = Halt { standing_s: moved, night_s: 0.0, idle: false };
    }

    /// Whether `ts_ms` is at night in `tz`, remembered for the rest of its UTC minute where the
    /// zone's offset is whole minutes and the same through the minute (so is the local hour).
    fn night_at(&mut self, ts_ms: i64, tz: Tz, cfg: &EnrichConfig) -> bool {
        let minute = ts_ms.div_euclid(60_000);
        match self.night_minute {
            Some((m, zone, night)) if m == minute && zone == tz => night,
            _ => {
                let night = is_night(ts_ms, tz, cfg.night_start_hour, cfg.night_end_hour);
                let offset_s =
                    |ms: i64| tz.offset_from_utc_datetime(&to_datetime(ms).naive_utc()).fix().local_minus_utc();
                let offset = offset_s(minute * 60_000);
                let steady = offset % 60 == 0 && offset_s(minute * 60_000 + 59_999) == offset;
                self.night_minute = steady.then_some((minute, tz, night));
                night
            }
        }
    }
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

    #[test]
    fn night_remembered_per_minute_is_night_computed_per_fix() {
        let mut fold = Fold::default();
        let cfg = EnrichConfig { night_start_hour: 23, night_end_hour: 5, ..EnrichConfig::default() };
        let start = tripline_model::time::parse_rfc3339_ms("2026-03-29T00:00:00Z").unwrap();
        for tz in ["Europe/Berlin", "Asia/Kolkata", "Australia/Eucla", "America/St_Johns"] {
            let tz: Tz = tz.parse().unwrap();
            // Across a change to summer time, in steps of 7.3 s.
            for ts in (start..start + 6 * 3_600_000).step_by(7_300) {
                assert_eq!(fold.night_at(ts, tz, &cfg), is_night(ts, tz, 23, 5), "{tz} at {ts}");
            }
        }
        let amsterdam_1930: Tz = "Europe/Amsterdam".parse().unwrap();
        let ts = tripline_model::time::parse_rfc3339_ms("1930-01-01T04:40:00Z").unwrap();
        for ts in (ts..ts + 3_600_000).step_by(1_000) {
            assert_eq!(fold.night_at(ts, amsterdam_1930, &cfg), is_night(ts, amsterdam_1930, 23, 5), "at {ts}");
        }
    }
}
