//! Ingest's Prometheus metrics, named once here (`tripline_ingest_<noun>_<unit|total>`).
//!
//! Recorded through the `metrics` facade: the binary installs the Prometheus recorder and serves
//! `/metrics`; without a recorder (tests, libraries) recording costs nothing.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tripline_model::RejectReason;

/// Messages received from the broker.
pub const MESSAGES: &str = "tripline_ingest_messages_total";
/// Points received in telemetry messages (before validation).
pub const POINTS: &str = "tripline_ingest_points_total";
/// Rejected messages and points, by `reason`.
pub const REJECTIONS: &str = "tripline_ingest_rejections_total";
/// Acknowledgements sent to the broker.
pub const ACKS: &str = "tripline_ingest_acks_total";
/// From receipt of a message to its acknowledgement.
pub const ACK_LATENCY: &str = "tripline_ingest_ack_latency_seconds";
/// How long the registry took to answer which tenant a vehicle the intake did not know
/// belongs to (retries included); its messages wait meanwhile.
pub const LOOKUP_SECONDS: &str = "tripline_ingest_registry_lookup_seconds";
/// From receipt of a message until the intake handed it to its worker's queue.
pub const HANDOFF_SECONDS: &str = "tripline_ingest_handoff_seconds";
/// Messages received and not yet acknowledged.
pub const IN_FLIGHT: &str = "tripline_ingest_in_flight_messages";
/// Items waiting in a queue, by `queue`.
pub const QUEUE_DEPTH: &str = "tripline_ingest_queue_depth_messages";
/// Connections to the broker after the first.
pub const RECONNECTS: &str = "tripline_ingest_reconnects_total";
/// Connections on which the broker had no session for us: an alarm (messages queued for us
/// while we were away may be lost).
pub const SESSIONS_LOST: &str = "tripline_ingest_sessions_lost_total";
/// Connections the embedded endpoint refused or closed, by `reason`.
pub const REFUSED: &str = "tripline_ingest_endpoint_refused_total";
/// Vehicles connected to the embedded endpoint.
pub const VEHICLE_CONNECTIONS: &str = "tripline_ingest_endpoint_connections";
/// Times a bound was reached and ingest waited for room, by `budget` (`in_flight_bytes`).
pub const BUDGET_FULL: &str = "tripline_ingest_budget_full_total";
/// Bytes of messages received and not yet completed (the in-flight budget's use).
pub const IN_FLIGHT_BYTES: &str = "tripline_ingest_in_flight_bytes";
/// 1 while connected and subscribed.
pub const CONNECTED: &str = "tripline_ingest_connected";

/// Describes every ingest metric to the installed recorder (once, at start).
pub fn describe() {
    describe_counter!(MESSAGES, "Messages received from the broker");
    describe_counter!(POINTS, "Points received in telemetry messages, before validation");
    describe_counter!(REJECTIONS, "Rejected messages and points, by reason");
    describe_counter!(ACKS, "Acknowledgements sent to the broker (each after its message was durable)");
    describe_histogram!(ACK_LATENCY, Unit::Seconds, "From receipt of a message to its acknowledgement");
    describe_histogram!(
        LOOKUP_SECONDS,
        Unit::Seconds,
        "A registry lookup of a vehicle the intake did not know, while its messages wait"
    );
    describe_histogram!(
        HANDOFF_SECONDS,
        Unit::Seconds,
        "From receipt of a message until the intake handed it to its worker's queue"
    );
    describe_gauge!(IN_FLIGHT, "Messages received and not yet acknowledged");
    describe_gauge!(QUEUE_DEPTH, "Items waiting in a pipeline queue, by queue");
    describe_counter!(RECONNECTS, "Connections to the broker after the first");
    describe_counter!(SESSIONS_LOST, "Reconnections on which the broker had no session for us (alarm)");
    describe_gauge!(CONNECTED, "1 while connected to the broker and subscribed (embedded: while listening)");
    describe_counter!(REFUSED, "Connections, subscriptions and publishes the embedded endpoint refused, by reason");
    describe_gauge!(VEHICLE_CONNECTIONS, "Vehicles connected to the embedded endpoint");
    describe_counter!(BUDGET_FULL, "Times a bound was reached and ingest waited for room, by budget");
    describe_gauge!(IN_FLIGHT_BYTES, Unit::Bytes, "Bytes of messages received and not yet completed");
}

pub(crate) fn budget_full(budget: &'static str) {
    counter!(BUDGET_FULL, "budget" => budget).increment(1);
}

/// Samples the in-flight budget's use.
pub fn in_flight_bytes(bytes: usize) {
    gauge!(IN_FLIGHT_BYTES).set(bytes as f64);
}

pub(crate) fn message_received(points: usize) {
    counter!(MESSAGES).increment(1);
    counter!(POINTS).increment(points as u64);
}

pub(crate) fn rejected(reason: RejectReason) {
    counter!(REJECTIONS, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn looked_up(seconds: f64) {
    histogram!(LOOKUP_SECONDS).record(seconds);
}

pub(crate) fn handed_off(seconds: f64) {
    histogram!(HANDOFF_SECONDS).record(seconds);
}

pub(crate) fn acknowledged(latency_s: f64) {
    counter!(ACKS).increment(1);
    histogram!(ACK_LATENCY).record(latency_s);
}

pub(crate) fn connection(connected: bool, reconnect: bool, session_lost: bool) {
    gauge!(CONNECTED).set(if connected { 1.0 } else { 0.0 });
    if reconnect {
        counter!(RECONNECTS).increment(1);
    }
    if session_lost {
        counter!(SESSIONS_LOST).increment(1);
    }
}

pub(crate) fn in_flight(messages: usize) {
    gauge!(IN_FLIGHT).set(messages as f64);
}

pub(crate) fn refused(reason: &'static str) {
    counter!(REFUSED, "reason" => reason).increment(1);
}

pub(crate) fn vehicle_connections(connections: usize) {
    gauge!(VEHICLE_CONNECTIONS).set(connections as f64);
}

/// Samples the depth of a named queue (the binary calls it periodically for its queues).
pub fn queue_depth(queue: impl Into<metrics::SharedString>, depth: usize) {
    gauge!(QUEUE_DEPTH, "queue" => queue.into()).set(depth as f64);
}
