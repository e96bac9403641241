//! `tripline reindex`: rebuilds the read store from the write store. The old index keeps
//! answering until the new one is complete; then indexers and APIs move to it. Runs in this
//! process, or in the running `tripline run` that holds the embedded store.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tripline_index::IndexHome;

use crate::config::Config;
use crate::remote::{RebuildState, RebuildStatus, RemoteError, through_running};
use crate::{Failure, runtime};

fn bar(estimate: u64) -> ProgressBar {
    let bar = ProgressBar::new(estimate.max(1));
    if let Ok(style) = ProgressStyle::with_template("{spinner} reindex {pos}/~{len} trips  {per_sec}  {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn finished(trips: u64, generation: &str, rate: f64) {
    eprintln!("tripline: index rebuilt: {trips} trips ({rate:.0} trips/s); generation {generation} is in use");
}

pub(crate) fn run(config: &Config) -> Result<(), Failure> {
    if let Some(outcome) = through_running(&config.data_dir, follow_remote) {
        let status = outcome?;
        finished(status.trips, status.generation.as_deref().unwrap_or("?"), status.rate.unwrap_or(0.0));
        return Ok(());
    }
    let home = IndexHome::open(&config.data_dir.join("index")).context("index home")?;
    runtime()?.block_on(async {
        let store = crate::config::open_store(config).await?;
        let progress = bar(crate::admin::estimate(&home));
        let shown = progress.clone();
        let report = tripline_indexer::reindex(store, home, move |n| shown.set_position(n)).await.context("reindex")?;
        progress.finish_and_clear();
        finished(report.trips, &report.generation, report.rate());
        Ok(())
    })
}

/// Starts the rebuild in the running process and follows it to its end.
fn follow_remote(remote: &crate::remote::Remote) -> Result<RebuildStatus, RemoteError> {
    let started = remote.start_reindex()?;
    eprintln!("tripline: reindex running in the `tripline run` process that holds the store");
    let progress = bar(started.estimate);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let status = remote.reindex_status()?;
        progress.set_position(status.trips);
        match status.state {
            RebuildState::Running => continue,
            RebuildState::Done => {
                progress.finish_and_clear();
                return Ok(status);
            }
            _ => {
                progress.finish_and_clear();
                return Err(RemoteError::Refused(500, status.error.unwrap_or_else(|| "reindex failed".to_owned())));
            }
        }
    }
}
