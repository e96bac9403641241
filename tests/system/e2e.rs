//! The whole system through the real binary, on every real trip in `../shared/data/real-trips`:
//! converted at test time into trip files (enviroCar as JSON Lines, go-track as CSV), moved in
//! time so each vehicle's trips end in the last hours (in order, apart), and replayed with
//! `tripline replay` as the vehicles of two tenants. Then the API's summaries equal
//! `tripline summarize` on the same files, searches and stats answer what the summaries say,
//! tenants stay apart, bad input is listed under `/v1/rejections`, and a restart of the whole
//! stack loses nothing. Twice: roles as separate processes on Mosquitto and Cassandra, and all
//! roles in one process on embedded defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tripline_model::time::{now_ms, to_datetime};
use tripline_testkit::{Service, mqtt_host_port, unique_name, workspace_root};

use crate::sse;
use tripline_testkit::harness::{Running, sigterm, start_roles, start_roles_until};

const TENANT_A: &str = "insurer-a";
const TENANT_B: &str = "insurer-b";
/// Gap between a vehicle's trips after the move in time.
const GAP_MS: i64 = 20 * 60 * 1000;

fn tripline(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tripline")).args(args).current_dir(dir).output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A point of a converted trip.
struct Sample {
    ts_ms: i64,
    lat: f64,
    lon: f64,
    speed_mps: Option<f64>,
    heading_deg: Option<f64>,
    alt_m: Option<f64>,
}

struct RealTrip {
    vehicle: String,
    trip_id: String,
    samples: Vec<Sample>,
}

fn envirocar(root: &Path) -> Vec<RealTrip> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(root.join("envirocar")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let value = |props: &Value, name: &str| props["phenomenons"][name]["value"].as_f64();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "geojson"))
        .map(|path| {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let samples = doc["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let props = &f["properties"];
                    Sample {
                        ts_ms: tripline_model::time::parse_rfc3339_ms(props["time"].as_str().unwrap()).unwrap(),
                        lat: f["geometry"]["coordinates"][1].as_f64().unwrap(),
                        lon: f["geometry"]["coordinates"][0].as_f64().unwrap(),
                        speed_mps: value(props, "GPS Speed").map(|kmh| kmh / 3.6),
                        heading_deg: value(props, "GPS Bearing"),
                        alt_m: value(props, "GPS Altitude"),
                    }
                })
                .collect();
            RealTrip {
                vehicle: format!("ec-{}", doc["properties"]["sensor"]["properties"]["id"].as_str().unwrap()),
                trip_id: format!("ec-{}", doc["properties"]["id"].as_str().unwrap()),
                samples,
            }
        })
        .collect()
}

fn go_track(root: &Path) -> Vec<RealTrip> {
    let dir = root.join("go-track");
    let mut devices = BTreeMap::new();
    let mut tracks = csv::Reader::from_path(dir.join("go_track_tracks.csv")).unwrap();
    for row in tracks.records() {
        let row = row.unwrap();
        devices.insert(row[0].to_owned(), row[1].to_owned());
    }
    let mut trips: BTreeMap<String, RealTrip> = BTreeMap::new();
    let mut points = csv::Reader::from_path(dir.join("go_track_trackspoints.csv")).unwrap();
    for row in points.records() {
        let row = row.unwrap();
        let track = row[2].to_owned();
        // Local time in Aracaju (UTC-3, no daylight saving).
        let local = chrono::NaiveDateTime::parse_from_str(&row[3], "%Y-%m-%d %H:%M:%S").unwrap();
        let ts_ms = local.and_utc().timestamp_millis() + 3 * 3_600_000;
        let trip = trips.entry(track.clone()).or_insert_with(|| RealTrip {
            vehicle: format!("gt-{}", devices[&track]),
            trip_id: format!("gt-{track}"),
            samples: Vec::new(),
        });
        trip.samples.push(Sample {
            ts_ms,
            lat: row[0].parse().unwrap(),
            lon: row[1].parse().unwrap(),
            speed_mps: None,
            heading_deg: None,
            alt_m: None,
        });
    }
    trips.into_values().collect()
}

