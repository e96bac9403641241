//! The query API's Prometheus metrics, named once here: the live stream's share of the
//! `tripline_push_*` family.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tripline_model::NoticeKind;

/// Live streams open now.
pub const STREAMS: &str = "tripline_push_streams";
/// Messages sent, by channel (`stream`) and type.
pub const EVENTS_SENT: &str = "tripline_push_events_sent_total";
/// From the change's write to its message being handed to a stream's connection.
pub const DELAY_SECONDS: &str = "tripline_push_delay_seconds";
/// Streams closed by tripline, by reason (`slow_client`, `send_timeout`).
pub const STREAMS_DROPPED: &str = "tripline_push_streams_dropped_total";
/// Streams refused because their key held as many as it may.
pub const STREAMS_REFUSED: &str = "tripline_push_streams_refused_total";

/// Describes every query-API metric to the installed recorder.
pub fn describe() {
    describe_gauge!(STREAMS, "Live streams (GET /v1/stream) open now");
    describe_counter!(EVENTS_SENT, "Push messages sent, by channel and type");
    describe_histogram!(DELAY_SECONDS, Unit::Seconds, "From a change's write to its push message being sent");
    describe_counter!(STREAMS_DROPPED, "Live streams closed by tripline (the client resumes with its last id)");
    describe_counter!(STREAMS_REFUSED, "Live streams refused: the key held as many as it may");
}

pub(crate) fn stream_opened() {
    gauge!(STREAMS).increment(1.0);
}

pub(crate) fn stream_closed() {
    gauge!(STREAMS).decrement(1.0);
}

pub(crate) fn stream_refused() {
    counter!(STREAMS_REFUSED).increment(1);
}

pub(crate) fn stream_dropped(reason: &'static str) {
    counter!(STREAMS_DROPPED, "reason" => reason).increment(1);
}

pub(crate) fn stream_event_sent(kind: NoticeKind, written_at_ms: i64) {
    counter!(EVENTS_SENT, "channel" => "stream", "type" => kind.as_str()).increment(1);
    let delay_ms = (tripline_model::time::now_ms() - written_at_ms).max(0);
    histogram!(DELAY_SECONDS, "channel" => "stream").record(delay_ms as f64 / 1000.0);
}
