//! The list of open trips on ScyllaDB: `open_trips(shard, tenant, trip_id, vehicle_id)`, a row
//! per trip not completed, spread over [`SHARDS`] partitions, so the pipeline's sweep after a
//! restart reads the open trips instead of every trip the store holds.
//!
//! A trip's mark goes with its row: written when the trip is written open, removed when it is
//! written completed or deleted, expiring with it. Trip rows are rewritten on every write set
//! while a trip is live; a process writes a live trip's mark once per [`REMARK_AFTER`] rather
//! than with each row (the rows would double), which also restores, within that time, a mark
//! another process removed (it completed the trip) before this one reopened the trip.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use tripline_model::TripStatus;

use super::{MAX_CONCURRENT_REQUESTS, ScyllaStore, corrupt};
use crate::StoreResult;
use crate::codec::{hex, unhex};
use crate::records::{Page, TripKey, TripRecord};

/// Partitions of the list: enough to spread it over a cluster's nodes, few enough that a sweep
/// reading them one after another pays little for empty ones.
pub(super) const SHARDS: i32 = 16;

/// The schema version that introduced the list: a keyspace of an earlier one has its open trips
/// listed by `schema apply` ([`ScyllaStore::list_stored_open_trips`]).
pub(super) const LISTED_SINCE: i32 = 5;

/// A live trip's mark is written again after this long (see the module's documentation).
const REMARK_AFTER: Duration = Duration::from_secs(600);

/// Trips remembered as marked at most; past it the memory starts over (marks are rewritten).
const MARKED_MAX: usize = 1_000_000;

/// The partition of a trip's mark.
pub(super) fn shard(tenant: &str, trip_id: &str) -> i32 {
    let mut key = Vec::with_capacity(tenant.len() + trip_id.len() + 1);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.extend_from_slice(trip_id.as_bytes());
    (tripline_model::hash::fnv1a64(&key) % SHARDS as u64) as i32
}

/// The trips this process marked open within [`REMARK_AFTER`].
pub(super) struct Marked {
    since: Instant,
    keys: HashSet<TripKey>,
}

impl Marked {
    pub(super) fn new() -> Mutex<Marked> {
        Mutex::new(Marked { since: Instant::now(), keys: HashSet::new() })
    }
}

/// What writing `trips` does to the list: marks to write (open trips not marked lately) and to
/// remove (completed trips).
#[derive(Debug, Default, PartialEq)]
pub(super) struct MarkChanges {
    pub(super) open: Vec<TripKey>,
    pub(super) closed: Vec<TripKey>,
}

fn lock(marked: &Mutex<Marked>) -> MutexGuard<'_, Marked> {
    marked.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The list's changes for writing trips (key and status), given what this process marked
/// lately.
pub(super) fn changes(marked: &Mutex<Marked>, trips: impl IntoIterator<Item = (TripKey, TripStatus)>) -> MarkChanges {
    let mut marked = lock(marked);
    if marked.since.elapsed() >= REMARK_AFTER || marked.keys.len() >= MARKED_MAX {
        marked.keys.clear();
        marked.since = Instant::now();
    }
    let mut changes = MarkChanges::default();
    for (key, status) in trips {
        match status {
            TripStatus::Active if !marked.keys.contains(&key) => changes.open.push(key),
            TripStatus::Active => {}
            TripStatus::Completed => changes.closed.push(key),
        }
    }
    changes
}

/// Remembers the changes once written: marked trips are not marked again for a while.
pub(super) fn written(marked: &Mutex<Marked>, changes: MarkChanges) {
    let mut marked = lock(marked);
    for key in &changes.closed {
        marked.keys.remove(key);
    }
    marked.keys.extend(changes.open);
}

/// Forgets a deleted trip's mark.
pub(super) fn forget(marked: &Mutex<Marked>, key: &TripKey) {
    lock(marked).keys.remove(key);
}

/// A cursor of the list: the shard, then the driver's paging state within it.
fn to_cursor(shard: i32, paging: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(1 + paging.len());
    bytes.push(shard as u8);
    bytes.extend_from_slice(paging);
    hex(&bytes)
}

fn parse_cursor(text: &str) -> StoreResult<(i32, Vec<u8>)> {
    let bytes = unhex(text)?;
    match bytes.split_first() {
        Some((&shard, paging)) if i32::from(shard) < SHARDS => Ok((i32::from(shard), paging.to_vec())),
        _ => Err(crate::StoreError::BadCursor),
    }
}

