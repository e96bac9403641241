//! The embedded MQTT endpoint of `tripline run`: vehicles connect to tripline itself.
//!
//! Each connection speaks MQTT 3.1.1 or 5 (read from its CONNECT packet; packets are decoded
//! and encoded by `rumqttc`'s codecs), is authenticated ([`Authenticate`]), and hands each PUBLISH
//! straight to the pipeline as a [`Delivery`]. A QoS 1 message's PUBACK leaves only once
//! everything derived from it is durable, in receive order per connection ([`AckTracker`]), so a
//! hard crash of the process loses nothing a vehicle was told is stored: the vehicle sends it
//! again.
//!
//! Memory is bounded by design: at most [`EndpointConfig::max_connections`] connections, and
//! per connection at most [`EndpointConfig::in_flight`] messages received and not yet
//! acknowledged — beyond that the connection is not read (TCP pushes back on the vehicle), which
//! is also how a full pipeline slows vehicles down.
//!
//! Sessions hold no state on the endpoint's side: subscriptions are refused (tripline sends
//! vehicles nothing) and QoS 2 is not offered, so every session's server state is empty and the
//! endpoint has it for any client, also after a restart or a crash. A client asking for a
//! persistent session (clean session / clean start 0) is therefore always told its session is
//! present, and sends again what was not acknowledged — which is what makes a crash lose
//! nothing (a client told "no session" would drop its unacknowledged messages). A client that
//! connects again with the same client id (under the same identity) takes over the old
//! connection.
//!
//! A graceful stop ([`Endpoint::close`]) stops accepting and reading, waits up to the drain time
//! for what was received to become durable, acknowledges it, and closes every connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::{Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tripline_model::VehicleId;

use crate::IngestError;
use crate::ack::{AckTracker, Ticket};
use crate::budget::BytePermit;
use crate::source::{Delivery, SourceCounters};

/// While the pipeline is full, how often a connection tries again to hand its message on.
const PIPELINE_FULL_RETRY: Duration = Duration::from_millis(1);
/// Bytes read from a socket at a time: an idle connection waits with the smallest chunk; a
/// connection whose reads fill their chunk reads in larger ones (the buffer also grows to the
/// largest packet, and starts small again once empty).
const READ_CHUNK_MIN: usize = 1024;
const READ_CHUNK_MAX: usize = 64 * 1024;
/// A client asking for no keep-alive is still dropped after this long without a packet.
const IDLE_LIMIT: Duration = Duration::from_secs(3600);

/// The endpoint's settings (`[mqtt]` in the configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// Where vehicles connect.
    pub listen: SocketAddr,
    /// Largest packet accepted, bytes (above the contract's 256 KiB, so an oversized message
    /// reaches tripline and is rejected as `payload_too_large` instead of closing the connection).
    pub max_packet_bytes: usize,
    /// Connections at most; more are closed at once.
    pub max_connections: usize,
    /// Messages per connection received and not yet acknowledged at most (MQTT 5's receive
    /// maximum); the connection is not read while it has this many.
    pub in_flight: usize,
    /// How long a new connection may take to complete its TLS handshake (with TLS) and send its
    /// CONNECT, both together, milliseconds.
    pub connect_timeout_ms: u64,
    /// TLS on the listener (and, with a client CA, vehicles' client certificates); none: TCP.
    #[serde(skip)]
    pub tls: Option<crate::tls::ServerTls>,
    /// The in-flight budget, shared with the rest of the pipeline (`[ingest] max_in_flight_mb`).
    #[serde(skip)]
    pub budget: crate::budget::ByteBudget,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_packet_bytes: 1024 * 1024,
            max_connections: 10_000,
            in_flight: 256,
            connect_timeout_ms: 10_000,
            tls: None,
            budget: crate::budget::ByteBudget::default(),
        }
    }
}

/// Who a connection is, as established by [`Authenticate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A vehicle: it may publish only to its own topics (`vehicles/{id}/…`).
    Vehicle(String),
    /// Anyone (authentication turned off): may publish to any vehicle's topics.
    Anyone,
}

