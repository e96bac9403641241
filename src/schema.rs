//! `tripline schema apply`: create or migrate the ScyllaDB keyspace and tables.

use anyhow::Context;
use tripline_store::ScyllaStore;

use crate::config::{Config, StoreKind};
use crate::{Failure, runtime};

pub(crate) fn apply(config: &Config) -> Result<(), Failure> {
    if config.store == StoreKind::Embedded {
        eprintln!("tripline: the embedded store needs no schema (store = \"embedded\"); nothing to do");
        return Ok(());
    }
    let scylla = config.scylla();
    let version = runtime()?
        .block_on(ScyllaStore::apply_schema(&scylla))
        .with_context(|| format!("schema apply on {}", scylla.nodes.join(",")))?;
    eprintln!(
        "tripline: keyspace {} at schema version {version} (replication factor {})",
        scylla.keyspace, scylla.replication_factor
    );
    Ok(())
}
