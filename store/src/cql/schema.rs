//! The keyspace and its tables: what `tripline schema apply` creates or migrates.

use super::*;

/// The configured keyspace name, refused unless it is a plain CQL identifier (it is spliced
/// into statements).
pub(super) fn checked_keyspace(config: &ScyllaConfig) -> StoreResult<&str> {
    let ks = config.keyspace.as_str();
    if !is_identifier(ks) {
        return Err(StoreError::Refused { detail: format!("keyspace name {ks:?} is not a CQL identifier") });
    }
    Ok(ks)
}

/// Creates or migrates the keyspace and tables (idempotent). Returns the schema version.
pub(super) async fn apply_schema(session: &Session, config: &ScyllaConfig) -> StoreResult<i32> {
    let ks = checked_keyspace(config)?;
    let retry = config.retry_policy();
    let datacenter = match &config.datacenter {
        Some(dc) => dc.clone(),
        None => {
            let result = retry
                .run("read data center", || async {
                    session.query_unpaged("SELECT data_center FROM system.local", &[]).await.map_err(|e| classify(&e))
                })
                .await?;
            let rows = result.into_rows_result().map_err(|e| corrupt("system.local", e))?;
            let (dc,): (String,) = rows.first_row().map_err(|e| corrupt("system.local", e))?;
            dc
        }
    };
    if datacenter.contains('\'') {
        return Err(StoreError::Refused { detail: format!("data center name {datacenter:?}") });
    }
    let statements = [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', '{datacenter}': {}}}",
            config.replication_factor
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.schema_version (id int PRIMARY KEY, version int, applied_at bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.tenants (tenant text PRIMARY KEY, api_key_hash text, created_at bigint)"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.api_keys (api_key_hash text PRIMARY KEY, tenant text)"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.vehicles (vehicle_id text PRIMARY KEY, tenant text)"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.vehicle_secrets (vehicle_id text PRIMARY KEY, secret_hash text)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.point_chunks (vehicle_id text, day int, start_ts bigint, stamp bigint, \
             trip_id text, end_ts bigint, sealed boolean, points blob, PRIMARY KEY ((vehicle_id, day), start_ts, stamp)) \
             WITH CLUSTERING ORDER BY (start_ts ASC, stamp ASC) \
             AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.trips (tenant text, trip_id text, vehicle_id text, record text, data blob, updated_at bigint, \
             PRIMARY KEY ((tenant, trip_id), vehicle_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.rejections (tenant text, day int, received_at bigint, id text, record text, \
             PRIMARY KEY ((tenant, day), received_at, id)) WITH CLUSTERING ORDER BY (received_at DESC, id ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.rejection_days (tenant text, day int, PRIMARY KEY (tenant, day)) \
             WITH CLUSTERING ORDER BY (day DESC)"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.rejection_ids (id text PRIMARY KEY, received_at bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.feed_writers (shard int, writer text, watermark bigint, PRIMARY KEY (shard, writer))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.feed (writer text, bucket bigint, seq bigint, tenant text, vehicle_id text, trip_id text, \
             at bigint, push blob, PRIMARY KEY ((writer, bucket), seq))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.webhooks (shard int, id text, record text, cursor text, PRIMARY KEY (shard, id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.webhook_outbox (webhook text, key text, record text, PRIMARY KEY (webhook, key))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.webhook_deliveries (tenant text, day int, at bigint, id text, record text, \
             PRIMARY KEY ((tenant, day), at, id)) WITH CLUSTERING ORDER BY (at DESC, id ASC)"
        ),
        format!("INSERT INTO {ks}.schema_version (id, version, applied_at) VALUES (0, {SCHEMA_VERSION}, {})", now_ms()),
    ];
    for cql in statements {
        retry
            .run("schema", || async { session.query_unpaged(cql.clone(), &[]).await.map_err(|e| classify(&e)) })
            .await?;
    }
    // Columns added since a table was first created: schema 2 gave trips the binary `data`,
    // schema 4 gave feed entries their time and notices (and added the webhook tables).
    for (table, column, kind) in [("trips", "data", "blob"), ("feed", "at", "bigint"), ("feed", "push", "blob")] {
        let present = retry
            .run("schema columns", || async {
                let result = session
                    .query_unpaged(
                        "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? \
                         AND column_name = ?",
                        (ks, table, column),
                    )
                    .await
                    .map_err(|e| classify(&e))?;
                Ok(result.into_rows_result().map_err(|e| Attempt::Permanent(e.to_string()))?.rows_num() > 0)
            })
            .await?;
        if !present {
            let cql = format!("ALTER TABLE {ks}.{table} ADD {column} {kind}");
            retry
                .run("schema", || async { session.query_unpaged(cql.as_str(), &[]).await.map_err(|e| classify(&e)) })
                .await?;
        }
    }
    retry
        .run("schema agreement", || async {
            session.await_schema_agreement().await.map(|_| ()).map_err(|e| Attempt::Transient(e.to_string()))
        })
        .await?;
    Ok(SCHEMA_VERSION)
}