/// Moves each vehicle's trips so that they end in the last hours: in their order, `GAP_MS` apart,
/// the last one ending ten minutes ago. Returns the time shift per trip.
fn move_in_time(trips: &mut [RealTrip]) {
    let mut by_vehicle: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, trip) in trips.iter().enumerate() {
        by_vehicle.entry(trip.vehicle.clone()).or_default().push(i);
    }
    let now = now_ms();
    for indices in by_vehicle.values_mut() {
        indices.sort_by_key(|&i| trips[i].samples.iter().map(|s| s.ts_ms).min().unwrap());
        let mut end = now - 600_000;
        for &i in indices.iter().rev() {
            let first = trips[i].samples.iter().map(|s| s.ts_ms).min().unwrap();
            let last = trips[i].samples.iter().map(|s| s.ts_ms).max().unwrap();
            let shift = end - last;
            for sample in &mut trips[i].samples {
                sample.ts_ms += shift;
            }
            end = first + shift - GAP_MS;
        }
        let oldest = indices.iter().flat_map(|&i| trips[i].samples.iter().map(|s| s.ts_ms)).min().unwrap();
        assert!(now - oldest < 6 * 86_400_000, "a vehicle's trips fit in the late window");
    }
}

fn ts(ms: i64) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The converted files, the fleet file and the vehicles of each tenant.
struct Dataset {
    files: Vec<String>,
    a_vehicles: BTreeSet<String>,
    b_vehicles: BTreeSet<String>,
}

fn write_dataset(dir: &Path) -> Dataset {
    let root = workspace_root().join("../shared/data/real-trips");
    assert!(root.is_dir(), "the real trips are at {}", root.display());
    let mut a = envirocar(&root);
    let mut b = go_track(&root);
    move_in_time(&mut a);
    move_in_time(&mut b);
    let mut jsonl = String::new();
    for trip in &a {
        for s in &trip.samples {
            let mut line = json!({"vehicle_id": trip.vehicle, "trip_id": trip.trip_id, "ts": ts(s.ts_ms), "lat": s.lat, "lon": s.lon});
            for (key, value) in [("speed_mps", s.speed_mps), ("heading_deg", s.heading_deg), ("alt_m", s.alt_m)] {
                if let Some(v) = value {
                    line[key] = json!(v);
                }
            }
            jsonl.push_str(&line.to_string());
            jsonl.push('\n');
        }
    }
    std::fs::write(dir.join("envirocar.jsonl"), jsonl).unwrap();
    let mut csv = String::from("vehicle_id,trip_id,ts,lat,lon\n");
    for trip in &b {
        for s in &trip.samples {
            csv.push_str(&format!("{},{},{},{},{}\n", trip.vehicle, trip.trip_id, ts(s.ts_ms), s.lat, s.lon));
        }
    }
    std::fs::write(dir.join("go-track.csv"), csv).unwrap();
    let a_vehicles: BTreeSet<String> = a.iter().map(|t| t.vehicle.clone()).collect();
    let b_vehicles: BTreeSet<String> = b.iter().map(|t| t.vehicle.clone()).collect();
    let mut fleet = String::from("tenant,vehicle_id\n");
    for v in &a_vehicles {
        fleet.push_str(&format!("{TENANT_A},{v}\n"));
    }
    for v in &b_vehicles {
        fleet.push_str(&format!("{TENANT_B},{v}\n"));
    }
    std::fs::write(dir.join("fleet.csv"), fleet).unwrap();
    Dataset { files: vec!["envirocar.jsonl".to_owned(), "go-track.csv".to_owned()], a_vehicles, b_vehicles }
}

/// How the stack runs.
enum Deployment {
    /// All roles in one process on embedded defaults.
    Embedded,
    /// Each role its own process, on Mosquitto and Cassandra.
    Separate,
}

/// The running stack: its processes, in the order they stop (ingest first).
struct Stack {
    processes: Vec<Running>,
    api: String,
}

