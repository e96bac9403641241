//! The two backends, each fresh per test: a temporary directory, or a keyspace of its own.

use std::time::Duration;

use scylla::client::session_builder::SessionBuilder;
use tripline_store::{EmbeddedStore, ScyllaConfig, ScyllaStore};
use tripline_tests::{Service, unique_name};

pub(crate) fn embedded(retention: Duration) -> (EmbeddedStore, tripline_store::TempDir) {
    EmbeddedStore::for_test(retention).unwrap()
}

pub(crate) struct ScyllaBackend {
    pub(crate) store: ScyllaStore,
    pub(crate) config: ScyllaConfig,
}

pub(crate) async fn scylla(retention: Duration) -> Option<ScyllaBackend> {
    let nodes = Service::Cql.address()?;
    let config = ScyllaConfig {
        nodes: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
        keyspace: unique_name("conf"),
        retention_s: retention.as_secs(),
        ..ScyllaConfig::default()
    };
    ScyllaStore::apply_schema(&config).await.unwrap();
    let store = ScyllaStore::connect(&config).await.unwrap();
    Some(ScyllaBackend { store, config })
}

impl ScyllaBackend {
    pub(crate) async fn second_handle(&self) -> ScyllaStore {
        ScyllaStore::connect(&self.config).await.unwrap()
    }

    pub(crate) async fn drop_keyspace(&self) {
        let session = SessionBuilder::new().known_nodes(&self.config.nodes).build().await.unwrap();
        session.query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.config.keyspace), &[]).await.unwrap();
    }
}
