//! # tripline-indexer
//!
//! Follows the write store's change feed and keeps one Tantivy document per trip, committing
//! with the change-feed checkpoint in the commit payload so data and progress commit together.
//!
//! **Promises.** A changed trip is searchable within the commit interval (250 ms) plus one feed
//! poll (100 ms) of its write. After a restart, or a crash at any point, the index resumes at
//! the checkpoint of its last commit: changes after it are applied again, and applying a change
//! twice changes nothing (the document is replaced by the trip as stored now). One task owns the
//! `IndexWriter`.

pub mod metrics;
mod reindex;

pub use reindex::{ReindexError, ReindexReport, reindex};

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tripline_index::{IndexError, IndexWriter, LiveIndex, TripIndex};
use tripline_model::{TenantId, TripId, VehicleId};
use tripline_store::{ChangeFeed, Checkpoint, StoreError, TripStore};

/// What can go wrong in the indexer.
#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    /// The index failed (files, writer lock).
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// How the indexer runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexerConfig {
    /// Longest time between a change read and its commit, milliseconds.
    pub commit_interval_ms: u64,
    /// How often an idle indexer asks the feed for changes, milliseconds.
    pub poll_interval_ms: u64,
    /// Changes read per feed request.
    pub batch: usize,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig { commit_interval_ms: 250, poll_interval_ms: 100, batch: 1000 }
    }
}

/// Counters of the indexer, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexerCounters {
    /// Changes read from the feed.
    pub changes: u64,
    /// Documents written (upserts) and removed.
    pub upserts: u64,
    /// Documents removed.
    pub deletes: u64,
    /// Commits.
    pub commits: u64,
    /// The checkpoint of the last commit.
    pub committed: Checkpoint,
}

/// The indexer: a store's change feed into a trip index.
#[derive(Debug)]
pub struct Indexer<S> {
    store: S,
    index: LiveIndex,
    config: IndexerConfig,
}

/// How often the indexer looks whether `tripline reindex` switched the index generation.
const GENERATION_CHECK: Duration = Duration::from_secs(1);

impl<S: ChangeFeed + TripStore + Send + Sync + 'static> Indexer<S> {
    /// An indexer of `store` into `index` (the generation in use; when a rebuild switches it,
    /// the indexer moves to the new generation and resumes at that generation's checkpoint).
    pub fn new(store: S, index: LiveIndex, config: IndexerConfig) -> Self {
        Indexer { store, index, config }
    }

    /// Runs until `shutdown` turns true, then commits what it applied and returns. `status`
    /// follows the counters after every commit.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        status: watch::Sender<IndexerCounters>,
    ) -> Result<IndexerCounters, IndexerError> {
        let Indexer { store, index: live, config } = self;
        crate::metrics::describe();
        let mut index = live.get();
        let mut generation_checked = Instant::now();
        let mut writer = Some(index.writer()?);
        let mut counters = IndexerCounters { committed: index.checkpoint()?, ..IndexerCounters::default() };
        let mut position = counters.committed.clone();
        // Trips changed since the last commit: (tenant, vehicle, trip).
        let mut pending: BTreeSet<(TenantId, VehicleId, TripId)> = BTreeSet::new();
        // When the oldest change not yet committed was read.
        let mut dirty_since: Option<Instant> = None;
        let commit_interval = Duration::from_millis(config.commit_interval_ms);
        let mut backoff = Duration::from_millis(100);
        loop {
            if *shutdown.borrow() {
                break;
            }
            if generation_checked.elapsed() >= GENERATION_CHECK {
                generation_checked = Instant::now();
                match live.refresh() {
                    Ok(false) => {}
                    Ok(true) => {
                        // A rebuild replaced the index: what this writer holds uncommitted is
                        // in the rebuild too, or after its checkpoint.
                        drop(writer.take());
                        index = live.get();
                        writer = Some(index.writer()?);
                        counters.committed = index.checkpoint()?;
                        position = counters.committed.clone();
                        pending.clear();
                        dirty_since = None;
                        tracing::info!(generation = %live.generation(), "indexer moved to the rebuilt index");
                        crate::metrics::committed(index.document_count());
                        status.send_replace(counters.clone());
                    }
                    Err(error) => tracing::warn!(%error, "looking for a rebuilt index failed"),
                }
            }
            let batch = match store.read_changes(&position, config.batch.max(1)).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "reading the change feed failed; retrying");
                    wait(&mut shutdown, backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let idle = batch.changes.is_empty();
            if !idle {
                counters.changes += batch.changes.len() as u64;
                crate::metrics::changes(batch.changes.len());
                // Changed trips are applied once per commit, however often they changed since.
                pending.extend(batch.changes.into_iter().map(|c| (c.tenant, c.vehicle_id, c.trip_id)));
                position = batch.checkpoint;
                dirty_since.get_or_insert_with(Instant::now);
            } else if position != counters.committed && dirty_since.is_none() {
                // The feed moved past entries with nothing to apply (watermarks): keep it.
                dirty_since = Some(Instant::now());
            }
            crate::metrics::lag(dirty_since.map_or(0.0, |at| at.elapsed().as_secs_f64()));
            if dirty_since.is_some_and(|at| at.elapsed() >= commit_interval || idle) {
                if let Err(error) = flush(&store, &index, &mut writer, &mut pending, &position, &mut counters).await? {
                    // Nothing is committed: the same trips are read again next time.
                    tracing::warn!(%error, "reading changed trips failed; retrying");
                    wait(&mut shutdown, backoff).await;
                    continue;
                }
                dirty_since = None;
                crate::metrics::committed(index.document_count());
                status.send_replace(counters.clone());
            }
            if idle {
                wait(&mut shutdown, Duration::from_millis(config.poll_interval_ms)).await;
            }
        }
        if dirty_since.is_some()
            && let Err(error) = flush(&store, &index, &mut writer, &mut pending, &position, &mut counters).await?
        {
            // Nothing is committed: the next start reads the same changes again.
            tracing::warn!(%error, "reading changed trips failed at shutdown");
        }
        status.send_replace(counters.clone());
        Ok(counters)
    }
}