fn start_stack(dir: &Path, deployment: &Deployment) -> Stack {
    match deployment {
        Deployment::Embedded => {
            let all = start_roles(dir, "ingest,indexer,api");
            let api = all.http();
            Stack { processes: vec![all], api }
        }
        Deployment::Separate => {
            let ingest = start_roles(dir, "ingest");
            let indexer = start_roles_until(dir, "indexer", "indexer following");
            let api = start_roles_until(dir, "api", "query API on");
            let address = api.http();
            Stack { processes: vec![ingest, indexer, api], api: address }
        }
    }
}

fn stop_stack(stack: Stack) {
    for mut process in stack.processes {
        sigterm(&mut process);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

/// GET with a key: status and JSON body.
fn get(api: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = agent().get(format!("http://{api}{path}"));
    if let Some(key) = key {
        request = request.header("Authorization", format!("Bearer {key}"));
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Every trip of a tenant, through cursor pages of 50, checking each comes once.
fn all_trips(api: &str, key: &str, filter: &str) -> BTreeMap<String, Value> {
    let mut trips = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/trips?limit=50{filter}&cursor={c}"),
            None => format!("/v1/trips?limit=50{filter}"),
        };
        let (status, page) = get(api, &path, Some(key));
        assert_eq!(status, 200, "{path}: {page}");
        for trip in page["trips"].as_array().unwrap() {
            let id = trip["trip_id"].as_str().unwrap().to_owned();
            assert!(trips.insert(id.clone(), trip.clone()).is_none(), "{id} twice across pages");
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return trips,
        }
    }
}

/// A's live stream told every trip's start, completion and events, of A's trips only, each
/// vehicle's in the order written; the stream that hung up and resumed with `Last-Event-ID` got
/// exactly the same messages, none twice.
fn live_stream_tells_everything_in_order(
    api: &str,
    key: &str,
    trips: &BTreeMap<String, Value>,
    stream: sse::Stream,
    first_part: sse::Stream,
) {
    let mut events = BTreeSet::new();
    for id in trips.keys() {
        let (_, detail) = get(api, &format!("/v1/trips/{id}"), Some(key));
        for event in detail["event_list"].as_array().unwrap() {
            events.insert((
                id.clone(),
                event["kind"].as_str().unwrap().to_owned(),
                event["ts"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let completed: BTreeSet<&String> =
        trips.iter().filter(|(_, t)| t["status"] == "completed").map(|(id, _)| id).collect();
    let told = |got: &[sse::Received], kind: &str| -> BTreeSet<String> {
        got.iter().filter(|e| e.event == kind).map(|e| e.trip().to_owned()).collect()
    };
    let detected = |got: &[sse::Received]| -> BTreeSet<(String, String, String)> {
        got.iter()
            .filter(|e| e.event == "event.detected")
            .map(|e| {
                let data = &e.data["data"];
                (
                    e.trip().to_owned(),
                    data["kind"].as_str().unwrap().to_owned(),
                    data["ts"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let all = stream.settle(Duration::from_secs(60), Duration::from_secs(2), |got| {
        told(got, "trip.started").len() == trips.len()
            && told(got, "trip.completed").iter().filter(|t| completed.contains(t)).count() == completed.len()
            && detected(got).is_superset(&events)
    });
    assert!(!events.is_empty() && !completed.is_empty(), "the real drives hold events and completed trips");
    assert!(all.iter().all(|e| trips.contains_key(e.trip())), "only the tenant's trips");
    assert!(all.iter().all(|e| e.event == e.data["type"] && !e.id.is_empty()), "typed and resumable");
    let started: Vec<&str> = all.iter().filter(|e| e.event == "trip.started").map(|e| e.trip()).collect();
    assert_eq!(started.len(), trips.len(), "each trip starts once");
    let mut first_of_trip: BTreeMap<&str, &str> = BTreeMap::new();
    let mut last_at: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &all {
        first_of_trip.entry(e.trip()).or_insert(e.event.as_str());
        let at = e.data["timestamp"].as_str().unwrap();
        let before = last_at.insert(e.vehicle(), at).unwrap_or_default();
        assert!(before <= at, "a vehicle's messages in the order written: {before} then {at}");
    }
    assert!(first_of_trip.values().all(|first| *first == "trip.started"), "{first_of_trip:?}");
    let ids: Vec<&str> = all.iter().map(sse::Received::message_id).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "no message twice");

    let count = |kind: &str| all.iter().filter(|e| e.event == kind).count();
    eprintln!(
        "live stream: {} messages: {} started, {} updated, {} completed, {} events ({} in the final trips)",
        all.len(),
        count("trip.started"),
        count("trip.updated"),
        count("trip.completed"),
        count("event.detected"),
        events.len()
    );
    let first = first_part.finish(Duration::from_secs(30));
    assert_eq!(first.len(), trips.len());
    let rest = sse::open(api, key, "", Some(&first.last().unwrap().id), None).settle(
        Duration::from_secs(60),
        Duration::from_secs(2),
        |got| first.len() + got.len() >= all.len(),
    );
    let resumed: Vec<&str> = first.iter().chain(&rest).map(sse::Received::message_id).collect();
    assert_eq!(resumed, ids, "hung up and resumed: exactly the same messages, in the same order");
}

fn without_updated_at(mut summary: Value) -> Value {
    summary.as_object_mut().unwrap().remove("updated_at");
    summary
}

/// Publishes the contract's bad input as a vehicle of tenant A, with its secret (and, where the
/// broker lets a client publish to any topic, for one unknown vehicle: the embedded endpoint
/// refuses that publish itself, as its own tests show).
async fn publish_bad_input(url: &str, vehicle: &str, secret: &str, deployment: &Deployment) {
    let (host, port) = mqtt_host_port(url);
    let mut options = rumqttc::MqttOptions::new(unique_name("bad"), host, port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_credentials(vehicle, secret);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    let good_point = json!({"ts": ts(now_ms() - 60_000), "lat": 51.5, "lon": 7.5});
    let mut messages: Vec<(String, Vec<u8>)> = vec![
        (format!("vehicles/{vehicle}/telemetry"), b"{not json".to_vec()),
        (format!("vehicles/{vehicle}/telemetry"), br#"{"points": "none"}"#.to_vec()),
        (
            format!("vehicles/{vehicle}/telemetry"),
            json!({"vehicle_id": "someone-else", "points": [good_point]}).to_string().into_bytes(),
        ),
        (format!("vehicles/{vehicle}/telemetry"), vec![b' '; 300 * 1024]),
        (
            format!("vehicles/{vehicle}/telemetry"),
            json!({"points": [{"ts": ts(now_ms() - 60_000), "lat": 0.0, "lon": 0.0}]}).to_string().into_bytes(),
        ),
    ];
    if matches!(deployment, Deployment::Separate) {
        messages.push((
            "vehicles/nobody-registered-this/telemetry".to_owned(),
            json!({"points": [good_point]}).to_string().into_bytes(),
        ));
    }
    let total = messages.len();
    tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(client);
    });
    let mut acked = 0;
    while acked < total {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
            acked += 1;
        }
    }
}

async fn whole_system(deployment: Deployment, dir: &Path, mqtt_url: &str) {
    let data = write_dataset(dir);
    let key_a = ok(&tripline(dir, &["tenant", "create", TENANT_A])).trim().to_owned();
    let key_b = ok(&tripline(dir, &["tenant", "create", TENANT_B])).trim().to_owned();
    let secrets = ok(&tripline(dir, &["fleet", "import", "fleet.csv"]));
    std::fs::write(dir.join("secrets.csv"), &secrets).unwrap();
    let mut files: Vec<&str> = data.files.iter().map(String::as_str).collect();
    let expected: BTreeMap<String, Value> = ok(&tripline(dir, &[&["summarize"], files.as_slice()].concat()))
        .lines()
        .map(|line| {
            let summary: Value = serde_json::from_str(line).unwrap();
            (summary["trip_id"].as_str().unwrap().to_owned(), without_updated_at(summary))
        })
        .collect();
    let of_tenant = |vehicles: &BTreeSet<String>| -> BTreeMap<String, Value> {
        expected
            .iter()
            .filter(|(_, s)| vehicles.contains(s["vehicle_id"].as_str().unwrap()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (expected_a, expected_b) = (of_tenant(&data.a_vehicles), of_tenant(&data.b_vehicles));
    assert_eq!(expected_a.len() + expected_b.len(), expected.len());
    assert!(expected_a.len() >= 10 && expected_b.len() >= 150, "{} and {} trips", expected_a.len(), expected_b.len());

    let stack = start_stack(dir, &deployment);
    // Insurers follow the live stream from before the fleet drives; one of A's hangs up after as
    // many events as A has trips, and resumes later.
    let stream_a = sse::open(&stack.api, &key_a, "", None, None);
    let stream_b = sse::open(&stack.api, &key_b, "", None, None);
    let first_part = sse::open(&stack.api, &key_a, "", None, Some(expected_a.len()));
    let mut args = vec!["replay", "--speed", "max", "--url", mqtt_url, "--credentials", "secrets.csv"];
    args.append(&mut files);
    let replayed = tripline(dir, &args);
    let report = String::from_utf8_lossy(&replayed.stderr).to_string();
    assert!(replayed.status.success(), "{report}");
    assert!(report.contains(&format!("replayed {} trip(s)", expected.len())), "{report}");
    let bad_vehicle = data.a_vehicles.first().unwrap();
    let bad_secret = secrets.lines().find_map(|l| l.strip_prefix(&format!("{bad_vehicle},"))).unwrap();
    publish_bad_input(mqtt_url, bad_vehicle, bad_secret, &deployment).await;

    // Every trip arrives, equal to the offline summary of the same file.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (trips_a, trips_b) = loop {
        let a = all_trips(&stack.api, &key_a, "");
        let b = all_trips(&stack.api, &key_b, "");
        let same = |got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>| {
            got.len() == want.len() && got.iter().all(|(id, s)| want.get(id) == Some(&without_updated_at(s.clone())))
        };
        if same(&a, &expected_a) && same(&b, &expected_b) {
            break (a, b);
        }
        if Instant::now() > deadline {
            let differing: Vec<_> = a
                .iter()
                .chain(b.iter())
                .filter(|(id, s)| expected.get(*id) != Some(&without_updated_at((*s).clone())))
                .take(2)
                .map(|(id, s)| (s.clone(), expected.get(id).cloned()))
                .collect();
            panic!(
                "API: {} + {} trips, expected {} + {}; differing: {differing:#?}",
                a.len(),
                b.len(),
                expected_a.len(),
                expected_b.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Searches and stats answer what the summaries say.
    let vehicle =
        data.b_vehicles.iter().max_by_key(|v| expected_b.values().filter(|s| s["vehicle_id"] == **v).count()).unwrap();
    let of_vehicle = all_trips(&stack.api, &key_b, &format!("&vehicle_id={vehicle}"));
    let want: BTreeSet<&String> =
        expected_b.iter().filter(|(_, s)| s["vehicle_id"] == *vehicle).map(|(k, _)| k).collect();
    assert_eq!(of_vehicle.keys().collect::<BTreeSet<_>>(), want);
    for kind in ["harsh_braking", "speeding"] {
        let found = all_trips(&stack.api, &key_a, &format!("&event={kind}"));
        let want: BTreeSet<&String> =
            expected_a.iter().filter(|(_, s)| s["events"][kind].as_u64().unwrap() > 0).map(|(k, _)| k).collect();
        assert_eq!(found.keys().collect::<BTreeSet<_>>(), want, "event={kind}");
    }
    let (_, longest) = get(&stack.api, "/v1/trips?sort=-distance_km&limit=1", Some(&key_b));
    let max_km = expected_b.values().map(|s| s["distance_km"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(longest["trips"][0]["distance_km"].as_f64().unwrap(), max_km);
    let (_, safe) = get(&stack.api, "/v1/trips?min_score=90&limit=1000", Some(&key_a));
    let want = expected_a.values().filter(|s| s["score"].as_f64().unwrap() >= 90.0).count();
    assert_eq!(safe["total"].as_u64().unwrap() as usize, want, "min_score=90");
    let (status, stats) = get(&stack.api, "/v1/stats?group_by=vehicle_id", Some(&key_b));
    assert_eq!(status, 200, "{stats}");
    for bucket in stats["buckets"].as_array().unwrap() {
        let v = bucket["key"].as_str().unwrap();
        let trips: Vec<&Value> = expected_b.values().filter(|s| s["vehicle_id"] == v).collect();
        assert_eq!(bucket["trips"].as_u64().unwrap() as usize, trips.len(), "trips of {v}");
        let km: f64 = trips.iter().map(|s| s["distance_km"].as_f64().unwrap()).sum();
        assert!((bucket["distance_km"].as_f64().unwrap() - km).abs() < 0.01, "distance of {v}");
    }
    let (_, days) = get(&stack.api, "/v1/stats?group_by=day&tz=America/Maceio", Some(&key_b));
    let counted: u64 = days["buckets"].as_array().unwrap().iter().map(|b| b["trips"].as_u64().unwrap()).sum();
    assert_eq!(counted as usize, expected_b.len());
    let (one_id, one) = trips_a.iter().next().unwrap();
    let (_, points) = get(&stack.api, &format!("/v1/trips/{one_id}/points?limit=1000"), Some(&key_a));
    assert_eq!(
        points["points"].as_array().map(Vec::len).unwrap_or_default() as u64,
        one["point_count"].as_u64().unwrap().min(1000)
    );
    // Every trip of A reads back its points page by page, each once and in time order: completed
    // trips from their sealed chunks.
    assert!(trips_a.values().any(|t| t["status"] == "completed"), "some trips completed, so were sealed");
    for (id, trip) in &trips_a {
        let (mut cursor, mut times) = (String::new(), Vec::new());
        loop {
            let (status, page) = get(&stack.api, &format!("/v1/trips/{id}/points?limit=100{cursor}"), Some(&key_a));
            assert_eq!(status, 200, "{page}");
            times.extend(page["points"].as_array().unwrap().iter().map(|p| p["ts"].as_str().unwrap().to_owned()));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        assert_eq!(times.len() as u64, trip["point_count"].as_u64().unwrap(), "points of {id}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "points of {id} in time order");
    }

    live_stream_tells_everything_in_order(&stack.api, &key_a, &trips_a, stream_a, first_part);
    let b_stream = stream_b.settle(Duration::from_secs(60), Duration::from_secs(2), |got| {
        got.iter().filter(|e| e.event == "trip.started").count() == trips_b.len()
    });
    assert!(b_stream.iter().all(|e| data.b_vehicles.contains(e.vehicle())), "B's stream tells only B's trips");

    // Tenants stay apart.
    let (b_id, b_trip) = trips_b.iter().next().unwrap();
    let b_vehicle = b_trip["vehicle_id"].as_str().unwrap();
    for path in
        [format!("/v1/trips/{b_id}"), format!("/v1/trips/{b_id}/points"), format!("/v1/vehicles/{b_vehicle}/trips")]
    {
        assert_eq!(get(&stack.api, &path, Some(&key_a)).0, 404, "{path} with A's key");
        assert_eq!(get(&stack.api, &path, None).0, 401, "{path} without a key");
    }
    for filter in [format!("&vehicle_id={b_vehicle}"), format!("&q={b_vehicle}"), format!("&q={TENANT_B}")] {
        assert!(all_trips(&stack.api, &key_a, &filter).is_empty(), "A finds nothing of B with {filter}");
    }

    // Bad input is listed under A's rejections, with its reason; none of it is B's.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reasons = |key: &str| -> BTreeSet<String> {
        let (_, page) = get(&stack.api, "/v1/rejections?limit=100", Some(key));
        page["rejections"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap().to_owned()).collect()
    };
    let want: BTreeSet<String> =
        ["malformed_json", "schema", "topic_mismatch", "payload_too_large", "null_island"].map(str::to_owned).into();
    while !reasons(&key_a).is_superset(&want) {
        assert!(Instant::now() < deadline, "A's rejections: {:?}", reasons(&key_a));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!reasons(&key_a).contains("unknown_vehicle"), "a vehicle nobody owns is no tenant's");
    // The 300 KiB message is kept as its first 16 KiB, with its size and hash.
    let (_, page) = get(&stack.api, "/v1/rejections?limit=100", Some(&key_a));
    let large = page["rejections"].as_array().unwrap().iter().find(|r| r["reason"] == "payload_too_large").unwrap();
    assert_eq!(large["payload_bytes"], 300 * 1024);
    assert_eq!(large["payload_truncated"], true);
    assert_eq!(large["payload"].as_str().unwrap().len(), 16 * 1024);
    assert_eq!(large["payload_sha256"].as_str().unwrap().len(), 64);
    assert!(reasons(&key_b).is_disjoint(&want), "B sees none of A's rejections");
    // Every point published is in a trip or in its tenant's rejections: apart from A's bad
    // input above, the rejections are the points the trips count as rejected, jumps included.
    let rejections = |key: &str| {
        let (mut reasons, mut cursor) = (Vec::new(), String::new());
        loop {
            let (status, page) = get(&stack.api, &format!("/v1/rejections?limit=100{cursor}"), Some(key));
            assert_eq!(status, 200, "{page}");
            reasons.extend(
                page["rejections"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap().to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break reasons,
            }
        }
    };
    let counted = |trips: &BTreeMap<String, Value>| -> usize {
        trips.values().map(|s| s["rejected_point_count"].as_u64().unwrap() as usize).sum()
    };
    let (of_a, of_b) = (rejections(&key_a), rejections(&key_b));
    assert_eq!(of_a.len() - want.len(), counted(&trips_a), "A's rejections: {of_a:?}");
    assert_eq!(of_b.len(), counted(&trips_b), "B's rejections: {of_b:?}");
    assert!(of_a.iter().chain(&of_b).any(|r| r == "implausible_jump"), "the real drives hold jumps");

    // The whole stack restarted: nothing lost, nothing changed.
    stop_stack(stack);
    let stack = start_stack(dir, &deployment);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (all_trips(&stack.api, &key_a, ""), all_trips(&stack.api, &key_b, ""));
        if a == trips_a && b == trips_b {
            break;
        }
        assert!(Instant::now() < deadline, "after a restart: {} + {} trips", a.len(), b.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop_stack(stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_trips_through_separate_roles_on_mosquitto_and_cassandra() {
    let keyspace = unique_name("e2e");
    let (Some(cql), Some(mqtt_url)) = (tripline_testkit::cql_config(keyspace.clone(), 0), Service::Mqtt.address())
    else {
        return;
    };
    let scratch = tripline_testkit::scratch_dir("e2e-sep");
    let dir = scratch.path().to_path_buf();
    let client_id = unique_name("e2e-ingest");
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "store = \"scylla\"\n{}[mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"{client_id}\"\n[ingest]\ndrain_s = 10\n[http]\nlisten = \"127.0.0.1:0\"\nrate_per_s = 10000\nburst = 10000\n",
            tripline_testkit::scylla_section(&cql)
        ),
    )
    .unwrap();
    ok(&tripline(&dir, &["schema", "apply"]));
    whole_system(Deployment::Separate, &dir, &mqtt_url).await;
    tripline_testkit::forget_mqtt_session(&mqtt_url, &client_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_trips_through_one_process_on_embedded_defaults() {
    let scratch = tripline_testkit::scratch_dir("e2e-emb");
    let dir = scratch.path().to_path_buf();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        dir.join("tripline.toml"),
        format!("[mqtt]\nlisten = \"127.0.0.1:{port}\"\n[http]\nlisten = \"127.0.0.1:0\"\nrate_per_s = 10000\nburst = 10000\n"),
    )
    .unwrap();
    whole_system(Deployment::Embedded, &dir, &format!("mqtt://127.0.0.1:{port}")).await;
}
