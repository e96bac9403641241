//! The MQTT source: a persistent QoS 1 session with manual, ordered acknowledgements.
//!
//! Two tasks. The *connection task* owns rumqttc's event loop and only polls it (so keep-alives
//! never wait on tripline) and forwards events in order. The *source task* owns the
//! [`AckTracker`]: it hands each message on as a [`Delivery`], and sends the acknowledgements
//! the tracker releases once deliveries complete.
//!
//! A disconnect is a hand-over: the connection task reports it and waits; the source task
//! starts a new tracker epoch (pending messages of the old connection are forgotten — the broker
//! redelivers them), then lets the connection task clean rumqttc's request queue (which drops
//! acknowledgements not yet sent) and reconnect. So no acknowledgement of the old connection can
//! reach the new one, where its packet id may name another message.
//!
//! Backpressure: deliveries the pipeline cannot take yet wait in a local queue, normally bounded
//! by the broker's in-flight window for this client (Mosquitto's `max_inflight_messages`):
//! unacknowledged QoS 1 messages beyond it stay queued in the broker. A broker without a window
//! is held back at `MAX_BACKLOG_BYTES` of queued deliveries: the source task stops taking
//! events, so the connection task stops reading and TCP pushes back. Acknowledgements rumqttc's
//! request channel has no room for (it takes one request per batch of packets read, so a burst
//! can outrun it) wait in order in the source task: a full channel never loses or fails one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tripline_model::VehicleId;
use tripline_store::Backoff;

use crate::IngestError;
use crate::ack::{AckTracker, Ticket};

/// Events from the connection task to the source task. Sized for bursts of small packets; the
/// source task drains it continuously.
const EVENT_CHANNEL_CAPACITY: usize = 1024;
/// While the pipeline is full, how often the source tries again to hand deliveries on.
const BACKLOG_RETRY: Duration = Duration::from_millis(1);
/// At most this many bytes of deliveries wait for the pipeline in the source: beyond it, the
/// source takes no more from the connection, which stops reading, so a broker that sends without
/// a window (or a large one) is held back by TCP instead of filling memory.
const MAX_BACKLOG_BYTES: usize = 16 << 20;

/// The memory a queued delivery holds, roughly: its payload and topic, and the delivery itself.
fn held_bytes(publish: &Publish) -> usize {
    publish.payload.len() + publish.topic.len() + 256
}

/// rumqttc's request channel: holds subscriptions and acknowledgements. rumqttc takes at most
/// one request from it per batch of packets read, so under a burst of messages acknowledgements
/// can outrun it: those that do not fit wait in the source (`Acks::unsent`), in order.
const REQUEST_CHANNEL_CAPACITY: usize = 8192;

/// How the source connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSourceConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Stable client id: the broker keeps this client's session (and queued messages) by it.
    pub client_id: String,
    /// Topic filters to subscribe to at QoS 1.
    pub topics: Vec<String>,
    /// With a group, subscribe as `$share/{group}/{filter}` so several ingest processes share the
    /// load (each message goes to one of them; a vehicle's messages may then be split between
    /// processes, which the store's idempotent, order-independent writes tolerate).
    pub shared_group: Option<String>,
    /// Largest packet accepted from the broker. Above the contract's 256 KiB so that oversized
    /// messages arrive and are rejected as `payload_too_large` instead of breaking the connection.
    pub max_packet_bytes: usize,
    /// Keep-alive interval, seconds.
    pub keep_alive_s: u64,
    /// Longest wait between reconnection attempts, milliseconds.
    pub max_reconnect_backoff_ms: u64,
    /// User name and password of tripline's own account on the broker.
    pub credentials: Option<(String, String)>,
    /// TLS to the broker (`mqtts://`); none: plain TCP.
    #[serde(skip)]
    pub tls: Option<crate::tls::ClientTls>,
    /// The in-flight budget, shared with the rest of the pipeline (`[ingest] max_in_flight_mb`).
    #[serde(skip)]
    pub budget: crate::budget::ByteBudget,
}

