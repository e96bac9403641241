//! `tripline run`: wires the roles together: ingest (from an external broker or the embedded
//! one), the indexer and the query API, with health, metrics and the admin channel over HTTP.
//!
//! MQTT source → intake (decode, registry, route by vehicle) → one bounded queue per enrichment
//! worker → store; each message is acknowledged once its results are durable. SIGTERM or Ctrl-C
//! stops taking messages, lets the workers finish what is queued, acknowledges what became
//! durable within `[ingest] drain_s`, and exits; anything not acknowledged is redelivered by the
//! broker to the next run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tripline_enrich::Enricher;
use tripline_index::{IndexHome, LiveIndex};
use tripline_indexer::{Indexer, IndexerCounters};
use tripline_ingest::budget::ByteBudget;
use tripline_ingest::credentials::VehicleAuth;
use tripline_ingest::endpoint::{AllowAnyone, Authenticate, Endpoint, EndpointConfig};
use tripline_ingest::intake::{IntakeCounters, run_intake};
use tripline_ingest::source::{Delivery, MqttSourceConfig, SourceCounters, run_source};
use tripline_model::DecodeConfig;
use tripline_pipeline::{Pool, Work, WorkerConfig};
use tripline_query_api::{ApiConfig, ApiState};
use tripline_store::{AnyStore, EmbeddedStore, TripStore};

use crate::config::{BrokerUrl, Config, mqtt_endpoint, open_store};
use crate::{Failure, runtime};

/// Messages handed from the source to the intake, waiting to be decoded: small, because the
/// broker's in-flight window already bounds what is unacknowledged.
const DELIVERY_QUEUE_CAPACITY: usize = 256;
/// A stop ends within `[ingest] drain_s` plus this, whatever the store does: the endpoint's own
/// drain (up to drain_s + 2 s), then the pipeline, then the indexer.
const STOP_MARGIN: Duration = Duration::from_secs(4);
/// The last part of [`STOP_MARGIN`], for the indexer.
const INDEXER_STOP: Duration = Duration::from_secs(1);

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

/// A role of `tripline run`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// MQTT in, enrichment, durable writes, acknowledgements.
    Ingest,
    /// The change feed into the search index.
    Indexer,
    /// The query API over the index and the store.
    Api,
}

/// The roles one process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Roles {
    ingest: bool,
    indexer: bool,
    api: bool,
}

impl Roles {
    fn of(chosen: &[Role]) -> Result<Roles, Failure> {
        if chosen.is_empty() {
            return Err(Failure::Usage("no role given; roles are ingest, indexer, api".to_owned()));
        }
        Ok(Roles {
            ingest: chosen.contains(&Role::Ingest),
            indexer: chosen.contains(&Role::Indexer),
            api: chosen.contains(&Role::Api),
        })
    }
}

/// How often an API without an indexer in its process looks for new index commits.
const INDEX_RELOAD: Duration = Duration::from_millis(100);

