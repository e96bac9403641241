//! The embedded backend: an LSM store on local disk (`fjall`), for a single machine.
//!
//! **Durability.** Every write call commits one atomic batch and returns once an `fdatasync` of
//! the journal covered it (`PersistMode::SyncData`), so a write that returned survives a crash of
//! the process or the machine. Callers batch (many points, trips or rejections per call), and
//! writers committing at the same time share one sync ([`sync`]: group commit); the change feed
//! is read only as far as it is durable.
//!
//! **One process.** The database directory is locked by the process that opened it; other
//! `tripline` commands reach an embedded store through that process.
//!
//! **Retention.** Points, trips and rejections carry an expiry (`retention`, and a shorter
//! `rejection_retention` for rejections); reads skip expired
//! records and [`EmbeddedStore::purge_expired`] deletes them (`tripline run` calls it every six
//! hours), with change-feed entries older than the feed's 7 days.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tripline_model::time::now_ms;

use fjall::config::PartitioningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::{Deserialize, Serialize};
use tripline_model::{Notice, TenantId, TripId, VehicleId};

use crate::chunk::{ChunkRow, MAX_CHUNK_SPAN_MS, Resolved, SealPlan, TripPage, check_point_range, chunk_rows, decode};
use crate::codec::{
    ChunkValue, Expiring, PointRow, chunk_key, decode_json, decode_postcard, decode_trip_value, encode_json,
    encode_postcard, encode_trip_value, hex, i64_bytes, parse_rejection_cursor, point_bound, push_i64, push_text,
    read_i64, rejection_cursor, trip_value_expiry, unhex,
};
use crate::records::{
    Change, ChangeBatch, Checkpoint, KeptWrite, Page, Rejection, StoredPoint, TripKey, TripRecord, first_receipts,
};
use crate::written::Written;
use crate::{
    BatchWrite, ChangeFeed, DEFAULT_REJECTION_RETENTION_DAYS, DEFAULT_RETENTION_DAYS, PointStore, Registry,
    RejectionStore, StoreError, StoreResult, TripStore, WriteSet,
};

/// The embedded store's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddedConfig {
    /// Directory of the database (created when missing).
    pub path: PathBuf,
    /// How long points and trips are kept, in seconds.
    pub retention_s: u64,
    /// How long rejections are kept, in seconds.
    pub rejection_retention_s: u64,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            path: PathBuf::from("./tripline-data/store"),
            retention_s: u64::from(DEFAULT_RETENTION_DAYS) * 86_400,
            rejection_retention_s: u64::from(DEFAULT_REJECTION_RETENTION_DAYS) * 86_400,
        }
    }
}

mod open_trips;
mod sync;
mod webhooks;

/// The writer id of the embedded change feed (one process writes it).
const WRITER: &str = "embedded";

struct Inner {
    db: Database,
    chunks: Keyspace,
    trips: Keyspace,
    /// Trip key → expiry, for each trip not completed ([`open_trips`]).
    open_trips: Keyspace,
    rejections: Keyspace,
    rejection_ids: Keyspace,
    tenants: Keyspace,
    api_keys: Keyspace,
    vehicles: Keyspace,
    /// Vehicle id → the hash of its secret (PHC string).
    vehicle_secrets: Keyspace,
    feed: Keyspace,
    /// Webhook id → the webhook (JSON).
    webhooks: Keyspace,
    /// Webhook id → its feed cursor (JSON checkpoint).
    webhook_cursors: Keyspace,
    /// Webhook id \0 item key → a message waiting (JSON).
    outbox: Keyspace,
    /// Tenant \0 descending time, attempt id → a delivery attempt (JSON, expiring).
    deliveries: Keyspace,
    /// Next change-feed sequence number; held while committing so sequence order is commit order.
    feed_next: Mutex<u64>,
    /// Serialises registry read-modify-writes.
    registry_lock: Mutex<()>,
    retention_ms: i64,
    rejection_retention_ms: i64,
    /// Trips just written, for an indexer in this process.
    written: Written,
    /// Bumped when feed entries became durable ([`ChangeFeed::feed_signal`]).
    signal: tokio::sync::watch::Sender<u64>,
    /// Writers share `fdatasync`s ([`sync`]).
    group: sync::GroupSync,
}

/// The embedded backend. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("retention_ms", &self.inner.retention_ms).finish_non_exhaustive()
    }
}

/// Memtable size of each keyspace (fjall's default is 64 MiB). Writes stall for a moment while
/// a full memtable is sealed and its flush starts, and the trips keyspace (one summary rewrite
/// per message) filled 64 MiB every few seconds under load; 16 MiB memtables flush in a quarter
/// of the time. `tripline bench`, five runs each: freshness p99 1.10 -> 0.94 s and durable p99
/// 0.71 -> 0.61 s at the median, peak RSS 1,058 -> 896 MB. 8 MiB (2026-12-03, five pairs): peak
/// RSS 296-324 -> 256-305 MB, throughput and freshness within noise (docs/benchmarks.md,
/// "Decisions"). Applies to keyspaces created after the change (fjall keeps a keyspace's first
/// setting).
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// How every keyspace is created: [`MEMTABLE_BYTES`] memtables, and block indexes and bloom
/// filters partitioned at every level. fjall keeps a table's whole index and filter in memory
/// unless they are partitioned, which it does by default only from the fourth level down, so a
/// store's memory grew with the number of keys it held: a flood of rejected points (a key each,
/// and one for its id) took ~26 bytes of memory per stored rejection, 350 MB at 13 M and
/// rising. Partitioned, only each table's small top-level index stays; the partitions go
/// through the block cache like data blocks (docs/benchmarks.md, "A flood of rejected points").
/// fjall keeps a keyspace's settings from its creation: a store created before keeps the old
/// ones.
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        .index_block_partitioning_policy(PartitioningPolicy::all(true))
        .filter_block_partitioning_policy(PartitioningPolicy::all(true))
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded { detail: error.to_string() }
}