impl ScyllaStore {
    /// Writes and removes marks ([`ScyllaStore::execute_each`]: a bounded number at once).
    pub(super) async fn write_marks(&self, changes: &MarkChanges) -> StoreResult<()> {
        let s = &self.inner.statements;
        let ttl = self.inner.ttl_s;
        let row = |k: &TripKey| {
            let (tenant, trip) = (k.tenant.as_str().to_owned(), k.trip_id.as_str().to_owned());
            (shard(&tenant, &trip), tenant, trip, k.vehicle_id.as_str().to_owned())
        };
        let opened: Vec<_> = changes.open.iter().map(row).map(|(a, b, c, d)| (a, b, c, d, ttl)).collect();
        let closed: Vec<_> = changes.closed.iter().map(row).collect();
        let opened = self.execute_each("mark open trip", &s.insert_open_trip, opened);
        let closed = self.execute_each("unmark open trip", &s.delete_open_trip, closed);
        futures::future::try_join(opened, closed).await.map(drop)
    }

    /// Marks every open trip the store holds (a keyspace written before the list existed);
    /// returns how many. Idempotent.
    pub(super) async fn list_stored_open_trips(&self) -> StoreResult<u64> {
        use crate::TripStore;
        const PAGE: usize = 1_000;
        let (mut cursor, mut listed) = (None::<String>, 0u64);
        loop {
            let page = self.scan_trips(cursor.as_deref(), PAGE).await?;
            let open: Vec<TripKey> =
                page.items.iter().filter(|t| t.summary.status == TripStatus::Active).map(TripKey::of).collect();
            listed += open.len() as u64;
            self.write_marks(&MarkChanges { open, closed: Vec::new() }).await?;
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(listed),
            }
        }
    }

    /// A page of the open trips: the marks of one shard after `cursor` (at most `limit`), each
    /// trip read from its row; a mark whose trip is gone or completed gives nothing.
    pub(super) async fn open_trips_page(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        use scylla::response::{PagingState, PagingStateResponse};
        let (shard, paging) = match cursor {
            Some(text) => parse_cursor(text)?,
            None => (0, Vec::new()),
        };
        let paging = if paging.is_empty() { PagingState::start() } else { PagingState::new_from_raw_bytes(paging) };
        let statement = &self.inner.statements.select_open_trips;
        let (result, response) = self.single_page("scan open trips", statement, (shard,), paging, limit).await?;
        let rows = result.into_rows_result().map_err(|e| corrupt("open_trips", e))?;
        let marks = rows
            .rows::<(String, String, String)>()
            .map_err(|e| corrupt("open_trips", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt("open_trips", e))?;
        let items: Vec<Option<TripRecord>> = futures::stream::iter(marks)
            .map(|(tenant, trip_id, vehicle)| self.trip_by_columns(tenant, trip_id, vehicle))
            .buffered(MAX_CONCURRENT_REQUESTS)
            .try_collect()
            .await?;
        let items = items.into_iter().flatten().filter(|t| t.summary.status == TripStatus::Active).collect();
        let next = match response {
            PagingStateResponse::HasMorePages { state } => state.as_bytes_slice().map(|b| to_cursor(shard, b)),
            PagingStateResponse::NoMorePages => (shard + 1 < SHARDS).then(|| to_cursor(shard + 1, &[])),
        };
        Ok(Page { items, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(name: &str, status: TripStatus) -> (TripKey, TripStatus) {
        let key = TripKey {
            tenant: tripline_model::TenantId::parse("acme").unwrap(),
            vehicle_id: tripline_model::VehicleId::parse("car-1").unwrap(),
            trip_id: tripline_model::TripId::parse(name).unwrap(),
        };
        (key, status)
    }

    #[test]
    fn a_live_trip_is_marked_once_and_unmarked_when_completed() {
        let marked = Marked::new();
        let live = [trip("t1", TripStatus::Active), trip("t2", TripStatus::Active)];
        let first = changes(&marked, live.clone());
        assert_eq!((first.open.len(), first.closed.len()), (2, 0));
        assert_eq!(changes(&marked, live.clone()), first, "not remembered before it is written");
        written(&marked, first);
        assert_eq!(changes(&marked, live.clone()), MarkChanges::default(), "marked already");
        let done = changes(&marked, [trip("t1", TripStatus::Completed)]);
        assert_eq!(done.closed, vec![live[0].0.clone()]);
        written(&marked, done);
        assert_eq!(changes(&marked, live.clone()).open, vec![live[0].0.clone()], "reopened: marked again");
        forget(&marked, &live[1].0);
        assert_eq!(changes(&marked, live).open.len(), 2, "deleted: forgotten");
    }

    #[test]
    fn cursors_name_a_shard_and_foreign_ones_are_refused() {
        assert_eq!(parse_cursor(&to_cursor(3, &[1, 2])).unwrap(), (3, vec![1, 2]));
        assert!(parse_cursor(&hex(&[SHARDS as u8])).is_err());
        assert!(parse_cursor("").is_err());
        assert!(parse_cursor("zz").is_err());
        let spread: HashSet<i32> = (0..200).map(|i| shard("acme", &format!("t{i}"))).collect();
        assert_eq!(spread.len(), SHARDS as usize, "trips spread over every shard");
    }
}
