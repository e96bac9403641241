//! # tripline-indexer
//!
//! Follows the write store's change feed and keeps one Tantivy document per trip, committing
//! with the change-feed checkpoint in the commit payload so data and progress commit together.
//!
//! **Promises** (being built, see ARCHITECTURE.md): a changed trip is searchable within a second;
//! after a restart the index resumes exactly at its checkpoint.
