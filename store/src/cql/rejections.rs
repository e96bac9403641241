//! Rejected messages and points on ScyllaDB, newest first per tenant.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};

use super::*;
use crate::records::first_receipts;

impl RejectionStore for ScyllaStore {
    /// `MAX_CONCURRENT_REQUESTS` rejections at a time (one after another, a message of a device
    /// whose clock runs ahead, every point rejected, held its worker for a thousand round
    /// trips): each id's first receipt looked up, then the partitions' days, the new ids and
    /// the rows, in that order, so that every rejection stored is on a listed day and a
    /// redelivery finds its first receipt.
    async fn append_rejections(&self, rejections: &[Rejection]) -> StoreResult<()> {
        let first: Vec<(Rejection, bool)> = futures::stream::iter(first_receipts(rejections.to_vec()))
            .map(|rejection| self.first_receipt(rejection))
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        let ttl = self.inner.rejection_ttl_s;
        let s = &self.inner.statements;
        let days: BTreeSet<(String, i32)> =
            first.iter().map(|(rejection, _)| (partition_of(rejection), day_of(rejection.received_at_ms))).collect();
        let days = days.into_iter().map(|(partition, day)| (partition, day, ttl)).collect();
        self.execute_each("rejection day", &s.insert_rejection_day, days).await?;
        let ids = first.iter().filter(|(_, new)| *new).map(|(r, _)| (r.id.clone(), r.received_at_ms, ttl)).collect();
        self.execute_each("rejection id", &s.insert_rejection_id, ids).await?;
        let rows = first
            .into_iter()
            .map(|(rejection, _)| {
                let json = serde_json::to_string(&rejection).map_err(|e| corrupt("rejections", e))?;
                let (partition, day) = (partition_of(&rejection), day_of(rejection.received_at_ms));
                Ok((partition, day, rejection.received_at_ms, rejection.id, json, ttl))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.execute_each("rejection", &s.insert_rejection, rows).await
    }

    async fn rejections(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<Rejection>> {
        let after = cursor.map(parse_rejection_cursor).transpose()?;
        let mut items = match tenant {
            Some(tenant) => self.rejections_of(tenant.as_str(), after.as_ref(), limit).await?,
            None => {
                // Every bucket's newest after the cursor, merged (and the one partition key of
                // the rejections written before buckets).
                let mut merged = self.rejections_of(UNOWNED, after.as_ref(), limit).await?;
                for bucket in 0..UNOWNED_BUCKETS {
                    let key = format!("{UNOWNED}{bucket:x}");
                    merged.extend(self.rejections_of(&key, after.as_ref(), limit).await?);
                }
                // The partitions' own order: newest first, then ids ascending.
                merged.sort_by(|a, b| b.received_at_ms.cmp(&a.received_at_ms).then_with(|| a.id.cmp(&b.id)));
                merged
            }
        };
        items.truncate(limit);
        let next =
            (items.len() == limit).then(|| items.last().map(|r| rejection_cursor(r.received_at_ms, &r.id))).flatten();
        Ok(Page { items, next })
    }
}

/// Rejections no tenant owns are spread over this many partitions per day (by their id), so a
/// flood of unknown vehicles' messages does not pile into one.
const UNOWNED_BUCKETS: u32 = 16;

/// The partition key of a rejection: its tenant, or for one no tenant owns [`UNOWNED`] and a
/// bucket.
fn partition_of(rejection: &Rejection) -> String {
    match &rejection.tenant {
        Some(tenant) => tenant.as_str().to_owned(),
        None => unowned_partition(&rejection.id),
    }
}

/// The partition key of an unowned rejection: [`UNOWNED`] and its bucket.
fn unowned_partition(id: &str) -> String {
    let bucket = id.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % UNOWNED_BUCKETS;
    format!("{UNOWNED}{bucket:x}")
}

impl ScyllaStore {
    /// `rejection` at its id's first receipt (an earlier one stored before, or its own), and
    /// whether the id is new.
    async fn first_receipt(&self, mut rejection: Rejection) -> StoreResult<(Rejection, bool)> {
        let select = &self.inner.statements.select_rejection_id;
        let first: Vec<(i64,)> = self.rows("rejection id", select, (rejection.id.clone(),)).await?;
        match first.first() {
            Some((at,)) => {
                rejection.received_at_ms = *at;
                Ok((rejection, false))
            }
            None => Ok((rejection, true)),
        }
    }

    /// One partition key's rejections after `after`, newest first, `limit` at most.
    async fn rejections_of(
        &self,
        tenant: &str,
        after: Option<&(i64, String)>,
        limit: usize,
    ) -> StoreResult<Vec<Rejection>> {
        let tenant = tenant.to_owned();
        let s = &self.inner.statements;
        let newest_day = after.map_or(i32::MAX, |(at, _)| day_of(*at));
        let days: Vec<(i32,)> =
            self.rows("rejection days", &s.select_rejection_days, (tenant.clone(), newest_day)).await?;
        let limit_i32 = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let mut items: Vec<Rejection> = Vec::new();
        for (day,) in days {
            if items.len() >= limit {
                break;
            }
            let want = limit_i32 - i32::try_from(items.len()).unwrap_or(0);
            let rows: Vec<(String,)> = match after.filter(|(at, _)| day_of(*at) == day) {
                Some((at, id)) => {
                    let same = (tenant.clone(), day, *at, id.clone(), want);
                    let mut rows: Vec<(String,)> =
                        self.rows("rejections", &s.select_rejections_same_ms_after, same).await?;
                    let rest = want - i32::try_from(rows.len()).unwrap_or(0);
                    if rest > 0 {
                        let older = (tenant.clone(), day, *at, rest);
                        rows.extend(self.rows("rejections", &s.select_rejections_before, older).await?);
                    }
                    rows
                }
                None => self.rows("rejections", &s.select_rejections, (tenant.clone(), day, want)).await?,
            };
            for (json,) in rows {
                items.push(serde_json::from_str(&json).map_err(|e| corrupt("rejections", e))?);
            }
        }
        Ok(items)
    }
}
