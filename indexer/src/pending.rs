//! What the indexer has read from the change feed and not yet committed, shared by its two
//! tasks: the follower adds changes as it reads them, the applier takes them a *cut* at a time
//! (every trip changed up to a feed position, with that position as the cut's checkpoint).
//!
//! Pure data, no I/O: the rules that keep the checkpoint honest live here and are unit-tested.
//! - A cut holds every trip changed at or before its checkpoint and not in an earlier cut, so
//!   committing a cut's trips (read from the store after the cut) with its checkpoint never
//!   skips a change.
//! - A cut whose trips could not be read goes back: its trips join the pending ones, whose
//!   position is at least as far.
//! - A reset (the index generation changed) starts over from another checkpoint; a feed read
//!   that began before it is refused by its epoch, so an old position never lands in the new
//!   generation.
//! - Each trip of a cut says who changed it ([`Source`]): one writer, with its latest entry, or
//!   several. A trip another writer changed within [`WRITTEN_MAX_AGE`] counts as changed by
//!   several, even when that change was in an earlier cut, so the applier reads it from the store
//!   instead of taking it as this process wrote it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use tripline_store::{Change, Checkpoint, TripKey, WRITTEN_MAX_AGE};

/// Who changed a pending trip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// One writer, and the sequence number of its latest entry for the trip.
    Writer {
        /// The writer.
        writer: String,
        /// Its latest entry.
        seq: u64,
    },
    /// More than one writer (here, or recently): only the store knows which write is the last.
    Several,
}

impl Source {
    /// Both `self` and `other` changed the trip.
    fn and(self, other: Source) -> Source {
        match (self, other) {
            (Source::Writer { writer: a, seq: x }, Source::Writer { writer: b, seq: y }) if a == b => {
                Source::Writer { writer: a, seq: x.max(y) }
            }
            _ => Source::Several,
        }
    }
}

/// Changed trips read from the feed and held back from further reading: beyond this many the
/// follower waits for the applier (a cut is read into memory whole, and a trip record is a few
/// KB; 20,000 of them is tens of MB, and still a cut of seconds of a large fleet's changes).
pub(crate) const MAX_PENDING_TRIPS: usize = 20_000;

/// Every trip changed up to `checkpoint` and not in an earlier cut.
#[derive(Debug)]
pub(crate) struct Cut {
    pub(crate) trips: BTreeMap<TripKey, Source>,
    pub(crate) checkpoint: Checkpoint,
    /// When the oldest change in it was read.
    pub(crate) since: Instant,
    epoch: u64,
}

/// The state both tasks share (behind a mutex).
#[derive(Debug)]
pub(crate) struct Pending {
    /// Changed trips not in any cut yet.
    trips: BTreeMap<TripKey, Source>,
    /// Per trip changed within [`WRITTEN_MAX_AGE`], the writer of its last change and when that
    /// was read (older ones are dropped every so often).
    last_writer: HashMap<TripKey, (String, Instant)>,
    /// When `last_writer` was last cleared of old entries.
    pruned: Option<Instant>,
    /// How far the feed has been read.
    position: Checkpoint,
    /// The checkpoint of the last cut taken (the committed one at the start; none after a cut
    /// was given back, so that its position is offered again).
    cut_position: Option<Checkpoint>,
    /// When the oldest change not in any cut was read.
    since: Option<Instant>,
    /// When the oldest change of each cut taken and not yet committed was read, oldest first.
    in_flight: VecDeque<Instant>,
    /// Changes read in all.
    changes: u64,
    /// Bumped by a reset; a feed read started under another epoch is refused.
    epoch: u64,
}

impl Pending {
    /// Nothing pending; the feed is read from `committed`.
    pub(crate) fn new(committed: Checkpoint) -> Pending {
        Pending {
            trips: BTreeMap::new(),
            last_writer: HashMap::new(),
            pruned: None,
            position: committed.clone(),
            cut_position: Some(committed),
            since: None,
            in_flight: VecDeque::new(),
            changes: 0,
            epoch: 0,
        }
    }

