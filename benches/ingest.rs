//! Ingest throughput against the store-only ceiling, in one run.
//!
//! `eval "$(scripts/services.sh env)"; cargo bench --bench ingest`
//!
//! Two set-ups: embedded (the embedded broker and store of `tripline run`) and Mosquitto +
//! Cassandra. For each: the store-only ceiling (the same points written straight into the store,
//! as `cargo bench -p tripline-store --bench write` does), then `tripline run --roles ingest`
//! while a fleet of 100 vehicles publishes messages of 10 points (1000 messages each;
//! `TRIPLINE_BENCH_MESSAGES` overrides) as fast as the broker acknowledges them; measured from the
//! first publish until the process's `tripline_ingest_acks_total` (scraped every 20 ms) counts
//! every message — an acknowledgement leaves only once the message is durable. Then checks that
//! every trip in the store counts all its points. Prints points/s, the ceiling and their ratio.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and fails loudly

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tripline_model::time::now_ms;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tripline_model::{Point, TenantId, TripId, VehicleId, encode_telemetry};
use tripline_store::{
    AnyStore, Derived, EmbeddedConfig, EmbeddedStore, PointStore, Registry, ScyllaConfig, ScyllaStore, StoredPoint,
    TripStore,
};

const VEHICLES: usize = 100;
const POINTS_PER_MESSAGE: usize = 10;
/// Messages per vehicle; `TRIPLINE_BENCH_MESSAGES` overrides.
fn messages_per_vehicle() -> usize {
    std::env::var("TRIPLINE_BENCH_MESSAGES").ok().and_then(|n| n.parse().ok()).unwrap_or(1000)
}

fn points(t0: i64, v: usize, m: usize) -> Vec<Point> {
    tripline_tests::fleet_message_points(t0, v, m, POINTS_PER_MESSAGE)
}