impl Identity {
    fn may_publish(&self, topic: &str) -> bool {
        match self {
            Identity::Anyone => true,
            Identity::Vehicle(id) => topic
                .strip_prefix("vehicles/")
                .and_then(|rest| rest.strip_prefix(id.as_str()))
                .is_some_and(|rest| rest.starts_with('/')),
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials, or credentials that do not match.
    BadCredentials,
    /// Valid credentials of a client that may not connect (revoked).
    NotAuthorized,
    /// The credentials could not be checked now (store unavailable): try again later.
    Unavailable,
}

/// What a CONNECT presented.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The client id.
    pub client_id: String,
    /// The user name, if any.
    pub username: Option<String>,
    /// The password, if any.
    pub password: Option<String>,
    /// The common name of the client certificate the connection presented over TLS, verified
    /// against the endpoint's client CA.
    pub certificate_cn: Option<String>,
}

/// Decides who a connection is.
pub trait Authenticate: Send + Sync + 'static {
    /// Checks a CONNECT's credentials.
    fn authenticate(
        &self,
        credentials: Credentials,
    ) -> Pin<Box<dyn Future<Output = Result<Identity, Refusal>> + Send + '_>>;
}

/// Lets every client in as [`Identity::Anyone`] (`[mqtt] allow_anonymous`, or tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAnyone;

impl Authenticate for AllowAnyone {
    fn authenticate(&self, _: Credentials) -> Pin<Box<dyn Future<Output = Result<Identity, Refusal>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(Identity::Anyone)))
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

/// Counters shared by every connection.
#[derive(Debug, Default)]
struct Totals {
    received: AtomicU64,
    acknowledged: AtomicU64,
    connections: AtomicU64,
    in_flight: AtomicU64,
}

/// Connected clients by (identity, client id): a new connection under the same key takes over.
#[derive(Debug, Default)]
struct Clients {
    next: u64,
    live: HashMap<(Identity, String), (u64, watch::Sender<bool>)>,
}

/// What every connection shares.
struct Shared {
    config: EndpointConfig,
    auth: Arc<dyn Authenticate>,
    out: flume::Sender<Delivery>,
    doors: watch::Receiver<bool>,
    clients: Mutex<Clients>,
    totals: Totals,
}

impl Shared {
    fn clients(&self) -> std::sync::MutexGuard<'_, Clients> {
        // The map stays consistent whatever a panicking holder did: each change is one insert
        // or remove.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running endpoint.
pub struct Endpoint {
    local: SocketAddr,
    doors: watch::Sender<bool>,
    task: tokio::task::JoinHandle<SourceCounters>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds `config.listen` and serves vehicles: their messages go to `out` as deliveries.
    /// `status` follows the counters (`ready` while the endpoint listens). `drain` is how long a
    /// graceful stop waits for received messages to become durable.
    pub async fn start(
        config: EndpointConfig,
        auth: Arc<dyn Authenticate>,
        out: flume::Sender<Delivery>,
        drain: Duration,
        status: watch::Sender<SourceCounters>,
    ) -> Result<Endpoint, IngestError> {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| IngestError::Listen { addr: config.listen, source })?;
        let local = listener.local_addr().map_err(|source| IngestError::Listen { addr: config.listen, source })?;
        let (doors_tx, doors) = watch::channel(true);
        let shared = Arc::new(Shared {
            config,
            auth,
            out,
            doors,
            clients: Mutex::new(Clients::default()),
            totals: Totals::default(),
        });
        let task = tokio::spawn(serve(listener, shared, drain, status));
        Ok(Endpoint { local, doors: doors_tx, task })
    }

    /// Where vehicles connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Graceful stop: accepts and reads nothing more, acknowledges what becomes durable within
    /// the drain time, closes every connection, and returns the counters.
    pub async fn close(self) -> Result<SourceCounters, IngestError> {
        self.doors.send_replace(false);
        self.task.await.map_err(|e| IngestError::Mqtt { detail: format!("the endpoint task failed: {e}") })
    }
}

