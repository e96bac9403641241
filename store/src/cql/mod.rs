//! The ScyllaDB backend (also Apache Cassandra 5, over the same CQL; no Scylla-only syntax).
//!
//! Every statement is prepared once, marked idempotent, and routed token-aware by the driver.
//! Points go in unlogged batches that never span partitions, a bounded number at a time; the
//! application retries timeouts and unavailability with backoff ([`RetryPolicy`]).
//!
//! The change feed: each process writes under its own writer id with increasing sequence
//! numbers, into `feed((writer, bucket), seq)`, after the trip rows it announces. Writes may
//! complete out of order, so each writer also publishes a watermark in `feed_writers`: every
//! sequence number at or below it is durable (or was abandoned after an error, in which case the
//! caller retries and the trip is announced again). Readers never read past a watermark.
//!
//! While trips are kept for an indexer in the same process ([`TripStore::keep_written`]), the
//! store also keeps its own latest durable entries in memory (at most [`LOCAL_ENTRIES`]), and
//! [`ChangeFeed::read_changes`] serves this writer's entries from there, up to the watermark it
//! is about to publish, without asking the cluster: the same entries a read after the
//! publication would give. Other writers' entries are read from the cluster, at most every
//! [`OTHERS_EVERY`] while this writer's own keep coming; a reader behind the kept entries reads
//! its own from the cluster too.
//!
//! Points are stored as chunks (`points.rs`, [`crate::chunk`]).

mod migrate;
mod points;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tripline_model::time::now_ms;

use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{ExecutionError, RequestAttemptError};
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::Consistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tripline_model::{TenantId, TripId, VehicleId};

use crate::codec::{parse_rejection_cursor, rejection_cursor};
use crate::records::{Change, ChangeBatch, Checkpoint, Page, Rejection, TripKey, TripRecord, day_of};
use crate::retry::{Attempt, RetryPolicy};
use crate::written::Written;
use crate::{
    BatchWrite, ChangeFeed, DEFAULT_RETENTION_DAYS, PointStore, Registry, RejectionStore, StoreError, StoreResult,
    TripStore, WriteSet,
};

/// Version of the schema `tripline schema apply` creates.
pub const SCHEMA_VERSION: i32 = 2;
/// Change-feed entries per partition of a writer.
const FEED_BUCKET: u64 = 10_000;
/// Change-feed entries and writer watermarks live this long (the indexer must keep up within it).
const FEED_TTL_S: i32 = 7 * 86_400;
/// Partition key of rejections no tenant owns (`*` is outside the tenant-name alphabet, and CQL
/// refuses an empty key).
const UNOWNED: &str = "*";
/// Rows per unlogged batch (all in one partition).
const MAX_BATCH_ROWS: usize = 50;
/// Requests in flight per write call: enough to keep a small cluster busy, bounded so a burst
/// cannot queue unbounded work in the driver.
const MAX_CONCURRENT_REQUESTS: usize = 64;

/// This writer's durable change-feed entries kept in memory for a reader in the same process.
const LOCAL_ENTRIES: usize = 16_384;

/// How often a reader served from memory also reads other writers' entries from the cluster.
const OTHERS_EVERY: Duration = Duration::from_millis(100);

/// Connection and schema settings for ScyllaDB / Cassandra.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace holding tripline's tables.
    pub keyspace: String,
    /// Replicas per data center.
    pub replication_factor: u32,
    /// Data center for `NetworkTopologyStrategy`; default: the contact node's own.
    pub datacenter: Option<String>,
    /// How long points, trips and rejections are kept, in seconds (CQL TTL). Set from the
    /// top-level `retention_days`, not from the `[scylla]` section.
    #[serde(skip)]
    pub retention_s: u64,
    /// Consistency of reads and writes: `one`, `local_quorum` or `quorum`.
    pub consistency: String,
    /// Per-request timeout, milliseconds.
    pub request_timeout_ms: u64,
    /// How long a request is retried before the store is reported unavailable, milliseconds.
    pub retry_budget_ms: u64,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "tripline".to_owned(),
            replication_factor: 1,
            datacenter: None,
            retention_s: u64::from(DEFAULT_RETENTION_DAYS) * 86_400,
            consistency: "local_quorum".to_owned(),
            request_timeout_ms: 5_000,
            retry_budget_ms: 30_000,
        }
    }
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

/// Whether `error` may go away when the request is sent again.
fn classify(error: &ExecutionError) -> Attempt {
    use scylla::errors::DbError;
    let text = error.to_string();
    match error {
        ExecutionError::BadQuery(_) | ExecutionError::UseKeyspaceError(_) => Attempt::Permanent(text),
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => match db {
            DbError::Unavailable { .. }
            | DbError::Overloaded
            | DbError::IsBootstrapping
            | DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::ReadFailure { .. }
            | DbError::WriteFailure { .. }
            | DbError::TruncateError
            | DbError::Unprepared { .. }
            | DbError::ServerError => Attempt::Transient(text),
            _ => Attempt::Permanent(text),
        },
        ExecutionError::LastAttemptError(
            RequestAttemptError::SerializationError(_) | RequestAttemptError::CqlRequestSerialization(_),
        ) => Attempt::Permanent(text),
        _ => Attempt::Transient(text),
    }
}

