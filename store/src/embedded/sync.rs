//! Group commit: writers share `fdatasync`s instead of queueing for one each.
//!
//! A write commits its batch to fjall's journal without syncing it and takes a number (commit
//! order). It then waits for a sync: whoever finds the journal not yet synced up to its own batch
//! syncs it, once, for every batch committed before that sync began; the writers that committed
//! meanwhile find their batch covered, or sync the next group together. A write still returns
//! only once its batch is durable.
//!
//! A committed batch is readable before it is durable, so the change feed is read only below
//! [`GroupSync::feed_durable`]: feed entries become readable by the feed's followers once
//! durable, in sequence order, and only then are their trips kept as written for the indexer
//! ([`crate::written::Written`]) and followers woken.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::records::{TripKey, TripRecord};

/// A committed batch's number: the write is durable once its number is synced.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket(u64);

/// A committed batch's change-feed entries, `first..next`, with the trips they announce.
pub(super) struct FeedEntries {
    pub(super) first: u64,
    pub(super) next: u64,
    pub(super) writes: Vec<(TripKey, Option<TripRecord>)>,
}

/// Feed entries that became durable with a sync, in sequence order.
pub(super) struct Synced {
    /// Each covered batch's entries, oldest first.
    pub(super) entries: Vec<FeedEntries>,
}

struct Committed {
    /// Batches committed so far (their numbers are 1..=count).
    count: u64,
    /// Batches with feed entries not yet durable, in commit (and sequence) order.
    feed: VecDeque<(u64, FeedEntries)>,
}

/// The shared state of group commit.
pub(super) struct GroupSync {
    committed: Mutex<Committed>,
    /// Batches known durable; held while syncing, so one sync runs at a time.
    durable: Mutex<u64>,
    /// Feed entries below this sequence number are durable.
    feed_durable: AtomicU64,
}

// Each update is a few integer and queue operations: a panic elsewhere leaves the state usable
// (a sync that failed did not advance it).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupSync {
    /// Nothing committed; the feed durable below `feed_next` (as the store was opened).
    pub(super) fn new(feed_next: u64) -> GroupSync {
        GroupSync {
            committed: Mutex::new(Committed { count: 0, feed: VecDeque::new() }),
            durable: Mutex::new(0),
            feed_durable: AtomicU64::new(feed_next),
        }
    }

    /// Numbers a batch just committed (unsynced), with its feed entries if it has any. A batch
    /// with feed entries is numbered while its writer still holds the feed's numbering, so feed
    /// entries are numbered in sequence order.
    pub(super) fn committed(&self, feed: Option<FeedEntries>) -> Ticket {
        let mut committed = lock(&self.committed);
        committed.count += 1;
        let number = committed.count;
        if let Some(feed) = feed.filter(|f| f.next > f.first) {
            committed.feed.push_back((number, feed));
        }
        Ticket(number)
    }

    /// Returns once `ticket`'s batch is durable, syncing with `sync` when no sync has covered
    /// it yet. What a sync made durable is handed to `on_synced` (by the writer that synced,
    /// while no other sync runs, so in sequence order).
    pub(super) fn wait<E>(
        &self,
        ticket: Ticket,
        sync: impl FnOnce() -> Result<(), E>,
        on_synced: impl FnOnce(Synced),
    ) -> Result<(), E> {
        let mut durable = lock(&self.durable);
        if *durable >= ticket.0 {
            return Ok(());
        }
        // Every batch numbered up to here finished its commit before it was numbered.
        let upto = lock(&self.committed).count;
        sync()?;
        *durable = upto;
        let entries: Vec<FeedEntries> = {
            let mut committed = lock(&self.committed);
            let covered = committed.feed.iter().take_while(|(number, _)| *number <= upto).count();
            committed.feed.drain(..covered).map(|(_, entries)| entries).collect()
        };
        if let Some(last) = entries.last() {
            self.feed_durable.store(last.next, Ordering::Release);
            on_synced(Synced { entries });
        }
        Ok(())
    }

    /// The feed's entries below this sequence number are durable (and readable).
    pub(super) fn feed_durable(&self) -> u64 {
        self.feed_durable.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn entries(first: u64, next: u64) -> Option<FeedEntries> {
        Some(FeedEntries { first, next, writes: Vec::new() })
    }

    #[test]
    fn one_sync_covers_every_batch_committed_before_it() {
        let group = GroupSync::new(1);
        let (a, b) = (group.committed(entries(1, 3)), group.committed(None));
        let syncs = AtomicUsize::new(0);
        let mut seen = Vec::new();
        let sync = || {
            syncs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(())
        };
        group.wait(b, sync, |s| seen.extend(s.entries.iter().map(|e| e.next))).unwrap();
        group.wait(a, || Err(()), |_| panic!("nothing more was synced")).unwrap();
        assert_eq!((syncs.load(Ordering::SeqCst), seen), (1, vec![3]));
        assert_eq!(group.feed_durable(), 3);
    }

    #[test]
    fn entries_stay_unreadable_until_their_sync_and_a_failed_sync_advances_nothing() {
        let group = GroupSync::new(5);
        let ticket = group.committed(entries(5, 8));
        assert_eq!(group.feed_durable(), 5, "committed, not yet durable");
        assert!(group.wait(ticket, || Err("disk"), |_| panic!("not synced")).is_err());
        assert_eq!(group.feed_durable(), 5);
        let mut seen = Vec::new();
        group.wait(ticket, || Ok::<_, ()>(()), |s| seen.extend(s.entries.iter().map(|e| (e.first, e.next)))).unwrap();
        assert_eq!((seen, group.feed_durable()), (vec![(5, 8)], 8));
    }

    #[test]
    fn writers_on_many_threads_share_syncs_and_see_the_feed_in_order() {
        let group = Arc::new(GroupSync::new(0));
        let next = Arc::new(Mutex::new(0u64));
        let syncs = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, next, syncs, order) = (group.clone(), next.clone(), syncs.clone(), order.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let (ticket, first) = {
                            let mut next = next.lock().unwrap();
                            let first = *next;
                            *next += 2;
                            (group.committed(entries(first, first + 2)), first)
                        };
                        let sync = || {
                            syncs.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            Ok::<_, ()>(())
                        };
                        group
                            .wait(ticket, sync, |s| order.lock().unwrap().extend(s.entries.iter().map(|e| e.first)))
                            .unwrap();
                        // Durable on return: the feed reads at least up to this write's entries.
                        assert!(group.feed_durable() >= first + 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, (0..3200).step_by(2).collect::<Vec<u64>>(), "every batch once, in sequence order");
        assert_eq!(group.feed_durable(), 3200);
        assert!(syncs.load(Ordering::SeqCst) < 1600, "{} syncs for 1,600 batches", syncs.load(Ordering::SeqCst));
    }
}
