//! # tripline-store
//!
//! The write store, the source of truth: enriched points, trip summaries and events, rejections,
//! the fleet registry and the change feed the indexer follows. ScyllaDB for production, an
//! embedded LSM backend for a single machine, both behind the same small traits and proven by one
//! conformance suite.
//!
//! **Promises** (being built, see ARCHITECTURE.md): a write returns only when durable; rewrites
//! are idempotent; every read is scoped to a tenant.
