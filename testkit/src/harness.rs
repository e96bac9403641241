//! The real `tripline` binary started and driven: a keyspace with a registered fleet, a
//! `tripline run` process read until it is ready, a simulated fleet publishing, and the HTTP and
//! metrics reads the `system` and `faults` test binaries share.

#![allow(clippy::unwrap_used)] // a test helper fails the test loudly by design

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use crate::{Service, mqtt_host_port, unique_name};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tripline_model::{Point, TenantId, TripId, VehicleId, encode_telemetry};
use tripline_store::{PointStore, Registry, ScyllaStore};

/// The `tripline` binary of this build: where cargo says (`CARGO_BIN_EXE_tripline`, set for the
/// root package's integration tests) or beside the running test binary's folder (`target/<profile>/`,
/// test binaries run from `target/<profile>/deps/`).
pub fn tripline_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_tripline") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(Path::parent).unwrap();
    profile.join(format!("tripline{}", std::env::consts::EXE_SUFFIX))
}

pub const VEHICLES: usize = 50;
pub const MESSAGES: usize = 10;
pub const POINTS: usize = 10;

pub struct Setup {
    /// The run's folder (removed when the setup drops).
    pub dir: PathBuf,
    _scratch: tempfile::TempDir,
    pub store: ScyllaStore,
    pub mqtt_url: String,
    pub prefix: String,
    pub client_id: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        crate::forget_mqtt_session(&self.mqtt_url, &self.client_id);
    }
}

pub async fn setup() -> Option<Setup> {
    let mqtt_url = Service::Mqtt.address()?;
    let scratch = crate::scratch_dir("ingest");
    let dir = scratch.path().to_path_buf();
    let keyspace = unique_name("ing");
    let config = crate::cql_config(keyspace.clone(), 86_400 * 30)?;
    ScyllaStore::apply_schema(&config).await.unwrap();
    let store = ScyllaStore::connect(&config).await.unwrap();
    let prefix = unique_name("v");
    let tenant = TenantId::parse("acme").unwrap();
    store.create_tenant(&tenant, "hash").await.unwrap();
    let vehicles: Vec<VehicleId> = (0..VEHICLES).map(|v| VehicleId::parse(&format!("{prefix}-{v}")).unwrap()).collect();
    store.add_vehicles(&tenant, &vehicles).await.unwrap();
    let client_id = unique_name("ingest");
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "store = \"scylla\"\n{}[mqtt]\nurl = \"{mqtt_url}\"\nclient_id = \"{client_id}\"\n[ingest]\nworkers = 2\ndrain_s = 5\n[http]\nlisten = \"127.0.0.1:0\"\n",
            crate::scylla_section(&config),
        ),
    )
    .unwrap();
    Some(Setup { dir, _scratch: scratch, store, mqtt_url, prefix, client_id })
}

/// A running `tripline run --roles ingest`; killed when dropped (a failing test leaves nothing).
pub struct Running {
    pub child: Child,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn stderr_contains(&self, text: &str) -> bool {
        self.stderr.lock().unwrap().iter().any(|line| line.contains(text))
    }

    /// The address of its HTTP listener, as it printed it.
    pub fn http(&self) -> String {
        let lines = self.stderr.lock().unwrap();
        let line = lines.iter().find(|l| l.contains("health and metrics on http://")).expect("address printed");
        line.split("http://").nth(1).unwrap().split('/').next().unwrap().to_owned()
    }
}

/// Starts the ingest role and waits until it is connected and subscribed.
pub fn start(dir: &Path) -> Running {
    start_roles(dir, "ingest")
}

/// Starts `tripline run --roles {roles}` (ingest among them) and waits until ingest is ready.
pub fn start_roles(dir: &Path, roles: &str) -> Running {
    start_roles_until(dir, roles, "ingest ready")
}

