//! The indexer against the embedded store: follows the feed, replaces and removes documents,
//! resumes exactly after a crash, and keeps the index equal to the store.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // tests fail loudly and report measurements

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tripline_index::{IndexHome, LiveIndex, TripIndex, TripQuery};
use tripline_indexer::{Indexer, IndexerConfig, IndexerCounters, reindex};
use tripline_model::{TenantId, TripId, VehicleId};
use tripline_store::{EmbeddedStore, ScyllaStore, Store, TripRecord, TripStore};
use tripline_testkit::unique_name;

const T0: i64 = 1_795_600_800_000;

fn trip(tenant: &str, vehicle: &str, id: &str, score: f64) -> TripRecord {
    tripline_testkit::trip_record(tenant, vehicle, id, T0, 10, score)
}

struct Running {
    shutdown: watch::Sender<bool>,
    status: watch::Receiver<IndexerCounters>,
    task: tokio::task::JoinHandle<IndexerCounters>,
}

fn start<S: Store>(store: &S, index: &TripIndex) -> Running {
    start_live(store, LiveIndex::fixed(index.clone()))
}

fn start_live<S: Store>(store: &S, index: LiveIndex) -> Running {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (status_tx, status) = watch::channel(IndexerCounters::default());
    let indexer = Indexer::new(store.clone(), index, IndexerConfig::default());
    let task = tokio::spawn(async move { indexer.run(shutdown_rx, status_tx).await.unwrap() });
    Running { shutdown, status, task }
}

/// Every trip of a tenant as the index answers: id → score.
fn indexed(index: &TripIndex, tenant: &str) -> BTreeMap<String, f64> {
    let page =
        index.search(&TenantId::parse(tenant).unwrap(), &TripQuery { limit: 1000, ..TripQuery::default() }).unwrap();
    page.trips.iter().map(|t| (t.trip_id.to_string(), t.score)).collect()
}

