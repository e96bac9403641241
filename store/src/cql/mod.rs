//! The ScyllaDB backend (also Apache Cassandra 5, over the same CQL; no Scylla-only syntax).
//!
//! Every statement is prepared once, marked idempotent, and routed token-aware by the driver.
//! Points go in unlogged batches that never span partitions, a bounded number at a time; the
//! application retries timeouts and unavailability with backoff ([`RetryPolicy`]).
//!
//! The change feed: each process writes under its own writer id with increasing sequence
//! numbers, into `feed((writer, bucket), seq)`, beside the trip rows it announces (an entry
//! counts only once both are durable). Writes may complete out of order, so each writer also
//! publishes a watermark in `feed_writers`: every sequence number at or below it is durable (or
//! was abandoned after an error, in which case the caller retries and the trip is announced
//! again). Readers never read past a watermark, and a write returns only once the published
//! watermark covers its entries, so an acknowledged message's entries stay readable after a
//! crash of their writer.
//!
//! While trips are kept for an indexer in the same process ([`TripStore::keep_written`]), the
//! store also keeps its own latest durable entries in memory (at most [`LOCAL_ENTRIES`]), and
//! [`ChangeFeed::read_changes`] serves this writer's entries from there, up to the watermark it
//! is about to publish, without asking the cluster: the same entries a read after the
//! publication would give. Other writers' entries are read from the cluster, at most every
//! [`OTHERS_EVERY`] while this writer's own keep coming; a reader behind the kept entries reads
//! its own from the cluster too.
//!
//! The files: `schema.rs` (the tables, `schema apply`), `statements.rs` (every statement,
//! prepared once), `points.rs` (chunks, [`crate::chunk`]), `trips.rs`, `feed.rs` (the change
//! feed and its watermark), `open_trips.rs` (the list the sweep reads), `registry.rs`,
//! `rejections.rs`, `migrate.rs` (schema 1 → 2).

mod feed;
mod migrate;
mod open_trips;
mod points;
mod registry;
mod rejections;
mod schema;
mod statements;
mod trips;
mod webhooks;

use feed::FeedState;
use schema::{apply_schema, checked_keyspace};
use statements::Statements;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tripline_model::time::now_ms;

use futures::{StreamExt, TryFutureExt, TryStreamExt};
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
    BatchWrite, ChangeFeed, DEFAULT_REJECTION_RETENTION_DAYS, DEFAULT_RETENTION_DAYS, PointStore, Registry,
    RejectionStore, StoreError, StoreResult, TripStore, WriteSet,
};