fn counters(totals: &Totals, ready: bool) -> SourceCounters {
    SourceCounters {
        received: totals.received.load(Ordering::Relaxed),
        acknowledged: totals.acknowledged.load(Ordering::Relaxed),
        connections: totals.connections.load(Ordering::Relaxed),
        sessions_lost: 0,
        subscriptions_acked: 0,
        ready,
    }
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    drain: Duration,
    status: watch::Sender<SourceCounters>,
) -> SourceCounters {
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut connections = JoinSet::new();
    let mut doors = shared.doors.clone();
    let mut report = tokio::time::interval(Duration::from_millis(100));
    crate::metrics::connection(true, false, false);
    status.send_replace(counters(&shared.totals, true));
    loop {
        tokio::select! {
            () = until(&mut doors, false) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        let shared = Arc::clone(&shared);
                        connections.spawn(async move {
                            serve_connection(stream, peer, &shared, drain).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        crate::metrics::refused("too_many_connections");
                        drop(stream);
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "mqtt endpoint: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = report.tick() => {
                let in_flight = shared.totals.in_flight.load(Ordering::Relaxed);
                crate::metrics::in_flight(usize::try_from(in_flight).unwrap_or(usize::MAX));
                crate::metrics::vehicle_connections(connections.len());
                status.send_replace(counters(&shared.totals, true));
            }
        }
    }
    drop(listener);
    // Each connection drains on its own within `drain`; a margin for the last acknowledgements.
    let _ = tokio::time::timeout(drain + Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    crate::metrics::connection(false, false, false);
    let last = counters(&shared.totals, false);
    status.send_replace(last.clone());
    last
}

/// The protocol of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V4,
    V5,
}

/// A packet from a client, in the terms the endpoint cares about.
enum Incoming {
    Publish(Publish),
    Subscribe {
        pkid: u16,
        filters: usize,
    },
    Unsubscribe {
        pkid: u16,
        filters: usize,
    },
    PingReq,
    Disconnect,
    /// A packet a client may not send here (QoS 2, a server's packet, a topic alias).
    Unexpected(&'static str),
}

/// What can end a connection.
#[derive(Debug)]
enum Closed {
    /// The peer closed, or the socket failed.
    Gone,
    /// Malformed or unexpected input.
    Protocol(String),
}

/// One side of a connection's byte stream (TCP, or TLS over it).
type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

struct Connection {
    version: Version,
    reader: Reader,
    writer: Writer,
    buffer: BytesMut,
    /// Bytes the next read asks for (between the two `READ_CHUNK_` bounds).
    chunk: usize,
    max_packet: usize,
}

impl Connection {
    /// The next whole packet in the buffer, if there is one.
    fn parse(&mut self) -> Result<Option<Incoming>, Closed> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        match self.version {
            Version::V4 => match v4::Packet::read(&mut self.buffer, self.max_packet) {
                Ok(packet) => Ok(Some(incoming_v4(packet))),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(Closed::Protocol(e.to_string())),
            },
            Version::V5 => match v5::Packet::read(&mut self.buffer, u32::try_from(self.max_packet).ok()) {
                Ok(packet) => Ok(Some(incoming_v5(packet))),
                Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(Closed::Protocol(e.to_string())),
            },
        }
    }

    /// Reads more bytes (cancel-safe: bytes are only taken into the buffer when read).
    async fn fill(&mut self) -> Result<(), Closed> {
        if self.buffer.is_empty() && self.buffer.capacity() > 4 * self.chunk {
            // Whatever a large packet grew it to goes back (its payload keeps its own bytes).
            self.buffer = BytesMut::new();
        }
        self.buffer.reserve(self.chunk);
        match self.reader.read_buf(&mut self.buffer).await {
            Ok(0) | Err(_) => Err(Closed::Gone),
            Ok(read) => {
                self.chunk = if read >= self.chunk {
                    (self.chunk * 2).min(READ_CHUNK_MAX)
                } else {
                    (self.chunk / 2).max(READ_CHUNK_MIN)
                };
                Ok(())
            }
        }
    }

    async fn send(&mut self, out: &BytesMut) -> Result<(), Closed> {
        self.writer.write_all(out).await.map_err(|_| Closed::Gone)
    }
}

fn incoming_v4(packet: v4::Packet) -> Incoming {
    match packet {
        v4::Packet::Publish(publish) => Incoming::Publish(publish),
        v4::Packet::Subscribe(s) => Incoming::Subscribe { pkid: s.pkid, filters: s.filters.len() },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe { pkid: u.pkid, filters: u.topics.len() },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect,
        v4::Packet::Connect(_) => Incoming::Unexpected("a second CONNECT"),
        v4::Packet::PubRec(_) | v4::Packet::PubRel(_) | v4::Packet::PubComp(_) => Incoming::Unexpected("QoS 2"),
        _ => Incoming::Unexpected("a packet only a server sends"),
    }
}

fn incoming_v5(packet: v5::Packet) -> Incoming {
    match packet {
        v5::Packet::Publish(publish) => {
            if publish.properties.as_ref().is_some_and(|p| p.topic_alias.is_some()) {
                return Incoming::Unexpected("a topic alias (none offered)");
            }
            let Ok(topic) = String::from_utf8(publish.topic.to_vec()) else {
                return Incoming::Unexpected("a topic that is not UTF-8");
            };
            let mut out = Publish::from_bytes(topic, publish.qos_v4(), publish.payload);
            out.pkid = publish.pkid;
            out.dup = publish.dup;
            out.retain = publish.retain;
            Incoming::Publish(out)
        }
        v5::Packet::Subscribe(s) => Incoming::Subscribe { pkid: s.pkid, filters: s.filters.len() },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe { pkid: u.pkid, filters: u.filters.len() },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(_) => Incoming::Disconnect,
        v5::Packet::Connect(..) => Incoming::Unexpected("a second CONNECT"),
        v5::Packet::PubRec(_) | v5::Packet::PubRel(_) | v5::Packet::PubComp(_) => Incoming::Unexpected("QoS 2"),
        v5::Packet::Auth(_) => Incoming::Unexpected("enhanced authentication (not offered)"),
        _ => Incoming::Unexpected("a packet only a server sends"),
    }
}

/// The v4 quality of service of a v5 publish (the two crates' enums are distinct).
trait QosV4 {
    fn qos_v4(&self) -> QoS;
}

impl QosV4 for v5::Publish {
    fn qos_v4(&self) -> QoS {
        match self.qos {
            rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
            rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
        }
    }
}

/// The CONNECT of a new connection.
struct Hello {
    credentials: Credentials,
    clean: bool,
    keep_alive: Duration,
}

/// Reads the CONNECT: the protocol level first, then the packet with that version's codec.
async fn hello(reader: Reader, writer: Writer, config: &EndpointConfig) -> Result<(Connection, Hello), Closed> {
    let mut connection = Connection {
        version: Version::V4,
        reader,
        writer,
        buffer: BytesMut::with_capacity(READ_CHUNK_MIN),
        chunk: READ_CHUNK_MIN,
        max_packet: config.max_packet_bytes,
    };
    let version = loop {
        match connect_protocol_level(&connection.buffer) {
            ConnectPeek::Level(5) => break Version::V5,
            ConnectPeek::Level(3 | 4) => break Version::V4,
            ConnectPeek::Level(level) => {
                // A v4 CONNACK "unacceptable protocol version", as the 3.1.1 specification asks.
                let mut out = BytesMut::new();
                let _ = v4::ConnAck::new(v4::ConnectReturnCode::RefusedProtocolVersion, false).write(&mut out);
                let _ = connection.send(&out).await;
                return Err(Closed::Protocol(format!("protocol level {level}")));
            }
            ConnectPeek::NotMqtt => return Err(Closed::Protocol("not an MQTT CONNECT".to_owned())),
            ConnectPeek::Incomplete => connection.fill().await?,
        }
    };
    connection.version = version;
    loop {
        let packet = match version {
            Version::V4 => match v4::Packet::read(&mut connection.buffer, config.max_packet_bytes) {
                Ok(v4::Packet::Connect(connect)) => Some(Hello {
                    keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
                    clean: connect.clean_session,
                    credentials: Credentials {
                        client_id: connect.client_id,
                        username: connect.login.as_ref().map(|l| l.username.clone()),
                        password: connect.login.map(|l| l.password),
                        certificate_cn: None,
                    },
                }),
                Ok(_) => return Err(Closed::Protocol("the first packet is not a CONNECT".to_owned())),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => None,
                Err(e) => return Err(Closed::Protocol(e.to_string())),
            },
            Version::V5 => {
                match v5::Packet::read(&mut connection.buffer, u32::try_from(config.max_packet_bytes).ok()) {
                    Ok(v5::Packet::Connect(connect, _, login)) => Some(Hello {
                        keep_alive: Duration::from_secs(u64::from(connect.keep_alive)),
                        clean: connect.clean_start,
                        credentials: Credentials {
                            client_id: connect.client_id,
                            username: login.as_ref().map(|l| l.username.clone()),
                            password: login.map(|l| l.password),
                            certificate_cn: None,
                        },
                    }),
                    Ok(_) => return Err(Closed::Protocol("the first packet is not a CONNECT".to_owned())),
                    Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => None,
                    Err(e) => return Err(Closed::Protocol(e.to_string())),
                }
            }
        };
        match packet {
            Some(hello) => return Ok((connection, hello)),
            None => connection.fill().await?,
        }
    }
}

/// Encodes the packets the endpoint sends, in the connection's version.
struct Replies {
    version: Version,
    out: BytesMut,
}

impl Replies {
    fn connack(&mut self, refused: Option<Refusal>, session_present: bool, config: &EndpointConfig) {
        let _ = match self.version {
            Version::V4 => {
                let code = match refused {
                    None => v4::ConnectReturnCode::Success,
                    Some(Refusal::BadCredentials) => v4::ConnectReturnCode::BadUserNamePassword,
                    Some(Refusal::NotAuthorized) => v4::ConnectReturnCode::NotAuthorized,
                    Some(Refusal::Unavailable) => v4::ConnectReturnCode::ServiceUnavailable,
                };
                v4::ConnAck::new(code, session_present).write(&mut self.out).ok()
            }
            Version::V5 => {
                let code = match refused {
                    None => v5::ConnectReturnCode::Success,
                    Some(Refusal::BadCredentials) => v5::ConnectReturnCode::BadUserNamePassword,
                    Some(Refusal::NotAuthorized) => v5::ConnectReturnCode::NotAuthorized,
                    Some(Refusal::Unavailable) => v5::ConnectReturnCode::ServerUnavailable,
                };
                let properties = v5::ConnAckProperties {
                    receive_max: Some(u16::try_from(config.in_flight).unwrap_or(u16::MAX).max(1)),
                    max_qos: Some(1),
                    retain_available: Some(0),
                    max_packet_size: u32::try_from(config.max_packet_bytes).ok(),
                    wildcard_subscription_available: Some(0),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    session_expiry_interval: None,
                    assigned_client_identifier: None,
                    topic_alias_max: None,
                    reason_string: None,
                    user_properties: Vec::new(),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                };
                let connack =
                    v5::ConnAck { session_present, code, properties: refused.is_none().then_some(properties) };
                v5::Packet::ConnAck(connack).write(&mut self.out, None).ok()
            }
        };
    }

    fn puback(&mut self, pkid: u16, authorized: bool) {
        let _ = match self.version {
            // 3.1.1 cannot refuse one PUBLISH: no PUBACK, the connection closes instead.
            Version::V4 if !authorized => None,
            Version::V4 => v4::PubAck::new(pkid).write(&mut self.out).ok(),
            Version::V5 => {
                let mut ack = v5::PubAck::new(pkid, None);
                if !authorized {
                    ack.reason = v5::PubAckReason::NotAuthorized;
                }
                v5::Packet::PubAck(ack).write(&mut self.out, None).ok()
            }
        };
    }

    fn suback_refused(&mut self, pkid: u16, filters: usize) {
        let _ = match self.version {
            Version::V4 => {
                v4::SubAck::new(pkid, vec![v4::SubscribeReasonCode::Failure; filters.max(1)]).write(&mut self.out).ok()
            }
            Version::V5 => {
                let codes = vec![v5::SubscribeReasonCode::NotAuthorized; filters.max(1)];
                v5::Packet::SubAck(v5::SubAck { pkid, return_codes: codes, properties: None })
                    .write(&mut self.out, None)
                    .ok()
            }
        };
    }

    fn unsuback(&mut self, pkid: u16, filters: usize) {
        let _ = match self.version {
            Version::V4 => v4::UnsubAck::new(pkid).write(&mut self.out).ok(),
            Version::V5 => {
                let reasons = vec![v5::UnsubAckReason::NoSubscriptionExisted; filters.max(1)];
                v5::Packet::UnsubAck(v5::UnsubAck { pkid, reasons, properties: None }).write(&mut self.out, None).ok()
            }
        };
    }

    fn pingresp(&mut self) {
        let _ = match self.version {
            Version::V4 => v4::PingResp.write(&mut self.out).ok(),
            Version::V5 => v5::Packet::PingResp(v5::PingResp).write(&mut self.out, None).ok(),
        };
    }

    /// v5 only: tells the client why the server closes (v3.1.1 just closes).
    fn disconnect(&mut self, reason: v5::DisconnectReasonCode) {
        if self.version == Version::V5 {
            let _ = v5::Packet::Disconnect(v5::Disconnect::new(reason)).write(&mut self.out, None).ok();
        }
    }
}

/// One message received and not yet acknowledged.
#[derive(Debug)]
struct Pending {
    /// Its packet id (QoS 1 only).
    pkid: Option<u16>,
    /// Whether the client may publish there (a refusal is acknowledged in its turn, on v5).
    authorized: bool,
    received_at: Instant,
}

/// The connection's two halves, after the TLS handshake when the endpoint has TLS (with the
/// common name of the client's certificate, if it presented one); `None` when it failed or was
/// not done by `deadline`.
async fn open_stream(
    stream: TcpStream,
    peer: SocketAddr,
    config: &EndpointConfig,
    deadline: tokio::time::Instant,
) -> Option<(Reader, Writer, Option<String>)> {
    let _ = stream.set_nodelay(true);
    let Some(tls) = &config.tls else {
        let (reader, writer) = stream.into_split();
        return Some((Box::new(reader), Box::new(writer), None));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.0));
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let presented = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
            let certificate_cn = presented.and_then(crate::tls::common_name);
            let (reader, writer) = tokio::io::split(stream);
            Some((Box::new(reader), Box::new(writer), certificate_cn))
        }
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "mqtt endpoint: TLS handshake failed");
            crate::metrics::refused("tls");
            None
        }
        Err(_) => None,
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared, drain: Duration) {
    let config = &shared.config;
    // The TLS handshake and CONNECT together have `connect_timeout_ms`.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(config.connect_timeout_ms);
    let Some((reader, writer, certificate_cn)) = open_stream(stream, peer, config, deadline).await else { return };
    let (mut connection, mut hello) = match tokio::time::timeout_at(deadline, hello(reader, writer, config)).await {
        Ok(Ok(found)) => found,
        Ok(Err(Closed::Protocol(detail))) => {
            tracing::debug!(%peer, %detail, "mqtt endpoint: connection refused before CONNECT");
            crate::metrics::refused("protocol");
            return;
        }
        Ok(Err(Closed::Gone)) | Err(_) => return,
    };
    hello.credentials.certificate_cn = certificate_cn;
    let mut replies = Replies { version: connection.version, out: BytesMut::new() };
    let client_id = hello.credentials.client_id.clone();
    let identity = match shared.auth.authenticate(hello.credentials).await {
        Ok(identity) => identity,
        Err(refusal) => {
            tracing::info!(%peer, client_id, ?refusal, "mqtt endpoint: connection refused");
            crate::metrics::refused(match refusal {
                Refusal::BadCredentials => "bad_credentials",
                Refusal::NotAuthorized => "not_authorized",
                Refusal::Unavailable => "unavailable",
            });
            replies.connack(Some(refusal), false, config);
            let _ = connection.send(&replies.out).await;
            return;
        }
    };
    // Take over an earlier connection of the same client, and find its session.
    let key = (identity.clone(), client_id);
    let (kicked_tx, mut kicked) = watch::channel(false);
    let me = {
        let mut clients = shared.clients();
        clients.next += 1;
        let me = clients.next;
        if let Some((_, previous)) = clients.live.insert(key.clone(), (me, kicked_tx)) {
            previous.send_replace(true);
        }
        me
    };
    // Every session is empty (module doc): a persistent one is always present.
    let session_present = !hello.clean;
    shared.totals.connections.fetch_add(1, Ordering::Relaxed);
    replies.connack(None, session_present, config);
    if connection.send(&replies.out).await.is_ok() {
        replies.out.clear();
        let keep_alive = if hello.keep_alive.is_zero() { IDLE_LIMIT } else { hello.keep_alive * 3 / 2 };
        let ended = session(&mut connection, &mut replies, shared, &identity, keep_alive, &mut kicked, drain).await;
        if let Err(Closed::Protocol(detail)) = ended {
            tracing::info!(%peer, client = %key.1, %detail, "mqtt endpoint: connection closed on a protocol error");
            crate::metrics::refused("protocol");
        }
    }
    let mut clients = shared.clients();
    if clients.live.get(&key).is_some_and(|(id, _)| *id == me) {
        clients.live.remove(&key);
    }
}

