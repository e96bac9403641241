//! Every CQL statement tripline runs on its tables, prepared once per connection.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::{DELIVERY_TTL_S, FEED_TTL_S, OUTBOX_TTL_S};
use crate::StoreResult;
use crate::retry::{Attempt, RetryPolicy};

/// The prepared statements, by what they do.
pub(super) struct Statements {
    pub(super) insert_chunk: PreparedStatement,
    pub(super) select_chunks: PreparedStatement,
    pub(super) delete_chunk: PreparedStatement,
    pub(super) insert_trip: PreparedStatement,
    pub(super) delete_trip: PreparedStatement,
    pub(super) select_trips_by_id: PreparedStatement,
    pub(super) select_trip: PreparedStatement,
    pub(super) scan_trips: PreparedStatement,
    pub(super) insert_feed: PreparedStatement,
    pub(super) upsert_watermark: PreparedStatement,
    pub(super) select_writers: PreparedStatement,
    pub(super) select_feed: PreparedStatement,
    pub(super) insert_rejection: PreparedStatement,
    pub(super) insert_rejection_day: PreparedStatement,
    pub(super) insert_rejection_id: PreparedStatement,
    pub(super) select_rejection_id: PreparedStatement,
    pub(super) select_rejection_days: PreparedStatement,
    pub(super) select_rejections: PreparedStatement,
    pub(super) select_rejections_before: PreparedStatement,
    pub(super) select_rejections_same_ms_after: PreparedStatement,
    pub(super) insert_tenant: PreparedStatement,
    pub(super) select_tenant: PreparedStatement,
    pub(super) insert_api_key: PreparedStatement,
    pub(super) select_api_key: PreparedStatement,
    pub(super) select_tenant_key: PreparedStatement,
    pub(super) update_tenant_key: PreparedStatement,
    pub(super) delete_api_key: PreparedStatement,
    pub(super) insert_vehicle: PreparedStatement,
    pub(super) select_vehicle: PreparedStatement,
    pub(super) insert_vehicle_secret: PreparedStatement,
    pub(super) delete_vehicle_secret: PreparedStatement,
    pub(super) select_vehicle_secret: PreparedStatement,
    pub(super) select_all_vehicle_secrets: PreparedStatement,
    pub(super) insert_webhook: PreparedStatement,
    pub(super) update_webhook: PreparedStatement,
    pub(super) update_webhook_cursor: PreparedStatement,
    pub(super) select_webhook: PreparedStatement,
    pub(super) select_webhooks: PreparedStatement,
    pub(super) delete_webhook: PreparedStatement,
    pub(super) insert_outbox: PreparedStatement,
    pub(super) select_outbox: PreparedStatement,
    pub(super) delete_outbox_item: PreparedStatement,
    pub(super) delete_outbox: PreparedStatement,
    pub(super) insert_delivery: PreparedStatement,
    pub(super) select_deliveries: PreparedStatement,
    pub(super) select_deliveries_same_ms_after: PreparedStatement,
    pub(super) select_deliveries_before: PreparedStatement,
}

