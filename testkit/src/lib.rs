//! # tripline-testkit
//!
//! What tripline's tests share: where the real services (Mosquitto, Cassandra) that
//! `scripts/services.sh` starts are, unique names so tests never share a keyspace, topic or
//! client id, and ([`harness`]) the real `tripline` binary started and driven. The scenarios
//! themselves are the `tripline` package's integration tests (`tests/system/`, `tests/faults/`)
//! and each crate's own tests.
//!
//! **Promise.** A test that cannot reach its service does not pass quietly: outside CI it says
//! loudly that it skipped; under `CI=true` it fails.

pub mod harness;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a real service is, from the environment `scripts/services.sh env` prints.
#[derive(Clone, Copy, Debug)]
pub enum Service {
    /// Mosquitto: `TRIPLINE_TEST_MQTT_URL`, e.g. `mqtt://127.0.0.1:11883`.
    Mqtt,
    /// Cassandra: `TRIPLINE_TEST_CQL_NODES`, e.g. `127.0.0.1:19042`.
    Cql,
    /// Mosquitto's listener with password and ACL files: `TRIPLINE_TEST_MQTT_AUTH_URL`, its files
    /// in `TRIPLINE_TEST_MQTT_AUTH_DIR`.
    MqttAuth,
    /// Mosquitto's TLS listener (client certificates required): `TRIPLINE_TEST_MQTT_TLS_URL`.
    MqttTls,
    /// The test certificate authority and its certificates: `TRIPLINE_TEST_TLS_DIR`.
    Tls,
    /// The schemathesis command (from PyPI, installed by `scripts/test.sh`):
    /// `TRIPLINE_TEST_SCHEMATHESIS`.
    Schemathesis,
    /// Chromium's WebDriver server (Debian's `chromium-driver`, installed by `scripts/test.sh`):
    /// `TRIPLINE_TEST_CHROMEDRIVER`.
    Chromedriver,
}

impl Service {
    fn variable(self) -> &'static str {
        match self {
            Service::Mqtt => "TRIPLINE_TEST_MQTT_URL",
            Service::Cql => "TRIPLINE_TEST_CQL_NODES",
            Service::MqttAuth => "TRIPLINE_TEST_MQTT_AUTH_URL",
            Service::MqttTls => "TRIPLINE_TEST_MQTT_TLS_URL",
            Service::Tls => "TRIPLINE_TEST_TLS_DIR",
            Service::Schemathesis => "TRIPLINE_TEST_SCHEMATHESIS",
            Service::Chromedriver => "TRIPLINE_TEST_CHROMEDRIVER",
        }
    }

    /// The service's address, or `None` after a loud notice when it is not configured.
    ///
    /// # Panics
    /// Under `CI=true` a missing service is a failure, never a skip.
    pub fn address(self) -> Option<String> {
        let variable = self.variable();
        match std::env::var(variable) {
            Ok(value) if !value.trim().is_empty() => Some(value),
            _ => {
                let message = format!(
                    "{variable} is not set: start the services with `scripts/services.sh start` and \
                     `eval \"$(scripts/services.sh env)\"`, or run `scripts/test.sh`"
                );
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
                eprintln!("\n!!! SKIPPED: {message}\n");
                None
            }
        }
    }
}

/// A store configuration for keyspace `keyspace` of the test Cassandra keeping everything
/// (rejections too) `retention_s` seconds, with its credentials
/// (`TRIPLINE_TEST_CQL_USERNAME`/`_PASSWORD`: the test Cassandra requires a password), or `None`
/// when the service is not configured (outside CI).
pub fn cql_config(keyspace: String, retention_s: u64) -> Option<tripline_store::ScyllaConfig> {
    let nodes = Service::Cql.address()?;
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    Some(tripline_store::ScyllaConfig {
        nodes: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
        keyspace,
        retention_s,
        rejection_retention_s: retention_s,
        username: var("TRIPLINE_TEST_CQL_USERNAME"),
        password: var("TRIPLINE_TEST_CQL_PASSWORD"),
        ..tripline_store::ScyllaConfig::default()
    })
}

/// The `[scylla]` section of a configuration file for `config` (credentials included).
pub fn scylla_section(config: &tripline_store::ScyllaConfig) -> String {
    format!("[scylla]\n{}", toml::to_string(config).unwrap_or_default())
}

/// The workspace root (where `fixtures/` and `Cargo.toml` are).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}