/// Serves one authenticated connection until it closes, is taken over, breaks the protocol, or
/// the doors close (then it drains).
async fn session(
    connection: &mut Connection,
    replies: &mut Replies,
    shared: &Shared,
    identity: &Identity,
    keep_alive: Duration,
    kicked: &mut watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), Closed> {
    let (done_tx, done) = flume::unbounded::<Ticket>();
    let mut tracker: AckTracker<Pending> = AckTracker::default();
    tracker.new_connection();
    let mut session = Session { connection, replies, shared, identity, tracker, done, done_tx };
    let result = session.serve(keep_alive, kicked).await;
    if result.as_ref().is_ok_and(|ended| *ended == Ended::TakenOver) {
        return Ok(());
    }
    session.drain(drain).await;
    result.map(drop)
}

/// How a session's connection ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The client disconnected, or the doors closed: what was received is drained.
    Closed,
    /// Another connection of the same client took over: it is sent again what this one did
    /// not acknowledge.
    TakenOver,
}

/// One authenticated connection's state.
struct Session<'a> {
    connection: &'a mut Connection,
    replies: &'a mut Replies,
    shared: &'a Shared,
    identity: &'a Identity,
    tracker: AckTracker<Pending>,
    /// Completions of this connection's deliveries.
    done: flume::Receiver<Ticket>,
    done_tx: flume::Sender<Ticket>,
}

