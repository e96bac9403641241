//! The real services answer as tripline will use them: the `scylla` driver against Cassandra,
//! `rumqttc` against Mosquitto at QoS 1 with payloads near the contract's 256 KiB limit.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use tripline_testkit::{Service, mqtt_host_port, unique_name};

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A session with the test Cassandra's credentials (it requires a password).
async fn cql_session(nodes: &str) -> Session {
    let mut builder = SessionBuilder::new().known_nodes(nodes.split(',').map(str::trim));
    if let (Ok(user), Ok(password)) =
        (std::env::var("TRIPLINE_TEST_CQL_USERNAME"), std::env::var("TRIPLINE_TEST_CQL_PASSWORD"))
    {
        builder = builder.user(user, password);
    }
    builder.build().await.expect("connect to Cassandra")
}

#[tokio::test]
async fn cassandra_keyspace_stores_and_returns_rows_in_clustering_order() {
    let Some(nodes) = Service::Cql.address() else { return };
    let session = cql_session(&nodes).await;

    let version_rows = session
        .query_unpaged("SELECT release_version FROM system.local", &[])
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (version,): (String,) = version_rows.first_row().unwrap();
    eprintln!("cassandra release_version {version}");

    let ks = unique_name("smoke");
    session
        .query_unpaged(
            format!("CREATE KEYSPACE {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', 'datacenter1': 1}}"),
            &[],
        )
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("CREATE TABLE {ks}.points (vehicle_id text, seq bigint, lat double, lon double, PRIMARY KEY (vehicle_id, seq))"),
            &[],
        )
        .await
        .unwrap();
    let insert = session
        .prepare(format!("INSERT INTO {ks}.points (vehicle_id, seq, lat, lon) VALUES (?, ?, ?, ?)"))
        .await
        .unwrap();
    // Written in reverse to show the clustering order, twice to show rewrites are idempotent.
    for _ in 0..2 {
        for seq in (0..100_i64).rev() {
            session.execute_unpaged(&insert, ("car-1", seq, 52.5 + seq as f64 * 1e-4, 13.4)).await.unwrap();
        }
    }

    let rows = session
        .query_unpaged(format!("SELECT seq, lat, lon FROM {ks}.points WHERE vehicle_id = ?"), ("car-1",))
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let got: Vec<(i64, f64, f64)> = rows.rows::<(i64, f64, f64)>().unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(got.len(), 100);
    for (i, (seq, lat, lon)) in got.iter().enumerate() {
        assert_eq!(*seq, i as i64);
        assert_eq!(*lat, 52.5 + i as f64 * 1e-4);
        assert_eq!(*lon, 13.4);
    }

    session.query_unpaged(format!("DROP KEYSPACE {ks}"), &[]).await.unwrap();
}

fn mqtt_options(url: &str, client_id: &str) -> MqttOptions {
    let (host, port) = mqtt_host_port(url);
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(10));
    // rumqttc's default packet limit (10 KiB) is far below the contract's 256 KiB.
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options
}

#[tokio::test]
async fn mosquitto_delivers_qos1_messages_in_order_including_200_kib() {
    let Some(url) = Service::Mqtt.address() else { return };
    let topic = format!("tripline-smoke/{}", unique_name("t"));
    let mut payloads: Vec<Vec<u8>> = (0..20).map(|i| format!("{{\"n\": {i}}}").into_bytes()).collect();
    payloads.insert(10, vec![b'x'; 200 * 1024]);
    let expected = payloads.clone();

    let (subscriber, mut sub_loop) = AsyncClient::new(mqtt_options(&url, &unique_name("sub")), 64);
    subscriber.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .expect("subscription acknowledged");

    let wanted = expected.len();
    let receiver = tokio::spawn(async move {
        let mut received = Vec::new();
        while received.len() < wanted {
            if let Event::Incoming(Packet::Publish(publish)) = sub_loop.poll().await.unwrap() {
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                received.push(publish.payload.to_vec());
            }
        }
        received
    });

    let (publisher, mut pub_loop) = AsyncClient::new(mqtt_options(&url, &unique_name("pub")), 64);
    for payload in payloads {
        publisher.publish(&topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    }
    let mut pubacks = 0;
    tokio::time::timeout(TEST_TIMEOUT, async {
        while pubacks < wanted {
            if let Event::Incoming(Packet::PubAck(_)) = pub_loop.poll().await.unwrap() {
                pubacks += 1;
            }
        }
    })
    .await
    .expect("every publish acknowledged by the broker");

    let received = tokio::time::timeout(TEST_TIMEOUT, receiver).await.expect("all messages delivered").unwrap();
    assert_eq!(received.len(), expected.len());
    assert_eq!(received[10].len(), 200 * 1024);
    assert_eq!(received, expected);
}
