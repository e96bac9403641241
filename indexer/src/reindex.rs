//! `tripline reindex`: rebuilds the index from the write store into a new generation while the
//! old one keeps answering, then switches to it.
//!
//! The feed head is taken before the scan, and the new generation's commit carries it as its
//! checkpoint: a trip that changes during the scan is either scanned in its new state or
//! announced after the head, and the indexer (which moves to the new generation on the switch)
//! applies it again. Applying a change twice changes nothing, so the rebuilt index misses
//! nothing and holds each trip once.

use std::time::{Duration, Instant};

use tripline_index::{IndexError, IndexHome};
use tripline_store::{ChangeFeed, Checkpoint, StoreError, TripStore};

/// Trips read from the store per request.
const PAGE: usize = 1000;

/// What can stop a rebuild.
#[derive(Debug, thiserror::Error)]
pub enum ReindexError {
    /// The new index could not be written.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The store could not be read.
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    /// The rebuild task failed.
    #[error("rebuild task: {0}")]
    Task(String),
}

/// What a finished rebuild did.
#[derive(Clone, Debug, PartialEq)]
pub struct ReindexReport {
    /// The generation now in use.
    pub generation: String,
    /// Trips written into it.
    pub trips: u64,
    /// The feed position it resumes from.
    pub checkpoint: Checkpoint,
    /// How long it took.
    pub elapsed: Duration,
}

impl ReindexReport {
    /// Trips indexed per second.
    pub fn rate(&self) -> f64 {
        self.trips as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds the index in `home` from `store`; `progress` is told the number of trips written so
/// far after every page. On failure the partial generation is removed and the one in use stays.
pub async fn reindex<S>(
    store: S,
    home: IndexHome,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<ReindexReport, ReindexError>
where
    S: ChangeFeed + TripStore + Send + Sync + 'static,
{
    let handle = tokio::runtime::Handle::current();
    // Building documents is CPU work: the whole rebuild runs on a blocking thread and waits for
    // the store from there.
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let head = handle.block_on(store.feed_head())?;
        let (generation, index) = home.create_next()?;
        let built = (|| -> Result<u64, ReindexError> {
            let mut writer = index.writer()?;
            let mut cursor: Option<String> = None;
            let mut trips = 0u64;
            loop {
                let page = handle.block_on(store.scan_trips(cursor.as_deref(), PAGE))?;
                for trip in &page.items {
                    match index.add(&writer, trip) {
                        Ok(()) => trips += 1,
                        Err(error @ IndexError::Corrupt { .. }) => {
                            tracing::error!(%error, trip_id = %trip.summary.trip_id, "trip not indexable; skipped");
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                progress(trips);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            index.commit(&mut writer, &head)?;
            writer.wait_merging_threads().map_err(IndexError::from)?;
            Ok(trips)
        })();
        match built {
            Ok(trips) => {
                home.switch_to(&generation)?;
                Ok(ReindexReport { generation, trips, checkpoint: head, elapsed: started.elapsed() })
            }
            Err(error) => {
                drop(index);
                let _ = std::fs::remove_dir_all(home.dir().join(&generation));
                Err(error)
            }
        }
    })
    .await
    .map_err(|e| ReindexError::Task(e.to_string()))?
}
