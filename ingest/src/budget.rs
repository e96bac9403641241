//! The bytes of messages received and not yet completed, bounded across every connection.
//!
//! Each delivery holds a [`BytePermit`] for its payload from receipt until it completes (its
//! results are durable) or is dropped, so everything between the socket and the store — the
//! delivery queue, the worker queues, the batches being written — holds at most the budget. At
//! the bound the embedded endpoint reads no more from its sockets and the external source hands
//! nothing more on (the broker keeps it), until completions make room. The per-message queue
//! capacities still apply; the budget bounds what they hold in bytes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default budget: 64 MiB, some 40,000 typical messages — far more than the pipeline needs to
/// keep its workers busy, far less than the machine's memory.
pub const DEFAULT_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// Bytes are counted in units of this many (a semaphore permit each).
const UNIT_BYTES: usize = 1024;

/// A shared budget of in-flight bytes; clones share it.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    units: Arc<Semaphore>,
    total_units: usize,
}

/// Room for one message's bytes, given back when dropped.
#[derive(Debug)]
pub struct BytePermit {
    _units: OwnedSemaphorePermit,
}

/// Budgets of the same size are equal (as settings; each is its own budget).
impl PartialEq for ByteBudget {
    fn eq(&self, other: &Self) -> bool {
        self.total_units == other.total_units
    }
}

impl Default for ByteBudget {
    fn default() -> Self {
        ByteBudget::new(DEFAULT_IN_FLIGHT_BYTES)
    }
}

impl ByteBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> Self {
        let total_units = bytes.div_ceil(UNIT_BYTES).clamp(1, Semaphore::MAX_PERMITS);
        ByteBudget { units: Arc::new(Semaphore::new(total_units)), total_units }
    }

    /// Units a message of `bytes` takes: at least one (an empty message still occupies the
    /// pipeline), at most the whole budget (a message larger than the budget goes through alone).
    fn units_for(&self, bytes: usize) -> u32 {
        let units = bytes.div_ceil(UNIT_BYTES).clamp(1, self.total_units);
        u32::try_from(units).unwrap_or(u32::MAX)
    }

    /// Room for `bytes` now, if there is.
    pub fn try_take(&self, bytes: usize) -> Option<BytePermit> {
        Arc::clone(&self.units)
            .try_acquire_many_owned(self.units_for(bytes))
            .ok()
            .map(|units| BytePermit { _units: units })
    }

    /// Room for `bytes`, waiting for completions to make it (a wait is counted on `/metrics`).
    /// Cancel-safe: a dropped wait takes nothing.
    pub async fn take(&self, bytes: usize) -> BytePermit {
        if let Some(permit) = self.try_take(bytes) {
            return permit;
        }
        crate::metrics::budget_full("in_flight_bytes");
        match Arc::clone(&self.units).acquire_many_owned(self.units_for(bytes)).await {
            Ok(units) => BytePermit { _units: units },
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Bytes held by messages in flight now, or promised to one waiting for the rest of its room
    /// (in whole units).
    pub fn in_flight_bytes(&self) -> usize {
        (self.total_units - self.units.available_permits()) * UNIT_BYTES
    }

    /// The budget, bytes.
    pub fn total_bytes(&self) -> usize {
        self.total_units * UNIT_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_hold_bytes_until_dropped() {
        let budget = ByteBudget::new(10 * 1024);
        let a = budget.try_take(6 * 1024).expect("room");
        assert_eq!(budget.in_flight_bytes(), 6 * 1024);
        assert!(budget.try_take(5 * 1024).is_none(), "the bound is reached");
        let b = budget.try_take(1).expect("a small message takes one unit");
        assert_eq!(budget.in_flight_bytes(), 7 * 1024);
        drop(a);
        drop(b);
        assert_eq!(budget.in_flight_bytes(), 0);
    }

    #[test]
    fn a_message_larger_than_the_budget_goes_through_alone() {
        let budget = ByteBudget::new(4 * 1024);
        let big = budget.try_take(1024 * 1024).expect("alone, it fits");
        assert!(budget.try_take(1).is_none());
        drop(big);
        assert!(budget.try_take(1).is_some());
    }

    #[tokio::test]
    async fn a_wait_ends_when_a_completion_makes_room() {
        let budget = ByteBudget::new(2 * 1024);
        let held = budget.take(2 * 1024).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(1024).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room yet");
        drop(held);
        let permit = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(budget.in_flight_bytes(), 1024);
        drop(permit);
    }
}
