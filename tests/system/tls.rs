//! TLS, with the test certificate authority `scripts/services.sh` creates: vehicles reach the
//! embedded endpoint over TLS with a client certificate (its common name is the vehicle id) or
//! their secret; tripline reaches Mosquitto's TLS listener with a client certificate of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use tripline_model::{TenantId, TripId, VehicleId};
use tripline_store::{EmbeddedConfig, EmbeddedStore, TripStore};
use tripline_testkit::{Service, mqtt_host_port, unique_name};

use tripline_testkit::harness::*;

/// Connects over TLS trusting the test authority, presenting `certificate` (files) and/or
/// `login`: the client once the CONNACK came, or the error.
async fn connect_tls(
    url: &str,
    tls_dir: &Path,
    certificate: Option<&(PathBuf, PathBuf)>,
    login: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (host, port) = mqtt_host_port(url);
    let identity = certificate.map(|(cert, key)| (cert.as_path(), key.as_path()));
    let config = tripline_ingest::tls::client_config(&tls_dir.join("ca.pem"), identity).unwrap();
    let mut options = MqttOptions::new(unique_name("tls"), host, port);
    options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok((client, eventloop)),
            Ok(_) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Publishes a 5-point message of trip `trip` for `vehicle` and waits for its PUBACK.
async fn publish_trip(connected: (AsyncClient, EventLoop), vehicle: &str, trip: &str, v: usize) {
    let (client, mut eventloop) = connected;
    let points = tripline_testkit::fleet_message_points(t0(), v, 0, 5);
    let payload = tripline_model::encode_telemetry(Some(&TripId::parse(trip).unwrap()), &points);
    client.publish(format!("vehicles/{vehicle}/telemetry"), QoS::AtLeastOnce, false, payload).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("a PUBACK");
}

/// Points of `vehicle`'s trip `trip` in the embedded store of `dir` (after the process stopped).
async fn points_of(dir: &Path, vehicle: &str, trip: &str) -> Option<u64> {
    let store = EmbeddedStore::open(&EmbeddedConfig {
        path: dir.join("tripline-data/store"),
        retention_s: 86_400,
        ..EmbeddedConfig::default()
    })
    .unwrap();
    let (tenant, vehicle, trip) =
        (TenantId::parse("acme").unwrap(), VehicleId::parse(vehicle).unwrap(), TripId::parse(trip).unwrap());
    store.trip_of_vehicle(&tenant, &vehicle, &trip).await.unwrap().map(|t| t.summary.point_count)
}

fn refused(result: Result<(AsyncClient, EventLoop), ConnectionError>) -> bool {
    matches!(result, Err(ConnectionError::ConnectionRefused(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vehicles_reach_the_embedded_endpoint_over_tls_with_a_certificate_or_their_secret() {
    let Some(tls_dir) = Service::Tls.address().map(PathBuf::from) else { return };
    let scratch = tripline_testkit::scratch_dir("tls-endpoint");
    let dir = scratch.path().to_path_buf();
    let port = free_port();
    let file = |name: &str| tls_dir.join(name).display().to_string();
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nlisten = \"127.0.0.1:{port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\
             tls_client_ca_file = \"{}\"\n[ingest]\nworkers = 2\n[http]\nlisten = \"127.0.0.1:0\"\n",
            file("server.pem"),
            file("server.key"),
            file("ca.pem")
        ),
    )
    .unwrap();
    let (a, b, stranger) = (unique_name("ta"), unique_name("tb"), unique_name("tc"));
    ok_stdout(&dir, &["tenant", "create", "acme"]);
    let secrets = ok_stdout(&dir, &["fleet", "add", "--tenant", "acme", &a, &b]);
    let secret_b = secret_of(&secrets, &b);
    let cert_a = tripline_testkit::signed_certificate(&tls_dir, &dir, &a);
    let cert_stranger = tripline_testkit::signed_certificate(&tls_dir, &dir, &stranger);
    let mut running = start(&dir);
    assert!(running.stderr_contains(&format!("mqtts://127.0.0.1:{port}")), "the endpoint says it serves TLS");
    let url = format!("mqtts://127.0.0.1:{port}");

    // A by its certificate alone; B by its secret over TLS.
    publish_trip(connect_tls(&url, &tls_dir, Some(&cert_a), None).await.unwrap(), &a, "cert-a", 0).await;
    let with_secret = connect_tls(&url, &tls_dir, None, Some((&b, &secret_b))).await.unwrap();
    publish_trip(with_secret, &b, "secret-b", 1).await;
    // Refused: a certificate of an unregistered vehicle; A's certificate under B's name; no
    // credentials at all; plain MQTT.
    assert!(refused(connect_tls(&url, &tls_dir, Some(&cert_stranger), None).await), "unregistered");
    assert!(refused(connect_tls(&url, &tls_dir, Some(&cert_a), Some((&b, "x"))).await), "A's certificate as B");
    assert!(refused(connect_tls(&url, &tls_dir, None, None).await), "no credentials");
    let (_plain, mut eventloop) = AsyncClient::new(MqttOptions::new(unique_name("plain"), "127.0.0.1", port), 4);
    let plain = tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await;
    assert!(!matches!(plain, Ok(Ok(Event::Incoming(Packet::ConnAck(_))))), "plain MQTT: {plain:?}");
    // Revoked: the certificate stops working too.
    ok_stdout(&dir, &["fleet", "revoke", &a]);
    assert!(refused(connect_tls(&url, &tls_dir, Some(&cert_a), None).await), "revoked");
    sigterm(&mut running);

    assert_eq!(points_of(&dir, &a, "cert-a").await, Some(5));
    assert_eq!(points_of(&dir, &b, "secret-b").await, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tripline_ingests_from_mosquitto_over_tls_with_its_client_certificate() {
    let (Some(url), Some(tls_dir)) = (Service::MqttTls.address(), Service::Tls.address().map(PathBuf::from)) else {
        return;
    };
    let scratch = tripline_testkit::scratch_dir("tls-mosquitto");
    let dir = scratch.path().to_path_buf();
    let file = |name: &str| tls_dir.join(name).display().to_string();
    let config = |cert: &str| {
        format!(
            "[mqtt]\nurl = \"{url}\"\nclient_id = \"{}\"\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\n[ingest]\nworkers = 2\ngive_up_s = 5\n[http]\nlisten = \"127.0.0.1:0\"\n",
            unique_name("tls-ingest"),
            file("ca.pem"),
            file(&format!("{cert}.pem")),
            file(&format!("{cert}.key"))
        )
    };
    std::fs::write(dir.join("tripline.toml"), config("tripline")).unwrap();
    let vehicle = unique_name("tv");
    ok_stdout(&dir, &["tenant", "create", "acme"]);
    ok_stdout(&dir, &["fleet", "add", "--tenant", "acme", &vehicle]);
    let mut running = start(&dir);
    // Mosquitto's TLS listener takes a vehicle by its certificate (its common name).
    let cert = tripline_testkit::signed_certificate(&tls_dir, &dir, &vehicle);
    publish_trip(connect_tls(&url, &tls_dir, Some(&cert), None).await.unwrap(), &vehicle, "over-tls", 2).await;
    wait_for_acks(&running, 1).await;
    sigterm(&mut running);
    assert_eq!(points_of(&dir, &vehicle, "over-tls").await, Some(5), "the message came through TLS");
}
