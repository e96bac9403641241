//! The handlers: authenticate, parse, ask the index or the store, answer.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tripline_index::{TripIndex, TripQuery};
use tripline_model::{TenantId, TripDetail, TripId, VehicleId};
use tripline_store::Store;

use crate::error::ApiError;
use crate::params::{PageParams, SearchParams, StatsParams, StreamParams, VehicleFilter};
use crate::views::{
    BucketView, DeliveriesAnswer, DeliveryView, ErrorBody, PointView, PointsAnswer, RejectionView, RejectionsAnswer,
    SearchAnswer, StatsAnswer,
};
use crate::{ApiState, params};

type Shared<S> = State<Arc<ApiState<S>>>;

/// Payload bytes in one `/v1/rejections` answer at most (one rejection's more): 64 rejections
/// of the largest kept payload.
const REJECTIONS_BUDGET: usize = 1024 * 1024;
type Pairs = Query<Vec<(String, String)>>;

/// The routes; `/openapi.json` answers `openapi()` (the document describes these handlers, so
/// it is handed in rather than imported).
pub(crate) fn router<S: Store>(state: Arc<ApiState<S>>, openapi: fn() -> utoipa::openapi::OpenApi) -> Router {
    Router::new()
        .route("/v1/trips", get(search::<S>))
        .route("/v1/trips/:trip_id", get(trip::<S>))
        .route("/v1/trips/:trip_id/points", get(points::<S>))
        .route("/v1/vehicles/:vehicle_id/trips", get(vehicle_trips::<S>))
        .route("/v1/stats", get(stats::<S>))
        .route("/v1/rejections", get(rejections::<S>))
        .route("/v1/stream", get(stream::<S>))
        .route("/v1/webhooks/deliveries", get(deliveries::<S>))
        .route("/readyz", get(ready::<S>))
        .route("/openapi.json", get(move || async move { Json(openapi()) }))
        .route("/", get(page::<S>))
        .route("/ui/app.js", get(|State(state): Shared<S>| async move { crate::ui::script(&state.ui) }))
        .route("/ui/style.css", get(|State(state): Shared<S>| async move { crate::ui::style(&state.ui) }))
        .route("/ui/config.json", get(|State(state): Shared<S>| async move { crate::ui::settings(&state.ui) }))
        .route("/ui/regions.geojson", get(|State(state): Shared<S>| async move { crate::ui::regions(&state.ui) }))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), failed_auth_guard::<S>))
        .with_state(state)
}

/// A client address that caused too many failed authentications (401) lately gets 429 at once,
/// without a key lookup (each costs a store read on a cache miss). The address comes from the
/// server (`ConnectInfo`); without one, nothing is limited.
async fn failed_auth_guard<S: Store>(
    State(state): Shared<S>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0.ip().to_string());
    let limits = state.config.failed_auth();
    if let Some(peer) = &peer
        && !state.auth_failures.has_token(peer, &limits, std::time::Instant::now())
    {
        return ApiError::auth_flood().into_response();
    }
    let response = next.run(request).await;
    if let Some(peer) = &peer
        && response.status() == axum::http::StatusCode::UNAUTHORIZED
    {
        state.auth_failures.allow(peer, &limits, std::time::Instant::now());
    }
    response
}

/// The key's tenant (401 without a valid key), within the key's rate (429 beyond it).
async fn tenant<S: Store>(state: &ApiState<S>, headers: &HeaderMap) -> Result<TenantId, ApiError> {
    let (tenant, key_hash) = state.keys.tenant(&state.store, headers).await?;
    if !state.limiter.allow(&key_hash, &state.config, std::time::Instant::now()) {
        return Err(ApiError::rate_limited());
    }
    Ok(tenant)
}

/// Runs `query` on the index in use on the blocking pool, at most one per core at once (more
/// wait their turn, within the server's request timeout): a heavy search or stats never holds
/// the runtime's threads, which ingest shares in the all-in-one process.
async fn on_index<S, T: Send + 'static>(
    state: &ApiState<S>,
    query: impl FnOnce(TripIndex) -> tripline_index::IndexResult<T> + Send + 'static,
) -> Result<T, ApiError> {
    let _turn = state.index_queries.acquire().await.map_err(|e| ApiError::internal(&e))?;
    let index = state.index.get();
    let answer = tokio::task::spawn_blocking(move || query(index)).await.map_err(|e| ApiError::internal(&e))?;
    Ok(answer?)
}