/// Classifies an error known only by its text (the pager's errors): the database's words for a
/// request that can never succeed make it permanent; anything else may pass.
fn classify_text(text: String) -> Attempt {
    const PERMANENT: [&str; 6] =
        ["invalid", "syntax", "unconfigured table", "unauthorized", "does not exist", "type check"];
    let lower = text.to_ascii_lowercase();
    if PERMANENT.iter().any(|word| lower.contains(word)) { Attempt::Permanent(text) } else { Attempt::Transient(text) }
}

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

struct Statements {
    insert_chunk: PreparedStatement,
    select_chunks: PreparedStatement,
    delete_chunk: PreparedStatement,
    insert_trip: PreparedStatement,
    delete_trip: PreparedStatement,
    select_trips_by_id: PreparedStatement,
    select_trip: PreparedStatement,
    scan_trips: PreparedStatement,
    insert_feed: PreparedStatement,
    upsert_watermark: PreparedStatement,
    select_writers: PreparedStatement,
    select_feed: PreparedStatement,
    insert_rejection: PreparedStatement,
    insert_rejection_day: PreparedStatement,
    insert_rejection_id: PreparedStatement,
    select_rejection_id: PreparedStatement,
    select_rejection_days: PreparedStatement,
    select_rejections: PreparedStatement,
    select_rejections_before: PreparedStatement,
    insert_tenant: PreparedStatement,
    select_tenant: PreparedStatement,
    insert_api_key: PreparedStatement,
    select_api_key: PreparedStatement,
    insert_vehicle: PreparedStatement,
    select_vehicle: PreparedStatement,
}

/// Sequence numbers of this process's change-feed writes.
#[derive(Default)]
struct FeedState {
    next_seq: u64,
    in_flight: BTreeSet<u64>,
    published: u64,
    /// This writer's durable entries, while trips are kept (a missing number at or below the
    /// watermark and above `forgotten` was abandoned).
    recent: BTreeMap<u64, Change>,
    /// Entries up to here may be missing from `recent` (evicted, or written before keeping).
    forgotten: u64,
    /// When a read served from memory last read the other writers from the cluster.
    others_read: Option<Instant>,
}

impl FeedState {
    fn watermark(&self) -> u64 {
        self.in_flight.first().map_or(self.next_seq.saturating_sub(1), |first| first - 1)
    }

    /// This writer's entries after `position`, at most `limit`, and the position after them;
    /// `None` when some of them are not in memory.
    fn local_after(&self, position: u64, limit: usize) -> Option<(Vec<Change>, u64)> {
        if position < self.forgotten {
            return None;
        }
        let watermark = self.watermark();
        if position >= watermark {
            return Some((Vec::new(), position));
        }
        let changes: Vec<Change> =
            self.recent.range(position + 1..=watermark).take(limit).map(|(_, c)| c.clone()).collect();
        let end = match changes.last() {
            Some(last) if changes.len() == limit => last.seq,
            _ => watermark,
        };
        Some((changes, end))
    }
}

struct Inner {
    session: Session,
    statements: Statements,
    retry: RetryPolicy,
    ttl_s: i32,
    writer: String,
    feed: Mutex<FeedState>,
    /// Trips just written, for an indexer in this process.
    written: Written,
    /// Serialises watermark writes so a smaller one never lands after a larger one.
    watermark_write: tokio::sync::Mutex<()>,
    /// Bumped when this writer's entries became readable ([`ChangeFeed::feed_signal`]).
    signal: watch::Sender<u64>,
}

/// The ScyllaDB / Cassandra backend. Cheap to clone (shared session).
#[derive(Clone)]
pub struct ScyllaStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore").field("writer", &self.inner.writer).finish_non_exhaustive()
    }
}

fn consistency(name: &str) -> StoreResult<Consistency> {
    match name {
        "one" => Ok(Consistency::One),
        "local_quorum" => Ok(Consistency::LocalQuorum),
        "quorum" => Ok(Consistency::Quorum),
        "local_one" => Ok(Consistency::LocalOne),
        "all" => Ok(Consistency::All),
        other => Err(StoreError::Refused { detail: format!("unknown consistency {other:?}") }),
    }
}

async fn connect(config: &ScyllaConfig) -> StoreResult<Session> {
    let profile = ExecutionProfile::builder()
        .consistency(consistency(&config.consistency)?)
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .build();
    let retry = RetryPolicy { budget: Duration::from_millis(config.retry_budget_ms), ..RetryPolicy::default() };
    retry
        .run("connect", || async {
            SessionBuilder::new()
                .known_nodes(&config.nodes)
                .default_execution_profile_handle(profile.clone().into_handle())
                .build()
                .await
                .map_err(|e| Attempt::Transient(e.to_string()))
        })
        .await
}

