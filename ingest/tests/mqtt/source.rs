//! The MQTT source against a real Mosquitto: acknowledgement only on completion, redelivery of
//! the rest through the persistent session, large messages intact.

use std::collections::BTreeSet;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tripline_ingest::source::{Delivery, MqttSourceConfig, SourceCounters, run_source};
use tripline_testkit::{Service, mqtt_host_port, unique_name};

struct Running {
    deliveries: flume::Receiver<Delivery>,
    shutdown: watch::Sender<bool>,
    status: watch::Receiver<SourceCounters>,
    task: tokio::task::JoinHandle<SourceCounters>,
}

async fn start(url: &str, client_id: &str, vehicle: &str) -> Running {
    let (host, port) = mqtt_host_port(url);
    let config = MqttSourceConfig {
        host,
        port,
        client_id: client_id.to_owned(),
        topics: vec![format!("vehicles/{vehicle}/telemetry")],
        ..MqttSourceConfig::default()
    };
    let (out, deliveries) = flume::bounded(64);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (status_tx, mut status) = watch::channel(SourceCounters::default());
    let task =
        tokio::spawn(
            async move { run_source(config, out, shutdown_rx, Duration::from_secs(2), status_tx).await.unwrap() },
        );
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.ready)).await.expect("source ready").unwrap();
    Running { deliveries, shutdown, status, task }
}

impl Running {
    async fn stop(self) -> SourceCounters {
        self.shutdown.send(true).unwrap();
        drop(self.status);
        tokio::time::timeout(Duration::from_secs(20), self.task).await.unwrap().unwrap()
    }
}

async fn publish_all(url: &str, topic: &str, payloads: Vec<Vec<u8>>) {
    let (host, port) = mqtt_host_port(url);
    let mut options = MqttOptions::new(unique_name("pub"), host, port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let n = payloads.len();
    // Publish from a task: the request channel is bounded and drains only while the event loop
    // below is polled.
    let topic = topic.to_owned();
    let sender = tokio::spawn(async move {
        for payload in payloads {
            client.publish(&topic, QoS::AtLeastOnce, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .unwrap();
    sender.await.unwrap();
}

async fn receive(running: &Running, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            tokio::time::timeout(Duration::from_secs(20), running.deliveries.recv_async()).await.unwrap().unwrap(),
        );
    }
    out
}

fn number(delivery: &Delivery) -> u32 {
    String::from_utf8_lossy(&delivery.publish.payload).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_completed_messages_are_acknowledged_and_the_rest_are_redelivered() {
    let Some(url) = Service::Mqtt.address() else { return };
    let (client_id, vehicle) = (unique_name("ingest"), unique_name("car"));
    let topic = format!("vehicles/{vehicle}/telemetry");

    let first = start(&url, &client_id, &vehicle).await;
    publish_all(&url, &topic, (0..20).map(|n| n.to_string().into_bytes()).collect()).await;
    let mut deliveries = receive(&first, 20).await;
    assert_eq!(deliveries.iter().map(number).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>(), "in publish order");
    // Complete the first ten out of order; leave the others incomplete (as if not yet durable).
    let rest = deliveries.split_off(10);
    for delivery in deliveries.into_iter().rev() {
        delivery.complete();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(rest);
    let counters = first.stop().await;
    assert_eq!((counters.received, counters.acknowledged), (20, 10));

    // Same client id: the persistent session redelivers exactly the unacknowledged ten.
    let second = start(&url, &client_id, &vehicle).await;
    let redelivered = receive(&second, 10).await;
    let numbers: BTreeSet<u32> = redelivered.iter().map(number).collect();
    assert_eq!(numbers, (10..20).collect());
    for delivery in redelivered {
        delivery.complete();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counters = second.stop().await;
    assert_eq!(counters.acknowledged, 10);

    let third = start(&url, &client_id, &vehicle).await;
    let nothing = tokio::time::timeout(Duration::from_secs(1), third.deliveries.recv_async()).await;
    assert!(nothing.is_err(), "everything acknowledged stays acknowledged");
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_beyond_the_contract_limit_still_arrive_to_be_rejected() {
    let Some(url) = Service::Mqtt.address() else { return };
    let (client_id, vehicle) = (unique_name("ingest"), unique_name("car"));
    let running = start(&url, &client_id, &vehicle).await;
    let big = vec![b'x'; 300 * 1024];
    publish_all(&url, &format!("vehicles/{vehicle}/telemetry"), vec![big.clone(), b"after".to_vec()]).await;
    let deliveries = receive(&running, 2).await;
    assert_eq!(deliveries[0].publish.payload.len(), big.len());
    assert_eq!(&deliveries[1].publish.payload[..], b"after", "the connection survived the large message");
    for d in deliveries {
        d.complete();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counters = running.stop().await;
    assert_eq!((counters.acknowledged, counters.connections), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_pipeline_loses_no_delivery_and_keeps_the_order() {
    let Some(url) = Service::Mqtt.address() else { return };
    let (host, port) = mqtt_host_port(&url);
    let vehicle = unique_name("car");
    let config = MqttSourceConfig {
        host,
        port,
        client_id: unique_name("ingest"),
        topics: vec![format!("vehicles/{vehicle}/telemetry")],
        ..MqttSourceConfig::default()
    };
    // A pipeline that holds one delivery at a time and is slow to take the next.
    let (out, deliveries) = flume::bounded(1);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (status_tx, mut status) = watch::channel(SourceCounters::default());
    let task =
        tokio::spawn(
            async move { run_source(config, out, shutdown_rx, Duration::from_secs(2), status_tx).await.unwrap() },
        );
    tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.ready)).await.unwrap().unwrap();
    publish_all(&url, &format!("vehicles/{vehicle}/telemetry"), (0..200).map(|n| n.to_string().into_bytes()).collect())
        .await;
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let delivery = tokio::time::timeout(Duration::from_secs(20), deliveries.recv_async())
            .await
            .expect("no delivery lost")
            .unwrap();
        seen.push(number(&delivery));
        delivery.complete();
        if seen.len() % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(seen, (0..200).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.send(true).unwrap();
    let counters = tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap();
    assert_eq!((counters.received, counters.acknowledged), (200, 200));
}