/// A certificate for `common_name` (a vehicle id) signed by the test authority of `tls_dir`
/// (`Service::Tls`), written into `out_dir`: its certificate and key files.
///
/// # Panics
/// When `openssl` fails (`scripts/services.sh` installs it).
pub fn signed_certificate(
    tls_dir: &std::path::Path,
    out_dir: &std::path::Path,
    common_name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let file = |ext: &str| out_dir.join(format!("{common_name}.{ext}"));
    let (cert, key, csr, extensions) = (file("pem"), file("key"), file("csr"), file("ext"));
    let run = |command: &mut std::process::Command| {
        let output = command.output().expect("openssl");
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    run(std::process::Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={common_name}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    std::fs::write(&extensions, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        .expect("the certificate extensions file");
    run(std::process::Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(tls_dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(tls_dir.join("ca.key"))
        .arg("-CAserial")
        .arg(out_dir.join("ca.srl"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(&extensions)
        .arg("-out")
        .arg(&cert));
    (cert, key)
}

/// `host:port` of an `mqtt://host:port` (or `mqtts://`) URL.
pub fn mqtt_host_port(url: &str) -> (String, u16) {
    let rest = url.strip_prefix("mqtt://").or_else(|| url.strip_prefix("mqtts://")).unwrap_or(url);
    let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
    (host.to_owned(), port.parse().unwrap_or(1883))
}

/// A name unique to this process and call, usable as a CQL keyspace, MQTT client id or topic
/// segment: `{prefix}_{unix seconds}_{pid}_{counter}`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{seconds}_{}_{n}", std::process::id())
}

/// A new folder of its own for one test (`tripline-{prefix}-…` in the system's temporary
/// folder), removed when the returned guard drops — also when the test fails.
#[allow(clippy::expect_used)] // a test without a folder cannot run
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("tripline-{prefix}-")).tempdir().expect("a temporary folder")
}

/// Message `message` of simulated vehicle `vehicle` in the ingest scenarios and benchmark:
/// `points` fixes 1 s apart from `t0`, numbered by `seq`, driving north at 11 m/s (each vehicle
/// on its own parallel track).
pub fn fleet_message_points(t0_ms: i64, vehicle: usize, message: usize, points: usize) -> Vec<tripline_model::Point> {
    (0..points)
        .map(|i| {
            let n = (message * points + i) as i64;
            tripline_model::Point {
                seq: Some(n as u64),
                ts_ms: t0_ms + n * 1000,
                lat: 52.0 + vehicle as f64 * 0.01 + n as f64 * 1e-4,
                lon: 13.0,
                speed_mps: Some(11.0),
                heading_deg: Some(0.0),
                accuracy_m: Some(3.0),
                alt_m: None,
                ignition: Some(true),
                odometer_m: None,
            }
        })
        .collect()
}

/// A stored trip for tests of the read side: `minutes` long from `start_ms`, 1 km, completed,
/// 3 points, in the region "Berlin" and the geohash cell of (52.5, 13.4), with `score`.
pub fn trip_record(
    tenant: &str,
    vehicle: &str,
    trip_id: &str,
    start_ms: i64,
    minutes: i64,
    score: f64,
) -> tripline_store::TripRecord {
    use tripline_model::{EventCounts, Place, TenantId, TripId, TripStatus, TripSummary, VehicleId};
    let at = tripline_model::time::to_datetime;
    let end_ms = start_ms + minutes * 60_000;
    let id_error = |what: &str, value: &str| format!("test {what} {value:?} is not a valid id");
    tripline_store::TripRecord {
        tenant: TenantId::parse(tenant).unwrap_or_else(|_| panic!("{}", id_error("tenant", tenant))),
        summary: TripSummary {
            trip_id: TripId::parse(trip_id).unwrap_or_else(|_| panic!("{}", id_error("trip", trip_id))),
            vehicle_id: VehicleId::parse(vehicle).unwrap_or_else(|_| panic!("{}", id_error("vehicle", vehicle))),
            status: TripStatus::Completed,
            start_time: at(start_ms),
            end_time: at(end_ms),
            duration_s: (minutes * 60) as f64,
            moving_time_s: (minutes * 60) as f64,
            idle_time_s: 0.0,
            distance_km: 1.0,
            max_speed_kmh: 60.0,
            avg_speed_kmh: 60.0,
            start: Place { lat: 52.5, lon: 13.4, region: None },
            end: Place { lat: 52.51, lon: 13.4, region: None },
            regions: vec!["Berlin".to_owned()],
            events: EventCounts::default(),
            speeding_s: 0.0,
            night_driving_s: 0.0,
            point_count: 3,
            rejected_point_count: 0,
            score,
            score_version: 1,
            updated_at: at(end_ms),
        },
        events: Vec::new(),
        cells: tripline_model::cell::cells([(52.5, 13.4)]),
        dropped: Default::default(),
    }
}

/// Removes the broker's persistent session of `client_id` (connects once with a clean session).
/// Tests that subscribe with a persistent session call it when done: a forgotten session keeps
/// queueing every matching message in the broker for as long as the broker keeps it.
pub fn forget_mqtt_session(url: &str, client_id: &str) {
    let (host, port) = mqtt_host_port(url);
    let client_id = client_id.to_owned();
    // rumqttc's blocking client runs its own runtime: keep it off any async caller's thread.
    let worker = std::thread::spawn(move || {
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options.set_clean_session(true);
        let (client, mut connection) = rumqttc::Client::new(options, 10);
        for event in connection.iter().take(20) {
            match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.disconnect();
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
    let _ = worker.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_are_cql_identifiers() {
        let (a, b) = (unique_name("ks"), unique_name("ks"));
        assert_ne!(a, b);
        assert!(a.len() <= 48 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn mqtt_urls_split_into_host_and_port() {
        assert_eq!(mqtt_host_port("mqtt://127.0.0.1:11883"), ("127.0.0.1".to_owned(), 11883));
    }
}
