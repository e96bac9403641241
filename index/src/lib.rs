//! # tripline-index
//!
//! The read store: one Tantivy document per trip, written by the indexer and read by the query
//! API. Both sides need the same schema, document mapping and queries, so they live here, beside
//! the write store (`tripline-store`), and neither stage depends on the other (docs/adr/0003).
//!
//! **Promises.** Every query is scoped to one tenant by a structured term filter that user text
//! cannot reach: free text is tokenized here and matched against the text field only, never
//! handed to a query parser. A commit carries the change-feed checkpoint in its payload, so the
//! index and its progress are durable together. Paging is by (sort key, trip key hash) and
//! returns every matching trip exactly once while the index does not change; see [`search`].

mod doc_mapping;
mod home;
pub mod search;
pub mod stats;
#[cfg(test)]
mod tests;

use std::path::Path;

use tantivy::directory::MmapDirectory;
use tantivy::indexer::LogMergePolicy;
use tantivy::schema::Schema;
use tantivy::{Index, IndexReader, ReloadPolicy, Term};
use tripline_model::{TenantId, TripId, VehicleId};
use tripline_store::{Checkpoint, TripRecord};

pub use doc_mapping::{Fields, document, trip_key};
pub use home::{IndexHome, LiveIndex};
pub use search::{Cursor, SearchPage, SortOrder, TripQuery};
pub use stats::{Bucket, GroupBy};
pub use tantivy::IndexWriter;

/// Memory for a bulk writer's buffer (a rebuild, tests), bytes, shared by its indexing threads.
pub const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// Memory for the live indexer's writer, bytes: one indexing thread, close to Tantivy's
/// least (15 MB a thread). Its commits come up to ten a second with a few hundred trips each,
/// and every commit starts a segment whose term table is sized from this budget and walked
/// whole when the segment is written: with 64 MB on two threads a commit of 150 trips took
/// 33 ms at the median on this project's machine, with 16 MB on one thread 17 ms.
pub const LIVE_WRITER_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// Segments below this many documents are merged as one layer by the live writer (tantivy's
/// default is 10,000). The indexer commits a few hundred changed trips every
/// `commit_interval_ms`, so with the default each merge of eight small segments rewrote the
/// layer's largest one again; with 1,000, small segments merge among themselves first.
/// `cargo bench -p tripline-index --bench search` (`TRIPLINE_BENCH_TRIPS=20000`), live commits of
/// 300 changed trips: CPU per commit, merges included, 41–44 ms -> 25–28 ms.
pub const LIVE_MIN_LAYER_DOCS: u32 = 1_000;

/// What can go wrong in the read store.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Tantivy failed (files, corrupt index, writer lock).
    #[error("index: {detail}")]
    Tantivy {
        /// What failed.
        detail: String,
    },
    /// The commit payload is not a checkpoint this version wrote.
    #[error("index checkpoint unreadable: {detail}")]
    Checkpoint {
        /// What is wrong.
        detail: String,
    },
    /// A stored document could not be read back.
    #[error("corrupt document: {detail}")]
    Corrupt {
        /// What is wrong.
        detail: String,
    },
    /// A paging cursor this index did not issue.
    #[error("invalid cursor")]
    BadCursor,
    /// Another writer holds the index's lock (in this process or another); it may let go.
    #[error("index: another writer holds the index")]
    WriterBusy,
}

impl From<tantivy::TantivyError> for IndexError {
    fn from(error: tantivy::TantivyError) -> Self {
        match error {
            tantivy::TantivyError::LockFailure(tantivy::directory::error::LockError::LockBusy, _) => {
                IndexError::WriterBusy
            }
            error => IndexError::Tantivy { detail: error.to_string() },
        }
    }
}

/// Shorthand for index results.
pub type IndexResult<T> = Result<T, IndexError>;

/// The trip index: its schema fields, and a reader reloaded explicitly after commits.
#[derive(Clone)]
pub struct TripIndex {
    index: Index,
    fields: Fields,
    reader: IndexReader,
}

impl std::fmt::Debug for TripIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TripIndex").finish_non_exhaustive()
    }
}

