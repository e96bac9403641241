//! The two backends, each fresh per test: a temporary directory, or a keyspace of its own.

use std::time::Duration;

use tripline_store::{EmbeddedStore, ScyllaConfig, ScyllaStore};
use tripline_testkit::unique_name;

pub(crate) fn embedded(retention: Duration) -> (EmbeddedStore, tripline_store::TempDir) {
    EmbeddedStore::for_test(retention).unwrap()
}

pub(crate) struct ScyllaBackend {
    pub(crate) store: ScyllaStore,
    pub(crate) config: ScyllaConfig,
}

pub(crate) async fn scylla(retention: Duration) -> Option<ScyllaBackend> {
    let config = tripline_testkit::cql_config(unique_name("conf"), retention.as_secs())?;
    ScyllaStore::apply_schema(&config).await.unwrap();
    let store = ScyllaStore::connect(&config).await.unwrap();
    Some(ScyllaBackend { store, config })
}

impl ScyllaBackend {
    pub(crate) async fn second_handle(&self) -> ScyllaStore {
        ScyllaStore::connect(&self.config).await.unwrap()
    }

    /// A plain driver session on the backend's cluster, for statements the store never runs
    /// (a keyspace laid out as an earlier version left it).
    pub(crate) async fn session(&self) -> ::scylla::client::session::Session {
        let mut builder = ::scylla::client::session_builder::SessionBuilder::new().known_nodes(&self.config.nodes);
        if let Some((user, password)) = self.config.credentials().unwrap() {
            builder = builder.user(user, password);
        }
        builder.build().await.unwrap()
    }

    pub(crate) async fn drop_keyspace(&self) {
        ScyllaStore::drop_keyspace(&self.config).await.unwrap();
    }
}