impl Default for MqttSourceConfig {
    fn default() -> Self {
        MqttSourceConfig {
            host: "127.0.0.1".to_owned(),
            port: 1883,
            client_id: "tripline-ingest".to_owned(),
            topics: vec![
                tripline_model::topic::TELEMETRY_FILTER.to_owned(),
                tripline_model::topic::TRIPS_FILTER.to_owned(),
            ],
            shared_group: None,
            max_packet_bytes: 1024 * 1024,
            keep_alive_s: 30,
            max_reconnect_backoff_ms: 10_000,
            credentials: None,
            tls: None,
            budget: crate::budget::ByteBudget::default(),
        }
    }
}

/// One received message, to be completed once everything derived from it is durable.
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub publish: Publish,
    ticket: Ticket,
    done: flume::Sender<Ticket>,
    /// Set when an authenticated vehicle published to a topic not its own: the message is
    /// stored as this vehicle's `not_authorized` rejection, whatever its topic says.
    refused_publisher: Option<VehicleId>,
    /// Its room in the in-flight budget, given back when the delivery completes or is dropped.
    permit: Option<crate::budget::BytePermit>,
    /// When it was received.
    received_at: Instant,
}

impl Delivery {
    pub(crate) fn new(publish: Publish, ticket: Ticket, done: flume::Sender<Ticket>) -> Delivery {
        Delivery { publish, ticket, done, refused_publisher: None, permit: None, received_at: Instant::now() }
    }

    /// The delivery holding `permit` (its room in the in-flight budget) until it completes.
    pub(crate) fn holding(self, permit: crate::budget::BytePermit) -> Delivery {
        Delivery { permit: Some(permit), ..self }
    }

    /// A message `publisher` was not authorized to publish (another vehicle's topic).
    pub(crate) fn refused(
        publish: Publish,
        ticket: Ticket,
        done: flume::Sender<Ticket>,
        publisher: VehicleId,
    ) -> Delivery {
        Delivery { refused_publisher: Some(publisher), ..Delivery::new(publish, ticket, done) }
    }

    /// When the message was received.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// The vehicle that published a refused message, if this one was refused.
    pub fn refused_publisher(&self) -> Option<&VehicleId> {
        self.refused_publisher.as_ref()
    }

    /// The vehicle whose tenant and worker this message goes to: a refused message's publisher,
    /// else the vehicle its topic names (if it names one).
    pub fn vehicle(&self) -> Option<VehicleId> {
        match &self.refused_publisher {
            Some(publisher) => Some(publisher.clone()),
            None => tripline_model::Topic::parse(&self.publish.topic).ok().map(|t| t.vehicle_id),
        }
    }

    /// Everything derived from this message is durable: it may be acknowledged (after every
    /// message received before it).
    pub fn complete(self) {
        // The source has stopped if this fails; the broker will redeliver the message.
        let _ = self.done.send(self.ticket);
    }
}

/// Counters of the source, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Messages received.
    pub received: u64,
    /// Acknowledgements sent.
    pub acknowledged: u64,
    /// Connections made (the first included).
    pub connections: u64,
    /// Connections on which the broker had no session for us (queued messages may be lost).
    pub sessions_lost: u64,
    /// Subscriptions the broker confirmed.
    pub subscriptions_acked: u64,
    /// Whether the source is connected and subscribed now.
    pub ready: bool,
}

/// Publishes the counters to `status` when they changed, and the in-flight gauge.
pub(crate) fn report(status: &watch::Sender<SourceCounters>, counters: &SourceCounters, in_flight: usize) {
    crate::metrics::in_flight(in_flight);
    status.send_if_modified(|current| {
        let changed = current != counters;
        if changed {
            current.clone_from(counters);
        }
        changed
    });
}

enum FromConnection {
    Connected { session_present: bool },
    Subscribed,
    Message(Publish),
    Disconnected { error: String, resume: oneshot::Sender<()> },
}

fn mqtt_options(config: &MqttSourceConfig) -> MqttOptions {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(config.keep_alive_s.max(5)));
    options.set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
    options.set_request_channel_capacity(REQUEST_CHANNEL_CAPACITY);
    if let Some((username, password)) = &config.credentials {
        options.set_credentials(username, password);
    }
    if let Some(tls) = &config.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.0.clone())));
    }
    options
}

