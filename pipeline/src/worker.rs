//! The worker pool: enrichment of live trips, written to the store in batches.
//!
//! Messages are routed by vehicle, so one worker sees all of a vehicle's messages in arrival
//! order while different vehicles run in parallel. A worker takes what is queued (up to a batch),
//! applies it to the trips it holds in memory, then writes points, rejections and trip summaries
//! (trips last: their change-feed entries announce the rest), and only then completes the
//! messages, which lets the source acknowledge them. A failed write is retried until it succeeds;
//! nothing is completed before. Every write is an idempotent upsert, so a retry or a redelivered
//! message changes nothing.
//!
//! A trip not in memory (the process restarted, or the trip went quiet and was evicted) is
//! reopened from the store when a point for it arrives: its stored points are loaded and the
//! trip recomputed with the new ones.
//!
//! A trip its vehicle is done with for now (completed, or followed by another trip of the
//! vehicle) is *parked* once it has been quiet for `park_after`: its points leave memory and a
//! few hundred bytes stay (what it told, when it was last active), so that its idle completion
//! and an update it owes still happen; either, or a message for it, reopens it from the store.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tripline_model::time::now_ms;

use tripline_model::{
    Decoded, DroppedPoints, Point, RejectReason, Telemetry, TenantId, TripId, TripMarker, TripStatus, VehicleId,
    point_key,
};
use tripline_store::{
    DAY_MS, Derived, MAX_POINT_RANGE_DAYS, Rejection, Store, StoredPoint, TripKey, TripRecord, WriteSet,
};

use tripline_enrich::{EnrichedPoint, Enricher, TripEngine, auto_trip_id};

use crate::told::Told;

/// Called once the message's results are durable.
pub type Completion = Box<dyn FnOnce() + Send>;

/// One message for a worker: what the intake decoded, and what to call once its results are
/// durable.
pub struct Work {
    /// The message.
    pub item: Decoded,
    /// Called once the message's results are durable (lets the source acknowledge it).
    pub done: Completion,
    /// When it was queued for its worker.
    pub queued_at: std::time::Instant,
}

impl Work {
    /// `item`, completed by `done`, queued now.
    pub fn new(item: Decoded, done: Completion) -> Work {
        Work { item, done, queued_at: std::time::Instant::now() }
    }

    /// About how many bytes the work holds in memory: what a batch's byte bound counts.
    pub fn size_bytes(&self) -> usize {
        self.item.size_bytes() + std::mem::size_of::<Completion>()
    }
}

/// Settings of the worker pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Most messages applied before one write.
    pub max_batch: usize,
    /// Most bytes of messages ([`Work::size_bytes`]) applied before one write: a batch of large
    /// messages is cut sooner (a single message larger than this is a batch of its own).
    pub max_batch_bytes: usize,
    /// A trip that receives nothing for this long is completed and leaves memory.
    pub idle_eviction: Duration,
    /// Wait between attempts of a failed write.
    pub retry_backoff: Duration,
    /// Trips held in memory at most: beyond it, after each write set, the least recently active
    /// ones (all written by then) are parked (see the module's doc). Parked trips are held at
    /// most as many; beyond that the oldest are forgotten until a message reopens one.
    pub max_live_trips: usize,
    /// `trip.updated` is told at most this often per trip (start, completion and events always).
    pub trip_update_every: Duration,
    /// A written trip its vehicle is done with for now (completed, or followed by a more
    /// recently active trip of the vehicle) leaves memory once it has been quiet this long
    /// (see the module's doc).
    pub park_after: Duration,
    /// Points of parked trips reopened at once for owed updates or idle completions (and one
    /// trip beyond): a reopened trip holds all its points from the store until it is written,
    /// so reopening every trip due at once held them all — without bound in the number or length
    /// of the trips (`heaptrack` of the embedded bench's probe phase: ~160–185 MB of points live
    /// at once); rounds of about this many points, each written before the next, bound it
    /// (50,000 points: ~25 MB).
    pub reopen_points: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            max_batch: 256,
            max_batch_bytes: 16 * 1024 * 1024,
            idle_eviction: Duration::from_secs(600),
            retry_backoff: Duration::from_millis(500),
            max_live_trips: 5_000,
            trip_update_every: Duration::from_secs(30),
            park_after: Duration::from_secs(5),
            reopen_points: 50_000,
        }
    }
}

struct LiveTrip {
    tenant: TenantId,
    engine: TripEngine,
    /// Derived automatically (no device trip id): its id follows its first point.
    auto: bool,
    /// Enriched points already written (all of them are rewritten after a recompute).
    written: usize,
    /// Points must all be rewritten (a point landed before the end).
    rewrite_all: bool,
    /// Geohash cells of the written points, kept up to date incrementally (recomputing them for
    /// every point at every batch made long trips quadratic).
    cells: BTreeSet<String>,
    /// The bounds of the cell of the last point added to `cells` (min lon, min lat, max lon,
    /// max lat): consecutive points mostly share a cell, and need no geohash of their own.
    last_cell: Option<(f64, f64, f64, f64)>,
    /// Keys of the jumps already stored as rejections (and counted on `/metrics`).
    announced_jumps: HashSet<u64>,
    /// What the trip's writes told insurers so far.
    told: Told,
    ended: bool,
    dirty: bool,
    last_activity_ms: i64,
    /// When this worker last wrote its record (the record's `updated_at`), Unix ms; 0: never.
    written_at_ms: i64,
}

