//! Trips this process has just written, kept for a moment so that an indexer in the same process
//! can index a change without reading the trip back from the store.
//!
//! Off until [`crate::TripStore::keep_written`] turns it on (`tripline run` does when it runs the
//! ingest and indexer roles together). Then every trip write or deletion that became durable is
//! kept with its change-feed sequence number, latest per trip, at most [`CAPACITY`] trips and
//! [`MAX_AGE`] long. A lookup names the feed entry it is about (writer and sequence number) and
//! is answered with the latest write kept of that trip when the entry is this store's and that
//! write is the entry's or a later one, young enough: the later write is durable too, and its own entry, still to come, is answered again.
//! The entry's own write is handed out once and forgotten. Anything else is read from the store
//! as before.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::records::{TripKey, TripRecord};

/// Trips kept at most (the oldest go first). A trip record is a few KB: some tens of MB.
pub(crate) const CAPACITY: usize = 16_384;

/// How long a written trip is kept. An indexer following the feed reads an entry well within
/// this; one that sees it later (behind, or restarted) reads the trip from the store. The
/// indexer also reads from the store any trip another writer changed within this time, so a
/// kept record never hides a later write by someone else.
pub const MAX_AGE: Duration = Duration::from_secs(10);

/// The kept trips (`T`: what is kept of a write; a trip record, a plain value in the tests).
#[derive(Debug)]
pub(crate) struct Written<T = TripRecord> {
    /// The change-feed writer id of the store keeping them.
    writer: String,
    enabled: AtomicBool,
    max_age: Duration,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    /// Per trip, its latest write: sequence number, the trip (`None`: deleted), when.
    latest: HashMap<TripKey, (u64, Option<T>, Instant)>,
    /// Writes in the order kept, for evicting the oldest (entries already replaced or taken are
    /// skipped when they come up).
    order: VecDeque<(u64, TripKey)>,
}

impl Written<TripRecord> {
    /// What [`Written::keep_from`] will want of a write that deletes `deletes` and then writes
    /// `trips` (in that feed order): nothing when not enabled, so no record is cloned in vain.
    pub(crate) fn writes(&self, deletes: &[TripKey], trips: &[TripRecord]) -> Vec<(TripKey, Option<TripRecord>)> {
        if !self.is_enabled() {
            return Vec::new();
        }
        let deleted = deletes.iter().map(|key| (key.clone(), None));
        let written = trips.iter().map(|t| (TripKey::of(t), Some(t.clone())));
        deleted.chain(written).collect()
    }
}

impl<T: Clone> Written<T> {
    /// Nothing kept yet, and off, for the store writing the change feed as `writer`.
    pub(crate) fn new(writer: &str) -> Self {
        Written::with_max_age(writer, MAX_AGE)
    }

    fn with_max_age(writer: &str, max_age: Duration) -> Self {
        let state = State { latest: HashMap::new(), order: VecDeque::new() };
        Written { writer: writer.to_owned(), enabled: AtomicBool::new(false), max_age, state: Mutex::new(state) }
    }

    /// Starts keeping writes.
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Whether writes are kept (callers skip cloning records when not).
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        // Every update is a few map operations: a panic elsewhere leaves the state usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps durable writes: (feed sequence number, trip, the trip as written or `None` when
    /// deleted), in sequence order.
    pub(crate) fn keep(&self, writes: impl IntoIterator<Item = (u64, TripKey, Option<T>)>) {
        if !self.is_enabled() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        for (seq, key, trip) in writes {
            state.order.push_back((seq, key.clone()));
            state.latest.insert(key, (seq, trip, now));
        }
        while state.latest.len() > CAPACITY || state.order.len() > 2 * CAPACITY {
            let Some((seq, key)) = state.order.pop_front() else { break };
            if state.latest.get(&key).is_some_and(|(kept, _, _)| *kept == seq) {
                state.latest.remove(&key);
            }
        }
    }

    /// Keeps `writes` (from [`Written::writes`]) once durable, numbered from feed sequence
    /// number `first` on.
    pub(crate) fn keep_from(&self, first: u64, writes: Vec<(TripKey, Option<T>)>) {
        self.keep(writes.into_iter().zip(first..).map(|((key, trip), seq)| (seq, key, trip)));
    }

