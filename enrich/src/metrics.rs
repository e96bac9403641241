//! The worker pool's Prometheus metrics, named once here (`tripline_enrich_<noun>_<unit|total>`).

use metrics::{Unit, describe_histogram, histogram};

/// How long one worker's write of a batch took, until durable (retries included).
pub const WRITE_SECONDS: &str = "tripline_enrich_write_seconds";
/// Messages in one worker batch (one write).
pub const BATCH_MESSAGES: &str = "tripline_enrich_batch_messages";

/// Describes every worker metric to the installed recorder.
pub fn describe() {
    describe_histogram!(WRITE_SECONDS, Unit::Seconds, "One worker batch's write until durable, retries included");
    describe_histogram!(BATCH_MESSAGES, Unit::Count, "Messages in one worker batch");
}

pub(crate) fn batch_written(messages: usize, seconds: f64) {
    histogram!(BATCH_MESSAGES).record(messages as f64);
    histogram!(WRITE_SECONDS).record(seconds);
}
