//! The enrichment engine alone: points per second on realistic simulated trips, by sampling rate.

#![allow(clippy::unwrap_used)] // a benchmark fails loudly on bad setup
//!
//! `cargo bench -p tripline-enrich --bench engine`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tripline_enrich::sim::{Device, Receiver, Rng, Start, Track, everyday_legs};
use tripline_enrich::{EnrichConfig, Enricher, Regions, TripEngine};
use tripline_model::{Point, TripId, TripStatus, VehicleId};

const REGIONS: &str = include_str!("../../fixtures/regions.geojson");

/// A 30-minute everyday drive through Hamm (10 minutes at 10 and 20 Hz: the same number of points
/// order), sampled at `hz` by a consumer receiver.
fn trip(hz: f64, reports_speed: bool) -> Vec<Point> {
    let minutes = if hz > 5.0 { 10.0 } else { 30.0 };
    let legs = everyday_legs(&mut Rng::new(2026), minutes);
    let start = Start { lat: 51.67, lon: 7.80, heading_deg: 30.0, ts_ms: 1_795_600_800_000 };
    let device = Device {
        interval_s: 1.0 / hz,
        gps_noise_m: 0.1,
        reports_speed,
        reports_heading: reports_speed,
        first_seq: Some(1),
    };
    Track::drive(start, &legs, 0.01).sample(&device, &Receiver::consumer(4.0), 2026)
}

fn enrich_all(engine: &Enricher, points: Vec<Point>) -> f64 {
    let mut trip = TripEngine::new(VehicleId::parse("bench").unwrap(), TripId::parse("bench").unwrap());
    trip.add_points(points);
    trip.report(engine, TripStatus::Completed, None).map_or(0.0, |r| r.summary.distance_km)
}

fn bench(c: &mut Criterion) {
    let engine = Enricher::new(EnrichConfig::default(), Regions::from_geojson(REGIONS).unwrap()).unwrap();
    let mut group = c.benchmark_group("enrich");
    for hz in [1.0, 10.0, 20.0] {
        for (what, reports_speed) in [("reported_speed", true), ("derived_speed", false)] {
            let points = trip(hz, reports_speed);
            group.throughput(Throughput::Elements(points.len() as u64));
            group.bench_function(format!("full_trip_{hz}hz_{what}"), |b| {
                b.iter_batched(|| points.clone(), |p| black_box(enrich_all(&engine, p)), BatchSize::SmallInput)
            });
        }
    }
    let points = trip(1.0, true);
    group.throughput(Throughput::Elements(points.len() as u64));
    group.bench_function("live_trip_10_point_messages", |b| {
        b.iter_batched(
            || points.clone(),
            |p| {
                let mut trip = TripEngine::new(VehicleId::parse("bench").unwrap(), TripId::parse("bench").unwrap());
                for chunk in p.chunks(10) {
                    trip.add_points(chunk.iter().cloned());
                    black_box(trip.report(&engine, TripStatus::Active, None));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