async fn connection_task(mut eventloop: EventLoop, events: flume::Sender<FromConnection>, max_backoff: Duration) {
    let mut backoff = Backoff::new(Duration::from_millis(100), max_backoff);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.succeeded();
                if events.send_async(FromConnection::Connected { session_present: ack.session_present }).await.is_err()
                {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if events.send_async(FromConnection::Subscribed).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if events.send_async(FromConnection::Message(publish)).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                let (resume, resumed) = oneshot::channel();
                let event = FromConnection::Disconnected { error: error.to_string(), resume };
                if events.send_async(event).await.is_err() || resumed.await.is_err() {
                    return;
                }
                // Drops acknowledgements queued for the old connection (rumqttc keeps no PubAck).
                eventloop.clean();
                tokio::time::sleep(backoff.failed()).await;
            }
        }
    }
}

/// Runs the source until `shutdown` turns true: received messages go to `out` as deliveries;
/// on shutdown it stops taking messages, waits up to `drain` for deliveries to complete,
/// acknowledges what completed, and returns its counters. `status` follows the counters live.
pub async fn run_source(
    config: MqttSourceConfig,
    out: flume::Sender<Delivery>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    status: watch::Sender<SourceCounters>,
) -> Result<SourceCounters, IngestError> {
    if config.client_id.is_empty() {
        return Err(IngestError::Config { detail: "the MQTT client id must not be empty".to_owned() });
    }
    let (client, eventloop) = AsyncClient::new(mqtt_options(&config), REQUEST_CHANNEL_CAPACITY);
    let (events_tx, events) = flume::bounded(EVENT_CHANNEL_CAPACITY);
    let connection = tokio::spawn(connection_task(
        eventloop,
        events_tx,
        Duration::from_millis(config.max_reconnect_backoff_ms.max(100)),
    ));
    let (done_tx, done) = flume::unbounded::<Ticket>();
    let mut source = SourceTask::new(config, client, out, done_tx);
    loop {
        if *shutdown.borrow() {
            break;
        }
        if source.hand_on() == HandOn::PipelineGone {
            // The pipeline is gone: nothing more can complete.
            break;
        }
        source.acks.send(&mut source.counters);
        let backlog_waits = !source.backlog.is_empty() || !source.acks.unsent.is_empty();
        let take_events = source.backlog_bytes < MAX_BACKLOG_BYTES;
        let retry_forward = async {
            if backlog_waits {
                tokio::time::sleep(BACKLOG_RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => {}
            ticket = done.recv_async() => {
                if let Ok(ticket) = ticket {
                    source.completed(ticket);
                }
            }
            event = events.recv_async(), if take_events => match event {
                Ok(event) => source.on_event(event)?,
                Err(_) => return Err(IngestError::Mqtt { detail: "the connection task stopped".to_owned() }),
            },
            () = retry_forward => {}
        }
        report(&status, &source.counters, source.tracker.in_flight());
    }
    let counters = source.drain(done, &events, drain).await;
    // Give rumqttc a moment to flush the acknowledgements, then disconnect cleanly.
    let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
    status.send_replace(counters.clone());
    Ok(counters)
}

/// What handing the backlog on came to.
#[derive(Debug, PartialEq, Eq)]
enum HandOn {
    /// All handed on, or the rest waits (for room in the budget or the pipeline's queue).
    Done,
    /// The pipeline hung up.
    PipelineGone,
}

/// The source task's state between events.
struct SourceTask {
    config: MqttSourceConfig,
    acks: Acks,
    out: flume::Sender<Delivery>,
    done_tx: flume::Sender<Ticket>,
    tracker: AckTracker<(Publish, Instant)>,
    /// Deliveries received and not yet taken by the pipeline.
    backlog: VecDeque<Delivery>,
    /// What `backlog` holds ([`held_bytes`]).
    backlog_bytes: usize,
    /// Whether the backlog's head waits for room in the in-flight budget (counted once per wait).
    waiting_for_room: bool,
    counters: SourceCounters,
    /// The subscriptions' filters (shared ones under `$share/{group}/`).
    filters: Vec<String>,
}

impl SourceTask {
    fn new(
        config: MqttSourceConfig,
        client: AsyncClient,
        out: flume::Sender<Delivery>,
        done_tx: flume::Sender<Ticket>,
    ) -> Self {
        let filters = config
            .topics
            .iter()
            .map(|topic| match &config.shared_group {
                Some(group) => format!("$share/{group}/{topic}"),
                None => topic.clone(),
            })
            .collect();
        SourceTask {
            config,
            acks: Acks { client, unsent: VecDeque::new() },
            out,
            done_tx,
            tracker: AckTracker::default(),
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            waiting_for_room: false,
            counters: SourceCounters::default(),
            filters,
        }
    }

    /// Hands deliveries on without ever waiting on the pipeline (a send cancelled inside
    /// `select!` would drop its delivery): what does not fit waits in the backlog for the next
    /// turn.
    fn hand_on(&mut self) -> HandOn {
        while let Some(mut delivery) = self.backlog.pop_front() {
            if delivery.permit.is_none() {
                match self.config.budget.try_take(delivery.publish.payload.len()) {
                    Some(permit) => {
                        self.waiting_for_room = false;
                        delivery = delivery.holding(permit);
                    }
                    None => {
                        // The pipeline holds the whole budget: wait for completions.
                        if !self.waiting_for_room {
                            self.waiting_for_room = true;
                            crate::metrics::budget_full("in_flight_bytes");
                        }
                        self.backlog.push_front(delivery);
                        return HandOn::Done;
                    }
                }
            }
            let bytes = held_bytes(&delivery.publish);
            match self.out.try_send(delivery) {
                Ok(()) => self.backlog_bytes -= bytes,
                Err(flume::TrySendError::Full(delivery)) => {
                    self.backlog.push_front(delivery);
                    return HandOn::Done;
                }
                Err(flume::TrySendError::Disconnected(_)) => return HandOn::PipelineGone,
            }
        }
        HandOn::Done
    }

    /// A delivery completed: acknowledges what the tracker releases, in receive order.
    fn completed(&mut self, ticket: Ticket) {
        self.acks.release(self.tracker.complete(ticket), &mut self.counters);
    }

    /// What the connection task reports.
    fn on_event(&mut self, event: FromConnection) -> Result<(), IngestError> {
        match event {
            FromConnection::Connected { session_present } => self.connected(session_present)?,
            FromConnection::Subscribed => {
                self.counters.subscriptions_acked += 1;
                self.counters.ready = true;
                crate::metrics::connection(true, false, false);
            }
            FromConnection::Message(publish) => {
                self.counters.received += 1;
                let ticket = self.tracker.register((publish.clone(), Instant::now()));
                self.backlog_bytes += held_bytes(&publish);
                self.backlog.push_back(Delivery::new(publish, ticket, self.done_tx.clone()));
            }
            FromConnection::Disconnected { error, resume } => {
                self.counters.ready = false;
                crate::metrics::connection(false, false, false);
                let dropped = self.tracker.new_connection();
                self.backlog.clear();
                self.backlog_bytes = 0;
                // Acknowledgements of the old connection's messages: the broker sends them again.
                self.acks.unsent.clear();
                tracing::warn!(%error, dropped, "mqtt connection lost; reconnecting");
                let _ = resume.send(());
            }
        }
        Ok(())
    }

    /// A (re)connection: a new tracker epoch, and subscriptions when the broker kept no
    /// session for us.
    fn connected(&mut self, session_present: bool) -> Result<(), IngestError> {
        self.counters.connections += 1;
        self.tracker.new_connection();
        self.counters.ready = session_present;
        let session_lost = !session_present && self.counters.connections > 1;
        crate::metrics::connection(session_present, self.counters.connections > 1, session_lost);
        if session_present {
            return Ok(());
        }
        if session_lost {
            self.counters.sessions_lost += 1;
            tracing::warn!(client_id = %self.config.client_id, "broker had no session for us: messages queued while we were away may be lost");
        }
        let subscriptions = self.filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
        self.acks
            .client
            .try_subscribe_many(subscriptions)
            .map_err(|e| IngestError::Mqtt { detail: format!("subscribe: {e}") })
    }

    /// Graceful stop: takes no new messages and acknowledges what completes within `drain`
    /// (once every delivery still held elsewhere is completed or dropped, the completion
    /// channel closes), then disconnects. Messages arriving meanwhile are left unacknowledged
    /// (the broker sends them again). The final counters.
    async fn drain(
        self,
        done: flume::Receiver<Ticket>,
        events: &flume::Receiver<FromConnection>,
        drain: Duration,
    ) -> SourceCounters {
        let SourceTask { mut acks, out, done_tx, mut tracker, mut counters, backlog, .. } = self;
        drop((backlog, out, done_tx));
        let deadline = tokio::time::Instant::now() + drain;
        // Whether completions can still come (the channel closes once every delivery held
        // elsewhere is completed or dropped).
        let mut completing = true;
        loop {
            acks.send(&mut counters);
            let waiting = completing && tracker.in_flight() > 0;
            if !waiting && acks.unsent.is_empty() {
                break;
            }
            let retry = !acks.unsent.is_empty();
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                ticket = done.recv_async(), if waiting => match ticket {
                    Ok(ticket) => acks.release(tracker.complete(ticket), &mut counters),
                    // Acknowledgements already released are still sent.
                    Err(_) => completing = false,
                },
                event = events.recv_async() => match event {
                    // What was released belonged to the lost connection.
                    Ok(FromConnection::Disconnected { resume, .. }) => {
                        let _ = resume.send(());
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                },
                () = tokio::time::sleep(BACKLOG_RETRY), if retry => {}
            }
        }
        let _ = acks.client.try_disconnect();
        counters.ready = false;
        counters
    }
}

/// The acknowledgements the tracker released, on their way to rumqttc.
struct Acks {
    client: AsyncClient,
    /// Released (in receive order) and not yet taken by rumqttc's request channel, which takes
    /// at most one request per batch of packets read and so can fall behind a burst.
    unsent: VecDeque<Publish>,
}

impl Acks {
    /// Queues `released` (in the order given) and sends what fits.
    fn release(&mut self, released: Vec<(Publish, Instant)>, counters: &mut SourceCounters) {
        for (publish, received_at) in released {
            crate::metrics::acknowledged(received_at.elapsed().as_secs_f64());
            self.unsent.push_back(publish);
        }
        self.send(counters);
    }

    /// Hands queued acknowledgements to rumqttc, in order, as far as its channel has room; the
    /// rest waits for the next turn. (Were the connection task gone, the events channel says so.)
    fn send(&mut self, counters: &mut SourceCounters) {
        while let Some(publish) = self.unsent.front() {
            if self.client.try_ack(publish).is_err() {
                return;
            }
            self.unsent.pop_front();
            counters.acknowledged += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn publish(pkid: u16) -> (Publish, Instant) {
        let mut publish = Publish::new("vehicles/car-1/telemetry", QoS::AtLeastOnce, Vec::new());
        publish.pkid = pkid;
        (publish, Instant::now())
    }

    fn waiting(acks: &Acks) -> Vec<u16> {
        acks.unsent.iter().map(|p| p.pkid).collect()
    }

    #[test]
    fn acknowledgements_beyond_a_full_request_channel_wait_in_order_and_go_once_it_has_room() {
        // An event loop nobody polls: its request channel holds 4.
        let (client, mut eventloop) = AsyncClient::new(MqttOptions::new("test", "127.0.0.1", 1883), 4);
        let mut acks = Acks { client, unsent: VecDeque::new() };
        let mut counters = SourceCounters::default();
        acks.release((1..=10).map(publish).collect(), &mut counters);
        assert_eq!(counters.acknowledged, 4);
        assert_eq!(waiting(&acks), [5, 6, 7, 8, 9, 10]);
        acks.send(&mut counters);
        assert_eq!(counters.acknowledged, 4, "still full: nothing more taken, nothing lost");
        // The channel empties (here by rumqttc's clean, as at a reconnection): the next turn
        // sends what fits, in order.
        eventloop.clean();
        acks.send(&mut counters);
        assert_eq!(counters.acknowledged, 8);
        assert_eq!(waiting(&acks), [9, 10]);
    }
}