/// Version of the schema `tripline schema apply` creates.
pub const SCHEMA_VERSION: i32 = 5;
/// Change-feed entries per partition of a writer.
const FEED_BUCKET: u64 = 10_000;
/// Change-feed entries and writer watermarks live this long (the indexer must keep up within it).
const FEED_TTL_S: i32 = crate::FEED_RETENTION_S as i32;
/// Webhook outbox rows live this long at most (a message is given up after 24 h by default; the
/// row outlives that, so a dispatcher that was down still finds and settles it).
const OUTBOX_TTL_S: i32 = 8 * 86_400;
/// Delivery attempts are listed this long.
const DELIVERY_TTL_S: i32 = crate::webhooks::DELIVERY_RETENTION_S as i32;
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
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    /// How long points and trips are kept, in seconds (CQL TTL). Set from the top-level
    /// `retention_days`, not from the `[scylla]` section.
    #[serde(skip)]
    pub retention_s: u64,
    /// How long rejections are kept, in seconds (CQL TTL). Set from the top-level
    /// `rejection_retention_days`.
    #[serde(skip)]
    pub rejection_retention_s: u64,
    /// Consistency of reads and writes.
    pub consistency: CqlConsistency,
    /// Per-request timeout, milliseconds.
    pub request_timeout_ms: u64,
    /// How long a request is retried before the store is reported unavailable, milliseconds.
    pub retry_budget_ms: u64,
    /// User name for the cluster's password authentication (`PasswordAuthenticator`); none:
    /// connect without credentials.
    pub username: Option<String>,
    /// Its password (prefer `password_file`).
    pub password: Option<String>,
    /// A file holding the password (its first line).
    pub password_file: Option<std::path::PathBuf>,
    /// TLS to the nodes: PEM file of the authorities that signed their certificates (each
    /// node's certificate must name its IP address, which the driver verifies); none: plain TCP.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A client certificate chain (PEM) for clusters that require one, with `tls_key_file`.
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ScyllaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaConfig")
            .field("nodes", &self.nodes)
            .field("keyspace", &self.keyspace)
            .field("replication_factor", &self.replication_factor)
            .field("datacenter", &self.datacenter)
            .field("retention_s", &self.retention_s)
            .field("rejection_retention_s", &self.rejection_retention_s)
            .field("consistency", &self.consistency)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("retry_budget_ms", &self.retry_budget_ms)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("password_file", &self.password_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "tripline".to_owned(),
            replication_factor: 1,
            datacenter: None,
            retention_s: u64::from(DEFAULT_RETENTION_DAYS) * 86_400,
            rejection_retention_s: u64::from(DEFAULT_REJECTION_RETENTION_DAYS) * 86_400,
            consistency: CqlConsistency::LocalQuorum,
            request_timeout_ms: 5_000,
            retry_budget_ms: 30_000,
            username: None,
            password: None,
            password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl ScyllaConfig {
    /// The user name and password to authenticate with, if a user name is set.
    ///
    /// # Errors
    /// A user name without a password (or with both `password` and `password_file`), or a
    /// password file that cannot be read.
    pub fn credentials(&self) -> StoreResult<Option<(String, String)>> {
        let refused = |detail: String| StoreError::Refused { detail };
        let Some(user) = &self.username else {
            if self.password.is_some() || self.password_file.is_some() {
                return Err(refused("[scylla] password without a username".to_owned()));
            }
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => return Err(refused("[scylla] password and password_file: set one".to_owned())),
            (Some(password), None) => password.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| refused(format!("[scylla] password_file {}: {e}", file.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, None) => return Err(refused(format!("[scylla] username {user:?} without a password"))),
        };
        Ok(Some((user.clone(), password)))
    }

    /// The TLS client configuration, when `tls_ca_file` is set.
    ///
    /// # Errors
    /// A certificate or key file that cannot be read or used, or only one of the two.
    pub fn tls(&self) -> StoreResult<Option<Arc<rustls::ClientConfig>>> {
        let refused = |detail: String| StoreError::Refused { detail: format!("[scylla] TLS: {detail}") };
        let identity = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err(refused("tls_cert_file and tls_key_file: set both or neither".to_owned())),
        };
        let Some(ca) = &self.tls_ca_file else {
            return match identity {
                Some(_) => Err(refused("a client certificate needs tls_ca_file".to_owned())),
                None => Ok(None),
            };
        };
        crate::tls::client_config(ca, identity).map(Some).map_err(refused)
    }

    /// The retry policy of every request: backoff within `retry_budget_ms`.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy { budget: Duration::from_millis(self.retry_budget_ms), ..RetryPolicy::default() }
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

/// Runs `cql`, a statement without values that is not prepared (schema changes, the schema's
/// own rows), retried by `retry`.
async fn run_cql(session: &Session, retry: &RetryPolicy, what: &'static str, cql: &str) -> StoreResult<QueryResult> {
    retry.run(what, || async { session.query_unpaged(cql, &[]).await.map_err(|e| classify(&e)) }).await
}

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

struct Inner {
    session: Session,
    statements: Statements,
    retry: RetryPolicy,
    ttl_s: i32,
    /// The TTL of rejections.
    rejection_ttl_s: i32,
    writer: String,
    feed: Mutex<FeedState>,
    /// Trips just written, for an indexer in this process.
    written: Written,
    /// Serialises watermark writes so a smaller one never lands after a larger one.
    watermark_write: tokio::sync::Mutex<()>,
    /// Woken whenever entries stop being in flight (the watermark may move).
    settled: tokio::sync::Notify,
    /// Bumped when this writer's entries became readable ([`ChangeFeed::feed_signal`]).
    signal: watch::Sender<u64>,
    /// Trips this process marked open lately ([`open_trips`]).
    marked: Mutex<open_trips::Marked>,
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

/// The consistency levels a configuration may name (`[scylla] consistency`), in CQL's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CqlConsistency {
    /// One replica.
    One,
    /// One replica in the local data center.
    LocalOne,
    /// A majority of the replicas.
    Quorum,
    /// A majority of the replicas in the local data center (the default).
    LocalQuorum,
    /// Every replica.
    All,
}

impl From<CqlConsistency> for Consistency {
    fn from(level: CqlConsistency) -> Consistency {
        match level {
            CqlConsistency::One => Consistency::One,
            CqlConsistency::LocalOne => Consistency::LocalOne,
            CqlConsistency::Quorum => Consistency::Quorum,
            CqlConsistency::LocalQuorum => Consistency::LocalQuorum,
            CqlConsistency::All => Consistency::All,
        }
    }
}

async fn connect(config: &ScyllaConfig) -> StoreResult<Session> {
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency.into())
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .build();
    let credentials = config.credentials()?;
    let tls = config.tls()?;
    let retry = config.retry_policy();
    retry
        .run("connect", || async {
            let mut builder = SessionBuilder::new()
                .known_nodes(&config.nodes)
                .default_execution_profile_handle(profile.clone().into_handle());
            if let Some((user, password)) = &credentials {
                builder = builder.user(user, password);
            }
            if let Some(tls) = &tls {
                builder = builder.tls_context(Some(Arc::clone(tls)));
            }
            builder.build().await.map_err(|e| classify_connect(e.to_string()))
        })
        .await
}

/// A refused authentication or a certificate that does not verify will not pass by retrying;
/// anything else (a node starting, a network fault) may.
fn classify_connect(text: String) -> Attempt {
    const REFUSED: [&str; 3] = ["authentication", "username and/or password", "password are incorrect"];
    const UNTRUSTED: [&str; 2] = ["invalid peer certificate", "invalidcertificate"];
    let lower = text.to_ascii_lowercase();
    if REFUSED.iter().any(|word| lower.contains(word)) {
        Attempt::Permanent(format!("the cluster refused the credentials ([scylla] username/password): {text}"))
    } else if UNTRUSTED.iter().any(|word| lower.contains(word)) {
        Attempt::Permanent(format!("the node's TLS certificate is not trusted ([scylla] tls_ca_file): {text}"))
    } else {
        Attempt::Transient(text)
    }
}

impl ScyllaStore {
    /// Creates or migrates the schema described by `config` (idempotent), and records its
    /// version once the data is migrated (an interrupted migration runs again at the next
    /// apply). A keyspace of schema 1 has its point rows moved into chunks (`cql/migrate.rs`); one
    /// of schema 4 or older has its open trips listed (`cql/open_trips.rs`).
    pub async fn apply_schema(config: &ScyllaConfig) -> StoreResult<i32> {
        let ks = checked_keyspace(config)?;
        let session = connect(config).await?;
        let retry = config.retry_policy();
        apply_schema(&session, config).await?;
        let before = schema::recorded_version(&session, &retry, ks).await?;
        let store = Self::connect(config).await?;
        let moved = store.move_points_to_chunks(ks).await?;
        if moved > 0 {
            tracing::info!(points = moved, keyspace = ks, "points moved to chunks");
        }
        if before.is_some_and(|v| v < open_trips::LISTED_SINCE) {
            let listed = store.list_stored_open_trips().await?;
            tracing::info!(trips = listed, keyspace = ks, "open trips listed");
        }
        schema::record_version(&session, &retry, ks).await?;
        Ok(SCHEMA_VERSION)
    }

    /// Drops the keyspace named by `config` and everything in it (`IF EXISTS`, so a retry is
    /// harmless). For throwaway keyspaces such as the benchmark's ceiling; never called on a
    /// keyspace that `tripline run` uses.
    pub async fn drop_keyspace(config: &ScyllaConfig) -> StoreResult<()> {
        let ks = checked_keyspace(config)?;
        let session = connect(config).await?;
        let retry = config.retry_policy();
        run_cql(&session, &retry, "drop keyspace", &format!("DROP KEYSPACE IF EXISTS {ks}")).await?;
        Ok(())
    }

    /// Connects and prepares every statement. The schema must exist (`apply_schema`).
    pub async fn connect(config: &ScyllaConfig) -> StoreResult<Self> {
        let ks = checked_keyspace(config)?;
        let session = connect(config).await?;
        let retry = config.retry_policy();
        let statements = Statements::prepare_all(&session, &retry, ks).await?;
        let writer = format!("w{}-{}-{:08x}", now_ms(), std::process::id(), rand_u32());
        let ttl = |seconds: u64| i32::try_from(seconds).unwrap_or(i32::MAX).max(1);
        let (ttl_s, rejection_ttl_s) = (ttl(config.retention_s), ttl(config.rejection_retention_s));
        let written = Written::new(&writer);
        Ok(ScyllaStore {
            inner: Arc::new(Inner {
                session,
                statements,
                retry,
                ttl_s,
                rejection_ttl_s,
                writer,
                feed: Mutex::new(FeedState::new()),
                written,
                watermark_write: tokio::sync::Mutex::new(()),
                settled: tokio::sync::Notify::new(),
                signal: watch::Sender::new(0),
                marked: open_trips::Marked::new(),
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

    /// Runs `statement` once for each of `rows`, at most [`MAX_CONCURRENT_REQUESTS`] at once, in
    /// no particular order; `Ok` once every one succeeded.
    async fn execute_each<V: SerializeRow + Clone>(
        &self,
        what: &'static str,
        statement: &PreparedStatement,
        rows: Vec<V>,
    ) -> StoreResult<()> {
        futures::stream::iter(rows)
            .map(|values| self.execute(what, statement, values))
            .buffer_unordered(MAX_CONCURRENT_REQUESTS)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// One page of `statement`'s rows (at most `limit`) from `paging` on, and where the next
    /// page starts.
    async fn single_page(
        &self,
        what: &'static str,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
        paging: scylla::response::PagingState,
        limit: usize,
    ) -> StoreResult<(QueryResult, scylla::response::PagingStateResponse)> {
        let mut statement = statement.clone();
        statement.set_page_size(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        let session = &self.inner.session;
        self.inner
            .retry
            .run(what, || {
                let (statement, paging, values) = (statement.clone(), paging.clone(), values.clone());
                async move { session.execute_single_page(&statement, values, paging).await.map_err(|e| classify(&e)) }
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
}

/// 32 random bits for a writer id (two processes started in the same millisecond on different
/// hosts with the same PID still differ); the clock's nanoseconds if the OS has no randomness.
fn rand_u32() -> u32 {
    getrandom::u32()
        .unwrap_or_else(|_| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0))
}