    /// The trip as last written (`Some(None)`: deleted), when `writer` is this store's and that
    /// write is the one at feed sequence number `seq` or a later one, and young enough. The
    /// write at `seq` itself is forgotten; a later one stays for its own entry.
    pub(crate) fn take(&self, key: &TripKey, writer: &str, seq: u64) -> Option<Option<T>> {
        if !self.is_enabled() || writer != self.writer {
            return None;
        }
        let mut state = self.lock();
        let (kept, trip, at) = state.latest.get(key)?;
        if *kept < seq {
            return None;
        }
        if at.elapsed() > self.max_age {
            state.latest.remove(key);
            return None;
        }
        if *kept > seq {
            return Some(trip.clone());
        }
        state.latest.remove(key).map(|(_, trip, _)| trip)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tripline_model::{TenantId, TripId, VehicleId};

    use super::*;

    fn key(trip: &str) -> TripKey {
        TripKey::new(&TenantId::parse("t").unwrap(), &VehicleId::parse("v").unwrap(), &TripId::parse(trip).unwrap())
    }

    fn kept() -> Written<&'static str> {
        let written = Written::new("w");
        written.enable();
        written
    }

    #[test]
    fn nothing_is_kept_until_enabled() {
        let written = Written::<&str>::new("w");
        written.keep([(1, key("a"), Some("first"))]);
        written.enable();
        assert_eq!(written.take(&key("a"), "w", 1), None);
        written.keep([(2, key("a"), None)]);
        assert_eq!(written.take(&key("a"), "w", 2), Some(None));
    }

    #[test]
    fn another_writers_entry_is_not_answered() {
        let written = kept();
        written.keep([(1, key("a"), Some("first"))]);
        assert_eq!(written.take(&key("a"), "other", 1), None);
        assert_eq!(written.take(&key("a"), "w", 1), Some(Some("first")), "still there for its own entry");
    }

    #[test]
    fn the_latest_write_answers_and_its_own_entry_takes_it() {
        let written = kept();
        written.keep([(1, key("a"), Some("first")), (2, key("b"), None), (3, key("a"), Some("second"))]);
        assert_eq!(written.take(&key("a"), "w", 1), Some(Some("second")), "an older entry gets the later write");
        assert_eq!(written.take(&key("a"), "w", 3), Some(Some("second")), "still there for its own entry");
        assert_eq!(written.take(&key("a"), "w", 3), None, "taken");
        assert_eq!(written.take(&key("b"), "w", 2), Some(None));
        assert_eq!(written.take(&key("c"), "w", 1), None, "never written here");
    }

    #[test]
    fn an_entry_newer_than_the_write_kept_is_not_answered() {
        let written = kept();
        written.keep([(5, key("a"), Some("fifth"))]);
        assert_eq!(written.take(&key("a"), "w", 7), None);
    }

    #[test]
    fn old_writes_are_not_answered() {
        let written = Written::<&str>::with_max_age("w", Duration::ZERO);
        written.enable();
        written.keep([(1, key("a"), Some("first"))]);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(written.take(&key("a"), "w", 1), None);
        assert!(written.lock().latest.is_empty(), "forgotten");
    }

    #[test]
    fn the_oldest_go_first_beyond_the_capacity() {
        let written = kept();
        let many = (0..CAPACITY as u64 + 10).map(|i| (i + 1, key(&format!("t{i}")), None));
        written.keep(many);
        assert_eq!(written.lock().latest.len(), CAPACITY);
        assert_eq!(written.take(&key("t0"), "w", 1), None);
        let last = CAPACITY as u64 + 9;
        assert_eq!(written.take(&key(&format!("t{last}")), "w", last + 1), Some(None));
    }

    #[test]
    fn rewriting_the_same_trips_keeps_the_queue_bounded() {
        let written = kept();
        for seq in 1..=(5 * CAPACITY as u64) {
            written.keep([(seq, key("a"), None)]);
        }
        let state = written.lock();
        assert!(state.order.len() <= 2 * CAPACITY);
        assert_eq!(state.latest.len(), 1);
    }
}
