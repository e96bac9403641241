//! Webhooks in the embedded store: the webhook, its feed cursor and its outbox in one atomic
//! batch per change; delivery attempts newest first per tenant, expiring after
//! [`DELIVERY_RETENTION_S`].

use tripline_model::TenantId;

use super::{EmbeddedStore, Inner, db_error, rejection_key};
use crate::codec::{Expiring, decode_json, encode_json, parse_rejection_cursor, push_text, rejection_cursor};
use crate::webhooks::{DELIVERY_RETENTION_S, DeliveryAttempt, DeliveryOutcome, OutboxItem, Webhook, WebhookStore};
use crate::{Checkpoint, Page, StoreResult};

/// The first key of webhook `id`'s outbox (every item key follows it).
fn outbox_prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 1);
    push_text(&mut key, id);
    key
}

/// The key just above every outbox key of webhook `id` (ids never hold a 0 or 1 byte).
fn outbox_end(id: &str) -> Vec<u8> {
    let mut key = outbox_prefix(id);
    if let Some(last) = key.last_mut() {
        *last = 1;
    }
    key
}

fn outbox_key(id: &str, item: &str) -> Vec<u8> {
    let mut key = outbox_prefix(id);
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
            for guard in inner.outbox.range(outbox_prefix(&id)..outbox_end(&id)) {
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
                .range(outbox_prefix(&id)..outbox_end(&id))
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
            let mut prefix = Vec::new();
            push_text(&mut prefix, tenant.as_str());
            let mut hi = prefix.clone();
            if let Some(last) = hi.last_mut() {
                *last = 1;
            }
            let lo = match &after {
                Some((at, id)) => {
                    let mut key = rejection_key(Some(&tenant), *at, id);
                    key.push(0);
                    key
                }
                None => prefix,
            };
            let now = tripline_model::time::now_ms();
            let mut items = Vec::new();
            for guard in inner.deliveries.range(lo..hi) {
                if items.len() == limit {
                    break;
                }
                let row: Expiring<DeliveryAttempt> = decode_json(&guard.value().map_err(db_error)?, "deliveries")?;
                if row.expires_at_ms > now {
                    items.push(row.record);
                }
            }
            let next = (items.len() == limit)
                .then(|| items.last().map(|a: &DeliveryAttempt| rejection_cursor(a.at_ms, &a.id)))
                .flatten();
            Ok(Page { items, next })
        })
        .await
    }
}