/// Runs `roles` until a stop signal (or ingest's failure); `regions_geojson`: the regions
/// `engine` cuts by, for the trip explorer's maps.
pub(crate) fn run(
    config: &Config,
    roles: &[Role],
    engine: Enricher,
    regions_geojson: String,
    demo: bool,
) -> Result<(), Failure> {
    let roles = Roles::of(roles)?;
    if demo && !(roles.ingest && roles.api) {
        return Err(Failure::Usage("--demo needs the ingest and api roles".to_owned()));
    }
    let external = config.mqtt.url.as_deref().map(mqtt_endpoint).transpose()?;
    let tls = config.mqtt.tls_cert_file.is_some() || external.as_ref().is_some_and(|url| url.tls);
    if demo && tls {
        return Err(Failure::Usage(
            "--demo publishes over plain MQTT: run it without TLS ([mqtt] tls_*, mqtts://)".to_owned(),
        ));
    }
    let rt = runtime()?;
    let result = rt.block_on(run_roles(config, roles, engine, regions_geojson, demo, external));
    // Whatever was abandoned at the stop's deadline (a write blocked on a store) does not hold
    // the process.
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

/// The roles' life in the runtime: the store, the HTTP listeners, each role started, then a stop
/// signal (or ingest's failure) and the roles stopped in the direction of the data.
async fn run_roles(
    config: &Config,
    roles: Roles,
    engine: Enricher,
    regions_geojson: String,
    demo: bool,
    external: Option<BrokerUrl>,
) -> Result<(), Failure> {
    let metrics = crate::ops::install_metrics()?;
    crate::config::private_dir(&config.data_dir)
        .with_context(|| format!("data directory {}", config.data_dir.display()))?;
    let store = open_store(config).await?;
    let demo = if demo { Some(crate::demo::prepare(&config.data_dir, &store).await?) } else { None };
    let index_dir = config.data_dir.join("index");
    let index_context = || format!("index in {}", index_dir.display());
    let home = IndexHome::open(&index_dir).with_context(index_context)?;
    let index = if roles.indexer || roles.api {
        Some(LiveIndex::open(home.clone()).with_context(index_context)?)
    } else {
        None
    };
    // Ingest's health: why it cannot work (a task ended, the broker gone too long), and its
    // connection; `/readyz` answers 503 with the reason, and a failure stops the process.
    let (health_tx, health) = watch::channel(None::<String>);
    let (ingest_status_tx, ingest_status) = watch::channel(SourceCounters::default());
    let readiness = roles.ingest.then(|| ingest_readiness(health.clone(), ingest_status));
    let api = match (roles.api, &index) {
        (true, Some(index)) => Some(api_state(config, &store, index, readiness, regions_geojson)),
        _ => None,
    };
    if let (true, false, Some(index)) = (roles.api, roles.indexer, &index) {
        follow_index_commits(index.clone());
    }
    let (http, _published) = serve_http(config, &store, home, metrics, api).await?;
    if roles.ingest && roles.indexer {
        // The indexer takes trips as ingest just wrote them instead of reading them back.
        store.keep_written();
    }
    if let AnyStore::Embedded(embedded) = &store {
        purge_periodically(embedded.clone());
    }
    let mut ingest = None;
    if roles.ingest {
        ingest = Some(start_ingest(config, &store, engine, external.clone(), ingest_status_tx, health_tx).await?);
    }
    if let (Some(demo), Some(ingest)) = (demo, &ingest) {
        let broker = match (ingest.endpoint_addr(), external) {
            (Some(addr), _) => (addr.ip().to_string(), addr.port()),
            (None, Some(url)) => (url.host, url.port),
            (None, None) => return Err(Failure::Runtime(anyhow::anyhow!("no broker for the demo"))),
        };
        crate::demo::start(demo, http, broker, ingest.status.clone());
    }
    let indexer = match (roles.indexer, index) {
        (true, Some(index)) => Some(start_indexer(config, &store, index, &index_dir)),
        _ => None,
    };
    // Webhooks go with the indexer role: one process per deployment follows the feed to the
    // receivers as it does into the index.
    let webhooks = if roles.indexer { Some(start_webhooks(config, &store)?) } else { None };

    let mut failed = health.clone();
    let failure = tokio::select! {
        () = shutdown_signal() => None,
        reason = failed.wait_for(Option::is_some), if ingest.is_some() => reason.ok().and_then(|r| r.clone()),
    };
    match &failure {
        Some(reason) => tracing::error!(%reason, "ingest cannot go on; stopping"),
        None => tracing::info!("stopping"),
    }
    stop_roles(config, ingest, webhooks, indexer).await?;
    match failure {
        Some(reason) => Err(Failure::Runtime(anyhow::anyhow!("ingest failed: {reason}"))),
        None => Ok(()),
    }
}

/// The HTTP listener (health, metrics, and the query API when `api` is given) and the admin
/// channel, whose published address lasts as long as the returned guard.
async fn serve_http(
    config: &Config,
    store: &AnyStore,
    home: IndexHome,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    api: Option<ApiState<AnyStore>>,
) -> Result<(std::net::SocketAddr, crate::admin::Published), Failure> {
    let mut routes = crate::ops::routes(metrics);
    let key_cache = api.as_ref().map(ApiState::key_cache);
    let serves_api = api.is_some();
    if let Some(state) = api {
        routes = routes.merge(tripline_query_api::router(state));
    }
    let http = crate::ops::serve_router("[http] listen", config.http.listen, routes, &config.http).await?;
    let published = serve_admin(config, store, home, key_cache).await?;
    eprintln!("tripline: health and metrics on http://{http}/healthz and http://{http}/metrics");
    if serves_api {
        eprintln!("tripline: trip explorer on http://{http}/ and query API on http://{http}/v1/trips");
    }
    Ok((http, published))
}

/// A role's task and the switch that stops it.
type Stoppable<T> = (watch::Sender<bool>, tokio::task::JoinHandle<T>);

/// The query API's state over `store` and `index`, with `readiness` asked by `/readyz`.
fn api_state(
    config: &Config,
    store: &AnyStore,
    index: &LiveIndex,
    readiness: Option<tripline_query_api::Readiness>,
    regions_geojson: String,
) -> ApiState<AnyStore> {
    let limits = ApiConfig {
        rate_per_s: config.http.rate_per_s,
        burst: config.http.burst,
        failed_auth_per_s: config.http.failed_auth_per_s,
        failed_auth_burst: config.http.failed_auth_burst,
    };
    tripline_query_api::metrics::describe();
    let state = ApiState::with_config(store.clone(), index.clone(), limits)
        .with_stream(config.push.stream())
        .with_ui(config.ui.clone(), regions_geojson);
    match readiness {
        Some(readiness) => state.with_readiness(readiness),
        None => state,
    }
}

/// Ingest's part of `/readyz`: why it cannot work (a task ended, the broker gone too long), or
/// that it is not connected.
fn ingest_readiness(
    health: watch::Receiver<Option<String>>,
    status: watch::Receiver<SourceCounters>,
) -> tripline_query_api::Readiness {
    Arc::new(move || {
        health.borrow().clone().or_else(|| (!status.borrow().ready).then(|| "ingest is not connected".to_owned()))
    })
}

/// Another process writes the index: picks up its commits, and its generation after a rebuild.
fn follow_index_commits(index: LiveIndex) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INDEX_RELOAD);
        loop {
            tick.tick().await;
            if let Err(error) = index.refresh().and_then(|_| index.get().reload()) {
                tracing::warn!(%error, "reloading the index failed");
            }
        }
    });
}

