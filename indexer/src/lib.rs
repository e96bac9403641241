//! # tripline-indexer
//!
//! Follows the write store's change feed and keeps one Tantivy document per trip, committing
//! with the change-feed checkpoint in the commit payload so data and progress commit together.
//!
//! **Shape.** Two tasks. The *follower* reads the feed without pause and gathers the changed
//! trips (`pending.rs`); when the feed is idle it asks again after `poll_interval_ms`, or as soon
//! as the store signals an entry written in this process ([`ChangeFeed::feed_signal`]). The
//! *applier* owns the `IndexWriter`: it takes everything gathered as one cut, reads the cut's
//! trips from the store while the previous cut's commit is still running on a blocking thread,
//! then replaces their documents and commits the cut with its checkpoint. Commits follow each
//! other as fast as they complete, at most one per `commit_interval_ms`.
//!
//! **Reading back.** A trip whose changes in a cut all come from one writer, when that writer
//! is this process's store and it still keeps the trip as written at the cut's latest entry or
//! later ([`TripStore::take_written`]), is indexed from that record without reading it from the
//! store; every other trip is read. `tripline run` turns this on when it runs ingest and the
//! indexer together. The record is a durable write at or after the entry, as a read would be.
//!
//! **Promises.** A changed trip is searchable about one commit cycle (the interval, or the
//! commit's own duration when longer) plus one store read and one commit after its write is
//! durable. After a restart, or a crash at any point, the index resumes at the checkpoint of its
//! last commit: changes after it are applied again, and applying a change twice changes nothing
//! (the document is replaced by the trip as stored now).

pub mod metrics;
mod pending;
mod reindex;

pub use reindex::{ReindexError, ReindexReport, reindex};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tripline_index::{IndexError, IndexWriter, LiveIndex, TripIndex};
use tripline_store::{Backoff, ChangeFeed, Checkpoint, StoreError, TripKey, TripRecord, TripStore};

use crate::pending::{Cut, Pending, Source};

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
    /// Least time between two commits, milliseconds (each commit writes a segment; this bounds
    /// how many a second). A commit that takes longer is followed at once. A change waits half
    /// of it on average before its commit starts; each commit costs tantivy's fixed work per
    /// segment (docs/benchmarks.md, "Decisions": 75 against 100 ms).
    pub commit_interval_ms: u64,
    /// How often an idle follower asks the feed for changes, milliseconds (entries written in
    /// this process wake it at once).
    pub poll_interval_ms: u64,
    /// Changes read per feed request.
    pub batch: usize,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig { commit_interval_ms: 75, poll_interval_ms: 100, batch: 1000 }
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
    /// Trips indexed as this process wrote them, without reading them back from the store.
    pub reused: u64,
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

/// Trips read from the store at once while applying a cut (ScyllaDB answers many reads in
/// parallel; one after another, a cut of a few hundred changed trips took most of a second).
const CONCURRENT_READS: usize = 32;

/// First wait after a failed store read; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the applier waits for the index's writer lock another writer holds (one left
/// committing by an indexer of this process that was stopped, or a process shutting down)
/// before it gives up.
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// What the follower and the applier share.
struct Shared {
    pending: Mutex<Pending>,
    /// The follower added changes (wakes the applier).
    added: Notify,
    /// The applier took a cut (wakes a follower that waits because too much is pending).
    taken: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every update of `Pending` is a few plain assignments: one cut short by a panic
        // elsewhere leaves it usable.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A commit running on a blocking thread, and what it commits.
struct Committing {
    task: tokio::task::JoinHandle<(IndexWriter, Result<(), IndexError>)>,
    checkpoint: Checkpoint,
    since: Instant,
    started: Instant,
    upserts: u64,
    deletes: u64,
    reused: u64,
}

impl<S: ChangeFeed + TripStore + Clone + Send + Sync + 'static> Indexer<S> {
    /// An indexer of `store` into `index` (the generation in use; when a rebuild switches it,
    /// the indexer moves to the new generation and resumes at that generation's checkpoint).
    pub fn new(store: S, index: LiveIndex, config: IndexerConfig) -> Self {
        Indexer { store, index, config }
    }

