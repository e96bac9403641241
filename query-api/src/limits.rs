//! Per-key rate limits: a token bucket per API key (by its hash).
//!
//! Hand-written rather than `governor`: the failed-authentication guard asks whether an address
//! has a token left without taking one (it takes one only when the key turns out wrong), which
//! `governor`'s keyed limiter cannot answer, and the limits are fractional (`rate_per_s = 0.5`,
//! `burst = 2.5`) where `governor` counts whole cells.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Keys tracked at most; beyond it the oldest buckets are dropped (a dropped key starts full).
const MAX_BUCKETS: usize = 100_000;

/// The API's limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Requests per second each key may make on average.
    pub rate_per_s: f64,
    /// Requests a key may make at once after being idle.
    pub burst: f64,
    /// Failed authentications (401) per second a client address may cause on average; beyond
    /// it (and its burst) the address gets 429 without its key being looked up.
    pub failed_auth_per_s: f64,
    /// Failed authentications a client address may cause at once.
    pub failed_auth_burst: f64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { rate_per_s: 50.0, burst: 100.0, failed_auth_per_s: 1.0, failed_auth_burst: 20.0 }
    }
}

impl ApiConfig {
    /// The bucket of failed authentications per client address.
    pub(crate) fn failed_auth(&self) -> ApiConfig {
        ApiConfig { rate_per_s: self.failed_auth_per_s, burst: self.failed_auth_burst, ..self.clone() }
    }
}

/// Token buckets per key.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter(Mutex<HashMap<String, (f64, Instant)>>);

impl RateLimiter {
    /// Takes a token for `key` at `now`; `false` when the key is over its rate.
    pub(crate) fn allow(&self, key: &str, config: &ApiConfig, now: Instant) -> bool {
        let Ok(mut buckets) = self.0.lock() else { return true };
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let oldest: Vec<String> = {
                let mut all: Vec<(&String, &Instant)> = buckets.iter().map(|(k, (_, at))| (k, at)).collect();
                all.sort_by_key(|(_, at)| **at);
                all.iter().take(MAX_BUCKETS / 10).map(|(k, _)| (*k).clone()).collect()
            };
            for k in oldest {
                buckets.remove(&k);
            }
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((config.burst, now));
        let refill = now.saturating_duration_since(*at).as_secs_f64() * config.rate_per_s;
        *tokens = (*tokens + refill).min(config.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `key` has a token at `now`, without taking it.
    pub(crate) fn has_token(&self, key: &str, config: &ApiConfig, now: Instant) -> bool {
        let Ok(buckets) = self.0.lock() else { return true };
        buckets.get(key).is_none_or(|(tokens, at)| {
            tokens + now.saturating_duration_since(*at).as_secs_f64() * config.rate_per_s >= 1.0
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::default();
        let config = ApiConfig { rate_per_s: 10.0, burst: 5.0, ..ApiConfig::default() };
        let t0 = Instant::now();
        assert_eq!((0..8).filter(|_| limiter.allow("a", &config, t0)).count(), 5);
        assert!(limiter.allow("b", &config, t0), "another key has its own bucket");
        assert!(!limiter.allow("a", &config, t0 + Duration::from_millis(50)));
        assert!(limiter.allow("a", &config, t0 + Duration::from_millis(150)), "one token back after 100 ms");
        assert_eq!((0..10).filter(|_| limiter.allow("a", &config, t0 + Duration::from_secs(60))).count(), 5);
    }
}
