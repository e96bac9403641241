//! The webhooks' Prometheus metrics, named once here: their share of the `tripline_push_*`
//! family (the live stream's is in `tripline-query-api`).

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tripline_model::NoticeKind;
use tripline_store::DeliveryOutcome;

/// Delivery attempts by outcome (`delivered`, `retrying`, `failed`).
pub const DELIVERIES: &str = "tripline_push_deliveries_total";
/// Messages sent, by channel (`webhook`) and type.
pub const EVENTS_SENT: &str = "tripline_push_events_sent_total";
/// From the change's write to its message being delivered.
pub const DELAY_SECONDS: &str = "tripline_push_delay_seconds";
/// How long a receiver took to answer.
pub const ATTEMPT_SECONDS: &str = "tripline_push_attempt_seconds";
/// Messages in a webhook's outbox.
pub const OUTBOX: &str = "tripline_push_outbox_messages";
/// Age of the oldest message in a webhook's outbox.
pub const OUTBOX_AGE: &str = "tripline_push_outbox_age_seconds";
/// Webhooks being delivered.
pub const WEBHOOKS: &str = "tripline_push_webhooks";

/// Describes every webhook metric to the installed recorder.
pub fn describe() {
    describe_counter!(DELIVERIES, "Webhook delivery attempts by outcome");
    describe_counter!(EVENTS_SENT, "Push messages sent, by channel and type");
    describe_histogram!(DELAY_SECONDS, Unit::Seconds, "From a change's write to its push message being sent");
    describe_histogram!(ATTEMPT_SECONDS, Unit::Seconds, "A webhook receiver's answer time");
    describe_gauge!(OUTBOX, "Messages waiting in a webhook's outbox");
    describe_gauge!(OUTBOX_AGE, Unit::Seconds, "Age of the oldest message waiting in a webhook's outbox");
    describe_gauge!(WEBHOOKS, "Webhooks being delivered");
}

pub(crate) fn delivery(outcome: DeliveryOutcome, kind: NoticeKind, written_at_ms: i64, took: Duration) {
    let outcome = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::Retrying => "retrying",
        DeliveryOutcome::Failed => "failed",
    };
    counter!(DELIVERIES, "outcome" => outcome).increment(1);
    histogram!(ATTEMPT_SECONDS).record(took.as_secs_f64());
    if outcome == "delivered" {
        counter!(EVENTS_SENT, "channel" => "webhook", "type" => kind.as_str()).increment(1);
        let delay_ms = (tripline_model::time::now_ms() - written_at_ms).max(0);
        histogram!(DELAY_SECONDS, "channel" => "webhook").record(delay_ms as f64 / 1000.0);
    }
}

pub(crate) fn outbox(webhook: &str, waiting: usize, oldest_written_ms: Option<i64>) {
    gauge!(OUTBOX, "webhook" => webhook.to_owned()).set(waiting as f64);
    let age_ms = oldest_written_ms.map_or(0, |at| (tripline_model::time::now_ms() - at).max(0));
    gauge!(OUTBOX_AGE, "webhook" => webhook.to_owned()).set(age_ms as f64 / 1000.0);
}

pub(crate) fn webhooks(count: usize) {
    gauge!(WEBHOOKS).set(count as f64);
}