    /// Where the follower reads next, and under which epoch.
    pub(crate) fn read_from(&self) -> (Checkpoint, u64) {
        (self.position.clone(), self.epoch)
    }

    /// Whether the follower should wait before reading more (the applier is behind).
    pub(crate) fn is_full(&self) -> bool {
        self.trips.len() >= MAX_PENDING_TRIPS
    }

    /// Records a feed read that started at [`Pending::read_from`] under `epoch`: its changes and
    /// the position it reached. Returns false (and changes nothing) when a reset came between.
    pub(crate) fn add(&mut self, epoch: u64, changes: Vec<Change>, position: Checkpoint, now: Instant) -> bool {
        if epoch != self.epoch {
            return false;
        }
        if !changes.is_empty() || position != self.position {
            // A move with no changes (past abandoned numbers) still has to be committed.
            self.since.get_or_insert(now);
        }
        self.changes += changes.len() as u64;
        self.forget_old_writers(now);
        for change in changes {
            let key = change.key();
            let Change { writer, seq, .. } = change;
            let another = self
                .last_writer
                .get(&key)
                .is_some_and(|(last, at)| *last != writer && now.saturating_duration_since(*at) <= WRITTEN_MAX_AGE);
            let source = if another { Source::Several } else { Source::Writer { writer: writer.clone(), seq } };
            self.last_writer.insert(key.clone(), (writer, now));
            self.add_trip(key, source);
        }
        self.position = position;
        true
    }

    fn add_trip(&mut self, key: TripKey, source: Source) {
        match self.trips.remove(&key) {
            Some(earlier) => self.trips.insert(key, earlier.and(source)),
            None => self.trips.insert(key, source),
        };
    }

    /// Drops the writers of changes older than [`WRITTEN_MAX_AGE`], once per that time.
    fn forget_old_writers(&mut self, now: Instant) {
        let due = self.pruned.is_none_or(|at| now.saturating_duration_since(at) > WRITTEN_MAX_AGE);
        if due {
            self.last_writer.retain(|_, (_, at)| now.saturating_duration_since(*at) <= WRITTEN_MAX_AGE);
            self.pruned = Some(now);
        }
    }

    /// Whether there is something to cut: changed trips, or a feed position not yet committed.
    pub(crate) fn has_cut(&self) -> bool {
        !self.trips.is_empty() || self.cut_position.as_ref() != Some(&self.position)
    }

    /// Takes everything pending as one cut (`None` when there is nothing).
    pub(crate) fn take_cut(&mut self, now: Instant) -> Option<Cut> {
        if !self.has_cut() {
            return None;
        }
        let since = self.since.take().unwrap_or(now);
        self.in_flight.push_back(since);
        self.cut_position = Some(self.position.clone());
        Some(Cut {
            trips: std::mem::take(&mut self.trips),
            checkpoint: self.position.clone(),
            since,
            epoch: self.epoch,
        })
    }

    /// Gives back a cut whose trips could not be read: they are pending again.
    pub(crate) fn put_back(&mut self, cut: Cut) {
        if cut.epoch != self.epoch {
            return;
        }
        self.forget_oldest_in_flight(cut.since);
        for (key, source) in cut.trips {
            self.add_trip(key, source);
        }
        self.since = Some(self.since.map_or(cut.since, |s| s.min(cut.since)));
        // The pending position is the cut's or further, and the next cut includes these trips.
        self.cut_position = None;
    }

    /// A cut is committed: it no longer counts as uncommitted.
    pub(crate) fn committed(&mut self, cut_since: Instant) {
        self.forget_oldest_in_flight(cut_since);
    }

    fn forget_oldest_in_flight(&mut self, since: Instant) {
        if let Some(i) = self.in_flight.iter().position(|s| *s == since) {
            self.in_flight.remove(i);
        }
    }

    /// Starts over from `committed` (another index generation): pending trips, cuts in flight
    /// and feed reads under way are forgotten.
    pub(crate) fn reset(&mut self, committed: Checkpoint) {
        let (changes, epoch) = (self.changes, self.epoch);
        let last_writer = std::mem::take(&mut self.last_writer);
        *self = Pending::new(committed);
        self.changes = changes;
        // Who wrote what recently still holds in the other generation.
        self.last_writer = last_writer;
        self.epoch = epoch + 1;
    }

