//! Behaviour on simulated trips with known manoeuvres.

use tripline_enrich::sim::Leg;
use tripline_model::EventKind;

use crate::support::*;

fn accelerate(to_kmh: f64, rate_mps2: f64) -> Leg {
    Leg::Speed { to_kmh, rate_mps2 }
}

fn cruise(duration_s: f64) -> Leg {
    Leg::Cruise { duration_s }
}

fn count(points: Vec<tripline_model::Point>, kind: EventKind) -> u32 {
    report(points).summary.events.get(kind)
}

#[test]
fn harsh_braking_is_detected_above_threshold() {
    let legs = |rate| [accelerate(60.0, 2.0), cruise(10.0), accelerate(10.0, rate), cruise(10.0)];
    let dev = device(1.0, 1.0, true);
    assert_eq!(count(drive(&legs(4.5), &dev, 1), EventKind::HarshBraking), 1);
    assert_eq!(count(drive(&legs(2.0), &dev, 1), EventKind::HarshBraking), 0);
    let braking =
        report(drive(&legs(4.5), &dev, 1)).events.into_iter().find(|e| e.kind == EventKind::HarshBraking).unwrap();
    assert!((braking.value - 4.5).abs() < 0.6, "peak deceleration {}", braking.value);
    assert_eq!(braking.unit, "m/s2");
    assert!((2.0..=6.0).contains(&braking.duration_s), "50 km/h shed at 4.5 m/s² takes ~3 s: {}", braking.duration_s);
}

#[test]
fn harsh_acceleration_is_detected_above_threshold() {
    let legs = |rate| [accelerate(20.0, 1.5), cruise(5.0), accelerate(80.0, rate), cruise(10.0)];
    let dev = device(1.0, 1.0, true);
    assert_eq!(count(drive(&legs(3.8), &dev, 2), EventKind::HarshAcceleration), 1);
    assert_eq!(count(drive(&legs(2.2), &dev, 2), EventKind::HarshAcceleration), 0);
}

#[test]
fn harsh_cornering_is_detected_above_threshold() {
    let legs = |lateral| {
        [accelerate(50.0, 2.0), cruise(10.0), Leg::Turn { angle_deg: 90.0, lateral_mps2: lateral }, cruise(10.0)]
    };
    let dev = device(1.0, 1.0, true);
    assert_eq!(count(drive(&legs(5.5), &dev, 3), EventKind::HarshCornering), 1);
    assert_eq!(count(drive(&legs(2.0), &dev, 3), EventKind::HarshCornering), 0);
}

#[test]
fn no_harsh_events_below_the_minimum_speed() {
    // Parking-lot manoeuvres at 10 km/h with hard stops and tight turns.
    let legs = [accelerate(10.0, 3.5), Leg::Turn { angle_deg: 90.0, lateral_mps2: 6.0 }, accelerate(0.0, 3.5)];
    let summary = report(drive(&legs, &device(1.0, 0.5, true), 4)).summary;
    assert_eq!(summary.events.total(), 0);
}

#[test]
fn speeding_needs_the_minimum_duration() {
    let legs = |seconds| [accelerate(150.0, 2.5), cruise(seconds), accelerate(100.0, 2.0), cruise(30.0)];
    let dev = device(1.0, 1.0, true);
    let long = report(drive(&legs(30.0), &dev, 5)).summary;
    assert_eq!(long.events.speeding, 1);
    assert!((30.0..=45.0).contains(&long.speeding_s), "speeding_s {}", long.speeding_s);
    let short = report(drive(&legs(2.0), &dev, 5)).summary;
    assert_eq!(short.events.speeding, 0, "above 135 km/h for only a few seconds");
    assert_eq!(short.speeding_s, 0.0);
}

#[test]
fn stationary_jitter_adds_no_distance_and_no_events() {
    let legs = [Leg::Stop { duration_s: 900.0, ignition: true }];
    for reports_speed in [true, false] {
        let summary = report(drive(&legs, &device(1.0, 6.0, reports_speed), 6)).summary;
        assert!(summary.distance_km < 0.03, "jitter gave {} km (speed reported: {reports_speed})", summary.distance_km);
        assert_eq!(summary.events.total(), 0);
        assert!(summary.idle_time_s > 850.0);
        assert_eq!(summary.moving_time_s, 0.0);
    }
}

#[test]
fn derived_speed_follows_true_speed_at_1_5_and_15_second_sampling() {
    let legs = [accelerate(50.0, 2.0), cruise(300.0)];
    for interval_s in [1.0, 5.0, 15.0] {
        let mut trip = tripline_enrich::TripEngine::new(vehicle("car-1"), trip("t"));
        trip.add_points(drive(&legs, &device(interval_s, 3.0, false), 7));
        trip.refresh(&engine());
        let mut speeds: Vec<f64> = trip.enriched().iter().skip(5).map(|p| p.speed_mps * 3.6).collect();
        let median_kmh = median(&mut speeds);
        assert!((median_kmh - 50.0).abs() < 3.0, "{interval_s} s sampling: median derived speed {median_kmh} km/h");
    }
}

#[test]
fn a_gps_jump_is_dropped_and_changes_nothing_else() {
    let legs = [accelerate(50.0, 2.0), cruise(60.0), accelerate(0.0, 2.0)];
    let clean = drive(&legs, &device(1.0, 2.0, true), 8);
    let mut jumpy = clean.clone();
    jumpy[30].lat += 0.03; // ~3.3 km away for one sample
    let (a, b) = (report(clean).summary, report(jumpy).summary);
    assert_eq!(b.rejected_point_count, 1);
    assert_eq!(b.point_count + 1, a.point_count);
    assert!((a.distance_km - b.distance_km).abs() < 0.02);
    assert_eq!(a.events, b.events);
}