impl TripIndex {
    /// Opens the index in `dir`, creating it (and the folder) when missing. An index an earlier
    /// version created keeps its own schema when it serves this version's documents and queries
    /// (the same fields and types; it may index more than this version does, and hold fields
    /// this version no longer fills); `tripline reindex` moves it to this version's schema.
    pub fn open_or_create(dir: &Path) -> IndexResult<TripIndex> {
        std::fs::create_dir_all(dir)
            .map_err(|e| IndexError::Tantivy { detail: format!("creating {}: {e}", dir.display()) })?;
        let directory = MmapDirectory::open(dir).map_err(|e| IndexError::Tantivy { detail: e.to_string() })?;
        let exists = Index::exists(&directory).map_err(|e| IndexError::Tantivy { detail: e.to_string() })?;
        let index = if exists {
            let index = Index::open(directory)?;
            doc_mapping::serves(&index.schema()).map_err(|detail| IndexError::Tantivy {
                detail: format!("the index in {} was built by another version: {detail}", dir.display()),
            })?;
            index
        } else {
            Index::create(directory, doc_mapping::schema(), tantivy::IndexSettings::default())?
        };
        TripIndex::from_index(index)
    }

    /// An index in memory (tests, benchmarks).
    pub fn in_memory() -> IndexResult<TripIndex> {
        let schema = doc_mapping::schema();
        TripIndex::from_index(Index::create_in_ram(schema))
    }

    fn from_index(index: Index) -> IndexResult<TripIndex> {
        let fields = Fields::of(&index.schema())?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(TripIndex { index, fields, reader })
    }

    /// The schema.
    pub fn schema(&self) -> Schema {
        self.index.schema()
    }

    /// A writer for bulk work (one per index at a time; a rebuild's, or a test's).
    pub fn writer(&self) -> IndexResult<IndexWriter> {
        Ok(self.index.writer(WRITER_MEMORY_BYTES)?)
    }

    /// The writer of an indexer that commits often, a few documents at a time (one thread,
    /// [`LIVE_WRITER_MEMORY_BYTES`], small segments merged among themselves first:
    /// [`LIVE_MIN_LAYER_DOCS`]).
    pub fn live_writer(&self) -> IndexResult<IndexWriter> {
        let writer: IndexWriter = self.index.writer_with_num_threads(1, LIVE_WRITER_MEMORY_BYTES)?;
        let mut merges = LogMergePolicy::default();
        merges.set_min_layer_size(LIVE_MIN_LAYER_DOCS);
        writer.set_merge_policy(Box::new(merges));
        Ok(writer)
    }

    /// Replaces the trip's document (delete by key, then add).
    pub fn upsert(&self, writer: &IndexWriter, trip: &TripRecord) -> IndexResult<()> {
        let key = trip_key(&trip.tenant, &trip.summary.vehicle_id, &trip.summary.trip_id);
        writer.delete_term(Term::from_field_text(self.fields.key, &key));
        writer.add_document(document(&self.fields, trip)?)?;
        Ok(())
    }

    /// Adds the trip's document, for an index known not to hold it (a rebuild).
    pub fn add(&self, writer: &IndexWriter, trip: &TripRecord) -> IndexResult<()> {
        writer.add_document(document(&self.fields, trip)?)?;
        Ok(())
    }

    /// Removes the trip's document.
    pub fn delete(&self, writer: &IndexWriter, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) {
        writer.delete_term(Term::from_field_text(self.fields.key, &trip_key(tenant, vehicle, trip_id)));
    }

    /// Commits everything added since the last commit together with `checkpoint`, then reloads
    /// the reader so the change is searchable.
    pub fn commit(&self, writer: &mut IndexWriter, checkpoint: &Checkpoint) -> IndexResult<()> {
        let payload =
            serde_json::to_string(checkpoint).map_err(|e| IndexError::Checkpoint { detail: e.to_string() })?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.reload()
    }

    /// The checkpoint of the last commit (the start of the feed for a new index).
    pub fn checkpoint(&self) -> IndexResult<Checkpoint> {
        match self.index.load_metas()?.payload {
            Some(payload) => {
                serde_json::from_str(&payload).map_err(|e| IndexError::Checkpoint { detail: e.to_string() })
            }
            None => Ok(Checkpoint::default()),
        }
    }

    /// Makes the last commit visible to searches.
    pub fn reload(&self) -> IndexResult<()> {
        Ok(self.reader.reload()?)
    }

    /// Trip documents visible to searches, all tenants.
    pub fn document_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Aggregates the tenant's trips `query` selects (its sort, limit and cursor do not apply).
    pub fn stats(&self, tenant: &TenantId, query: &TripQuery, group: GroupBy) -> IndexResult<Vec<Bucket>> {
        let built = search::build(&self.index, &self.fields, tenant, query);
        let fruit = self.reader.searcher().search(&built, &stats::Stats { group })?;
        Ok(stats::buckets(fruit))
    }

    /// Searches one tenant's trips.
    pub fn search(&self, tenant: &TenantId, query: &TripQuery) -> IndexResult<SearchPage> {
        search::run(&self.reader.searcher(), &self.index, &self.fields, tenant, query)
    }
}