/// Reads the expiry of a stored value (for [`EmbeddedStore::purge_expired`]).
type Expiry = fn(&[u8]) -> StoreResult<i64>;

fn chunk_expiry(value: &[u8]) -> StoreResult<i64> {
    Ok(decode_postcard::<ChunkValue<'_>>(value, "point_chunks")?.expires_at_ms)
}

fn rejection_expiry(value: &[u8]) -> StoreResult<i64> {
    Ok(decode_json::<Expiring<serde::de::IgnoredAny>>(value, "rejections")?.expires_at_ms)
}

/// The keyspace of points stored one row each, before chunks.
const LEGACY_POINTS: &str = "points";

/// Points moved per atomic write while moving a store to chunks.
const MOVE_BATCH_POINTS: usize = 100_000;

/// Moves points stored one row each (the layout before chunks) into chunks, then drops their
/// keyspace; returns how many moved. Interrupted, it runs again at the next open: points
/// written into chunks twice still read back once.
fn move_points_to_chunks(db: &Database, chunks: &Keyspace) -> StoreResult<u64> {
    if !db.keyspace_exists(LEGACY_POINTS) {
        return Ok(0);
    }
    let legacy = db.keyspace(LEGACY_POINTS, KeyspaceCreateOptions::default).map_err(db_error)?;
    let corrupt = |detail: String| StoreError::Corrupt { table: "points", detail };
    let write = |points: &mut Vec<StoredPoint>, expires: i64| -> StoreResult<()> {
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        for (key, value) in chunk_entries(points, false, expires)? {
            batch.insert(chunks, key, value);
        }
        points.clear();
        batch.commit().map_err(db_error)
    };
    let (mut pending, mut expires, mut moved) = (Vec::new(), 0, 0u64);
    for guard in legacy.iter() {
        let (key, value) = guard.into_inner().map_err(db_error)?;
        let end = key.iter().position(|&b| b == 0).ok_or_else(|| corrupt("point key without vehicle".to_owned()))?;
        let vehicle = std::str::from_utf8(&key[..end]).map_err(|e| corrupt(e.to_string()))?;
        let row: PointRow<'_> = decode_postcard(&value, "points")?;
        expires = expires.max(row.expires_at_ms);
        pending.push(StoredPoint {
            vehicle_id: VehicleId::parse(vehicle).map_err(|e| corrupt(e.to_string()))?,
            trip_id: TripId::parse(&row.trip_id).map_err(|e| corrupt(e.to_string()))?,
            point: row.point(),
            derived: row.derived.into_owned(),
        });
        moved += 1;
        if pending.len() >= MOVE_BATCH_POINTS {
            write(&mut pending, expires)?;
        }
    }
    write(&mut pending, expires)?;
    db.delete_keyspace(legacy).map_err(db_error)?;
    Ok(moved)
}

/// `seconds` in milliseconds, at most `i64::MAX`.
fn millis(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[derive(Serialize, Deserialize)]
struct TenantRow {
    api_key_hash: String,
    created_at_ms: i64,
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `config.path`. Blocking; call before starting work.
    pub fn open(config: &EmbeddedConfig) -> StoreResult<Self> {
        std::fs::create_dir_all(&config.path).map_err(db_error)?;
        let db = Database::builder(&config.path).open().map_err(db_error)?;
        let open = |name: &str| db.keyspace(name, keyspace_options).map_err(db_error);
        let feed = open("feed")?;
        let next = match feed.last_key_value() {
            Some(guard) => guard.key().map_err(db_error).map(|k| read_i64(&k).map_or(1, |seq| seq as u64 + 1))?,
            None => 1,
        };
        let chunks = open("point_chunks")?;
        let moved = move_points_to_chunks(&db, &chunks)?;
        if moved > 0 {
            tracing::info!(points = moved, "embedded store: points moved to chunks");
        }
        let (trips, open_trips) = (open("trips")?, open("open_trips")?);
        let marked = open_trips::fill_once(&db, &trips, &open_trips)?;
        if marked > 0 {
            tracing::info!(trips = marked, "embedded store: open trips listed");
        }
        let inner = Inner {
            chunks,
            trips,
            open_trips,
            rejections: open("rejections")?,
            rejection_ids: open("rejection_ids")?,
            tenants: open("tenants")?,
            api_keys: open("api_keys")?,
            vehicles: open("vehicles")?,
            vehicle_secrets: open("vehicle_secrets")?,
            feed,
            webhooks: open("webhooks")?,
            webhook_cursors: open("webhook_cursors")?,
            outbox: open("outbox")?,
            deliveries: open("deliveries")?,
            feed_next: Mutex::new(next),
            group: sync::GroupSync::new(next),
            registry_lock: Mutex::new(()),
            written: Written::new(WRITER),
            signal: tokio::sync::watch::Sender::new(0),
            retention_ms: millis(config.retention_s),
            rejection_retention_ms: millis(config.rejection_retention_s),
            db,
        };
        Ok(EmbeddedStore { inner: Arc::new(inner) })
    }

    /// A store in a fresh temporary directory, deleted on drop of the returned guard.
    pub fn for_test(retention: Duration) -> StoreResult<(Self, tempfile::TempDir)> {
        let dir = tempfile::Builder::new().prefix("tripline-store-").tempdir().map_err(db_error)?;
        let retention_s = retention.as_secs().max(1);
        let store = Self::open(&EmbeddedConfig {
            path: dir.path().to_path_buf(),
            retention_s,
            rejection_retention_s: retention_s,
        })?;
        Ok((store, dir))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| db_error(format!("store task failed: {e}")))?
    }

    /// Deletes expired points, trips, rejections and delivery attempts, and change-feed entries
    /// older than [`crate::FEED_RETENTION_S`]; returns how many records went.
    pub async fn purge_expired(&self) -> StoreResult<u64> {
        self.purge_expired_at(now_ms()).await
    }

    /// [`EmbeddedStore::purge_expired`] as of `now` (Unix milliseconds).
    pub async fn purge_expired_at(&self, now: i64) -> StoreResult<u64> {
        self.blocking(move |inner| {
            let mut purged = 0u64;
            let kinds: [(&Keyspace, Expiry); 5] = [
                (&inner.chunks, chunk_expiry),
                (&inner.trips, trip_value_expiry),
                (&inner.open_trips, open_trips::expiry),
                (&inner.rejections, rejection_expiry),
                (&inner.deliveries, rejection_expiry),
            ];
            for (keyspace, expiry) in kinds {
                purged += purge_in_steps(&inner.db, keyspace, PURGE_STEP, |_, value| Ok(Some(expiry(value)? <= now)))?;
            }
            // The feed in sequence order is in write order: its old entries are a prefix. Entries
            // written before they carried their time (0) stay; they are few and end. The last
            // entry stays whatever its age: a reopened store numbers on from it, so a reader's
            // checkpoint never meets a number twice.
            let oldest_kept = now.saturating_sub((crate::FEED_RETENTION_S * 1000) as i64);
            let last = inner.feed.last_key_value().map(|guard| guard.key().map_err(db_error)).transpose()?;
            purged += purge_in_steps(&inner.db, &inner.feed, PURGE_STEP, |key, value| {
                if Some(key) == last.as_deref() {
                    return Ok(None);
                }
                let at_ms = decode_json::<Change>(value, "feed")?.at_ms;
                Ok(if at_ms >= oldest_kept { None } else { Some(at_ms > 0) })
            })?;
            Ok(purged)
        })
        .await
    }
}

/// Entries a purge reads under one snapshot. An open iterator keeps every memtable written while
/// it is open (fjall holds on to the versions it saw), so one pass over a keyspace of millions of
/// entries under load held every write of the pass in memory: ~25 MB/s while rejections were
/// written at 30,000 a second, over a gigabyte by the end (docs/benchmarks.md, "A flood of
/// rejected points").
const PURGE_STEP: usize = 10_000;

/// Deletes the entries of `keyspace` that `verdict` condemns (`Some(true)`), `step` at a time
/// ([`PURGE_STEP`]), each step with a fresh iterator and its own durable batch; `None` ends the
/// scan. Returns how many it deleted.
fn purge_in_steps(
    db: &Database,
    keyspace: &Keyspace,
    step: usize,
    mut verdict: impl FnMut(&[u8], &[u8]) -> StoreResult<Option<bool>>,
) -> StoreResult<u64> {
    let mut purged = 0u64;
    let mut after: Option<fjall::Slice> = None;
    loop {
        let entries = match &after {
            None => keyspace.iter(),
            Some(key) => keyspace.range::<&[u8], _>((Bound::Excluded(key.as_ref()), Bound::Unbounded)),
        };
        let mut batch = db.batch().durability(Some(PersistMode::SyncData));
        let (mut read, mut done) = (0, false);
        for guard in entries.take(step) {
            let (key, value) = guard.into_inner().map_err(db_error)?;
            read += 1;
            match verdict(&key, &value)? {
                None => {
                    done = true;
                    break;
                }
                Some(true) => {
                    batch.remove(keyspace, key.clone());
                    purged += 1;
                }
                Some(false) => {}
            }
            after = Some(key);
        }
        batch.commit().map_err(db_error)?;
        if done || read < step {
            return Ok(purged);
        }
    }
}

/// What an embedded store takes on disk once compacted ([`EmbeddedStore::compact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    /// The point chunks' tables.
    pub point_chunks_bytes: u64,
    /// Every keyspace's tables, the point chunks' included.
    pub tables_bytes: u64,
    /// The write-ahead journal (what is left of it once every memtable is written out).
    pub journal_bytes: u64,
}

