//! The embedded MQTT endpoint, in process, with rumqttc's 3.1.1 and 5 clients: a PUBACK leaves
//! only once its message is complete, in receive order; a vehicle publishes only as itself;
//! subscriptions are refused; a graceful close acknowledges what completes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tripline_ingest::endpoint::{Authenticate, Credentials, Endpoint, EndpointConfig, Identity, Refusal};
use tripline_ingest::source::{Delivery, SourceCounters};

/// Vehicles whose password is `secret-{id}`.
struct Secrets;

impl Authenticate for Secrets {
    fn authenticate(&self, c: Credentials) -> Pin<Box<dyn Future<Output = Result<Identity, Refusal>> + Send + '_>> {
        let answer = match (c.username, c.password) {
            _ if c.certificate_cn.is_some() => Ok(Identity::Vehicle(c.certificate_cn.unwrap_or_default())),
            (Some(user), Some(password)) if password == format!("secret-{user}") => Ok(Identity::Vehicle(user)),
            _ => Err(Refusal::BadCredentials),
        };
        Box::pin(std::future::ready(answer))
    }
}

struct Running {
    endpoint: Endpoint,
    deliveries: flume::Receiver<Delivery>,
    _status: watch::Receiver<SourceCounters>,
}

async fn start() -> Running {
    start_with(None).await
}

async fn start_with(tls: Option<tripline_ingest::tls::ServerTls>) -> Running {
    start_configured(EndpointConfig { tls, ..EndpointConfig::default() }).await
}

async fn start_configured(config: EndpointConfig) -> Running {
    let config = EndpointConfig { listen: "127.0.0.1:0".parse().unwrap(), in_flight: 8, ..config };
    let (out, deliveries) = flume::bounded(64);
    let (status, _status) = watch::channel(SourceCounters::default());
    let endpoint = Endpoint::start(config, Arc::new(Secrets), out, Duration::from_secs(5), status).await.unwrap();
    Running { endpoint, deliveries, _status }
}

fn v4_client(running: &Running, vehicle: &str, password: &str) -> (AsyncClient, EventLoop) {
    let addr = running.endpoint.local_addr();
    let mut options = MqttOptions::new(format!("client-{vehicle}"), addr.ip().to_string(), addr.port());
    options.set_credentials(vehicle, password);
    AsyncClient::new(options, 64)
}

/// Polls until `n` PUBACKs arrived (their packet ids in order), the connection closed, or `wait`
/// passed.
async fn pubacks(eventloop: &mut EventLoop, n: usize, wait: Duration) -> Vec<u16> {
    let mut acked = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        while acked.len() < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => acked.push(ack.pkid),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await;
    acked
}

/// Messages the client still has to send again (not acknowledged), after its connection ended.
fn unacknowledged(eventloop: &EventLoop) -> usize {
    eventloop.pending.iter().filter(|request| matches!(request, rumqttc::Request::Publish(_))).count()
}

