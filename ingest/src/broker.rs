//! The embedded MQTT broker of `tripline run`: `rumqttd` in-process, for a machine with nothing
//! else installed.
//!
//! Vehicles connect to the public address (default `127.0.0.1:1883`), which tripline owns: each
//! connection is relayed to rumqttd's internal listener for its protocol (MQTT 3.1.1 or 5, read
//! from the CONNECT packet). Owning the door is what makes a graceful stop lossless:
//! [`EmbeddedBroker::close_doors`] stops accepting and cuts every vehicle connection, so the broker
//! acknowledges no new message to any vehicle (a message cut in flight was not acknowledged, and
//! the vehicle sends it again when it reconnects); ingest then drains what the broker already
//! acknowledged before the process exits.
//!
//! Ingest reads the broker through an in-process link ([`run_link_source`]), not over TCP: the
//! broker's memory is the process's memory, so a per-message acknowledgement between the two
//! would protect nothing a crash does not take anyway, and rumqttd allows only 100 QoS 1
//! messages in flight per connection, which would cap throughput. Flow control instead: the link
//! is read only while the pipeline has room; when its buffer is full the broker pauses the link
//! and keeps the messages in its log. Completions are still tracked, so a graceful stop knows
//! when everything taken from the broker is durable.
//!
//! The broker keeps messages in memory, in a log of [`EmbeddedBrokerConfig::buffer_bytes`]: what
//! a hard crash of the process loses, and how far ingest may fall behind before the oldest
//! messages are overwritten, are stated in the README. Production deployments use a persistent
//! external broker.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use rumqttc::{Publish, QoS};

use crate::IngestError;
use crate::ack::{AckTracker, Ticket};
use crate::source::{Delivery, SourceCounters};

/// Segments of the broker's in-memory log: the log holds `buffer_bytes` in this many parts and
/// drops the oldest part when full.
const LOG_SEGMENTS: usize = 16;
/// While the pipeline is full, how often the link source looks again.
const PIPELINE_FULL_RETRY: Duration = Duration::from_millis(1);
/// How long the relay waits for a new connection's CONNECT packet before giving up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded broker's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    /// Where vehicles connect.
    pub listen: SocketAddr,
    /// Memory for messages the broker holds, bytes.
    pub buffer_bytes: usize,
    /// Largest message accepted, bytes (above the contract's 256 KiB, so an oversized message
    /// reaches tripline and is rejected as `payload_too_large` instead of closing the connection).
    pub max_packet_bytes: usize,
    /// Connections at most (vehicles and tripline's own).
    pub max_connections: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: default_listen(),
            buffer_bytes: 256 * 1024 * 1024,
            max_packet_bytes: 1024 * 1024,
            max_connections: 10_000,
        }
    }
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    public: SocketAddr,
    doors_open: watch::Sender<bool>,
}

/// Ingest's in-process link to the embedded broker (see [`run_link_source`]).
pub struct BrokerLink {
    tx: rumqttd::local::LinkTx,
    rx: rumqttd::local::LinkRx,
}

impl std::fmt::Debug for BrokerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerLink")
    }
}

/// A free port on the loopback interface, for rumqttd's internal listeners (it binds them itself).
fn free_loopback_port() -> Result<SocketAddr, IngestError> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| IngestError::Broker { detail: format!("finding a free internal port: {e}") })?;
    Ok(probe)
}

