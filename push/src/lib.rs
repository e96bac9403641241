//! # tripline-push
//!
//! Webhooks: the push messages the change feed carries (a trip started, changed, completed, a
//! driving event), POSTed to each tenant's receivers and signed the Standard Webhooks way
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
//!
//! **Promises.** At least once: a webhook's messages are written to its durable outbox, with the
//! feed cursor after them, before any is sent, and a message leaves the outbox only once its
//! receiver answered 2xx or it is given up (written longer ago than the retry time, 24 h by
//! default, or answered 410 Gone); a crash at any point resends, never loses. A message keeps its
//! id across retries and resends. In order per vehicle: a vehicle's next message waits while one
//! is being retried; other vehicles' messages go on. Retries back off exponentially with jitter.
//! Every attempt is recorded for `GET /v1/webhooks/deliveries`. Receivers at loopback, private,
//! link-local and other special addresses are refused unless configured ([`guard`]). Memory is
//! bounded: at most [`WebhookConfig::max_pending`] messages per webhook are held; beyond them the
//! feed is not read further until some are settled (the feed keeps them).

pub mod dispatch;
pub mod guard;
pub mod metrics;
pub mod schedule;
pub mod sign;

use std::time::Duration;

pub use dispatch::Dispatcher;
pub use guard::{AddressPolicy, Network};
pub use schedule::RetrySchedule;

/// Settings of webhook delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookConfig {
    /// When to try again, and when to give up.
    pub retry: RetrySchedule,
    /// How long a receiver may take to answer.
    pub timeout: Duration,
    /// Requests in flight per webhook at most (one per vehicle at a time).
    pub concurrency: usize,
    /// Messages held per webhook at most (waiting or in flight).
    pub max_pending: usize,
    /// Special addresses receivers may have.
    pub addresses: AddressPolicy,
    /// How often the feed is read when idle (entries written in the process wake it at once).
    pub poll: Duration,
    /// How often the list of webhooks is read again (added, removed, rotated).
    pub reload: Duration,
    /// How long a rotated secret goes on signing beside the new one.
    pub rotation_overlap: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            retry: RetrySchedule::default(),
            timeout: Duration::from_secs(15),
            concurrency: 32,
            max_pending: 10_000,
            addresses: AddressPolicy::default(),
            poll: Duration::from_millis(250),
            reload: Duration::from_secs(2),
            rotation_overlap: Duration::from_secs(24 * 3600),
        }
    }
}

/// What can be wrong with a webhook as an operator gives it.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Not an `http://` or `https://` URL with a host.
    #[error("webhook url {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The operating system gave no randomness for a secret.
    #[error("no randomness for a webhook secret: {detail}")]
    Randomness {
        /// The error.
        detail: String,
    },
}

/// Checks a receiver URL: `http://` or `https://`, a host, and (when it is an address or
/// resolves now) no refused address. The check is made again at every delivery.
pub fn check_url(url: &str, addresses: &AddressPolicy) -> Result<(), PushError> {
    let bad = |reason: String| PushError::BadUrl { url: url.to_owned(), reason };
    let uri: ureq::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err(bad("expected http:// or https://".to_owned())),
    };
    let authority = uri.authority().filter(|a| !a.host().is_empty() && !a.as_str().contains('@'));
    let Some(authority) = authority else {
        return Err(bad("expected a host (and no user information)".to_owned()));
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(default_port);
    if let Ok(resolved) = std::net::ToSocketAddrs::to_socket_addrs(&(host, port)) {
        for address in resolved {
            addresses.check(address.ip()).map_err(bad)?;
        }
    }
    Ok(())
}

/// A new webhook id: `wh_` and 16 random hex digits.
pub fn new_webhook_id() -> Result<String, PushError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| PushError::Randomness { detail: e.to_string() })?;
    Ok(format!("wh_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
}

/// A new signing secret.
pub fn new_secret() -> Result<String, PushError> {
    sign::new_secret().map_err(|e| PushError::Randomness { detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_url_must_be_http_with_a_public_host() {
        let policy = AddressPolicy::default();
        assert!(check_url("https://93.184.216.34/hooks", &policy).is_ok());
        for bad in [
            "ftp://example.com/",
            "https://",
            "https://user:pw@93.184.216.34/",
            "http://127.0.0.1:9000/hooks",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://10.0.0.1/",
            "https://93.184.216.34/a b",
        ] {
            assert!(check_url(bad, &policy).is_err(), "{bad}");
        }
        let local = AddressPolicy { allowed: vec![Network::parse("127.0.0.1").unwrap()] };
        assert!(check_url("http://127.0.0.1:9000/hooks", &local).is_ok());
        assert!(new_webhook_id().unwrap().starts_with("wh_"));
    }
}