impl EmbeddedStore {
    /// Writes every memtable out and compacts each keyspace into one level, then measures what
    /// the store takes on disk: the figure a benchmark reports as bytes per stored point. Slow
    /// (it rewrites the whole store); for measurements, not for a store taking writes.
    pub async fn compact(&self) -> StoreResult<DiskUsage> {
        self.blocking(|inner| {
            for keyspace in inner.keyspaces() {
                keyspace.rotate_memtable_and_wait().map_err(db_error)?;
                keyspace.major_compact().map_err(db_error)?;
            }
            Ok(DiskUsage {
                point_chunks_bytes: inner.chunks.disk_space(),
                tables_bytes: inner.keyspaces().iter().map(|k| k.disk_space()).sum(),
                journal_bytes: inner.db.journal_disk_space().map_err(db_error)?,
            })
        })
        .await
    }
}

impl Inner {
    fn keyspaces(&self) -> [&Keyspace; 14] {
        [
            &self.chunks,
            &self.trips,
            &self.open_trips,
            &self.rejections,
            &self.rejection_ids,
            &self.tenants,
            &self.api_keys,
            &self.vehicles,
            &self.vehicle_secrets,
            &self.feed,
            &self.webhooks,
            &self.webhook_cursors,
            &self.outbox,
            &self.deliveries,
        ]
    }

    fn expires_at(&self) -> i64 {
        now_ms().saturating_add(self.retention_ms)
    }

    fn rejections_expire_at(&self) -> i64 {
        now_ms().saturating_add(self.rejection_retention_ms)
    }

    /// Commits `batch` and returns once it is durable.
    fn commit(&self, batch: fjall::OwnedWriteBatch) -> StoreResult<()> {
        batch.commit().map_err(db_error)?;
        self.sync(self.group.committed(None))
    }

