//! The worker pool's Prometheus metrics, named once here (`tripline_pipeline_<noun>_<unit|total>`).

use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// How long one worker's write of a batch took, until durable (retries included).
pub const WRITE_SECONDS: &str = "tripline_pipeline_write_seconds";
/// Messages in one worker batch (one write).
pub const BATCH_MESSAGES: &str = "tripline_pipeline_batch_messages";
/// How long a batch's oldest message waited in its worker's queue before the batch began.
pub const QUEUE_WAIT_SECONDS: &str = "tripline_pipeline_queue_wait_seconds";
/// How long reading a trip from the store took: one not in memory (a new trip id is looked for
/// too), a parked one reopened, or one rebuilt after a late point.
pub const TRIP_READ_SECONDS: &str = "tripline_pipeline_trip_read_seconds";
/// How long applying one batch to its trips and building its write set took (before the write).
pub const APPLY_SECONDS: &str = "tripline_pipeline_apply_seconds";

/// How long sealing one completed trip's points took.
pub const SEAL_SECONDS: &str = "tripline_pipeline_seal_seconds";
/// Completed trips whose points were sealed (rewritten as a few sealed chunks).
pub const SEALS_TOTAL: &str = "tripline_pipeline_seals_total";
/// Live trips that left memory before they went idle, because a worker held its maximum.
pub const TRIPS_EVICTED_TOTAL: &str = "tripline_pipeline_trips_evicted_total";
/// Open trips of the store taken as parked by a worker that did not hold them (after a restart,
/// or forgotten over the cap), so that their idle completion happens.
pub const TRIPS_ADOPTED_TOTAL: &str = "tripline_pipeline_trips_adopted_total";

/// Worker batches cut short by a bound other than the message count, by `bound` (`bytes`).
pub const BATCHES_CUT_TOTAL: &str = "tripline_pipeline_batches_cut_total";
/// Points the pass dropped, by `reason` (`implausible_jump`): the intake's counter of rejected
/// messages and points, which the workers add to.
pub const REJECTIONS: &str = "tripline_ingest_rejections_total";

/// Describes every worker metric to the installed recorder.
pub fn describe() {
    describe_histogram!(WRITE_SECONDS, Unit::Seconds, "One worker batch's write until durable, retries included");
    describe_histogram!(BATCH_MESSAGES, Unit::Count, "Messages in one worker batch");
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "How long a worker batch's oldest message waited in the worker's queue"
    );
    describe_histogram!(
        TRIP_READ_SECONDS,
        Unit::Seconds,
        "Reading a trip not in memory from the store (new trip ids too), within a batch's apply"
    );
    describe_histogram!(APPLY_SECONDS, Unit::Seconds, "Applying one worker batch to its trips, before its write");
    describe_histogram!(SEAL_SECONDS, Unit::Seconds, "Sealing one completed trip's points");
    describe_counter!(SEALS_TOTAL, Unit::Count, "Completed trips whose points were sealed");
    describe_counter!(BATCHES_CUT_TOTAL, Unit::Count, "Worker batches cut short by their byte bound");
    describe_counter!(
        TRIPS_ADOPTED_TOTAL,
        Unit::Count,
        "Open trips of the store a worker took as parked (after a restart, or forgotten over the cap)"
    );
    describe_counter!(
        TRIPS_EVICTED_TOTAL,
        Unit::Count,
        "Trips that left memory: parked at a worker's maximum of live trips (cap), parked once their vehicle was done with them (parked), parked ones forgotten at the maximum (forgotten)"
    );
}

pub(crate) fn trip_sealed(sealed: bool, seconds: f64) {
    histogram!(SEAL_SECONDS).record(seconds);
    if sealed {
        counter!(SEALS_TOTAL).increment(1);
    }
}

pub(crate) fn batch_written(messages: usize, seconds: f64) {
    histogram!(BATCH_MESSAGES).record(messages as f64);
    histogram!(WRITE_SECONDS).record(seconds);
}

pub(crate) fn batch_started(oldest_waited_seconds: f64) {
    histogram!(QUEUE_WAIT_SECONDS).record(oldest_waited_seconds);
}

pub(crate) fn trip_read(seconds: f64) {
    histogram!(TRIP_READ_SECONDS).record(seconds);
}

pub(crate) fn batch_applied(seconds: f64) {
    histogram!(APPLY_SECONDS).record(seconds);
}

pub(crate) fn points_rejected(reason: tripline_model::RejectReason, points: usize) {
    if points > 0 {
        counter!(REJECTIONS, "reason" => reason.as_str()).increment(points as u64);
    }
}

pub(crate) fn batch_cut(bound: &'static str) {
    counter!(BATCHES_CUT_TOTAL, "bound" => bound).increment(1);
}

pub(crate) fn trips_evicted_over_cap(trips: usize) {
    counter!(TRIPS_EVICTED_TOTAL, "reason" => "cap").increment(trips as u64);
}

/// Parked trips forgotten because a worker held its maximum of them (reopened from the store
/// only when a message for them comes).
pub(crate) fn parked_trips_forgotten(trips: usize) {
    counter!(TRIPS_EVICTED_TOTAL, "reason" => "forgotten").increment(trips as u64);
}

pub(crate) fn trips_parked(trips: usize) {
    if trips > 0 {
        counter!(TRIPS_EVICTED_TOTAL, "reason" => "parked").increment(trips as u64);
    }
}

/// Open trips taken from the store by a worker ([`crate::sweep`]).
pub(crate) fn trips_adopted(trips: usize) {
    if trips > 0 {
        counter!(TRIPS_ADOPTED_TOTAL).increment(trips as u64);
    }
}