/// The admin channel: a listener of its own on loopback, whatever `[http] listen` is, and its
/// address and token published in the data directory (for as long as the guard lives).
async fn serve_admin(
    config: &Config,
    store: &AnyStore,
    home: IndexHome,
    key_cache: Option<tripline_query_api::KeyCacheHandle>,
) -> Result<crate::admin::Published, Failure> {
    let token = crate::random_hex()?;
    let routes = crate::admin::routes(store.clone(), home, token.clone(), key_cache);
    let http = crate::ops::serve_router("[http] admin_listen", config.http.admin_listen, routes, &config.http).await?;
    let file = crate::remote::AdminFile { http: http.to_string(), token, pid: std::process::id() };
    crate::admin::publish(&config.data_dir, &file)
}

/// The indexer role: follows the store's change feed into the index in `dir`.
fn start_indexer(
    config: &Config,
    store: &AnyStore,
    index: LiveIndex,
    dir: &std::path::Path,
) -> Stoppable<Result<IndexerCounters, tripline_indexer::IndexerError>> {
    let (stop, stopped) = watch::channel(false);
    let (status, _) = watch::channel(IndexerCounters::default());
    let task = tokio::spawn(Indexer::new(store.clone(), index, config.indexer.clone()).run(stopped, status));
    eprintln!("tripline: indexer following the store's change feed into {}", dir.display());
    (stop, task)
}

/// Webhook delivery, which goes with the indexer role.
fn start_webhooks(config: &Config, store: &AnyStore) -> Result<Stoppable<()>, Failure> {
    let hooks = config.push.webhooks().map_err(Failure::Usage)?;
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(tripline_push::Dispatcher::new(store.clone(), hooks).run(stopped));
    Ok((stop, task))
}

/// Stops the roles in the direction of the data: ingest first, then the indexer takes in what
/// ingest wrote. A stop ends within `drain_s` + [`STOP_MARGIN`] even with the store down.
async fn stop_roles(
    config: &Config,
    ingest: Option<Ingest>,
    webhooks: Option<Stoppable<()>>,
    indexer: Option<Stoppable<Result<IndexerCounters, tripline_indexer::IndexerError>>>,
) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.ingest.drain_s) + STOP_MARGIN;
    if let Some(ingest) = ingest {
        ingest.stop(deadline - INDEXER_STOP).await?;
    }
    if let Some((stop, task)) = webhooks {
        // What is in flight is sent again after a restart (at least once): no need to wait.
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    let Some((stop, mut task)) = indexer else { return Ok(()) };
    let _ = stop.send(true);
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => {
            let counters = joined.map_err(|e| Failure::Runtime(e.into()))?.context("indexer")?;
            eprintln!("tripline: indexer stopped; {} changes applied, {} commits", counters.changes, counters.commits);
        }
        Err(_) => {
            task.abort();
            eprintln!("tripline: the indexer was still working at the stop's deadline; it resumes from its checkpoint");
        }
    }
    Ok(())
}

