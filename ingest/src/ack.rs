//! Acknowledgements in receive order.
//!
//! MQTT requires a client to send its PUBACKs in the order it received the PUBLISH packets, and
//! tripline may only acknowledge a message once everything derived from it is durable. Messages
//! complete in any order (different vehicles run on different workers); the tracker releases
//! acknowledgements for the longest completed prefix, in receive order (as Vector's ordered
//! finalizer does).
//!
//! Every message is registered under the connection it arrived on. After a reconnect the broker
//! redelivers whatever was not acknowledged, so the tracker forgets the old connection's pending
//! messages: a completion arriving late for an old connection acknowledges nothing, and can never
//! acknowledge a message of the new connection that happens to reuse a packet id.

use std::collections::VecDeque;

/// Identifies one registered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket {
    connection: u64,
    position: u64,
}

/// Tracks messages from receipt to acknowledgement. `A` is what the MQTT client needs to send
/// the acknowledgement (the publish packet, or its packet id).
#[derive(Debug)]
pub struct AckTracker<A> {
    connection: u64,
    /// Position of `pending[0]`.
    base: u64,
    pending: VecDeque<(A, bool)>,
}

impl<A> Default for AckTracker<A> {
    fn default() -> Self {
        AckTracker { connection: 0, base: 0, pending: VecDeque::new() }
    }
}

impl<A> AckTracker<A> {
    /// The current connection (0 until the first [`AckTracker::new_connection`]).
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// Messages received and not yet acknowledged on this connection.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// A new connection: forgets everything pending on the old one (the broker will redeliver
    /// it) and returns how many messages that was.
    pub fn new_connection(&mut self) -> usize {
        let dropped = self.pending.len();
        self.connection += 1;
        self.base = 0;
        self.pending.clear();
        dropped
    }

    /// Registers a message received now; its acknowledgement waits for [`AckTracker::complete`].
    pub fn register(&mut self, ack: A) -> Ticket {
        let position = self.base + self.pending.len() as u64;
        self.pending.push_back((ack, false));
        Ticket { connection: self.connection, position }
    }

    /// Marks a message durable; returns the acknowledgements that may be sent now, in receive
    /// order. A ticket of an earlier connection, or one completed before, releases nothing.
    pub fn complete(&mut self, ticket: Ticket) -> Vec<A> {
        if ticket.connection != self.connection || ticket.position < self.base {
            return Vec::new();
        }
        let Ok(index) = usize::try_from(ticket.position - self.base) else { return Vec::new() };
        match self.pending.get_mut(index) {
            Some(slot) => slot.1 = true,
            None => return Vec::new(),
        }
        let mut ready = Vec::new();
        while self.pending.front().is_some_and(|(_, done)| *done) {
            if let Some((ack, _)) = self.pending.pop_front() {
                ready.push(ack);
                self.base += 1;
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn acks_wait_for_every_earlier_message() {
        let mut tracker = AckTracker::default();
        let tickets: Vec<Ticket> = (0..4).map(|n| tracker.register(n)).collect();
        assert!(tracker.complete(tickets[2]).is_empty());
        assert!(tracker.complete(tickets[1]).is_empty());
        assert_eq!(tracker.complete(tickets[0]), vec![0, 1, 2]);
        assert_eq!(tracker.complete(tickets[3]), vec![3]);
        assert_eq!(tracker.in_flight(), 0);
        assert!(tracker.complete(tickets[3]).is_empty(), "a second completion releases nothing");
    }

    #[test]
    fn a_stale_completion_after_a_reconnect_acknowledges_nothing() {
        let mut tracker = AckTracker::default();
        let old = tracker.register("old packet 1");
        assert_eq!(tracker.new_connection(), 1);
        let new = tracker.register("new packet 1");
        assert!(tracker.complete(old).is_empty(), "the old connection's message is redelivered instead");
        assert_eq!(tracker.complete(new), vec!["new packet 1"]);
    }

    proptest! {
        #[test]
        fn acks_leave_in_receive_order_whatever_the_completion_order(
            order in (1usize..200).prop_flat_map(|n| Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        ) {
            let mut tracker = AckTracker::default();
            let tickets: Vec<Ticket> = (0..order.len()).map(|n| tracker.register(n)).collect();
            let mut released = Vec::new();
            let mut completed = std::collections::BTreeSet::new();
            for i in order.iter() {
                completed.insert(*i);
                let before = released.len();
                released.extend(tracker.complete(tickets[*i]));
                // Nothing is released before it and every earlier message completed.
                for &acked in &released[before..] {
                    prop_assert!((0..=acked).all(|m| completed.contains(&m)), "{} released early", acked);
                }
                // And nothing is held back: what is released is exactly the completed prefix.
                let prefix = (0..order.len()).take_while(|m| completed.contains(m)).count();
                prop_assert_eq!(released.len(), prefix, "released {:?} with {:?} completed", released, completed);
            }
            prop_assert_eq!(released, (0..order.len()).collect::<Vec<_>>());
        }
    }
}
