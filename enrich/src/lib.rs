//! # tripline-enrich
//!
//! The per-trip engine: point filters (duplicates, implausible jumps, multipath outliers,
//! stationary jitter), trip cutting, distance, speed, longitudinal and lateral acceleration
//! (estimated over spans of time, so the same at any sampling rate: docs/kinematics.md), harsh
//! braking / acceleration / cornering as sustained episodes, speeding, regions, idle and night
//! driving, and the usage-based-insurance score.
//!
//! **Promises.** Pure, synchronous and deterministic: no I/O, no clock, no runtime. A trip's
//! report is a function of the *set* of its points: any arrival order, with any duplicates, gives
//! the same summary, and updating a live trip point by point gives exactly what a full recompute
//! gives (the pass only looks backwards; a point landing before the end restarts it). Events
//! never come from a dropped point, an outlier, or across an implausible jump.

pub mod batch;
pub mod config;
pub mod cut;
mod fold;
mod kinematics;
pub mod regions;
pub mod score;
pub mod sim;
pub mod track;
mod trip;

use chrono_tz::Tz;

pub use config::EnrichConfig;
pub use cut::{CutTrip, assign_trips, auto_trip_id, cut_trips};
pub use fold::EnrichedPoint;
pub use regions::{Region, RegionId, Regions};
pub use trip::{AddOutcome, MAX_REJECTED_KEYS, MAX_STORED_JUMPS, TripEngine, TripReport, sort_points};

/// What can go wrong setting the engine up (enrichment itself cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    /// The regions file is not a usable GeoJSON FeatureCollection.
    #[error("regions: {detail}")]
    Regions {
        /// What is wrong.
        detail: String,
    },
    /// A setting is out of range.
    #[error("enrich config: {field}: {detail}")]
    Config {
        /// Which setting.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// The engine's shared, read-only context: settings and regions. Cheap to share between workers
/// behind an `Arc`.
#[derive(Clone, Debug)]
pub struct Enricher {
    /// Settings.
    pub config: EnrichConfig,
    /// Regions.
    pub regions: Regions,
    default_tz: Tz,
}

impl Enricher {
    /// Checks `config` and builds the context.
    pub fn new(config: EnrichConfig, regions: Regions) -> Result<Self, EnrichError> {
        let default_tz = config.default_timezone.parse::<Tz>().map_err(|_| EnrichError::Config {
            field: "default_timezone",
            detail: format!("unknown IANA zone {:?}", config.default_timezone),
        })?;
        let positive = [
            ("max_speed_kmh", config.max_speed_kmh),
            ("trip_gap_s", config.trip_gap_s),
            ("jitter_radius_m", config.jitter_radius_m),
            ("max_kinematics_gap_s", config.max_kinematics_gap_s),
            ("harsh_acceleration_mps2", config.harsh_acceleration_mps2),
            ("harsh_cornering_mps2", config.harsh_cornering_mps2),
            ("default_speed_limit_kmh", config.default_speed_limit_kmh),
            ("outlier_margin_m", config.outlier_margin_m),
        ];
        for (field, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(EnrichError::Config { field, detail: format!("{value} must be a positive number") });
            }
        }
        // A fit's window spans at most this gap, and its exact sums are bounded for that span.
        if config.max_kinematics_gap_s > fold::MAX_KINEMATICS_GAP_S {
            return Err(EnrichError::Config {
                field: "max_kinematics_gap_s",
                detail: format!(
                    "{} must be at most {} seconds",
                    config.max_kinematics_gap_s,
                    fold::MAX_KINEMATICS_GAP_S
                ),
            });
        }
        // The pass holds this much of a live trip's past; longer windows would need more.
        let windows = [
            ("kinematics_window_s", config.kinematics_window_s),
            ("speed_window_s", config.speed_window_s),
            ("stop_window_s", config.stop_window_s),
        ];
        for (field, value) in windows {
            if !(value.is_finite() && value > 0.0 && value <= fold::MAX_WINDOW_S) {
                return Err(EnrichError::Config {
                    field,
                    detail: format!("{value} must be a number of seconds above 0 and at most {}", fold::MAX_WINDOW_S),
                });
            }
        }
        for (field, value) in [("harsh_min_duration_s", config.harsh_min_duration_s), ("min_idle_s", config.min_idle_s)]
        {
            if !(value.is_finite() && value >= 0.0) {
                return Err(EnrichError::Config { field, detail: format!("{value} must be 0 or more seconds") });
            }
        }
        if !(config.harsh_braking_mps2.is_finite() && config.harsh_braking_mps2 < 0.0) {
            return Err(EnrichError::Config {
                field: "harsh_braking_mps2",
                detail: format!("{} must be negative", config.harsh_braking_mps2),
            });
        }
        if config.night_start_hour > 23 || config.night_end_hour > 23 {
            return Err(EnrichError::Config { field: "night_start_hour", detail: "hours are 0 to 23".to_owned() });
        }
        Ok(Enricher { config, regions, default_tz })
    }

    /// The contract's defaults and no regions.
    pub fn for_test() -> Self {
        Self::new(EnrichConfig::default(), Regions::empty()).expect("default config is valid")
    }
}