/// The embedded store deletes what outlived its retention (and the change feed's 7 days) ten
/// minutes after the start and then every six hours: reads skip expired records meanwhile, so
/// this only gives the disk back.
const PURGE_FIRST: Duration = Duration::from_secs(600);
const PURGE_EVERY: Duration = Duration::from_secs(6 * 3600);

fn purge_periodically(store: EmbeddedStore) {
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + PURGE_FIRST;
        loop {
            tokio::time::sleep_until(next).await;
            next += PURGE_EVERY;
            match store.purge_expired().await {
                Ok(purged) => tracing::info!(purged, "embedded store: expired records deleted"),
                Err(error) => tracing::warn!(%error, "embedded store: deleting expired records failed"),
            }
        }
    });
}

/// The running ingest role: the embedded endpoint or an external broker's source, intake and
/// workers.
struct Ingest {
    endpoint: Option<Endpoint>,
    shutdown: watch::Sender<bool>,
    /// True once a stop began: tasks ending after it are no failure.
    stopping: watch::Sender<bool>,
    status: watch::Receiver<SourceCounters>,
    source: Option<tokio::task::JoinHandle<Option<Result<SourceCounters, tripline_ingest::IngestError>>>>,
    /// Workers and intake report nothing but their end.
    intake: tokio::task::JoinHandle<Option<()>>,
    workers: Vec<tokio::task::JoinHandle<Option<()>>>,
}

/// Watches one of ingest's tasks: if it ends before a stop began (returned, or panicked), the
/// reason goes to `health`, which turns `/readyz` to 503 and stops the process with a non-zero
/// exit — never a silent stall. `why` adds what the task's output says.
fn supervise<T: Send + 'static>(
    name: &'static str,
    task: tokio::task::JoinHandle<T>,
    stopping: &watch::Receiver<bool>,
    health: &watch::Sender<Option<String>>,
    why: impl FnOnce(&T) -> String + Send + 'static,
) -> tokio::task::JoinHandle<Option<T>> {
    let (stopping, health) = (stopping.clone(), health.clone());
    tokio::spawn(async move {
        let result = task.await;
        if !*stopping.borrow() {
            let reason = match &result {
                Ok(output) => format!("{name} ended{}", why(output)),
                Err(error) if error.is_panic() => format!("{name} panicked (see the log above)"),
                Err(error) => format!("{name}: {error}"),
            };
            health.send_if_modified(|current| current.is_none() && current.replace(reason).is_none());
        }
        result.ok()
    })
}

/// With an external broker: once ingest has been without a connection for `give_up_s` (from the
/// start, or since it lost one), it fails (the process exits non-zero for its supervisor to
/// restart it; the broker keeps the messages).
fn give_up_when_disconnected(
    mut status: watch::Receiver<SourceCounters>,
    stopping: watch::Receiver<bool>,
    health: watch::Sender<Option<String>>,
    give_up_s: u64,
) {
    let give_up = Duration::from_secs(give_up_s.max(1));
    tokio::spawn(async move {
        loop {
            if status.wait_for(|s| !s.ready).await.is_err() {
                return;
            }
            match tokio::time::timeout(give_up, status.wait_for(|s| s.ready)).await {
                Ok(Ok(_)) => continue,
                Ok(Err(_)) => return,
                Err(_) if *stopping.borrow() => return,
                Err(_) => {
                    let reason = format!("not connected to the MQTT broker for {give_up_s} s");
                    health.send_if_modified(|current| current.is_none() && current.replace(reason).is_none());
                    return;
                }
            }
        }
    });
}