    /// Runs until `shutdown` turns true, then commits what it read and returns. `status`
    /// follows the counters after every commit.
    pub async fn run(
        self,
        mut shutdown: watch::Receiver<bool>,
        status: watch::Sender<IndexerCounters>,
    ) -> Result<IndexerCounters, IndexerError> {
        let Indexer { store, index: live, config } = self;
        crate::metrics::describe();
        let index = live.get();
        let committed = index.checkpoint()?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::new(committed.clone())),
            added: Notify::new(),
            taken: Notify::new(),
        });
        let (stop_follower, follower_stopped) = watch::channel(false);
        let follower = tokio::spawn(follow(store.clone(), shared.clone(), config.clone(), follower_stopped));
        // Another writer may hold the lock a moment longer (an indexer of this process that was
        // stopped, its last commit still running): the applier waits for it at its first cut.
        let writer = match index.live_writer() {
            Ok(writer) => Some(writer),
            Err(IndexError::WriterBusy) => None,
            Err(error) => return Err(error.into()),
        };
        let mut applier = Applier {
            store,
            writer,
            index,
            live,
            committing: None,
            counters: IndexerCounters { committed, ..IndexerCounters::default() },
            shared,
            status,
            generation_checked: Instant::now(),
        };
        let outcome = applier.run(Duration::from_millis(config.commit_interval_ms), &mut shutdown).await;
        let _ = stop_follower.send(true);
        let _ = follower.await;
        outcome?;
        // What the follower read up to its stop goes in one last commit.
        applier.finish_commit().await?;
        let cut = applier.shared.lock().take_cut(Instant::now());
        if let Some(cut) = cut {
            match read_trips(&applier.store, &cut.trips).await {
                Ok(read) => {
                    applier.start_commit(cut, read)?;
                    applier.finish_commit().await?;
                }
                // Nothing is committed: the next start reads the same changes again.
                Err(error) => tracing::warn!(%error, "reading changed trips failed at shutdown"),
            }
        }
        applier.counters.changes = applier.shared.lock().changes();
        applier.status.send_replace(applier.counters.clone());
        Ok(applier.counters)
    }
}

/// The follower: reads the feed from where `Pending` says, adds what it finds, until `stop`.
async fn follow<S: ChangeFeed>(store: S, shared: Arc<Shared>, config: IndexerConfig, mut stop: watch::Receiver<bool>) {
    let poll = Duration::from_millis(config.poll_interval_ms);
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    // Entries written in this process wake the follower at once; others wait for the poll.
    let mut signal = store.feed_signal();
    while !*stop.borrow() {
        let (from, epoch, full) = {
            let pending = shared.lock();
            let (from, epoch) = pending.read_from();
            (from, epoch, pending.is_full())
        };
        if full {
            tokio::select! {
                _ = shared.taken.notified() => {}
                _ = wait(&mut stop, poll) => {}
            }
            continue;
        }
        if let Some(signal) = &mut signal {
            // Seen from here on: a write during the read wakes the wait after it.
            signal.borrow_and_update();
        }
        let batch = match store.read_changes(&from, config.batch.max(1)).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "reading the change feed failed; retrying");
                wait(&mut stop, backoff.failed()).await;
                continue;
            }
        };
        backoff.succeeded();
        let (count, idle) = (batch.changes.len(), batch.changes.is_empty());
        {
            let mut pending = shared.lock();
            if pending.add(epoch, batch.changes, batch.checkpoint, Instant::now()) {
                crate::metrics::changes(count);
            }
            crate::metrics::lag(pending.lag_s(Instant::now()));
        }
        shared.added.notify_one();
        if idle {
            tokio::select! {
                () = wait(&mut stop, poll) => {}
                gone = signalled(&mut signal) => if gone { signal = None },
            }
        }
    }
}

/// Returns when `signal` changes (`false`), or at once when its sender is gone (`true`); never
/// without one.
async fn signalled(signal: &mut Option<watch::Receiver<u64>>) -> bool {
    match signal {
        Some(signal) => signal.changed().await.is_err(),
        None => std::future::pending().await,
    }
}

/// The applier's state: the writer (or the commit holding it), the index generation, counters.
struct Applier<S> {
    store: S,
    index: TripIndex,
    live: LiveIndex,
    writer: Option<IndexWriter>,
    committing: Option<Committing>,
    counters: IndexerCounters,
    shared: Arc<Shared>,
    status: watch::Sender<IndexerCounters>,
    generation_checked: Instant,
}

/// What the applier does next.
enum Next {
    Stop,
    /// The running commit finished (boxed: a writer is large, and this is once per commit).
    Committed(Box<CommitOutput>),
    Cut,
    /// Time to look whether a rebuild switched the index generation (while no commit runs).
    LookForRebuild,
}

