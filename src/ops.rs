//! Health and metrics over HTTP: the Prometheus recorder every role records into, and the
//! `/healthz` and `/metrics` routes (served on `[http] listen`; the query API adds its routes
//! beside them).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;

use crate::Failure;
use crate::config::HttpConfig;

/// Installs the process-wide Prometheus recorder.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, Failure> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    // Histograms keep a bounded window of samples; rendering drains old ones.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// The health and metrics routes.
pub(crate) fn routes(metrics: PrometheusHandle) -> Router {
    Router::new().route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) })).route(
        "/metrics",
        get(move || {
            let text = metrics.render();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
        }),
    )
}

/// Binds `listen` (the setting named `setting`) and serves `router` in the background within
/// `limits`; returns the bound address.
///
/// Every bound is enforced here, before a request reaches a route: connections beyond
/// `max_connections` are closed at once, headers must arrive within `header_timeout_ms` (a
/// slow-loris ties up nothing for longer), requests beyond `max_in_flight` and requests not
/// answered within `request_timeout_ms` get a 503. Each refusal is counted in
/// `tripline_http_refused_total{reason}`.
pub(crate) async fn serve_router(
    setting: &str,
    listen: SocketAddr,
    router: Router,
    limits: &HttpConfig,
) -> Result<SocketAddr, Failure> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| Failure::Usage(format!("{setting} {listen}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| Failure::Runtime(e.into()))?;
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let request_timeout = Duration::from_millis(limits.request_timeout_ms.max(1));
    let router = router.layer(axum::middleware::from_fn(move |request, next| {
        bounded(Arc::clone(&in_flight), request_timeout, request, next)
    }));
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let header_timeout = Duration::from_millis(limits.header_timeout_ms.max(1));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "http: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                metrics::counter!("tripline_http_refused_total", "reason" => "too_many_connections").increment(1);
                drop(stream);
                continue;
            };
            // The client's address reaches the routes as `ConnectInfo` (failed-authentication
            // limits are per address).
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), request)
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // A client that goes away or is too slow ends its connection; nothing to report.
                let _ = connection.await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// At most as many requests at once as `in_flight` has permits, each answered within `timeout`;
/// otherwise a 503 at once.
async fn bounded(
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Ok(_permit) = in_flight.try_acquire_owned() else {
        return refused("overloaded", "too many requests in flight; try again shortly");
    };
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => refused("request_timeout", "the request took too long"),
    }
}

fn refused(reason: &'static str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    metrics::counter!("tripline_http_refused_total", "reason" => reason).increment(1);
    let body = serde_json::json!({"error": {"code": reason, "message": message}});
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::RETRY_AFTER, "1")], axum::Json(body))
        .into_response()
}