/// A trip parked out of memory: what its idle completion, an owed update and a reopening need.
struct Parked {
    tenant: TenantId,
    auto: bool,
    told: Told,
    ended: bool,
    last_activity_ms: i64,
    /// The record's `updated_at` as this worker last wrote it (or found it, when adopted): a
    /// later one was written by another ingest process.
    written_at_ms: i64,
}

impl LiveTrip {
    /// A trip opened with what the store holds of it (nothing for a new trip); everything is
    /// rewritten at its first write.
    fn opened(
        tenant: TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
        auto: bool,
        points: Vec<Point>,
        dropped: DroppedPoints,
        told: Told,
    ) -> LiveTrip {
        let mut engine = TripEngine::new(vehicle.clone(), trip_id.clone());
        let announced_jumps = dropped.jumps.iter().map(point_key).collect();
        engine.add_points(points);
        engine.restore_dropped(dropped);
        LiveTrip {
            tenant,
            engine,
            auto,
            written: 0,
            rewrite_all: true,
            cells: BTreeSet::new(),
            last_cell: None,
            announced_jumps,
            told,
            ended: false,
            dirty: false,
            last_activity_ms: now_ms(),
            written_at_ms: 0,
        }
    }

    /// The id an automatic trip's first point gives it, when that is no longer `trip_id` (a
    /// late point moved its start).
    fn moved_start(&self, vehicle: &VehicleId, trip_id: &TripId) -> Option<TripId> {
        let first = self.engine.first_point().filter(|_| self.auto)?;
        Some(auto_trip_id(vehicle, first.ts_ms)).filter(|expected| expected != trip_id)
    }

    /// Adds the cells of the enriched points from number `from` on (all of them again from 0).
    fn note_cells(&mut self, from: usize) {
        if from == 0 {
            self.cells.clear();
            self.last_cell = None;
        }
        for p in self.engine.enriched_from(from) {
            let (lat, lon) = (p.point.lat, p.point.lon);
            let inside = self.last_cell.is_some_and(|(x0, y0, x1, y1)| lon >= x0 && lon < x1 && lat >= y0 && lat < y1);
            if !inside {
                let cell = tripline_model::cell::geohash(lat, lon, tripline_model::cell::TRIP_CELL_PRECISION);
                self.last_cell = tripline_model::cell::bounds(&cell);
                self.cells.insert(cell);
            }
        }
    }
}

/// One changed trip's part of a write set.
struct TripWrite<'a> {
    engine: &'a Enricher,
    vehicle: &'a VehicleId,
    trip_id: &'a TripId,
    now: i64,
    update_every_ms: i64,
}

impl TripWrite<'_> {
    /// Adds the trip's new points, jumps, notices and record to `writes`; the trip to seal once
    /// they are durable when it completed (vehicle, trip, first and last point time).
    fn write(&self, live: &mut LiveTrip, writes: &mut WriteSet) -> Option<(VehicleId, TripId, i64, i64)> {
        let status = if live.ended { TripStatus::Completed } else { TripStatus::Active };
        let report = live.engine.report(self.engine, status, Some(self.now))?;
        live.written_at_ms = self.now;
        let from = if live.rewrite_all { 0 } else { live.written };
        writes.points.extend(live.engine.enriched_from(from).iter().map(|p| self.stored(p)));
        live.note_cells(from);
        let seal = (status == TripStatus::Completed).then(|| {
            let summary = &report.summary;
            let (from, to) = (summary.start_time.timestamp_millis(), summary.end_time.timestamp_millis());
            (self.vehicle.clone(), self.trip_id.clone(), from, to)
        });
        let jumps = self.new_jumps(live);
        crate::metrics::points_rejected(RejectReason::ImplausibleJump, jumps.len());
        writes.rejections.extend(jumps);
        live.written = live.engine.kept_count();
        live.rewrite_all = false;
        // What this write set carries needs no memory any more: it is retried until durable
        // before anything else happens on this worker.
        live.engine.trim(live.written);
        let notices = live.told.next(&report.summary, &report.events, self.now, self.update_every_ms);
        if !notices.is_empty() {
            writes.notices.insert(TripKey::new(&live.tenant, self.vehicle, self.trip_id), notices);
        }
        writes.trips.push(TripRecord {
            tenant: live.tenant.clone(),
            summary: report.summary,
            events: report.events,
            cells: live.cells.iter().cloned().collect(),
            dropped: live.engine.dropped(),
        });
        seal
    }

    /// An enriched point as the store keeps it.
    fn stored(&self, p: &EnrichedPoint) -> StoredPoint {
        StoredPoint {
            vehicle_id: self.vehicle.clone(),
            trip_id: self.trip_id.clone(),
            point: p.point.clone(),
            derived: Derived {
                distance_m: p.distance_m,
                speed_mps: p.speed_mps,
                speed_derived: p.speed_derived,
                heading_deg: p.heading_deg,
                accel_mps2: p.accel_mps2,
                lateral_accel_mps2: p.lateral_accel_mps2,
                region: p.region.and_then(|id| self.engine.regions.get(id)).map(|r| r.name.clone()),
                moving: p.moving,
            },
        }
    }

    /// The trip's jumps not stored before, as rejections.
    fn new_jumps(&self, live: &mut LiveTrip) -> Vec<Rejection> {
        let LiveTrip { engine, announced_jumps, tenant, .. } = live;
        engine
            .jumps()
            .iter()
            .filter(|p| announced_jumps.insert(point_key(p)))
            .map(|p| jump_rejection(tenant, self.vehicle, self.trip_id, p, self.now, self.engine.config.max_speed_kmh))
            .collect()
    }
}

