//! `tripline run --roles ingest` on embedded defaults (embedded MQTT endpoint, embedded store):
//! every message acknowledged to a vehicle is stored after a graceful stop that comes right after
//! the last publish, and after `kill -9` in the middle of a fleet's publishing; a re-publish
//! changes nothing, and metrics are served. Vehicles connect with their secrets: anonymous,
//! wrong, revoked and rotated-away secrets are refused, and a vehicle publishing to another's
//! topic lands nothing there.

use std::path::Path;

use tripline_model::{RejectReason, TenantId, TripId, VehicleId};
use tripline_store::{EmbeddedConfig, EmbeddedStore, Registry, RejectionStore, TripStore};
use tripline_testkit::unique_name;

use tripline_testkit::harness::*;

/// The secret the test fleets share (hashed once: each hash takes tens of milliseconds).
const FLEET_SECRET: &str = "fleet-secret";

/// Registers `vehicles` to a new tenant `acme` (API key `acme-key`) with [`FLEET_SECRET`].
async fn register_fleet(dir: &Path, vehicles: &[VehicleId]) {
    let store = open_store(dir);
    let tenant = TenantId::parse("acme").unwrap();
    store.create_tenant(&tenant, &tripline_query_api::api_key_hash("acme-key")).await.unwrap();
    store.add_vehicles(&tenant, vehicles).await.unwrap();
    let hash = tripline_ingest::credentials::hash_secret(FLEET_SECRET).unwrap();
    let secrets: Vec<_> = vehicles.iter().map(|v| (v.clone(), Some(hash.clone()))).collect();
    store.set_vehicle_secrets(&secrets).await.unwrap();
}

/// Publishes each vehicle's messages on its own connection, with [`FLEET_SECRET`]; returns once
/// all are acknowledged.
async fn publish_as_vehicles(url: &str, messages: Vec<(String, Vec<u8>)>) {
    let mut by_topic: std::collections::BTreeMap<String, Vec<Vec<u8>>> = std::collections::BTreeMap::new();
    for (topic, payload) in messages {
        by_topic.entry(topic).or_default().push(payload);
    }
    let tasks: Vec<_> = by_topic
        .into_iter()
        .map(|(topic, payloads)| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let vehicle = topic.split('/').nth(1).unwrap().to_owned();
                let (client, mut eventloop) = vehicle_client(&url, &vehicle, FLEET_SECRET);
                let n = payloads.len();
                let sender = tokio::spawn(async move {
                    for payload in payloads {
                        client.publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
                    }
                    client
                });
                let mut acked = 0;
                while acked < n {
                    if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                        acked += 1;
                    }
                }
                sender.await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        tokio::time::timeout(std::time::Duration::from_secs(60), task).await.unwrap().unwrap();
    }
}

fn vehicle_client(url: &str, vehicle: &str, secret: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (host, port) = tripline_testkit::mqtt_host_port(url);
    let mut options = rumqttc::MqttOptions::new(unique_name(vehicle), host, port);
    options.set_credentials(vehicle, secret);
    options.set_inflight(20);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    // A loaded test machine may take a while to check many vehicles' secrets at once.
    eventloop.network_options.set_connection_timeout(30);
    (client, eventloop)
}

fn open_store(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(&EmbeddedConfig {
        path: dir.join("tripline-data/store"),
        retention_s: 86_400 * 30,
        ..EmbeddedConfig::default()
    })
    .unwrap()
}

fn tripline(args: &[&str], dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tripline")).args(args).current_dir(dir).output().unwrap()
}

/// A plain HTTP/1.1 GET: status code and body.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_with_key(addr, path, None)
}