    /// Commits the batch `fill` makes, whose change-feed entries it numbers from the number it
    /// is given on (it returns the number after its last), and returns once it is durable. The
    /// batch is filled, numbered and committed (readable, its entries not yet read by the feed)
    /// under the feed's numbering lock, and `also` first where the batch reads what it writes,
    /// so entries are committed in sequence order; the sync waits after letting go of both, so
    /// writers committing meanwhile share it.
    fn commit_numbered(
        &self,
        also: Option<&Mutex<()>>,
        writes: Vec<(TripKey, Option<TripRecord>)>,
        fill: impl FnOnce(&mut fjall::OwnedWriteBatch, u64) -> StoreResult<u64>,
    ) -> StoreResult<()> {
        let ticket = {
            let _also = also.map(Mutex::lock).transpose().map_err(db_error)?;
            let mut next = self.feed_next.lock().map_err(db_error)?;
            let mut batch = self.batch();
            let seq = fill(&mut batch, *next)?;
            batch.commit().map_err(db_error)?;
            let ticket = self.group.committed(Some(sync::FeedEntries { first: *next, next: seq, writes }));
            *next = seq;
            ticket
        };
        self.sync(ticket)
    }

    /// Returns once the batch of `ticket` is durable: one `fdatasync` covers every batch
    /// committed before it began. Feed entries that became durable are kept as written (for an
    /// indexer in this process), in sequence order, and followers are woken.
    fn sync(&self, ticket: sync::Ticket) -> StoreResult<()> {
        self.group.wait(
            ticket,
            || self.db.persist(PersistMode::SyncData).map_err(db_error),
            |synced| {
                for entries in synced.entries {
                    self.written.keep_from(entries.first, entries.writes);
                }
                self.signal.send_modify(|n| *n += 1);
            },
        )
    }

    /// The feed key below which entries are durable, the end of what the feed reads: a
    /// committed batch is readable before its sync.
    fn feed_durable_bound(&self) -> Vec<u8> {
        i64_bytes(self.group.feed_durable() as i64)
    }

    /// A batch for [`Inner::commit`] (synced by the group, not by the batch itself).
    fn batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(None)
    }

    /// `vehicle`'s unexpired chunks that may hold points in `[from_ms, to_ms)`, in key order
    /// (start, stamp), read lazily.
    fn chunks_overlapping(
        &self,
        vehicle: &VehicleId,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = StoreResult<ChunkRow>> + '_ {
        let lo = point_bound(vehicle.as_str(), from_ms.saturating_sub(MAX_CHUNK_SPAN_MS));
        let hi = point_bound(vehicle.as_str(), to_ms.max(from_ms));
        let now = now_ms();
        self.chunks
            .range(lo..hi)
            .map(move |guard| {
                let (key, value) = guard.into_inner().map_err(db_error)?;
                let stored: ChunkValue<'_> = decode_postcard(&value, "point_chunks")?;
                let live = stored.expires_at_ms > now && stored.end_ts >= from_ms;
                live.then(|| stored.row(&key)).transpose()
            })
            .filter_map(StoreResult::transpose)
    }

    fn get_trip(&self, key: &[u8]) -> StoreResult<Option<TripRecord>> {
        let Some(value) = self.trips.get(key).map_err(db_error)? else { return Ok(None) };
        decode_trip_value(&value, now_ms())
    }
}

fn trip_key(tenant: &str, trip_id: &str, vehicle: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + trip_id.len() + vehicle.len() + 3);
    push_text(&mut key, tenant);
    push_text(&mut key, trip_id);
    push_text(&mut key, vehicle);
    key
}

fn trip_prefix(tenant: &str, trip_id: &str) -> Vec<u8> {
    let mut key = Vec::new();
    push_text(&mut key, tenant);
    push_text(&mut key, trip_id);
    key
}

/// Rejections of one tenant (empty name: no tenant), newest first: `tenant \0 (MAX - t) id`.
/// Every key that starts with the text `owner` (as `push_text` writes it): from `owner \0` up to
/// `owner \1` (what follows never holds a 0 or 1 byte).
fn owned_range(owner: &str) -> std::ops::Range<Vec<u8>> {
    let mut lo = Vec::with_capacity(owner.len() + 1);
    push_text(&mut lo, owner);
    let mut hi = lo.clone();
    if let Some(last) = hi.last_mut() {
        *last = 1;
    }
    lo..hi
}

/// A page, newest first, of a keyspace keyed by [`rejection_key`] holding expiring JSON
/// records: `owner`'s unexpired records after the cursor `after` (time, id), at most `limit`,
/// and the cursor after them (`position` tells a record's time and id).
fn newest_first_page<T: serde::de::DeserializeOwned>(
    keyspace: &Keyspace,
    table: &'static str,
    owner: Option<&TenantId>,
    after: Option<&(i64, String)>,
    limit: usize,
    position: impl Fn(&T) -> (i64, &str),
) -> StoreResult<Page<T>> {
    let std::ops::Range { start: prefix, end: hi } = owned_range(owner.map_or("", TenantId::as_str));
    let lo = match after {
        Some((at, id)) => {
            let mut key = rejection_key(owner, *at, id);
            key.push(0);
            key
        }
        None => prefix,
    };
    let now = now_ms();
    let mut items: Vec<T> = Vec::new();
    for guard in keyspace.range(lo..hi) {
        if items.len() == limit {
            break;
        }
        let row: Expiring<T> = decode_json(&guard.value().map_err(db_error)?, table)?;
        if row.expires_at_ms > now {
            items.push(row.record);
        }
    }
    let next = (items.len() == limit)
        .then(|| {
            items.last().map(|item| {
                let (at, id) = position(item);
                rejection_cursor(at, id)
            })
        })
        .flatten();
    Ok(Page { items, next })
}

fn rejection_key(tenant: Option<&TenantId>, received_at_ms: i64, id: &str) -> Vec<u8> {
    let mut key = Vec::new();
    push_text(&mut key, tenant.map_or("", TenantId::as_str));
    push_i64(&mut key, i64::MAX - received_at_ms);
    key.extend_from_slice(id.as_bytes());
    key
}

