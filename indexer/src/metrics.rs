//! The indexer's Prometheus metrics, named once here (`tripline_indexer_<noun>_<unit|total>`).

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// Change-feed entries read.
pub const CHANGES: &str = "tripline_indexer_changes_total";
/// Commits of the index.
pub const COMMITS: &str = "tripline_indexer_commits_total";
/// How long the oldest change read but not yet committed has waited (0: all committed).
pub const LAG: &str = "tripline_indexer_lag_seconds";
/// Trip documents in the index after the last commit.
pub const DOCUMENTS: &str = "tripline_indexer_documents";
/// How long reading one commit's changed trips from the write store took.
pub const READ_SECONDS: &str = "tripline_indexer_read_seconds";
/// Changed trips indexed as this process wrote them, without reading them back.
pub const REUSED: &str = "tripline_indexer_reused_total";
/// Changed trips read back from the write store.
pub const READS: &str = "tripline_indexer_reads_total";
/// How long one commit of the index (with its reload) took.
pub const COMMIT_SECONDS: &str = "tripline_indexer_commit_seconds";
/// From reading a cut's oldest change off the feed until the cut is searchable.
pub const DELAY_SECONDS: &str = "tripline_indexer_delay_seconds";

/// Describes every indexer metric to the installed recorder.
pub fn describe() {
    describe_counter!(CHANGES, "Change-feed entries read");
    describe_counter!(COMMITS, "Index commits (each with its change-feed checkpoint)");
    describe_gauge!(LAG, Unit::Seconds, "Age of the oldest change read and not yet committed");
    describe_gauge!(DOCUMENTS, "Trip documents in the index after the last commit");
    describe_histogram!(READ_SECONDS, Unit::Seconds, "Reading one commit's changed trips from the write store");
    describe_counter!(REUSED, "Changed trips indexed as this process wrote them, not read back from the store");
    describe_counter!(READS, "Changed trips read back from the write store");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "One index commit, reader reload included");
    describe_histogram!(DELAY_SECONDS, Unit::Seconds, "From reading a cut's oldest change until it is searchable");
}

pub(crate) fn read_took(seconds: f64, reused: u64, reads: u64) {
    histogram!(READ_SECONDS).record(seconds);
    counter!(REUSED).increment(reused);
    counter!(READS).increment(reads);
}

pub(crate) fn commit_took(seconds: f64, delay_s: f64) {
    histogram!(COMMIT_SECONDS).record(seconds);
    histogram!(DELAY_SECONDS).record(delay_s);
}

pub(crate) fn changes(n: usize) {
    counter!(CHANGES).increment(n as u64);
}

pub(crate) fn lag(seconds: f64) {
    gauge!(LAG).set(seconds);
}

pub(crate) fn committed(documents: u64) {
    counter!(COMMITS).increment(1);
    self::documents(documents);
}

pub(crate) fn documents(documents: u64) {
    gauge!(DOCUMENTS).set(documents as f64);
}