fn server_settings(name: &str, listen: SocketAddr, config: &EmbeddedBrokerConfig) -> rumqttd::ServerSettings {
    rumqttd::ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: config.max_packet_bytes,
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

impl EmbeddedBroker {
    /// Binds the public address and starts rumqttd on internal loopback ports, with ingest's
    /// in-process link (rumqttd needs its links before it starts).
    pub async fn start(config: &EmbeddedBrokerConfig) -> Result<(EmbeddedBroker, BrokerLink), IngestError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| IngestError::Broker { detail: format!("listening on {}: {e}", config.listen) })?;
        let public = listener.local_addr().map_err(|e| IngestError::Broker { detail: e.to_string() })?;
        let (internal_v4, internal_v5) = (free_loopback_port()?, free_loopback_port()?);
        let broker_config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: config.max_connections,
                max_outgoing_packet_count: 1000,
                max_segment_size: (config.buffer_bytes / LOG_SEGMENTS).max(config.max_packet_bytes),
                max_segment_count: LOG_SEGMENTS,
                ..rumqttd::RouterConfig::default()
            },
            v4: Some(HashMap::from([("v4".to_owned(), server_settings("v4", internal_v4, config))])),
            v5: Some(HashMap::from([("v5".to_owned(), server_settings("v5", internal_v5, config))])),
            ..rumqttd::Config::default()
        };
        let mut broker = rumqttd::Broker::new(broker_config);
        let (tx, rx) = broker
            .link("tripline-ingest")
            .map_err(|e| IngestError::Broker { detail: format!("linking ingest to the broker: {e}") })?;
        std::thread::Builder::new()
            .name("tripline-broker".to_owned())
            .spawn(move || {
                if let Err(error) = broker.start() {
                    tracing::error!(error = %error, "embedded broker stopped");
                }
            })
            .map_err(|e| IngestError::Broker { detail: format!("starting the broker thread: {e}") })?;
        wait_listening(internal_v4).await?;
        wait_listening(internal_v5).await?;

        let (doors_open, doors) = watch::channel(true);
        tokio::spawn(accept(listener, internal_v4, internal_v5, doors));
        Ok((EmbeddedBroker { public, doors_open }, BrokerLink { tx, rx }))
    }

    /// Where vehicles connect.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
    }

    /// Stops accepting vehicles and cuts every vehicle connection: from now on the broker
    /// acknowledges nothing new to any vehicle.
    pub fn close_doors(&self) {
        self.doors_open.send_replace(false);
    }
}

async fn wait_listening(addr: SocketAddr) -> Result<(), IngestError> {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(IngestError::Broker { detail: format!("the embedded broker did not start listening on {addr}") })
}

/// Resolves once the doors close (or the broker is gone).
async fn closed(doors: &mut watch::Receiver<bool>) {
    let _ = doors.wait_for(|open| !*open).await;
}

