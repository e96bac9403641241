//! # tripline-query-api
//!
//! The HTTP API insurers use: trip search and stats over the Tantivy index, trip detail, points
//! and rejections from the write store, health, readiness, metrics and the OpenAPI description.
//!
//! **Promises** (being built, see ARCHITECTURE.md): an API key sees only its own tenant; another
//! tenant's trip answers 404 exactly like a missing one.