/// Sleeps for `duration` or until shutdown.
async fn wait(shutdown: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

/// Applies the pending trips and commits them with `position`. A failed store read commits
/// nothing and is returned (inside `Ok`) for the caller to retry; index failures are errors.
async fn flush<S: TripStore>(
    store: &S,
    index: &TripIndex,
    writer: &mut Option<IndexWriter>,
    pending: &mut BTreeSet<(TenantId, VehicleId, TripId)>,
    position: &Checkpoint,
    counters: &mut IndexerCounters,
) -> Result<Result<(), StoreError>, IndexerError> {
    let (upserts, deletes) = match apply(store, index, writer.as_ref(), pending).await {
        Ok(applied) => applied,
        Err(error) => return Ok(Err(error)),
    };
    counters.upserts += upserts;
    counters.deletes += deletes;
    pending.clear();
    *writer = Some(commit(index, writer.take(), position).await?);
    counters.commits += 1;
    counters.committed = position.clone();
    Ok(Ok(()))
}

/// Trips read from the store at once while applying changes (ScyllaDB answers many reads in
/// parallel; one after another, a commit of a few hundred changed trips took most of a second).
const CONCURRENT_READS: usize = 32;

/// Applies changes: each changed trip is replaced by its stored state, or removed when the
/// store no longer has it. Returns (upserts, deletes).
async fn apply<S: TripStore>(
    store: &S,
    index: &TripIndex,
    writer: Option<&IndexWriter>,
    changed: &BTreeSet<(TenantId, VehicleId, TripId)>,
) -> Result<(u64, u64), StoreError> {
    let Some(writer) = writer else { return Ok((0, 0)) };
    let (mut upserts, mut deletes) = (0, 0);
    let keys: Vec<&(TenantId, VehicleId, TripId)> = changed.iter().collect();
    for chunk in keys.chunks(CONCURRENT_READS) {
        let reads = futures::future::join_all(chunk.iter().map(|(t, v, i)| store.trip_of_vehicle(t, v, i))).await;
        for ((tenant, vehicle, trip_id), read) in chunk.iter().zip(reads) {
            match read? {
                Some(trip) => match index.upsert(writer, &trip) {
                    Ok(()) => upserts += 1,
                    Err(error) => tracing::error!(%error, %trip_id, "trip not indexable; skipped"),
                },
                None => {
                    index.delete(writer, tenant, vehicle, trip_id);
                    deletes += 1;
                }
            }
        }
    }
    Ok((upserts, deletes))
}

/// Commits on a blocking thread (a commit fsyncs), handing the writer back.
async fn commit(
    index: &TripIndex,
    writer: Option<IndexWriter>,
    checkpoint: &Checkpoint,
) -> Result<IndexWriter, IndexerError> {
    let index = index.clone();
    let checkpoint = checkpoint.clone();
    let mut writer = match writer {
        Some(writer) => writer,
        None => index.writer()?,
    };
    let result = tokio::task::spawn_blocking(move || {
        let outcome = index.commit(&mut writer, &checkpoint);
        (writer, outcome)
    })
    .await;
    match result {
        Ok((writer, Ok(()))) => Ok(writer),
        Ok((_, Err(error))) => Err(error.into()),
        Err(join) => Err(IndexerError::Index(IndexError::Tantivy { detail: format!("commit task failed: {join}") })),
    }
}