/// The configured keyspace name, refused unless it is a plain CQL identifier (it is spliced
/// into statements).
fn checked_keyspace(config: &ScyllaConfig) -> StoreResult<&str> {
    let ks = config.keyspace.as_str();
    if !is_identifier(ks) {
        return Err(StoreError::Refused { detail: format!("keyspace name {ks:?} is not a CQL identifier") });
    }
    Ok(ks)
}

/// Creates or migrates the keyspace and tables (idempotent). Returns the schema version.
pub(crate) async fn apply_schema(session: &Session, config: &ScyllaConfig) -> StoreResult<i32> {
    let ks = checked_keyspace(config)?;
    let retry = RetryPolicy { budget: Duration::from_millis(config.retry_budget_ms), ..RetryPolicy::default() };
    let datacenter = match &config.datacenter {
        Some(dc) => dc.clone(),
        None => {
            let result = retry
                .run("read data center", || async {
                    session.query_unpaged("SELECT data_center FROM system.local", &[]).await.map_err(|e| classify(&e))
                })
                .await?;
            let rows = result.into_rows_result().map_err(|e| corrupt("system.local", e))?;
            let (dc,): (String,) = rows.first_row().map_err(|e| corrupt("system.local", e))?;
            dc
        }
    };
    if datacenter.contains('\'') {
        return Err(StoreError::Refused { detail: format!("data center name {datacenter:?}") });
    }
    let statements = [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', '{datacenter}': {}}}",
            config.replication_factor
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.schema_version (id int PRIMARY KEY, version int, applied_at bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.tenants (tenant text PRIMARY KEY, api_key_hash text, created_at bigint)"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.api_keys (api_key_hash text PRIMARY KEY, tenant text)"),
        format!("CREATE TABLE IF NOT EXISTS {ks}.vehicles (vehicle_id text PRIMARY KEY, tenant text)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.point_chunks (vehicle_id text, day int, start_ts bigint, stamp bigint, \
             trip_id text, end_ts bigint, sealed boolean, points blob, PRIMARY KEY ((vehicle_id, day), start_ts, stamp)) \
             WITH CLUSTERING ORDER BY (start_ts ASC, stamp ASC) \
             AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.trips (tenant text, trip_id text, vehicle_id text, record text, data blob, updated_at bigint, \
             PRIMARY KEY ((tenant, trip_id), vehicle_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.rejections (tenant text, day int, received_at bigint, id text, record text, \
             PRIMARY KEY ((tenant, day), received_at, id)) WITH CLUSTERING ORDER BY (received_at DESC, id ASC)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.rejection_days (tenant text, day int, PRIMARY KEY (tenant, day)) \
             WITH CLUSTERING ORDER BY (day DESC)"
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.rejection_ids (id text PRIMARY KEY, received_at bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.feed_writers (shard int, writer text, watermark bigint, PRIMARY KEY (shard, writer))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.feed (writer text, bucket bigint, seq bigint, tenant text, vehicle_id text, trip_id text, \
             PRIMARY KEY ((writer, bucket), seq))"
        ),
        format!("INSERT INTO {ks}.schema_version (id, version, applied_at) VALUES (0, {SCHEMA_VERSION}, {})", now_ms()),
    ];
    for cql in statements {
        retry
            .run("schema", || async { session.query_unpaged(cql.clone(), &[]).await.map_err(|e| classify(&e)) })
            .await?;
    }
    // Schema 1's trips table has only the JSON `record`: schema 2 adds the binary `data`.
    let data_column = retry
        .run("schema columns", || async {
            let result = session
                .query_unpaged(
                    "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = 'trips' \
                     AND column_name = 'data'",
                    (ks,),
                )
                .await
                .map_err(|e| classify(&e))?;
            Ok(result.into_rows_result().map_err(|e| Attempt::Permanent(e.to_string()))?.rows_num() > 0)
        })
        .await?;
    if !data_column {
        let cql = format!("ALTER TABLE {ks}.trips ADD data blob");
        retry
            .run("schema", || async { session.query_unpaged(cql.as_str(), &[]).await.map_err(|e| classify(&e)) })
            .await?;
    }
    retry
        .run("schema agreement", || async {
            session.await_schema_agreement().await.map(|_| ()).map_err(|e| Attempt::Transient(e.to_string()))
        })
        .await?;
    Ok(SCHEMA_VERSION)
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

/// Values of one change-feed row: writer, bucket, seq, tenant, vehicle, trip.
type FeedRow = (String, i64, i64, String, String, String);

impl ScyllaStore {
    /// Creates or migrates the schema described by `config` (idempotent).
    /// A keyspace of schema 1 has its point rows moved into chunks ([`migrate`]).
    pub async fn apply_schema(config: &ScyllaConfig) -> StoreResult<i32> {
        let ks = checked_keyspace(config)?;
        let session = connect(config).await?;
        let version = apply_schema(&session, config).await?;
        let moved = Self::connect(config).await?.move_points_to_chunks(ks).await?;
        if moved > 0 {
            tracing::info!(points = moved, keyspace = ks, "points moved to chunks");
        }
        Ok(version)
    }

    /// Drops the keyspace named by `config` and everything in it (`IF EXISTS`, so a retry is
    /// harmless). For throwaway keyspaces such as the benchmark's ceiling; never called on a
    /// keyspace that `tripline run` uses.
    pub async fn drop_keyspace(config: &ScyllaConfig) -> StoreResult<()> {
        let ks = checked_keyspace(config)?;
        let session = connect(config).await?;
        let retry = RetryPolicy { budget: Duration::from_millis(config.retry_budget_ms), ..RetryPolicy::default() };
        let cql = format!("DROP KEYSPACE IF EXISTS {ks}");
        retry
            .run("drop keyspace", || async { session.query_unpaged(cql.as_str(), &[]).await.map_err(|e| classify(&e)) })
            .await?;
        Ok(())
    }

    /// Connects and prepares every statement. The schema must exist (`apply_schema`).
    pub async fn connect(config: &ScyllaConfig) -> StoreResult<Self> {
        let ks = checked_keyspace(config)?;
        let session = connect(config).await?;
        let retry = RetryPolicy { budget: Duration::from_millis(config.retry_budget_ms), ..RetryPolicy::default() };
        let p = |cql: String| prepare(&session, &retry, cql);
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
                "INSERT INTO {ks}.feed (writer, bucket, seq, tenant, vehicle_id, trip_id) VALUES (?, ?, ?, ?, ?, ?) USING TTL {FEED_TTL_S}"
            ))
            .await?,
            upsert_watermark: p(format!(
                "INSERT INTO {ks}.feed_writers (shard, writer, watermark) VALUES (0, ?, ?) USING TTL {FEED_TTL_S}"
            ))
            .await?,
            select_writers: p(format!("SELECT writer, watermark FROM {ks}.feed_writers WHERE shard = 0")).await?,
            select_feed: p(format!(
                "SELECT seq, tenant, vehicle_id, trip_id FROM {ks}.feed WHERE writer = ? AND bucket = ? AND seq > ? AND seq <= ? LIMIT ?"
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
            select_rejections_before: p(format!(
                "SELECT record FROM {ks}.rejections WHERE tenant = ? AND day = ? AND (received_at, id) < (?, ?) LIMIT ?"
            ))
            .await?,
            insert_tenant: p(format!(
                "INSERT INTO {ks}.tenants (tenant, api_key_hash, created_at) VALUES (?, ?, ?) IF NOT EXISTS"
            ))
            .await?,
            select_tenant: p(format!("SELECT tenant FROM {ks}.tenants WHERE tenant = ?")).await?,
            insert_api_key: p(format!("INSERT INTO {ks}.api_keys (api_key_hash, tenant) VALUES (?, ?)")).await?,
            select_api_key: p(format!("SELECT tenant FROM {ks}.api_keys WHERE api_key_hash = ?")).await?,
            insert_vehicle: p(format!("INSERT INTO {ks}.vehicles (vehicle_id, tenant) VALUES (?, ?)")).await?,
            select_vehicle: p(format!("SELECT tenant FROM {ks}.vehicles WHERE vehicle_id = ?")).await?,
        };
        let writer = format!("w{}-{}-{:08x}", now_ms(), std::process::id(), rand_u32());
        let ttl_s = i32::try_from(config.retention_s).unwrap_or(i32::MAX).max(1);
        let written = Written::new(&writer);
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                statements,
                retry,
                ttl_s,
                writer,
                feed: Mutex::new(FeedState { next_seq: 1, ..FeedState::default() }),
                written,
                watermark_write: tokio::sync::Mutex::new(()),
                signal: watch::Sender::new(0),
            }),
        })
    }

    async fn execute(
        &self,
        what: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
    ) -> StoreResult<QueryResult> {
        let session = &self.inner.session;
        self.inner
            .retry
            .run(what, || {
                let values = values.clone();
                async move { session.execute_unpaged(statement, values).await.map_err(|e| classify(&e)) }
            })
            .await
    }

    async fn rows<R>(
        &self,
        what: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let session = &self.inner.session;
        let statement = statement.clone();
        self.inner
            .retry
            .run(what, || {
                let values = values.clone();
                let statement = statement.clone();
                async move {
                    let pager =
                        session.execute_iter(statement, values).await.map_err(|e| classify_text(e.to_string()))?;
                    pager
                        .rows_stream::<R>()
                        .map_err(|e| Attempt::Permanent(e.to_string()))?
                        .try_collect::<Vec<R>>()
                        .await
                        .map_err(|e| classify_text(e.to_string()))
                }
            })
            .await
    }

    async fn publish_watermark(&self) -> StoreResult<()> {
        let _serial = self.inner.watermark_write.lock().await;
        let (watermark, published) = {
            let feed = self.inner.feed.lock().map_err(|e| StoreError::Refused { detail: e.to_string() })?;
            (feed.watermark(), feed.published)
        };
        if watermark <= published {
            return Ok(());
        }
        let writer = self.inner.writer.clone();
        self.execute("feed watermark", &self.inner.statements.upsert_watermark, (writer, watermark as i64)).await?;
        if let Ok(mut feed) = self.inner.feed.lock() {
            feed.published = feed.published.max(watermark);
        }
        Ok(())
    }

    /// Appends `changes` to the feed; `writes` (from [`Written::writes`], one per change or
    /// none) are kept once their entries are durable.
    async fn announce(&self, changes: Vec<Change>, writes: Vec<(TripKey, Option<TripRecord>)>) -> StoreResult<()> {
        let (first, local) = {
            let mut feed = self.inner.feed.lock().map_err(|e| StoreError::Refused { detail: e.to_string() })?;
            let first = feed.next_seq;
            let end = first + changes.len() as u64;
            feed.next_seq = end;
            feed.in_flight.extend(first..end);
            (first, self.inner.written.is_enabled())
        };
        let count = changes.len() as u64;
        let writer = self.inner.writer.clone();
        // Entries of one bucket share a partition: one unlogged batch per bucket and chunk.
        let mut by_bucket: BTreeMap<u64, Vec<FeedRow>> = BTreeMap::new();
        let mut kept = Vec::with_capacity(if local { changes.len() } else { 0 });
        for (i, change) in changes.into_iter().enumerate() {
            let seq = first + i as u64;
            by_bucket.entry(seq / FEED_BUCKET).or_default().push((
                writer.clone(),
                (seq / FEED_BUCKET) as i64,
                seq as i64,
                change.tenant.as_str().to_owned(),
                change.vehicle_id.as_str().to_owned(),
                change.trip_id.as_str().to_owned(),
            ));
            if local {
                kept.push(Change { writer: writer.clone(), seq, ..change });
            }
        }
        let chunks: Vec<Vec<_>> = by_bucket
            .into_values()
            .flat_map(|rows| rows.chunks(MAX_BATCH_ROWS).map(<[_]>::to_vec).collect::<Vec<_>>())
            .collect();
        let session = &self.inner.session;
        let statement = &self.inner.statements.insert_feed;
        let result = futures::stream::iter(chunks)
            .map(|values| async move {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in 0..values.len() {
                    batch.append_statement(statement.clone());
                }
                batch.set_is_idempotent(true);
                self.inner
                    .retry
                    .run("feed", || async {
                        session.batch(&batch, &values).await.map(|_| ()).map_err(|e| classify(&e))
                    })
                    .await
            })
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_collect::<Vec<()>>()
            .await;
        if result.is_ok() {
            // Kept before the watermark lets a reader see the entries.
            self.inner.written.keep_from(first, writes);
        }
        if let Ok(mut feed) = self.inner.feed.lock() {
            // Done or abandoned: either way no longer holds the watermark back (on an error the
            // caller retries and announces the trips again under new numbers).
            for seq in first..first + count {
                feed.in_flight.remove(&seq);
            }
            // In the same step as the watermark moves: a reader never takes a kept entry's
            // number for an abandoned one.
            if result.is_ok() {
                feed.recent.extend(kept.into_iter().map(|change| (change.seq, change)));
                while feed.recent.len() > LOCAL_ENTRIES {
                    let Some((seq, _)) = feed.recent.pop_first() else { break };
                    feed.forgotten = feed.forgotten.max(seq);
                }
            }
        }
        result?;
        if local {
            self.inner.signal.send_modify(|n| *n += 1);
        }
        self.publish_watermark().await?;
        if !local {
            self.inner.signal.send_modify(|n| *n += 1);
        }
        Ok(())
    }
}

