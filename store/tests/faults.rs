//! The store under faults of the real service: Cassandra stopped in the middle of a stream of
//! writes, then started again.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::process::Command;
use std::time::{Duration, Instant};

use tripline_model::{Point, TenantId, TripId, TripStatus, VehicleId};
use tripline_store::{
    ChangeFeed, Checkpoint, Derived, PointStore, ScyllaConfig, ScyllaStore, StoredPoint, TripRecord, TripStore,
};
use tripline_testkit::unique_name;

fn services_script() -> Option<String> {
    match std::env::var("TRIPLINE_SERVICES_SCRIPT") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => {
            let message = "TRIPLINE_SERVICES_SCRIPT is not set: run through scripts/test.sh";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("\n!!! SKIPPED: {message}\n");
            None
        }
    }
}

fn service(script: &str, action: &str) {
    let status = Command::new("bash").args([script, action, "cassandra"]).status().unwrap();
    assert!(status.success(), "services.sh {action} cassandra failed");
}

fn batch(n: i64) -> (Vec<StoredPoint>, TripRecord) {
    let vehicle = VehicleId::parse("fault-car").unwrap();
    let trip = TripId::parse("fault-trip").unwrap();
    let t0 = 1_795_600_800_000;
    let points = (n * 50..(n + 1) * 50)
        .map(|i| StoredPoint {
            vehicle_id: vehicle.clone(),
            trip_id: trip.clone(),
            point: Point {
                seq: Some(i as u64),
                ts_ms: t0 + i * 1000,
                lat: 52.0 + i as f64 * 1e-5,
                lon: 13.0,
                speed_mps: Some(12.0),
                heading_deg: None,
                accuracy_m: None,
                alt_m: None,
                ignition: Some(true),
                odometer_m: None,
            },
            derived: Derived::default(),
        })
        .collect();
    let at = |i: i64| tripline_model::time::to_datetime(t0 + i * 1000);
    let summary = tripline_model::TripSummary {
        trip_id: trip,
        vehicle_id: vehicle,
        status: TripStatus::Active,
        start_time: at(0),
        end_time: at((n + 1) * 50 - 1),
        duration_s: 0.0,
        moving_time_s: 0.0,
        idle_time_s: 0.0,
        distance_km: 0.0,
        max_speed_kmh: 0.0,
        avg_speed_kmh: 0.0,
        start: tripline_model::Place { lat: 52.0, lon: 13.0, region: None },
        end: tripline_model::Place { lat: 52.0, lon: 13.0, region: None },
        regions: Vec::new(),
        events: tripline_model::EventCounts::default(),
        speeding_s: 0.0,
        night_driving_s: 0.0,
        point_count: ((n + 1) * 50) as u64,
        rejected_point_count: 0,
        score: 100.0,
        score_version: 1,
        updated_at: at((n + 1) * 50 - 1),
    };
    (
        points,
        TripRecord {
            tenant: TenantId::parse("acme").unwrap(),
            summary,
            events: Vec::new(),
            cells: Vec::new(),
            dropped: Default::default(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_resume_after_cassandra_restarts_with_nothing_lost() {
    let Some(config) = tripline_testkit::cql_config(unique_name("faults"), 86_400) else { return };
    let Some(script) = services_script() else { return };
    let config = ScyllaConfig { request_timeout_ms: 2_000, retry_budget_ms: 180_000, ..config };
    ScyllaStore::apply_schema(&config).await.unwrap();
    let store = ScyllaStore::connect(&config).await.unwrap();

    const BATCHES: i64 = 60;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for n in 0..BATCHES {
                let (points, trip) = batch(n);
                let started = Instant::now();
                store.write_points(&points).await.unwrap();
                store.upsert_trips(&[trip]).await.unwrap();
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            slowest
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let script_stop = script.clone();
    tokio::task::spawn_blocking(move || service(&script_stop, "stop")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::spawn_blocking(move || service(&script, "start")).await.unwrap();

    let slowest = writer.await.expect("every write succeeded once Cassandra was back");
    assert!(slowest >= Duration::from_secs(4), "some write waited out the outage ({slowest:?})");
    let vehicle = VehicleId::parse("fault-car").unwrap();
    let stored = store.vehicle_points(&vehicle, 1_795_600_800_000, 1_795_600_800_000 + 86_400_000).await.unwrap();
    assert_eq!(stored.len() as i64, BATCHES * 50, "every point written is there, once");
    let trip =
        store.trip(&TenantId::parse("acme").unwrap(), &TripId::parse("fault-trip").unwrap()).await.unwrap().unwrap();
    assert_eq!(trip.summary.point_count as i64, BATCHES * 50);
    let mut checkpoint = Checkpoint::default();
    let mut announced = 0;
    loop {
        let batch = store.read_changes(&checkpoint, 100).await.unwrap();
        if batch.changes.is_empty() {
            break;
        }
        announced += batch.changes.len();
        checkpoint = batch.checkpoint;
    }
    assert!(announced as i64 >= BATCHES, "every upsert announced ({announced})");
    eprintln!("cassandra restart: slowest write waited {slowest:?}");
}