impl Session<'_> {
    /// Reads and answers packets until the connection ends.
    async fn serve(&mut self, keep_alive: Duration, kicked: &mut watch::Receiver<bool>) -> Result<Ended, Closed> {
        let mut doors = self.shared.doors.clone();
        let mut deadline = tokio::time::Instant::now() + keep_alive;
        loop {
            // Whole packets already buffered first; read more only with room in the window.
            if let Some(incoming) = self.connection.parse()? {
                deadline = tokio::time::Instant::now() + keep_alive;
                if let Some(ended) = self.on_packet(incoming).await? {
                    return Ok(ended);
                }
                continue;
            }
            if !self.replies.out.is_empty() {
                self.connection.send(&self.replies.out).await?;
                self.replies.out.clear();
            }
            let room = self.tracker.in_flight() < self.shared.config.in_flight;
            tokio::select! {
                biased;
                ticket = self.done.recv_async() => {
                    if let Ok(ticket) = ticket {
                        acknowledge_ready(ticket, &self.done, &mut self.tracker, self.replies, self.shared);
                    }
                }
                () = until(&mut doors, false) => {
                    self.replies.disconnect(v5::DisconnectReasonCode::ServerShuttingDown);
                    return Ok(Ended::Closed);
                }
                () = until(kicked, true) => {
                    self.replies.disconnect(v5::DisconnectReasonCode::SessionTakenOver);
                    self.shared.totals.in_flight.fetch_sub(self.tracker.in_flight() as u64, Ordering::Relaxed);
                    let _ = self.connection.send(&self.replies.out).await;
                    return Ok(Ended::TakenOver);
                }
                filled = self.connection.fill(), if room => filled?,
                () = tokio::time::sleep_until(deadline) => {
                    self.replies.disconnect(v5::DisconnectReasonCode::KeepAliveTimeout);
                    return Err(Closed::Protocol("keep-alive expired".to_owned()));
                }
            }
        }
    }

    /// Answers one packet; `Some` when it ends the connection.
    async fn on_packet(&mut self, incoming: Incoming) -> Result<Option<Ended>, Closed> {
        match incoming {
            Incoming::Publish(publish) => self.on_publish(publish).await?,
            Incoming::Subscribe { pkid, filters } => {
                crate::metrics::refused("subscribe");
                self.replies.suback_refused(pkid, filters);
            }
            Incoming::Unsubscribe { pkid, filters } => self.replies.unsuback(pkid, filters),
            Incoming::PingReq => self.replies.pingresp(),
            Incoming::Disconnect => return Ok(Some(Ended::Closed)),
            Incoming::Unexpected(what) => {
                self.replies.disconnect(v5::DisconnectReasonCode::ProtocolError);
                return Err(Closed::Protocol(format!("the client sent {what}")));
            }
        }
        Ok(None)
    }

    /// Hands a PUBLISH on once the budget has room for it: to the pipeline when the client may
    /// publish there, else as the publisher's rejection (on v5, its PUBACK says "not authorized"
    /// in its turn; MQTT 3.1.1 has no way to refuse one PUBLISH, so the connection closes).
    async fn on_publish(&mut self, publish: Publish) -> Result<(), Closed> {
        let Session { connection, replies, shared, identity, tracker, done, done_tx } = self;
        let permit = room_for(publish.payload.len(), connection, shared, done, tracker, replies).await?;
        let pkid = (publish.qos == QoS::AtLeastOnce).then_some(publish.pkid);
        let authorized = identity.may_publish(&publish.topic);
        let ticket = tracker.register(Pending { pkid, authorized, received_at: Instant::now() });
        shared.totals.in_flight.fetch_add(1, Ordering::Relaxed);
        if authorized {
            shared.totals.received.fetch_add(1, Ordering::Relaxed);
            let delivery = Delivery::new(publish, ticket, done_tx.clone()).holding(permit);
            return hand_over(delivery, shared, done, tracker, replies).await;
        }
        crate::metrics::refused("topic_not_authorized");
        tracing::info!(topic = %publish.topic, ?identity, "mqtt endpoint: publish refused (not the vehicle's topic)");
        let topic = publish.topic.clone();
        let publisher = match identity {
            Identity::Vehicle(id) => VehicleId::parse(id).ok(),
            Identity::Anyone => None,
        };
        if let Some(publisher) = publisher {
            let delivery = Delivery::refused(publish, ticket, done_tx.clone(), publisher).holding(permit);
            hand_over(delivery, shared, done, tracker, replies).await?;
        } else {
            acknowledge(tracker.complete(ticket), replies, shared);
        }
        if replies.version == Version::V4 {
            return Err(Closed::Protocol(format!("publish to {topic} is not authorized")));
        }
        Ok(())
    }

    /// Whatever ended the connection, what was received may still become durable: acknowledges
    /// what does within `drain` (a client gone cannot read it; the write just fails), then
    /// closes.
    async fn drain(&mut self, drain: Duration) {
        let finish = tokio::time::Instant::now() + drain;
        while self.tracker.in_flight() > 0 {
            match tokio::time::timeout_at(finish, self.done.recv_async()).await {
                Ok(Ok(ticket)) => acknowledge(self.tracker.complete(ticket), self.replies, self.shared),
                _ => break,
            }
        }
        self.shared.totals.in_flight.fetch_sub(self.tracker.in_flight() as u64, Ordering::Relaxed);
        let _ = self.connection.send(&self.replies.out).await;
        let _ = self.connection.writer.shutdown().await;
    }
}