/// One worker: the trips of the vehicles routed to it.
pub struct Worker<S> {
    engine: Arc<Enricher>,
    store: S,
    config: WorkerConfig,
    trips: HashMap<(VehicleId, TripId), LiveTrip>,
    /// Trips parked out of memory (see the module's doc), at most `max_live_trips`.
    parked: HashMap<(VehicleId, TripId), Parked>,
    /// When the next look for trips to park is due, Unix milliseconds.
    next_park_ms: i64,
    /// The automatically cut trip each vehicle is on.
    open_auto: HashMap<VehicleId, TripId>,
    /// Trips completed by the write set being built, to seal once it is durable: vehicle,
    /// trip, first and last point time.
    to_seal: Vec<(VehicleId, TripId, i64, i64)>,
    /// Parked trips forgotten over the cap, counted for [`crate::sweep`] (shared by a pool's
    /// workers).
    forgotten: Arc<std::sync::atomic::AtomicU64>,
}

impl<S: Store> Worker<S> {
    /// A worker writing to `store`.
    pub fn new(engine: Arc<Enricher>, store: S, config: WorkerConfig) -> Self {
        Worker {
            engine,
            store,
            config,
            trips: HashMap::new(),
            parked: HashMap::new(),
            next_park_ms: 0,
            open_auto: HashMap::new(),
            to_seal: Vec::new(),
            forgotten: Arc::default(),
        }
    }

    /// Counts the parked trips it forgets over the cap into `forgotten`.
    pub fn counting_forgotten(self, forgotten: Arc<std::sync::atomic::AtomicU64>) -> Self {
        Worker { forgotten, ..self }
    }

    /// Runs until the queue closes (every sender dropped) and is empty: what was queued is
    /// processed, so a graceful stop completes it.
    pub async fn run(self, queue: flume::Receiver<Work>) {
        self.run_adopting(queue, flume::bounded(0).1).await;
    }