async fn run_search<S: Store>(
    state: &ApiState<S>,
    tenant: TenantId,
    query: TripQuery,
) -> Result<Json<SearchAnswer>, ApiError> {
    let page = on_index(state, move |index| index.search(&tenant, &query)).await?;
    Ok(Json(SearchAnswer { total: page.total, trips: page.trips, next_cursor: page.next.map(|c| c.encode()) }))
}

/// Search the tenant's trips.
#[utoipa::path(get, path = "/v1/trips", params(VehicleFilter, SearchParams, PageParams),
    responses((status = 200, body = SearchAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn search<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Json<SearchAnswer>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let query = params::search(&pairs)?;
    run_search(&state, tenant, query).await
}

/// Aggregations over the trips a search selects.
#[utoipa::path(get, path = "/v1/stats", params(VehicleFilter, SearchParams, PageParams, StatsParams),
    responses((status = 200, body = StatsAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn stats<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Json<StatsAnswer>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let (query, group) = params::stats(&pairs)?;
    let buckets = on_index(&state, move |index| index.stats(&tenant, &query, group)).await?;
    Ok(Json(StatsAnswer { buckets: buckets.into_iter().map(BucketView::from).collect() }))
}

/// Search one vehicle's trips (404 for another tenant's vehicle).
#[utoipa::path(get, path = "/v1/vehicles/{vehicle_id}/trips", params(("vehicle_id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,64}$"), SearchParams, PageParams),
    responses((status = 200, body = SearchAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn vehicle_trips<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Path(vehicle_id): Path<String>,
    Query(pairs): Pairs,
) -> Result<Json<SearchAnswer>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let vehicle = VehicleId::parse(&vehicle_id).map_err(|_| ApiError::not_found("vehicle"))?;
    if state.store.vehicle_tenant(&vehicle).await?.as_ref() != Some(&tenant) {
        return Err(ApiError::not_found("vehicle"));
    }
    if pairs.iter().any(|(k, _)| k == "vehicle_id") {
        return Err(ApiError::bad_parameter("vehicle_id", "the path names the vehicle"));
    }
    let query = TripQuery { vehicle_id: Some(vehicle), ..params::search(&pairs)? };
    run_search(&state, tenant, query).await
}

/// One trip: its summary and every event (404 for another tenant's trip).
#[utoipa::path(get, path = "/v1/trips/{trip_id}", params(("trip_id" = String, Path)),
    responses((status = 200, body = TripDetail), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn trip<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Path(trip_id): Path<String>,
) -> Result<Json<TripDetail>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let trip_id = TripId::parse(&trip_id).map_err(|_| ApiError::not_found("trip"))?;
    let record = state.store.trip(&tenant, &trip_id).await?.ok_or_else(|| ApiError::not_found("trip"))?;
    Ok(Json(TripDetail { summary: record.summary, event_list: record.events }))
}

/// A trip's enriched points in time order, a page at a time.
#[utoipa::path(get, path = "/v1/trips/{trip_id}/points", params(("trip_id" = String, Path), PageParams),
    responses((status = 200, body = PointsAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn points<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Path(trip_id): Path<String>,
    Query(pairs): Pairs,
) -> Result<Json<PointsAnswer>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let (cursor, limit) = params::paging(&pairs)?;
    let trip_id = TripId::parse(&trip_id).map_err(|_| ApiError::not_found("trip"))?;
    let page = state
        .store
        .trip_points(&tenant, &trip_id, cursor.as_deref(), limit)
        .await?
        .ok_or_else(|| ApiError::not_found("trip"))?;
    Ok(Json(PointsAnswer { points: page.items.into_iter().map(PointView::from).collect(), next_cursor: page.next }))
}

/// The tenant's rejected messages and points, newest first.
#[utoipa::path(get, path = "/v1/rejections", params(PageParams),
    responses((status = 200, body = RejectionsAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn rejections<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Json<RejectionsAnswer>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let (cursor, limit) = params::paging(&pairs)?;
    let page = state.store.rejections(Some(&tenant), cursor.as_deref(), limit).await?;
    // An answer holds at most about REJECTIONS_BUDGET bytes of payloads; the cursor goes on from
    // where it stopped.
    let mut rejections = Vec::new();
    let mut bytes = 0;
    let mut next_cursor = page.next;
    let count = page.items.len();
    for (n, rejection) in page.items.into_iter().enumerate() {
        bytes += rejection.payload.len() + rejection.detail.len();
        let cursor = tripline_store::rejection_cursor(&rejection);
        rejections.push(RejectionView::from(rejection));
        if bytes >= REJECTIONS_BUDGET && n + 1 < count {
            next_cursor = Some(cursor);
            break;
        }
    }
    Ok(Json(RejectionsAnswer { rejections, next_cursor }))
}

/// The tenant's webhook delivery attempts, newest first (kept 7 days).
#[utoipa::path(get, path = "/v1/webhooks/deliveries", params(PageParams),
    responses((status = 200, body = DeliveriesAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn deliveries<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<Json<DeliveriesAnswer>, ApiError> {
    let tenant = tenant(&state, &headers).await?;
    let (cursor, limit) = params::paging(&pairs)?;
    let page = state.store.deliveries(&tenant, cursor.as_deref(), limit).await?;
    Ok(Json(DeliveriesAnswer {
        deliveries: page.items.into_iter().map(DeliveryView::from).collect(),
        next_cursor: page.next,
    }))
}

/// Server-Sent Events of the tenant's trips: `trip.started`, `trip.updated`, `trip.completed`,
/// `event.detected`; each event's `id` resumes the stream after it (`Last-Event-ID`).
#[utoipa::path(get, path = "/v1/stream", params(StreamParams,
        ("Last-Event-ID" = Option<String>, Header, description = "the id of the last event received: the stream goes on after it")),
    responses((status = 200, description = "text/event-stream: events trip.started, trip.updated, trip.completed, event.detected (data: {id, type, timestamp, data}) and stream.reset", content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 414, description = "request line longer than the server reads (64 KiB)"), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub(crate) async fn stream<S: Store>(
    State(state): Shared<S>,
    headers: HeaderMap,
    Query(pairs): Pairs,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use axum::response::sse::{KeepAlive, Sse};
    let (tenant, key_hash) = state.keys.tenant(&state.store, &headers).await?;
    if !state.limiter.allow(&key_hash, &state.config, std::time::Instant::now()) {
        return Err(ApiError::rate_limited());
    }
    let filter = params::stream(&pairs)?;
    let admission = state.hub.admit(&key_hash)?;
    let config = state.hub.config();
    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let start = crate::stream::Start::of(last_event_id, config.retention);
    let (events, queue) = tokio::sync::mpsc::channel(crate::stream::STREAM_QUEUE);
    tokio::spawn(crate::stream::produce(
        Arc::clone(&state.hub),
        state.store.clone(),
        tenant,
        filter,
        start,
        events,
        admission,
    ));
    let body = futures::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|event| (Ok::<_, std::convert::Infallible>(event), queue))
    });
    let sse = Sse::new(body).keep_alive(KeepAlive::new().interval(config.heartbeat).text("heartbeat"));
    // Proxies must pass events on as they come (nginx reads X-Accel-Buffering).
    Ok((
        [
            (axum::http::header::CACHE_CONTROL, "no-cache"),
            (axum::http::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        sse,
    )
        .into_response())
}

/// The trip explorer page (the key is entered in the page; its script and styles are at `/ui/`).
#[utoipa::path(get, path = "/", responses((status = 200, description = "the trip explorer page", content_type = "text/html")))]
pub(crate) async fn page<S: Store>(State(state): Shared<S>) -> axum::response::Response {
    crate::ui::index(&state.ui)
}

/// Ready when the store answers, the index is open and (in a process with ingest) ingest is
/// alive; no tenant data.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = ErrorBody)))]
pub(crate) async fn ready<S: Store>(State(state): Shared<S>) -> Result<Json<Value>, ApiError> {
    if let Some(reason) = state.readiness.as_ref().and_then(|check| (check.0)()) {
        return Err(ApiError::not_ready(reason));
    }
    let probe = TenantId::parse("readiness-probe").map_err(|e| ApiError::internal(&e))?;
    state.store.tenant_exists(&probe).await?;
    let _ = state.index.get();
    Ok(Json(json!({"status": "ready"})))
}
