//! Trip cutting for devices that send no `trip_id`: a new trip starts after a gap longer than
//! the trip gap, or where the ignition goes from off to on. Trip ids are derived from the vehicle
//! and the trip's start time, so the same points always give the same ids.

use std::ops::Range;

use tripline_model::{Point, TripId, VehicleId};

/// Splits `points` (sorted by time) into trips; returns index ranges in order.
pub fn cut_trips(points: &[Point], trip_gap_s: f64) -> Vec<Range<usize>> {
    let gap_ms = (trip_gap_s * 1000.0) as i64;
    let mut trips = Vec::new();
    let mut start = 0;
    for i in 1..points.len() {
        let (prev, next) = (&points[i - 1], &points[i]);
        let gap = next.ts_ms - prev.ts_ms > gap_ms;
        let ignition_on = prev.ignition == Some(false) && next.ignition == Some(true);
        if gap || ignition_on {
            trips.push(start..i);
            start = i;
        }
    }
    if start < points.len() {
        trips.push(start..points.len());
    }
    trips
}

/// FNV-1a, 64 bit: a tiny hash whose value never changes between releases or platforms.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The deterministic id of a cut trip: `t{start ms}-{hash of vehicle id}`, at most 38 characters.
pub fn auto_trip_id(vehicle_id: &VehicleId, start_ts_ms: i64) -> TripId {
    let text = format!("t{start_ts_ms}-{:016x}", fnv1a64(vehicle_id.as_str().as_bytes()));
    TripId::parse(&text).expect("digits, 't', '-' and hex digits are all in the id alphabet")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts_s: i64, ignition: Option<bool>) -> Point {
        Point {
            seq: None,
            ts_ms: ts_s * 1000,
            lat: 1.0,
            lon: 1.0,
            speed_mps: None,
            heading_deg: None,
            accuracy_m: None,
            alt_m: None,
            ignition,
            odometer_m: None,
        }
    }

    #[test]
    fn gaps_and_ignition_cycles_cut_trips() {
        let points =
            [p(0, None), p(60, None), p(60 + 601, None), p(700, Some(true)), p(710, Some(false)), p(720, Some(true))];
        assert_eq!(cut_trips(&points, 600.0), vec![0..2, 2..5, 5..6]);
        assert!(cut_trips(&[], 600.0).is_empty());
    }

    #[test]
    fn auto_ids_are_deterministic_and_valid() {
        let v = VehicleId::parse(&"v".repeat(64)).unwrap();
        let a = auto_trip_id(&v, 1_582_891_459_000);
        assert_eq!(a, auto_trip_id(&v, 1_582_891_459_000));
        assert_ne!(a, auto_trip_id(&VehicleId::parse("w").unwrap(), 1_582_891_459_000));
        assert!(a.as_str().len() <= 38);
    }
}
