//! Properties that must hold for any trip: order independence, determinism, additivity.

use proptest::prelude::*;
use tripline_enrich::sim::{Leg, Rng, everyday_legs};
use tripline_enrich::{TripEngine, TripReport};
use tripline_model::{Point, TripStatus};

use crate::support::*;

/// A short everyday trip from `seed`, sampled every 1–6 s, with or without reported speed.
fn sim_trip(seed: u64, interval_s: f64, reports_speed: bool) -> Vec<Point> {
    let legs = everyday_legs(&mut Rng::new(seed), 3.0);
    drive(&legs, &device(interval_s, 4.0, reports_speed), seed)
}

fn shuffled(points: &[Point], seed: u64, duplicates: usize) -> Vec<Point> {
    let mut rng = Rng::new(seed);
    let mut out = points.to_vec();
    for _ in 0..duplicates {
        let i = (rng.next_u64() % points.len() as u64) as usize;
        out.push(points[i].clone());
    }
    for i in (1..out.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

fn report_chunks(points: Vec<Point>, chunk: usize) -> TripReport {
    let eng = engine();
    let mut trip = TripEngine::new(vehicle("car-1"), trip("trip-1"));
    for part in points.chunks(chunk.max(1)) {
        trip.add_points(part.to_vec());
        trip.report(&eng, TripStatus::Active, Some(T0_MS));
    }
    trip.report(&eng, TripStatus::Completed, Some(T0_MS)).unwrap()
}

proptest! {
    // 24 cases by default (each case simulates whole trips); PROPTEST_CASES raises it for a soak.
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24), ..ProptestConfig::default() })]

    #[test]
    fn any_arrival_order_with_duplicates_gives_the_same_summary(
        seed in 0u64..10_000, interval in 1u32..7, speed in any::<bool>(), dups in 0usize..40, chunk in 1usize..80,
    ) {
        let points = sim_trip(seed, f64::from(interval), speed);
        let expected = report(points.clone());
        let arrival = shuffled(&points, seed ^ 0x5eed, dups);
        prop_assert_eq!(report_chunks(arrival, chunk), expected);
    }

    #[test]
    fn a_trip_trimmed_as_it_goes_reports_what_a_full_pass_reports(
        seed in 0u64..10_000, interval in 1u32..7, speed in any::<bool>(), chunk in 1usize..40, dups in 0usize..20,
    ) {
        let points = sim_trip(seed, f64::from(interval), speed);
        let expected = report(points.clone());
        let eng = engine();
        let mut trip = TripEngine::new(vehicle("car-1"), trip("trip-1"));
        // In time order with redeliveries of earlier points mixed in, trimmed after every chunk
        // (as the worker does once a chunk is durable).
        let mut rng = Rng::new(seed ^ 0xd0b);
        for (n, part) in points.chunks(chunk).enumerate() {
            let mut part = part.to_vec();
            for _ in 0..dups.min(n) {
                part.push(points[(rng.next_u64() % (n * chunk) as u64) as usize].clone());
            }
            let outcome = trip.add_points(part);
            prop_assert!(!trip.needs_history(), "redelivered points are recognised: {outcome:?}");
            trip.report(&eng, TripStatus::Active, Some(T0_MS));
            trip.trim(trip.kept_count());
        }
        prop_assert!(trip.points().len() <= 2 * 64 + chunk + 2 * 10, "{} points held", trip.points().len());
        prop_assert_eq!(trip.report(&eng, TripStatus::Completed, Some(T0_MS)).unwrap(), expected);
    }

    #[test]
    fn enrichment_is_deterministic(seed in 0u64..10_000) {
        let points = sim_trip(seed, 1.0, true);
        prop_assert_eq!(report(points.clone()), report(points));
    }

    #[test]
    fn distance_is_non_negative_and_additive_over_splits(seed in 0u64..10_000, split in 0.1f64..0.9) {
        // Always moving, speed reported: every hop counts, so the parts add up exactly.
        let legs = [Leg::Speed { to_kmh: 40.0, rate_mps2: 2.0 }, Leg::Cruise { duration_s: 60.0 },
                    Leg::Turn { angle_deg: 70.0, lateral_mps2: 1.5 }, Leg::Cruise { duration_s: 60.0 }];
        let points: Vec<Point> = drive(&legs, &device(1.0, 2.0, true), seed).into_iter().filter(|p| p.speed_mps > Some(1.0)).collect();
        let k = ((points.len() as f64) * split) as usize;
        // Outliers are judged against their neighbours, which a split changes: this property is
        // about the hops, so the check is off (2 m of white noise at 1 Hz trips it now and then).
        let eng = tripline_enrich::Enricher::new(
            tripline_enrich::EnrichConfig { outlier_margin_m: 1e6, ..Default::default() },
            tripline_enrich::Regions::empty(),
        )
        .unwrap();
        let distance = |pts: &[Point]| {
            let mut t = TripEngine::new(vehicle("car-1"), trip("trip-1"));
            t.add_points(pts.to_vec());
            t.refresh(&eng);
            assert!(t.enriched().iter().all(|p| p.distance_m >= 0.0));
            t.enriched().iter().map(|p| p.distance_m).sum::<f64>()
        };
        let whole = distance(&points);
        let parts = distance(&points[..=k]) + distance(&points[k..]);
        prop_assert!(whole >= 0.0);
        prop_assert!((whole - parts).abs() < 1e-6, "whole {} vs parts {}", whole, parts);
    }

    #[test]
    fn a_stationary_trip_with_jitter_has_no_distance_and_no_events(seed in 0u64..10_000, noise in 1.0f64..8.0, speed in any::<bool>()) {
        let points = drive(&[Leg::Stop { duration_s: 300.0, ignition: true }], &device(1.0, noise, speed), seed);
        let summary = report(points).summary;
        prop_assert!(summary.distance_km < 0.05, "{} km", summary.distance_km);
        prop_assert_eq!(summary.events.total(), 0);
    }

    #[test]
    fn events_never_come_from_dropped_points(seed in 0u64..10_000, spikes in proptest::collection::vec((0.05f64..0.95, 0.02f64..0.5), 1..4)) {
        let points = sim_trip(seed, 1.0, true);
        let mut spiked = points.clone();
        let mut indices: Vec<usize> = spikes.iter().map(|(at, _)| (at * points.len() as f64) as usize).collect();
        indices.sort_unstable();
        indices.dedup_by(|a, b| a.abs_diff(*b) < 3);
        for (&i, (_, offset)) in indices.iter().zip(&spikes) {
            spiked[i].lat += offset;
        }
        let with_spikes = report(spiked);
        let without: Vec<Point> = points.iter().enumerate().filter(|(i, _)| !indices.contains(i)).map(|(_, p)| p.clone()).collect();
        let expected = report(without);
        prop_assert_eq!(with_spikes.summary.rejected_point_count as usize, indices.len());
        prop_assert_eq!(&with_spikes.events, &expected.events);
        prop_assert_eq!(with_spikes.summary.distance_km, expected.summary.distance_km);
        prop_assert_eq!(with_spikes.summary.point_count, expected.summary.point_count);
        for event in &with_spikes.events {
            let from_spike = indices.iter().any(|&i| event.ts.timestamp_millis() == points[i].ts_ms);
            prop_assert!(!from_spike, "event {:?} starts at a dropped point", event);
        }
    }
}