fn rand_u32() -> u32 {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

impl Registry for ScyllaStore {
    async fn create_tenant(&self, tenant: &TenantId, api_key_hash: &str) -> StoreResult<()> {
        let s = &self.inner.statements;
        let result = self
            .execute("create tenant", &s.insert_tenant, (tenant.as_str().to_owned(), api_key_hash.to_owned(), now_ms()))
            .await?;
        let rows = result.into_rows_result().map_err(|e| corrupt("tenants", e))?;
        let applied = rows
            .rows::<(bool, Option<String>, Option<String>, Option<i64>)>()
            .ok()
            .and_then(|mut r| r.next())
            .and_then(Result::ok)
            .map(|row| row.0)
            .or_else(|| rows.first_row::<(bool,)>().ok().map(|r| r.0))
            .unwrap_or(false);
        if !applied {
            return Err(StoreError::TenantExists { tenant: tenant.clone() });
        }
        self.execute("create api key", &s.insert_api_key, (api_key_hash.to_owned(), tenant.as_str().to_owned()))
            .await?;
        Ok(())
    }

    async fn tenant_for_key(&self, api_key_hash: &str) -> StoreResult<Option<TenantId>> {
        let rows: Vec<(String,)> =
            self.rows("api key", &self.inner.statements.select_api_key, (api_key_hash.to_owned(),)).await?;
        rows.into_iter().next().map(|(t,)| TenantId::parse(&t).map_err(|e| corrupt("api_keys", e))).transpose()
    }

    async fn tenant_exists(&self, tenant: &TenantId) -> StoreResult<bool> {
        let rows: Vec<(String,)> =
            self.rows("tenant", &self.inner.statements.select_tenant, (tenant.as_str().to_owned(),)).await?;
        Ok(!rows.is_empty())
    }

    async fn add_vehicles(&self, tenant: &TenantId, vehicles: &[VehicleId]) -> StoreResult<()> {
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::UnknownTenant { tenant: tenant.clone() });
        }
        for vehicle in vehicles {
            if let Some(owner) = self.vehicle_tenant(vehicle).await?
                && &owner != tenant
            {
                return Err(StoreError::VehicleOwned { vehicle: vehicle.clone(), owner });
            }
        }
        let s = &self.inner.statements;
        let rows: Vec<(String, String)> =
            vehicles.iter().map(|v| (v.as_str().to_owned(), tenant.as_str().to_owned())).collect();
        futures::stream::iter(rows)
            .map(|row| self.execute("add vehicle", &s.insert_vehicle, row))
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    async fn vehicle_tenant(&self, vehicle: &VehicleId) -> StoreResult<Option<TenantId>> {
        let rows: Vec<(String,)> =
            self.rows("vehicle", &self.inner.statements.select_vehicle, (vehicle.as_str().to_owned(),)).await?;
        rows.into_iter().next().map(|(t,)| TenantId::parse(&t).map_err(|e| corrupt("vehicles", e))).transpose()
    }
}

