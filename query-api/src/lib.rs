//! # tripline-query-api
//!
//! The HTTP API insurers use: trip search over the read store (`tripline-index`), trip detail,
//! points and rejections from the write store, and the live stream of trip changes and driving
//! events ([`stream`], fed by the change feed), each scoped to the tenant of the API key.
//!
//! **Promises.** Every route but health and metrics needs `Authorization: Bearer <key>`; a key is
//! looked up by its SHA-256 hash (only hashes are stored) and names one tenant. Every index query
//! carries that tenant as a structured filter and every store read is tenant-scoped, so another
//! tenant's trip or vehicle answers 404 exactly like a missing one. Errors use the contract's
//! body, produced in one place ([`error`]); internal causes are logged, never sent.

pub mod auth;
pub mod error;
pub mod limits;
pub mod metrics;
mod openapi;
pub mod params;
mod routes;
pub mod stream;
mod ui;
mod views;

use std::sync::Arc;

use axum::Router;
use tripline_index::LiveIndex;
use tripline_store::Store;

pub use auth::api_key_hash;
pub use error::ApiError;
pub use limits::ApiConfig;
pub use stream::{Hub, StreamConfig};
pub use ui::UiConfig;

/// What every request handler shares.
#[derive(Debug)]
pub struct ApiState<S> {
    /// The write store.
    pub store: S,
    /// The read store (the generation in use).
    pub index: LiveIndex,
    config: ApiConfig,
    keys: Arc<auth::KeyCache>,
    limiter: limits::RateLimiter,
    /// Failed authentications per client address.
    auth_failures: limits::RateLimiter,
    readiness: Option<ReadinessCheck>,
    /// Index queries running at once on the blocking pool (one per core).
    index_queries: tokio::sync::Semaphore,
    /// The live stream's follower of the change feed.
    hub: Arc<stream::Hub>,
    /// The trip explorer page's settings and regions.
    ui: ui::UiState,
}

/// [`Readiness`] in the state (a closure has no `Debug`).
#[derive(Clone)]
struct ReadinessCheck(Readiness);

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadinessCheck")
    }
}

/// Makes an API forget a key it remembers (see [`ApiState::key_cache`]). Other processes forget it
/// within the key cache's lifetime (30 s).
#[derive(Clone, Debug)]
pub struct KeyCacheHandle(Arc<auth::KeyCache>);

impl KeyCacheHandle {
    /// Forgets the key with this hash.
    pub fn forget(&self, api_key_hash: &str) {
        self.0.forget(api_key_hash);
    }
}

/// What else `/readyz` asks: `Some(reason)` while a part of the process (ingest, in the binary)
/// cannot do its work.
pub type Readiness = Arc<dyn Fn() -> Option<String> + Send + Sync>;

impl<S> ApiState<S> {
    /// The state over a store and an index, with default limits.
    pub fn new(store: S, index: impl Into<LiveIndex>) -> Self {
        ApiState::with_config(store, index, ApiConfig::default())
    }

    /// The state with `config`'s limits.
    pub fn with_config(store: S, index: impl Into<LiveIndex>, config: ApiConfig) -> Self {
        ApiState {
            store,
            index: index.into(),
            config,
            keys: Arc::default(),
            limiter: limits::RateLimiter::default(),
            auth_failures: limits::RateLimiter::default(),
            readiness: None,
            index_queries: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from)),
            hub: stream::Hub::new(StreamConfig::default()),
            ui: ui::UiState::default(),
        }
    }

    /// The live stream with `config`.
    pub fn with_stream(mut self, config: StreamConfig) -> Self {
        self.hub = stream::Hub::new(config);
        self
    }

    /// The trip explorer page with `ui`'s settings, drawing the outlines of the regions of
    /// `regions_geojson` (the deployment's GeoJSON regions) on its maps.
    pub fn with_ui(mut self, ui: UiConfig, regions_geojson: String) -> Self {
        self.ui = ui::UiState::new(ui, regions_geojson);
        self
    }

    /// A handle that makes this API forget a key at once (after the store replaced it).
    pub fn key_cache(&self) -> KeyCacheHandle {
        KeyCacheHandle(Arc::clone(&self.keys))
    }

    /// `/readyz` also asks `readiness`.
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(ReadinessCheck(readiness));
        self
    }
}

/// The API's routes (`/v1/…`, `/readyz`, the trip explorer page at `/`); the binary adds `/healthz` and `/metrics`.
pub fn router<S: Store>(state: ApiState<S>) -> Router {
    routes::router(Arc::new(state), openapi::document)
}
