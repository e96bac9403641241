//! Webhooks on ScyllaDB: `webhooks` (one partition: there are few), each outbox one partition of
//! `webhook_outbox`, delivery attempts in `webhook_deliveries((tenant, day), at, id)` newest
//! first.

use super::*;
use crate::webhooks::{DELIVERY_RETENTION_S, DeliveryAttempt, DeliveryOutcome, OutboxItem, Webhook, WebhookStore};

fn json<T: Serialize>(value: &T, table: &'static str) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| corrupt(table, e))
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, table: &'static str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(table, e))
}

impl ScyllaStore {
    /// A webhook's record and feed cursor (a row without a record is a removed webhook whose
    /// cursor was written meanwhile).
    async fn webhook_row(&self, id: &str) -> StoreResult<Option<(Webhook, Checkpoint)>> {
        let rows: Vec<(Option<String>, Option<String>)> =
            self.rows("webhook", &self.inner.statements.select_webhook, (id.to_owned(),)).await?;
        let Some((Some(record), cursor)) = rows.into_iter().next() else { return Ok(None) };
        let cursor = cursor.map(|c| parse(&c, "webhooks")).transpose()?.unwrap_or_default();
        Ok(Some((parse(&record, "webhooks")?, cursor)))
    }
}

impl ScyllaStore {
    /// Records one attempt: the delivery listed, the item kept (a retry of a webhook that still
    /// exists) or removed.
    async fn settle_one(&self, id: &str, item: &OutboxItem, attempt: &DeliveryAttempt, live: bool) -> StoreResult<()> {
        let s = &self.inner.statements;
        let record = json(attempt, "webhook_deliveries")?;
        let values =
            (attempt.tenant.as_str().to_owned(), day_of(attempt.at_ms), attempt.at_ms, attempt.id.clone(), record);
        self.execute("webhook delivery", &s.insert_delivery, values).await?;
        if attempt.outcome != DeliveryOutcome::Retrying {
            self.execute("webhook outbox", &s.delete_outbox_item, (id.to_owned(), item.key.clone())).await?;
        } else if live {
            let values = (id.to_owned(), item.key.clone(), json(item, "webhook_outbox")?);
            self.execute("webhook outbox", &s.insert_outbox, values).await?;
        }
        Ok(())
    }
}

impl WebhookStore for ScyllaStore {
    async fn put_webhook(&self, webhook: &Webhook, from: &Checkpoint) -> StoreResult<()> {
        let s = &self.inner.statements;
        let record = json(webhook, "webhooks")?;
        if self.webhook_row(&webhook.id).await?.is_some() {
            self.execute("webhook", &s.update_webhook, (record, webhook.id.clone())).await?;
        } else {
            let cursor = json(from, "webhooks")?;
            self.execute("webhook", &s.insert_webhook, (webhook.id.clone(), record, cursor)).await?;
        }
        Ok(())
    }

    async fn remove_webhook(&self, id: &str) -> StoreResult<Option<Webhook>> {
        let s = &self.inner.statements;
        let Some((webhook, _)) = self.webhook_row(id).await? else { return Ok(None) };
        self.execute("webhook", &s.delete_webhook, (id.to_owned(),)).await?;
        self.execute("webhook outbox", &s.delete_outbox, (id.to_owned(),)).await?;
        Ok(Some(webhook))
    }

    async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let rows: Vec<(Option<String>,)> = self.rows("webhooks", &self.inner.statements.select_webhooks, ()).await?;
        rows.into_iter().filter_map(|(record,)| record).map(|r| parse(&r, "webhooks")).collect()
    }

    async fn outbox(&self, id: &str) -> StoreResult<Option<(Checkpoint, Vec<OutboxItem>)>> {
        let Some((_, cursor)) = self.webhook_row(id).await? else { return Ok(None) };
        let rows: Vec<(String,)> =
            self.rows("webhook outbox", &self.inner.statements.select_outbox, (id.to_owned(),)).await?;
        let items = rows.iter().map(|(r,)| parse(r, "webhook_outbox")).collect::<StoreResult<Vec<OutboxItem>>>()?;
        Ok(Some((cursor, items)))
    }

    async fn enqueue(&self, id: &str, items: &[OutboxItem], cursor: &Checkpoint) -> StoreResult<()> {
        let s = &self.inner.statements;
        if self.webhook_row(id).await?.is_none() {
            return Ok(());
        }
        let rows = items
            .iter()
            .map(|i| Ok((id.to_owned(), i.key.clone(), json(i, "webhook_outbox")?)))
            .collect::<StoreResult<Vec<_>>>()?;
        self.execute_each("webhook outbox", &s.insert_outbox, rows).await?;
        // After the items: a cursor past a message never lands before the message is kept.
        self.execute("webhook cursor", &s.update_webhook_cursor, (json(cursor, "webhooks")?, id.to_owned())).await?;
        Ok(())
    }

    async fn settle(&self, id: &str, settled: &[(OutboxItem, DeliveryAttempt)]) -> StoreResult<()> {
        let live = self.webhook_row(id).await?.is_some();
        // A few dozen at most (the dispatcher's requests in flight): all at once.
        let calls: Vec<_> = settled.iter().map(|(item, attempt)| self.settle_one(id, item, attempt, live)).collect();
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    async fn deliveries(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<DeliveryAttempt>> {
        let s = &self.inner.statements;
        let after = cursor.map(parse_rejection_cursor).transpose()?;
        let now = now_ms();
        let newest = after.as_ref().map_or(day_of(now), |(at, _)| day_of(*at));
        let oldest = day_of(now - (DELIVERY_RETENTION_S * 1000) as i64);
        let limit_i32 = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let tenant = tenant.as_str().to_owned();
        let mut items: Vec<DeliveryAttempt> = Vec::new();
        let mut day = newest;
        while day >= oldest && items.len() < limit {
            let want = limit_i32 - i32::try_from(items.len()).unwrap_or(0);
            let rows: Vec<(String,)> = match after.as_ref().filter(|(at, _)| day_of(*at) == day) {
                Some((at, id)) => {
                    let same = (tenant.clone(), day, *at, id.clone(), want);
                    let mut rows: Vec<(String,)> =
                        self.rows("webhook deliveries", &s.select_deliveries_same_ms_after, same).await?;
                    let rest = want - i32::try_from(rows.len()).unwrap_or(0);
                    if rest > 0 {
                        let older = (tenant.clone(), day, *at, rest);
                        rows.extend(self.rows("webhook deliveries", &s.select_deliveries_before, older).await?);
                    }
                    rows
                }
                None => self.rows("webhook deliveries", &s.select_deliveries, (tenant.clone(), day, want)).await?,
            };
            for (record,) in rows {
                items.push(parse(&record, "webhook_deliveries")?);
            }
            day -= 1;
        }
        items.truncate(limit);
        let next = (items.len() == limit).then(|| items.last().map(DeliveryAttempt::cursor)).flatten();
        Ok(Page { items, next })
    }
}
