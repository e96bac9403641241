//! The change feed on ScyllaDB: entries per writer in `feed((writer, bucket), seq)`, a watermark
//! per writer in `feed_writers`, and this writer's recent entries served from memory (module doc of
//! [`super`], ADR 0001).

use super::*;

/// Sequence numbers of this process's change-feed writes.
#[derive(Default)]
pub(super) struct FeedState {
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

    /// The watermark in memory and the one last published.
    fn marks(&self) -> (u64, u64) {
        (self.watermark(), self.published)
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

/// Values of one change-feed row: writer, bucket, seq, tenant, vehicle, trip, written at, notices
/// (JSON).
type FeedRow = (String, i64, i64, String, String, String, i64, Option<Vec<u8>>);

/// A change-feed row as read: seq, tenant, vehicle, trip, written at, notices (JSON); the last
/// two are null in rows of schema 3.
type ReadFeedRow = (i64, String, String, String, Option<i64>, Option<Vec<u8>>);

impl Inner {
    /// The feed's numbers. A panic while the lock was held (a bug elsewhere) does not stop the
    /// feed: every change to the state is a single step, so the state is whole and is used as
    /// it is (refusing it would leave numbers in flight and the watermark stalled for good).
    pub(super) fn feed_state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        lock(&self.feed)
    }
}

/// The feed's state, poisoned or not ([`Inner::feed_state`]).
fn lock(feed: &Mutex<FeedState>) -> std::sync::MutexGuard<'_, FeedState> {
    feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FeedState {
    /// A writer's state before its first entry.
    pub(super) fn new() -> Self {
        FeedState { next_seq: 1, ..FeedState::default() }
    }

    /// Numbers `count` entries: the first of them, all in flight until [`FeedState::settle`].
    fn reserve(&mut self, count: u64) -> u64 {
        let first = self.next_seq;
        self.next_seq = first + count;
        self.in_flight.extend(first..self.next_seq);
        first
    }

    /// The entries numbered `seqs` are written (`kept`: those to serve from memory) or
    /// abandoned (`None`; the caller retries and announces the trips again under new numbers):
    /// either way they no longer hold the watermark back. In the same step as the watermark
    /// moves, so a reader never takes a kept entry's number for an abandoned one.
    fn settle(&mut self, seqs: std::ops::Range<u64>, kept: Option<Vec<Change>>) {
        for seq in seqs {
            self.in_flight.remove(&seq);
        }
        if let Some(kept) = kept {
            self.recent.extend(kept.into_iter().map(|change| (change.seq, change)));
            while self.recent.len() > LOCAL_ENTRIES {
                let Some((seq, _)) = self.recent.pop_first() else { break };
                self.forgotten = self.forgotten.max(seq);
            }
        }
    }

    /// Keeps entries in memory from the next number on: those numbered so far are not kept.
    pub(super) fn keep_from_now(&mut self) {
        self.forgotten = self.forgotten.max(self.next_seq.saturating_sub(1));
    }
}

/// Numbers reserved for entries being written. Settled by [`Reserved::settle`]; dropped unsettled
/// (the write's future cancelled), they are released as abandoned, so they never hold the
/// watermark back for good.
struct Reserved<'a> {
    feed: &'a Mutex<FeedState>,
    settled: &'a tokio::sync::Notify,
    seqs: std::ops::Range<u64>,
    done: bool,
}

impl<'a> Reserved<'a> {
    /// Numbers `count` entries, and says what `under_lock` says in the same step (whether they
    /// are kept in memory: [`TripStore::keep_written`] switches that under the same lock).
    fn new(
        feed: &'a Mutex<FeedState>,
        settled: &'a tokio::sync::Notify,
        count: u64,
        under_lock: impl FnOnce() -> bool,
    ) -> (Self, bool) {
        let (first, said) = {
            let mut state = lock(feed);
            (state.reserve(count), under_lock())
        };
        (Reserved { feed, settled, seqs: first..first + count, done: false }, said)
    }

    /// The entries are written (`kept`: those to serve from memory) or abandoned (`None`).
    fn settle(mut self, kept: Option<Vec<Change>>) {
        self.done = true;
        lock(self.feed).settle(self.seqs.clone(), kept);
        self.settled.notify_waiters();
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(self.feed).settle(self.seqs.clone(), None);
            self.settled.notify_waiters();
        }
    }
}

impl ScyllaStore {
    /// Returns once the published watermark is at least `last`: this writer's entries up to
    /// `last` are readable by any reader, and stay so after a crash. Waits while an earlier
    /// number is still being written (its write settles it either way). Watermark writes are
    /// serialised, so a smaller one never lands after a larger one, and one write covers every
    /// entry settled by then: the writers waiting behind it usually find theirs published.
    async fn publish_watermark_through(&self, last: u64) -> StoreResult<()> {
        loop {
            let settled = self.inner.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let (watermark, published) = self.inner.feed_state().marks();
            if published >= last {
                return Ok(());
            }
            if watermark < last {
                settled.await;
                continue;
            }
            let _serial = self.inner.watermark_write.lock().await;
            let (watermark, published) = self.inner.feed_state().marks();
            if published >= last {
                return Ok(());
            }
            let writer = self.inner.writer.clone();
            self.execute("feed watermark", &self.inner.statements.upsert_watermark, (writer, watermark as i64)).await?;
            let mut feed = self.inner.feed_state();
            feed.published = feed.published.max(watermark);
            return Ok(());
        }
    }

