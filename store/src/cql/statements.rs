//! Every CQL statement tripline runs on its tables, prepared once per connection.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use futures::{StreamExt, TryStreamExt};

use super::{DELIVERY_TTL_S, FEED_TTL_S, OUTBOX_TTL_S};
use crate::retry::{Attempt, RetryPolicy};
use crate::{StoreError, StoreResult};

/// The statements as (field, CQL) in one table: `{ks}` stands for the keyspace, `{FEED_TTL_S}`,
/// `{OUTBOX_TTL_S}` and `{DELIVERY_TTL_S}` for those retention constants.
macro_rules! statements {
    ($($(#[$doc:meta])* $name:ident: $cql:literal,)*) => {
        /// The prepared statements, by what they do.
        pub(super) struct Statements {
            $($(#[$doc])* pub(super) $name: PreparedStatement,)*
        }

        /// Every statement's template, in the fields' order.
        const TEMPLATES: &[&str] = &[$($cql,)*];

        impl Statements {
            /// Builds the statements from the prepared ones, in [`TEMPLATES`] order.
            fn from_prepared(prepared: Vec<PreparedStatement>) -> Option<Statements> {
                let mut prepared = prepared.into_iter();
                Some(Statements { $($name: prepared.next()?,)* })
            }
        }
    };
}

statements! {
    insert_chunk: "INSERT INTO {ks}.point_chunks (vehicle_id, day, start_ts, stamp, trip_id, end_ts, sealed, points) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
    select_chunks: "SELECT start_ts, stamp, trip_id, end_ts, sealed, points FROM {ks}.point_chunks WHERE vehicle_id = ? AND day = ? AND start_ts >= ? AND start_ts < ?",
    delete_chunk: "DELETE FROM {ks}.point_chunks WHERE vehicle_id = ? AND day = ? AND start_ts = ? AND stamp = ?",
    insert_trip: "INSERT INTO {ks}.trips (tenant, trip_id, vehicle_id, data, updated_at) VALUES (?, ?, ?, ?, ?) USING TTL ?",
    delete_trip: "DELETE FROM {ks}.trips WHERE tenant = ? AND trip_id = ? AND vehicle_id = ?",
    select_trips_by_id: "SELECT record, data FROM {ks}.trips WHERE tenant = ? AND trip_id = ?",
    select_trip: "SELECT record, data FROM {ks}.trips WHERE tenant = ? AND trip_id = ? AND vehicle_id = ?",
    scan_trips: "SELECT record, data FROM {ks}.trips",
    insert_open_trip: "INSERT INTO {ks}.open_trips (shard, tenant, trip_id, vehicle_id) VALUES (?, ?, ?, ?) USING TTL ?",
    delete_open_trip: "DELETE FROM {ks}.open_trips WHERE shard = ? AND tenant = ? AND trip_id = ? AND vehicle_id = ?",
    select_open_trips: "SELECT tenant, trip_id, vehicle_id FROM {ks}.open_trips WHERE shard = ?",
    insert_feed: "INSERT INTO {ks}.feed (writer, bucket, seq, tenant, vehicle_id, trip_id, at, push) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL {FEED_TTL_S}",
    upsert_watermark: "INSERT INTO {ks}.feed_writers (shard, writer, watermark) VALUES (0, ?, ?) USING TTL {FEED_TTL_S}",
    select_writers: "SELECT writer, watermark FROM {ks}.feed_writers WHERE shard = 0",
    select_feed: "SELECT seq, tenant, vehicle_id, trip_id, at, push FROM {ks}.feed WHERE writer = ? AND bucket = ? AND seq > ? AND seq <= ? LIMIT ?",
    insert_rejection: "INSERT INTO {ks}.rejections (tenant, day, received_at, id, record) VALUES (?, ?, ?, ?, ?) USING TTL ?",
    insert_rejection_day: "INSERT INTO {ks}.rejection_days (tenant, day) VALUES (?, ?) USING TTL ?",
    insert_rejection_id: "INSERT INTO {ks}.rejection_ids (id, received_at) VALUES (?, ?) USING TTL ?",
    select_rejection_id: "SELECT received_at FROM {ks}.rejection_ids WHERE id = ?",
    select_rejection_days: "SELECT day FROM {ks}.rejection_days WHERE tenant = ? AND day <= ?",
    select_rejections: "SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? LIMIT ?",
    // Rows sort by received_at descending, then id ascending: after a cursor (at, id) come
    // the same millisecond's larger ids, then the older milliseconds.
    select_rejections_same_ms_after: "SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? AND received_at = ? AND id > ? LIMIT ?",
    select_rejections_before: "SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? AND received_at < ? LIMIT ?",
    insert_tenant: "INSERT INTO {ks}.tenants (tenant, api_key_hash, created_at) VALUES (?, ?, ?) IF NOT EXISTS",
    select_tenant: "SELECT tenant FROM {ks}.tenants WHERE tenant = ?",
    insert_api_key: "INSERT INTO {ks}.api_keys (api_key_hash, tenant) VALUES (?, ?)",
    select_api_key: "SELECT tenant FROM {ks}.api_keys WHERE api_key_hash = ?",
    select_tenant_key: "SELECT api_key_hash FROM {ks}.tenants WHERE tenant = ?",
    update_tenant_key: "UPDATE {ks}.tenants SET api_key_hash = ? WHERE tenant = ?",
    delete_api_key: "DELETE FROM {ks}.api_keys WHERE api_key_hash = ?",
    insert_vehicle: "INSERT INTO {ks}.vehicles (vehicle_id, tenant) VALUES (?, ?) IF NOT EXISTS",
    select_vehicle: "SELECT tenant FROM {ks}.vehicles WHERE vehicle_id = ?",
    insert_vehicle_secret: "INSERT INTO {ks}.vehicle_secrets (vehicle_id, secret_hash) VALUES (?, ?)",
    delete_vehicle_secret: "DELETE FROM {ks}.vehicle_secrets WHERE vehicle_id = ?",
    select_vehicle_secret: "SELECT secret_hash FROM {ks}.vehicle_secrets WHERE vehicle_id = ?",
    select_all_vehicle_secrets: "SELECT vehicle_id, secret_hash FROM {ks}.vehicle_secrets",
    insert_webhook: "INSERT INTO {ks}.webhooks (shard, id, record, cursor) VALUES (0, ?, ?, ?)",
    update_webhook: "UPDATE {ks}.webhooks SET record = ? WHERE shard = 0 AND id = ?",
    update_webhook_cursor: "UPDATE {ks}.webhooks SET cursor = ? WHERE shard = 0 AND id = ?",
    select_webhook: "SELECT record, cursor FROM {ks}.webhooks WHERE shard = 0 AND id = ?",
    select_webhooks: "SELECT record FROM {ks}.webhooks WHERE shard = 0",
    delete_webhook: "DELETE FROM {ks}.webhooks WHERE shard = 0 AND id = ?",
    insert_outbox: "INSERT INTO {ks}.webhook_outbox (webhook, key, record) VALUES (?, ?, ?) USING TTL {OUTBOX_TTL_S}",
    select_outbox: "SELECT record FROM {ks}.webhook_outbox WHERE webhook = ?",
    delete_outbox_item: "DELETE FROM {ks}.webhook_outbox WHERE webhook = ? AND key = ?",
    delete_outbox: "DELETE FROM {ks}.webhook_outbox WHERE webhook = ?",
    insert_delivery: "INSERT INTO {ks}.webhook_deliveries (tenant, day, at, id, record) VALUES (?, ?, ?, ?, ?) USING TTL {DELIVERY_TTL_S}",
    select_deliveries: "SELECT record FROM {ks}.webhook_deliveries WHERE tenant = ? AND day = ? LIMIT ?",
    select_deliveries_same_ms_after: "SELECT record FROM {ks}.webhook_deliveries WHERE tenant = ? AND day = ? AND at = ? AND id > ? LIMIT ?",
    select_deliveries_before: "SELECT record FROM {ks}.webhook_deliveries WHERE tenant = ? AND day = ? AND at < ? LIMIT ?",
}

impl Statements {
    /// Prepares every statement on keyspace `ks`, at most 8 at once (refused, naming `tripline
    /// schema apply`, when a table is missing).
    pub(super) async fn prepare_all(session: &Session, retry: &RetryPolicy, ks: &str) -> StoreResult<Self> {
        let prepared: Vec<PreparedStatement> = futures::stream::iter(TEMPLATES)
            .map(|template| prepare(session, retry, cql(template, ks)))
            .buffered(8)
            .try_collect()
            .await?;
        Statements::from_prepared(prepared)
            .ok_or_else(|| StoreError::Refused { detail: "a statement was not prepared".to_owned() })
    }
}

/// A template's CQL on keyspace `ks`.
fn cql(template: &str, ks: &str) -> String {
    template
        .replace("{ks}", ks)
        .replace("{FEED_TTL_S}", &FEED_TTL_S.to_string())
        .replace("{OUTBOX_TTL_S}", &OUTBOX_TTL_S.to_string())
        .replace("{DELIVERY_TTL_S}", &DELIVERY_TTL_S.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_names_its_keyspace_and_leaves_no_placeholder() {
        for template in TEMPLATES {
            let cql = cql(template, "tripline_x");
            assert!(cql.contains("tripline_x."), "{cql}");
            assert!(!cql.contains('{') && !cql.contains('}'), "{cql}");
        }
        assert_eq!(TEMPLATES.len(), 50);
    }
}