/// Room in the in-flight budget for a message of `bytes`, waiting while the pipeline holds the
/// whole budget: the connection is not read until there is room, but what completes meanwhile is
/// acknowledged at once (the vehicle's window opens as the store drains).
async fn room_for(
    bytes: usize,
    connection: &mut Connection,
    shared: &Shared,
    done: &flume::Receiver<Ticket>,
    tracker: &mut AckTracker<Pending>,
    replies: &mut Replies,
) -> Result<BytePermit, Closed> {
    let budget = &shared.config.budget;
    if let Some(permit) = budget.try_take(bytes) {
        return Ok(permit);
    }
    let take = budget.take(bytes);
    tokio::pin!(take);
    loop {
        if !replies.out.is_empty() {
            connection.send(&replies.out).await?;
            replies.out.clear();
        }
        tokio::select! {
            permit = &mut take => return Ok(permit),
            Ok(ticket) = done.recv_async() => acknowledge_ready(ticket, done, tracker, replies, shared),
        }
    }
}

/// Puts `delivery` into the pipeline; while it is full, acknowledges what completes meanwhile.
async fn hand_over(
    mut delivery: Delivery,
    shared: &Shared,
    done: &flume::Receiver<Ticket>,
    tracker: &mut AckTracker<Pending>,
    replies: &mut Replies,
) -> Result<(), Closed> {
    loop {
        match shared.out.try_send(delivery) {
            Ok(()) => return Ok(()),
            Err(flume::TrySendError::Full(back)) => delivery = back,
            Err(flume::TrySendError::Disconnected(_)) => return Err(Closed::Gone),
        }
        if let Ok(Ok(ticket)) = tokio::time::timeout(PIPELINE_FULL_RETRY, done.recv_async()).await {
            acknowledge(tracker.complete(ticket), replies, shared);
        }
    }
}