    /// Appends `changes` to the feed while `rows` (the writes they announce) runs: the entries
    /// become readable only once both are durable, so no reader sees an entry before its trip.
    /// `writes` (from [`Written::writes`], one per change or none) are kept once that is so.
    /// Returns once the entries are under the published watermark.
    pub(super) async fn announce(
        &self,
        changes: Vec<Change>,
        writes: Vec<(TripKey, Option<TripRecord>)>,
        rows: impl Future<Output = StoreResult<()>>,
    ) -> StoreResult<()> {
        // Before numbering: an error here leaves no number in flight.
        let notices = changes
            .iter()
            .map(|c| c.notices.as_ref().map(|n| serde_json::to_vec(n).map_err(|e| corrupt("feed", e))).transpose())
            .collect::<StoreResult<Vec<_>>>()?;
        let count = changes.len() as u64;
        let (reserved, local) =
            Reserved::new(&self.inner.feed, &self.inner.settled, count, || self.inner.written.is_enabled());
        let (first, last) = (reserved.seqs.start, reserved.seqs.end.saturating_sub(1));
        let (batches, kept) = feed_rows(&self.inner.writer, first, changes, notices, local);
        let (rows, feed) = tokio::join!(rows, self.write_feed_batches(batches));
        let result = rows.and(feed);
        if result.is_ok() {
            // Kept before the watermark lets a reader see the entries.
            self.inner.written.keep_from(first, writes);
        }
        reserved.settle(result.is_ok().then_some(kept));
        result?;
        if local {
            self.inner.signal.send_modify(|n| *n += 1);
        }
        self.publish_watermark_through(last).await?;
        if !local {
            self.inner.signal.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// Writes the feed's rows, one unlogged batch each (rows of one partition), idempotently.
    async fn write_feed_batches(&self, batches: Vec<Vec<FeedRow>>) -> StoreResult<()> {
        let session = &self.inner.session;
        let statement = &self.inner.statements.insert_feed;
        futures::stream::iter(batches)
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
            .await
            .map(drop)
    }
}

/// The feed rows of `changes` numbered from `first`, grouped in batches of one bucket (one
/// partition) and at most [`MAX_BATCH_ROWS`]; and, when `local`, the entries to keep in memory.
fn feed_rows(
    writer: &str,
    first: u64,
    changes: Vec<Change>,
    notices: Vec<Option<Vec<u8>>>,
    local: bool,
) -> (Vec<Vec<FeedRow>>, Vec<Change>) {
    let mut by_bucket: BTreeMap<u64, Vec<FeedRow>> = BTreeMap::new();
    let mut kept = Vec::with_capacity(if local { changes.len() } else { 0 });
    for ((seq, change), notices) in (first..).zip(changes).zip(notices) {
        by_bucket.entry(seq / FEED_BUCKET).or_default().push((
            writer.to_owned(),
            (seq / FEED_BUCKET) as i64,
            seq as i64,
            change.tenant.as_str().to_owned(),
            change.vehicle_id.as_str().to_owned(),
            change.trip_id.as_str().to_owned(),
            change.at_ms,
            notices,
        ));
        if local {
            kept.push(Change { writer: writer.to_owned(), seq, ..change });
        }
    }
    let batches = by_bucket
        .into_values()
        .flat_map(|rows| rows.chunks(MAX_BATCH_ROWS).map(<[_]>::to_vec).collect::<Vec<_>>())
        .collect();
    (batches, kept)
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
            let mut feed = self.inner.feed_state();
            if let Some((local, end)) = feed.local_after(checkpoint.position(own), limit) {
                own_served = true;
                let others_due = local.is_empty() || feed.others_read.is_none_or(|at| at.elapsed() >= OTHERS_EVERY);
                checkpoint.advance(own, end);
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
                let rows: Vec<ReadFeedRow> = self.rows("feed", &s.select_feed, values).await?;
                let full = rows.len() == usize::try_from(want).unwrap_or(usize::MAX);
                for (seq, tenant, vehicle, trip, at_ms, notices) in rows {
                    position = u64::try_from(seq).unwrap_or(position);
                    changes.push(Change {
                        tenant: TenantId::parse(&tenant).map_err(|e| corrupt("feed", e))?,
                        vehicle_id: VehicleId::parse(&vehicle).map_err(|e| corrupt("feed", e))?,
                        trip_id: TripId::parse(&trip).map_err(|e| corrupt("feed", e))?,
                        writer: writer.clone(),
                        seq: position,
                        at_ms: at_ms.unwrap_or(0),
                        notices: notices
                            .map(|json| serde_json::from_slice(&json).map_err(|e| corrupt("feed", e)))
                            .transpose()?,
                    });
                }
                if !full {
                    // Nothing more up to the bucket's end (gaps are abandoned numbers).
                    position = bucket_end;
                }
            }
            checkpoint.advance(&writer, position);
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
    use futures::FutureExt;

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
    fn numbers_of_a_cancelled_write_stop_holding_the_watermark_back() {
        let (feed, settled) = (Mutex::new(FeedState::new()), tokio::sync::Notify::new());
        let (first, _) = Reserved::new(&feed, &settled, 2, || false);
        let (second, _) = Reserved::new(&feed, &settled, 3, || false);
        assert_eq!((first.seqs.clone(), second.seqs.clone()), (1..3, 3..6));
        let woken = settled.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        second.settle(Some(Vec::new()));
        assert_eq!(lock(&feed).watermark(), 0, "1 and 2 are still being written");
        drop(first);
        assert_eq!(lock(&feed).watermark(), 5, "the cancelled write's numbers are passed over");
        assert!(woken.now_or_never().is_some(), "a writer waiting for the watermark is woken");
    }

    #[test]
    fn a_reader_behind_the_kept_entries_reads_the_cluster() {
        let feed = state(10, &[6, 7, 8, 9], &[], 5);
        assert_eq!(seqs(feed.local_after(4, 100)), None);
        assert_eq!(seqs(feed.local_after(5, 100)), Some((vec![6, 7, 8, 9], 9)));
    }
}
