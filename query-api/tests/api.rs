//! The API over a real embedded store and index, through HTTP: answers, errors, and the
//! authorization sweep (tenant A's key never reaches tenant B's data).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use serde_json::Value;
use tripline_index::TripIndex;
use tripline_model::{Point, RejectReason, TenantId, TripId, VehicleId};
use tripline_query_api::{ApiConfig, ApiState, StreamConfig, api_key_hash, router};
use tripline_store::{
    BatchWrite, Checkpoint, Derived, EmbeddedStore, PointStore, Registry, Rejection, RejectionStore, StoredPoint,
    TripKey, TripRecord, TripStore, WriteSet,
};

const T0: i64 = 1_795_600_800_000;

fn record(tenant: &str, vehicle: &str, id: &str, score: f64) -> TripRecord {
    tripline_testkit::trip_record(tenant, vehicle, id, T0, 1, score)
}

/// An HTTP client that hands every status back instead of failing on 4xx and 5xx; no request
/// (a live stream included) outlives 30 s.
fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `GET path` with an optional bearer key (and `Last-Event-ID`), as the blocking response.
fn request(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    last_event_id: Option<&str>,
) -> ureq::http::Response<ureq::Body> {
    let mut request = client().get(format!("http://{addr}{path}"));
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    request.call().unwrap()
}

