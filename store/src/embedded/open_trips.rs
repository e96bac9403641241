//! The list of open trips: a key per trip not completed (the trip's own key, the trip's expiry
//! as value), kept in the same atomic batch as the trip row, so the pipeline's sweep after a
//! restart reads the open trips instead of every trip the store holds.

use fjall::{Database, Keyspace, PersistMode};
use tripline_model::TripStatus;
use tripline_model::time::now_ms;

use super::{Inner, db_error};
use crate::codec::{decode_trip_value, hex, i64_bytes, read_i64, trip_value_expiry, unhex};
use crate::records::{Page, TripRecord};
use crate::{StoreError, StoreResult};

/// Present once the list was filled from the trips written before it existed. Trip keys start
/// with a tenant name (ASCII), so this key sorts after every one of them.
const FILLED: &[u8] = &[0xff];

/// Marks open the trip of `key` (expiring with it) when `open`, else takes its mark away if it
/// has one (a removal leaves a tombstone that scans step over until compaction drops it; a
/// completed trip written again, or written completed at once, has no mark to remove). Call
/// under the feed's numbering lock, so no other write of the trip comes between the look and
/// the commit.
pub(super) fn mark(
    inner: &Inner,
    batch: &mut fjall::OwnedWriteBatch,
    key: &[u8],
    open: bool,
    expires: i64,
) -> StoreResult<()> {
    if open {
        batch.insert(&inner.open_trips, key, i64_bytes(expires));
    } else if inner.open_trips.contains_key(key).map_err(db_error)? {
        batch.remove(&inner.open_trips, key);
    }
    Ok(())
}

/// The expiry of a mark (that of [`FILLED`] never comes).
pub(super) fn expiry(value: &[u8]) -> StoreResult<i64> {
    read_i64(value).ok_or(StoreError::Corrupt { table: "open_trips", detail: "a mark without its expiry".to_owned() })
}

/// Fills the list from `trips` unless it was filled: a store written before the list existed
/// has its open trips marked once, at the first open. One batch with [`FILLED`], so an
/// interrupted fill runs again whole. Returns how many trips were marked.
pub(super) fn fill_once(db: &Database, trips: &Keyspace, open_trips: &Keyspace) -> StoreResult<u64> {
    if open_trips.get(FILLED).map_err(db_error)?.is_some() {
        return Ok(0);
    }
    let mut batch = db.batch().durability(Some(PersistMode::SyncData));
    let mut marked = 0u64;
    let now = now_ms();
    for guard in trips.iter() {
        let (key, value) = guard.into_inner().map_err(db_error)?;
        if let Some(record) = decode_trip_value(&value, now)?
            && record.summary.status == TripStatus::Active
        {
            batch.insert(open_trips, key, i64_bytes(trip_value_expiry(&value)?));
            marked += 1;
        }
    }
    batch.insert(open_trips, FILLED, i64_bytes(i64::MAX));
    batch.commit().map_err(db_error)?;
    Ok(marked)
}

/// A page of open trips: the marks after `cursor` (at most `limit`), each read from the trips;
/// a mark whose trip is gone, expired or completed gives nothing.
pub(super) fn page(inner: &Inner, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
    let lo = match cursor {
        Some(text) => {
            let mut key = unhex(text)?;
            key.push(0);
            key
        }
        None => Vec::new(),
    };
    let limit = limit.max(1);
    let mut items = Vec::new();
    let (mut seen, mut last) = (0usize, None);
    for guard in inner.open_trips.range(lo..FILLED.to_vec()) {
        if seen == limit {
            break;
        }
        let (key, _) = guard.into_inner().map_err(db_error)?;
        seen += 1;
        if let Some(record) = inner.get_trip(&key)?
            && record.summary.status == TripStatus::Active
        {
            items.push(record);
        }
        last = Some(key);
    }
    let next = (seen == limit).then(|| last.map(|k| hex(&k))).flatten();
    Ok(Page { items, next })
}
