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
    foreign_cursors_are_refused,
    a_write_set_lands_whole_with_its_trips_announced,
    written_trips_are_handed_over_once_for_their_own_entry,
    redelivered_points_in_other_chunks_read_back_once,
    a_seal_cut_short_loses_and_duplicates_nothing,
    a_points_cursor_addresses_only_its_own_trip,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_retention_expires_records() {
    let (store, _dir) = backends::embedded(std::time::Duration::from_secs(2));
    suite::retention_expires_records(&store).await;
    assert!(store.purge_expired().await.unwrap() >= 3, "expired points, trip and rejection are purged");
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
