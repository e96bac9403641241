//! Hostile clients against the real binary: each scenario prints its figure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tripline_store::RejectionStore;
use tripline_testkit::unique_name;

use tripline_testkit::harness::*;

/// `GET /healthz` on a fresh connection: whether it answered 200 within `wait`.
fn healthz(http: &str, wait: Duration) -> bool {
    http_get_within(http, "/healthz", None, wait).0 == 200
}

/// A data directory with tenant `acme` (its API key) and one registered vehicle (its secret),
/// configured for the embedded endpoint on a free port with two workers; `ingest` and `http`
/// are more lines of those sections.
struct OneVehicle {
    /// The run's folder, removed when dropped.
    _scratch: tempfile::TempDir,
    dir: std::path::PathBuf,
    port: u16,
    vehicle: String,
    secret: String,
    key: String,
}

fn one_vehicle(prefix: &str, ingest: &str, http: &str) -> OneVehicle {
    let scratch = tripline_testkit::scratch_dir(prefix);
    let dir = scratch.path().to_path_buf();
    let port = free_port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[ingest]\nworkers = 2\n{ingest}\
             [http]\nlisten = \"127.0.0.1:0\"\n{http}"
        ),
    )
    .unwrap();
    let key = ok_stdout(&dir, &["tenant", "create", "acme"]).trim().to_owned();
    let vehicle = unique_name(prefix);
    let secret = secret_of(&ok_stdout(&dir, &["fleet", "add", "--tenant", "acme", &vehicle]), &vehicle);
    OneVehicle { _scratch: scratch, dir, port, vehicle, secret, key }
}

#[test]
fn a_slow_loris_ties_up_the_http_listener_for_no_longer_than_the_header_timeout() {
    let scratch = tripline_testkit::scratch_dir("loris");
    let dir = scratch.path().to_path_buf();
    std::fs::write(
        dir.join("tripline.toml"),
        "[http]\nlisten = \"127.0.0.1:0\"\nmax_connections = 200\nheader_timeout_ms = 1000\n",
    )
    .unwrap();
    let running = start_roles_until(&dir, "api", "query API on");
    let http = running.http();
    assert!(healthz(&http, Duration::from_secs(5)), "answers before");

    // 2,000 connections that each send half a request line and then nothing.
    let sockets: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(&http).ok()?;
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: loris").ok()?;
            Some(stream)
        })
        .collect();
    let attacked = Instant::now();
    while !healthz(&http, Duration::from_secs(1)) {
        assert!(attacked.elapsed() < Duration::from_secs(10), "the listener stayed blocked by the slow clients");
        std::thread::sleep(Duration::from_millis(50));
    }
    let answered_after = attacked.elapsed();
    // The held connections were closed by the server (their headers never completed).
    let mut first = sockets.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let closed = first.read_to_end(&mut rest).is_ok();
    eprintln!("slow-loris of 2,000 sockets: /healthz answered again after {answered_after:?}");
    assert!(closed, "a slow client's connection is closed");
    assert!(answered_after < Duration::from_secs(3), "within the header timeout and a margin: {answered_after:?}");
    drop(running);
}

/// `GET path` with a bearer key on a fresh connection: the status code.
fn status_with_key(http: &str, path: &str, key: &str) -> u16 {
    http_get_with_key(http, path, Some(key)).0
}