    /// Changes read in all.
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    /// How long the oldest change read and not yet committed has waited, seconds (0: none).
    pub(crate) fn lag_s(&self, now: Instant) -> f64 {
        self.in_flight
            .iter()
            .chain(self.since.iter())
            .min()
            .map_or(0.0, |oldest| now.saturating_duration_since(*oldest).as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tripline_model::{TenantId, TripId, VehicleId};

    use super::*;

    fn change(trip: &str) -> Change {
        by("w", 1, trip)
    }

    fn by(writer: &str, seq: u64, trip: &str) -> Change {
        let mut change =
            Change::of(&TenantId::parse("t").unwrap(), &VehicleId::parse("v").unwrap(), &TripId::parse(trip).unwrap());
        change.writer = writer.to_owned();
        change.seq = seq;
        change
    }

    fn source(cut: &Cut, trip: &str) -> Source {
        cut.trips.iter().find(|(k, _)| k.trip_id.as_str() == trip).map(|(_, s)| s.clone()).unwrap()
    }

    fn writer(writer: &str, seq: u64) -> Source {
        Source::Writer { writer: writer.to_owned(), seq }
    }

    fn at(writer: &str, seq: u64) -> Checkpoint {
        Checkpoint { positions: [(writer.to_owned(), seq)].into() }
    }

    fn ids(cut: &Cut) -> Vec<String> {
        cut.trips.keys().map(|k| k.trip_id.to_string()).collect()
    }

    #[test]
    fn a_cut_holds_every_trip_changed_up_to_its_checkpoint_once() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        let (from, epoch) = pending.read_from();
        assert_eq!(from, Checkpoint::default());
        assert!(pending.add(epoch, vec![change("a"), change("b"), change("a")], at("w", 3), now));
        assert!(pending.add(epoch, vec![change("c")], at("w", 4), now));
        let cut = pending.take_cut(now).unwrap();
        assert_eq!(ids(&cut), ["a", "b", "c"]);
        assert_eq!(cut.checkpoint, at("w", 4));
        assert_eq!(pending.changes(), 4);
        assert!(!pending.has_cut());
        assert!(pending.take_cut(now).is_none());
        assert_eq!(pending.read_from().0, at("w", 4), "the follower goes on from the cut");
    }

    #[test]
    fn a_feed_move_without_changes_is_still_cut_and_committed() {
        let now = Instant::now();
        let mut pending = Pending::new(at("w", 10));
        assert!(!pending.has_cut());
        assert!(pending.add(0, Vec::new(), at("w", 10), now));
        assert!(!pending.has_cut(), "no move, nothing to commit");
        assert!(pending.add(0, Vec::new(), at("w", 12), now));
        let cut = pending.take_cut(now).unwrap();
        assert!(cut.trips.is_empty());
        assert_eq!(cut.checkpoint, at("w", 12));
    }

    #[test]
    fn a_cut_given_back_is_offered_again_with_what_came_after_it() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.add(0, vec![change("a")], at("w", 1), now);
        let cut = pending.take_cut(now).unwrap();
        pending.add(0, vec![change("b")], at("w", 2), now + Duration::from_millis(5));
        pending.put_back(cut);
        let again = pending.take_cut(now).unwrap();
        assert_eq!(ids(&again), ["a", "b"]);
        assert_eq!(again.checkpoint, at("w", 2));
        assert_eq!(again.since, now, "the given-back cut's age is kept");
    }