impl Registry for EmbeddedStore {
    async fn create_tenant(&self, tenant: &TenantId, api_key_hash: &str) -> StoreResult<()> {
        let (tenant, hash) = (tenant.clone(), api_key_hash.to_owned());
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            if inner.tenants.contains_key(tenant.as_str()).map_err(db_error)? {
                return Err(StoreError::TenantExists { tenant });
            }
            let row = encode_json(&TenantRow { api_key_hash: hash.clone(), created_at_ms: now_ms() }, "tenants")?;
            let mut batch = inner.batch();
            batch.insert(&inner.tenants, tenant.as_str(), row);
            batch.insert(&inner.api_keys, hash.as_str(), tenant.as_str());
            inner.commit(batch)
        })
        .await
    }

    async fn tenant_for_key(&self, api_key_hash: &str) -> StoreResult<Option<TenantId>> {
        let hash = api_key_hash.to_owned();
        self.blocking(move |inner| {
            let Some(value) = inner.api_keys.get(hash.as_str()).map_err(db_error)? else { return Ok(None) };
            let text = std::str::from_utf8(&value)
                .map_err(|e| StoreError::Corrupt { table: "api_keys", detail: e.to_string() })?;
            TenantId::parse(text)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { table: "api_keys", detail: e.to_string() })
        })
        .await
    }

    async fn replace_api_key(&self, tenant: &TenantId, api_key_hash: Option<&str>) -> StoreResult<Option<String>> {
        let (tenant, hash) = (tenant.clone(), api_key_hash.map(str::to_owned));
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            let Some(value) = inner.tenants.get(tenant.as_str()).map_err(db_error)? else {
                return Err(StoreError::UnknownTenant { tenant });
            };
            let row: TenantRow = decode_json(&value, "tenants")?;
            let old = (!row.api_key_hash.is_empty()).then(|| row.api_key_hash.clone());
            let mut batch = inner.batch();
            if let Some(old) = &old {
                batch.remove(&inner.api_keys, old.as_str());
            }
            let new = TenantRow { api_key_hash: hash.clone().unwrap_or_default(), created_at_ms: row.created_at_ms };
            batch.insert(&inner.tenants, tenant.as_str(), encode_json(&new, "tenants")?);
            if let Some(hash) = &hash {
                batch.insert(&inner.api_keys, hash.as_str(), tenant.as_str());
            }
            inner.commit(batch)?;
            Ok(old)
        })
        .await
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> StoreResult<bool> {
        let tenant = tenant.clone();
        self.blocking(move |inner| inner.tenants.contains_key(tenant.as_str()).map_err(db_error)).await
    }

    async fn add_vehicles(&self, tenant: &TenantId, vehicles: &[VehicleId]) -> StoreResult<()> {
        let (tenant, vehicles) = (tenant.clone(), vehicles.to_vec());
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            if !inner.tenants.contains_key(tenant.as_str()).map_err(db_error)? {
                return Err(StoreError::UnknownTenant { tenant });
            }
            let mut batch = inner.batch();
            for vehicle in vehicles {
                if let Some(owner) = inner.vehicles.get(vehicle.as_str()).map_err(db_error)? {
                    if owner.as_ref() != tenant.as_str().as_bytes() {
                        let owner = TenantId::parse(&String::from_utf8_lossy(&owner))
                            .map_err(|e| StoreError::Corrupt { table: "vehicles", detail: e.to_string() })?;
                        return Err(StoreError::VehicleOwned { vehicle, owner });
                    }
                    continue;
                }
                batch.insert(&inner.vehicles, vehicle.as_str(), tenant.as_str());
            }
            inner.commit(batch)
        })
        .await
    }

    async fn vehicle_tenant(&self, vehicle: &VehicleId) -> StoreResult<Option<TenantId>> {
        let vehicle = vehicle.clone();
        self.blocking(move |inner| {
            let Some(value) = inner.vehicles.get(vehicle.as_str()).map_err(db_error)? else { return Ok(None) };
            TenantId::parse(&String::from_utf8_lossy(&value))
                .map(Some)
                .map_err(|e| StoreError::Corrupt { table: "vehicles", detail: e.to_string() })
        })
        .await
    }

    async fn set_vehicle_secrets(&self, secrets: &[(VehicleId, Option<String>)]) -> StoreResult<()> {
        let secrets = secrets.to_vec();
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            let mut batch = inner.batch();
            for (vehicle, secret) in secrets {
                if !inner.vehicles.contains_key(vehicle.as_str()).map_err(db_error)? {
                    return Err(StoreError::UnknownVehicle { vehicle });
                }
                match secret {
                    Some(hash) => batch.insert(&inner.vehicle_secrets, vehicle.as_str(), hash.as_str()),
                    None => batch.remove(&inner.vehicle_secrets, vehicle.as_str()),
                }
            }
            inner.commit(batch)
        })
        .await
    }

    async fn all_vehicle_secrets(&self) -> StoreResult<Vec<(VehicleId, String)>> {
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for entry in inner.vehicle_secrets.iter() {
                let (key, value) = entry.into_inner().map_err(db_error)?;
                let vehicle = VehicleId::parse(&String::from_utf8_lossy(&key))
                    .map_err(|e| StoreError::Corrupt { table: "vehicle_secrets", detail: e.to_string() })?;
                out.push((vehicle, String::from_utf8_lossy(&value).into_owned()));
            }
            Ok(out)
        })
        .await
    }

    async fn vehicle_secret(&self, vehicle: &VehicleId) -> StoreResult<Option<String>> {
        let vehicle = vehicle.clone();
        self.blocking(move |inner| {
            let value = inner.vehicle_secrets.get(vehicle.as_str()).map_err(db_error)?;
            Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
        .await
    }
}

impl PointStore for EmbeddedStore {
    async fn write_points(&self, points: &[StoredPoint]) -> StoreResult<()> {
        if points.is_empty() {
            return Ok(());
        }
        let rows = chunk_entries(points, false, self.inner.expires_at())?;
        self.blocking(move |inner| {
            let mut batch = inner.batch();
            for (key, value) in rows {
                batch.insert(&inner.chunks, key, value);
            }
            inner.commit(batch)
        })
        .await
    }

    async fn vehicle_points(&self, vehicle: &VehicleId, from_ms: i64, to_ms: i64) -> StoreResult<Vec<StoredPoint>> {
        check_point_range(from_ms, to_ms)?;
        let vehicle = vehicle.clone();
        self.blocking(move |inner| {
            let mut resolved = Resolved::default();
            for row in inner.chunks_overlapping(&vehicle, from_ms, to_ms) {
                let row = row?;
                resolved.add(row.id.stamp, decode(&vehicle, &row.trip_id, &row.points)?);
            }
            Ok(resolved.within(from_ms, to_ms))
        })
        .await
    }

    async fn trip_points(
        &self,
        tenant: &TenantId,
        trip_id: &TripId,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Option<Page<StoredPoint>>> {
        let (tenant, trip_id, cursor) = (tenant.clone(), trip_id.clone(), cursor.map(str::to_owned));
        self.blocking(move |inner| {
            let Some(trip) = first_trip(inner, &tenant, &trip_id)? else { return Ok(None) };
            let mut page = TripPage::for_trip(&trip, cursor.as_deref(), limit)?;
            let (from, to) = page.range();
            for row in inner.chunks_overlapping(page.vehicle(), from, to) {
                let row = row?;
                if page.is_complete(row.id.start_ts) {
                    break;
                }
                page.add(&row)?;
            }
            Ok(Some(page.finish()))
        })
        .await
    }

    async fn seal_trip(&self, vehicle: &VehicleId, trip_id: &TripId, from_ms: i64, to_ms: i64) -> StoreResult<bool> {
        self.seal(vehicle, trip_id, from_ms, to_ms, SealSteps::All).await
    }

    async fn seal_trip_interrupted(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<bool> {
        self.seal(vehicle, trip_id, from_ms, to_ms, SealSteps::WriteOnly).await
    }
}

/// How much of a seal to do (all of it, except in the tests of a crash between its steps).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SealSteps {
    All,
    WriteOnly,
}

impl EmbeddedStore {
    /// Seals a trip in one atomic write: its sealed chunks in, the chunks they replace out.
    async fn seal(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
        steps: SealSteps,
    ) -> StoreResult<bool> {
        let (vehicle, trip_id) = (vehicle.clone(), trip_id.clone());
        let expires = self.inner.expires_at();
        self.blocking(move |inner| {
            let rows = inner
                .chunks_overlapping(&vehicle, from_ms, to_ms.saturating_add(1))
                .collect::<StoreResult<Vec<_>>>()?;
            let Some(plan) = SealPlan::of(&vehicle, &trip_id, (from_ms, to_ms), &rows)? else { return Ok(false) };
            let mut batch = inner.batch();
            for (key, value) in chunk_entries(&plan.points, true, expires)? {
                batch.insert(&inner.chunks, key, value);
            }
            if steps == SealSteps::All {
                for id in plan.obsolete {
                    batch.remove(&inner.chunks, chunk_key(vehicle.as_str(), id.start_ts, id.stamp));
                }
            }
            inner.commit(batch)?;
            Ok(true)
        })
        .await
    }
}

/// The tenant's trip with this id (the first vehicle's, should two of its vehicles share an id).
fn first_trip(inner: &Inner, tenant: &TenantId, trip_id: &TripId) -> StoreResult<Option<TripRecord>> {
    for guard in inner.trips.prefix(trip_prefix(tenant.as_str(), trip_id.as_str())) {
        let (key, _) = guard.into_inner().map_err(db_error)?;
        if let Some(trip) = inner.get_trip(&key)? {
            return Ok(Some(trip));
        }
    }
    Ok(None)
}

impl TripStore for EmbeddedStore {
    async fn upsert_trips(&self, trips: &[TripRecord]) -> StoreResult<()> {
        if trips.is_empty() {
            return Ok(());
        }
        let expires = self.inner.expires_at();
        let rows = trip_rows(trips, &HashMap::new(), expires)?;
        let writes = self.inner.written.writes(&[], trips);
        self.blocking(move |inner| {
            inner.commit_numbered(None, writes, |batch, first| add_trip_rows(inner, batch, rows, expires, first))
        })
        .await
    }

    async fn delete_trip(&self, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> StoreResult<()> {
        let key = trip_key(tenant.as_str(), trip_id.as_str(), vehicle.as_str());
        let change = Change { at_ms: now_ms(), ..Change::of(tenant, vehicle, trip_id) };
        let writes = self.inner.written.writes(&[change.key()], &[]);
        let change = encode_json(&change, "feed")?;
        self.blocking(move |inner| {
            inner.commit_numbered(None, writes, |batch, seq| add_deletes(inner, batch, vec![(key, change)], seq))
        })
        .await
    }

    async fn trip(&self, tenant: &TenantId, trip_id: &TripId) -> StoreResult<Option<TripRecord>> {
        let (tenant, trip_id) = (tenant.clone(), trip_id.clone());
        self.blocking(move |inner| first_trip(inner, &tenant, &trip_id)).await
    }

    async fn trip_of_vehicle(
        &self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
    ) -> StoreResult<Option<TripRecord>> {
        let key = trip_key(tenant.as_str(), trip_id.as_str(), vehicle.as_str());
        self.blocking(move |inner| inner.get_trip(&key)).await
    }

    async fn scan_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        let after = cursor.map(unhex).transpose()?;
        self.blocking(move |inner| {
            let mut items = Vec::new();
            let mut last = None;
            let iter = match &after {
                Some(key) => {
                    let mut lo = key.clone();
                    lo.push(0);
                    inner.trips.range(lo..)
                }
                None => inner.trips.iter(),
            };
            let now = now_ms();
            for guard in iter {
                if items.len() == limit {
                    break;
                }
                let (key, value) = guard.into_inner().map_err(db_error)?;
                last = Some(key.to_vec());
                items.extend(decode_trip_value(&value, now)?);
            }
            let next = (items.len() == limit).then(|| last.map(|k| hex(&k))).flatten();
            Ok(Page { items, next })
        })
        .await
    }

    async fn scan_open_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        let cursor = cursor.map(str::to_owned);
        self.blocking(move |inner| open_trips::page(inner, cursor.as_deref(), limit)).await
    }

    fn keep_written(&self) {
        self.inner.written.enable();
    }

    fn take_written(&self, key: &TripKey, writer: &str, seq: u64) -> Option<KeptWrite> {
        self.inner.written.take(key, writer, seq).map(KeptWrite::from)
    }
}

/// A trip row: key, value, the change-feed entry announcing it, and whether the trip is open.
type TripRow = (Vec<u8>, Vec<u8>, Vec<u8>, bool);

/// Chunk rows of `points` as embedded keys and values.
fn chunk_entries(points: &[StoredPoint], sealed: bool, expires: i64) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
    chunk_rows(points, sealed)
        .into_iter()
        .map(|(vehicle, row)| {
            let key = chunk_key(vehicle.as_str(), row.id.start_ts, row.id.stamp);
            Ok((key, encode_postcard(&ChunkValue::of(&row, expires), "point_chunks")?))
        })
        .collect()
}

