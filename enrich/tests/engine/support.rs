//! Shared helpers: building trips, running the engine, finding the real recordings.

use std::path::PathBuf;

use tripline_enrich::sim::{Device, Leg, Start, simulate};
use tripline_enrich::{Enricher, TripEngine, TripReport};
use tripline_model::{Point, TripId, TripStatus, VehicleId};

pub(crate) fn vehicle(id: &str) -> VehicleId {
    VehicleId::parse(id).unwrap()
}

pub(crate) fn trip(id: &str) -> TripId {
    TripId::parse(id).unwrap()
}

/// 2026-11-25T10:00:00Z, a Wednesday morning (not night in UTC).
pub(crate) const T0_MS: i64 = 1_795_600_800_000;

/// Outside every bundled region: the default speed limit and time zone apply.
pub(crate) fn start() -> Start {
    Start { lat: 45.0, lon: 10.0, heading_deg: 90.0, ts_ms: T0_MS }
}

pub(crate) fn device(interval_s: f64, gps_noise_m: f64, reports_speed: bool) -> Device {
    Device { interval_s, gps_noise_m, reports_speed, reports_heading: reports_speed, first_seq: Some(1) }
}

pub(crate) fn drive(legs: &[Leg], device: &Device, seed: u64) -> Vec<Point> {
    simulate(start(), legs, device, seed)
}

pub(crate) fn engine() -> Enricher {
    Enricher::for_test()
}

/// Runs the engine over `points` as one completed trip.
pub(crate) fn report_with(engine: &Enricher, points: impl IntoIterator<Item = Point>) -> TripReport {
    let mut trip = TripEngine::new(vehicle("car-1"), trip("trip-1"));
    trip.add_points(points);
    trip.report(engine, TripStatus::Completed, Some(T0_MS)).expect("a trip with points has a report")
}

pub(crate) fn report(points: impl IntoIterator<Item = Point>) -> TripReport {
    report_with(&engine(), points)
}

/// `../shared/data/real-trips` beside the checkout, or `None` after a loud notice (a failure
/// under `CI=true`).
pub(crate) fn real_trips() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let found = manifest.ancestors().map(|dir| dir.join("shared/data/real-trips")).find(|dir| dir.is_dir());
    if found.is_none() {
        let message = "../shared/data/real-trips not found beside the checkout";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("\n!!! SKIPPED: {message}\n");
    }
    found
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}
