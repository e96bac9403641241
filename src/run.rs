//! `tripline run`: wires the roles together. So far: the ingest role against an external broker.
//!
//! MQTT source → intake (decode, registry, route by vehicle) → one bounded queue per enrichment
//! worker → store; each message is acknowledged once its results are durable. SIGTERM or Ctrl-C
//! stops taking messages, lets the workers finish what is queued, acknowledges what became
//! durable within `[ingest] drain_s`, and exits; anything not acknowledged is redelivered by the
//! broker to the next run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tripline_enrich::Enricher;
use tripline_enrich::worker::{Work, Worker, WorkerConfig};
use tripline_ingest::intake::{Decoded, IntakeCounters, Routed, run_intake};
use tripline_ingest::source::{MqttSourceConfig, SourceCounters, run_source};
use tripline_model::DecodeConfig;
use tripline_store::{AnyStore, EmbeddedStore, ScyllaStore};

use crate::config::{Config, StoreKind};
use crate::{Failure, runtime};

/// Messages handed from the source to the intake, waiting to be decoded: small, because the
/// broker's in-flight window already bounds what is unacknowledged.
const DELIVERY_QUEUE_CAPACITY: usize = 256;
/// Messages queued per enrichment worker: enough for a full batch while the previous one is
/// being written, small enough that a stop drains quickly.
const WORKER_QUEUE_CAPACITY: usize = 512;

fn to_work(routed: Routed) -> Work {
    let Routed { item, delivery } = routed;
    let done = Box::new(move || delivery.complete());
    match item {
        Decoded::Telemetry { tenant, telemetry, rejections } => Work::Telemetry { tenant, telemetry, rejections, done },
        Decoded::Marker { tenant, vehicle_id, marker } => Work::Marker { tenant, vehicle_id, marker, done },
        Decoded::Rejected(rejection) => Work::Rejected { rejection, done },
    }
}

fn mqtt_endpoint(url: &str) -> Result<(String, u16), Failure> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| Failure::Usage(format!("[mqtt] url {url:?}: expected mqtt://host:port")))?;
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    let port = port.parse().map_err(|_| Failure::Usage(format!("[mqtt] url {url:?}: bad port")))?;
    Ok((host.to_owned(), port))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub(crate) fn run(config: &Config, roles: &[String], engine: Enricher) -> Result<(), Failure> {
    let unsupported: Vec<&String> = roles.iter().filter(|r| r.as_str() != "ingest").collect();
    if !unsupported.is_empty() {
        return Err(Failure::Usage(format!(
            "role(s) {} not available yet; this build runs `--roles ingest` (indexer and api are being built)",
            unsupported.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let Some(url) = config.mqtt.url.as_deref() else {
        return Err(Failure::Usage(
            "the embedded broker is not available yet: set [mqtt] url = \"mqtt://host:port\"".to_owned(),
        ));
    };
    let (host, port) = mqtt_endpoint(url)?;
    let rt = runtime()?;
    rt.block_on(async {
        let store = match config.store {
            StoreKind::Embedded => AnyStore::Embedded(
                EmbeddedStore::open(&config.embedded())
                    .map_err(|e| Failure::Runtime(anyhow::anyhow!("embedded store: {e}")))?,
            ),
            StoreKind::Scylla => AnyStore::Scylla(
                ScyllaStore::connect(&config.scylla())
                    .await
                    .map_err(|e| Failure::Runtime(anyhow::anyhow!("scylla: {e}")))?,
            ),
        };
        let engine = Arc::new(engine);
        let (shutdown_tx, shutdown) = watch::channel(false);

        let workers = config.ingest.workers.max(1);
        let mut queues = Vec::with_capacity(workers);
        let mut worker_tasks = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = flume::bounded::<Work>(WORKER_QUEUE_CAPACITY);
            queues.push(tx);
            let worker = Worker::new(Arc::clone(&engine), store.clone(), WorkerConfig::default());
            worker_tasks.push(tokio::spawn(worker.run(rx)));
        }

        let (deliveries_tx, deliveries_rx) = flume::bounded(DELIVERY_QUEUE_CAPACITY);
        let (intake_counters, _) = watch::channel(IntakeCounters::default());
        let intake = tokio::spawn(run_intake(
            store.clone(),
            DecodeConfig::default(),
            deliveries_rx,
            queues,
            to_work,
            shutdown.clone(),
            intake_counters,
        ));
        let source_config = MqttSourceConfig {
            host,
            port,
            client_id: config.mqtt.client_id.clone().unwrap_or_else(|| "tripline-ingest".to_owned()),
            shared_group: config.mqtt.shared_group.clone(),
            ..MqttSourceConfig::default()
        };
        let (status_tx, mut status) = watch::channel(SourceCounters::default());
        let mut progress = status.clone();
        tokio::spawn(async move {
            if status.wait_for(|s| s.ready).await.is_ok() {
                eprintln!("tripline: ingest ready (connected and subscribed)");
            }
        });
        // Progress once a second while it changes (never per message).
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = SourceCounters::default();
            loop {
                tick.tick().await;
                if progress.has_changed().is_err() {
                    break;
                }
                let now = progress.borrow_and_update().clone();
                if now != last {
                    tracing::info!(
                        received = now.received,
                        acknowledged = now.acknowledged,
                        connections = now.connections,
                        "ingest progress"
                    );
                    last = now;
                }
            }
        });
        let source = tokio::spawn(run_source(
            source_config,
            deliveries_tx,
            shutdown.clone(),
            Duration::from_secs(config.ingest.drain_s),
            status_tx,
        ));
        eprintln!(
            "tripline: ingest from {url} ({workers} workers) into the {} store; Ctrl-C or SIGTERM stops gracefully",
            match config.store {
                StoreKind::Embedded => "embedded",
                StoreKind::Scylla => "scylla",
            }
        );

        tokio::select! {
            _ = shutdown_signal() => {}
            _ = shutdown_watch_closed(shutdown.clone()) => {}
        }
        tracing::info!("stopping: taking no new messages, finishing what is queued");
        let _ = shutdown_tx.send(true);
        let _ = intake.await;
        tracing::debug!("intake stopped");
        for task in worker_tasks {
            let _ = task.await;
        }
        tracing::debug!("workers stopped");
        let counters = source
            .await
            .map_err(|e| Failure::Runtime(e.into()))?
            .map_err(|e| Failure::Runtime(anyhow::anyhow!("{e}")))?;
        eprintln!("tripline: stopped; {} messages received, {} acknowledged", counters.received, counters.acknowledged);
        Ok(())
    })
}

/// Resolves only if the shutdown channel is closed (never, while `run` holds the sender).
async fn shutdown_watch_closed(mut shutdown: watch::Receiver<bool>) {
    while shutdown.changed().await.is_ok() {}
}