#[test]
fn an_address_guessing_keys_is_answered_429_after_its_burst_of_failures() {
    let scratch = tripline_testkit::scratch_dir("guess");
    let dir = scratch.path().to_path_buf();
    std::fs::write(dir.join("tripline.toml"), "[http]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let running = start_roles_until(&dir, "api", "query API on");
    let http = running.http();
    let statuses: Vec<u16> = (0..25).map(|n| status_with_key(&http, "/v1/trips", &format!("guess-{n}"))).collect();
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    eprintln!("25 wrong keys from one address: {unauthorized} answered 401, then 429: {statuses:?}");
    assert_eq!(&statuses[..20], &[401; 20], "the burst of failures is answered");
    // Then 429 without a key lookup (a failure a second may come back meanwhile).
    assert!(statuses[20..].iter().all(|s| *s == 429 || *s == 401), "{statuses:?}");
    assert!(unauthorized <= 22 && statuses[24] == 429, "{statuses:?}");
    assert_eq!(status_with_key(&http, "/healthz", "anything"), 200, "health is not behind the key");
    drop(running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_megabyte_payloads_cost_16_kib_each_and_little_memory() {
    let OneVehicle { _scratch, dir, port, vehicle, secret, key: _ } = one_vehicle("junk", "", "");
    let mut running = start_roles(&dir, "ingest");
    let pid = running.child.id();
    let before = rss_mb(pid);

    let mut options = rumqttc::MqttOptions::new(unique_name("junk"), "127.0.0.1", port);
    options.set_credentials(&vehicle, &secret);
    options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 32);
    const JUNK: usize = 20;
    for n in 0..JUNK {
        let mut payload = vec![b'#'; 1_000_000];
        payload[0] = n as u8;
        client
            .publish(format!("vehicles/{vehicle}/telemetry"), rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let mut acked = 0;
    let mut peak = before;
    tokio::time::timeout(Duration::from_secs(60), async {
        while acked < JUNK {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
                peak = peak.max(rss_mb(pid));
            }
        }
    })
    .await
    .expect("every junk message acknowledged");
    let grew = peak - before;
    sigterm(&mut running);

    let store = tripline_store::EmbeddedStore::open(&tripline_store::EmbeddedConfig {
        path: dir.join("tripline-data/store"),
        retention_s: 86_400,
        ..tripline_store::EmbeddedConfig::default()
    })
    .unwrap();
    let tenant = tripline_model::TenantId::parse("acme").unwrap();
    let rejections = store.rejections(Some(&tenant), None, 100).await.unwrap().items;
    eprintln!("{JUNK} junk payloads of 1 MB: RSS {before:.0} -> peak {peak:.0} MB (+{grew:.0} MB)");
    assert_eq!(rejections.len(), JUNK, "each stored as a rejection");
    for rejection in &rejections {
        assert_eq!(rejection.reason.as_str(), "payload_too_large");
        assert!(rejection.payload.len() <= 16 * 1024, "kept 16 KiB at most");
        assert_eq!(rejection.payload_size, 1_000_000);
    }
    assert!(grew < 100.0, "RSS grew {grew:.0} MB");
}

/// PUBACK latency of messages published one at a time while other clients hammer `/v1/stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_concurrent_stats_do_not_delay_acknowledgements() {
    let OneVehicle { _scratch, dir, port, vehicle, secret, key } =
        one_vehicle("stats-load", "", "rate_per_s = 100000\nburst = 100000\n");
    let mut running = start_roles_until(&dir, "ingest,indexer,api", "query API on");
    let http = running.http();

    // Four clients asking for stats grouped by day, without pause.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let (http, key, stop) = (http.clone(), key.clone(), std::sync::Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if status_with_key(&http, "/v1/stats?group_by=day&tz=Europe/Berlin", &key) == 200 {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();

    let mut options = rumqttc::MqttOptions::new(unique_name("sv"), "127.0.0.1", port);
    options.set_credentials(&vehicle, &secret);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    let trip = tripline_model::TripId::parse("under-load").unwrap();
    let t0 = t0();
    let mut latencies = Vec::new();
    for m in 0..100 {
        let points = tripline_testkit::fleet_message_points(t0, 0, m, 10);
        let payload = tripline_model::encode_telemetry(Some(&trip), &points);
        let sent = Instant::now();
        client
            .publish(format!("vehicles/{vehicle}/telemetry"), rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                break;
            }
        }
        latencies.push(sent.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: usize = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    latencies.sort();
    let (p50, p99) = (latencies[49], latencies[98]);
    eprintln!("acknowledgements under {answered} concurrent stats requests: p50 {p50:?}, p99 {p99:?}");
    assert!(answered > 0, "the stats clients were answered");
    assert!(p99 < Duration::from_secs(1), "acknowledgement p99 {p99:?}");
    sigterm(&mut running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_on_the_mqtt_endpoint_does_not_keep_vehicles_out() {
    let OneVehicle { _scratch, dir, port, vehicle, secret, key: _ } = one_vehicle("mqtt-loris", "", "");
    let mut running = start_roles(&dir, "ingest");

    // 2,000 connections that send the first byte of a CONNECT and then nothing.
    let sockets: Vec<TcpStream> = (0..2_000)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.write_all(&[0x10]).ok()?;
            Some(stream)
        })
        .collect();
    let held = sockets.len();
    let mut options = rumqttc::MqttOptions::new(unique_name("lv"), "127.0.0.1", port);
    options.set_credentials(&vehicle, &secret);
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 8);
    let connecting = Instant::now();
    let connack = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
    let took = connecting.elapsed();
    eprintln!("MQTT endpoint with {held} slow sockets held open: a vehicle's CONNACK after {took:?}");
    assert!(matches!(connack, Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))), "{connack:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(sockets);
    sigterm(&mut running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_markers_of_random_trips_do_not_grow_memory_without_bound() {
    const MARKERS: usize = 200_000;
    let OneVehicle { _scratch, dir, port, vehicle, secret, key: _ } =
        one_vehicle("markers", "max_live_trips = 1000\n", "");
    let mut running = start_roles(&dir, "ingest");
    let pid = running.child.id();
    let before = rss_mb(pid);

    let mut options = rumqttc::MqttOptions::new(unique_name("mk"), "127.0.0.1", port);
    options.set_credentials(&vehicle, &secret);
    options.set_inflight(200);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 400);
    let topic = format!("vehicles/{vehicle}/trips");
    let now = tripline_model::time::now_ms();
    let publisher = tokio::spawn(async move {
        for n in 0..MARKERS {
            let marker = tripline_model::TripMarker {
                trip_id: tripline_model::TripId::parse(&format!("random-{n}")).unwrap(),
                event: tripline_model::MarkerEvent::End,
                ts_ms: now,
            };
            client
                .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, tripline_model::encode_marker(&marker))
                .await
                .unwrap();
        }
        client
    });
    let started = Instant::now();
    let (mut acked, mut peak) = (0, before);
    tokio::time::timeout(Duration::from_secs(300), async {
        while acked < MARKERS {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
                if acked % 10_000 == 0 {
                    peak = peak.max(rss_mb(pid));
                }
            }
        }
    })
    .await
    .expect("every marker acknowledged");
    let _client = publisher.await.unwrap();
    eprintln!("{MARKERS} end markers of random trips in {:?}: RSS {before:.0} -> peak {peak:.0} MB", started.elapsed());
    assert!(peak - before < 150.0, "RSS grew {:.0} MB", peak - before);
    sigterm(&mut running);
}