async fn receive(running: &Running, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            tokio::time::timeout(Duration::from_secs(10), running.deliveries.recv_async()).await.unwrap().unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_leaves_only_once_its_message_is_durable_and_in_receive_order() {
    let running = start().await;
    let (client, mut eventloop) = v4_client(&running, "car-1", "secret-car-1");
    for n in 0..4 {
        client.publish("vehicles/car-1/telemetry", QoS::AtLeastOnce, false, vec![n]).await.unwrap();
    }
    // The messages arrive, nothing is acknowledged yet.
    let (acked, mut deliveries) =
        tokio::join!(pubacks(&mut eventloop, 1, Duration::from_millis(500)), receive(&running, 4));
    assert!(acked.is_empty(), "no PUBACK before completion: {acked:?}");
    assert_eq!(deliveries.iter().map(|d| d.publish.payload[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    // The last two complete first: still nothing, the first two are pending.
    let rest = deliveries.split_off(2);
    for delivery in rest {
        delivery.complete();
    }
    assert!(pubacks(&mut eventloop, 1, Duration::from_millis(300)).await.is_empty());
    for delivery in deliveries {
        delivery.complete();
    }
    assert_eq!(pubacks(&mut eventloop, 4, Duration::from_secs(5)).await, vec![1, 2, 3, 4], "all four, in order");
    let counters = running.endpoint.close().await.unwrap();
    assert_eq!((counters.received, counters.acknowledged), (4, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_a_vehicle_publishes_only_as_itself() {
    let running = start().await;
    let (_client, mut eventloop) = v4_client(&running, "car-1", "guess");
    match eventloop.poll().await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut anonymous = MqttOptions::new("nobody", "127.0.0.1", running.endpoint.local_addr().port());
    anonymous.set_keep_alive(Duration::from_secs(5));
    let (_client, mut eventloop) = AsyncClient::new(anonymous, 8);
    assert!(matches!(eventloop.poll().await, Err(rumqttc::ConnectionError::ConnectionRefused(_))));

    // 3.1.1: publishing to another vehicle's topic closes the connection without a PUBACK; the
    // message goes on only as the publisher's refused message (to be stored as its rejection).
    let (client, mut eventloop) = v4_client(&running, "car-1", "secret-car-1");
    client.publish("vehicles/car-2/telemetry", QoS::AtLeastOnce, false, vec![9]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => panic!("a refused message is not acknowledged on 3.1.1"),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    // The endpoint closes once the refusal is complete (stored), as the pipeline would make it.
    let refusal = async {
        let refused = receive(&running, 1).await.remove(0);
        let seen = (refused.publish.topic.clone(), refused.refused_publisher().cloned(), refused.vehicle());
        refused.complete();
        seen
    };
    let (closed, (topic, publisher, routed_as)) = tokio::join!(closed, refusal);
    assert_eq!(topic, "vehicles/car-2/telemetry");
    assert_eq!(publisher.as_ref().map(|v| v.as_str()), Some("car-1"));
    assert_eq!(routed_as, publisher, "routed as car-1's");
    assert!(closed.is_ok(), "the connection was closed");
    assert_eq!(unacknowledged(&eventloop), 1, "the client still holds the refused message");

    // 5: the PUBACK says not authorized, in its turn, once the refusal is complete; subscriptions
    // are refused.
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason, SubscribeReasonCode};
    let addr = running.endpoint.local_addr();
    let mut options = rumqttc::v5::MqttOptions::new("v5-car-1", addr.ip().to_string(), addr.port());
    options.set_credentials("car-1", "secret-car-1");
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 16);
    let v5_qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
    client.publish("vehicles/car-1/telemetry", v5_qos, false, vec![1]).await.unwrap();
    client.publish("vehicles/car-2/telemetry", v5_qos, false, vec![2]).await.unwrap();
    client.subscribe("vehicles/#", v5_qos).await.unwrap();
    let mut delivered = Vec::new();
    let mut reasons = Vec::new();
    let mut subscribed = None;
    tokio::time::timeout(Duration::from_secs(10), async {
        while reasons.len() < 2 || subscribed.is_none() {
            tokio::select! {
                event = eventloop.poll() => match event.unwrap() {
                    rumqttc::v5::Event::Incoming(P5::PubAck(ack)) => reasons.push((ack.pkid, ack.reason)),
                    rumqttc::v5::Event::Incoming(P5::SubAck(ack)) => subscribed = Some(ack.return_codes),
                    _ => {}
                },
                delivery = running.deliveries.recv_async(), if delivered.len() < 2 => {
                    let delivery = delivery.unwrap();
                    let refused_by = delivery.refused_publisher().map(|v| v.as_str().to_owned());
                    delivered.push((delivery.publish.topic.clone(), refused_by));
                    delivery.complete();
                }
            }
        }
    })
    .await
    .unwrap();
    let car = |n: u8| format!("vehicles/car-{n}/telemetry");
    assert_eq!(delivered, vec![(car(1), None), (car(2), Some("car-1".to_owned()))]);
    assert_eq!(reasons, vec![(1, PubAckReason::Success), (2, PubAckReason::NotAuthorized)], "in receive order");
    assert_eq!(subscribed, Some(vec![SubscribeReasonCode::NotAuthorized]));
    assert!(running.deliveries.try_recv().is_err(), "nothing else delivered");
    running.endpoint.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_close_acknowledges_what_completes_and_then_closes() {
    let running = start().await;
    let (client, mut eventloop) = v4_client(&running, "car-3", "secret-car-3");
    for n in 0..3 {
        client.publish("vehicles/car-3/telemetry", QoS::AtLeastOnce, false, vec![n]).await.unwrap();
    }
    let (_, deliveries) = tokio::join!(pubacks(&mut eventloop, 1, Duration::from_millis(200)), receive(&running, 3));
    let Running { endpoint, deliveries: _queue, _status } = running;
    let closing = tokio::spawn(endpoint.close());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for delivery in deliveries {
        delivery.complete();
    }
    // rumqttc may report the close before the PUBACKs read with it: then it has nothing to resend.
    let acked = pubacks(&mut eventloop, 3, Duration::from_secs(5)).await;
    assert!(acked == vec![1, 2, 3] || (eventloop.network.is_none() && unacknowledged(&eventloop) == 0), "{acked:?}");
    let counters = closing.await.unwrap().unwrap();
    assert_eq!((counters.received, counters.acknowledged, counters.ready), (3, 3, false));
    assert!(pubacks(&mut eventloop, 1, Duration::from_secs(5)).await.is_empty(), "the endpoint is closed");
    assert_eq!(unacknowledged(&eventloop), 0, "every message acknowledged before the close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_of_the_same_client_takes_over() {
    let running = start().await;
    let (first, mut first_loop) = v4_client(&running, "car-4", "secret-car-4");
    first.publish("vehicles/car-4/telemetry", QoS::AtLeastOnce, false, vec![1]).await.unwrap();
    let (_, taken) = tokio::join!(pubacks(&mut first_loop, 1, Duration::from_millis(200)), receive(&running, 1));
    let (second, mut second_loop) = v4_client(&running, "car-4", "secret-car-4");
    second.publish("vehicles/car-4/telemetry", QoS::AtLeastOnce, false, vec![2]).await.unwrap();
    let (acked, again) = tokio::join!(
        async {
            let mut acked = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match second_loop.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(ack))) => acked.push(ack.pkid),
                        Ok(_) => {}
                        Err(e) => panic!("the new connection stays: {e}"),
                    }
                    if !acked.is_empty() {
                        break;
                    }
                }
            })
            .await;
            acked
        },
        async {
            let delivery = receive(&running, 1).await.pop().unwrap();
            delivery.complete();
        }
    );
    let () = again;
    assert_eq!(acked, vec![1]);
    // The old connection was closed; completing its message acknowledges nothing there.
    for delivery in taken {
        delivery.complete();
    }
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first_loop.poll().await {
                Err(_) => break true,
                Ok(Event::Incoming(Packet::PubAck(_))) => break false,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(gone, "the first connection was closed without an acknowledgement");
    running.endpoint.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_vehicle_connects_with_its_certificate_or_its_password() {
    use tripline_ingest::tls;
    let Some(tls_dir) = tripline_testkit::Service::Tls.address() else { return };
    let tls_dir = std::path::PathBuf::from(tls_dir);
    let scratch = tripline_testkit::scratch_dir("tls");
    let out = scratch.path().to_path_buf();
    let ca = tls_dir.join("ca.pem");
    let server = tls::server_config(&tls_dir.join("server.pem"), &tls_dir.join("server.key"), Some(&ca)).unwrap();
    let running = start_with(Some(tls::Tls(server))).await;
    let port = running.endpoint.local_addr().port();
    let over_tls = |client_id: &str, config: std::sync::Arc<rustls::ClientConfig>| {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config)));
        options
    };

    // A certificate whose common name is the vehicle id, no password: car-7 publishes as itself.
    let (cert, key) = tripline_testkit::signed_certificate(&tls_dir, &out, "car-7");
    let options = over_tls("tls-car-7", tls::client_config(&ca, Some((&cert, &key))).unwrap());
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    client.publish("vehicles/car-7/telemetry", QoS::AtLeastOnce, false, vec![7]).await.unwrap();
    let complete = async {
        let delivery = receive(&running, 1).await.remove(0);
        assert_eq!(
            (delivery.publish.topic.as_str(), delivery.publish.payload.to_vec()),
            ("vehicles/car-7/telemetry", vec![7])
        );
        delivery.complete();
    };
    let (acked, ()) = tokio::join!(pubacks(&mut eventloop, 1, Duration::from_secs(10)), complete);
    assert_eq!(acked, vec![1], "acknowledged over TLS");

    // No certificate, the password instead.
    let mut options = over_tls("tls-car-1", tls::client_config(&ca, None).unwrap());
    options.set_credentials("car-1", "secret-car-1");
    let (_client, mut eventloop) = AsyncClient::new(options, 8);
    assert!(matches!(eventloop.poll().await, Ok(Event::Incoming(Packet::ConnAck(_)))), "password over TLS");

    // Plain MQTT to the TLS listener gets no CONNACK.
    let (_client, mut eventloop) = v4_client(&running, "car-1", "secret-car-1");
    let plain = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
    assert!(!matches!(plain, Ok(Ok(Event::Incoming(Packet::ConnAck(_))))), "{plain:?}");
    running.endpoint.close().await.unwrap();
}

#[tokio::test]
async fn the_tls_handshake_and_the_connect_share_one_connect_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tripline_ingest::tls;
    let Some(tls_dir) = tripline_testkit::Service::Tls.address() else { return };
    let tls_dir = std::path::PathBuf::from(tls_dir);
    let ca = tls_dir.join("ca.pem");
    let server = tls::server_config(&tls_dir.join("server.pem"), &tls_dir.join("server.key"), Some(&ca)).unwrap();
    let config = EndpointConfig { tls: Some(tls::Tls(server)), connect_timeout_ms: 2_000, ..EndpointConfig::default() };
    let running = start_configured(config).await;
    let addr = running.endpoint.local_addr();
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(&ca, None).unwrap());
    // MQTT 3.1.1 CONNECT of car-1 with its password, written by hand to time it.
    let mut connect = vec![0x10, 37, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 4];
    connect.extend_from_slice(b"slow");
    connect.extend_from_slice(&[0, 5]);
    connect.extend_from_slice(b"car-1");
    connect.extend_from_slice(&[0, 12]);
    connect.extend_from_slice(b"secret-car-1");
    // Returns the first byte of the endpoint's answer to CONNECT (None: the connection closed),
    // with `pause` before the handshake and again before CONNECT.
    let answer = |pause: Duration| {
        let (connector, connect) = (connector.clone(), connect.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(pause).await;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let mut stream = connector.connect(name, tcp).await.ok()?;
            tokio::time::sleep(pause).await;
            stream.write_all(&connect).await.ok()?;
            let mut first = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut first)).await {
                Ok(Ok(1)) => Some(first[0]),
                _ => None,
            }
        }
    };
    assert_eq!(answer(Duration::ZERO).await, Some(0x20), "a CONNACK at once");
    // Each step within the timeout, both together beyond it.
    assert_eq!(answer(Duration::from_millis(1_300)).await, None, "closed");
    running.endpoint.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_not_read_while_the_pipeline_holds_the_whole_byte_budget() {
    // 8 KiB for everything in flight: two vehicles of 3 KiB messages get two through, then wait.
    let budget = tripline_ingest::budget::ByteBudget::new(8 * 1024);
    let running = start_configured(EndpointConfig { budget: budget.clone(), ..EndpointConfig::default() }).await;
    let (a, mut a_loop) = v4_client(&running, "car-a", "secret-car-a");
    let (b, mut b_loop) = v4_client(&running, "car-b", "secret-car-b");
    for n in 0..3 {
        a.publish("vehicles/car-a/telemetry", QoS::AtLeastOnce, false, vec![n; 3 * 1024]).await.unwrap();
        b.publish("vehicles/car-b/telemetry", QoS::AtLeastOnce, false, vec![n; 3 * 1024]).await.unwrap();
    }
    let polling = tokio::spawn(async move {
        let acked = tokio::join!(
            pubacks(&mut a_loop, 3, Duration::from_secs(20)),
            pubacks(&mut b_loop, 3, Duration::from_secs(20))
        );
        (acked.0.len(), acked.1.len())
    });
    let first = receive(&running, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(running.deliveries.is_empty(), "a third message would exceed the budget");
    assert!(budget.in_flight_bytes() <= 8 * 1024, "{} bytes in flight", budget.in_flight_bytes());
    // Completions make room: the rest comes, two at a time.
    let mut received = first.len();
    let mut batch = first;
    while received < 6 {
        for delivery in batch.drain(..) {
            delivery.complete();
        }
        batch = receive(&running, 2.min(6 - received)).await;
        received += batch.len();
    }
    for delivery in batch {
        delivery.complete();
    }
    assert_eq!(polling.await.unwrap(), (3, 3), "every message acknowledged in the end");
    assert_eq!(budget.in_flight_bytes(), 0, "completed messages give their bytes back");
    running.endpoint.close().await.unwrap();
}