async fn wait_until(index: &TripIndex, what: &str, done: impl Fn(&TripIndex) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(index) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store in a fresh keyspace of the test Cassandra (`None`: not configured, outside CI).
async fn cassandra(prefix: &str) -> Option<ScyllaStore> {
    let config = tripline_testkit::cql_config(unique_name(prefix), 3600)?;
    ScyllaStore::apply_schema(&config).await.unwrap();
    Some(ScyllaStore::connect(&config).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_the_embedded_store_and_resumes_exactly_after_a_crash() {
    let (store, dir) = EmbeddedStore::for_test(Duration::from_secs(3600)).unwrap();
    follows_and_resumes("embedded", store, &dir.path().join("index"), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_trips_written_in_this_process_without_reading_them_back() {
    let (store, dir) = EmbeddedStore::for_test(Duration::from_secs(3600)).unwrap();
    follows_and_resumes("embedded, kept writes", store, &dir.path().join("index"), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_cassandra_and_resumes_exactly_after_a_crash() {
    let Some(store) = cassandra("idx").await else { return };
    let scratch = tripline_testkit::scratch_dir("index");
    let dir = scratch.path().to_path_buf();
    // As `tripline run` with ingest and the indexer in one process.
    follows_and_resumes("cassandra, kept writes", store, &dir, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_this_process_wakes_the_indexer_before_its_poll() {
    let (store, _dir) = EmbeddedStore::for_test(Duration::from_secs(3600)).unwrap();
    woken_by_writes(store).await;
    let Some(store) = cassandra("wake").await else { return };
    // Served from memory, as in `tripline run` with ingest and the indexer.
    store.keep_written();
    woken_by_writes(store).await;
}

/// With a poll of an hour, only the store's signal can make the trips searchable in time.
async fn woken_by_writes<S: Store>(store: S) {
    let index = TripIndex::in_memory().unwrap();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (status_tx, _status) = watch::channel(IndexerCounters::default());
    let config = IndexerConfig { poll_interval_ms: 3_600_000, ..IndexerConfig::default() };
    let task =
        tokio::spawn(Indexer::new(store.clone(), LiveIndex::fixed(index.clone()), config).run(shutdown_rx, status_tx));
    // The follower's first read finds nothing, and it waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..3 {
        let id = format!("w{n}");
        store.upsert_trips(&[trip("acme", "car-w", &id, 50.0)]).await.unwrap();
        wait_until(&index, "a trip written while the follower waits", |i| indexed(i, "acme").contains_key(&id)).await;
    }
    shutdown.send(true).unwrap();
    task.await.unwrap().unwrap();
}

/// `keep`: the store keeps the trips it writes, and the indexer takes them from it.
async fn follows_and_resumes<S: Store>(name: &str, store: S, index_dir: &std::path::Path, keep: bool) {
    if keep {
        store.keep_written();
    }
    let index_dir = index_dir.to_path_buf();
    let index = TripIndex::open_or_create(&index_dir).unwrap();
    let running = start(&store, &index);

    store.upsert_trips(&[trip("acme", "car-1", "a1", 80.0), trip("globex", "car-9", "g1", 70.0)]).await.unwrap();
    wait_until(&index, "first trips", |i| indexed(i, "acme").len() == 1 && indexed(i, "globex").len() == 1).await;

    // An update replaces the document; a deletion removes it; each tenant sees only its own.
    store.upsert_trips(&[trip("acme", "car-1", "a1", 55.0), trip("acme", "car-1", "a2", 90.0)]).await.unwrap();
    store
        .delete_trip(
            &TenantId::parse("globex").unwrap(),
            &VehicleId::parse("car-9").unwrap(),
            &TripId::parse("g1").unwrap(),
        )
        .await
        .unwrap();
    wait_until(&index, "update and delete", |i| {
        indexed(i, "acme") == BTreeMap::from([("a1".to_owned(), 55.0), ("a2".to_owned(), 90.0)])
            && indexed(i, "globex").is_empty()
    })
    .await;

    // Freshness: from the store write to searchable.
    let mut samples = Vec::new();
    for n in 0..20 {
        let id = format!("f{n}");
        let written = Instant::now();
        store.upsert_trips(&[trip("acme", "car-2", &id, 60.0)]).await.unwrap();
        wait_until(&index, "fresh trip", |i| indexed(i, "acme").contains_key(&id)).await;
        samples.push(written.elapsed().as_millis());
    }
    samples.sort_unstable();
    let reused = running.status.borrow().reused;
    assert_eq!(reused > 0, keep, "trips taken as written: {reused}");
    println!(
        "{name}: freshness store write -> searchable: p50 {} ms, max {} ms (20 samples)",
        samples[10], samples[19]
    );

    // Crash: the task is aborted (no final commit) while changes keep coming.
    store.upsert_trips(&[trip("acme", "car-3", "c1", 40.0)]).await.unwrap();
    running.task.abort();
    let _ = running.task.await;
    drop(running.shutdown);
    drop(running.status);
    store.upsert_trips(&[trip("acme", "car-3", "c2", 41.0), trip("acme", "car-1", "a2", 91.0)]).await.unwrap();

    // Restart on the same files: the index ends equal to the store, with no duplicates.
    let index = TripIndex::open_or_create(&index_dir).unwrap();
    let running = start(&store, &index);
    let expected = stored(&store, "acme").await;
    wait_until(&index, "index equals store", |i| indexed(i, "acme") == expected).await;
    assert_eq!(index.document_count(), expected.len() as u64, "one document per trip");
    running.shutdown.send(true).unwrap();
    let counters = running.task.await.unwrap();
    assert!(counters.commits >= 1);
    assert_eq!(index.checkpoint().unwrap(), counters.committed, "the final checkpoint is committed");
}

/// Every trip of a tenant as the store has it: id → score.
/// An indexer started while another writer still holds the index (an indexer of this process
/// that was stopped, its last commit still running) waits for the lock instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexer_waits_for_a_writer_that_still_holds_the_index() {
    let (store, dir) = EmbeddedStore::for_test(Duration::from_secs(3600)).unwrap();
    let index = TripIndex::open_or_create(&dir.path().join("index")).unwrap();
    let held = index.live_writer().unwrap();
    store.upsert_trips(&[trip("acme", "car-1", "a1", 80.0)]).await.unwrap();
    let running = start(&store, &index);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!running.task.is_finished(), "the indexer gave up on the held lock");
    assert!(indexed(&index, "acme").is_empty());
    drop(held);
    wait_until(&index, "the trip indexed once the lock is free", |i| indexed(i, "acme").len() == 1).await;
    running.shutdown.send(true).unwrap();
    running.task.await.unwrap();
}

async fn stored<S: Store>(store: &S, tenant: &str) -> BTreeMap<String, f64> {
    let mut trips = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = store.scan_trips(cursor.as_deref(), 500).await.unwrap();
        for t in &page.items {
            if t.tenant.as_str() == tenant {
                trips.insert(t.summary.trip_id.to_string(), t.summary.score);
            }
        }
        cursor = page.next;
        if cursor.is_none() {
            return trips;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_the_embedded_store_switches_over_while_writes_continue() {
    let (store, dir) = EmbeddedStore::for_test(Duration::from_secs(3600)).unwrap();
    rebuild_while_writing("embedded", store, &dir.path().join("index"), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_on_cassandra_switches_over_while_writes_continue() {
    let Some(store) = cassandra("rdx").await else { return };
    let scratch = tripline_testkit::scratch_dir("index");
    let dir = scratch.path().to_path_buf();
    rebuild_while_writing("cassandra, kept writes", store, &dir, true).await;
}

/// An indexer runs on the index home; a rebuild runs while trips keep changing and a reader (as
/// the API in another process) keeps searching: the reader never sees an empty or partial
/// index, the indexer moves to the new generation, and the index ends equal to the store.
/// `keep` as for [`follows_and_resumes`].
async fn rebuild_while_writing<S: Store>(name: &str, store: S, index_dir: &std::path::Path, keep: bool) {
    if keep {
        store.keep_written();
    }
    let home = IndexHome::open(index_dir).unwrap();
    let live = LiveIndex::open(home.clone()).unwrap();
    let running = start_live(&store, live.clone());
    let first: Vec<TripRecord> = (0..300)
        .map(|n| trip(if n % 3 == 0 { "globex" } else { "acme" }, &format!("car-{}", n % 7), &format!("t{n}"), 50.0))
        .collect();
    for chunk in first.chunks(100) {
        store.upsert_trips(chunk).await.unwrap();
    }
    wait_until(&live.get(), "first trips", |i| i.document_count() == 300).await;

    // Writes go on during the rebuild: updates of existing trips and new ones.
    let (stop_writing, mut writing) = watch::channel(false);
    let writer_store = store.clone();
    let writes = tokio::spawn(async move {
        let mut n = 0u32;
        // At most 400 new trips: `indexed` reads one page of 1000.
        while !*writing.borrow_and_update() && n < 400 {
            let k = (n * 3 + 1) % 300;
            let updated = trip("acme", &format!("car-{}", k % 7), &format!("t{k}"), 60.0 + f64::from(n % 30));
            let new = trip("acme", "car-8", &format!("n{n}"), 70.0);
            writer_store.upsert_trips(&[updated, new]).await.unwrap();
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        n
    });
    let reader = LiveIndex::open(home.clone()).unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let rebuild = tokio::spawn(reindex(store.clone(), home.clone(), move |trips| {
        let _ = seen_tx.send(trips);
    }));
    while !rebuild.is_finished() {
        reader.refresh().unwrap();
        reader.get().reload().unwrap();
        assert!(reader.get().document_count() >= 300, "the API keeps answering from a complete index");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = rebuild.await.unwrap().unwrap();
    assert_eq!(report.generation, "gen-2");
    assert!(report.trips >= 300);
    assert_eq!(seen.try_iter().last(), Some(report.trips), "progress reaches the total");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_writing.send(true).unwrap();
    let updates = writes.await.unwrap();
    assert!(updates > 0);

    // The reader and the indexer move over; the index ends equal to the store, each trip once.
    reader.refresh().unwrap();
    assert_eq!(reader.generation(), "gen-2");
    let deadline = Instant::now() + Duration::from_secs(20);
    while live.generation() != "gen-2" {
        assert!(Instant::now() < deadline, "the indexer did not move to the rebuilt index");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for tenant in ["acme", "globex"] {
        let expected = stored(&store, tenant).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while indexed(&live.get(), tenant) != expected {
            if Instant::now() > deadline {
                let got = indexed(&live.get(), tenant);
                let missing: Vec<_> = expected.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
                let extra: Vec<_> = got.iter().filter(|(k, v)| expected.get(*k) != Some(v)).take(5).collect();
                panic!(
                    "{tenant}: index {} trips, store {}; store-only {missing:?}, index-only {extra:?}",
                    got.len(),
                    expected.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let total = stored(&store, "acme").await.len() + stored(&store, "globex").await.len();
    assert_eq!(live.get().document_count(), total as u64, "one document per trip");
    println!("{name}: rebuilt {} trips at {:.0} trips/s while {updates} write rounds ran", report.trips, report.rate());

    // A second rebuild replaces it; the generation before the previous one is removed.
    let again = reindex(store.clone(), home.clone(), |_| {}).await.unwrap();
    assert_eq!(again.generation, "gen-3");
    assert!(index_dir.join("gen-2").exists() && !index_dir.join("gen-1").exists());
    running.shutdown.send(true).unwrap();
    let counters = running.task.await.unwrap();
    assert_eq!(counters.reused > 0, keep, "trips taken as written: {}", counters.reused);
}
