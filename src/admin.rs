//! Administration through a running `tripline run`: `tenant create`, `fleet add|import` and
//! `reindex` work whether or not a process is using the store. The embedded store can be opened
//! by one process only, so while `run` holds it the commands go through that process.
//!
//! On start, `run` serves `/admin/v1/…` on a listener of its own (`[http] admin_listen`, default a
//! free loopback port, whatever `[http] listen` is) and writes `data_dir/admin.json` (owner-only):
//! that listener's address and a random token; without the token every route answers 401. A command finds the file, calls `/admin/v1/…` with the token, and falls
//! back to opening the store itself when no process answers. An API key never crosses this
//! channel: the command creates the key and sends only its hash.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tripline_index::IndexHome;
use tripline_model::{TenantId, VehicleId};
use tripline_store::{AnyStore, Registry, StoreError};

use crate::Failure;
use crate::remote::{AdminFile, NewKey, NewSecrets, NewTenant, NewVehicles, RebuildState, RebuildStatus, admin_path};

/// Removes `admin.json` when the running process stops (unless another process of the same
/// data directory published its own since).
#[derive(Debug)]
pub(crate) struct Published {
    path: PathBuf,
    token: String,
}

impl Drop for Published {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| serde_json::from_str::<AdminFile>(&text).ok())
            .is_some_and(|file| file.token == self.token);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `admin.json` readable by the owner only.
pub(crate) fn publish(data_dir: &Path, file: &AdminFile) -> Result<Published, Failure> {
    let path = admin_path(data_dir);
    let text = serde_json::to_string_pretty(file).map_err(|e| Failure::Runtime(e.into()))?;
    crate::config::private_dir(data_dir)
        .and_then(|()| crate::config::write_private(&path, text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Published { path, token: file.token.clone() })
}

/// The state of the admin routes.
#[derive(Debug)]
pub(crate) struct AdminState {
    store: AnyStore,
    home: IndexHome,
    token: String,
    rebuild: Arc<Rebuild>,
    /// The API of this process, if it serves one: forgets a replaced key at once.
    keys: Option<tripline_query_api::KeyCacheHandle>,
}

/// A rebuild running in this process, as the admin routes report it.
#[derive(Debug, Default)]
struct Rebuild {
    trips: AtomicU64,
    status: Mutex<RebuildStatus>,
}

/// The admin routes, served beside the others on `[http] listen`.
pub(crate) fn routes(
    store: AnyStore,
    home: IndexHome,
    token: String,
    keys: Option<tripline_query_api::KeyCacheHandle>,
) -> Router {
    let state = Arc::new(AdminState { store, home, token, rebuild: Arc::default(), keys });
    Router::new()
        .route("/admin/v1/tenants", post(create_tenant))
        .route("/admin/v1/tenant-keys", post(replace_api_key))
        .route("/admin/v1/vehicles", post(add_vehicles))
        .route("/admin/v1/vehicle-secrets", post(set_vehicle_secrets).get(broker_hashes))
        .route("/admin/v1/vehicle-secrets/missing", post(vehicles_without_secret))
        .route("/admin/v1/reindex", post(start_reindex).get(reindex_status))
        .route("/admin/v1/webhooks", post(webhook))
        .with_state(state)
}

/// An admin failure: status and one-line reason.
struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        let status = match error {
            StoreError::TenantExists { .. } | StoreError::VehicleOwned { .. } => StatusCode::CONFLICT,
            StoreError::UnknownTenant { .. } => StatusCode::NOT_FOUND,
            StoreError::UnknownVehicle { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        AdminError(status, error.to_string())
    }
}

fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), AdminError> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Length and content compared without an early exit on the first difference.
    let same = given.len() == state.token.len()
        && given.bytes().zip(state.token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(AdminError(StatusCode::UNAUTHORIZED, "admin token required".to_owned())) }
}

async fn create_tenant(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(body): Json<NewTenant>,
) -> Result<StatusCode, AdminError> {
    authorize(&state, &headers)?;
    let tenant = TenantId::parse(&body.name).map_err(|e| AdminError(StatusCode::BAD_REQUEST, e.to_string()))?;
    if body.api_key_hash.len() != 64 || !body.api_key_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AdminError(StatusCode::BAD_REQUEST, "api_key_hash: 64 hex digits".to_owned()));
    }
    state.store.create_tenant(&tenant, &body.api_key_hash).await?;
    Ok(StatusCode::CREATED)
}

