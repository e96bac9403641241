//! The engine's settings. Every default is named and documented; a config file may override any.

use serde::{Deserialize, Serialize};

/// Thresholds and windows of the enrichment engine.
///
/// Defaults follow usage-based-insurance practice: harsh braking at −3.0 m/s² (≈0.3 g), harsh
/// acceleration at +3.0 m/s², harsh cornering at 4.0 m/s² lateral, all only above 15 km/h.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// A point implying a faster speed from the previous kept point is an implausible jump.
    pub max_speed_kmh: f64,
    /// A gap between two points longer than this ends a trip (when the device gives no trip id),
    /// and is never counted as moving or idle time.
    pub trip_gap_s: f64,
    /// Reported speeds below this count as standing still.
    pub moving_speed_kmh: f64,
    /// Without a reported speed, a point closer than this to where the vehicle stood still
    /// (the mean of its stationary fixes) is GPS wander, not movement. Twice a point's own
    /// `accuracy_m`, when larger, widens it up to `max_jitter_radius_m`.
    pub jitter_radius_m: f64,
    /// Upper bound of the jitter radius taken from `accuracy_m`.
    pub max_jitter_radius_m: f64,
    /// Without a reported speed, a moving vehicle is standing again once this long brought it
    /// less than the jitter radius.
    pub stop_window_s: f64,
    /// Speed, course and acceleration are estimated by fitting the positions of this trailing
    /// span of time (at least three fixes), whatever the sampling rate (see docs/kinematics.md).
    /// At most 10 s.
    #[serde(alias = "min_derivation_baseline_s")]
    pub kinematics_window_s: f64,
    /// Where the device reports speed, the longitudinal acceleration is the slope of the
    /// reported speeds over this trailing span (at least two samples); reported headings give
    /// their turn rate over it too, where that turns harder than over the position fit's
    /// fixes. At most 10 s.
    pub speed_window_s: f64,
    /// No estimate spans a gap between fixes longer than this (nor three fixes further apart).
    pub max_kinematics_gap_s: f64,
    /// A fix farther than this from where its neighbours put it, beyond what 0.7 g of
    /// acceleration explains, is an outlier (multipath): left out of estimates and distance.
    pub outlier_margin_m: f64,
    /// Harsh braking: longitudinal acceleration at or below this (negative).
    pub harsh_braking_mps2: f64,
    /// Harsh acceleration: longitudinal acceleration at or above this.
    pub harsh_acceleration_mps2: f64,
    /// Harsh cornering: lateral acceleration magnitude at or above this.
    pub harsh_cornering_mps2: f64,
    /// Harsh events count only when the vehicle is at least this fast.
    pub min_event_speed_kmh: f64,
    /// A harsh event needs the estimated acceleration beyond its threshold for at least this long
    /// (one event per episode).
    pub harsh_min_duration_s: f64,
    /// Standing still counts as idle time only once it lasts this long; shorter halts (and the
    /// moments a noisy fix reads as standing) count as driving.
    pub min_idle_s: f64,
    /// Speed limit where no region gives one.
    pub default_speed_limit_kmh: f64,
    /// Speeding starts above the limit plus this.
    pub speeding_tolerance_kmh: f64,
    /// A speeding episode counts only when it lasts at least this long.
    pub speeding_min_duration_s: f64,
    /// Night starts at this local hour (0–23) …
    pub night_start_hour: u32,
    /// … and ends at this local hour (0–23).
    pub night_end_hour: u32,
    /// IANA zone for night driving where no region gives one.
    pub default_timezone: String,
}

/// Default: 250 km/h.
pub fn default_max_speed_kmh() -> f64 {
    250.0
}
/// Default: 10 minutes, as in the contract.
pub fn default_trip_gap_s() -> f64 {
    600.0
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            max_speed_kmh: default_max_speed_kmh(),
            trip_gap_s: default_trip_gap_s(),
            moving_speed_kmh: 3.0,
            jitter_radius_m: 10.0,
            max_jitter_radius_m: 50.0,
            stop_window_s: 4.0,
            kinematics_window_s: 2.0,
            speed_window_s: 1.0,
            max_kinematics_gap_s: 10.0,
            outlier_margin_m: 3.0,
            harsh_braking_mps2: -3.0,
            harsh_acceleration_mps2: 3.0,
            harsh_cornering_mps2: 4.0,
            min_event_speed_kmh: 15.0,
            harsh_min_duration_s: 0.5,
            min_idle_s: 3.0,
            default_speed_limit_kmh: 130.0,
            speeding_tolerance_kmh: 5.0,
            speeding_min_duration_s: 10.0,
            night_start_hour: 23,
            night_end_hour: 5,
            default_timezone: "UTC".to_owned(),
        }
    }
}