/// `GET path` with an optional bearer key: (status, JSON body).
async fn get(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> (u16, Value) {
    let (path, key) = (path.to_owned(), key.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let mut response = request(addr, &path, key.as_deref(), None);
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

struct App {
    addr: std::net::SocketAddr,
    store: EmbeddedStore,
    _dir: tripline_store::TempDir,
}

async fn app() -> App {
    app_with(ApiConfig::default()).await
}

async fn app_with(config: ApiConfig) -> App {
    app_with_stream(config, StreamConfig::default()).await
}

async fn app_with_stream(config: ApiConfig, stream: StreamConfig) -> App {
    let (store, dir) = EmbeddedStore::for_test(Duration::from_secs(3600)).unwrap();
    for (tenant, key, vehicle) in [("acme", "key-a", "car-a"), ("globex", "key-b", "car-b")] {
        let tenant = TenantId::parse(tenant).unwrap();
        store.create_tenant(&tenant, &api_key_hash(key)).await.unwrap();
        store.add_vehicles(&tenant, &[VehicleId::parse(vehicle).unwrap()]).await.unwrap();
    }
    let trips = vec![
        record("acme", "car-a", "ta1", 90.0),
        record("acme", "car-a", "ta2", 70.0),
        record("globex", "car-b", "tb1", 50.0),
    ];
    store.upsert_trips(&trips).await.unwrap();
    for (vehicle, trip) in [("car-a", "ta1"), ("car-b", "tb1")] {
        let points: Vec<StoredPoint> = (0..3)
            .map(|i| StoredPoint {
                vehicle_id: VehicleId::parse(vehicle).unwrap(),
                trip_id: TripId::parse(trip).unwrap(),
                point: Point {
                    seq: Some(i),
                    ts_ms: T0 + i as i64 * 1000,
                    lat: 52.5,
                    lon: 13.4,
                    speed_mps: Some(10.0),
                    heading_deg: None,
                    accuracy_m: None,
                    alt_m: None,
                    ignition: None,
                    odometer_m: None,
                },
                derived: Derived { speed_mps: 10.0, ..Derived::default() },
            })
            .collect();
        store.write_points(&points).await.unwrap();
    }
    for (tenant, vehicle) in [("acme", "car-a"), ("globex", "car-b")] {
        let payload = format!("{{\"bad\": \"{tenant}\"").into_bytes();
        let topic = format!("vehicles/{vehicle}/telemetry");
        store
            .append_rejections(&[Rejection {
                id: Rejection::id_for(&topic, &payload, None),
                tenant: Some(TenantId::parse(tenant).unwrap()),
                vehicle_id: Some(VehicleId::parse(vehicle).unwrap()),
                received_at_ms: T0,
                reason: RejectReason::MalformedJson,
                detail: "unexpected end".to_owned(),
                topic,
                point_index: None,
                payload_size: payload.len() as u64,
                payload_sha256: String::new(),
                payload,
            }])
            .await
            .unwrap();
    }
    let index = TripIndex::in_memory().unwrap();
    let mut writer = index.writer().unwrap();
    for trip in &trips {
        index.upsert(&writer, trip).unwrap();
    }
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(ApiState::with_config(store.clone(), index, config).with_stream(stream));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { addr, store, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_answers_the_tenant_its_own_data() {
    let app = app().await;
    let (status, body) = get(app.addr, "/v1/trips?sort=-score", Some("key-a")).await;
    assert_eq!(status, 200);
    assert_eq!(body["total"], 2);
    assert_eq!(body["trips"][0]["trip_id"], "ta1");
    assert_eq!(body["next_cursor"], Value::Null);

    let (status, body) = get(app.addr, "/v1/trips?limit=1", Some("key-a")).await;
    assert_eq!(status, 200);
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = get(app.addr, &format!("/v1/trips?limit=1&cursor={cursor}"), Some("key-a")).await;
    assert_eq!(second["trips"].as_array().unwrap().len(), 1);
    assert_ne!(second["trips"][0]["trip_id"], body["trips"][0]["trip_id"]);

    let (status, detail) = get(app.addr, "/v1/trips/ta1", Some("key-a")).await;
    assert_eq!((status, detail["trip_id"].as_str(), detail["event_list"].is_array()), (200, Some("ta1"), true));
    let (status, points) = get(app.addr, "/v1/trips/ta1/points?limit=2", Some("key-a")).await;
    assert_eq!(status, 200);
    assert_eq!(points["points"].as_array().unwrap().len(), 2);
    assert_eq!(points["points"][0]["speed_kmh"], 36.0);
    assert!(points["next_cursor"].is_string());
    let (status, trips) = get(app.addr, "/v1/vehicles/car-a/trips", Some("key-a")).await;
    assert_eq!((status, trips["total"].as_u64()), (200, Some(2)));
    let (status, rejections) = get(app.addr, "/v1/rejections", Some("key-a")).await;
    assert_eq!(status, 200);
    assert_eq!(rejections["rejections"].as_array().unwrap().len(), 1);
    assert_eq!(rejections["rejections"][0]["reason"], "malformed_json");
    let (status, stats) = get(app.addr, "/v1/stats?group_by=vehicle_id", Some("key-a")).await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["buckets"],
        serde_json::json!([{"key": "car-a", "trips": 2, "distance_km": 2.0, "events": 0, "avg_score": 80.0}])
    );
    let (status, days) = get(app.addr, "/v1/stats?group_by=day&tz=Pacific/Kiritimati", Some("key-a")).await;
    assert_eq!((status, days["buckets"][0]["key"].as_str()), (200, Some("2026-11-26")));
    assert_eq!(get(app.addr, "/readyz", None).await.0, 200);
    let (status, doc) = get(app.addr, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/stats"]["get"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_ids_answer_404_and_missing_keys_401_on_every_route() {
    let app = app().await;
    // Tenant A's key, tenant B's ids: exactly like ids that do not exist.
    for path in [
        "/v1/trips/tb1",
        "/v1/trips/tb1/points",
        "/v1/vehicles/car-b/trips",
        "/v1/trips/nope",
        "/v1/vehicles/nope/trips",
    ] {
        let (status, body) = get(app.addr, path, Some("key-a")).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    for q in ["tb1", "car-b", "globex", "tenant:globex", "tenant%3Aglobex%20OR%20tenant%3Aacme", "*"] {
        let (_, body) = get(app.addr, &format!("/v1/trips?q={q}"), Some("key-a")).await;
        let ids: Vec<&str> = body["trips"].as_array().unwrap().iter().map(|t| t["trip_id"].as_str().unwrap()).collect();
        assert!(!ids.contains(&"tb1"), "q={q} leaked {ids:?}");
    }
    let (_, rejections) = get(app.addr, "/v1/rejections", Some("key-a")).await;
    assert!(!rejections.to_string().contains("globex"), "another tenant's rejection");
    // Another tenant's webhook deliveries.
    let item = tripline_store::OutboxItem {
        key: "k1".to_owned(),
        message_id: "msg_1".to_owned(),
        kind: tripline_model::NoticeKind::TripStarted,
        vehicle_id: VehicleId::parse("car-b").unwrap(),
        body: "{}".to_owned(),
        written_at_ms: T0,
        attempts: 1,
        next_at_ms: 0,
    };
    let attempt = tripline_store::DeliveryAttempt {
        id: tripline_store::DeliveryAttempt::id_for("wh_b", "msg_1", 1),
        tenant: TenantId::parse("globex").unwrap(),
        webhook_id: "wh_b".to_owned(),
        message_id: "msg_1".to_owned(),
        kind: item.kind,
        vehicle_id: item.vehicle_id.clone(),
        attempt: 1,
        at_ms: tripline_model::time::now_ms(),
        status: Some(200),
        error: None,
        latency_ms: 3,
        outcome: tripline_store::DeliveryOutcome::Delivered,
        next_at_ms: None,
    };
    tripline_store::WebhookStore::settle(&app.store, "wh_b", &[(item, attempt)]).await.unwrap();
    let (status, mine) = get(app.addr, "/v1/webhooks/deliveries", Some("key-a")).await;
    assert_eq!((status, mine["deliveries"].as_array().map(Vec::len)), (200, Some(0)), "{mine}");
    let (_, theirs) = get(app.addr, "/v1/webhooks/deliveries", Some("key-b")).await;
    assert_eq!(theirs["deliveries"][0]["outcome"], "delivered");
    assert_eq!(theirs["deliveries"][0]["type"], "trip.started");
    // No key, a wrong key, a malformed header: 401 everywhere but readiness.
    let (_, stats) = get(app.addr, "/v1/stats?group_by=vehicle_id", Some("key-a")).await;
    assert!(!stats.to_string().contains("car-b"), "another tenant's vehicle in stats");
    for path in [
        "/v1/trips",
        "/v1/trips/ta1",
        "/v1/trips/ta1/points",
        "/v1/vehicles/car-a/trips",
        "/v1/rejections",
        "/v1/stats?group_by=day",
        "/v1/stream",
        "/v1/webhooks/deliveries",
    ] {
        for key in [None, Some("wrong-key")] {
            let (status, body) = get(app.addr, path, key).await;
            assert_eq!(status, 401, "{path} with {key:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_answer_400_naming_the_parameter() {
    let app = app().await;
    for (path, name) in [
        ("/v1/trips?limit=5000", "limit"),
        ("/v1/trips?colour=red", "colour"),
        ("/v1/trips?from=yesterday", "from"),
        ("/v1/trips?cursor=zzz", "cursor"),
        ("/v1/trips/ta1/points?limit=0", "limit"),
        ("/v1/rejections?cursor=zzz", "cursor"),
        ("/v1/vehicles/car-a/trips?vehicle_id=car-b", "vehicle_id"),
        ("/v1/stream?type=trip.deleted", "type"),
        ("/v1/stream?event=crash", "event"),
        ("/v1/stream?vehicle_id=car%20a", "vehicle_id"),
        ("/v1/stream?limit=5", "limit"),
    ] {
        let (status, body) = get(app.addr, path, Some("key-a")).await;
        assert_eq!(status, 400, "{path}");
        assert!(body["error"]["message"].as_str().unwrap().contains(name), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_gets_429() {
    let app = app_with(ApiConfig { rate_per_s: 0.5, burst: 3.0, ..ApiConfig::default() }).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(app.addr, "/v1/trips", Some("key-a")).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let (status, body) = get(app.addr, "/v1/trips", Some("key-a")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(get(app.addr, "/v1/trips", Some("key-b")).await.0, 200, "another key is not limited");
}

/// Opens `GET /v1/stream{query}` (after `last_event_id`) and reads until `count` events arrived:
/// (event, id, data) of each.
async fn stream_events(
    addr: std::net::SocketAddr,
    query: &str,
    key: &str,
    last_event_id: Option<&str>,
    count: usize,
) -> Vec<(String, String, Value)> {
    let events = try_stream_events(addr, query, key, last_event_id, count).await;
    events.unwrap_or_else(|status| panic!("the stream answered {status}"))
}

/// [`stream_events`], or the status of a stream refused.
async fn try_stream_events(
    addr: std::net::SocketAddr,
    query: &str,
    key: &str,
    last_event_id: Option<&str>,
    count: usize,
) -> Result<Vec<(String, String, Value)>, u16> {
    let (path, key, resume) = (format!("/v1/stream{query}"), key.to_owned(), last_event_id.map(str::to_owned));
    let read = tokio::task::spawn_blocking(move || {
        let response = request(addr, &path, Some(&key), resume.as_deref());
        if response.status().as_u16() != 200 {
            return Err(response.status().as_u16());
        }
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(response.into_body().into_reader()));
        let (mut events, mut event, mut id, mut open) = (Vec::new(), String::new(), String::new(), false);
        while !open || events.len() < count {
            let line = lines.next().expect("the stream ended").unwrap();
            if line.starts_with(": stream open") {
                open = true;
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                events.push((event.clone(), id.clone(), serde_json::from_str(v).unwrap()));
            }
        }
        Ok(events)
    });
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("{count} events within 10 s"))
        .unwrap()
}

/// Writes trip `id` of `vehicle` of `tenant` with `notices`, as the workers do.
async fn write_told(
    store: &EmbeddedStore,
    tenant: &str,
    vehicle: &str,
    id: &str,
    notices: Vec<tripline_model::Notice>,
) {
    let trip = record(tenant, vehicle, id, 80.0);
    let set = WriteSet { notices: [(TripKey::of(&trip), notices)].into(), trips: vec![trip], ..WriteSet::default() };
    store.write_batch(&set).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_tells_the_tenant_its_own_messages_and_resumes_after_an_id() {
    use tripline_model::Notice;
    let app = app().await;
    // Written before anyone listens: a stream from the feed's start (an empty position) has them.
    write_told(&app.store, "acme", "car-a", "s1", vec![Notice::Started]).await;
    write_told(&app.store, "globex", "car-b", "g1", vec![Notice::Started, Notice::Completed]).await;
    write_told(&app.store, "acme", "car-a", "s1", vec![Notice::Updated, Notice::Completed]).await;
    let all = stream_events(app.addr, "", "key-a", Some("AAAA"), 3).await;
    let kinds: Vec<&str> = all.iter().map(|(event, _, _)| event.as_str()).collect();
    assert_eq!(kinds, ["trip.started", "trip.updated", "trip.completed"]);
    assert!(all.iter().all(|(event, _, data)| data["type"] == event.as_str() && data["data"]["vehicle_id"] == "car-a"));
    // Resumed after the second: the third only (one entry sent in part), and then what comes next.
    let resumed = {
        let addr = app.addr;
        let after = all[1].1.clone();
        tokio::spawn(async move { stream_events(addr, "", "key-a", Some(&after), 2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_told(&app.store, "globex", "car-b", "g2", vec![Notice::Started]).await;
    write_told(&app.store, "acme", "car-a", "s2", vec![Notice::Started]).await;
    let resumed = resumed.await.unwrap();
    assert_eq!(resumed[0].2, all[2].2);
    assert_eq!((resumed[1].0.as_str(), resumed[1].2["data"]["trip_id"].as_str()), ("trip.started", Some("s2")));
    // Filters: only the types asked for.
    let completed = stream_events(app.addr, "?type=trip.completed", "key-b", Some("AAAA"), 1).await;
    assert_eq!(completed[0].2["data"]["trip_id"], "g1");
    // An id this API never issued: stream.reset, then the stream from now.
    let reset = stream_events(app.addr, "", "key-a", Some("not-an-id"), 1).await;
    assert_eq!((reset[0].0.as_str(), reset[0].2["reason"].as_str()), ("stream.reset", Some("unknown_id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holds_at_most_its_share_of_streams() {
    let stream = StreamConfig { max_per_key: 1, ..StreamConfig::default() };
    let app = app_with_stream(ApiConfig::default(), stream).await;
    write_told(&app.store, "acme", "car-a", "s1", vec![tripline_model::Notice::Started]).await;
    let open = {
        let addr = app.addr;
        tokio::task::spawn_blocking(move || {
            let response = request(addr, "/v1/stream", Some("key-a"), None);
            assert_eq!(response.status().as_u16(), 200);
            response
        })
    };
    let held = open.await.unwrap();
    let (status, body) = get(app.addr, "/v1/stream", Some("key-a")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("too_many_streams")));
    assert_eq!(stream_events(app.addr, "", "key-b", Some("AAAA"), 0).await.len(), 0, "another key may");
    drop(held);
    // The closed stream's share comes back once the API has seen its connection go: until then
    // the key is still refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events =
            tokio::time::timeout(Duration::from_secs(2), try_stream_events(app.addr, "", "key-a", Some("AAAA"), 1))
                .await;
        match events {
            Ok(Ok(events)) => {
                assert_eq!(events[0].0, "trip.started");
                break;
            }
            Ok(Err(status)) => assert_eq!(status, 429, "refused only while the share is held"),
            Err(_) => {}
        }
        assert!(std::time::Instant::now() < deadline, "the share came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
