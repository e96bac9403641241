//! Trip cutting for points that carry no `trip_id`.
//!
//! Explicit markers come first: points between a trip's start marker and its end marker (or, with
//! no end yet, until the next start marker or a gap longer than the trip gap) belong to that trip.
//! The remaining points are cut by gaps longer than the trip gap and by ignition off→on, with ids
//! derived from the vehicle and the trip's start time, so the same points always give the same
//! trips, whatever order they arrived in.

use std::collections::BTreeMap;
use std::ops::Range;

use tripline_model::{MarkerEvent, Point, TripId, TripMarker, TripStatus, VehicleId};

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

/// One trip found by [`assign_trips`].
#[derive(Clone, Debug, PartialEq)]
pub struct CutTrip {
    /// The marker's trip id, or the derived one.
    pub trip_id: TripId,
    /// Its points, in time order.
    pub points: Vec<Point>,
    /// `Completed` when an end marker closed it, else `Active` (the caller may complete it once
    /// the trip gap has passed).
    pub status: TripStatus,
}

/// Splits one vehicle's unlabelled points (sorted by time) into trips, honouring `markers`.
pub fn assign_trips(vehicle_id: &VehicleId, points: &[Point], markers: &[TripMarker], trip_gap_s: f64) -> Vec<CutTrip> {
    let gap_ms = (trip_gap_s * 1000.0) as i64;
    // Per trip id: the earliest start and the latest end.
    let mut bounds: BTreeMap<&TripId, (Option<i64>, Option<i64>)> = BTreeMap::new();
    for marker in markers {
        let entry = bounds.entry(&marker.trip_id).or_default();
        match marker.event {
            MarkerEvent::Start => entry.0 = Some(entry.0.map_or(marker.ts_ms, |s: i64| s.min(marker.ts_ms))),
            MarkerEvent::End => entry.1 = Some(entry.1.map_or(marker.ts_ms, |e: i64| e.max(marker.ts_ms))),
        }
    }
    let mut windows: Vec<(i64, Option<i64>, &TripId)> =
        bounds.iter().filter_map(|(id, (start, end))| start.map(|s| (s, *end, *id))).collect();
    windows.sort();
    let mut trips = Vec::new();
    let mut claimed = vec![false; points.len()];
    for (w, &(start, end, trip_id)) in windows.iter().enumerate() {
        let next_start = windows.get(w + 1).map(|n| n.0);
        let mut members = Vec::new();
        let mut last_ts = start;
        for (i, point) in points.iter().enumerate() {
            if claimed[i] || point.ts_ms < start {
                continue;
            }
            let before_end = match end {
                Some(end) => point.ts_ms <= end,
                None => next_start.is_none_or(|n| point.ts_ms < n) && point.ts_ms - last_ts <= gap_ms,
            };
            if !before_end {
                break;
            }
            claimed[i] = true;
            last_ts = point.ts_ms;
            members.push(point.clone());
        }
        let status = if end.is_some() { TripStatus::Completed } else { TripStatus::Active };
        trips.push(CutTrip { trip_id: trip_id.clone(), points: members, status });
    }
    // Unclaimed points are cut run by run: an explicit trip between them also separates them.
    let mut run_start = 0;
    while run_start < points.len() {
        if claimed[run_start] {
            run_start += 1;
            continue;
        }
        let run_end = (run_start..points.len()).find(|&i| claimed[i]).unwrap_or(points.len());
        let run = &points[run_start..run_end];
        for range in cut_trips(run, trip_gap_s) {
            let points = run[range].to_vec();
            trips.push(CutTrip {
                trip_id: auto_trip_id(vehicle_id, points[0].ts_ms),
                points,
                status: TripStatus::Active,
            });
        }
        run_start = run_end;
    }
    trips
}

/// The deterministic id of a cut trip: `t{start ms}-{hash of vehicle id}`, at most 38 characters.
pub fn auto_trip_id(vehicle_id: &VehicleId, start_ts_ms: i64) -> TripId {
    let text = format!("t{start_ts_ms}-{:016x}", tripline_model::hash::fnv1a64(vehicle_id.as_str().as_bytes()));
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

    fn marker(trip: &str, event: MarkerEvent, ts_s: i64) -> TripMarker {
        TripMarker { trip_id: TripId::parse(trip).unwrap(), event, ts_ms: ts_s * 1000 }
    }

    #[test]
    fn markers_claim_their_points_and_the_rest_is_cut() {
        let v = VehicleId::parse("car-1").unwrap();
        let points: Vec<Point> = (0..20).map(|i| p(i * 30, None)).collect();
        let markers = [
            marker("a", MarkerEvent::Start, 60),
            marker("a", MarkerEvent::End, 180),
            marker("b", MarkerEvent::Start, 300),
        ];
        let trips = assign_trips(&v, &points, &markers, 600.0);
        let a = trips.iter().find(|t| t.trip_id.as_str() == "a").unwrap();
        assert_eq!(a.points.iter().map(|p| p.ts_ms / 1000).collect::<Vec<_>>(), vec![60, 90, 120, 150, 180]);
        assert_eq!(a.status, TripStatus::Completed);
        let b = trips.iter().find(|t| t.trip_id.as_str() == "b").unwrap();
        assert_eq!((b.points.len(), b.status), (10, TripStatus::Active), "open until the data ends");
        let cut: Vec<usize> =
            trips.iter().filter(|t| t.trip_id.as_str().starts_with('t')).map(|t| t.points.len()).collect();
        assert_eq!(cut, vec![2, 3], "before and after trip a: two trips of their own");
        assert_eq!(
            trips.iter().map(|t| t.points.len()).sum::<usize>(),
            points.len(),
            "every point in exactly one trip"
        );
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
