//! Health and metrics over HTTP: the Prometheus recorder every role records into, and the
//! `/healthz` and `/metrics` routes (served on `[http] listen`; the query API adds its routes
//! beside them).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::Failure;

/// Installs the process-wide Prometheus recorder.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, Failure> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("installing the metrics recorder: {e}")))?;
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

/// Binds `listen` (the setting named `setting`) and serves `router` in the background; returns the
/// bound address.
pub(crate) async fn serve_router(setting: &str, listen: SocketAddr, router: Router) -> Result<SocketAddr, Failure> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| Failure::Usage(format!("{setting} {listen}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| Failure::Runtime(e.into()))?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "http server stopped");
        }
    });
    Ok(bound)
}