impl<S: TripStore> Applier<S> {
    /// Cuts, reads and commits until `shutdown`; returns with a commit possibly still running.
    /// Cuts are `spacing` apart at least.
    async fn run(&mut self, spacing: Duration, shutdown: &mut watch::Receiver<bool>) -> Result<(), IndexerError> {
        let mut last_cut: Option<Instant> = None;
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let not_before = last_cut.map_or_else(Instant::now, |at| at + spacing);
            let next = tokio::select! {
                biased;
                () = stop_requested(shutdown) => Next::Stop,
                output = commit_done(&mut self.committing) => Next::Committed(Box::new(output)),
                () = cut_ready(&self.shared, not_before) => Next::Cut,
                () = tokio::time::sleep_until((self.generation_checked + GENERATION_CHECK).into()),
                    if self.committing.is_none() => Next::LookForRebuild,
            };
            match next {
                Next::Stop => return Ok(()),
                Next::LookForRebuild => {
                    self.switch_if_rebuilt()?;
                }
                Next::Committed(output) => {
                    self.complete_commit(*output)?;
                    self.switch_if_rebuilt()?;
                }
                Next::Cut => {
                    let Some(cut) = self.shared.lock().take_cut(Instant::now()) else { continue };
                    last_cut = Some(Instant::now());
                    self.shared.taken.notify_one();
                    // The previous cut's commit goes on meanwhile.
                    let read = read_trips(&self.store, &cut.trips).await;
                    match read {
                        Ok(read) => {
                            backoff.succeeded();
                            self.finish_commit().await?;
                            if self.switch_if_rebuilt()? {
                                // The rebuilt generation has these changes, or the follower
                                // reads them again from its checkpoint.
                                continue;
                            }
                            self.take_writer(shutdown).await?;
                            self.start_commit(cut, read)?;
                        }
                        Err(error) => {
                            // Nothing of it is applied: its trips are pending again.
                            tracing::warn!(%error, "reading changed trips failed; retrying");
                            self.shared.lock().put_back(cut);
                            wait(shutdown, backoff.failed()).await;
                        }
                    }
                }
            }
        }
    }

    /// Holds the index's writer, waiting up to [`WRITER_WAIT`] while another writer holds its
    /// lock (an aborted indexer's commit still running on its blocking thread lets go when it
    /// ends).
    async fn take_writer(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), IndexerError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        while self.writer.is_none() {
            match self.index.live_writer() {
                Ok(writer) => self.writer = Some(writer),
                Err(IndexError::WriterBusy) if started.elapsed() < WRITER_WAIT && !*shutdown.borrow() => {
                    tracing::warn!("the index's writer lock is held; waiting for it");
                    wait(shutdown, backoff.failed()).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Replaces the cut's documents by its trips as read, and starts committing them.
    fn start_commit(&mut self, cut: Cut, read: Read) -> Result<(), IndexerError> {
        let mut writer = match self.writer.take() {
            Some(writer) => writer,
            None => self.index.live_writer()?,
        };
        let (upserts, deletes) = apply(&self.index, &writer, read.trips);
        let index = self.index.clone();
        let checkpoint = cut.checkpoint.clone();
        let task = tokio::task::spawn_blocking(move || {
            let outcome = index.commit(&mut writer, &checkpoint);
            (writer, outcome)
        });
        self.committing = Some(Committing {
            task,
            checkpoint: cut.checkpoint,
            since: cut.since,
            started: Instant::now(),
            upserts,
            deletes,
            reused: read.reused,
        });
        Ok(())
    }

    /// Waits for the running commit (if any) and completes it.
    async fn finish_commit(&mut self) -> Result<(), IndexerError> {
        let output = match &mut self.committing {
            Some(committing) => (&mut committing.task).await,
            None => return Ok(()),
        };
        self.complete_commit(output)
    }

    /// Takes the writer back from the finished commit and publishes the counters.
    fn complete_commit(&mut self, output: CommitOutput) -> Result<(), IndexerError> {
        let Some(committing) = self.committing.take() else { return Ok(()) };
        let (writer, outcome) = output.map_err(|join| {
            IndexerError::Index(IndexError::Tantivy { detail: format!("commit task failed: {join}") })
        })?;
        // A failed commit leaves the writer unusable for this cut: the error ends the indexer,
        // and the next start resumes at the last good checkpoint.
        outcome?;
        self.writer = Some(writer);
        crate::metrics::commit_took(
            committing.started.elapsed().as_secs_f64(),
            committing.since.elapsed().as_secs_f64(),
        );
        self.counters.upserts += committing.upserts;
        self.counters.deletes += committing.deletes;
        self.counters.reused += committing.reused;
        self.counters.commits += 1;
        self.counters.committed = committing.checkpoint;
        {
            let mut pending = self.shared.lock();
            pending.committed(committing.since);
            self.counters.changes = pending.changes();
            crate::metrics::lag(pending.lag_s(Instant::now()));
        }
        crate::metrics::committed(self.index.document_count());
        self.status.send_replace(self.counters.clone());
        Ok(())
    }

    /// Moves to a generation `tripline reindex` switched to, at most once a second; only while
    /// no commit runs. Returns whether it moved.
    fn switch_if_rebuilt(&mut self) -> Result<bool, IndexerError> {
        if self.committing.is_some() || self.generation_checked.elapsed() < GENERATION_CHECK {
            return Ok(false);
        }
        self.generation_checked = Instant::now();
        match self.live.refresh() {
            Ok(false) => Ok(false),
            Ok(true) => {
                // What this writer holds uncommitted is in the rebuild too, or after its
                // checkpoint.
                drop(self.writer.take());
                self.index = self.live.get();
                self.counters.committed = self.index.checkpoint()?;
                self.shared.lock().reset(self.counters.committed.clone());
                tracing::info!(generation = %self.live.generation(), "indexer moved to the rebuilt index");
                crate::metrics::documents(self.index.document_count());
                self.status.send_replace(self.counters.clone());
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(%error, "looking for a rebuilt index failed");
                Ok(false)
            }
        }
    }
}

/// Returns once `shutdown` is true (never, if its sender is gone without saying so).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What a commit task hands back: the writer, and whether the commit succeeded.
type CommitOutput = Result<(IndexWriter, Result<(), IndexError>), tokio::task::JoinError>;

/// The running commit's output, once it has finished (never, when none runs).
async fn commit_done(committing: &mut Option<Committing>) -> CommitOutput {
    match committing {
        Some(committing) => (&mut committing.task).await,
        None => std::future::pending().await,
    }
}

/// Returns once there is something to cut, and not before `not_before`.
async fn cut_ready(shared: &Shared, not_before: Instant) {
    while !shared.lock().has_cut() {
        shared.added.notified().await;
    }
    tokio::time::sleep_until(not_before.into()).await;
}

/// Sleeps for `duration` or until shutdown.
async fn wait(shutdown: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.changed() => {}
    }
}

/// A cut's trips as they are now (`None`: the store no longer has it).
struct Read {
    trips: Vec<(TripKey, Option<TripRecord>)>,
    /// How many of them were taken as this process wrote them.
    reused: u64,
}

/// The trips of a cut: those this process just wrote as it wrote them, the others read from the
/// store, [`CONCURRENT_READS`] at a time.
async fn read_trips<S: TripStore>(store: &S, trips: &BTreeMap<TripKey, Source>) -> Result<Read, StoreError> {
    let reading = Instant::now();
    let mut kept = Vec::new();
    let mut unread = Vec::new();
    for (key, source) in trips {
        let written = match source {
            Source::Writer { writer, seq } => store.take_written(key, writer, *seq),
            Source::Several => None,
        };
        match written {
            Some(trip) => kept.push((key.clone(), trip.into_record())),
            None => unread.push(key.clone()),
        }
    }
    let reused = kept.len() as u64;
    let reads = unread.len() as u64;
    let read = futures::stream::iter(unread)
        .map(|key: TripKey| async move {
            let trip = store.trip_of_vehicle(&key.tenant, &key.vehicle_id, &key.trip_id).await?;
            Ok((key, trip))
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, StoreError>>();
    crate::metrics::read_took(reading.elapsed().as_secs_f64(), reused, reads);
    let mut trips = read?;
    trips.extend(kept);
    Ok(Read { trips, reused })
}

/// Replaces each trip's document by its stored state, or removes it when the store no longer
/// has it. Returns (upserts, deletes).
fn apply(index: &TripIndex, writer: &IndexWriter, trips: Vec<(TripKey, Option<TripRecord>)>) -> (u64, u64) {
    let (mut upserts, mut deletes) = (0, 0);
    for (TripKey { tenant, vehicle_id: vehicle, trip_id }, read) in trips {
        match read {
            Some(trip) => match index.upsert(writer, &trip) {
                Ok(()) => upserts += 1,
                Err(error) => tracing::error!(%error, %trip_id, "trip not indexable; skipped"),
            },
            None => {
                index.delete(writer, &tenant, &vehicle, &trip_id);
                deletes += 1;
            }
        }
    }
    (upserts, deletes)
}
