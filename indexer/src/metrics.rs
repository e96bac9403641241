//! The indexer's Prometheus metrics, named once here (`tripline_indexer_<noun>_<unit|total>`).

use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};

/// Change-feed entries read.
pub const CHANGES: &str = "tripline_indexer_changes_total";
/// Commits of the index.
pub const COMMITS: &str = "tripline_indexer_commits_total";
/// How long the oldest change read but not yet committed has waited (0: all committed).
pub const LAG: &str = "tripline_indexer_lag_seconds";
/// Trip documents in the index after the last commit.
pub const DOCUMENTS: &str = "tripline_indexer_documents";

/// Describes every indexer metric to the installed recorder.
pub fn describe() {
    describe_counter!(CHANGES, "Change-feed entries read");
    describe_counter!(COMMITS, "Index commits (each with its change-feed checkpoint)");
    describe_gauge!(LAG, Unit::Seconds, "Age of the oldest change read and not yet committed");
    describe_gauge!(DOCUMENTS, "Trip documents in the index after the last commit");
}

pub(crate) fn changes(n: usize) {
    counter!(CHANGES).increment(n as u64);
}

pub(crate) fn lag(seconds: f64) {
    gauge!(LAG).set(seconds);
}

pub(crate) fn committed(documents: u64) {
    counter!(COMMITS).increment(1);
    gauge!(LAG).set(0.0);
    gauge!(DOCUMENTS).set(documents as f64);
}