impl Statements {
    /// Prepares every statement on keyspace `ks` (refused, naming `tripline schema apply`, when
    /// a table is missing).
    pub(super) async fn prepare_all(session: &Session, retry: &RetryPolicy, ks: &str) -> StoreResult<Self> {
        let p = |cql: String| prepare(session, retry, cql);
        let statements = Statements {
            insert_chunk: p(format!(
                "INSERT INTO {ks}.point_chunks (vehicle_id, day, start_ts, stamp, trip_id, end_ts, sealed, points) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            select_chunks: p(format!(
                "SELECT start_ts, stamp, trip_id, end_ts, sealed, points FROM {ks}.point_chunks \
                 WHERE vehicle_id = ? AND day = ? AND start_ts >= ? AND start_ts < ?"
            ))
            .await?,
            delete_chunk: p(format!(
                "DELETE FROM {ks}.point_chunks WHERE vehicle_id = ? AND day = ? AND start_ts = ? AND stamp = ?"
            ))
            .await?,
            insert_trip: p(format!(
                "INSERT INTO {ks}.trips (tenant, trip_id, vehicle_id, data, updated_at) VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            delete_trip: p(format!("DELETE FROM {ks}.trips WHERE tenant = ? AND trip_id = ? AND vehicle_id = ?")).await?,
            select_trips_by_id: p(format!("SELECT record, data FROM {ks}.trips WHERE tenant = ? AND trip_id = ?")).await?,
            select_trip: p(format!("SELECT record, data FROM {ks}.trips WHERE tenant = ? AND trip_id = ? AND vehicle_id = ?")).await?,
            scan_trips: p(format!("SELECT record, data FROM {ks}.trips")).await?,
            insert_feed: p(format!(
                "INSERT INTO {ks}.feed (writer, bucket, seq, tenant, vehicle_id, trip_id, at, push) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                 USING TTL {FEED_TTL_S}"
            ))
            .await?,
            upsert_watermark: p(format!(
                "INSERT INTO {ks}.feed_writers (shard, writer, watermark) VALUES (0, ?, ?) USING TTL {FEED_TTL_S}"
            ))
            .await?,
            select_writers: p(format!("SELECT writer, watermark FROM {ks}.feed_writers WHERE shard = 0")).await?,
            select_feed: p(format!(
                "SELECT seq, tenant, vehicle_id, trip_id, at, push FROM {ks}.feed WHERE writer = ? AND bucket = ? AND seq > ? AND seq <= ? LIMIT ?"
            ))
            .await?,
            insert_rejection: p(format!(
                "INSERT INTO {ks}.rejections (tenant, day, received_at, id, record) VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            insert_rejection_day: p(format!("INSERT INTO {ks}.rejection_days (tenant, day) VALUES (?, ?) USING TTL ?")).await?,
            insert_rejection_id: p(format!("INSERT INTO {ks}.rejection_ids (id, received_at) VALUES (?, ?) USING TTL ?")).await?,
            select_rejection_id: p(format!("SELECT received_at FROM {ks}.rejection_ids WHERE id = ?")).await?,
            select_rejection_days: p(format!("SELECT day FROM {ks}.rejection_days WHERE tenant = ? AND day <= ?")).await?,
            select_rejections: p(format!("SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? LIMIT ?")).await?,
            // Rows sort by received_at descending, then id ascending: after a cursor (at, id) come
            // the same millisecond's larger ids, then the older milliseconds.
            select_rejections_same_ms_after: p(format!(
                "SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? AND received_at = ? AND id > ? LIMIT ?"
            ))
            .await?,
            select_rejections_before: p(format!(
                "SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? AND received_at < ? LIMIT ?"
            ))
            .await?,
            insert_tenant: p(format!(
                "INSERT INTO {ks}.tenants (tenant, api_key_hash, created_at) VALUES (?, ?, ?) IF NOT EXISTS"
            ))
            .await?,
            select_tenant: p(format!("SELECT tenant FROM {ks}.tenants WHERE tenant = ?")).await?,
            insert_api_key: p(format!("INSERT INTO {ks}.api_keys (api_key_hash, tenant) VALUES (?, ?)")).await?,
            select_api_key: p(format!("SELECT tenant FROM {ks}.api_keys WHERE api_key_hash = ?")).await?,
            select_tenant_key: p(format!("SELECT api_key_hash FROM {ks}.tenants WHERE tenant = ?")).await?,
            update_tenant_key: p(format!("UPDATE {ks}.tenants SET api_key_hash = ? WHERE tenant = ?")).await?,
            delete_api_key: p(format!("DELETE FROM {ks}.api_keys WHERE api_key_hash = ?")).await?,
            insert_vehicle: p(format!("INSERT INTO {ks}.vehicles (vehicle_id, tenant) VALUES (?, ?) IF NOT EXISTS"))
                .await?,
            select_vehicle: p(format!("SELECT tenant FROM {ks}.vehicles WHERE vehicle_id = ?")).await?,
            insert_vehicle_secret: p(format!("INSERT INTO {ks}.vehicle_secrets (vehicle_id, secret_hash) VALUES (?, ?)"))
                .await?,
            delete_vehicle_secret: p(format!("DELETE FROM {ks}.vehicle_secrets WHERE vehicle_id = ?")).await?,
            select_vehicle_secret: p(format!("SELECT secret_hash FROM {ks}.vehicle_secrets WHERE vehicle_id = ?"))
                .await?,
            select_all_vehicle_secrets: p(format!("SELECT vehicle_id, secret_hash FROM {ks}.vehicle_secrets")).await?,
            insert_webhook: p(format!("INSERT INTO {ks}.webhooks (shard, id, record, cursor) VALUES (0, ?, ?, ?)")).await?,
            update_webhook: p(format!("UPDATE {ks}.webhooks SET record = ? WHERE shard = 0 AND id = ?")).await?,
            update_webhook_cursor: p(format!("UPDATE {ks}.webhooks SET cursor = ? WHERE shard = 0 AND id = ?")).await?,
            select_webhook: p(format!("SELECT record, cursor FROM {ks}.webhooks WHERE shard = 0 AND id = ?")).await?,
            select_webhooks: p(format!("SELECT record FROM {ks}.webhooks WHERE shard = 0")).await?,
            delete_webhook: p(format!("DELETE FROM {ks}.webhooks WHERE shard = 0 AND id = ?")).await?,
            insert_outbox: p(format!(
                "INSERT INTO {ks}.webhook_outbox (webhook, key, record) VALUES (?, ?, ?) USING TTL {OUTBOX_TTL_S}"
            ))
            .await?,
            select_outbox: p(format!("SELECT record FROM {ks}.webhook_outbox WHERE webhook = ?")).await?,
            delete_outbox_item: p(format!("DELETE FROM {ks}.webhook_outbox WHERE webhook = ? AND key = ?")).await?,
            delete_outbox: p(format!("DELETE FROM {ks}.webhook_outbox WHERE webhook = ?")).await?,
            insert_delivery: p(format!(
                "INSERT INTO {ks}.webhook_deliveries (tenant, day, at, id, record) VALUES (?, ?, ?, ?, ?) \
                 USING TTL {DELIVERY_TTL_S}"
            ))
            .await?,
            select_deliveries: p(format!(
                "SELECT record FROM {ks}.webhook_deliveries WHERE tenant = ? AND day = ? LIMIT ?"
            ))
            .await?,
            select_deliveries_same_ms_after: p(format!(
                "SELECT record FROM {ks}.webhook_deliveries WHERE tenant = ? AND day = ? AND at = ? AND id > ? LIMIT ?"
            ))
            .await?,
            select_deliveries_before: p(format!(
                "SELECT record FROM {ks}.webhook_deliveries WHERE tenant = ? AND day = ? AND at < ? LIMIT ?"
            ))
            .await?,
        };
        Ok(statements)
    }
}

async fn prepare(session: &Session, retry: &RetryPolicy, cql: String) -> StoreResult<PreparedStatement> {
    let mut statement = retry
        .run("prepare", || async {
            session.prepare(cql.clone()).await.map_err(|e| {
                let text = e.to_string();
                if text.contains("unconfigured table") || text.contains("does not exist") || text.contains("Keyspace") {
                    Attempt::Permanent(format!("{text} (run `tripline schema apply`)"))
                } else {
                    Attempt::Transient(text)
                }
            })
        })
        .await?;
    statement.set_is_idempotent(true);
    Ok(statement)
}
