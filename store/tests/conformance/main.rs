//! One conformance suite, the same test functions, run against both store backends.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod backends;
mod suite;

/// Declares every suite function as a test against each backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = crate::backends::embedded(std::time::Duration::from_secs(3600));
                    crate::suite::$name(&store).await;
                }
            )*
        }
        mod scylla {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = crate::backends::scylla(std::time::Duration::from_secs(3600)).await else { return };
                    crate::suite::$name(&backend.store).await;
                    backend.drop_keyspace().await;
                }
            )*
        }
    };
}

conformance!(
    rewrites_are_idempotent,
    points_round_trip_in_time_order_across_days,
    another_tenant_sees_nothing,
    cursors_return_every_row_exactly_once,
    change_feed_resumes_exactly_from_a_checkpoint,
    concurrent_writers_lose_nothing,
    registry_rules_hold,
    deleted_trips_are_gone_and_announced,
    open_trips_are_listed_until_completed_or_deleted,
    foreign_cursors_are_refused,
    a_write_set_lands_whole_with_its_trips_announced,
    written_trips_are_handed_over_once_for_their_own_entry,
    redelivered_points_in_other_chunks_read_back_once,
    a_seal_cut_short_loses_and_duplicates_nothing,
    a_points_cursor_addresses_only_its_own_trip,
    a_webhook_keeps_its_outbox_cursor_and_attempts,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_retention_expires_records() {
    let (store, _dir) = backends::embedded(std::time::Duration::from_secs(2));
    suite::retention_expires_records(&store).await;
    assert!(store.purge_expired().await.unwrap() >= 3, "expired points, trip and rejection are purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_feed_entries_older_than_the_feed_keeps_are_purged() {
    use tripline_store::{ChangeFeed, Checkpoint, TripStore};
    let (store, _dir) = backends::embedded(std::time::Duration::from_secs(30 * 86_400));
    let trip = tripline_testkit::trip_record("acme", "car-1", "t1", 1_795_564_740_000, 3, 80.0);
    store.upsert_trips(std::slice::from_ref(&trip)).await.unwrap();
    store.upsert_trips(&[trip]).await.unwrap();
    let now = tripline_model::time::now_ms();
    store.purge_expired_at(now).await.unwrap();
    assert_eq!(store.read_changes(&Checkpoint::default(), 10).await.unwrap().changes.len(), 2, "young entries stay");
    let later = now + (tripline_store::FEED_RETENTION_S as i64 + 1) * 1000;
    // The old entries go but the last (a reopened store numbers on from it); not the 30-day trip.
    assert_eq!(store.purge_expired_at(later).await.unwrap(), 1);
    let left = store.read_changes(&Checkpoint::default(), 10).await.unwrap();
    assert_eq!((left.changes.len(), left.checkpoint.position("embedded")), (1, 2));
    assert!(
        store
            .trip(&tripline_model::TenantId::parse("acme").unwrap(), &left.changes[0].trip_id)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rejections_expire_after_their_own_retention() {
    use tripline_store::{EmbeddedConfig, EmbeddedStore};
    let dir = tripline_store::TempDir::new().unwrap();
    let config = EmbeddedConfig { path: dir.path().to_path_buf(), retention_s: 3600, rejection_retention_s: 2 };
    suite::rejections_expire_after_their_own_retention(&EmbeddedStore::open(&config).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_rejections_expire_after_their_own_retention() {
    let Some(config) = tripline_testkit::cql_config(tripline_testkit::unique_name("rejret"), 3600) else { return };
    let config = tripline_store::ScyllaConfig { rejection_retention_s: 2, ..config };
    tripline_store::ScyllaStore::apply_schema(&config).await.unwrap();
    let store = tripline_store::ScyllaStore::connect(&config).await.unwrap();
    suite::rejections_expire_after_their_own_retention(&store).await;
    tripline_store::ScyllaStore::drop_keyspace(&config).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_retention_expires_records() {
    let Some(backend) = backends::scylla(std::time::Duration::from_secs(2)).await else { return };
    suite::retention_expires_records(&backend.store).await;
    backend.drop_keyspace().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_feed_merges_several_writers() {
    let Some(backend) = backends::scylla(std::time::Duration::from_secs(3600)).await else { return };
    let second = backend.second_handle().await;
    suite::several_writers_are_merged(&backend.store, &second).await;
    backend.drop_keyspace().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_schema_apply_is_idempotent() {
    let Some(backend) = backends::scylla(std::time::Duration::from_secs(3600)).await else { return };
    assert_eq!(
        tripline_store::ScyllaStore::apply_schema(&backend.config).await.unwrap(),
        tripline_store::SCHEMA_VERSION
    );
    backend.drop_keyspace().await;
}

/// A keyspace written by schema 1 (one row per point) reads the same after `schema apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_schema_apply_moves_point_rows_to_chunks() {
    use tripline_store::{PointStore, ScyllaStore};

    let Some(backend) = backends::scylla(std::time::Duration::from_secs(3600)).await else { return };
    let ks = &backend.config.keyspace;
    let session = backend.session().await;
    // Schema 1's tables and rows, as its code wrote them.
    session.query_unpaged(format!("DROP TABLE {ks}.trips"), &[]).await.unwrap();
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {ks}.trips (tenant text, trip_id text, vehicle_id text, record text, updated_at bigint, \
                 PRIMARY KEY ((tenant, trip_id), vehicle_id))"
            ),
            &[],
        )
        .await
        .unwrap();
    let old_trip = serde_json::json!({
        "tenant": "acme",
        "summary": serde_json::from_str::<serde_json::Value>(include_str!("schema1_summary.json")).unwrap(),
        "events": [],
        "cells": ["u33dc0"]
    });
    session
        .query_unpaged(
            format!("INSERT INTO {ks}.trips (tenant, trip_id, vehicle_id, record, updated_at) VALUES ('acme', 'tm', 'car-m', ?, 0)"),
            (old_trip.to_string(),),
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {ks}.points (vehicle_id text, day int, ts bigint, seq_key bigint, trip_id text, seq bigint, \
                 lat double, lon double, speed_mps double, heading_deg double, accuracy_m double, alt_m double, \
                 ignition boolean, odometer_m double, derived blob, PRIMARY KEY ((vehicle_id, day), ts, seq_key))"
            ),
            &[],
        )
        .await
        .unwrap();
    let insert = session
        .prepare(format!(
            "INSERT INTO {ks}.points (vehicle_id, day, ts, seq_key, trip_id, seq, lat, lon, speed_mps, derived) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .await
        .unwrap();
    let t0: i64 = 1_795_564_740_000; // a minute before midnight: two partitions
    let derived = tripline_store::Derived { distance_m: 2.5, speed_mps: 9.0, moving: true, ..Default::default() };
    let blob = postcard::to_stdvec(&derived).unwrap();
    for i in 0..120i64 {
        let ts = t0 + i * 1000;
        let values =
            ("car-m", tripline_store::day_of(ts), ts, i, "tm", i, 52.5, 13.4 + i as f64 / 1e5, 9.0, blob.clone());
        session.execute_unpaged(&insert, values).await.unwrap();
    }
    assert_eq!(ScyllaStore::apply_schema(&backend.config).await.unwrap(), tripline_store::SCHEMA_VERSION);
    let vehicle = tripline_model::VehicleId::parse("car-m").unwrap();
    let points = backend.store.vehicle_points(&vehicle, t0, t0 + 120_000).await.unwrap();
    assert_eq!(points.len(), 120);
    assert!(points.iter().enumerate().all(|(i, p)| p.point.seq == Some(i as u64) && p.derived == derived));
    assert_eq!(points[119].point.lon, 13.4 + 119.0 / 1e5);
    use tripline_store::TripStore;
    let acme = tripline_model::TenantId::parse("acme").unwrap();
    let tm = tripline_model::TripId::parse("tm").unwrap();
    let old = backend.store.trip(&acme, &tm).await.unwrap().expect("a schema-1 trip reads");
    assert_eq!(old.summary.distance_km, 18.42);
    let page = backend.store.trip_points(&acme, &tm, None, 50).await.unwrap().unwrap();
    assert_eq!(page.items.len(), 50);
    backend.store.upsert_trips(std::slice::from_ref(&old)).await.unwrap();
    assert_eq!(backend.store.trip(&acme, &tm).await.unwrap(), Some(old), "rewritten in the binary encoding");
    let tables = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'points'",
            (ks.as_str(),),
        )
        .await
        .unwrap();
    assert_eq!(tables.into_rows_result().unwrap().rows_num(), 0, "the old table is gone");
    assert_eq!(ScyllaStore::apply_schema(&backend.config).await.unwrap(), tripline_store::SCHEMA_VERSION);
    backend.drop_keyspace().await;
}

/// Trips written before the list of open trips existed.
fn trips_of_before() -> Vec<tripline_store::TripRecord> {
    let mut trips: Vec<_> = (0..3)
        .map(|i| {
            tripline_testkit::trip_record("acme", &format!("car-{i}"), &format!("t{i}"), 1_795_564_740_000, 3, 80.0)
        })
        .collect();
    for trip in &mut trips {
        trip.summary.status = tripline_model::TripStatus::Active;
    }
    trips[2].summary.status = tripline_model::TripStatus::Completed;
    trips
}

/// An embedded store written before the list of open trips existed lists its open trips when
/// first opened by this version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_open_trips_of_a_store_from_before_the_list_are_listed_on_open() {
    use tripline_store::{EmbeddedConfig, EmbeddedStore, TripStore};
    let (store, dir) = backends::embedded(std::time::Duration::from_secs(3600));
    store.upsert_trips(&trips_of_before()).await.unwrap();
    drop(store);
    {
        // The store as an earlier version left it: no list.
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let list = db.keyspace("open_trips", fjall::KeyspaceCreateOptions::default).unwrap();
        db.delete_keyspace(list).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let config = EmbeddedConfig { path: dir.path().to_path_buf(), retention_s: 3600, ..EmbeddedConfig::default() };
    let store = EmbeddedStore::open(&config).unwrap();
    assert_eq!(suite::open_trip_ids(&store, 10).await, ["t0", "t1"]);
    store
        .upsert_trips(
            &trips_of_before()[..1]
                .iter()
                .cloned()
                .map(|mut t| {
                    t.summary.status = tripline_model::TripStatus::Completed;
                    t
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    drop(store);
    let store = EmbeddedStore::open(&config).unwrap();
    assert_eq!(suite::open_trip_ids(&store, 10).await, ["t1"], "a later open keeps the list as written");
}

/// A keyspace of schema 4 (no list of open trips) has its open trips listed by `schema apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_schema_apply_lists_the_open_trips_of_a_keyspace_from_before_the_list() {
    use tripline_store::{ScyllaStore, TripStore};

    let Some(backend) = backends::scylla(std::time::Duration::from_secs(3600)).await else { return };
    backend.store.upsert_trips(&trips_of_before()).await.unwrap();
    let ks = &backend.config.keyspace;
    let session = backend.session().await;
    // The keyspace as schema 4 left it: no list, version 4.
    session.query_unpaged(format!("DROP TABLE {ks}.open_trips"), &[]).await.unwrap();
    session.query_unpaged(format!("UPDATE {ks}.schema_version SET version = 4 WHERE id = 0"), &[]).await.unwrap();
    assert_eq!(ScyllaStore::apply_schema(&backend.config).await.unwrap(), tripline_store::SCHEMA_VERSION);
    let store = ScyllaStore::connect(&backend.config).await.unwrap();
    assert_eq!(suite::open_trip_ids(&store, 10).await, ["t0", "t1"]);
    let version = session
        .query_unpaged(format!("SELECT version FROM {ks}.schema_version WHERE id = 0"), &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .first_row::<(i32,)>()
        .unwrap();
    assert_eq!(version, (tripline_store::SCHEMA_VERSION,));
    backend.drop_keyspace().await;
}