    #[test]
    fn a_cut_given_back_before_anything_else_was_read_is_offered_again() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.add(0, vec![change("a")], Checkpoint::default(), now);
        let cut = pending.take_cut(now).unwrap();
        assert_eq!(cut.checkpoint, Checkpoint::default());
        pending.put_back(cut);
        assert_eq!(ids(&pending.take_cut(now).unwrap()), ["a"]);
    }

    #[test]
    fn a_reset_refuses_feed_reads_begun_before_it() {
        let now = Instant::now();
        let mut pending = Pending::new(at("w", 5));
        let (_, old_epoch) = pending.read_from();
        pending.add(old_epoch, vec![change("a")], at("w", 6), now);
        let stale_cut = pending.take_cut(now).unwrap();
        pending.reset(at("w", 100));
        assert!(!pending.add(old_epoch, vec![change("b")], at("w", 7), now), "a read from the old generation");
        pending.put_back(stale_cut);
        assert!(!pending.has_cut(), "a cut of the old generation does not come back");
        assert_eq!(pending.read_from().0, at("w", 100));
        assert_eq!(pending.lag_s(now), 0.0);
        assert_eq!(pending.changes(), 1, "the count of changes read survives");
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_uncommitted_change() {
        let t0 = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        assert_eq!(pending.lag_s(t0), 0.0);
        pending.add(0, vec![change("a")], at("w", 1), t0);
        let first = pending.take_cut(t0 + Duration::from_millis(100)).unwrap();
        pending.add(0, vec![change("b")], at("w", 2), t0 + Duration::from_millis(200));
        let second = pending.take_cut(t0 + Duration::from_millis(300)).unwrap();
        assert!((pending.lag_s(t0 + Duration::from_millis(400)) - 0.4).abs() < 1e-9);
        pending.committed(first.since);
        assert!((pending.lag_s(t0 + Duration::from_millis(400)) - 0.2).abs() < 1e-9);
        pending.committed(second.since);
        assert_eq!(pending.lag_s(t0 + Duration::from_millis(400)), 0.0);
    }

    #[test]
    fn the_follower_waits_when_the_applier_is_far_behind() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        let many: Vec<Change> = (0..MAX_PENDING_TRIPS).map(|i| change(&format!("t{i}"))).collect();
        pending.add(0, many, at("w", MAX_PENDING_TRIPS as u64), now);
        assert!(pending.is_full());
        pending.take_cut(now);
        assert!(!pending.is_full());
    }

    #[test]
    fn a_trip_changed_by_one_writer_names_its_latest_entry() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.add(0, vec![by("a", 3, "x"), by("a", 4, "y"), by("a", 9, "x")], at("a", 9), now);
        let cut = pending.take_cut(now).unwrap();
        assert_eq!(source(&cut, "x"), writer("a", 9));
        assert_eq!(source(&cut, "y"), writer("a", 4));
    }

    #[test]
    fn a_trip_changed_by_two_writers_is_read_from_the_store() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.add(0, vec![by("a", 3, "x"), by("b", 1, "x"), by("b", 2, "y")], Checkpoint::default(), now);
        let cut = pending.take_cut(now).unwrap();
        assert_eq!(source(&cut, "x"), Source::Several);
        assert_eq!(source(&cut, "y"), writer("b", 2));
    }

    #[test]
    fn another_writers_recent_change_in_an_earlier_cut_still_counts() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.add(0, vec![by("b", 1, "x")], at("b", 1), now);
        pending.take_cut(now).unwrap();
        pending.add(0, vec![by("a", 5, "x")], at("a", 5), now + WRITTEN_MAX_AGE / 2);
        let cut = pending.take_cut(now).unwrap();
        assert_eq!(source(&cut, "x"), Source::Several, "b wrote x a moment ago");
        let later = now + WRITTEN_MAX_AGE * 3;
        pending.add(0, vec![by("b", 2, "x")], at("b", 2), later);
        pending.take_cut(later).unwrap();
        pending.add(0, vec![by("a", 6, "x")], at("a", 6), later + WRITTEN_MAX_AGE * 2);
        let cut = pending.take_cut(later).unwrap();
        assert_eq!(source(&cut, "x"), writer("a", 6), "b's change is long past");
        assert!(pending.last_writer.len() <= 1, "old writers are forgotten");
    }

    #[test]
    fn a_cut_given_back_merges_its_sources() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.add(0, vec![by("a", 1, "x"), by("a", 2, "y")], at("a", 2), now);
        let cut = pending.take_cut(now).unwrap();
        pending.add(0, vec![by("a", 3, "x")], at("a", 3), now);
        pending.put_back(cut);
        let again = pending.take_cut(now).unwrap();
        assert_eq!(source(&again, "x"), writer("a", 3));
        assert_eq!(source(&again, "y"), writer("a", 2));
    }

    #[test]
    fn every_reset_refuses_reads_begun_before_it() {
        let now = Instant::now();
        let mut pending = Pending::new(Checkpoint::default());
        pending.reset(at("w", 1));
        let (_, first) = pending.read_from();
        pending.reset(at("w", 2));
        assert!(!pending.add(first, vec![change("a")], at("w", 3), now), "begun between the two resets");
    }

    /// One step of the follower or the applier.
    #[derive(Clone, Debug)]
    enum Step {
        /// A feed read with changes of these trips (indices into a few trip ids).
        Read(Vec<u8>),
        /// The applier takes a cut.
        Take,
        /// The newest cut taken could not be read: it goes back.
        PutBack,
        /// The oldest cut taken is committed.
        Commit,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => proptest::collection::vec(0u8..6, 0..5).prop_map(Step::Read),
            2 => Just(Step::Take),
            1 => Just(Step::PutBack),
            2 => Just(Step::Commit),
        ]
    }

    proptest::proptest! {
        /// Whatever the interleaving of reads, cuts, cuts given back and commits: checkpoints
        /// only move forward, and a committed checkpoint never passes a change whose trip was
        /// not in a cut taken after the change was read (this one or an earlier committed one).
        #[test]
        fn a_committed_checkpoint_never_skips_a_change(steps in proptest::collection::vec(step(), 1..60)) {
            let now = Instant::now();
            let mut pending = Pending::new(Checkpoint::default());
            let mut seq = 0u64;
            // (trip, seq, the step that read it)
            let mut read: Vec<(String, u64, usize)> = Vec::new();
            // Taken and not yet committed or given back: (cut, the step that took it).
            let mut taken: VecDeque<(Cut, usize)> = VecDeque::new();
            // Committed: (trips, checkpoint seq, the step that took it).
            let mut committed: Vec<(Vec<String>, u64, usize)> = Vec::new();
            let drain = [Step::Commit, Step::Commit, Step::Take, Step::Commit];
            for (i, step) in steps.into_iter().chain(drain).enumerate() {
                match step {
                    Step::Read(trips) => {
                        let (_, epoch) = pending.read_from();
                        let changes: Vec<Change> = trips
                            .iter()
                            .map(|t| {
                                seq += 1;
                                read.push((format!("t{t}"), seq, i));
                                by("w", seq, &format!("t{t}"))
                            })
                            .collect();
                        proptest::prop_assert!(pending.add(epoch, changes, at("w", seq), now));
                    }
                    Step::Take => {
                        if let Some(cut) = pending.take_cut(now) {
                            taken.push_back((cut, i));
                        }
                    }
                    Step::PutBack => {
                        if let Some((cut, _)) = taken.pop_back() {
                            pending.put_back(cut);
                        }
                    }
                    Step::Commit => {
                        let Some((cut, taken_at)) = taken.pop_front() else { continue };
                        let checkpoint = cut.checkpoint.positions.get("w").copied().unwrap_or(0);
                        if let Some((_, last, _)) = committed.last() {
                            proptest::prop_assert!(checkpoint >= *last, "checkpoint went back: {} after {}", checkpoint, last);
                        }
                        pending.committed(cut.since);
                        committed.push((ids(&cut), checkpoint, taken_at));
                        for (trip, s, read_at) in read.iter().filter(|(_, s, _)| *s <= checkpoint) {
                            let covered = committed
                                .iter()
                                .any(|(trips, cp, took)| *cp >= *s && took > read_at && trips.contains(trip));
                            proptest::prop_assert!(covered, "change {} of {} skipped by checkpoint {}", s, trip, checkpoint);
                        }
                    }
                }
            }
        }
    }
}
