//! Store-only write throughput: the ceiling the whole pipeline is compared against.
//!
//! `cargo bench -p tripline-store --bench write` (ScyllaDB too when `TRIPLINE_TEST_CQL_NODES` is
//! set, e.g. after `eval "$(scripts/services.sh env)"`).
//!
//! A write is one message's worth of work for 100 vehicles: 10 points each (1,000 points in one
//! `write_points` call) plus the 100 trip summaries (one `upsert_trips` call). Several writes run
//! concurrently, as the ingest workers would. Prints the median of 5 runs in points per second.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and fails loudly

use std::time::{Duration, Instant};

use tripline_model::{EventCounts, Place, Point, TenantId, TripId, TripStatus, TripSummary, VehicleId};
use tripline_store::{Derived, EmbeddedStore, ScyllaStore, Store, StoredPoint, TripRecord};

const VEHICLES: usize = 100;
const POINTS_PER_VEHICLE: usize = 10;
const WRITES_PER_RUN: usize = 60;
const CONCURRENT_WRITES: usize = 4;
const RUNS: usize = 5;

fn write_batch(run: usize, n: usize) -> (Vec<StoredPoint>, Vec<TripRecord>) {
    let t0 = 1_795_600_800_000 + (run * WRITES_PER_RUN + n) as i64 * POINTS_PER_VEHICLE as i64 * 1000;
    let mut points = Vec::with_capacity(VEHICLES * POINTS_PER_VEHICLE);
    let mut trips = Vec::with_capacity(VEHICLES);
    for v in 0..VEHICLES {
        let vehicle = VehicleId::parse(&format!("bench-{v}")).unwrap();
        let trip = TripId::parse(&format!("bench-trip-{v}")).unwrap();
        for i in 0..POINTS_PER_VEHICLE {
            let ts_ms = t0 + i as i64 * 1000;
            points.push(StoredPoint {
                vehicle_id: vehicle.clone(),
                trip_id: trip.clone(),
                point: Point {
                    seq: Some(ts_ms as u64 / 1000),
                    ts_ms,
                    lat: 52.5 + v as f64 * 1e-3 + i as f64 * 1e-5,
                    lon: 13.4,
                    speed_mps: Some(13.9),
                    heading_deg: Some(90.0),
                    accuracy_m: Some(4.0),
                    alt_m: None,
                    ignition: Some(true),
                    odometer_m: None,
                },
                derived: Derived {
                    distance_m: 13.9,
                    speed_mps: 13.9,
                    heading_deg: Some(90.0),
                    accel_mps2: Some(0.1),
                    moving: true,
                    ..Derived::default()
                },
            });
        }
        let at = tripline_model::time::to_datetime(t0);
        trips.push(TripRecord {
            tenant: TenantId::parse("bench").unwrap(),
            summary: TripSummary {
                trip_id: trip,
                vehicle_id: vehicle,
                status: TripStatus::Active,
                start_time: at,
                end_time: at,
                duration_s: 0.0,
                moving_time_s: 0.0,
                idle_time_s: 0.0,
                distance_km: 1.0,
                max_speed_kmh: 50.0,
                avg_speed_kmh: 40.0,
                start: Place { lat: 52.5, lon: 13.4, region: None },
                end: Place { lat: 52.5, lon: 13.4, region: None },
                regions: Vec::new(),
                events: EventCounts::default(),
                speeding_s: 0.0,
                night_driving_s: 0.0,
                point_count: 10,
                rejected_point_count: 0,
                score: 100.0,
                score_version: 1,
                updated_at: at,
            },
            events: Vec::new(),
            cells: Vec::new(),
            dropped: Default::default(),
        });
    }
    (points, trips)
}

async fn measure<S: Store>(name: &str, store: &S) {
    let mut rates = Vec::new();
    for run in 0..RUNS {
        let batches: Vec<_> = (0..WRITES_PER_RUN).map(|n| write_batch(run, n)).collect();
        let started = Instant::now();
        let mut pending = batches.into_iter();
        loop {
            let wave: Vec<_> = pending.by_ref().take(CONCURRENT_WRITES).collect();
            if wave.is_empty() {
                break;
            }
            let writes = wave.into_iter().map(|(points, trips)| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.write_points(&points).await.unwrap();
                    store.upsert_trips(&trips).await.unwrap();
                })
            });
            for write in writes.collect::<Vec<_>>() {
                write.await.unwrap();
            }
        }
        let elapsed = started.elapsed();
        rates.push((WRITES_PER_RUN * VEHICLES * POINTS_PER_VEHICLE) as f64 / elapsed.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[RUNS / 2];
    println!(
        "{name:<9} points/s median {median:>9.0}  (runs: {})",
        rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ")
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!(
            "store-only writes: {WRITES_PER_RUN} writes of {VEHICLES} vehicles x {POINTS_PER_VEHICLE} points (+{VEHICLES} trips), {CONCURRENT_WRITES} concurrent, median of {RUNS} runs"
        );
        let (embedded, _dir) = EmbeddedStore::for_test(Duration::from_secs(86_400)).unwrap();
        measure("embedded", &embedded).await;
        if let Some(config) = tripline_testkit::cql_config(format!("bench_{}", std::process::id()), 86_400) {
            ScyllaStore::apply_schema(&config).await.unwrap();
            let store = ScyllaStore::connect(&config).await.unwrap();
            measure("cassandra", &store).await;
        } else {
            println!("cassandra skipped: TRIPLINE_TEST_CQL_NODES is not set");
        }
    });
}
