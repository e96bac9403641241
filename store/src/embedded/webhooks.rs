//! Webhooks in the embedded store: the webhook, its feed cursor and its outbox in one atomic
//! batch per change; delivery attempts newest first per tenant, expiring after
//! [`DELIVERY_RETENTION_S`].

use tripline_model::TenantId;

use super::{EmbeddedStore, Inner, db_error, newest_first_page, owned_range, rejection_key};
use crate::codec::{Expiring, decode_json, encode_json, parse_rejection_cursor, push_text};
use crate::webhooks::{DELIVERY_RETENTION_S, DeliveryAttempt, DeliveryOutcome, OutboxItem, Webhook, WebhookStore};
use crate::{Checkpoint, Page, StoreResult};

/// Webhook `id`'s outbox row of item `item`: `id \0 item`.
fn outbox_key(id: &str, item: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + item.len() + 1);
    push_text(&mut key, id);
    key.extend_from_slice(item.as_bytes());
    key
}

impl Inner {
    fn webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        self.webhooks.get(id).map_err(db_error)?.map(|v| decode_json(&v, "webhooks")).transpose()
    }
}

impl WebhookStore for EmbeddedStore {
    async fn put_webhook(&self, webhook: &Webhook, from: &Checkpoint) -> StoreResult<()> {
        let value = encode_json(webhook, "webhooks")?;
        let cursor = encode_json(from, "webhook_cursors")?;
        let id = webhook.id.clone();
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            let mut batch = inner.batch();
            if inner.webhook(&id)?.is_none() {
                batch.insert(&inner.webhook_cursors, id.as_str(), cursor);
            }
            batch.insert(&inner.webhooks, id.as_str(), value);
            inner.commit(batch)
        })
        .await
    }

    async fn remove_webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            let Some(webhook) = inner.webhook(&id)? else { return Ok(None) };
            let mut batch = inner.batch();
            batch.remove(&inner.webhooks, id.as_str());
            batch.remove(&inner.webhook_cursors, id.as_str());
            for guard in inner.outbox.range(owned_range(&id)) {
                batch.remove(&inner.outbox, guard.key().map_err(db_error)?);
            }
            inner.commit(batch)?;
            Ok(Some(webhook))
        })
        .await
    }

    async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.blocking(|inner| {
            inner.webhooks.iter().map(|guard| decode_json(&guard.value().map_err(db_error)?, "webhooks")).collect()
        })
        .await
    }

    async fn outbox(&self, id: &str) -> StoreResult<Option<(Checkpoint, Vec<OutboxItem>)>> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let Some(cursor) = inner.webhook_cursors.get(id.as_str()).map_err(db_error)? else { return Ok(None) };
            let cursor: Checkpoint = decode_json(&cursor, "webhook_cursors")?;
            let items = inner
                .outbox
                .range(owned_range(&id))
                .map(|guard| decode_json(&guard.value().map_err(db_error)?, "outbox"))
                .collect::<StoreResult<Vec<OutboxItem>>>()?;
            Ok(Some((cursor, items)))
        })
        .await
    }

    async fn enqueue(&self, id: &str, items: &[OutboxItem], cursor: &Checkpoint) -> StoreResult<()> {
        let id = id.to_owned();
        let rows = items
            .iter()
            .map(|item| Ok((outbox_key(&id, &item.key), encode_json(item, "outbox")?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let cursor = encode_json(cursor, "webhook_cursors")?;
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            if inner.webhook(&id)?.is_none() {
                return Ok(());
            }
            let mut batch = inner.batch();
            for (key, value) in rows {
                batch.insert(&inner.outbox, key, value);
            }
            batch.insert(&inner.webhook_cursors, id.as_str(), cursor);
            inner.commit(batch)
        })
        .await
    }

    async fn settle(&self, id: &str, settled: &[(OutboxItem, DeliveryAttempt)]) -> StoreResult<()> {
        let rows = settled
            .iter()
            .map(|(item, attempt)| {
                let key = outbox_key(id, &item.key);
                let value =
                    (attempt.outcome == DeliveryOutcome::Retrying).then(|| encode_json(item, "outbox")).transpose()?;
                let expires_at_ms = attempt.at_ms.saturating_add((DELIVERY_RETENTION_S * 1000) as i64);
                let listed = encode_json(&Expiring { expires_at_ms, record: attempt }, "deliveries")?;
                let listed_key = rejection_key(Some(&attempt.tenant), attempt.at_ms, &attempt.id);
                Ok((key, value, listed_key, listed))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let id = id.to_owned();
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            // A removed webhook's items are not put back.
            let live = inner.webhook(&id)?.is_some();
            let mut batch = inner.batch();
            for (key, value, listed_key, listed) in rows {
                match value {
                    Some(value) if live => batch.insert(&inner.outbox, key, value),
                    Some(_) => {}
                    None => batch.remove(&inner.outbox, key),
                }
                batch.insert(&inner.deliveries, listed_key, listed);
            }
            inner.commit(batch)
        })
        .await
    }

    async fn deliveries(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<DeliveryAttempt>> {
        let after = cursor.map(parse_rejection_cursor).transpose()?;
        let tenant = tenant.clone();
        self.blocking(move |inner| {
            newest_first_page(
                &inner.deliveries,
                "deliveries",
                Some(&tenant),
                after.as_ref(),
                limit,
                |a: &DeliveryAttempt| (a.at_ms, a.id.as_str()),
            )
        })
        .await
    }
}
