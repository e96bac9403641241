//! API keys: `Authorization: Bearer <key>` → SHA-256 hash → tenant.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use tripline_model::TenantId;
use tripline_store::Registry;

use crate::error::ApiError;

/// How long a known key's tenant is remembered without asking the store.
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// Keys remembered at most (beyond it the cache evicts the least used).
const KEY_CACHE_ENTRIES: usize = 10_000;

/// The stored form of an API key: lowercase hex SHA-256.
pub fn api_key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bearer token of a request, if well-formed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Known keys' tenants, for a while: key hash → (tenant, when looked up).
#[derive(Debug)]
pub(crate) struct KeyCache(quick_cache::sync::Cache<String, (TenantId, Instant)>);

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache(quick_cache::sync::Cache::new(KEY_CACHE_ENTRIES))
    }
}

impl KeyCache {
    /// Forgets a key (replaced or revoked).
    pub(crate) fn forget(&self, hash: &str) {
        self.0.remove(hash);
    }

    /// The tenant of the request's key and the key's hash, or 401.
    pub(crate) async fn tenant<R: Registry>(
        &self,
        registry: &R,
        headers: &HeaderMap,
    ) -> Result<(TenantId, String), ApiError> {
        let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        let hash = api_key_hash(token);
        if let Some((tenant, at)) = self.0.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok((tenant, hash));
        }
        let tenant = registry.tenant_for_key(&hash).await?.ok_or_else(ApiError::unauthorized)?;
        self.0.insert(hash.clone(), (tenant.clone(), Instant::now()));
        Ok((tenant, hash))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_hash_to_sha256_hex() {
        assert_eq!(api_key_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn only_a_bearer_token_counts() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer k-123".parse().unwrap());
        assert_eq!(bearer(&headers), Some("k-123"));
        headers.insert("authorization", "Basic k-123".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