async fn start_ingest(
    config: &Config,
    store: &AnyStore,
    engine: Enricher,
    external: Option<BrokerUrl>,
    status_tx: watch::Sender<SourceCounters>,
    health: watch::Sender<Option<String>>,
) -> Result<Ingest, Failure> {
    tripline_ingest::metrics::describe();
    tripline_pipeline::metrics::describe();
    if config.mqtt.buffer_mb.is_some() {
        tracing::warn!("[mqtt] buffer_mb is no longer used: the embedded endpoint holds no messages of its own");
    }
    let engine = Arc::new(engine);
    let (stopping_tx, stopping) = watch::channel(false);
    let (shutdown_tx, shutdown) = watch::channel(false);

    let workers = config.ingest.workers.max(1);
    let Pool { queues, tasks, depths } = Pool::start(workers, &engine, store, &worker_config(config));
    let supervised = |task| supervise("an enrichment worker", task, &stopping, &health, |()| String::new());
    let worker_tasks: Vec<_> = tasks.into_iter().map(supervised).collect();
    let budget = ByteBudget::new(config.ingest.max_in_flight_mb.max(1) * 1024 * 1024);
    let in_flight = budget.clone();
    let (deliveries_tx, deliveries_rx) = flume::bounded(DELIVERY_QUEUE_CAPACITY);
    let deliveries_depth = deliveries_rx.clone();
    let (intake_counters, _) = watch::channel(IntakeCounters::default());
    let intake = tokio::spawn(run_intake(
        store.clone(),
        DecodeConfig::default(),
        deliveries_rx,
        queues,
        shutdown.clone(),
        intake_counters,
    ));
    let intake = supervise("the intake", intake, &stopping, &health, |()| String::new());
    let status = status_tx.subscribe();
    let mut ready = status.clone();
    tokio::spawn(async move {
        if ready.wait_for(|s| s.ready).await.is_ok() {
            eprintln!("tripline: ingest ready (connected and subscribed)");
        }
    });
    tokio::spawn(report_progress(status.clone(), deliveries_depth, in_flight, depths));
    let drain = Duration::from_secs(config.ingest.drain_s);
    let (source, endpoint) = match external {
        None => (None, Some(start_endpoint(config, store, budget, deliveries_tx, drain, status_tx).await?)),
        Some(url) => {
            let source_config = MqttSourceConfig {
                host: url.host,
                port: url.port,
                tls: if url.tls { Some(config.mqtt.client_tls(true).map_err(Failure::Usage)?) } else { None },
                client_id: config.mqtt.client_id.clone().unwrap_or_else(|| "tripline-ingest".to_owned()),
                shared_group: config.mqtt.shared_group.clone(),
                credentials: config.mqtt.account().map_err(Failure::Usage)?,
                budget,
                ..MqttSourceConfig::default()
            };
            let source = tokio::spawn(run_source(source_config, deliveries_tx, shutdown.clone(), drain, status_tx));
            let source = supervise("the MQTT source", source, &stopping, &health, |result| match result {
                Ok(_) => String::new(),
                Err(error) => format!(": {error}"),
            });
            give_up_when_disconnected(status.clone(), stopping.clone(), health.clone(), config.ingest.give_up_s);
            (Some(source), None)
        }
    };
    eprintln!(
        "tripline: ingest from {} ({workers} workers) into the {} store; Ctrl-C or SIGTERM stops gracefully",
        config.mqtt.url.as_deref().unwrap_or("the embedded endpoint"),
        config.store
    );
    Ok(Ingest { endpoint, shutdown: shutdown_tx, stopping: stopping_tx, status, intake, workers: worker_tasks, source })
}

/// The enrichment workers' settings from `[ingest]` and `[push]`.
fn worker_config(config: &Config) -> WorkerConfig {
    WorkerConfig {
        max_live_trips: config.ingest.max_live_trips.max(1),
        trip_update_every: Duration::from_secs(config.push.trip_update_every_s),
        ..WorkerConfig::default()
    }
}

