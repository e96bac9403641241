//! # tripline-store
//!
//! The write store, the source of truth: enriched points, trip summaries and events, rejections,
//! the fleet registry and the change feed the indexer follows. Two backends behind the same small
//! traits: [`ScyllaStore`] (ScyllaDB in production; Apache Cassandra 5 in tests, over the same
//! CQL) and [`EmbeddedStore`] (an LSM store on local disk, for a single machine). One
//! conformance suite (`tests/conformance`) runs the same test functions against both.
//!
//! **Promises.** A write returns `Ok` only once it is durable (embedded: fsynced; ScyllaDB:
//! acknowledged at the configured consistency); a write that cannot reach the store is retried
//! with backoff and then reported as an error, never as done. Every write is idempotent: writing
//! the same points, trip or rejection again changes nothing. Reads for the API are scoped to a
//! tenant: another tenant's trip is not found. The change feed is read in order per writer from a
//! checkpoint, and a reader never passes an entry that is not yet durable.

mod any;
mod chunk;
mod codec;
mod columns;
mod cql;
mod embedded;
mod records;
mod retry;
pub mod tls;
mod trip_encoding;
pub mod webhooks;
mod written;

use std::collections::HashMap;
use std::future::Future;

pub use any::AnyStore;
pub use chunk::{DerivedPrecision, MAX_CHUNK_POINTS, MAX_CHUNK_SPAN_MS};
pub use cql::{CqlConsistency, SCHEMA_VERSION, ScyllaConfig, ScyllaStore};
pub use embedded::{DiskUsage, EmbeddedConfig, EmbeddedStore};
pub use records::{
    Change, ChangeBatch, Checkpoint, DAY_MS, Derived, KeptWrite, MAX_KEPT_PAYLOAD, MAX_POINT_RANGE_DAYS, Page,
    PointKey, Rejection, StoredPoint, TripKey, TripRecord, day_of, rejection_cursor,
};
pub use retry::{Backoff, RetryPolicy};
/// A temporary directory removed on drop, as [`EmbeddedStore::for_test`] returns it.
pub use tempfile::TempDir;
use tripline_model::{TenantId, TripId, VehicleId};
pub use webhooks::{DeliveryAttempt, DeliveryOutcome, OutboxItem, Webhook, WebhookStore};
pub use written::MAX_AGE as WRITTEN_MAX_AGE;

/// How long the change feed keeps its entries: 7 days. A reader (the indexer, a live stream, a
/// webhook) must keep up within it.
pub const FEED_RETENTION_S: u64 = 7 * 86_400;

/// Default retention of points and trips: 400 days.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;

