//! When to try a message again: exponential backoff with jitter, until it is too old.

use std::time::Duration;

/// The retry schedule of webhook deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrySchedule {
    /// Wait after the first failed attempt.
    pub first: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
    /// A message written longer ago than this is given up after its next failure.
    pub give_up_after: Duration,
}

impl Default for RetrySchedule {
    fn default() -> Self {
        RetrySchedule {
            first: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetrySchedule {
    /// When to try again after failed attempt number `attempts` (1 for the first) at `now_ms`
    /// of a message written at `written_at_ms`; `None`: give it up. `jitter` in [0, 1) spreads
    /// the wait over 80–120 % of the backoff; `retry_after` (the receiver's `Retry-After`) is a
    /// floor.
    pub fn next_at(
        &self,
        attempts: u32,
        now_ms: i64,
        written_at_ms: i64,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Option<i64> {
        let give_up_ms = i64::try_from(self.give_up_after.as_millis()).unwrap_or(i64::MAX);
        if now_ms.saturating_sub(written_at_ms) >= give_up_ms {
            return None;
        }
        let exponent = attempts.saturating_sub(1).min(30);
        let backoff = self.first.saturating_mul(1u32 << exponent).min(self.max);
        let spread = backoff.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0));
        let wait = retry_after.map_or(spread, |floor| spread.max(floor.min(self.max)));
        Some(now_ms.saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_most_and_a_day_old_message_is_given_up() {
        let schedule = RetrySchedule::default();
        let at = |attempts| schedule.next_at(attempts, 1_000_000, 1_000_000, 0.5, None).map(|t| t - 1_000_000);
        assert_eq!(
            [at(1), at(2), at(3), at(10), at(20)],
            [Some(5_000), Some(10_000), Some(20_000), Some(2_560_000), Some(3_600_000)]
        );
        let low = schedule.next_at(1, 0, 0, 0.0, None).unwrap();
        let high = schedule.next_at(1, 0, 0, 0.999, None).unwrap();
        assert!((4_000..=4_000).contains(&low) && (5_990..6_000).contains(&high), "{low} {high}");
        assert_eq!(schedule.next_at(1, 0, 0, 0.5, Some(Duration::from_secs(60))), Some(60_000), "Retry-After");
        let day = 24 * 3_600_000;
        assert!(schedule.next_at(40, day - 1, 0, 0.5, None).is_some());
        assert_eq!(schedule.next_at(40, day, 0, 0.5, None), None, "given up after 24 h");
    }
}
