//! The usage-based-insurance score, version 1. See `docs/scoring.md` for the reasoning and a
//! worked example.

use tripline_model::EventCounts;

/// Version of the formula below; stored with every score.
pub const SCORE_VERSION: u32 = 2;

/// Weight of one event of each kind, in "penalty points".
pub const WEIGHT_HARSH_BRAKING: f64 = 3.0;
/// See [`WEIGHT_HARSH_BRAKING`].
pub const WEIGHT_HARSH_ACCELERATION: f64 = 2.0;
/// See [`WEIGHT_HARSH_BRAKING`].
pub const WEIGHT_HARSH_CORNERING: f64 = 2.0;
/// See [`WEIGHT_HARSH_BRAKING`].
pub const WEIGHT_SPEEDING: f64 = 3.0;
/// Trips shorter than this are normalised as if they were this long, so one event on a 300 m
/// trip does not zero the score.
pub const MIN_NORMALISATION_KM: f64 = 10.0;
/// Penalty points per 100 km at which the event factor falls to 1/e (≈ 37 %).
pub const PENALTY_SCALE_PER_100KM: f64 = 100.0;
/// Share of the score lost when the whole moving time is spent speeding.
pub const SPEEDING_TIME_WEIGHT: f64 = 0.3;
/// Share of the score lost when the whole moving time is at night.
pub const NIGHT_TIME_WEIGHT: f64 = 0.1;

/// What the score is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreInputs {
    /// Event counts.
    pub events: EventCounts,
    /// Distance driven.
    pub distance_km: f64,
    /// Time moving.
    pub moving_time_s: f64,
    /// Time speeding.
    pub speeding_s: f64,
    /// Time moving at night.
    pub night_driving_s: f64,
}

/// Score 0–100, higher is safer. Distance-normalised and monotone: more events, more speeding
/// or more night driving never raise it.
pub fn score(inputs: &ScoreInputs) -> f64 {
    let e = &inputs.events;
    let penalty = WEIGHT_HARSH_BRAKING * f64::from(e.harsh_braking)
        + WEIGHT_HARSH_ACCELERATION * f64::from(e.harsh_acceleration)
        + WEIGHT_HARSH_CORNERING * f64::from(e.harsh_cornering)
        + WEIGHT_SPEEDING * f64::from(e.speeding);
    let per_100km = penalty / inputs.distance_km.max(MIN_NORMALISATION_KM) * 100.0;
    let event_factor = (-per_100km / PENALTY_SCALE_PER_100KM).exp();
    let share =
        |part_s: f64| if inputs.moving_time_s > 0.0 { (part_s / inputs.moving_time_s).clamp(0.0, 1.0) } else { 0.0 };
    let speeding_factor = 1.0 - SPEEDING_TIME_WEIGHT * share(inputs.speeding_s);
    let night_factor = 1.0 - NIGHT_TIME_WEIGHT * share(inputs.night_driving_s);
    let raw = 100.0 * event_factor * speeding_factor * night_factor;
    (raw * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(braking: u32, distance_km: f64) -> ScoreInputs {
        ScoreInputs {
            events: EventCounts { harsh_braking: braking, ..EventCounts::default() },
            distance_km,
            moving_time_s: 1200.0,
            speeding_s: 0.0,
            night_driving_s: 0.0,
        }
    }

    #[test]
    fn a_clean_trip_scores_100() {
        assert_eq!(score(&inputs(0, 20.0)), 100.0);
    }

    #[test]
    fn the_worked_example_in_the_docs_holds() {
        // docs/scoring.md: 20 km, 1 harsh braking, 1 speeding episode of 60 s in 1200 s moving.
        let mut i = inputs(1, 20.0);
        i.events.speeding = 1;
        i.speeding_s = 60.0;
        assert_eq!(score(&i), 73.0);
    }

    #[test]
    fn more_events_never_raise_the_score() {
        let mut last = f64::INFINITY;
        for braking in 0..30 {
            let s = score(&inputs(braking, 15.0));
            assert!(s <= last && (0.0..=100.0).contains(&s));
            last = s;
        }
    }

    #[test]
    fn events_weigh_less_over_longer_distances() {
        assert!(score(&inputs(2, 100.0)) > score(&inputs(2, 20.0)));
        assert_eq!(score(&inputs(2, 1.0)), score(&inputs(2, 10.0)), "short trips normalised as 10 km");
    }
}
