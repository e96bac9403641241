//! Webhooks through the real binary: a real HTTP receiver (axum on port 0) that verifies every
//! signature answers 500 for its first 30 s, then 200; tripline is killed with SIGKILL while it
//! retries and started again. Every message of the tenant's trips arrives (each start,
//! completion and event), none twice under different ids, each vehicle's in the order written;
//! another tenant's receiver and delivery list hold none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use tripline_testkit::harness::{free_port, http_get_with_key, ok_stdout, start_until};

/// How long the receiver answers 500.
const FAILING: Duration = Duration::from_secs(30);

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    id: String,
    timestamp_s: i64,
    signature: String,
    body: Value,
    raw: Vec<u8>,
    answered: u16,
}

#[derive(Clone)]
struct Receiver {
    fail_until: Instant,
    received: Arc<Mutex<Vec<Received>>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let answered = if Instant::now() < receiver.fail_until { 500 } else { 200 };
    receiver.received.lock().unwrap().push(Received {
        path,
        id: header("webhook-id"),
        timestamp_s: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver { fail_until: Instant::now() + FAILING, received: Arc::default() };
    let app = axum::Router::new().route("/hooks/:path", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, receiver)
}

fn get(http: &str, path: &str, key: &str) -> Value {
    let (status, body) = http_get_with_key(http, path, Some(key));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// What the tenant's trips tell: (type, trip, event kind and time) for every start, completion
/// and event.
fn expected(http: &str, key: &str) -> BTreeSet<(String, String, String)> {
    let mut want = BTreeSet::new();
    for trip in get(http, "/v1/trips?limit=1000", key)["trips"].as_array().unwrap() {
        let id = trip["trip_id"].as_str().unwrap().to_owned();
        want.insert(("trip.started".to_owned(), id.clone(), String::new()));
        if trip["status"] == "completed" {
            want.insert(("trip.completed".to_owned(), id.clone(), String::new()));
        }
        for event in get(http, &format!("/v1/trips/{id}"), key)["event_list"].as_array().unwrap() {
            let what = format!("{}@{}", event["kind"].as_str().unwrap(), event["ts"].as_str().unwrap());
            want.insert(("event.detected".to_owned(), id.clone(), what));
        }
    }
    want
}

/// What a message is about, as [`expected`] names it (`trip.updated`: its summary's time).
fn about(body: &Value) -> (String, String, String) {
    let kind = body["type"].as_str().unwrap().to_owned();
    let data = &body["data"];
    let what = match kind.as_str() {
        "event.detected" => format!("{}@{}", data["kind"].as_str().unwrap(), data["ts"].as_str().unwrap()),
        "trip.updated" => data["updated_at"].as_str().unwrap().to_owned(),
        _ => String::new(),
    };
    (kind, data["trip_id"].as_str().unwrap().to_owned(), what)
}

fn config(dir: &Path, mqtt_port: u16) {
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n[http]\nlisten = \"127.0.0.1:0\"\nrate_per_s = 10000\nburst = 10000\n\
             [push]\nwebhook_allowed_networks = [\"127.0.0.1/32\"]\nwebhook_retry_first_s = 0.5\nwebhook_retry_max_s = 3\n"
        ),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_signed_once_through_a_failing_receiver_and_a_kill_9() {
    let scratch = tripline_testkit::scratch_dir("webhooks");
    let dir = scratch.path().to_path_buf();
    let mqtt_port = free_port();
    config(&dir, mqtt_port);
    let key_a = ok_stdout(&dir, &["tenant", "create", "insurer-a"]).trim().to_owned();
    let key_b = ok_stdout(&dir, &["tenant", "create", "insurer-b"]).trim().to_owned();
    let mut secrets =
        ok_stdout(&dir, &["fleet", "add", "--tenant", "insurer-a", "fx-harsh-1", "fx-harsh-2", "fx-harsh-3"]);
    secrets +=
        &ok_stdout(&dir, &["fleet", "add", "--tenant", "insurer-b", "fx-harsh-4"]).replace("vehicle_id,secret\n", "");
    std::fs::write(dir.join("secrets.csv"), &secrets).unwrap();
    let (receiver_at, receiver) = start_receiver().await;

    // A receiver at an internal address is refused unless the configuration allows it.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["webhook", "add", "--tenant", "insurer-a", "--url", "http://10.0.0.1/hooks"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("private"));

    let running = start_until(&dir, &["run"], "ingest ready");
    let http = running.http();
    // Added while `run` is up: through its admin channel.
    let url_a = format!("http://{receiver_at}/hooks/a");
    let made = ok_stdout(&dir, &["webhook", "add", "--tenant", "insurer-a", "--url", &url_a]);
    let (id_a, secret_a) = made.trim().split_once(',').unwrap();
    let made = ok_stdout(
        &dir,
        &["webhook", "add", "--tenant", "insurer-b", "--url", &format!("http://{receiver_at}/hooks/b")],
    );
    let (id_b, secret_b) = made.trim().split_once(',').unwrap();
    let listed = ok_stdout(&dir, &["webhook", "list", "--tenant", "insurer-a"]);
    assert_eq!(listed.lines().count(), 1);
    assert!(listed.contains(id_a) && listed.contains(&url_a) && !listed.contains(secret_a), "{listed}");

    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_tripline"))
        .args(["replay", "--url", &format!("mqtt://127.0.0.1:{mqtt_port}"), "--credentials", "secrets.csv"])
        .args(["--vehicles", "4", "--rebase-time", "--speed", "max"])
        .arg(tripline_testkit::workspace_root().join("fixtures/trips/harsh-events.csv"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));

    // Killed while the receiver fails and tripline retries; started again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.received.lock().unwrap().iter().filter(|r| r.path == "a").count() < 3 {
        assert!(Instant::now() < deadline, "attempts began");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(running); // SIGKILL
    let running = start_until(&dir, &["run"], "ingest ready");
    let http_after = running.http();

    let want_a = expected(&http_after, &key_a);
    let want_b = expected(&http_after, &key_b);
    assert!(want_a.iter().any(|(kind, ..)| kind == "event.detected"), "the fixture drives harshly: {want_a:?}");
    let delivered = |path: &str| -> Vec<Received> {
        receiver.received.lock().unwrap().iter().filter(|r| r.path == path && r.answered == 200).cloned().collect()
    };
    let deadline = Instant::now() + FAILING + Duration::from_secs(90);
    loop {
        let told = |path: &str| delivered(path).iter().map(|r| about(&r.body)).collect::<BTreeSet<_>>();
        if told("a").is_superset(&want_a) && told("b").is_superset(&want_b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's receiver misses {:?}",
            want_a.difference(&told("a")).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let all = receiver.received.lock().unwrap().clone();
    eprintln!(
        "webhooks: {} requests ({} answered 500), {} + {} messages expected for A and B",
        all.len(),
        all.iter().filter(|r| r.answered == 500).count(),
        want_a.len(),
        want_b.len()
    );
    assert!(all.iter().any(|r| r.answered == 500), "the receiver failed first");
    for request in &all {
        let secret = if request.path == "a" { secret_a } else { secret_b };
        assert!(
            tripline_push::sign::verify(secret, &request.id, request.timestamp_s, &request.raw, &request.signature),
            "a valid signature: {request:?}"
        );
        assert!((tripline_model::time::now_ms() / 1000 - request.timestamp_s).abs() < 300, "a fresh timestamp");
        assert_eq!(request.body["id"].as_str(), Some(request.id.as_str()), "the body names its webhook-id");
    }
    for (path, vehicles) in
        [("a", ["fx-harsh-1", "fx-harsh-2", "fx-harsh-3"].as_slice()), ("b", ["fx-harsh-4"].as_slice())]
    {
        let got = delivered(path);
        assert!(
            got.iter().all(|r| vehicles.contains(&r.body["data"]["vehicle_id"].as_str().unwrap())),
            "{path}: only its tenant's"
        );
        // Never the same message under two ids; each vehicle's messages in the order written.
        let mut ids: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut first_of_id: BTreeSet<String> = BTreeSet::new();
        for r in &got {
            ids.entry(about(&r.body)).or_default().insert(r.id.clone());
            if first_of_id.insert(r.id.clone()) {
                let vehicle = r.body["data"]["vehicle_id"].as_str().unwrap().to_owned();
                let at = r.body["timestamp"].as_str().unwrap().to_owned();
                let before = last.insert(vehicle, at.clone()).unwrap_or_default();
                assert!(before <= at, "{path}: a vehicle's messages in order: {before} then {at}");
            }
        }
        assert!(ids.values().all(|set| set.len() == 1), "{path}: one id per message: {ids:?}");
    }

    // The attempts are listed for the key's tenant only.
    let listed =
        get(&http_after, "/v1/webhooks/deliveries?limit=1000", &key_a)["deliveries"].as_array().unwrap().clone();
    assert!(listed.iter().all(|d| d["webhook_id"] == id_a));
    assert!(
        listed.iter().any(|d| d["status"] == 500 && d["outcome"] == "retrying" && d["next_attempt_at"].is_string())
    );
    assert!(listed.iter().any(|d| d["status"] == 200 && d["outcome"] == "delivered"));
    let of_b = get(&http_after, "/v1/webhooks/deliveries?limit=1000", &key_b)["deliveries"].as_array().unwrap().clone();
    assert!(!of_b.is_empty() && of_b.iter().all(|d| d["webhook_id"] == id_b));
    let metrics = tripline_testkit::harness::metrics(&http_after);
    assert!(metrics.contains("tripline_push_deliveries_total{outcome=\"delivered\"}"), "{metrics}");

    // A rotated secret: the new one signs, the old one beside it; a removed webhook gets nothing.
    let rotated = ok_stdout(&dir, &["webhook", "rotate-secret", id_a]).trim().to_owned();
    assert!(rotated.starts_with("whsec_") && rotated != secret_a);
    ok_stdout(&dir, &["webhook", "remove", id_b]);
    assert_eq!(ok_stdout(&dir, &["webhook", "list"]).lines().count(), 1);
    drop(running);
    let _ = http;
}