/// Trip rows (the feed entry with the trip's `notices`).
fn trip_rows(trips: &[TripRecord], notices: &HashMap<TripKey, Vec<Notice>>, expires: i64) -> StoreResult<Vec<TripRow>> {
    let at_ms = now_ms();
    trips
        .iter()
        .map(|t| {
            let key = trip_key(t.tenant.as_str(), t.summary.trip_id.as_str(), t.summary.vehicle_id.as_str());
            let change = Change::of_write(t, notices.get(&TripKey::of(t)), at_ms);
            let value = encode_trip_value(expires, t)?;
            let open = t.summary.status == tripline_model::TripStatus::Active;
            Ok((key, value, encode_json(&change, "feed")?, open))
        })
        .collect()
}

/// Adds trip rows, their marks on the list of open trips and their feed entries from sequence
/// number `seq`; returns the next one.
fn add_trip_rows(
    inner: &Inner,
    batch: &mut fjall::OwnedWriteBatch,
    rows: Vec<TripRow>,
    expires: i64,
    mut seq: u64,
) -> StoreResult<u64> {
    for (key, value, change, open) in rows {
        open_trips::mark(inner, batch, &key, open, expires)?;
        batch.insert(&inner.trips, key, value);
        add_feed_entry(inner, batch, seq, change);
        seq += 1;
    }
    Ok(seq)
}