/// Default retention of rejections: 30 days. They are for finding a device or an integration
/// that sends bad data, and each rejected point is kept whole: a device whose clock runs ahead,
/// sampling at 1 Hz, leaves ~26 MB of rejections a day (~300 bytes a point on disk, compacted;
/// docs/benchmarks.md), which the points' 400 days would keep for over a year.
pub const DEFAULT_REJECTION_RETENTION_DAYS: u32 = 30;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached (or kept timing out) for the whole retry budget.
    #[error("store unavailable after {attempts} attempts over {elapsed_ms} ms: {detail}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed_ms: u64,
        /// The last error.
        detail: String,
    },
    /// The store refused a request (schema missing, invalid query): retrying will not help.
    #[error("store refused the request: {detail}")]
    Refused {
        /// What the store said.
        detail: String,
    },
    /// `create_tenant` for a tenant that exists.
    #[error("tenant {tenant} already exists")]
    TenantExists {
        /// The tenant.
        tenant: TenantId,
    },
    /// A registry change naming a tenant that does not exist.
    #[error("unknown tenant {tenant}")]
    UnknownTenant {
        /// The tenant.
        tenant: TenantId,
    },
    /// Registering a vehicle that already belongs to another tenant.
    #[error("vehicle {vehicle} already belongs to tenant {owner}")]
    VehicleOwned {
        /// The vehicle.
        vehicle: VehicleId,
        /// Its tenant.
        owner: TenantId,
    },
    /// A registry change naming a vehicle that is not registered.
    #[error("unknown vehicle {vehicle}")]
    UnknownVehicle {
        /// The vehicle.
        vehicle: VehicleId,
    },
    /// A stored record that cannot be read back.
    #[error("corrupt record in {table}: {detail}")]
    Corrupt {
        /// Where.
        table: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A paging cursor this store did not issue.
    #[error("invalid cursor")]
    BadCursor,
    /// The embedded store's files.
    #[error("embedded store: {detail}")]
    Embedded {
        /// What failed.
        detail: String,
    },
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Tenants, their API keys (hashed) and their vehicles.
pub trait Registry {
    /// Creates a tenant with the hash of its API key; fails if the tenant exists.
    fn create_tenant(&self, tenant: &TenantId, api_key_hash: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// The tenant owning an API key hash.
    fn tenant_for_key(&self, api_key_hash: &str) -> impl Future<Output = StoreResult<Option<TenantId>>> + Send;
    /// Replaces a tenant's API key hash (`None`: no key, every request of the tenant is refused);
    /// the old key stops resolving to the tenant. Returns the old hash.
    fn replace_api_key(
        &self,
        tenant: &TenantId,
        api_key_hash: Option<&str>,
    ) -> impl Future<Output = StoreResult<Option<String>>> + Send;
    /// Whether a tenant exists.
    fn tenant_exists(&self, tenant: &TenantId) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Registers vehicles to a tenant (idempotent; a vehicle of another tenant is an error).
    fn add_vehicles(&self, tenant: &TenantId, vehicles: &[VehicleId]) -> impl Future<Output = StoreResult<()>> + Send;
    /// The tenant a vehicle belongs to.
    fn vehicle_tenant(&self, vehicle: &VehicleId) -> impl Future<Output = StoreResult<Option<TenantId>>> + Send;
    /// Sets registered vehicles' secret hashes (PHC strings); `None` removes one (the vehicle can
    /// no longer connect). A vehicle not registered is an error and nothing is set.
    fn set_vehicle_secrets(
        &self,
        secrets: &[(VehicleId, Option<String>)],
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A vehicle's secret hash, if it has one.
    fn vehicle_secret(&self, vehicle: &VehicleId) -> impl Future<Output = StoreResult<Option<String>>> + Send;
    /// Every vehicle's secret hash (for exporting them to a broker), in no particular order.
    fn all_vehicle_secrets(&self) -> impl Future<Output = StoreResult<Vec<(VehicleId, String)>>> + Send;
}

/// Enriched points.
pub trait PointStore {
    /// Writes points (upserts by vehicle, time and `seq`).
    fn write_points(&self, points: &[StoredPoint]) -> impl Future<Output = StoreResult<()>> + Send;
    /// A vehicle's points with `from_ms <= ts < to_ms`, in time order (for recomputing trips).
    /// The range may span at most [`MAX_POINT_RANGE_DAYS`] days.
    fn vehicle_points(
        &self,
        vehicle: &VehicleId,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = StoreResult<Vec<StoredPoint>>> + Send;
    /// A tenant's trip's points in time order, a page at a time; `None` when the trip is not the
    /// tenant's (or does not exist).
    fn trip_points(
        &self,
        tenant: &TenantId,
        trip_id: &TripId,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Option<Page<StoredPoint>>>> + Send;
    /// Rewrites the chunks of `vehicle`'s trip `trip_id` (points in `[from_ms, to_ms]`) as a
    /// few large sealed chunks and deletes the chunks they replace (for a completed trip). Reads
    /// give the same points before, during and after, and a seal interrupted at any step is
    /// finished by running it again. `false`: nothing to do (already sealed).
    fn seal_trip(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// [`PointStore::seal_trip`] stopped after writing the sealed chunks, before deleting what
    /// they replace: the state a crash between the two steps leaves (for the conformance tests).
    #[doc(hidden)]
    fn seal_trip_interrupted(
        &self,
        vehicle: &VehicleId,
        trip_id: &TripId,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
}

/// Trips, each write also recorded in the change feed.
pub trait TripStore {
    /// Writes trips' summaries and events and appends "trip changed" to the change feed for each.
    fn upsert_trips(&self, trips: &[TripRecord]) -> impl Future<Output = StoreResult<()>> + Send;
    /// Removes a trip (e.g. an automatically cut trip whose start moved) and records the change.
    fn delete_trip(
        &self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A tenant's trip; `None` for another tenant's or a missing trip.
    fn trip(&self, tenant: &TenantId, trip_id: &TripId)
    -> impl Future<Output = StoreResult<Option<TripRecord>>> + Send;
    /// A trip by its full identity, whatever the tenant (for the indexer).
    fn trip_of_vehicle(
        &self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
    ) -> impl Future<Output = StoreResult<Option<TripRecord>>> + Send;
    /// Every trip of every tenant, a page at a time (for `tripline reindex`).
    fn scan_trips(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Page<TripRecord>>> + Send;
    /// The trips not completed, of every tenant, a page at a time (for the pipeline's sweep
    /// after a restart): read from a list of open trips the writes keep, so the work follows the
    /// open trips, not every trip the store holds. A page may hold fewer than `limit` records
    /// (and none) while `next` says there are more.
    fn scan_open_trips(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Page<TripRecord>>> + Send;
    /// From now on, keep each trip this handle (and its clones) writes for a moment, for
    /// [`TripStore::take_written`]: for an indexer in the same process. A backend that cannot
    /// keep them ignores it.
    fn keep_written(&self) {}
    /// The trip as this process last wrote it (written or deleted), when `writer` is this
    /// process's and that write is the one of the change-feed entry `seq` or a later one, not
    /// older than [`WRITTEN_MAX_AGE`]. The entry's own write is handed out once; a later one
    /// stays for its own entry. `None`: read the trip from the store.
    fn take_written(&self, _key: &TripKey, _writer: &str, _seq: u64) -> Option<KeptWrite> {
        None
    }
}

/// Rejected messages and points.
pub trait RejectionStore {
    /// Appends rejections; a rejection with a known id keeps its first `received_at_ms`.
    fn append_rejections(&self, rejections: &[Rejection]) -> impl Future<Output = StoreResult<()>> + Send;
    /// A tenant's rejections (`None`: those no tenant owns), newest first, a page at a time.
    fn rejections(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = StoreResult<Page<Rejection>>> + Send;
}

/// The change feed: "trip X changed", in order per writer.
pub trait ChangeFeed {
    /// Up to `limit` durable changes after `checkpoint`, and the checkpoint after them.
    fn read_changes(
        &self,
        checkpoint: &Checkpoint,
        limit: usize,
    ) -> impl Future<Output = StoreResult<ChangeBatch>> + Send;
    /// The checkpoint at the end of the feed now: every trip announced up to it is readable, so
    /// a full scan started after taking it, followed by the changes after it, misses nothing
    /// (`tripline reindex`).
    fn feed_head(&self) -> impl Future<Output = StoreResult<Checkpoint>> + Send;
    /// A signal whose value changes when entries this handle (or a clone) wrote may have become
    /// readable, for a reader in the same process to wake on instead of waiting out its poll;
    /// other writers' entries still need polling. `None`: the backend gives none.
    fn feed_signal(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// What one enrichment batch writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteSet {
    /// Enriched points.
    pub points: Vec<StoredPoint>,
    /// Rejected messages and points.
    pub rejections: Vec<Rejection>,
    /// Trips to remove (an automatically cut trip whose id changed).
    pub deletes: Vec<TripKey>,
    /// Trips to write, each announced on the change feed.
    pub trips: Vec<TripRecord>,
    /// What the writes of `trips` tell insurers (live stream, webhooks), by trip: kept in the
    /// trip's change-feed entry.
    pub notices: HashMap<TripKey, Vec<tripline_model::Notice>>,
}

/// Writing a [`WriteSet`]: points, rejections and deletions first and trips last, so the change
/// feed never announces a trip whose points are not durable.
pub trait BatchWrite {
    /// Writes the whole set; `Ok` once all of it is durable. The embedded store makes it one
    /// atomic, fsynced write; ScyllaDB writes the parts in order.
    fn write_batch(&self, set: &WriteSet) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Everything a tripline process needs from its store.
pub trait Store:
    Registry
    + PointStore
    + TripStore
    + RejectionStore
    + ChangeFeed
    + BatchWrite
    + WebhookStore
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: Registry
        + PointStore
        + TripStore
        + RejectionStore
        + ChangeFeed
        + BatchWrite
        + WebhookStore
        + Clone
        + Send
        + Sync
        + 'static
{
}