/// A drive of `n` fixes at 1 Hz (about 15 m apart) where every other fix is 100 km off: each
/// wild fix is an implausible jump, and the next good one carries on (`n / 2` jumps).
fn half_wild(n: usize) -> Vec<Point> {
    (0..n)
        .map(|i| {
            let lat = 51.0 + i as f64 * 0.000_135;
            let lon = if i % 2 == 1 { 9.0 } else { 7.6 };
            Point::new(T0_MS + i as i64 * 1000, lat, lon)
        })
        .collect()
}

#[test]
fn a_trip_of_wild_fixes_holds_a_bounded_number_of_jumps_and_counts_every_one() {
    let points = half_wild(6_000);
    let expected = report(points.clone());
    assert_eq!(expected.summary.rejected_point_count, 3_000, "every wild fix is a dropped point");
    // Live, as the worker goes: chunks, a report, a trim once durable.
    let eng = engine();
    let mut live = TripEngine::new(vehicle("car-1"), trip("trip-1"));
    for part in points.chunks(100) {
        live.add_points(part.to_vec());
        live.report(&eng, TripStatus::Active, Some(T0_MS));
        live.trim(live.kept_count());
    }
    assert_eq!(live.jumps().len(), tripline_enrich::MAX_STORED_JUMPS, "the jumps held are bounded");
    assert!(live.points().len() <= 2 * 64 + 100 + 20, "{} points held", live.points().len());
    assert_eq!(live.jump_count(), 3_000);
    assert_eq!(live.report(&eng, TripStatus::Completed, Some(T0_MS)).unwrap(), expected);
    // What the record keeps: the first jumps whole, the rest counted.
    let dropped = live.dropped();
    assert_eq!((dropped.jumps.len(), dropped.jumps_beyond), (1_024, 3_000 - 1_024));
    // Reopened from the store (its kept points and the record), and rebuilt after a late point
    // among points let go: still every jump counted once.
    let mut full = TripEngine::new(vehicle("car-1"), trip("trip-1"));
    full.add_points(points.clone());
    full.refresh(&eng);
    let stored: Vec<Point> = full.enriched().iter().map(|p| p.point.clone()).collect();
    let mut reopened = TripEngine::new(vehicle("car-1"), trip("trip-1"));
    reopened.add_points(stored.clone());
    reopened.restore_dropped(dropped);
    assert_eq!(reopened.report(&eng, TripStatus::Completed, Some(T0_MS)).unwrap(), expected);
    live.add_points(vec![points[10].clone()]);
    live.add_points(vec![Point::new(T0_MS + 20_500, 51.0 + 20.5 * 0.000_135, 7.6)]);
    assert!(live.needs_history());
    live.rebuild(stored);
    let rebuilt = live.report(&eng, TripStatus::Completed, Some(T0_MS)).unwrap();
    assert_eq!(rebuilt.summary.rejected_point_count, 3_000);
    assert_eq!(rebuilt.summary.point_count, expected.summary.point_count + 1);
}
