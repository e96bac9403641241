//! Reindex rate: trips written into a temporary embedded store (and, with `TRIPLINE_CQL` set,
//! into Cassandra too), then rebuilt into a new index generation; prints trips/s.
//!
//! `cargo bench -p tripline-indexer --bench reindex` (env `TRIPLINE_BENCH_TRIPS`, default
//! 200,000).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and fails loudly

use std::time::Duration;

use tripline_index::IndexHome;
use tripline_store::{EmbeddedStore, ScyllaStore, Store, TripRecord};

const T0: i64 = 1_795_600_800_000;

fn trips(n: usize) -> Vec<TripRecord> {
    (0..n)
        .map(|i| {
            let tenant = format!("tenant-{}", i % 20);
            let vehicle = format!("car-{}", i % 5000);
            let mut trip = tripline_testkit::trip_record(
                &tenant,
                &vehicle,
                &format!("trip-{i}"),
                T0 + i as i64 * 1000,
                20,
                50.0 + (i % 50) as f64,
            );
            trip.cells = vec![format!("u33d{}{}", (b'b' + (i % 20) as u8) as char, (b'b' + (i % 7) as u8) as char)];
            trip
        })
        .collect()
}

async fn measure<S: Store>(name: &str, store: S, all: &[TripRecord]) {
    for chunk in all.chunks(500) {
        store.upsert_trips(chunk).await.unwrap();
    }
    let scratch = tripline_testkit::scratch_dir("reindex-bench");
    let dir = scratch.path().to_path_buf();
    let home = IndexHome::open(&dir).unwrap();
    let report = tripline_indexer::reindex(store, home, |_| {}).await.unwrap();
    assert_eq!(report.trips, all.len() as u64);
    println!(
        "{name}: reindexed {} trips in {:.2} s: {:.0} trips/s",
        report.trips,
        report.elapsed.as_secs_f64(),
        report.rate()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = std::env::var("TRIPLINE_BENCH_TRIPS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let all = trips(n);
    let (store, _dir) = EmbeddedStore::for_test(Duration::from_secs(86_400)).unwrap();
    measure("embedded", store, &all).await;
    if let Some(config) = tripline_testkit::cql_config(tripline_testkit::unique_name("rdxbench"), 86_400) {
        ScyllaStore::apply_schema(&config).await.unwrap();
        measure("cassandra", ScyllaStore::connect(&config).await.unwrap(), &all).await;
    }
}