/// Resolves once the flag is `want` (or its sender is gone).
async fn until(flag: &mut watch::Receiver<bool>, want: bool) {
    let _ = flag.wait_for(|value| *value == want).await;
}

/// Acknowledges the completion `ticket` and every one already waiting behind it: a worker
/// completes its batch's messages together, and their PUBACKs then leave in one write instead of
/// one each.
fn acknowledge_ready(
    ticket: Ticket,
    done: &flume::Receiver<Ticket>,
    tracker: &mut AckTracker<Pending>,
    replies: &mut Replies,
    shared: &Shared,
) {
    acknowledge(tracker.complete(ticket), replies, shared);
    while let Ok(ticket) = done.try_recv() {
        acknowledge(tracker.complete(ticket), replies, shared);
    }
}

fn acknowledge(released: Vec<Pending>, replies: &mut Replies, shared: &Shared) {
    for Pending { pkid, authorized, received_at } in released {
        shared.totals.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(pkid) = pkid else { continue };
        replies.puback(pkid, authorized);
        if authorized {
            shared.totals.acknowledged.fetch_add(1, Ordering::Relaxed);
            crate::metrics::acknowledged(received_at.elapsed().as_secs_f64());
        }
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

    #[test]
    fn a_vehicle_may_publish_only_to_its_own_topics() {
        let car = Identity::Vehicle("car-1".to_owned());
        assert!(car.may_publish("vehicles/car-1/telemetry"));
        assert!(car.may_publish("vehicles/car-1/trips"));
        assert!(!car.may_publish("vehicles/car-2/telemetry"));
        assert!(!car.may_publish("vehicles/car-10/telemetry"), "a prefix of another id is not the id");
        assert!(!car.may_publish("vehicles/car-1"));
        assert!(!car.may_publish("other/car-1/telemetry"));
        assert!(Identity::Anyone.may_publish("vehicles/car-2/telemetry"));
    }
}