/// The same kind of writes straight into the store: one message's worth for every vehicle per
/// write, 4 writes in flight (as `cargo bench -p tripline-store --bench write`).
async fn ceiling(store: &AnyStore, prefix: &str, t0: i64) -> f64 {
    // The same volume as the ingest run, so both pay for the store's background work alike.
    let messages = messages_per_vehicle();
    let engine = tripline_enrich::Enricher::for_test();
    let writes: Vec<_> = (0..messages)
        .map(|m| {
            let mut batch = Vec::new();
            let mut trips = Vec::new();
            for v in 0..VEHICLES {
                let vehicle = VehicleId::parse(&format!("{prefix}-c{v}")).unwrap();
                let trip = TripId::parse(&format!("c{v}")).unwrap();
                let pts = points(t0, v, m);
                batch.extend(pts.iter().map(|p| StoredPoint {
                    vehicle_id: vehicle.clone(),
                    trip_id: trip.clone(),
                    point: p.clone(),
                    derived: Derived::default(),
                }));
                let mut trip_engine = tripline_enrich::TripEngine::new(vehicle, trip);
                trip_engine.add_points(pts);
                let report = trip_engine.report(&engine, tripline_model::TripStatus::Active, None).unwrap();
                trips.push(tripline_store::TripRecord {
                    tenant: TenantId::parse("bench").unwrap(),
                    summary: report.summary,
                    events: report.events,
                    cells: tripline_model::cell::cells(
                        trip_engine.enriched().iter().map(|p| (p.point.lat, p.point.lon)),
                    ),
                });
            }
            (batch, trips)
        })
        .collect();
    let started = Instant::now();
    let mut pending = writes.into_iter();
    loop {
        let wave: Vec<_> = pending.by_ref().take(4).collect();
        if wave.is_empty() {
            break;
        }
        let tasks: Vec<_> = wave
            .into_iter()
            .map(|(batch, trips)| {
                let store = store.clone();
                tokio::spawn(async move {
                    store.write_points(&batch).await.unwrap();
                    store.upsert_trips(&trips).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
    (VEHICLES * messages * POINTS_PER_MESSAGE) as f64 / started.elapsed().as_secs_f64()
}

async fn publish_fleet(url: &str, prefix: &str, t0: i64) {
    let rest = url.strip_prefix("mqtt://").unwrap();
    let (host, port) = rest.rsplit_once(':').unwrap();
    let mut options = MqttOptions::new(format!("{prefix}-fleet"), host, port.parse().unwrap());
    options.set_inflight(500);
    // A saturated broker answers pings late; the benchmark must not mistake that for a dead link.
    options.set_keep_alive(Duration::from_secs(600));
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let total = VEHICLES * messages_per_vehicle();
    let prefix = prefix.to_owned();
    let sender = tokio::spawn(async move {
        for m in 0..messages_per_vehicle() {
            for v in 0..VEHICLES {
                let trip = TripId::parse(&format!("b{v}")).unwrap();
                let payload = encode_telemetry(Some(&trip), &points(t0, v, m));
                client
                    .publish(format!("vehicles/{prefix}-{v}/telemetry"), QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
        }
        client
    });
    let mut acked = 0;
    while acked < total {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            acked += 1;
        }
    }
    sender.await.unwrap();
}

async fn all_counted(store: &AnyStore, prefix: &str) -> bool {
    let tenant = TenantId::parse("bench").unwrap();
    for v in 0..VEHICLES {
        let trip = store.trip(&tenant, &TripId::parse(&format!("b{v}")).unwrap()).await.unwrap();
        let _ = prefix;
        if trip.is_none_or(|t| t.summary.point_count < (messages_per_vehicle() * POINTS_PER_MESSAGE) as u64) {
            return false;
        }
    }
    true
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The counter `name` from the Prometheus text at `http://{addr}/metrics`.
fn scrape(addr: &str, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `broker`: `Some(url)` of an external broker, or `None` for the embedded one.
/// One run: (ingest points/s, ceiling points/s, peak RSS MB).
async fn measure(
    name: &str,
    store_toml: &str,
    store: AnyStore,
    broker: Option<&str>,
    dir: &std::path::Path,
) -> (f64, f64, f64) {
    let prefix = format!("b{}", now_ms() % 1_000_000);
    // Every point in the past (1 s apart), within the late window.
    let t0 = now_ms() - (messages_per_vehicle() * POINTS_PER_MESSAGE) as i64 * 1000 - 3_600_000;
    let tenant = TenantId::parse("bench").unwrap();
    if !store.tenant_exists(&tenant).await.unwrap() {
        store.create_tenant(&tenant, "bench-key-hash").await.unwrap();
    }
    let vehicles: Vec<VehicleId> = (0..VEHICLES).map(|v| VehicleId::parse(&format!("{prefix}-{v}")).unwrap()).collect();
    store.add_vehicles(&tenant, &vehicles).await.unwrap();
    let ceiling = ceiling(&store, &prefix, t0).await;
    drop(store);

    let (mqtt_toml, publish_url) = match broker {
        Some(url) => (format!("url = \"{url}\"\nclient_id = \"{prefix}-ingest\""), url.to_owned()),
        None => {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            (format!("listen = \"127.0.0.1:{port}\""), format!("mqtt://127.0.0.1:{port}"))
        }
    };
    std::fs::write(
        dir.join("tripline.toml"),
        format!("{store_toml}\n[mqtt]\n{mqtt_toml}\n[http]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_tripline"))
            .args(["run", "--roles", "ingest"])
            .current_dir(dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (http_tx, http_rx) = std::sync::mpsc::channel::<String>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let pipe = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            if let Some(rest) = line.split("metrics on http://").nth(1) {
                let _ = http_tx.send(rest.split('/').next().unwrap_or_default().to_owned());
            }
            if line.contains("ingest ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    let http = http_rx.recv_timeout(Duration::from_secs(30)).expect("http address");
    ready_rx.recv_timeout(Duration::from_secs(30)).expect("ingest ready");
    let total = (VEHICLES * messages_per_vehicle()) as u64;
    let started = Instant::now();
    publish_fleet(&publish_url, &prefix, t0).await;
    let published = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while scrape(&http, "tripline_ingest_acks_total").unwrap_or(0) < total {
        assert!(Instant::now() < deadline, "ingest did not acknowledge every message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    // Peak resident memory of the ingest process (Linux: VmHWM).
    let peak_rss_mb = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches(" kB").trim().to_owned()))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0);
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let _ = child.0.wait();
    if broker.is_some() {
        tripline_tests::forget_mqtt_session(&publish_url, &format!("{prefix}-ingest"));
    }
    let store = match name {
        "embedded" => AnyStore::Embedded(
            EmbeddedStore::open(&EmbeddedConfig { path: dir.join("tripline-data/store"), retention_s: 86_400 * 30 })
                .unwrap(),
        ),
        _ => AnyStore::Scylla(ScyllaStore::connect(&scylla_config()).await.unwrap()),
    };
    assert!(all_counted(&store, &prefix).await, "every point stored");
    let points = (VEHICLES * messages_per_vehicle() * POINTS_PER_MESSAGE) as f64;
    let ingest = points / elapsed.as_secs_f64();
    println!(
        "  {name:<9} ingest {ingest:>8.0} points/s acknowledged ({:.1} s; fleet published in {:.1} s; peak RSS {peak_rss_mb:.0} MB) | store ceiling {ceiling:>8.0} points/s | ratio {:.2}",
        elapsed.as_secs_f64(),
        published.as_secs_f64(),
        ingest / ceiling
    );
    (ingest, ceiling, peak_rss_mb)
}

fn runs() -> usize {
    std::env::var("TRIPLINE_BENCH_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(3)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report(name: &str, results: &[(f64, f64, f64)]) {
    let ratios: Vec<f64> = results.iter().map(|(i, c, _)| i / c).collect();
    println!(
        "{name:<9} median of {}: ingest {:.0} points/s, ceiling {:.0} points/s, ratio {:.2} (runs: {}), peak RSS {:.0} MB",
        results.len(),
        median(results.iter().map(|r| r.0).collect()),
        median(results.iter().map(|r| r.1).collect()),
        median(ratios.clone()),
        ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
        results.iter().map(|r| r.2).fold(0.0, f64::max),
    );
}

fn scylla_config() -> ScyllaConfig {
    let nodes = std::env::var("TRIPLINE_TEST_CQL_NODES").unwrap();
    ScyllaConfig {
        nodes: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
        keyspace: "bench_ingest".to_owned(),
        retention_s: 86_400 * 30,
        ..ScyllaConfig::default()
    }
}

fn main() {
    let Ok(mqtt_url) = std::env::var("TRIPLINE_TEST_MQTT_URL") else {
        println!("set the services' environment first: eval \"$(scripts/services.sh env)\"");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        println!(
            "ingest: {VEHICLES} vehicles x {} messages x {POINTS_PER_MESSAGE} points over Mosquitto; ceiling: the same points straight into the store", messages_per_vehicle()
        );
        let dir = std::env::temp_dir().join(format!("tripline-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut results = Vec::new();
        for _ in 0..runs() {
            let store = AnyStore::Embedded(EmbeddedStore::open(&EmbeddedConfig { path: dir.join("tripline-data/store"), retention_s: 86_400 * 30 }).unwrap());
            results.push(measure("embedded", "store = \"embedded\"\ndata_dir = \"./tripline-data\"", store, None, &dir).await);
        }
        report("embedded", &results);
        if std::env::var("TRIPLINE_TEST_CQL_NODES").is_ok() && std::env::var("TRIPLINE_BENCH_ONLY").is_err() {
            let config = scylla_config();
            ScyllaStore::apply_schema(&config).await.unwrap();
            let nodes: Vec<String> = config.nodes.iter().map(|n| format!("\"{n}\"")).collect();
            let toml = format!("store = \"scylla\"\n[scylla]\nnodes = [{}]\nkeyspace = \"bench_ingest\"", nodes.join(", "));
            let mut results = Vec::new();
            for _ in 0..runs() {
                let store = AnyStore::Scylla(ScyllaStore::connect(&config).await.unwrap());
                results.push(measure("cassandra", &toml, store, Some(&mqtt_url), &dir).await);
            }
            report("cassandra", &results);
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