/// Removes trips (key, the feed entry saying so) with change-feed entries numbered from `seq`
/// on; returns the number after the last.
fn add_deletes(
    inner: &Inner,
    batch: &mut fjall::OwnedWriteBatch,
    deletes: Vec<(Vec<u8>, Vec<u8>)>,
    mut seq: u64,
) -> StoreResult<u64> {
    for (key, change) in deletes {
        open_trips::mark(inner, batch, &key, false, 0)?;
        batch.remove(&inner.trips, key);
        add_feed_entry(inner, batch, seq, change);
        seq += 1;
    }
    Ok(seq)
}

fn add_feed_entry(inner: &Inner, batch: &mut fjall::OwnedWriteBatch, seq: u64, change: Vec<u8>) {
    batch.insert(&inner.feed, i64_bytes(seq as i64), change);
}

/// Adds rejections, keeping the first `received_at_ms` of a known id. Call with the registry
/// lock held.
fn add_rejections(
    inner: &Inner,
    batch: &mut fjall::OwnedWriteBatch,
    rejections: Vec<Rejection>,
    expires: i64,
) -> StoreResult<()> {
    for mut rejection in first_receipts(rejections) {
        if let Some(first) = inner.rejection_ids.get(rejection.id.as_str()).map_err(db_error)? {
            rejection.received_at_ms = read_i64(&first).unwrap_or(rejection.received_at_ms);
        } else {
            batch.insert(&inner.rejection_ids, rejection.id.as_str(), i64_bytes(rejection.received_at_ms));
        }
        let key = rejection_key(rejection.tenant.as_ref(), rejection.received_at_ms, &rejection.id);
        batch.insert(
            &inner.rejections,
            key,
            encode_json(&Expiring { expires_at_ms: expires, record: &rejection }, "rejections")?,
        );
    }
    Ok(())
}

impl BatchWrite for EmbeddedStore {
    /// One atomic, fsynced write for the whole set.
    async fn write_batch(&self, set: &WriteSet) -> StoreResult<()> {
        let expires = self.inner.expires_at();
        let points = chunk_entries(&set.points, false, expires)?;
        let trips = trip_rows(&set.trips, &set.notices, expires)?;
        let mut deletes = Vec::with_capacity(set.deletes.len());
        for TripKey { tenant, vehicle_id: vehicle, trip_id } in &set.deletes {
            let change = Change { at_ms: now_ms(), ..Change::of(tenant, vehicle, trip_id) };
            deletes
                .push((trip_key(tenant.as_str(), trip_id.as_str(), vehicle.as_str()), encode_json(&change, "feed")?));
        }
        let (rejections, rejections_expire) = (set.rejections.clone(), self.inner.rejections_expire_at());
        let writes = self.inner.written.writes(&set.deletes, &set.trips);
        self.blocking(move |inner| {
            // Rejections are read before they are written (the first receipt of an id stays).
            inner.commit_numbered(Some(&inner.registry_lock), writes, |batch, seq| {
                for (key, value) in points {
                    batch.insert(&inner.chunks, key, value);
                }
                add_rejections(inner, batch, rejections, rejections_expire)?;
                let seq = add_deletes(inner, batch, deletes, seq)?;
                add_trip_rows(inner, batch, trips, expires, seq)
            })
        })
        .await
    }
}

