//! Open trips nobody holds: after a restart, the trips that were live or parked in the workers
//! are only in the store, and one whose vehicle never sends for it again (a device that starts
//! its next trip under a new id, or stops for good) would stay open for ever. A sweep pages
//! through the store's list of open trips ([`tripline_store::TripStore::scan_open_trips`]: its
//! work follows the trips still open, not every trip the store holds) and hands each to its
//! vehicle's worker, which adopts it as parked ([`crate::Worker::adopt`]): completed once quiet
//! for `idle_eviction`, reopened by a message. It runs when the pool starts, and again at most
//! every [`SWEEP_AGAIN_AFTER`] while workers forgot parked trips over their cap since the last
//! one (which loses them the same way).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tripline_model::TripStatus;
use tripline_store::{Store, TripRecord};

use crate::worker_for;

/// Trips read per page of the sweep.
const PAGE: usize = 500;
/// Another sweep, if workers forgot trips since the last, at most this often: each one reads
/// every open trip.
pub const SWEEP_AGAIN_AFTER: Duration = Duration::from_secs(3600);
/// Wait before reading a page again after the store failed.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Sweeps when started, then again after each [`SWEEP_AGAIN_AFTER`] in which `forgotten` grew;
/// ends when the workers are gone.
pub(crate) async fn run<S: Store>(store: S, workers: Vec<flume::Sender<Vec<TripRecord>>>, forgotten: Arc<AtomicU64>) {
    loop {
        let seen = forgotten.load(Ordering::Relaxed);
        if !sweep(&store, &workers).await {
            return;
        }
        loop {
            tokio::time::sleep(SWEEP_AGAIN_AFTER).await;
            if workers.iter().all(flume::Sender::is_disconnected) {
                return;
            }
            if forgotten.load(Ordering::Relaxed) > seen {
                break;
            }
        }
    }
}

/// One pass over the store's open trips; false once the workers are gone.
async fn sweep<S: Store>(store: &S, workers: &[flume::Sender<Vec<TripRecord>>]) -> bool {
    let mut cursor: Option<String> = None;
    let mut found = 0usize;
    loop {
        let page = match store.scan_open_trips(cursor.as_deref(), PAGE).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "sweep of open trips: reading the store failed; trying again");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        let mut by_worker: Vec<Vec<TripRecord>> = vec![Vec::new(); workers.len()];
        for record in page.items {
            if record.summary.status == TripStatus::Active {
                found += 1;
                by_worker[worker_for(&record.summary.vehicle_id, workers.len())].push(record);
            }
        }
        for (worker, records) in workers.iter().zip(by_worker) {
            if !records.is_empty() && worker.send_async(records).await.is_err() {
                return false;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    tracing::info!(open_trips = found, "sweep of open trips: handed to the workers");
    true
}
