//! # tripline-enrich
//!
//! The per-trip engine: point filters (duplicates, implausible jumps, stationary jitter), trip
//! cutting, distance, speed, harsh braking / acceleration / cornering, speeding, regions, night
//! driving and the usage-based-insurance score; plus the worker pool that runs it.
//!
//! **Promises** (being built, see ARCHITECTURE.md): pure, synchronous and deterministic; a trip's
//! summary is a function of the set of its kept points, whatever their arrival order.