/// Starts `tripline run --roles {roles}` and waits until its stderr says `ready`.
pub fn start_roles_until(dir: &Path, roles: &str, ready: &str) -> Running {
    start_until(dir, &["run", "--roles", roles], ready)
}

/// Starts `tripline {args}` and waits until its stderr says `ready`.
pub fn start_until(dir: &Path, args: &[&str], ready: &str) -> Running {
    let mut child = Command::new(tripline_binary())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let pipe = child.stderr.take().unwrap();
    let lines = std::sync::Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
    let running = Running { child, stderr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running.stderr_contains(ready) {
        assert!(Instant::now() < deadline, "{args:?} not ready: {:?}", running.stderr.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// Now, so points pass the late-window rule.
pub fn t0() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 3_600_000
}

pub fn message_points(t0: i64, v: usize, m: usize) -> Vec<Point> {
    crate::fleet_message_points(t0, v, m, POINTS)
}

pub async fn publish(url: &str, messages: Vec<(String, Vec<u8>)>) {
    let (host, port) = mqtt_host_port(url);
    let mut options = MqttOptions::new(unique_name("car"), host, port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let n = messages.len();
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("broker acknowledged every publish");
    sender.await.unwrap();
}

pub fn messages(prefix: &str, t0: i64, range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for m in range {
        for v in 0..VEHICLES {
            let trip = TripId::parse(&format!("trip-{v}")).unwrap();
            out.push((
                format!("vehicles/{prefix}-{v}/telemetry"),
                encode_telemetry(Some(&trip), &message_points(t0, v, m)),
            ));
        }
    }
    out
}

pub async fn stored_points(setup: &Setup, t0: i64) -> usize {
    let mut total = 0;
    for v in 0..VEHICLES {
        let vehicle = VehicleId::parse(&format!("{}-{v}", setup.prefix)).unwrap();
        total += setup.store.vehicle_points(&vehicle, t0 - 60_000, t0 + 3_600_000).await.unwrap().len();
    }
    total
}

pub async fn wait_for_points(setup: &Setup, t0: i64, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = stored_points(setup, t0).await;
        if n >= expected || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The process's `/metrics` text.
pub fn metrics(http: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(http).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Waits (30 s at most) until the process has acknowledged `n` messages.
pub async fn wait_for_acks(running: &Running, n: u64) {
    let http = running.http();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics(&http).contains(&format!("tripline_ingest_acks_total {n}")) {
        assert!(Instant::now() < deadline, "{}", metrics(&http));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn sigterm(running: &mut Running) {
    let status = Command::new("kill").args(["-TERM", &running.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = running.child.try_wait().unwrap() {
            assert!(exit.success(), "graceful stop exits 0, got {exit}");
            break;
        }
        assert!(Instant::now() < deadline, "tripline did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// Runs a `tripline` command in `dir`; its stdout, after asserting success.
pub fn ok_stdout(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(tripline_binary()).args(args).current_dir(dir).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The secret printed for `vehicle` in `fleet add|rotate-secret`'s CSV.
pub fn secret_of(csv: &str, vehicle: &str) -> String {
    assert!(csv.starts_with("vehicle_id,secret\n"), "{csv}");
    csv.lines().find_map(|line| line.strip_prefix(&format!("{vehicle},"))).unwrap().to_owned()
}

/// A loopback port free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A plain HTTP/1.1 GET on a fresh connection (with a bearer key if given): status code (0 when
/// no answer came within 10 s) and body.
pub fn http_get_with_key(addr: &str, path: &str, key: Option<&str>) -> (u16, String) {
    http_get_within(addr, path, key, Duration::from_secs(10))
}

/// [`http_get_with_key`], waiting at most `wait` for the answer (status 0 without one).
pub fn http_get_within(addr: &str, path: &str, key: Option<&str>, wait: Duration) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return (0, String::new()) };
    let _ = stream.set_read_timeout(Some(wait));
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    if write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// A process's resident memory, MB (0 when it cannot be read).
pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
