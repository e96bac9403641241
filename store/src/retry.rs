//! Retrying requests the store could not serve right now, with exponential backoff.
//!
//! The `scylla` driver's default policy does not retry most write timeouts; every tripline
//! write is idempotent, so the application retries them itself until its budget is spent, then
//! reports the store unavailable (the caller must not treat the write as done).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{StoreError, StoreResult};

/// Whether a failed attempt may succeed when tried again.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Timeouts, unavailable replicas, lost connections.
    Transient(String),
    /// Invalid requests, missing schema: retrying cannot help.
    Permanent(String),
}

/// Waits between attempts that double after each failure, up to a maximum, and start over after
/// a success: every retry loop in tripline waits by one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, next: first }
    }

    /// The wait after a failure; the one after the next failure is twice as long, up to the
    /// maximum.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The wait the next failure would get, without counting a failure.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// An attempt succeeded: the next failure waits the first wait again.
    pub fn succeeded(&mut self) {
        self.next = self.first;
    }
}

/// Backoff and budget for retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Give up once this much time has passed since the first attempt.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails permanently, or the budget is spent.
    pub(crate) async fn run<T, F, Fut>(&self, what: &'static str, mut op: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.first_backoff, self.max_backoff);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match op().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Permanent(detail)) => {
                    return Err(StoreError::Refused { detail: format!("{what}: {detail}") });
                }
                Err(Attempt::Transient(detail)) => {
                    let elapsed = started.elapsed();
                    if elapsed + backoff.peek() > self.budget {
                        return Err(StoreError::Unavailable {
                            attempts,
                            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                            detail: format!("{what}: {detail}"),
                        });
                    }
                    tracing::debug!(what, attempts, error = %detail, "store request failed; retrying");
                    tokio::time::sleep(backoff.failed()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            budget: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let result = quick()
            .run("test", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 { Err(Attempt::Transient("timeout".into())) } else { Ok(7) }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried_and_a_spent_budget_is_an_error() {
        let calls = AtomicU32::new(0);
        let refused = quick()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Attempt::Permanent("syntax".into()))
            })
            .await;
        assert!(matches!(refused, Err(StoreError::Refused { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let unavailable = quick().run("test", || async { Err::<(), _>(Attempt::Transient("down".into())) }).await;
        assert!(matches!(unavailable, Err(StoreError::Unavailable { attempts, .. }) if attempts > 3));
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum_and_starts_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        backoff.succeeded();
        assert_eq!(backoff.peek(), Duration::from_millis(100));
        assert_eq!(backoff.failed(), Duration::from_millis(100));
    }
}