async fn replace_api_key(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(body): Json<NewKey>,
) -> Result<StatusCode, AdminError> {
    authorize(&state, &headers)?;
    let tenant = TenantId::parse(&body.tenant).map_err(|e| AdminError(StatusCode::BAD_REQUEST, e.to_string()))?;
    if let Some(hash) = &body.api_key_hash
        && (hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(AdminError(StatusCode::BAD_REQUEST, "api_key_hash: 64 hex digits".to_owned()));
    }
    let old = state.store.replace_api_key(&tenant, body.api_key_hash.as_deref()).await?;
    if let (Some(keys), Some(old)) = (&state.keys, old) {
        keys.forget(&old);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn add_vehicles(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(body): Json<NewVehicles>,
) -> Result<StatusCode, AdminError> {
    authorize(&state, &headers)?;
    let bad = |e: String| AdminError(StatusCode::BAD_REQUEST, e);
    let tenant = TenantId::parse(&body.tenant).map_err(|e| bad(format!("tenant: {e}")))?;
    let vehicles = body
        .vehicle_ids
        .iter()
        .map(|v| VehicleId::parse(v).map_err(|e| bad(format!("vehicle id {v:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    state.store.add_vehicles(&tenant, &vehicles).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn vehicle_ids(ids: &[String]) -> Result<Vec<VehicleId>, AdminError> {
    ids.iter()
        .map(|v| VehicleId::parse(v).map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("vehicle id {v:?}: {e}"))))
        .collect()
}

async fn set_vehicle_secrets(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(body): Json<NewSecrets>,
) -> Result<Json<Vec<String>>, AdminError> {
    authorize(&state, &headers)?;
    let ids = vehicle_ids(&body.secrets.iter().map(|(v, _)| v.clone()).collect::<Vec<_>>())?;
    let secrets: Vec<(VehicleId, Option<String>)> =
        ids.into_iter().zip(body.secrets.into_iter().map(|(_, s)| s)).collect();
    let set = crate::fleet::store_secrets(&state.store, secrets, body.only_missing).await?;
    Ok(Json(set.iter().map(|v| v.as_str().to_owned()).collect()))
}

/// Every vehicle's broker hash (`None` for a secret stored before broker hashes existed).
async fn broker_hashes(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<Vec<(String, Option<String>)>>, AdminError> {
    authorize(&state, &headers)?;
    Ok(Json(crate::fleet::broker_hashes(&state.store).await?))
}

async fn vehicles_without_secret(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(ids): Json<Vec<String>>,
) -> Result<Json<Vec<String>>, AdminError> {
    authorize(&state, &headers)?;
    let missing = crate::fleet::without_secret(&state.store, &vehicle_ids(&ids)?).await?;
    Ok(Json(missing.iter().map(|v| v.as_str().to_owned()).collect()))
}

/// `POST /admin/v1/webhooks`: a webhook operation ([`crate::webhook::WebhookOp`]).
async fn webhook(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Json(op): Json<crate::webhook::WebhookOp>,
) -> Result<Json<crate::webhook::WebhookAnswer>, AdminError> {
    use crate::webhook::OpError;
    authorize(&state, &headers)?;
    crate::webhook::apply(&state.store, op).await.map(Json).map_err(|error| match error {
        OpError::Usage(reason) => AdminError(StatusCode::BAD_REQUEST, reason),
        // Not found is a usage error too (the id or tenant given), not "no process here".
        OpError::NotFound(reason) => AdminError(StatusCode::BAD_REQUEST, reason),
        OpError::Store(error) => AdminError::from(error),
        OpError::Push(error) => AdminError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    })
}

async fn start_reindex(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Result<Response, AdminError> {
    authorize(&state, &headers)?;
    let estimate = estimate(&state.home);
    {
        let mut status = state.rebuild.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if status.state == RebuildState::Running {
            return Err(AdminError(StatusCode::CONFLICT, "a reindex is already running".to_owned()));
        }
        *status = RebuildStatus { state: RebuildState::Running, estimate, ..RebuildStatus::default() };
    }
    state.rebuild.trips.store(0, Ordering::Relaxed);
    let rebuild = Arc::clone(&state.rebuild);
    let counter = Arc::clone(&state.rebuild);
    let task = tripline_indexer::reindex(state.store.clone(), state.home.clone(), move |n| {
        counter.trips.store(n, Ordering::Relaxed)
    });
    tokio::spawn(async move {
        let outcome = task.await;
        let mut status = rebuild.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Ok(report) => {
                tracing::info!(generation = %report.generation, trips = report.trips, "reindex done");
                status.state = RebuildState::Done;
                status.trips = report.trips;
                status.rate = Some(report.rate());
                status.generation = Some(report.generation);
            }
            Err(error) => {
                tracing::error!(%error, "reindex failed");
                status.state = RebuildState::Failed;
                status.error = Some(error.to_string());
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(current_status(&state))).into_response())
}

fn current_status(state: &AdminState) -> RebuildStatus {
    let mut status = state.rebuild.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    if status.state == RebuildState::Running {
        status.trips = state.rebuild.trips.load(Ordering::Relaxed);
    }
    status
}

async fn reindex_status(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Json<RebuildStatus>, AdminError> {
    authorize(&state, &headers)?;
    Ok(Json(current_status(&state)))
}

/// Trips in the generation in use: the likely size of a rebuild.
pub(crate) fn estimate(home: &IndexHome) -> u64 {
    home.current().and_then(|name| home.open_generation(&name)).map(|index| index.document_count()).unwrap_or(0)
}