async fn accept(listener: TcpListener, v4: SocketAddr, v5: SocketAddr, doors: watch::Receiver<bool>) {
    let mut closing = doors.clone();
    loop {
        tokio::select! {
            () = closed(&mut closing) => return,
            accepted = listener.accept() => match accepted {
                Ok((vehicle, _)) => {
                    tokio::spawn(relay(vehicle, v4, v5, doors.clone()));
                }
                Err(error) => {
                    tracing::warn!(error = %error, "embedded broker: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// What the first bytes of a connection say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectPeek {
    /// An MQTT CONNECT asking for this protocol level (4: 3.1.1, 5: 5).
    Level(u8),
    /// Not enough bytes yet.
    Incomplete,
    /// Not an MQTT CONNECT.
    NotMqtt,
}

/// Reads the protocol level from the start of a CONNECT packet.
pub fn connect_protocol_level(bytes: &[u8]) -> ConnectPeek {
    let Some((&first, rest)) = bytes.split_first() else { return ConnectPeek::Incomplete };
    if first != 0x10 {
        return ConnectPeek::NotMqtt;
    }
    // Remaining length: 1 to 4 bytes, 7 bits each.
    let mut header = 0;
    loop {
        let Some(&byte) = rest.get(header) else { return ConnectPeek::Incomplete };
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header == 4 {
            return ConnectPeek::NotMqtt;
        }
    }
    let body = &rest[header..];
    let Some(name_len) = body.get(..2).map(|n| usize::from(u16::from_be_bytes([n[0], n[1]]))) else {
        return ConnectPeek::Incomplete;
    };
    match body.get(2 + name_len) {
        Some(&level) => ConnectPeek::Level(level),
        None => ConnectPeek::Incomplete,
    }
}

async fn relay(mut vehicle: TcpStream, v4: SocketAddr, v5: SocketAddr, mut doors: watch::Receiver<bool>) {
    let _ = vehicle.set_nodelay(true);
    let mut peeked = [0u8; 16];
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let level = loop {
        let n = match tokio::time::timeout_at(deadline, vehicle.peek(&mut peeked)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return,
        };
        match connect_protocol_level(&peeked[..n]) {
            ConnectPeek::Level(level) => break level,
            ConnectPeek::Incomplete if n < peeked.len() => tokio::time::sleep(Duration::from_millis(5)).await,
            _ => return,
        }
    };
    let target = if level >= 5 { v5 } else { v4 };
    let Ok(mut broker) = TcpStream::connect(target).await else { return };
    let _ = broker.set_nodelay(true);
    tokio::select! {
        () = closed(&mut doors) => {}
        _ = tokio::io::copy_bidirectional(&mut vehicle, &mut broker) => {}
    }
}

/// Runs ingest's source on the in-process link: subscribes to `topics`, hands each message on
/// as a [`Delivery`] while `out` has room, and counts completions (`acknowledged` in the
/// counters: durable). On shutdown it stops taking messages and waits up to `drain` for the
/// deliveries handed on to complete.
pub async fn run_link_source(
    link: BrokerLink,
    topics: Vec<String>,
    out: flume::Sender<Delivery>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    status: watch::Sender<SourceCounters>,
) -> Result<SourceCounters, IngestError> {
    let BrokerLink { mut tx, mut rx } = link;
    for topic in &topics {
        tx.subscribe(topic.clone())
            .map_err(|e| IngestError::Broker { detail: format!("subscribing to {topic}: {e}") })?;
    }
    let (done_tx, done) = flume::unbounded::<Ticket>();
    let mut tracker: AckTracker<Instant> = AckTracker::default();
    tracker.new_connection();
    let mut counters = SourceCounters { connections: 1, ready: true, ..SourceCounters::default() };
    status.send_replace(counters.clone());
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => if *shutdown.borrow() { break },
            ticket = done.recv_async() => {
                if let Ok(ticket) = ticket {
                    completed(tracker.complete(ticket), &mut counters);
                }
            }
            // Reads the link only while the pipeline has room: meanwhile the broker keeps
            // what arrives in its log. `next` is cancel-safe (nothing is taken until it returns).
            notification = rx.next(), if !out.is_full() => {
                let notification =
                    notification.map_err(|e| IngestError::Broker { detail: format!("the broker link closed: {e}") })?;
                match notification {
                    Some(rumqttd::Notification::Forward(forward)) => {
                        let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                        let publish = Publish::from_bytes(topic, QoS::AtMostOnce, forward.publish.payload);
                        counters.received += 1;
                        let ticket = tracker.register(Instant::now());
                        // Only this task sends, and there was room: this does not wait.
                        if out.send_async(Delivery::new(publish, ticket, done_tx.clone())).await.is_err() {
                            break;
                        }
                    }
                    Some(rumqttd::Notification::Unschedule) => {
                        // The broker paused the link after filling its buffer; we took all of it.
                        rx.wake()
                            .await
                            .map_err(|e| IngestError::Broker { detail: format!("the broker link closed: {e}") })?;
                    }
                    _ => {}
                }
            }
            () = tokio::time::sleep(PIPELINE_FULL_RETRY), if out.is_full() => {
                if out.is_disconnected() {
                    break;
                }
            }
        }
        crate::source::report(&status, &counters, tracker.in_flight());
    }
    drop(out);
    drop(done_tx);
    let deadline = tokio::time::Instant::now() + drain;
    while tracker.in_flight() > 0 {
        match tokio::time::timeout_at(deadline, done.recv_async()).await {
            Ok(Ok(ticket)) => completed(tracker.complete(ticket), &mut counters),
            _ => break,
        }
    }
    counters.ready = false;
    status.send_replace(counters.clone());
    Ok(counters)
}

/// Counts messages made durable. The broker acknowledged them to their vehicles on receipt; the
/// acknowledgement metrics count them here, once durable, as for an external broker.
fn completed(received_at: Vec<Instant>, counters: &mut SourceCounters) {
    for at in received_at {
        counters.acknowledged += 1;
        crate::metrics::acknowledged(at.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_level_is_read_from_a_connect_packet() {
        // CONNECT, remaining length 12, "MQTT", level 4.
        let v4 = [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60];
        assert_eq!(connect_protocol_level(&v4), ConnectPeek::Level(4));
        let v5 = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0];
        assert_eq!(connect_protocol_level(&v5), ConnectPeek::Level(5));
        // A two-byte remaining length.
        let long = [0x10, 0x80, 0x01, 0, 4, b'M', b'Q', b'T', b'T', 4];
        assert_eq!(connect_protocol_level(&long), ConnectPeek::Level(4));
    }

    #[test]
    fn a_partial_connect_waits_and_other_bytes_are_refused() {
        assert_eq!(connect_protocol_level(&[]), ConnectPeek::Incomplete);
        assert_eq!(connect_protocol_level(&[0x10, 12, 0, 4, b'M']), ConnectPeek::Incomplete);
        assert_eq!(connect_protocol_level(b"GET / HTTP/1.1"), ConnectPeek::NotMqtt);
        assert_eq!(connect_protocol_level(&[0x10, 0xff, 0xff, 0xff, 0xff]), ConnectPeek::NotMqtt);
    }
}