impl RejectionStore for EmbeddedStore {
    async fn append_rejections(&self, rejections: &[Rejection]) -> StoreResult<()> {
        if rejections.is_empty() {
            return Ok(());
        }
        let rejections = rejections.to_vec();
        let expires = self.inner.rejections_expire_at();
        self.blocking(move |inner| {
            let _guard = inner.registry_lock.lock().map_err(db_error)?;
            let mut batch = inner.batch();
            add_rejections(inner, &mut batch, rejections, expires)?;
            inner.commit(batch)
        })
        .await
    }

    async fn rejections(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<Rejection>> {
        let after = cursor.map(parse_rejection_cursor).transpose()?;
        let tenant = tenant.cloned();
        self.blocking(move |inner| {
            newest_first_page(
                &inner.rejections,
                "rejections",
                tenant.as_ref(),
                after.as_ref(),
                limit,
                |r: &Rejection| (r.received_at_ms, r.id.as_str()),
            )
        })
        .await
    }
}

impl ChangeFeed for EmbeddedStore {
    async fn read_changes(&self, checkpoint: &Checkpoint, limit: usize) -> StoreResult<ChangeBatch> {
        let from = checkpoint.position(WRITER);
        let mut checkpoint = checkpoint.clone();
        self.blocking(move |inner| {
            let mut changes = Vec::new();
            let mut last = from;
            for guard in inner.feed.range(i64_bytes(from as i64 + 1)..inner.feed_durable_bound()).take(limit) {
                let (key, value) = guard.into_inner().map_err(db_error)?;
                last = read_i64(&key).map_or(last, |seq| seq as u64);
                let change = decode_json::<Change>(&value, "feed")?;
                changes.push(Change { writer: WRITER.to_owned(), seq: last, ..change });
            }
            if last > from {
                checkpoint.positions.insert(WRITER.to_owned(), last);
            }
            Ok(ChangeBatch { changes, checkpoint })
        })
        .await
    }

    async fn feed_head(&self) -> StoreResult<Checkpoint> {
        self.blocking(|inner| {
            let mut head = Checkpoint::default();
            if let Some(guard) = inner.feed.range(..inner.feed_durable_bound()).next_back() {
                let (key, _) = guard.into_inner().map_err(db_error)?;
                if let Some(seq) = read_i64(&key) {
                    head.positions.insert(WRITER.to_owned(), seq as u64);
                }
            }
            Ok(head)
        })
        .await
    }

    fn feed_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.signal.subscribe())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::records::Derived;

    #[test]
    fn a_purge_goes_over_a_keyspace_in_steps_and_stops_where_told() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let keyspace = db.keyspace("k", keyspace_options).unwrap();
        for k in 0u8..20 {
            keyspace.insert([k], [k % 2]).unwrap();
        }
        // Odd values are condemned; the scan ends at key 17, in its sixth step of three entries.
        let purged =
            purge_in_steps(&db, &keyspace, 3, |key, value| Ok((key[0] != 17).then_some(value[0] == 1))).unwrap();
        assert_eq!(purged, 8, "1, 3, …, 15");
        let left: Vec<u8> = keyspace.iter().map(|g| g.key().unwrap()[0]).collect();
        let mut expected: Vec<u8> = (0..17).filter(|k| k % 2 == 0).collect();
        expected.extend([17, 18, 19]);
        assert_eq!(left, expected);
        // Every entry condemned, over an exact multiple of the step: nothing is left.
        assert_eq!(purge_in_steps(&db, &keyspace, 4, |_, _| Ok(Some(true))).unwrap(), 12);
        assert_eq!(keyspace.iter().count(), 0);
    }

    #[tokio::test]
    async fn points_stored_one_row_each_move_to_chunks_on_open() {
        let (store, dir) = EmbeddedStore::for_test(Duration::from_secs(86_400)).unwrap();
        drop(store);
        let vehicle = VehicleId::parse("car-1").unwrap();
        let trip = TripId::parse("t1").unwrap();
        let t0 = 1_795_564_800_000;
        {
            // The layout before chunks: one row per point, keyed by vehicle, time and seq key.
            let db = Database::builder(dir.path()).open().unwrap();
            let legacy = db.keyspace(LEGACY_POINTS, KeyspaceCreateOptions::default).unwrap();
            let derived = Derived { distance_m: 1.5, speed_mps: 3.0, moving: true, ..Derived::default() };
            for i in 0..50i64 {
                let point = tripline_model::Point {
                    seq: Some(i as u64),
                    ..tripline_model::Point::new(t0 + i * 1000, 52.5, 13.4 + i as f64 / 1e4)
                };
                let key = crate::records::PointKey::of(&point);
                let mut k = Vec::new();
                push_text(&mut k, vehicle.as_str());
                push_i64(&mut k, key.ts_ms);
                push_i64(&mut k, key.seq_key);
                let row = PointRow::new(&trip, &point, &derived, now_ms() + 86_400_000);
                legacy.insert(k, encode_postcard(&row, "points").unwrap()).unwrap();
            }
            db.persist(PersistMode::SyncAll).unwrap();
        }
        let store = EmbeddedStore::open(&EmbeddedConfig {
            path: dir.path().to_path_buf(),
            retention_s: 86_400,
            ..EmbeddedConfig::default()
        })
        .unwrap();
        let points = store.vehicle_points(&vehicle, t0, t0 + 60_000).await.unwrap();
        assert_eq!(points.len(), 50);
        assert!(points.iter().all(|p| p.trip_id == trip && p.derived.distance_m == 1.5));
        assert_eq!(points[49].point.lon, 13.4 + 49.0 / 1e4);
        assert!(!store.inner.db.keyspace_exists(LEGACY_POINTS), "the old keyspace is gone");
    }
}
