//! What the pipeline's sweep after a restart reads: the open trips of a store holding many
//! completed ones, read from the list of open trips (`scan_open_trips`), against reading every
//! trip (`scan_trips`, what the sweep did before the list).
//!
//! `cargo bench -p tripline-store --bench sweep` (ScyllaDB too when `TRIPLINE_TEST_CQL_NODES` is
//! set, e.g. after `eval "$(scripts/services.sh env)"`). Prints the median of 3 passes of each;
//! the embedded store once as written (the completions' tombstones in the list) and once
//! compacted.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and fails loudly

use std::time::{Duration, Instant};

use tripline_model::TripStatus;
use tripline_store::{EmbeddedStore, Page, ScyllaStore, Store, StoreResult, TripRecord};

/// Trips open at the restart.
const OPEN: usize = 100;
/// Trips per write while filling the store.
const WRITE: usize = 500;
/// Trips per page read, as the sweep reads them.
const PAGE: usize = 500;
const PASSES: usize = 3;

async fn fill<S: Store>(store: &S, completed: usize) {
    let t0 = 1_795_600_800_000;
    let records: Vec<TripRecord> = (0..completed + OPEN)
        .map(|i| {
            let mut record = tripline_testkit::trip_record(
                "bench",
                &format!("car-{}", i % 1_000),
                &format!("t{i}"),
                t0 + i as i64 * 60_000,
                20,
                90.0,
            );
            record.summary.status = TripStatus::Active;
            record
        })
        .collect();
    // Each trip written open, then completed (but the last few), as a worker writes them: every
    // completion leaves a tombstone in the list.
    let writes = records.chunks(WRITE).map(|part| {
        let (store, mut part) = (store.clone(), part.to_vec());
        tokio::spawn(async move {
            store.upsert_trips(&part).await.unwrap();
            part.retain_mut(|t| {
                let n: usize = t.summary.trip_id.as_str()[1..].parse().unwrap();
                t.summary.status = TripStatus::Completed;
                n < completed
            });
            store.upsert_trips(&part).await.unwrap();
        })
    });
    for write in writes.collect::<Vec<_>>() {
        write.await.unwrap();
    }
}

/// Reads every page from `read`; returns the open trips found and the time taken.
async fn pass<F, Fut>(read: F) -> (usize, Duration)
where
    F: Fn(Option<String>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<Page<TripRecord>>>,
{
    let started = Instant::now();
    let (mut cursor, mut open) = (None, 0);
    loop {
        let page = read(cursor).await.unwrap();
        open += page.items.iter().filter(|t| t.summary.status == TripStatus::Active).count();
        match page.next {
            Some(next) => cursor = Some(next),
            None => return (open, started.elapsed()),
        }
    }
}

async fn measure<S: Store>(name: &str, store: &S, completed: usize) {
    let (mut all, mut listed) = (Vec::new(), Vec::new());
    for _ in 0..PASSES {
        let (open, took) = pass(|cursor| async move { store.scan_trips(cursor.as_deref(), PAGE).await }).await;
        assert_eq!(open, OPEN);
        all.push(took);
        let (open, took) = pass(|cursor| async move { store.scan_open_trips(cursor.as_deref(), PAGE).await }).await;
        assert_eq!(open, OPEN);
        listed.push(took);
    }
    all.sort();
    listed.sort();
    let (all, listed) = (all[PASSES / 2], listed[PASSES / 2]);
    println!(
        "{name:<9} {completed} completed + {OPEN} open trips: every trip {:>8.1} ms, the open list {:>6.1} ms ({:.0}x)",
        all.as_secs_f64() * 1e3,
        listed.as_secs_f64() * 1e3,
        all.as_secs_f64() / listed.as_secs_f64()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!("the sweep's reads after a restart, median of {PASSES} passes, pages of {PAGE}");
        let (embedded, _dir) = EmbeddedStore::for_test(Duration::from_secs(86_400)).unwrap();
        fill(&embedded, 200_000).await;
        measure("embedded", &embedded, 200_000).await;
        // Once compaction dropped the completions' tombstones.
        embedded.compact().await.unwrap();
        measure("compacted", &embedded, 200_000).await;
        if let Some(config) = tripline_testkit::cql_config(format!("sweep_{}", std::process::id()), 86_400) {
            ScyllaStore::apply_schema(&config).await.unwrap();
            let store = ScyllaStore::connect(&config).await.unwrap();
            fill(&store, 50_000).await;
            measure("cassandra", &store, 50_000).await;
            ScyllaStore::drop_keyspace(&config).await.unwrap();
        } else {
            println!("cassandra skipped: TRIPLINE_TEST_CQL_NODES is not set");
        }
    });
}