#[test]
fn a_multipath_fix_along_the_road_at_1_hz_is_no_harsh_event() {
    // At 1 Hz a fix 10 m ahead along the road is within what a 0.7 g manoeuvre begun after the
    // fix before it explains; the fix after it, back on the road's line, tells them apart.
    let legs = [accelerate(50.0, 2.0), cruise(60.0)];
    let clean = drive(&legs, &device(1.0, 0.5, false), 11);
    for ahead_m in [-10.0, 10.0, 12.0] {
        let mut outlier = clean.clone();
        let (before, after) = (&clean[29], &clean[31]);
        let (north, east) = (after.lat - before.lat, after.lon - before.lon);
        let scale = ahead_m / (north.hypot(east) * 111_195.0);
        outlier[30].lat += north * scale;
        outlier[30].lon += east * scale;
        let (a, b) = (report(clean.clone()).summary, report(outlier).summary);
        assert_eq!(b.events, a.events, "{ahead_m} m along the road");
        assert!(
            (a.distance_km - b.distance_km).abs() < 0.005,
            "{ahead_m} m: {} vs {} km",
            a.distance_km,
            b.distance_km
        );
    }
}

#[test]
fn a_bad_first_point_does_not_lose_the_trip() {
    let legs = [accelerate(50.0, 2.0), cruise(120.0)];
    let mut points = drive(&legs, &device(1.0, 2.0, true), 9);
    points[0].lat += 0.5;
    let summary = report(points.clone()).summary;
    assert!(summary.point_count as usize >= points.len() - 3, "kept {} of {}", summary.point_count, points.len());
}

#[test]
fn a_live_trip_updated_in_order_equals_a_full_recompute_and_late_points_recompute() {
    let legs = tripline_enrich::sim::everyday_legs(&mut tripline_enrich::sim::Rng::new(10), 8.0);
    let points = drive(&legs, &device(1.0, 3.0, true), 10);
    let eng = engine();
    let full = report(points.clone());
    let mut live = tripline_enrich::TripEngine::new(vehicle("car-1"), trip("trip-1"));
    for chunk in points.chunks(37) {
        let outcome = live.add_points(chunk.to_vec());
        assert!(!outcome.recompute);
        live.report(&eng, tripline_model::TripStatus::Active, Some(T0_MS));
    }
    let late = live.add_points([points[3].clone()]);
    assert_eq!(late.duplicates, 1);
    assert_eq!(live.report(&eng, tripline_model::TripStatus::Completed, Some(T0_MS)).unwrap(), full);

    let mut shifted = points[100].clone();
    shifted.ts_ms += 500;
    shifted.seq = Some(1_000_000);
    assert!(live.add_points([shifted]).recompute, "a point before the end restarts the pass");
}

#[test]
fn a_trip_opened_with_all_its_points_lets_their_memory_go_at_its_first_trim() {
    // Two hours at 1 Hz, as a trip reopened from the store holds them until its first write.
    let points = drive(&[accelerate(60.0, 1.5), cruise(7_200.0), accelerate(0.0, 1.5)], &device(1.0, 2.0, true), 3);
    let mut trip = tripline_enrich::TripEngine::new(vehicle("car-1"), trip("long"));
    trip.add_points(points.clone());
    let whole = trip.report(&engine(), tripline_model::TripStatus::Active, None).unwrap();
    let before = trip.held_bytes();
    trip.trim(trip.kept_count());
    let after = trip.held_bytes();
    assert!(before > 2_000_000, "all {} points held: {before} bytes", points.len());
    // What stays: the points a live trip holds, and 8-byte hashes of the last 16,384 trimmed.
    assert!(after < 400_000, "after the trim: {after} bytes");
    let trimmed = trip.report(&engine(), tripline_model::TripStatus::Active, None).unwrap();
    assert_eq!(trimmed, whole, "the trim changes nothing the trip reports");
}

#[test]
fn a_trip_that_starts_by_pulling_away_has_no_idle_time() {
    // The car is standing for less than the trip's first second; by the time its fixes have left
    // the stop's radius the halt had counted as idle, and refiling must take all of it back.
    let legs = [accelerate(50.0, 1.5), cruise(30.0), accelerate(0.0, 2.0)];
    for hz in [1.0, 5.0, 10.0] {
        for seed in 0..5 {
            let summary = report(drive(&legs, &device(1.0 / hz, 0.5, false), seed)).summary;
            assert_eq!(summary.idle_time_s, 0.0, "{hz} Hz, seed {seed}: {summary:?}");
        }
    }
}

#[test]
fn a_halt_between_sparse_fixes_is_placed_where_the_car_stopped_and_left() {
    // A fix every 5 s, positions only: a 40 s halt between two drives. The truth is the time
    // below 3 km/h: 40 s and 0.55 s of each slow end, 41.1 s; the fixes place either end to
    // within a second (before the stop and pull-away were placed by a model: 36.1 s).
    let legs = [
        accelerate(50.0, 1.5),
        cruise(30.0),
        accelerate(0.0, 1.5),
        Leg::Stop { duration_s: 40.0, ignition: true },
        accelerate(50.0, 1.5),
        cruise(30.0),
    ];
    for seed in 0..5 {
        let summary = report(drive(&legs, &device(5.0, 0.5, false), seed)).summary;
        let idle = summary.idle_time_s;
        assert!((40.1..=42.1).contains(&idle), "seed {seed}: idle {idle} s, truth 41.1 s");
    }
}
