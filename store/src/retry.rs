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
        let mut backoff = self.first_backoff;
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
                    if elapsed + backoff > self.budget {
                        return Err(StoreError::Unavailable {
                            attempts,
                            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                            detail: format!("{what}: {detail}"),
                        });
                    }
                    tracing::debug!(what, attempts, error = %detail, "store request failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.max_backoff);
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
}
