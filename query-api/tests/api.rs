//! The API over a real embedded store and index, through HTTP: answers, errors, and the
//! authorization sweep (tenant A's key never reaches tenant B's data).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tripline_index::TripIndex;
use tripline_model::{Point, RejectReason, TenantId, TripId, VehicleId};
use tripline_query_api::{ApiConfig, ApiState, api_key_hash, router};
use tripline_store::{
    Checkpoint, Derived, EmbeddedStore, PointStore, Registry, Rejection, RejectionStore, StoredPoint, TripRecord,
    TripStore,
};

const T0: i64 = 1_795_600_800_000;

fn record(tenant: &str, vehicle: &str, id: &str, score: f64) -> TripRecord {
    tripline_tests::trip_record(tenant, vehicle, id, T0, 1, score)
}

/// `GET path` with an optional bearer key: (status, JSON body).
async fn get(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

struct App {
    addr: std::net::SocketAddr,
    _dir: tripline_store::TempDir,
}

async fn app() -> App {
    app_with(ApiConfig::default()).await
}

async fn app_with(config: ApiConfig) -> App {
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
    let app = router(ApiState::with_config(store, index, config));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    App { addr, _dir: dir }
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