/// Logs ingest's progress once a second while it changes (never per message), and samples the
/// queue depths and the bytes in flight for `/metrics`; ends when the source's status goes.
async fn report_progress(
    mut progress: watch::Receiver<SourceCounters>,
    deliveries: flume::Receiver<Delivery>,
    in_flight: ByteBudget,
    workers: Vec<flume::Receiver<Work>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = SourceCounters::default();
    loop {
        tick.tick().await;
        if progress.has_changed().is_err() {
            break;
        }
        tripline_ingest::metrics::queue_depth("deliveries", deliveries.len());
        tripline_ingest::metrics::in_flight_bytes(in_flight.in_flight_bytes());
        for (i, queue) in workers.iter().enumerate() {
            tripline_ingest::metrics::queue_depth(format!("worker-{i}"), queue.len());
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
}

/// The embedded MQTT endpoint for vehicles, with `[mqtt]`'s settings; a listen address that
/// cannot be bound is a usage error.
async fn start_endpoint(
    config: &Config,
    store: &AnyStore,
    budget: ByteBudget,
    deliveries: flume::Sender<Delivery>,
    drain: Duration,
    status: watch::Sender<SourceCounters>,
) -> Result<Endpoint, Failure> {
    let defaults = EndpointConfig::default();
    let endpoint_config = EndpointConfig {
        listen: config.mqtt.listen.unwrap_or(defaults.listen),
        max_connections: config.mqtt.max_connections.unwrap_or(defaults.max_connections).max(1),
        in_flight: config.mqtt.in_flight.unwrap_or(defaults.in_flight).max(1),
        tls: config.mqtt.server_tls().map_err(Failure::Usage)?,
        budget,
        ..defaults
    };
    let scheme = if endpoint_config.tls.is_some() { "mqtts" } else { "mqtt" };
    let auth: Arc<dyn Authenticate> = if config.mqtt.allow_anonymous {
        tracing::warn!("[mqtt] allow_anonymous: any client may publish as any vehicle");
        Arc::new(AllowAnyone)
    } else {
        VehicleAuth::new(store.clone()).shared()
    };
    let endpoint = Endpoint::start(endpoint_config, auth, deliveries, drain, status).await.map_err(|e| match e {
        listen @ tripline_ingest::IngestError::Listen { .. } => Failure::Usage(listen.to_string()),
        other => Failure::Runtime(other.into()),
    })?;
    eprintln!("tripline: MQTT endpoint for vehicles on {scheme}://{}", endpoint.local_addr());
    Ok(endpoint)
}

impl Ingest {
    /// Where vehicles connect, when the endpoint is embedded.
    fn endpoint_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(Endpoint::local_addr)
    }

    /// Graceful stop. The embedded endpoint closes first: it reads nothing more and acknowledges
    /// what becomes durable within `drain`. An external broker's source stops taking messages and
    /// does the same. Then the pipeline finishes what is queued.
    ///
    /// The whole stop ends by `deadline`: a pipeline still writing then (the store is down) is
    /// abandoned — what it holds was not acknowledged, so the broker or the vehicles send it again.
    async fn stop(self, deadline: tokio::time::Instant) -> Result<(), Failure> {
        let Ingest { endpoint, shutdown, stopping, status: _, mut intake, mut workers, source } = self;
        stopping.send_replace(true);
        let counters = match (endpoint, source) {
            (Some(endpoint), _) => {
                tracing::info!("MQTT endpoint closed to vehicles; acknowledging what becomes durable");
                let counters = endpoint.close().await.map_err(|e| Failure::Runtime(e.into()))?;
                let _ = shutdown.send(true);
                counters
            }
            (None, Some(mut source)) => {
                let _ = shutdown.send(true);
                match tokio::time::timeout_at(deadline, &mut source).await {
                    Ok(joined) => match joined.map_err(|e| Failure::Runtime(e.into()))? {
                        Some(result) => result.context("ingest's MQTT source")?,
                        // It panicked: supervision said so; nothing more to count.
                        None => SourceCounters::default(),
                    },
                    Err(_) => {
                        source.abort();
                        SourceCounters::default()
                    }
                }
            }
            (None, None) => SourceCounters::default(),
        };
        tracing::info!("stopping ingest: finishing what is queued");
        let finished = tokio::time::timeout_at(deadline, async {
            let _ = (&mut intake).await;
            for task in &mut workers {
                let _ = task.await;
            }
        })
        .await;
        if finished.is_err() {
            intake.abort();
            workers.iter().for_each(tokio::task::JoinHandle::abort);
            eprintln!(
                "tripline: the pipeline was still writing at the stop's deadline ([ingest] drain_s + {} s): \
                 what it held was not acknowledged and will be delivered again",
                STOP_MARGIN.as_secs()
            );
        }
        eprintln!("tripline: stopped; {} messages received, {} acknowledged", counters.received, counters.acknowledged);
        Ok(())
    }
}