async fn trips_complete(dir: &Path, prefix: &str) -> Vec<u64> {
    let store = open_store(dir);
    let tenant = TenantId::parse("acme").unwrap();
    let mut counts = Vec::new();
    for v in 0..VEHICLES {
        let vehicle = VehicleId::parse(&format!("{prefix}-{v}")).unwrap();
        let trip = store.trip_of_vehicle(&tenant, &vehicle, &TripId::parse(&format!("trip-{v}")).unwrap()).await;
        counts.push(trip.unwrap().map_or(0, |t| t.summary.point_count));
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_endpoint_and_store_keep_everything_acknowledged_through_a_graceful_stop() {
    let scratch = tripline_testkit::scratch_dir("embedded");
    let dir = scratch.path().to_path_buf();
    let prefix = unique_name("e");
    let vehicles: Vec<VehicleId> = (0..VEHICLES).map(|v| VehicleId::parse(&format!("{prefix}-{v}")).unwrap()).collect();
    register_fleet(&dir, &vehicles).await;
    let port = free_port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[ingest]\nworkers = 2\ndrain_s = 30\n[http]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let t0 = t0();
    let all = messages(&prefix, t0, 0..MESSAGES);

    let mut running = start_roles(&dir, "ingest,indexer");
    let http = running.http();
    assert_eq!(http_get(&http, "/healthz").0, 200);
    publish_as_vehicles(&url, all.clone()).await;
    // Stop right away: what was acknowledged to the vehicles must still be stored.
    sigterm(&mut running);
    let expected = vec![(MESSAGES * POINTS) as u64; VEHICLES];
    assert_eq!(trips_complete(&dir, &prefix).await, expected, "every acknowledged point stored");
    // ... and indexed: the indexer stopped after ingest, with everything ingest wrote.
    let home = tripline_index::IndexHome::open(&dir.join("tripline-data/index")).unwrap();
    let index = tripline_index::LiveIndex::open(home).unwrap().get();
    let page = index
        .search(&TenantId::parse("acme").unwrap(), &tripline_index::TripQuery { limit: 1000, ..Default::default() })
        .unwrap();
    assert_eq!(page.total, VEHICLES as u64);
    assert!(page.trips.iter().all(|t| t.point_count == (MESSAGES * POINTS) as u64), "the last state of each trip");

    // Everything again, now with the API: nothing changes. Metrics count what this run received.
    let mut running = start_roles(&dir, "ingest,indexer,api");
    let http = running.http();
    publish_as_vehicles(&url, all.clone()).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let metrics = loop {
        let (status, body) = http_get(&http, "/metrics");
        assert_eq!(status, 200);
        if body.contains(&format!("tripline_ingest_acks_total {}", all.len())) {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "acknowledgements counted: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(metrics.contains(&format!("tripline_ingest_messages_total {}", all.len())), "{metrics}");
    assert!(metrics.contains(&format!("tripline_ingest_points_total {}", all.len() * POINTS)), "{metrics}");
    assert!(metrics.contains("tripline_ingest_ack_latency_seconds"), "{metrics}");
    let (status, body) = http_get_with_key(&http, "/v1/trips?limit=1000", Some("acme-key"));
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], VEHICLES as u64);
    assert!(page["trips"].as_array().unwrap().iter().all(|t| t["point_count"] == (MESSAGES * POINTS) as u64));
    assert_eq!(http_get(&http, "/v1/trips").0, 401);

    // While the process holds the embedded store, administration goes through it.
    let created = tripline(&["tenant", "create", "globex"], &dir);
    assert_eq!(created.status.code(), Some(0), "{}", String::from_utf8_lossy(&created.stderr));
    let globex_key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let added = tripline(&["fleet", "add", "--tenant", "globex", "g-car-1"], &dir);
    assert_eq!(added.status.code(), Some(0), "{}", String::from_utf8_lossy(&added.stderr));
    let taken = tripline(&["fleet", "add", "--tenant", "globex", &format!("{prefix}-0")], &dir);
    assert_eq!(taken.status.code(), Some(1), "a vehicle of acme stays acme's");
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already belongs"));
    let (status, body) = http_get_with_key(&http, "/v1/trips", Some(&globex_key));
    assert_eq!((status, serde_json::from_str::<serde_json::Value>(&body).unwrap()["total"].clone()), (200, 0.into()));
    let rebuilt = tripline(&["reindex"], &dir);
    let stderr = String::from_utf8_lossy(&rebuilt.stderr);
    assert_eq!(rebuilt.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(&format!("index rebuilt: {VEHICLES} trips")) && stderr.contains("gen-2"), "{stderr}");
    let (status, body) = http_get_with_key(&http, "/v1/trips?limit=1000", Some("acme-key"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["total"], VEHICLES as u64);
    sigterm(&mut running);
    assert!(!dir.join("tripline-data/admin.json").exists(), "a stopped process unpublishes itself");
    // Without a running process, the commands open the store themselves.
    assert_eq!(tripline(&["fleet", "add", "--tenant", "globex", "g-car-2"], &dir).status.code(), Some(0));
    assert_eq!(trips_complete(&dir, &prefix).await, expected, "a re-publish changes nothing");
}

/// Publishes vehicle `v`'s messages not yet in `acked` on one connection until all are
/// acknowledged or the connection breaks; records each PUBACK in `acked` (the vehicle's ledger).
async fn publish_unacknowledged(url: String, prefix: String, t0: i64, v: usize, acked: Ledger) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let todo: Vec<usize> = (0..KILL_MESSAGES).filter(|m| !acked.lock().unwrap().contains(m)).collect();
    if todo.is_empty() {
        return;
    }
    let (host, port) = tripline_testkit::mqtt_host_port(&url);
    let mut options = MqttOptions::new(format!("{prefix}-{v}"), host, port);
    options.set_credentials(format!("{prefix}-{v}"), FLEET_SECRET);
    options.set_clean_session(false);
    options.set_inflight(10);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let topic = format!("vehicles/{prefix}-{v}/telemetry");
    let trip = TripId::parse(&format!("trip-{v}")).unwrap();
    let payloads: Vec<Vec<u8>> = todo
        .iter()
        .map(|&m| {
            tripline_model::encode_telemetry(
                Some(&trip),
                &tripline_testkit::fleet_message_points(t0, v, m, KILL_POINTS),
            )
        })
        .collect();
    let sender = tokio::spawn(async move {
        for payload in payloads {
            if client.publish(&topic, QoS::AtLeastOnce, false, payload).await.is_err() {
                break;
            }
        }
    });
    // rumqttc numbers publishes in the order they go out: packet id → message.
    let mut by_pkid = std::collections::HashMap::new();
    let mut sent = todo.iter();
    let mut done = 0;
    while done < todo.len() {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(&m) = sent.next() {
                    by_pkid.insert(pkid, m);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let m = by_pkid[&ack.pkid];
                acked.lock().unwrap().insert(m);
                done += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    sender.abort();
}

/// The messages of one vehicle its broker acknowledged.
type Ledger = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<usize>>>;

const KILL_VEHICLES: usize = 20;
const KILL_MESSAGES: usize = 150;
const KILL_POINTS: usize = 5;

/// The point numbers (`seq`) stored for each vehicle, read from the store of a stopped process.
async fn stored_seqs(dir: &Path, prefix: &str, t0: i64) -> Vec<Vec<u64>> {
    use tripline_store::PointStore;
    let store = open_store(dir);
    let mut out = Vec::new();
    for v in 0..KILL_VEHICLES {
        let vehicle = VehicleId::parse(&format!("{prefix}-{v}")).unwrap();
        let points = store.vehicle_points(&vehicle, t0 - 60_000, t0 + 86_400_000).await.unwrap();
        out.push(points.iter().map(|p| p.point.seq.unwrap()).collect());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_embedded_set_up_loses_no_acknowledged_point() {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    let scratch = tripline_testkit::scratch_dir("kill9");

    let dir = scratch.path().to_path_buf();
    let prefix = unique_name("k");
    let vehicles: Vec<VehicleId> =
        (0..KILL_VEHICLES).map(|v| VehicleId::parse(&format!("{prefix}-{v}")).unwrap()).collect();
    register_fleet(&dir, &vehicles).await;
    let port = free_port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[ingest]\nworkers = 2\n[http]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let t0 = t0();
    let ledgers: Vec<Ledger> = (0..KILL_VEHICLES).map(|_| Ledger::default()).collect();
    let acked_total = |ledgers: &[Ledger]| ledgers.iter().map(|l| l.lock().unwrap().len()).sum::<usize>();

    for round in 0..4 {
        let running = start_roles(&dir, "ingest");
        let before = acked_total(&ledgers);
        let publishers: Vec<_> = (0..KILL_VEHICLES)
            .map(|v| tokio::spawn(publish_unacknowledged(url.clone(), prefix.clone(), t0, v, Arc::clone(&ledgers[v]))))
            .collect();
        // Kill while the fleet publishes: once some more messages were acknowledged.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while acked_total(&ledgers) < before + 200 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        drop(running); // SIGKILL
        for publisher in publishers {
            publisher.await.unwrap();
        }
        let stored = stored_seqs(&dir, &prefix, t0).await;
        for (v, ledger) in ledgers.iter().enumerate() {
            let seqs: BTreeSet<u64> = stored[v].iter().copied().collect();
            for &m in ledger.lock().unwrap().iter() {
                for i in 0..KILL_POINTS {
                    let seq = (m * KILL_POINTS + i) as u64;
                    assert!(
                        seqs.contains(&seq),
                        "round {round}: vehicle {v} message {m} was acknowledged, point {seq} is missing"
                    );
                }
            }
        }
        assert!(acked_total(&ledgers) > before, "round {round}: the fleet made progress");
    }
    // A last run without a kill: every message goes through, and each point is stored once.
    let mut running = start_roles(&dir, "ingest");
    let publishers: Vec<_> = (0..KILL_VEHICLES)
        .map(|v| tokio::spawn(publish_unacknowledged(url.clone(), prefix.clone(), t0, v, Arc::clone(&ledgers[v]))))
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    assert_eq!(acked_total(&ledgers), KILL_VEHICLES * KILL_MESSAGES, "every message acknowledged in the end");
    sigterm(&mut running);
    let all: Vec<u64> = (0..(KILL_MESSAGES * KILL_POINTS) as u64).collect();
    for (v, seqs) in stored_seqs(&dir, &prefix, t0).await.into_iter().enumerate() {
        assert_eq!(seqs, all, "vehicle {v}: every point exactly once, in order");
    }
}

/// Connects as `vehicle`: `Ok(client, eventloop)` once accepted, `Err` with the refusal.
async fn connect(
    url: &str,
    vehicle: &str,
    secret: Option<&str>,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), rumqttc::ConnectionError> {
    let (client, mut eventloop) = match secret {
        Some(secret) => vehicle_client(url, vehicle, secret),
        None => {
            let (host, port) = tripline_testkit::mqtt_host_port(url);
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new(unique_name("anon"), host, port), 8)
        }
    };
    match eventloop.poll().await {
        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => Ok((client, eventloop)),
        Ok(other) => panic!("expected a CONNACK, got {other:?}"),
        Err(error) => Err(error),
    }
}

fn refused(result: Result<(rumqttc::AsyncClient, rumqttc::EventLoop), rumqttc::ConnectionError>) -> bool {
    matches!(result, Err(rumqttc::ConnectionError::ConnectionRefused(rumqttc::ConnectReturnCode::BadUserNamePassword)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_vehicle_with_its_secret_publishes_and_only_as_itself() {
    let scratch = tripline_testkit::scratch_dir("auth");
    let dir = scratch.path().to_path_buf();
    let port = free_port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[ingest]\nworkers = 2\n[http]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let (a, b) = (unique_name("a"), unique_name("b"));
    // A data directory readable by others beforehand is made private.
    std::fs::create_dir_all(dir.join("tripline-data")).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(dir.join("tripline-data"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok_stdout(&dir, &["tenant", "create", "acme"]);
    let issued = ok_stdout(&dir, &["fleet", "add", "--tenant", "acme", &a, &b]);
    let (secret_a, secret_b) = (secret_of(&issued, &a), secret_of(&issued, &b));
    assert_eq!(secret_a.len(), 64);
    let again = ok_stdout(&dir, &["fleet", "add", "--tenant", "acme", &a]);
    assert_eq!(again, "vehicle_id,secret\n", "adding a vehicle again keeps its secret");
    let mut running = start_roles(&dir, "ingest");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("tripline-data")), 0o700, "data_dir is private");
        assert_eq!(mode(&dir.join("tripline-data/admin.json")), 0o600, "the admin token is the owner's only");
    }

    assert!(refused(connect(&url, &a, None).await), "anonymous");
    assert!(refused(connect(&url, &a, Some("guess")).await), "wrong secret");
    assert!(refused(connect(&url, &a, Some(&secret_b)).await), "another vehicle's secret");
    assert!(refused(connect(&url, "nobody-registered", Some(&secret_a)).await), "unknown vehicle");

    // A publishes to B's topic: the connection is closed (3.1.1), B gets nothing, and the message
    // is stored as A's `not_authorized` rejection.
    let (client, mut eventloop) = connect(&url, &a, Some(&secret_a)).await.unwrap();
    let t0 = t0();
    let trip = TripId::parse("t-b").unwrap();
    let payload = tripline_model::encode_telemetry(Some(&trip), &tripline_testkit::fleet_message_points(t0, 0, 0, 5));
    client.publish(format!("vehicles/{b}/telemetry"), rumqttc::QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Err(_) => return true,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return false,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(closed, "no acknowledgement for a publish to another vehicle's topic");
    // B publishes as itself: that lands.
    let (client, mut eventloop) = connect(&url, &b, Some(&secret_b)).await.unwrap();
    let own = tripline_model::encode_telemetry(
        Some(&TripId::parse("t-own").unwrap()),
        &tripline_testkit::fleet_message_points(t0, 1, 0, 5),
    );
    client.publish(format!("vehicles/{b}/telemetry"), rumqttc::QoS::AtLeastOnce, false, own).await.unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }

    // Rotated: the old secret stops working, the new one works; revoked: nothing works.
    let rotated = ok_stdout(&dir, &["fleet", "rotate-secret", &a]);
    let new_a = secret_of(&rotated, &a);
    assert!(refused(connect(&url, &a, Some(&secret_a)).await), "the old secret after rotation");
    assert!(connect(&url, &a, Some(&new_a)).await.is_ok(), "the new secret");
    ok_stdout(&dir, &["fleet", "revoke", &a]);
    assert!(refused(connect(&url, &a, Some(&new_a)).await), "a revoked vehicle");
    sigterm(&mut running);

    let store = open_store(&dir);
    let tenant = TenantId::parse("acme").unwrap();
    let b_id = VehicleId::parse(&b).unwrap();
    assert!(
        store.trip_of_vehicle(&tenant, &b_id, &trip).await.unwrap().is_none(),
        "A's publish to B's topic landed nothing"
    );
    let landed = store.trip_of_vehicle(&tenant, &b_id, &TripId::parse("t-own").unwrap()).await.unwrap();
    assert_eq!(landed.map(|t| t.summary.point_count), Some(5), "B's own publish landed");
    let rejections = store.rejections(Some(&tenant), None, 100).await.unwrap().items;
    let refusal = rejections.iter().find(|r| r.reason == RejectReason::NotAuthorized).expect("a stored refusal");
    assert_eq!(refusal.vehicle_id.as_ref().map(|v| v.as_str()), Some(a.as_str()), "stored as the publisher's");
    assert_eq!(refusal.topic, format!("vehicles/{b}/telemetry"));
    assert_eq!(refusal.payload, payload, "with its bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_without_its_broker_turns_not_ready_and_exits_non_zero() {
    let scratch = tripline_testkit::scratch_dir("gone");
    let dir = scratch.path().to_path_buf();
    // A port nothing listens on: the broker is gone for good.
    let port = free_port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\n[ingest]\ngive_up_s = 3\n[http]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let mut running = start_roles_until(&dir, "ingest,api", "query API on");
    let (status, body) = http_get(&running.http(), "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not connected"), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let code = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(std::time::Instant::now() < deadline, "the process gave up");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, Some(1), "a non-zero exit");
    assert!(
        running.stderr_contains("not connected to the MQTT broker for 3 s"),
        "{:?}",
        running.stderr.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_channel_has_its_own_listener_and_keys_rotate_at_once() {
    let scratch = tripline_testkit::scratch_dir("keys");
    let dir = scratch.path().to_path_buf();
    let port = free_port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[http]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    let key = ok_stdout(&dir, &["tenant", "create", "acme"]).trim().to_owned();
    let running = start_roles(&dir, "ingest,indexer,api");
    let http = running.http();
    let admin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tripline-data/admin.json")).unwrap()).unwrap();
    let admin_http = admin["http"].as_str().unwrap().to_owned();
    assert_ne!(admin_http, http, "not the public listener");
    assert!(admin_http.starts_with("127.0.0.1:"), "{admin_http}");
    assert_eq!(http_get(&http, "/admin/v1/reindex").0, 404, "no admin routes on the public listener");
    assert_eq!(http_get(&admin_http, "/admin/v1/reindex").0, 401, "no token, no answer");
    let (status, body) = http_get(&http, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("trips"), "no tenant data: {body}");

    // A rotated key: the old one answers 401 at once (the API had it cached), the new one works.
    assert_eq!(http_get_with_key(&http, "/v1/trips", Some(&key)).0, 200);
    let new_key = ok_stdout(&dir, &["tenant", "rotate-key", "acme"]).trim().to_owned();
    assert_eq!(http_get_with_key(&http, "/v1/trips", Some(&key)).0, 401);
    assert_eq!(http_get_with_key(&http, "/v1/trips", Some(&new_key)).0, 200);
    ok_stdout(&dir, &["tenant", "revoke-key", "acme"]);
    assert_eq!(http_get_with_key(&http, "/v1/trips", Some(&new_key)).0, 401);
    drop(running);
}
