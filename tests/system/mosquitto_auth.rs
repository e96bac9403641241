//! A Mosquitto running with the files `tripline fleet export --mosquitto` writes (the services'
//! second listener): tripline ingests through its own account, vehicles connect with their
//! secrets, publish only to their own topics, and cannot take over tripline's session.

use std::path::Path;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use tripline_model::{TenantId, TripId, VehicleId};
use tripline_store::{EmbeddedConfig, EmbeddedStore, TripStore};
use tripline_testkit::{Service, mqtt_host_port, unique_name};

use tripline_testkit::harness::*;

async fn connect(
    url: &str,
    client_id: &str,
    login: Option<(&str, &str)>,
) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (host, port) = mqtt_host_port(url);
    let mut options = MqttOptions::new(client_id, host, port);
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    match eventloop.poll().await {
        Ok(Event::Incoming(Packet::ConnAck(_))) => Ok((client, eventloop)),
        Ok(other) => panic!("expected a CONNACK, got {other:?}"),
        Err(error) => Err(error),
    }
}

/// Publishes one message and waits for its PUBACK (Mosquitto acknowledges, then drops, what the
/// ACL denies).
async fn publish_one(client: &AsyncClient, eventloop: &mut EventLoop, topic: String, payload: Vec<u8>) {
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_with_the_exported_files_enforces_the_endpoints_rules() {
    let Some(url) = Service::MqttAuth.address() else { return };
    let auth_dir = std::env::var("TRIPLINE_TEST_MQTT_AUTH_DIR").expect("set with TRIPLINE_TEST_MQTT_AUTH_URL");
    let script = std::env::var("TRIPLINE_SERVICES_SCRIPT").expect("set with the services");
    let scratch = tripline_testkit::scratch_dir("mosq-auth");
    let dir = scratch.path().to_path_buf();
    let account = unique_name("tl");
    std::fs::write(dir.join("mqtt-password"), format!("{}\n", unique_name("pw"))).unwrap();
    std::fs::write(
        dir.join("tripline.toml"),
        format!(
            "[mqtt]\nurl = \"{url}\"\nusername = \"{account}\"\npassword_file = \"mqtt-password\"\n\
             [ingest]\nworkers = 2\n[http]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let (a, b) = (unique_name("va"), unique_name("vb"));
    ok_stdout(&dir, &["tenant", "create", "acme"]);
    let secrets = ok_stdout(&dir, &["fleet", "add", "--tenant", "acme", &a, &b]);
    let (secret_a, secret_b) = (secret_of(&secrets, &a), secret_of(&secrets, &b));
    ok_stdout(&dir, &["fleet", "export", "--mosquitto", &auth_dir]);
    let acl = std::fs::read_to_string(Path::new(&auth_dir).join("acl")).unwrap();
    assert!(acl.contains("pattern write vehicles/%u/telemetry"), "{acl}");
    let reloaded = std::process::Command::new("bash").args([script.as_str(), "reload", "mosquitto"]).status().unwrap();
    assert!(reloaded.success());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut running = start(&dir);
    assert!(connect(&url, "anonymous", None).await.is_err(), "anonymous refused");
    assert!(connect(&url, "guess", Some((&a, "guess"))).await.is_err(), "a wrong secret refused");
    assert!(connect(&url, "b-as-a", Some((&a, &secret_b))).await.is_err(), "another vehicle's secret refused");

    // A, under tripline's client id (the broker makes it A's user name), publishes to B's topic
    // (denied) and to its own (lands): tripline kept its session throughout.
    let (client, mut eventloop) = connect(&url, &account, Some((&a, &secret_a))).await.unwrap();
    let t0 = t0();
    let points = |v| tripline_testkit::fleet_message_points(t0, v, 0, 5);
    let into_b = tripline_model::encode_telemetry(Some(&TripId::parse("into-b").unwrap()), &points(0));
    publish_one(&client, &mut eventloop, format!("vehicles/{b}/telemetry"), into_b).await;
    let own = tripline_model::encode_telemetry(Some(&TripId::parse("own-a").unwrap()), &points(1));
    publish_one(&client, &mut eventloop, format!("vehicles/{a}/telemetry"), own).await;
    let (client_b, mut eventloop_b) = connect(&url, "b", Some((&b, &secret_b))).await.unwrap();
    let own_b = tripline_model::encode_telemetry(Some(&TripId::parse("own-b").unwrap()), &points(2));
    publish_one(&client_b, &mut eventloop_b, format!("vehicles/{b}/telemetry"), own_b).await;

    let store_path = dir.join("tripline-data/store");
    let tenant = TenantId::parse("acme").unwrap();
    let count = |vehicle: &str, trip: &str| {
        let (vehicle, trip, tenant, path) =
            (VehicleId::parse(vehicle).unwrap(), TripId::parse(trip).unwrap(), tenant.clone(), store_path.clone());
        async move {
            let store = EmbeddedStore::open(&EmbeddedConfig { path, retention_s: 86_400, ..EmbeddedConfig::default() })
                .unwrap();
            store.trip_of_vehicle(&tenant, &vehicle, &trip).await.unwrap().map(|t| t.summary.point_count)
        }
    };
    // tripline acknowledges the two messages the broker let through (A's own and B's), each once
    // durable.
    wait_for_acks(&running, 2).await;
    sigterm(&mut running);
    assert_eq!(count(&b, "own-b").await, Some(5), "B's own message landed");
    assert_eq!(count(&a, "own-a").await, Some(5), "A's own message landed: tripline's session was not taken over");
    assert_eq!(count(&b, "into-b").await, None, "A's publish to B's topic landed nothing");
}