/// A trip row's `record` (JSON, schema 1) and `data` (binary, [`crate::trip_encoding`]).
type TripColumns = (Option<String>, Option<Vec<u8>>);

/// The record of a trip row: `data` when written, else the JSON of schema 1.
fn trip_from_row((record, data): TripColumns) -> StoreResult<TripRecord> {
    match (data, record) {
        (Some(data), _) => crate::trip_encoding::decode(&data),
        (None, Some(json)) => crate::trip_encoding::decode(json.as_bytes()),
        (None, None) => Err(corrupt("trips", "a trip row without its record")),
    }
}

impl TripStore for ScyllaStore {
    async fn upsert_trips(&self, trips: &[TripRecord]) -> StoreResult<()> {
        if trips.is_empty() {
            return Ok(());
        }
        let s = &self.inner.statements;
        let ttl = self.inner.ttl_s;
        let rows = trips
            .iter()
            .map(|t| {
                Ok((
                    t.tenant.as_str().to_owned(),
                    t.summary.trip_id.as_str().to_owned(),
                    t.summary.vehicle_id.as_str().to_owned(),
                    crate::trip_encoding::encode(t)?,
                    t.summary.updated_at.timestamp_millis(),
                    ttl,
                ))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        futures::stream::iter(rows)
            .map(|values| self.execute("upsert trip", &s.insert_trip, values))
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_collect::<Vec<_>>()
            .await?;
        let changes = trips.iter().map(|t| Change::of(&t.tenant, &t.summary.vehicle_id, &t.summary.trip_id)).collect();
        self.announce(changes, self.inner.written.writes(&[], trips)).await
    }

    async fn delete_trip(&self, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> StoreResult<()> {
        let values = (tenant.as_str().to_owned(), trip_id.as_str().to_owned(), vehicle.as_str().to_owned());
        self.execute("delete trip", &self.inner.statements.delete_trip, values).await?;
        let change = Change::of(tenant, vehicle, trip_id);
        let writes = self.inner.written.writes(&[change.key()], &[]);
        self.announce(vec![change], writes).await
    }

    async fn trip(&self, tenant: &TenantId, trip_id: &TripId) -> StoreResult<Option<TripRecord>> {
        let rows: Vec<TripColumns> = self
            .rows(
                "trip",
                &self.inner.statements.select_trips_by_id,
                (tenant.as_str().to_owned(), trip_id.as_str().to_owned()),
            )
            .await?;
        rows.into_iter().next().map(trip_from_row).transpose()
    }

    async fn trip_of_vehicle(
        &self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
    ) -> StoreResult<Option<TripRecord>> {
        let values = (tenant.as_str().to_owned(), trip_id.as_str().to_owned(), vehicle.as_str().to_owned());
        let rows: Vec<TripColumns> = self.rows("trip", &self.inner.statements.select_trip, values).await?;
        rows.into_iter().next().map(trip_from_row).transpose()
    }

    async fn scan_trips(&self, cursor: Option<&str>, limit: usize) -> StoreResult<Page<TripRecord>> {
        use scylla::response::{PagingState, PagingStateResponse};
        let paging = match cursor {
            Some(text) => PagingState::new_from_raw_bytes(crate::codec::unhex(text)?),
            None => PagingState::start(),
        };
        let mut statement = self.inner.statements.scan_trips.clone();
        statement.set_page_size(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        let session = &self.inner.session;
        let (result, response) = self
            .inner
            .retry
            .run("scan trips", || {
                let (statement, paging) = (statement.clone(), paging.clone());
                async move { session.execute_single_page(&statement, (), paging).await.map_err(|e| classify(&e)) }
            })
            .await?;
        let rows = result.into_rows_result().map_err(|e| corrupt("trips", e))?;
        let items = rows
            .rows::<TripColumns>()
            .map_err(|e| corrupt("trips", e))?
            .map(|row| row.map_err(|e| corrupt("trips", e)).and_then(trip_from_row))
            .collect::<StoreResult<Vec<_>>>()?;
        let next = match response {
            PagingStateResponse::HasMorePages { state } => state.as_bytes_slice().map(|b| crate::codec::hex(b)),
            PagingStateResponse::NoMorePages => None,
        };
        Ok(Page { items, next })
    }

    fn keep_written(&self) {
        // Under the feed's lock, as `announce` numbers its entries: those numbered so far are
        // not kept in memory, every later one is.
        let mut feed = self.inner.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.inner.written.enable();
        feed.forgotten = feed.forgotten.max(feed.next_seq.saturating_sub(1));
    }

    fn take_written(&self, key: &TripKey, writer: &str, seq: u64) -> Option<Option<TripRecord>> {
        self.inner.written.take(key, writer, seq)
    }
}

impl BatchWrite for ScyllaStore {
    /// The parts in order (points, rejections, deletions, trips); each part is idempotent, so a
    /// retry after a partial failure rewrites the same rows.
    async fn write_batch(&self, set: &WriteSet) -> StoreResult<()> {
        self.write_points(&set.points).await?;
        self.append_rejections(&set.rejections).await?;
        for (tenant, vehicle, trip_id) in &set.deletes {
            self.delete_trip(tenant, vehicle, trip_id).await?;
        }
        self.upsert_trips(&set.trips).await
    }
}

impl RejectionStore for ScyllaStore {
    async fn append_rejections(&self, rejections: &[Rejection]) -> StoreResult<()> {
        let s = &self.inner.statements;
        let ttl = self.inner.ttl_s;
        for rejection in rejections {
            let mut rejection = rejection.clone();
            let first: Vec<(i64,)> = self.rows("rejection id", &s.select_rejection_id, (rejection.id.clone(),)).await?;
            match first.first() {
                Some((at,)) => rejection.received_at_ms = *at,
                None => {
                    self.execute(
                        "rejection id",
                        &s.insert_rejection_id,
                        (rejection.id.clone(), rejection.received_at_ms, ttl),
                    )
                    .await?;
                }
            }
            let tenant = rejection.tenant.as_ref().map_or(UNOWNED, TenantId::as_str).to_owned();
            let day = day_of(rejection.received_at_ms);
            let json = serde_json::to_string(&rejection).map_err(|e| corrupt("rejections", e))?;
            self.execute(
                "rejection",
                &s.insert_rejection,
                (tenant.clone(), day, rejection.received_at_ms, rejection.id.clone(), json, ttl),
            )
            .await?;
            self.execute("rejection day", &s.insert_rejection_day, (tenant, day, ttl)).await?;
        }
        Ok(())
    }

    async fn rejections(
        &self,
        tenant: Option<&TenantId>,
        cursor: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<Rejection>> {
        let after = cursor.map(parse_rejection_cursor).transpose()?;
        let tenant = tenant.map_or(UNOWNED, TenantId::as_str).to_owned();
        let s = &self.inner.statements;
        let newest_day = after.as_ref().map_or(i32::MAX, |(at, _)| day_of(*at));
        let days: Vec<(i32,)> =
            self.rows("rejection days", &s.select_rejection_days, (tenant.clone(), newest_day)).await?;
        let limit_i32 = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let mut items: Vec<Rejection> = Vec::new();
        for (day,) in days {
            if items.len() >= limit {
                break;
            }
            let want = limit_i32 - i32::try_from(items.len()).unwrap_or(0);
            let rows: Vec<(String,)> = match after.as_ref().filter(|(at, _)| day_of(*at) == day) {
                Some((at, id)) => {
                    self.rows("rejections", &s.select_rejections_before, (tenant.clone(), day, *at, id.clone(), want))
                        .await?
                }
                None => self.rows("rejections", &s.select_rejections, (tenant.clone(), day, want)).await?,
            };
            for (json,) in rows {
                items.push(serde_json::from_str(&json).map_err(|e| corrupt("rejections", e))?);
            }
        }
        items.truncate(limit);
        let next =
            (items.len() == limit).then(|| items.last().map(|r| rejection_cursor(r.received_at_ms, &r.id))).flatten();
        Ok(Page { items, next })
    }
}

impl ChangeFeed for ScyllaStore {
    async fn read_changes(&self, checkpoint: &Checkpoint, limit: usize) -> StoreResult<ChangeBatch> {
        let s = &self.inner.statements;
        let own = &self.inner.writer;
        let mut checkpoint = checkpoint.clone();
        let mut changes = Vec::new();
        // This writer's entries from memory, when all of them are there.
        let mut own_served = false;
        if self.inner.written.is_enabled() {
            let mut feed = self.inner.feed.lock().map_err(|e| StoreError::Refused { detail: e.to_string() })?;
            if let Some((local, end)) = feed.local_after(checkpoint.position(own), limit) {
                own_served = true;
                let others_due = local.is_empty() || feed.others_read.is_none_or(|at| at.elapsed() >= OTHERS_EVERY);
                if end > checkpoint.position(own) {
                    checkpoint.positions.insert(own.clone(), end);
                }
                changes = local;
                if !others_due || changes.len() >= limit {
                    return Ok(ChangeBatch { changes, checkpoint });
                }
                feed.others_read = Some(Instant::now());
            }
        }
        let writers: Vec<(String, i64)> = self.rows("feed writers", &s.select_writers, ()).await?;
        for (writer, watermark) in writers {
            if own_served && writer == *own {
                continue;
            }
            let watermark = u64::try_from(watermark).unwrap_or(0);
            let mut position = checkpoint.position(&writer);
            while position < watermark && changes.len() < limit {
                let bucket = (position + 1) / FEED_BUCKET;
                let bucket_end = ((bucket + 1) * FEED_BUCKET - 1).min(watermark);
                let want = i32::try_from(limit - changes.len()).unwrap_or(i32::MAX);
                let values = (writer.clone(), bucket as i64, position as i64, bucket_end as i64, want);
                let rows: Vec<(i64, String, String, String)> = self.rows("feed", &s.select_feed, values).await?;
                let full = rows.len() == usize::try_from(want).unwrap_or(usize::MAX);
                for (seq, tenant, vehicle, trip) in rows {
                    position = u64::try_from(seq).unwrap_or(position);
                    changes.push(Change {
                        tenant: TenantId::parse(&tenant).map_err(|e| corrupt("feed", e))?,
                        vehicle_id: VehicleId::parse(&vehicle).map_err(|e| corrupt("feed", e))?,
                        trip_id: TripId::parse(&trip).map_err(|e| corrupt("feed", e))?,
                        writer: writer.clone(),
                        seq: position,
                    });
                }
                if !full {
                    // Nothing more up to the bucket's end (gaps are abandoned numbers).
                    position = bucket_end;
                }
            }
            if position > checkpoint.position(&writer) {
                checkpoint.positions.insert(writer, position);
            }
            if changes.len() >= limit {
                break;
            }
        }
        Ok(ChangeBatch { changes, checkpoint })
    }

    async fn feed_head(&self) -> StoreResult<Checkpoint> {
        let writers: Vec<(String, i64)> = self.rows("feed writers", &self.inner.statements.select_writers, ()).await?;
        let positions = writers.into_iter().map(|(writer, watermark)| (writer, u64::try_from(watermark).unwrap_or(0)));
        Ok(Checkpoint { positions: positions.collect() })
    }

    fn feed_signal(&self) -> Option<watch::Receiver<u64>> {
        Some(self.inner.signal.subscribe())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            writer: "w".to_owned(),
            ..Change::of(
                &TenantId::parse("acme").unwrap(),
                &VehicleId::parse("car-1").unwrap(),
                &TripId::parse(&format!("t{seq}")).unwrap(),
            )
        }
    }

    /// Entries 1..=`next - 1` numbered, `durable` of them kept, `in_flight` still writing.
    fn state(next: u64, durable: &[u64], in_flight: &[u64], forgotten: u64) -> FeedState {
        FeedState {
            next_seq: next,
            in_flight: in_flight.iter().copied().collect(),
            recent: durable.iter().map(|&seq| (seq, change(seq))).collect(),
            forgotten,
            ..FeedState::default()
        }
    }

    fn seqs(read: Option<(Vec<Change>, u64)>) -> Option<(Vec<u64>, u64)> {
        read.map(|(changes, end)| (changes.iter().map(|c| c.seq).collect(), end))
    }

    #[test]
    fn local_entries_stop_below_the_first_write_in_flight() {
        // 4 still writing: 5 and 6 are durable but not readable yet.
        let feed = state(7, &[1, 2, 3, 5, 6], &[4], 0);
        assert_eq!(seqs(feed.local_after(0, 100)), Some((vec![1, 2, 3], 3)));
        assert_eq!(seqs(feed.local_after(3, 100)), Some((vec![], 3)));
    }

    #[test]
    fn an_abandoned_number_is_passed_over() {
        // 2 failed: its trip is announced again under a later number.
        let feed = state(5, &[1, 3, 4], &[], 0);
        assert_eq!(seqs(feed.local_after(0, 100)), Some((vec![1, 3, 4], 4)));
        assert_eq!(seqs(feed.local_after(1, 100)), Some((vec![3, 4], 4)));
        let gap_last = state(5, &[1, 2, 3], &[], 0);
        assert_eq!(seqs(gap_last.local_after(0, 100)), Some((vec![1, 2, 3], 4)), "up to the watermark");
    }

    #[test]
    fn a_limited_read_ends_at_its_last_entry() {
        let feed = state(8, &[1, 2, 4, 5, 6, 7], &[], 0);
        assert_eq!(seqs(feed.local_after(0, 3)), Some((vec![1, 2, 4], 4)));
        assert_eq!(seqs(feed.local_after(4, 3)), Some((vec![5, 6, 7], 7)));
    }

    #[test]
    fn a_reader_behind_the_kept_entries_reads_the_cluster() {
        let feed = state(10, &[6, 7, 8, 9], &[], 5);
        assert_eq!(seqs(feed.local_after(4, 100)), None);
        assert_eq!(seqs(feed.local_after(5, 100)), Some((vec![6, 7, 8, 9], 9)));
    }
}