    /// [`Worker::run`], also taking open trips the store holds that no worker has in memory
    /// (found by [`crate::sweep`]) as parked ones ([`Worker::adopt`]).
    pub async fn run_adopting(mut self, queue: flume::Receiver<Work>, adopt: flume::Receiver<Vec<TripRecord>>) {
        let mut eviction = tokio::time::interval(
            self.config
                .idle_eviction
                .min(self.config.park_after)
                .clamp(Duration::from_millis(50), Duration::from_secs(60)),
        );
        // Owed updates are told within a quarter of the interval after it passes.
        let mut updates = tokio::time::interval(
            (self.config.trip_update_every / 4).clamp(Duration::from_millis(50), Duration::from_secs(15)),
        );
        updates.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A message taken from the queue that did not fit the last batch's byte bound.
        let mut carried: Option<Work> = None;
        loop {
            let first = match carried.take() {
                Some(work) => work,
                None => tokio::select! {
                    first = queue.recv_async() => match first {
                        Ok(first) => first,
                        Err(_) => break,
                    },
                    _ = eviction.tick() => {
                        self.tidy().await;
                        continue;
                    }
                    _ = updates.tick() => {
                        self.tell_owed_updates().await;
                        continue;
                    }
                    Ok(records) = adopt.recv_async() => {
                        self.adopt(records);
                        continue;
                    }
                },
            };
            let mut bytes = first.size_bytes();
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                let Ok(next) = queue.try_recv() else { break };
                bytes += next.size_bytes();
                if bytes > self.config.max_batch_bytes {
                    crate::metrics::batch_cut("bytes");
                    carried = Some(next);
                    break;
                }
                batch.push(next);
            }
            self.process(batch).await;
        }
    }

    /// Applies a batch of messages, writes the results (retrying until durable), completes them.
    pub async fn process(&mut self, batch: Vec<Work>) {
        let started = std::time::Instant::now();
        if let Some(oldest) = batch.iter().map(|work| work.queued_at).min() {
            crate::metrics::batch_started(started.saturating_duration_since(oldest).as_secs_f64());
        }
        let mut writes = WriteSet::default();
        let mut done = Vec::with_capacity(batch.len());
        for Work { item, done: d, .. } in batch {
            match item {
                Decoded::Telemetry { tenant, telemetry, rejections } => {
                    self.apply_telemetry(&tenant, telemetry).await;
                    writes.rejections.extend(rejections);
                }
                Decoded::Marker { tenant, vehicle_id, marker } => {
                    self.apply_marker(&tenant, &vehicle_id, &marker).await;
                }
                Decoded::Rejected(rejection) => writes.rejections.push(rejection),
            }
            done.push(d);
        }
        self.collect(&mut writes);
        let writing = std::time::Instant::now();
        crate::metrics::batch_applied(writing.saturating_duration_since(started).as_secs_f64());
        self.write(&writes).await;
        crate::metrics::batch_written(done.len(), writing.elapsed().as_secs_f64());
        for d in done {
            d();
        }
        self.seal_completed().await;
        self.evict_over_cap();
        if now_ms() >= self.next_park_ms {
            self.park_quiet();
        }
    }

    /// Parks the written trips whose vehicles are done with them for now and that have been
    /// quiet for `park_after` (see the module's doc). Looks again after a second at the soonest.
    fn park_quiet(&mut self) {
        let now = now_ms();
        let park_after = millis(self.config.park_after);
        let quiet_before = now - park_after;
        self.next_park_ms = now + park_after.min(1_000);
        let mut latest: HashMap<&VehicleId, i64> = HashMap::new();
        for ((vehicle, _), live) in &self.trips {
            let at = latest.entry(vehicle).or_insert(live.last_activity_ms);
            *at = (*at).max(live.last_activity_ms);
        }
        let done_with: Vec<(VehicleId, TripId)> = self
            .trips
            .iter()
            .filter(|((vehicle, trip_id), live)| {
                !live.dirty
                    && live.last_activity_ms <= quiet_before
                    && self.open_auto.get(vehicle) != Some(trip_id)
                    && (live.ended || latest.get(vehicle).is_some_and(|&at| at > live.last_activity_ms))
            })
            .map(|(key, _)| key.clone())
            .collect();
        crate::metrics::trips_parked(done_with.len());
        self.park(done_with);
    }

    /// Parks written trips: their engines leave memory, what they told and when they were last
    /// active stays (see the module's doc). A flood of trip ids cannot grow the parked ones
    /// either: beyond `max_live_trips` the oldest are forgotten (reopened from the store when a
    /// message comes).
    fn park(&mut self, keys: Vec<(VehicleId, TripId)>) {
        for key in keys {
            let Some(live) = self.trips.remove(&key) else { continue };
            if self.open_auto.get(&key.0) == Some(&key.1) {
                self.open_auto.remove(&key.0);
            }
            let LiveTrip { tenant, auto, told, ended, last_activity_ms, written_at_ms, .. } = live;
            self.parked.insert(key, Parked { tenant, auto, told, ended, last_activity_ms, written_at_ms });
        }
        self.forget_over_cap();
    }

    /// Beyond `max_live_trips` parked trips, forgets the least recently active: a message
    /// reopens one, and the next [`crate::sweep`] (which such a loss asks for) finds it again.
    fn forget_over_cap(&mut self) {
        let over = self.parked.len().saturating_sub(self.config.max_live_trips.max(1));
        if over > 0 {
            for key in least_recent(self.parked.iter().map(|(k, p)| (p.last_activity_ms, k)), over) {
                self.parked.remove(&key);
            }
            crate::metrics::parked_trips_forgotten(over);
            self.forgotten.fetch_add(over as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes open trips of the store that this worker holds neither live nor parked (the
    /// process restarted, or they were forgotten over the cap) as parked trips, active when
    /// their record was last written: like any parked trip, one quiet for `idle_eviction` is
    /// completed by the next [`Worker::tidy`], and a message reopens one. Their starts and
    /// events were told when written.
    pub fn adopt(&mut self, records: Vec<TripRecord>) {
        let now = now_ms();
        let mut adopted = 0;
        for TripRecord { tenant, summary, events, .. } in records {
            if summary.status == TripStatus::Completed {
                continue;
            }
            let key = (summary.vehicle_id.clone(), summary.trip_id.clone());
            if self.trips.contains_key(&key) || self.parked.contains_key(&key) {
                continue;
            }
            let parked = Parked {
                tenant,
                auto: is_auto_id(&summary.trip_id),
                told: Told::written(summary.status, &events, now),
                ended: false,
                last_activity_ms: summary.updated_at.timestamp_millis(),
                written_at_ms: summary.updated_at.timestamp_millis(),
            };
            self.parked.insert(key, parked);
            adopted += 1;
        }
        crate::metrics::trips_adopted(adopted);
        self.forget_over_cap();
    }

    /// Brings a parked trip back into memory from the store, as it was when parked: its
    /// points are all durable, so only what changes from now on is written.
    async fn unpark(&mut self, vehicle: &VehicleId, trip_id: &TripId) -> Option<&mut LiveTrip> {
        let key = (vehicle.clone(), trip_id.clone());
        let parked = self.parked.remove(&key)?;
        let StoredTrip { points, dropped, told, written } = self.stored_trip(&parked.tenant, vehicle, trip_id).await;
        // Written since this worker last wrote it means written by another ingest process (an
        // adopted trip, [`Worker::adopt`]): active then, and completed if that process did so.
        let (completed_elsewhere, written_at) = match written {
            Some((status, at)) if at > parked.written_at_ms => (status == TripStatus::Completed && !parked.ended, at),
            _ => (false, i64::MIN),
        };
        let told = if completed_elsewhere { told } else { parked.told };
        let mut live = LiveTrip::opened(parked.tenant, vehicle, trip_id, parked.auto, points, dropped, told);
        live.engine.refresh(&self.engine);
        live.written = live.engine.kept_count();
        live.rewrite_all = false;
        live.note_cells(0);
        live.ended = parked.ended || completed_elsewhere;
        live.last_activity_ms = parked.last_activity_ms.max(written_at);
        live.written_at_ms = parked.written_at_ms.max(written_at);
        Some(self.trips.entry(key).or_insert(live))
    }

    /// Holds at most `max_live_trips` trips: the least recently active written ones are parked
    /// (a flood of trip ids, e.g. end markers of random trips, cannot grow memory), so their
    /// idle completion still happens.
    fn evict_over_cap(&mut self) {
        let over = self.trips.len().saturating_sub(self.config.max_live_trips.max(1));
        if over == 0 {
            return;
        }
        let written = self.trips.iter().filter(|(_, l)| !l.dirty).map(|(k, l)| (l.last_activity_ms, k));
        let evicted = least_recent(written, over);
        crate::metrics::trips_evicted_over_cap(evicted.len());
        // Parked, not forgotten: their idle completion and owed updates still happen.
        self.park(evicted);
    }

    /// Seals the trips the last write completed: their points rewritten as a few sealed
    /// chunks. Here, between two write sets, so no write of the same trip runs meanwhile (a
    /// seal's chunks are newer than everything it read). A failed seal is logged and left: the
    /// trip reads the same, and its next completion seals it.
    async fn seal_completed(&mut self) {
        for (vehicle, trip_id, from_ms, to_ms) in std::mem::take(&mut self.to_seal) {
            let sealing = std::time::Instant::now();
            match self.store.seal_trip(&vehicle, &trip_id, from_ms, to_ms).await {
                Ok(sealed) => crate::metrics::trip_sealed(sealed, sealing.elapsed().as_secs_f64()),
                Err(error) => {
                    tracing::warn!(%error, %vehicle, %trip_id, "cannot seal a completed trip's points; left as written")
                }
            }
        }
    }

    async fn write(&self, writes: &WriteSet) {
        loop {
            let result = self.store.write_batch(writes).await;
            match result {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, points = writes.points.len(), trips = writes.trips.len(), "store write failed; retrying, nothing acknowledged");
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
            }
        }
    }

    /// Loads a trip from the store into memory, or starts it.
    async fn open_trip(
        &mut self,
        tenant: &TenantId,
        vehicle: &VehicleId,
        trip_id: &TripId,
        auto: bool,
    ) -> &mut LiveTrip {
        let key = (vehicle.clone(), trip_id.clone());
        if !self.trips.contains_key(&key) && self.unpark(vehicle, trip_id).await.is_none() {
            let StoredTrip { points, dropped, told, .. } = self.stored_trip(tenant, vehicle, trip_id).await;
            let live = LiveTrip::opened(tenant.clone(), vehicle, trip_id, auto, points, dropped, told);
            self.trips.insert(key.clone(), live);
        }
        let live = self.trips.get_mut(&key).expect("inserted above");
        live.last_activity_ms = now_ms();
        live
    }

    /// A trip's points already in the store, what it dropped and what its writes told (nothing
    /// for a new trip). Retried until the store answers; timed (`trip_read_seconds`).
    async fn stored_trip(&self, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> StoredTrip {
        let reading = std::time::Instant::now();
        let stored = self.read_stored_trip(tenant, vehicle, trip_id).await;
        crate::metrics::trip_read(reading.elapsed().as_secs_f64());
        stored
    }

    async fn read_stored_trip(&self, tenant: &TenantId, vehicle: &VehicleId, trip_id: &TripId) -> StoredTrip {
        loop {
            let result = async {
                let Some(trip) = self.store.trip_of_vehicle(tenant, vehicle, trip_id).await? else {
                    return Ok(StoredTrip::default());
                };
                let start = trip.summary.start_time.timestamp_millis();
                let end = trip.summary.end_time.timestamp_millis() + 1;
                let end = end.min(start + MAX_POINT_RANGE_DAYS * DAY_MS);
                let points = self.store.vehicle_points(vehicle, start, end).await?;
                let points = points.into_iter().filter(|p| &p.trip_id == trip_id).map(|p| p.point).collect();
                let told = Told::written(trip.summary.status, &trip.events, now_ms());
                let written = Some((trip.summary.status, trip.summary.updated_at.timestamp_millis()));
                Ok::<_, tripline_store::StoreError>(StoredTrip { points, dropped: trip.dropped, told, written })
            }
            .await;
            match result {
                Ok(stored) => return stored,
                Err(error) => {
                    tracing::warn!(%error, %vehicle, %trip_id, "cannot read a trip to reopen it; retrying");
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
            }
        }
    }

    async fn apply_telemetry(&mut self, tenant: &TenantId, telemetry: Telemetry) {
        let Telemetry { vehicle_id, trip_id, points, rejected, .. } = telemetry;
        let rejected_points: Vec<Point> = rejected
            .iter()
            .filter_map(|r| Point::from_raw(&r.point, &mut tripline_model::point::FieldRepairs::default()).ok())
            .collect();
        match trip_id {
            Some(trip_id) => {
                let live = self.open_trip(tenant, &vehicle_id, &trip_id, false).await;
                add_points(live, points, &rejected_points);
                self.rebuild_if_needed(&vehicle_id, &trip_id).await;
            }
            None => {
                let mut points = points;
                points.sort_by(tripline_enrich::track::canonical_cmp);
                for point in points {
                    let trip_id = self.auto_trip_for(&vehicle_id, &point).await;
                    let auto = is_auto_id(&trip_id);
                    let live = self.open_trip(tenant, &vehicle_id, &trip_id, auto).await;
                    add_points(live, vec![point], &[]);
                    self.rebuild_if_needed(&vehicle_id, &trip_id).await;
                }
                if !rejected_points.is_empty()
                    && let Some(open) = self.open_auto.get(&vehicle_id).cloned()
                    && let Some(live) = self.trips.get_mut(&(vehicle_id.clone(), open))
                {
                    add_points(live, Vec::new(), &rejected_points);
                }
            }
        }
    }

    /// A point landed among the points a live trip no longer holds in memory: rebuilds the
    /// trip from its stored points and the ones held, and rewrites it whole.
    async fn rebuild_if_needed(&mut self, vehicle: &VehicleId, trip_id: &TripId) {
        let key = (vehicle.clone(), trip_id.clone());
        let Some(tenant) = self.trips.get(&key).filter(|l| l.engine.needs_history()).map(|l| l.tenant.clone()) else {
            return;
        };
        // What the trip dropped is in its engine still.
        let stored = self.stored_trip(&tenant, vehicle, trip_id).await;
        let Some(live) = self.trips.get_mut(&key) else { return };
        live.engine.rebuild(stored.points);
        live.rewrite_all = true;
        live.dirty = true;
        tracing::debug!(%vehicle, %trip_id, "late point before the points held: trip rebuilt from the store");
    }

    /// The automatically cut trip `point` belongs to: the vehicle's open trip when the point is
    /// within the trip gap of it (and no ignition cycle lies between), a stored trip with points
    /// within the gap, else a new trip.
    async fn auto_trip_for(&mut self, vehicle: &VehicleId, point: &Point) -> TripId {
        let gap_ms = (self.engine.config.trip_gap_s * 1000.0) as i64;
        if let Some(open) = self.open_auto.get(vehicle).cloned()
            && let Some(live) = self.trips.get(&(vehicle.clone(), open.clone()))
            && let (Some(first), Some(last)) = (live.engine.first_point(), live.engine.points().last())
        {
            let ignition_cycle =
                last.ignition == Some(false) && point.ignition == Some(true) && point.ts_ms > last.ts_ms;
            if point.ts_ms >= first.ts_ms - gap_ms && point.ts_ms <= last.ts_ms + gap_ms && !ignition_cycle {
                return open;
            }
            if point.ts_ms > last.ts_ms {
                // A new trip begins; the open one is complete.
                if let Some(live) = self.trips.get_mut(&(vehicle.clone(), open)) {
                    live.ended = true;
                    live.dirty = true;
                }
                let id = auto_trip_id(vehicle, point.ts_ms);
                self.open_auto.insert(vehicle.clone(), id.clone());
                return id;
            }
        }
        // A point of a trip not in memory: look for stored neighbours.
        let neighbours = loop {
            match self.store.vehicle_points(vehicle, point.ts_ms - gap_ms, point.ts_ms + gap_ms + 1).await {
                Ok(points) => break points,
                Err(error) => {
                    tracing::warn!(%error, %vehicle, "cannot read neighbouring points; retrying");
                    tokio::time::sleep(self.config.retry_backoff).await;
                }
            }
        };
        let nearest = neighbours.iter().min_by_key(|p| (p.point.ts_ms - point.ts_ms).abs()).map(|p| p.trip_id.clone());
        let id = nearest.unwrap_or_else(|| auto_trip_id(vehicle, point.ts_ms));
        let newest = self
            .open_auto
            .get(vehicle)
            .and_then(|open| self.trips.get(&(vehicle.clone(), open.clone())))
            .and_then(|l| l.engine.points().last())
            .map(|p| p.ts_ms);
        if newest.is_none_or(|newest| point.ts_ms > newest) {
            self.open_auto.insert(vehicle.clone(), id.clone());
        }
        id
    }

    async fn apply_marker(&mut self, tenant: &TenantId, vehicle: &VehicleId, marker: &TripMarker) {
        if marker.event == tripline_model::MarkerEvent::End {
            let live = self.open_trip(tenant, vehicle, &marker.trip_id, false).await;
            live.ended = true;
            live.dirty = !live.engine.points().is_empty();
        }
    }

    /// Turns every changed trip into its writes; renames automatic trips whose start moved.
    fn collect(&mut self, writes: &mut WriteSet) {
        let now = now_ms();
        let update_every_ms = self.update_every_ms();
        let mut renames = Vec::new();
        for ((vehicle, trip_id), live) in &mut self.trips {
            if !live.dirty {
                continue;
            }
            live.dirty = false;
            if let Some(expected) = live.moved_start(vehicle, trip_id) {
                renames.push((vehicle.clone(), trip_id.clone(), expected));
                continue;
            }
            let trip = TripWrite { engine: &self.engine, vehicle, trip_id, now, update_every_ms };
            if let Some(seal) = trip.write(live, writes) {
                self.to_seal.push(seal);
            }
        }
        self.rename(renames, writes);
        if self.trips.values().any(|l| l.dirty) {
            self.collect(writes);
        }
    }

    /// Moves automatic trips to the ids their first points give them now (`(vehicle, old,
    /// new)`): the old record goes, and the trip is written and told afresh under the new id.
    fn rename(&mut self, renames: Vec<(VehicleId, TripId, TripId)>, writes: &mut WriteSet) {
        for (vehicle, old, new) in renames {
            if let Some(mut live) = self.trips.remove(&(vehicle.clone(), old.clone())) {
                writes.deletes.push(TripKey::new(&live.tenant, &vehicle, &old));
                live.engine.rename(new.clone());
                // Under its new id, the trip is told from its start again.
                live.told = Told::default();
                live.rewrite_all = true;
                live.dirty = true;
                if self.open_auto.get(&vehicle) == Some(&old) {
                    self.open_auto.insert(vehicle.clone(), new.clone());
                }
                self.trips.insert((vehicle, new), live);
            }
        }
    }

    fn update_every_ms(&self) -> i64 {
        millis(self.config.trip_update_every)
    }

    /// Writes every dirty trip (retrying until durable) and seals those that completed.
    async fn flush(&mut self) {
        let mut writes = WriteSet::default();
        self.collect(&mut writes);
        self.write(&writes).await;
        self.seal_completed().await;
    }

    /// Tells the updates owed to active trips whose last writes came within the update
    /// interval and nothing since: without this, a trip's last state before a pause would be
    /// told only with its completion.
    async fn tell_owed_updates(&mut self) {
        let (now, every) = (now_ms(), self.update_every_ms());
        let owing: Vec<(VehicleId, TripId)> =
            self.parked.iter().filter(|(_, p)| p.told.owes_update(now, every)).map(|(k, _)| k.clone()).collect();
        // A round at a time, each back to parked once told.
        let mut pending = owing.iter();
        while !pending.as_slice().is_empty() {
            let round = self.reopen_round(&mut pending).await;
            if self.mark_owed(now, every) {
                self.flush().await;
            }
            self.park(round);
        }
        if self.mark_owed(now, every) {
            self.flush().await;
        }
    }

    /// Marks the live trips that owe an update at `now` for the next write; whether any does.
    fn mark_owed(&mut self, now: i64, every: i64) -> bool {
        let mut owed = false;
        for live in self.trips.values_mut() {
            if live.told.owes_update(now, every) {
                live.dirty = true;
                owed = true;
            }
        }
        owed
    }

    /// Completes and forgets the trips that received nothing for `idle_eviction`, then parks
    /// the quiet ones their vehicles are done with; [`Worker::run`] does this on a timer.
    pub async fn tidy(&mut self) {
        self.evict_idle().await;
        self.park_quiet();
    }

    /// Completes and forgets trips that received nothing for `idle_eviction`.
    async fn evict_idle(&mut self) {
        let cutoff = now_ms() - millis(self.config.idle_eviction);
        // A parked trip completed before has nothing left to do; any other is reopened to be
        // completed below.
        self.parked.retain(|_, p| !(p.ended && p.last_activity_ms <= cutoff));
        let idle_parked: Vec<(VehicleId, TripId)> =
            self.parked.iter().filter(|(_, p)| p.last_activity_ms <= cutoff).map(|(k, _)| k.clone()).collect();
        let mut pending = idle_parked.iter();
        while !pending.as_slice().is_empty() {
            let round = self.reopen_round(&mut pending).await;
            // One another process wrote since (an adopted trip it holds) is not idle: parked
            // again as active then.
            let (idle, written_since): (Vec<_>, Vec<_>) = round
                .into_iter()
                .partition(|key| self.trips.get(key).is_none_or(|live| live.last_activity_ms <= cutoff));
            self.complete(idle).await;
            self.park(written_since);
        }
        let idle: Vec<(VehicleId, TripId)> =
            self.trips.iter().filter(|(_, l)| l.last_activity_ms <= cutoff).map(|(k, _)| k.clone()).collect();
        self.complete(idle).await;
    }

    /// Brings the next parked trips of `pending` back into memory ([`Worker::unpark`]) until
    /// their points reach `reopen_points`; returns those reopened.
    async fn reopen_round(
        &mut self,
        pending: &mut std::slice::Iter<'_, (VehicleId, TripId)>,
    ) -> Vec<(VehicleId, TripId)> {
        let (mut round, mut points) = (Vec::new(), 0);
        while points < self.config.reopen_points.max(1) {
            let Some((vehicle, trip_id)) = pending.next() else { break };
            if let Some(live) = self.unpark(vehicle, trip_id).await {
                points += live.engine.kept_count();
                round.push((vehicle.clone(), trip_id.clone()));
            }
        }
        round
    }

    /// Completes the live trips `keys`, writes them, and forgets them.
    async fn complete(&mut self, keys: Vec<(VehicleId, TripId)>) {
        if keys.is_empty() {
            return;
        }
        for key in &keys {
            if let Some(live) = self.trips.get_mut(key) {
                live.ended = true;
                live.dirty = true;
            }
        }
        self.flush().await;
        for key in keys {
            self.trips.remove(&key);
            if self.open_auto.get(&key.0) == Some(&key.1) {
                self.open_auto.remove(&key.0);
            }
        }
    }

    /// Trips in memory (for tests and metrics).
    pub fn trips_in_memory(&self) -> usize {
        self.trips.len()
    }

    /// Trips parked out of memory (for tests and metrics).
    pub fn trips_parked(&self) -> usize {
        self.parked.len()
    }

    /// Points held in memory over all live trips (for tests and metrics): bounded per trip
    /// whatever its length.
    pub fn points_in_memory(&self) -> usize {
        self.trips.values().map(|l| l.engine.points().len()).sum()
    }
}

/// A duration in whole milliseconds (saturating).
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The keys of the `n` least recently active of `trips` (last activity, key).
fn least_recent<'a>(trips: impl Iterator<Item = (i64, &'a (VehicleId, TripId))>, n: usize) -> Vec<(VehicleId, TripId)> {
    let mut trips: Vec<_> = trips.collect();
    trips.sort_unstable_by_key(|(at, _)| *at);
    trips.into_iter().take(n).map(|(_, key)| key.clone()).collect()
}

/// A trip as the store has it, for reopening.
#[derive(Default)]
struct StoredTrip {
    points: Vec<Point>,
    dropped: DroppedPoints,
    told: Told,
    /// The record's status and when it was written (Unix ms); none for a trip not stored.
    written: Option<(TripStatus, i64)>,
}

/// The rejection of a point the pass dropped as an implausible jump: its id follows the vehicle
/// and the point, so a rewrite (a redelivery, a rebuilt or renamed trip) maps to the same one.
fn jump_rejection(
    tenant: &TenantId,
    vehicle: &VehicleId,
    trip_id: &TripId,
    point: &Point,
    now_ms: i64,
    max_speed_kmh: f64,
) -> Rejection {
    let topic = tripline_model::Topic::telemetry(vehicle);
    let payload = serde_json::to_vec(&point.to_raw()).unwrap_or_default();
    let (payload, payload_size, payload_sha256) = Rejection::kept_payload(&payload);
    Rejection {
        id: Rejection::id_for(&format!("{topic} jump"), &payload, None),
        tenant: Some(tenant.clone()),
        vehicle_id: Some(vehicle.clone()),
        received_at_ms: now_ms,
        reason: RejectReason::ImplausibleJump,
        detail: format!(
            "trip {trip_id}: reaching this point from the previous one needs more than {max_speed_kmh} km/h"
        ),
        topic,
        point_index: None,
        payload,
        payload_size,
        payload_sha256,
    }
}

fn add_points(live: &mut LiveTrip, points: Vec<Point>, rejected: &[Point]) {
    let outcome = live.engine.add_points(points);
    let new_rejected = live.engine.add_rejected(rejected);
    live.rewrite_all |= outcome.recompute;
    // A redelivered message adds nothing new: the trip is not rewritten at all.
    live.dirty |= outcome.added > 0 || new_rejected > 0;
}

/// Whether `trip_id` has the form of an automatically derived id (`t{ms}-{16 hex}`).
fn is_auto_id(trip_id: &TripId) -> bool {
    let text = trip_id.as_str();
    let Some(rest) = text.strip_prefix('t') else { return false };
    let Some((ms, hash)) = rest.split_once('-') else { return false };
    !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
        && hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
}
