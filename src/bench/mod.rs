//! `tripline bench`: a simulated fleet against a real `tripline run` (a child process of this
//! binary, all roles), and the store-only ceiling in the same run.
//!
//! 1. **Ceiling**: the fleet's points and trips written straight into the store (one
//!    `write_batch` per message round, 4 in flight), as fast as it takes them.
//! 2. **Throughput**: the child starts; the fleet publishes every message as fast as the broker
//!    acknowledges (QoS 1, 500 in flight); measured from the first publish until the child's
//!    `tripline_ingest_acks_total` counts every message (an acknowledgement leaves only once the
//!    message is durable). CPU and peak RSS are the child's.
//! 3. **Freshness**: the fleet publishes at half the measured rate (or at `--rate`) while a probe
//!    publishes a one-point trip every 200 ms, each polled on the API on its own until found.
//!    Meanwhile 1,000 live streams and a webhook receiver follow the child ([`push`]): each
//!    probe's `trip.started` is timed to every stream (`push_ms`) and to the receiver
//!    (`webhook_ms`).
//!
//! Vehicles drive seeded everyday trips (`tripline_enrich::sim`: stops, turns, the odd harsh
//! manoeuvre and speeding) sampled at 1 Hz, set two days in the past so no late-window rule
//! applies.

mod push;

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tripline_enrich::sim::{Device, Rng, Start, everyday_legs, simulate};
use tripline_enrich::{Enricher, TripEngine};
use tripline_model::point::FieldRepairs;
use tripline_model::{Point, TenantId, TripId, TripStatus, VehicleId, encode_telemetry};
use tripline_store::{AnyStore, BatchWrite, Derived, EmbeddedStore, Registry, StoredPoint, TripRecord, WriteSet};

use crate::config::{Config, StoreKind};
use crate::{Failure, runtime};

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct BenchOptions {
    pub(crate) vehicles: usize,
    pub(crate) messages: usize,
    pub(crate) points: usize,
    /// Points/s for the freshness phase; `None`: half the measured maximum.
    pub(crate) rate: Option<f64>,
    pub(crate) probe_seconds: u64,
    pub(crate) seed: u64,
    pub(crate) store: StoreKind,
    pub(crate) url: Option<String>,
    pub(crate) json: bool,
    /// Idle vehicles connected at the end, for the memory per connection.
    pub(crate) idle_vehicles: usize,
    /// Live streams (and a webhook) following the child during the probes; 0: none.
    pub(crate) streams: usize,
}

/// Idle vehicles connected at the end of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct IdleReport {
    pub(crate) connections: usize,
    /// How long connecting (and authenticating) all of them took.
    pub(crate) connect_s: f64,
    pub(crate) rss_before_mb: f64,
    pub(crate) rss_after_mb: f64,
    /// (after − before) / connections.
    pub(crate) rss_per_connection_kb: f64,
}

/// What the embedded store takes on disk at the end of a run, compacted
/// ([`tripline_store::EmbeddedStore::compact`]), per point published.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct DiskReport {
    /// The point chunks' tables.
    pub(crate) point_bytes_per_point: f64,
    /// Every table: chunks, trip records, change feed, registry.
    pub(crate) tables_bytes_per_point: f64,
    /// What is left of the write-ahead journal.
    pub(crate) journal_bytes_per_point: f64,
}

/// Freshness percentiles, milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Freshness {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) samples: usize,
}

impl Freshness {
    fn of(mut delays: Vec<f64>) -> Freshness {
        delays.sort_by(f64::total_cmp);
        Freshness {
            p50: percentile(&delays, 0.5),
            p99: percentile(&delays, 0.99),
            max: delays.last().copied().unwrap_or(f64::NAN),
            samples: delays.len(),
        }
    }
}

/// The report (`--json` prints it as one object).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct BenchReport {
    pub(crate) store: StoreKind,
    pub(crate) broker: String,
    pub(crate) vehicles: usize,
    pub(crate) messages: usize,
    pub(crate) points: usize,
    pub(crate) points_per_s: f64,
    pub(crate) messages_per_s: f64,
    pub(crate) store_ceiling_points_per_s: f64,
    pub(crate) ratio_to_ceiling: f64,
    pub(crate) freshness_ms: Freshness,
    /// From publish until the probe's trip is readable from the write store (the ingest part of
    /// freshness).
    pub(crate) durable_ms: Freshness,
    /// From readable in the write store (when tripline acknowledges the message) until
    /// searchable, per probe: the contract's freshness, which counts from the acknowledgement.
    pub(crate) after_durable_ms: Freshness,
    /// The load during the freshness probes, points/s.
    pub(crate) freshness_load_points_per_s: f64,
    /// Publish → a probe trip's `trip.started` on each of the live streams held open.
    pub(crate) push_ms: Freshness,
    /// Publish → a probe trip's `trip.started` at a webhook receiver.
    pub(crate) webhook_ms: Freshness,
    /// Live streams held open during the probes.
    pub(crate) push_streams: usize,
    /// Where freshness goes, from the child's `/metrics` at the end of the probes (the
    /// exporter's summaries cover about the last minute), milliseconds.
    pub(crate) stages_ms: StageTimes,
    /// CPU the tripline process used during the throughput phase, in cores.
    pub(crate) cpu_cores: f64,
    /// Messages per worker batch (one write set) during the throughput phase, on average.
    pub(crate) batch_messages_mean: f64,
    pub(crate) rss_mb_max: f64,
    /// Points published over the whole run (throughput, load and probes): what a store's size
    /// is divided by for bytes per point.
    pub(crate) points_published: usize,
    /// Messages and points the child rejected over the run (its
    /// `tripline_ingest_rejections_total`, all reasons): 0 unless the load itself is bad.
    pub(crate) rejections: u64,
    /// With `--idle-vehicles`: what many idle connections cost the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idle: Option<IdleReport>,
    /// Embedded store only: bytes on disk per point after compaction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) disk: Option<DiskReport>,
    pub(crate) duration_s: f64,
}

/// Median and p99, milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Quantiles {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

/// The stages of freshness as the child measures them.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct StageTimes {
    /// Ingest: from receipt of a message to its acknowledgement (durable).
    pub(crate) ack: Quantiles,
    /// Ingest: from receipt of a message until the intake handed it to its worker's queue.
    pub(crate) handoff: Quantiles,
    /// Ingest: a registry lookup of a vehicle not known yet (each probe's vehicle is new).
    pub(crate) lookup: Quantiles,
    /// Ingest: reading a trip not in memory from the store, within a batch's apply (each
    /// probe's trip is new).
    pub(crate) trip_read: Quantiles,
    /// Ingest: how long a worker batch's oldest message waited in its worker's queue.
    pub(crate) queue_wait: Quantiles,
    /// Ingest: applying one worker batch to its trips, before its write.
    pub(crate) apply: Quantiles,
    /// Ingest: one worker batch's write to the store.
    pub(crate) write: Quantiles,
    /// Indexer: reading a commit's changed trips from the store.
    pub(crate) index_read: Quantiles,
    /// Indexer: committing the index and reloading its reader.
    pub(crate) index_commit: Quantiles,
    /// Indexer: from reading a change off the feed until it is searchable (the oldest of a cut).
    pub(crate) index_delay: Quantiles,
    /// Indexer: the share of changed trips taken as ingest wrote them instead of read back from
    /// the store, over the whole run.
    pub(crate) index_reused_share: f64,
}

/// How far back the simulated fleet's time starts: a day inside the late window, beyond which
/// tripline rejects points as too old. The fleet's trips are replayed far faster than driven, so
/// its time runs towards the present; [`VehicleSim::next_message`] refuses to pass it (points
/// from the future are rejected too, and the bench would measure rejections instead of ingest).
const SIMULATED_FROM_MS: i64 = tripline_model::point::DEFAULT_LATE_WINDOW_MS - 86_400_000;

/// One vehicle's endless sequence of simulated trips, a message at a time.
struct VehicleSim {
    id: VehicleId,
    index: usize,
    rng: Rng,
    seed: u64,
    next_start_ms: i64,
    next_seq: u64,
    trips: usize,
    /// Points of the current trip not sent yet.
    pending: VecDeque<Point>,
    /// The trip `pending` belongs to.
    trip: TripId,
}

impl VehicleSim {
    fn new(prefix: &str, index: usize, seed: u64, t0_ms: i64) -> Result<Self, Failure> {
        let id = VehicleId::parse(&format!("{prefix}-{index}")).map_err(|e| Failure::Usage(e.to_string()))?;
        let trip = trip_of(&id, 0)?;
        let seed = seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
        Ok(VehicleSim {
            id,
            index,
            rng: Rng::new(seed),
            seed,
            next_start_ms: t0_ms,
            next_seq: 1,
            trips: 0,
            pending: VecDeque::new(),
            trip,
        })
    }

    /// The next message: up to `points` points of the current trip (a message never spans two
    /// trips). An error once the simulated time would pass the present.
    fn next_message(&mut self, points: usize) -> Result<(TripId, Vec<Point>), Failure> {
        let message = self.next_points(points)?;
        match message.1.last() {
            Some(last) if last.ts_ms > tripline_model::time::now_ms() => Err(Failure::Usage(format!(
                "the simulated fleet reached the present after {} points a vehicle (its trips start {} days back, \
                 within tripline's late window, and are replayed faster than driven): ask for fewer points a \
                 vehicle (--messages, or --rate times --probe-seconds) or more --vehicles",
                self.next_seq - 1 - self.pending.len() as u64,
                SIMULATED_FROM_MS / 86_400_000
            ))),
            _ => Ok(message),
        }
    }

    fn next_points(&mut self, points: usize) -> Result<(TripId, Vec<Point>), Failure> {
        if self.pending.is_empty() {
            let minutes = self.rng.range(10.0, 40.0);
            let legs = everyday_legs(&mut self.rng, minutes);
            let device = Device {
                interval_s: 1.0,
                gps_noise_m: 3.0,
                reports_speed: true,
                reports_heading: true,
                first_seq: Some(self.next_seq),
            };
            // Across Germany, a different town per vehicle.
            let start = Start {
                lat: 48.0 + (self.index % 40) as f64 * 0.1,
                lon: 7.0 + (self.index / 40 % 60) as f64 * 0.1,
                heading_deg: self.rng.range(0.0, 360.0),
                ts_ms: self.next_start_ms,
            };
            let trip = simulate(start, &legs, &device, self.seed.wrapping_add(self.trips as u64));
            self.next_seq += trip.len() as u64;
            self.next_start_ms = trip.last().map_or(self.next_start_ms, |p| p.ts_ms) + 15 * 60_000;
            self.trips += 1;
            self.trip = trip_of(&self.id, self.trips)?;
            self.pending = trip.into();
        }
        let n = points.min(self.pending.len());
        Ok((self.trip.clone(), self.pending.drain(..n).collect()))
    }
}

/// The id of a vehicle's `n`th simulated trip.
fn trip_of(vehicle: &VehicleId, n: usize) -> Result<TripId, Failure> {
    TripId::parse(&format!("{vehicle}-t{n}")).map_err(|e| Failure::Usage(e.to_string()))
}

/// A message of the fleet.
struct FleetMessage {
    topic: String,
    payload: Vec<u8>,
    points: usize,
}

fn fleet_round(
    fleet: &mut [VehicleSim],
    points: usize,
    keep: Option<&mut Vec<(VehicleId, TripId, Vec<Point>)>>,
) -> Result<Vec<FleetMessage>, Failure> {
    let mut kept = keep;
    fleet
        .iter_mut()
        .map(|vehicle| {
            let (trip, pts) = vehicle.next_message(points)?;
            let message = FleetMessage {
                topic: format!("vehicles/{}/telemetry", vehicle.id),
                payload: encode_telemetry(Some(&trip), &pts),
                points: pts.len(),
            };
            if let Some(kept) = kept.as_deref_mut() {
                // As ingest decodes them (kept to the stored precision).
                let decoded = pts
                    .iter()
                    .filter_map(|p| Point::from_raw(&p.to_raw(), &mut FieldRepairs::default()).ok())
                    .collect();
                kept.push((vehicle.id.clone(), trip, decoded));
            }
            Ok(message)
        })
        .collect()
}

/// The store-only ceiling: the same points and trip summaries written straight into the store.
async fn ceiling(store: &AnyStore, tenant: &TenantId, rounds: Vec<Vec<(VehicleId, TripId, Vec<Point>)>>) -> f64 {
    let engine = Enricher::for_test();
    // One summary per trip, computed before the clock starts (the store does not care how it
    // was made; the pipeline writes one per trip per batch too).
    let mut summaries = std::collections::HashMap::new();
    for round in &rounds {
        for (vehicle, trip, points) in round {
            summaries
                .entry((vehicle.clone(), trip.clone()))
                .or_insert_with(|| TripEngine::new(vehicle.clone(), trip.clone()))
                .add_points(points.iter().cloned());
        }
    }
    let mut records = std::collections::HashMap::new();
    for ((vehicle, trip), mut trip_engine) in summaries {
        if let Some(report) = trip_engine.report(&engine, TripStatus::Active, None) {
            // The record the pipeline writes: summary, events and the cells the trip passed.
            let cells = tripline_model::cell::cells(trip_engine.enriched().iter().map(|p| (p.point.lat, p.point.lon)));
            let record = TripRecord {
                tenant: tenant.clone(),
                summary: report.summary,
                events: report.events,
                cells,
                dropped: Default::default(),
            };
            records.insert((vehicle, trip), record);
        }
    }
    // Write sets of CEILING_ROUNDS_PER_SET rounds, as a worker's batch under load groups
    // several messages of each vehicle: one chunk and one trip record per trip and set.
    let mut sets: Vec<WriteSet> = Vec::new();
    for (i, round) in rounds.into_iter().enumerate() {
        if i % CEILING_ROUNDS_PER_SET == 0 {
            sets.push(WriteSet::default());
        }
        let Some(set) = sets.last_mut() else { continue };
        for (vehicle, trip, points) in round {
            if let Some(record) = records.get(&(vehicle.clone(), trip.clone()))
                && !set.trips.iter().any(|t| t.summary.trip_id == record.summary.trip_id)
            {
                set.trips.push(record.clone());
            }
            set.points.extend(points.into_iter().map(|point| StoredPoint {
                vehicle_id: vehicle.clone(),
                trip_id: trip.clone(),
                point,
                derived: Derived::default(),
            }));
        }
    }
    // The sweep: each level of write sets in flight takes its share of the sets; the best rate
    // is the ceiling.
    let share = sets.len().div_ceil(CEILING_IN_FLIGHT.len()).max(1);
    let mut pending = sets.into_iter();
    let mut best = 0f64;
    for in_flight in CEILING_IN_FLIGHT {
        let level: Vec<WriteSet> = pending.by_ref().take(share).collect();
        if level.is_empty() {
            break;
        }
        let rate = write_sets_at(store, level, in_flight).await;
        tracing::debug!(in_flight, rate, "ceiling level");
        best = best.max(rate);
    }
    best
}

/// Rounds of the fleet (one message per vehicle) in one ceiling write set.
const CEILING_ROUNDS_PER_SET: usize = 10;

/// Write sets in flight tried by the ceiling.
const CEILING_IN_FLIGHT: [usize; 5] = [1, 2, 4, 8, 16];

/// Writes `sets` with at most `in_flight` at a time; points per second.
async fn write_sets_at(store: &AnyStore, sets: Vec<WriteSet>, in_flight: usize) -> f64 {
    let total: usize = sets.iter().map(|s| s.points.len()).sum();
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for set in sets {
        if running.len() >= in_flight {
            let _ = running.join_next().await;
        }
        let store = store.clone();
        running.spawn(async move {
            while let Err(error) = store.write_batch(&set).await {
                tracing::warn!(%error, "ceiling write failed; retrying");
            }
        });
    }
    while running.join_next().await.is_some() {}
    total as f64 / started.elapsed().as_secs_f64()
}

/// The child `tripline run`; killed when dropped.
struct RunningChild {
    child: Child,
    http: String,
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The ceiling's throwaway keyspace beside `keyspace` (CQL names have at most 48 characters).
fn ceiling_keyspace(keyspace: &str) -> String {
    let base: String = keyspace.chars().take(48 - "_ceiling".len()).collect();
    format!("{base}_ceiling")
}

fn start_child(dir: &Path) -> Result<RunningChild, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::Runtime(e.into()))?;
    let mut child = Command::new(exe)
        .args(["--config", "tripline.toml", "run"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("TRIPLINE_LOG", "warn,tripline=info,tantivy::indexer::segment_manager=error")
        .spawn()
        .context("starting tripline run")?;
    let pipe = child.stderr.take().ok_or_else(|| Failure::Runtime(anyhow::anyhow!("no stderr")))?;
    let (tx, rx) = std::sync::mpsc::channel::<(Option<String>, bool)>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            let http =
                line.split("metrics on http://").nth(1).map(|rest| rest.split('/').next().unwrap_or("").to_owned());
            let _ = tx.send((http, line.contains("ingest ready")));
            // The process under test's warnings and errors belong in the report.
            if line.contains(" WARN ") || line.contains(" ERROR ") {
                eprintln!("tripline run: {line}");
            }
        }
    });
    // Killed on the way out if it never gets ready.
    let mut running = RunningChild { child, http: String::new() };
    let (mut http, mut ready) = (None, false);
    let deadline = Instant::now() + CHILD_READY_WITHIN;
    while !(ready && http.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((address, is_ready)) => {
                http = http.or(address);
                ready |= is_ready;
            }
            Err(_) => {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "tripline run did not get ready within {} s (its warnings, if any, are above)",
                    CHILD_READY_WITHIN.as_secs()
                )));
            }
        }
    }
    running.http = http.unwrap_or_default();
    Ok(running)
}

/// How long the `tripline run` under test may take to get ready: connecting to a busy cluster
/// (a Cassandra still compacting the previous run's keyspace took more than a minute once).
const CHILD_READY_WITHIN: Duration = Duration::from_secs(180);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// A value from the child's `/metrics`.
fn scrape<T: std::str::FromStr>(agent: &ureq::Agent, http: &str, name: &str) -> Option<T> {
    metrics_text(agent, http)?.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of a counter in the child's `/metrics` over all its labels (0 when it has none yet).
fn scrape_sum(agent: &ureq::Agent, http: &str, name: &str) -> Option<f64> {
    Some(sum_over_labels(&metrics_text(agent, http)?, name))
}

/// The child's `/metrics` page.
fn metrics_text(agent: &ureq::Agent, http: &str) -> Option<String> {
    agent.get(format!("http://{http}/metrics")).call().ok()?.body_mut().read_to_string().ok()
}

/// The sum of the samples of `name` in Prometheus text, whatever their labels.
fn sum_over_labels(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// A quantile of a summary in the child's `/metrics`, in milliseconds (the summary is in seconds).
fn scrape_quantile_ms(agent: &ureq::Agent, http: &str, name: &str, quantile: &str) -> f64 {
    scrape::<f64>(agent, http, &format!("{name}{{quantile=\"{quantile}\"}}")).map_or(f64::NAN, |s| s * 1000.0)
}

/// A tenant's search answer's `total` for `query` (`None` when the API does not answer).
fn search_total(agent: &ureq::Agent, http: &str, key: &str, query: &str) -> Option<u64> {
    agent
        .get(format!("http://{http}/v1/trips?{query}"))
        .header("Authorization", format!("Bearer {key}"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
        .and_then(|v| v["total"].as_u64())
}

/// The fields of `/proc/{pid}/stat` after the command name (state first), or `None` when the
/// process is gone.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(str::to_owned).collect())
}

/// The child's CPU time so far (user + system), seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Fails when the child has exited (gone, or a zombie not yet reaped): waiting on it would only
/// run into a 10-minute deadline. Its errors were already printed from its log.
fn check_alive(pid: u32) -> Result<(), Failure> {
    let state = stat_fields(pid).and_then(|fields| fields.into_iter().next());
    match state.as_deref() {
        Some("Z" | "X") | None => Err(Failure::Runtime(anyhow::anyhow!(
            "tripline run (pid {pid}) exited during the bench; its errors are above"
        ))),
        Some(_) => Ok(()),
    }
}

/// The child's peak resident memory, MB.
fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches("kB").trim().to_owned()))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Where the simulated vehicles connect, and the secret all of them share (one hash to compute
/// instead of one per vehicle; the endpoint still verifies it once per vehicle).
#[derive(Clone, Debug)]
struct Mqtt {
    host: String,
    port: u16,
    secret: String,
}

impl Mqtt {
    /// A client of `vehicle` (its user name; the secret as password).
    fn client(&self, id: String, vehicle: &str, inflight: u16) -> (AsyncClient, rumqttc::EventLoop) {
        let mut options = MqttOptions::new(id, &self.host, self.port);
        options.set_inflight(inflight);
        // A saturated broker answers pings late; that is not a dead link.
        options.set_keep_alive(Duration::from_secs(600));
        options.set_max_packet_size(512 * 1024, 512 * 1024);
        options.set_credentials(vehicle, &self.secret);
        AsyncClient::new(options, usize::from(inflight) * 2)
    }
}

/// Messages one simulated vehicle may have unacknowledged (Mosquitto's default window).
const VEHICLE_IN_FLIGHT: u16 = 20;

/// Publishes `messages` paced at `interval` each (zero: as fast as acknowledged), each vehicle on
/// a connection of its own as vehicles connect (client ids `{id}-{n}`); returns once every one is
/// acknowledged, with the time publishing took.
async fn publish(mqtt: &Mqtt, id: &str, messages: Vec<FleetMessage>, interval: Duration) -> Result<Duration, Failure> {
    let mut vehicles: Vec<Vec<FleetMessage>> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for message in messages {
        let n = *index.entry(message.topic.clone()).or_insert_with(|| {
            vehicles.push(Vec::new());
            vehicles.len() - 1
        });
        vehicles[n].push(message);
    }
    // Each vehicle sends every `fleet × interval`, the vehicles spread over one interval.
    let every = interval * u32::try_from(vehicles.len()).unwrap_or(u32::MAX);
    // The clock starts once every vehicle is connected (and authenticated): vehicles stay
    // connected, so connecting is no part of the rate.
    let all_connected = Arc::new(tokio::sync::Barrier::new(vehicles.len() + 1));
    let tasks: Vec<_> = vehicles
        .into_iter()
        .enumerate()
        .map(|(n, messages)| {
            let (mqtt, client_id, connected) = (mqtt.clone(), format!("{id}-{n}"), Arc::clone(&all_connected));
            let offset = interval * u32::try_from(n).unwrap_or(0);
            tokio::spawn(async move { publish_vehicle(&mqtt, client_id, messages, every, offset, &connected).await })
        })
        .collect();
    all_connected.wait().await;
    let started = Instant::now();
    for task in tasks {
        task.await.map_err(|e| Failure::Runtime(e.into()))??;
    }
    Ok(started.elapsed())
}

/// One vehicle's connection: once it and the whole fleet are connected (`connected`), `messages`
/// paced at `interval` from `offset` (zero: as fast as acknowledged), until every one is
/// acknowledged. A paced publisher that falls behind does not burst to catch up (a burst would
/// measure a queue, not the rate): the schedule moves.
async fn publish_vehicle(
    mqtt: &Mqtt,
    id: String,
    messages: Vec<FleetMessage>,
    interval: Duration,
    offset: Duration,
    connected: &tokio::sync::Barrier,
) -> Result<(), Failure> {
    let vehicle = messages
        .first()
        .and_then(|m| tripline_model::topic::Topic::parse(&m.topic).ok())
        .map(|topic| topic.vehicle_id.as_str().to_owned())
        .unwrap_or_default();
    let (client, mut eventloop) = mqtt.client(id, &vehicle, VEHICLE_IN_FLIGHT);
    let accepted = loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break Ok(()),
            Ok(_) => {}
            Err(error) => {
                break Err(Failure::Runtime(
                    anyhow::Error::new(error).context(format!("vehicle {vehicle} could not connect")),
                ));
            }
        }
    };
    // Every vehicle arrives here, connected or not, so the fleet never waits for a failed one.
    connected.wait().await;
    accepted?;
    let total = messages.len();
    let first = tokio::time::Instant::now() + offset;
    let sender = tokio::spawn(async move {
        let slack = Duration::from_millis(20);
        let mut next = first;
        for message in messages {
            if !interval.is_zero() {
                next += interval;
                let now = tokio::time::Instant::now();
                if next + slack < now {
                    next = now;
                }
                tokio::time::sleep_until(next).await;
            }
            if client.publish(message.topic, QoS::AtLeastOnce, false, message.payload).await.is_err() {
                return None;
            }
        }
        Some(client)
    });
    let mut acked = 0;
    while acked < total {
        if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.context("fleet connection")? {
            acked += 1;
        }
    }
    if let Ok(Some(client)) = sender.await {
        let _ = client.disconnect().await;
    }
    Ok(())
}

/// The process's resident memory now, MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches("kB").trim().to_owned()))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Connects `vehicles` (each on its own connection, with its secret) and leaves them idle; the
/// child's resident memory before and after, per connection.
async fn idle(mqtt: &Mqtt, vehicles: &[VehicleId], pid: u32) -> Result<IdleReport, Failure> {
    eprintln!("tripline bench: connecting {} idle vehicles", vehicles.len());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_mb(pid);
    let started = Instant::now();
    let mut clients = Vec::with_capacity(vehicles.len());
    let mut connected = tokio::task::JoinSet::new();
    let mut accepted = 0;
    for (n, vehicle) in vehicles.iter().enumerate() {
        let (client, mut eventloop) = mqtt.client(format!("{vehicle}-c"), vehicle.as_str(), 1);
        clients.push(client);
        let (ack_tx, ack) = tokio::sync::oneshot::channel();
        // Polled for the whole phase: keeps the connection (and its keep-alive) going.
        tokio::spawn(async move {
            let mut ack_tx = Some(ack_tx);
            while let Ok(event) = eventloop.poll().await {
                if let (Event::Incoming(Packet::ConnAck(_)), Some(tx)) = (event, ack_tx.take()) {
                    let _ = tx.send(());
                }
            }
        });
        connected.spawn(async move { tokio::time::timeout(Duration::from_secs(300), ack).await.is_ok() });
        // Bursts of a few hundred at once, as a fleet coming online would.
        if n % 500 == 499 {
            while connected.len() > 1000 {
                if let Some(done) = connected.join_next().await {
                    accepted += usize::from(done.unwrap_or(false));
                }
            }
        }
    }
    while let Some(done) = connected.join_next().await {
        accepted += usize::from(done.unwrap_or(false));
    }
    let connect_s = started.elapsed().as_secs_f64();
    if accepted < vehicles.len() {
        return Err(Failure::Runtime(anyhow::anyhow!("{accepted} of {} idle vehicles connected", vehicles.len())));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mb(pid);
    for client in clients {
        let _ = client.try_disconnect();
    }
    Ok(IdleReport {
        connections: accepted,
        connect_s,
        rss_before_mb: before,
        rss_after_mb: after,
        rss_per_connection_kb: (after - before) * 1024.0 / accepted.max(1) as f64,
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// How often a probe trip is published during the freshness phase.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// How often a probe polls the API for its trip (the measurement's resolution).
const PROBE_POLL: Duration = Duration::from_millis(10);
/// A probe not found after this long counts as this long.
const PROBE_GIVE_UP: Duration = Duration::from_secs(30);

/// Probes freshness until `until`: a one-point trip of a new probe vehicle every 200 ms, each
/// polled on the API on a thread of its own until found, so that a slow probe neither delays
/// the next nor thins the sample. Returns the delays, ms: until searchable, and until readable
/// from the write store (`/v1/trips/{id}`), which tells ingest's share from the indexer's.
async fn probe(
    mqtt: &Mqtt,
    http: &str,
    key: &str,
    probes: &[VehicleId],
    until: Instant,
) -> (Vec<(f64, f64)>, Vec<(TripId, Instant)>) {
    let mut polls = Vec::new();
    let mut published = Vec::new();
    let mut next = tokio::time::Instant::now();
    for vehicle in probes {
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep_until(next).await;
        next += PROBE_EVERY;
        let point = Point {
            seq: Some(1),
            ts_ms: tripline_model::time::now_ms() - 1000,
            lat: 50.0,
            lon: 8.0,
            speed_mps: Some(0.0),
            heading_deg: None,
            accuracy_m: Some(5.0),
            alt_m: None,
            ignition: Some(true),
            odometer_m: None,
        };
        let Ok(trip) = TripId::parse(&format!("{vehicle}-p")) else { continue };
        let payload = encode_telemetry(Some(&trip), &[point]);
        // Each probe is a vehicle of its own, on its own connection (it may publish only as
        // itself); the delay counts from the publish, once connected.
        let (client, mut eventloop) = mqtt.client(format!("{vehicle}-c"), vehicle.as_str(), 10);
        let connected = tokio::time::timeout(PROBE_GIVE_UP, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
        });
        if !matches!(connected.await, Ok(true)) {
            tracing::warn!(%vehicle, "a probe could not connect");
            continue;
        }
        let sent = Instant::now();
        if client.publish(format!("vehicles/{vehicle}/telemetry"), QoS::AtLeastOnce, false, payload).await.is_err() {
            break;
        }
        published.push((trip.clone(), sent));
        tokio::spawn(async move {
            let _ = tokio::time::timeout(PROBE_GIVE_UP, async {
                while let Ok(event) = eventloop.poll().await {
                    if let Event::Incoming(Packet::PubAck(_)) = event {
                        let _ = client.disconnect().await;
                    }
                }
            })
            .await;
        });
        let (http, key, vehicle) = (http.to_owned(), key.to_owned(), vehicle.clone());
        polls.push(tokio::task::spawn_blocking(move || poll_probe(&http, &key, &vehicle, &trip, sent)));
    }
    let mut delays = Vec::with_capacity(polls.len());
    for poll in polls {
        if let Ok(delay) = poll.await {
            delays.push(delay);
        }
    }
    (delays, published)
}

/// Polls for one probe trip published at `sent` until the search API finds it; returns the
/// delays (searchable, durable), ms.
fn poll_probe(http: &str, key: &str, vehicle: &VehicleId, trip: &TripId, sent: Instant) -> (f64, f64) {
    let agent = agent();
    let query = format!("vehicle_id={vehicle}&limit=1");
    let detail = format!("http://{http}/v1/trips/{trip}");
    let elapsed_ms = || sent.elapsed().as_secs_f64() * 1000.0;
    let mut stored: Option<f64> = None;
    let found = loop {
        if stored.is_none()
            && agent
                .get(&detail)
                .header("Authorization", format!("Bearer {key}"))
                .call()
                .is_ok_and(|r| r.status().as_u16() == 200)
        {
            stored = Some(elapsed_ms());
        }
        if search_total(&agent, http, key, &query) == Some(1) {
            break true;
        }
        if sent.elapsed() > PROBE_GIVE_UP {
            break false;
        }
        std::thread::sleep(PROBE_POLL);
    };
    let searchable = if found { elapsed_ms() } else { PROBE_GIVE_UP.as_secs_f64() * 1000.0 };
    tracing::debug!(%vehicle, durable_ms = ?stored, searchable_ms = searchable, "probe");
    (searchable, stored.unwrap_or(searchable))
}

pub(crate) fn run(config: &Config, options: &BenchOptions) -> Result<(), Failure> {
    let report = runtime()?.block_on(bench(config, options))?;
    if options.json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Runtime(e.into()))?;
        #[allow(clippy::print_stdout)] // the report is the command's output
        {
            println!("{text}");
        }
    } else {
        print_report(&report);
    }
    Ok(())
}

#[allow(clippy::print_stdout)] // the report is the command's output
fn print_report(r: &BenchReport) {
    println!(
        "tripline bench: {} vehicles, {} messages, {} points; {} store, {} broker",
        r.vehicles, r.messages, r.points, r.store, r.broker
    );
    println!("  ingest         {:>10.0} points/s acknowledged ({:.0} messages/s)", r.points_per_s, r.messages_per_s);
    println!("  store ceiling  {:>10.0} points/s  -> ratio {:.2}", r.store_ceiling_points_per_s, r.ratio_to_ceiling);
    println!(
        "  freshness      p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} probes at {:.0} points/s)",
        r.freshness_ms.p50,
        r.freshness_ms.p99,
        r.freshness_ms.max,
        r.freshness_ms.samples,
        r.freshness_load_points_per_s
    );
    println!(
        "  push           p50 {:.0} ms, p99 {:.0} ms to each of {} live streams; webhook p50 {:.0} ms, p99 {:.0} ms (publish to trip.started)",
        r.push_ms.p50, r.push_ms.p99, r.push_streams, r.webhook_ms.p50, r.webhook_ms.p99
    );
    println!(
        "  durable        p50 {:.0} ms, p99 {:.0} ms (of those: publish to readable from the write store)",
        r.durable_ms.p50, r.durable_ms.p99
    );
    println!(
        "  after durable  p50 {:.0} ms, p99 {:.0} ms (readable from the write store to searchable)",
        r.after_durable_ms.p50, r.after_durable_ms.p99
    );
    let stages = &r.stages_ms;
    println!(
        "  stages (p50/p99 ms)  ack {:.0}/{:.0}: to the worker {:.0}/{:.0}, in its queue {:.0}/{:.0}, batch apply {:.0}/{:.0}, batch write {:.0}/{:.0}; index: read trips {:.0}/{:.0}, commit {:.0}/{:.0}, feed to searchable {:.0}/{:.0}",
        stages.ack.p50,
        stages.ack.p99,
        stages.handoff.p50,
        stages.handoff.p99,
        stages.queue_wait.p50,
        stages.queue_wait.p99,
        stages.apply.p50,
        stages.apply.p99,
        stages.write.p50,
        stages.write.p99,
        stages.index_read.p50,
        stages.index_read.p99,
        stages.index_commit.p50,
        stages.index_commit.p99,
        stages.index_delay.p50,
        stages.index_delay.p99
    );
    println!(
        "  tripline run   {:.2} cores, peak RSS {:.0} MB, {} messages or points rejected; bench took {:.0} s",
        r.cpu_cores, r.rss_mb_max, r.rejections, r.duration_s
    );
    if let Some(disk) = &r.disk {
        println!(
            "  on disk        {:.1} bytes per point in chunks, {:.1} in all tables, {:.1} in the journal (compacted, {} points)",
            disk.point_bytes_per_point, disk.tables_bytes_per_point, disk.journal_bytes_per_point, r.points_published
        );
    }
    if let Some(idle) = &r.idle {
        println!(
            "  idle vehicles  {} connected in {:.1} s: RSS {:.0} → {:.0} MB, {:.1} KB per connection",
            idle.connections, idle.connect_s, idle.rss_before_mb, idle.rss_after_mb, idle.rss_per_connection_kb
        );
    }
}

/// Where the bench publishes: an external broker (`--url`, else `[mqtt] url`), or the child's
/// embedded endpoint on a free port.
struct BenchBroker {
    url: Option<String>,
    host: String,
    port: u16,
    /// The broker as the report names it.
    label: String,
}

impl BenchBroker {
    fn of(config: &Config, options: &BenchOptions) -> Result<BenchBroker, Failure> {
        let url = options.url.clone().or_else(|| config.mqtt.url.clone());
        let Some(url) = url else {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| Failure::Runtime(e.into()))?
                .port();
            return Ok(BenchBroker { url: None, host: "127.0.0.1".to_owned(), port, label: "embedded".to_owned() });
        };
        let crate::config::BrokerUrl { host, port, tls } = crate::config::mqtt_endpoint(&url)?;
        if tls {
            return Err(Failure::Usage("bench publishes over plain MQTT: give it an mqtt:// broker".to_owned()));
        }
        Ok(BenchBroker { url: Some(url.clone()), host, port, label: url })
    }
}

async fn bench(config: &Config, options: &BenchOptions) -> Result<BenchReport, Failure> {
    let started = Instant::now();
    // Removed when the bench ends, however it ends.
    let temp = tempfile::Builder::new().prefix("tripline-bench-").tempdir().context("a temporary folder")?;
    let dir = temp.path().to_path_buf();
    let run_id = &crate::random_hex()?[..8];
    let prefix = format!("b{run_id}");
    let tenant = TenantId::parse(&format!("bench-{run_id}")).map_err(|e| Failure::Runtime(e.into()))?;
    let key = crate::fleet::new_api_key()?;
    let t0 = tripline_model::time::now_ms() - SIMULATED_FROM_MS;

    let BenchBroker { url, host, port, label: broker } = BenchBroker::of(config, options)?;
    let store_config = child_config(config, options.store, &dir, &prefix, url.as_deref(), port)?;
    if options.store == StoreKind::Scylla {
        tripline_store::ScyllaStore::apply_schema(&store_config.scylla()).await.context("scylla")?;
    }
    let toml = toml::to_string(&store_config).context("writing the child's configuration")?;
    std::fs::write(dir.join("tripline.toml"), toml).context("writing the child's configuration")?;

    // The fleet: throughput messages generated up front (kept for the ceiling too).
    let Fleet { vehicles: mut fleet, probes, rounds, messages } = Fleet::new(&prefix, options, t0)?;
    let total_messages = messages.len();
    let total_points: usize = messages.iter().map(|m| m.points).sum();

    // Registry and ceiling, in this process; then the store is closed for the child.
    let store = crate::config::open_store(&store_config).await?;
    let mut vehicles: Vec<VehicleId> = fleet.iter().map(|v| v.id.clone()).collect();
    vehicles.extend(probes.iter().cloned());
    let idle_ids: Vec<VehicleId> = (0..options.idle_vehicles)
        .map(|k| VehicleId::parse(&format!("{prefix}-idle-{k}")))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::Runtime(e.into()))?;
    vehicles.extend(idle_ids.iter().cloned());
    let secret = register_fleet(&store, &tenant, &key, &vehicles).await?;
    let mqtt = Mqtt { host: host.clone(), port, secret };
    let ceiling_rate = measure_ceiling(&store_config, options.store, &dir, &tenant, rounds).await?;
    eprintln!("tripline bench: store ceiling {ceiling_rate:.0} points/s ({total_points} points)");
    drop(store);
    // Everything with the child running; whatever happens there, the broker then forgets the
    // child's session (one left behind keeps queueing every message of the next runs).
    let measured: Result<BenchReport, Failure> = async {
        let child = start_child(&dir)?;
        eprintln!("tripline bench: tripline run started; publishing {total_messages} messages as fast as acknowledged");
        let mut report = throughput(&child, &mqtt, &prefix, messages, total_points).await?;
        report.batch_messages_mean = batch_messages_mean(&child.http);
        report.store_ceiling_points_per_s = ceiling_rate;
        report.ratio_to_ceiling = report.points_per_s / ceiling_rate;

        // Freshness is measured on a caught-up system: first the indexer takes in the backlog
        // of the throughput phase (every trip searchable, nothing uncommitted).
        let trips: usize = fleet.iter().map(|v| v.trips).sum();
        wait_caught_up(&child, &key, trips).await?;
        // Push is measured during the same probes: live streams and a webhook follow the child.
        let pushed = follow_push(&child, &key, &dir, &tenant, options.streams).await?;

        let published =
            freshness(&child, &mqtt, &key, &prefix, &probes, &mut fleet, options, pushed, &mut report).await?;
        report.rss_mb_max = peak_rss_mb(child.child.id());
        report.stages_ms = stage_times(&child.http);
        let rejections = scrape_sum(&agent(), &child.http, tripline_ingest::metrics::REJECTIONS);
        report.rejections = rejections.map_or(0, |n| n as u64);
        if report.rejections > 0 {
            eprintln!(
                "tripline bench: the child rejected {} messages or points of the load: the figures measure those rejections too",
                report.rejections
            );
        }
        if options.idle_vehicles > 0 && url.is_none() {
            report.idle = Some(idle(&mqtt, &idle_ids, child.child.id()).await?);
        }
        stop_child(child).await;
        report.points_published = total_points + published;
        Ok(report)
    }
    .await;
    if url.is_some() {
        forget_session(&host, port, &format!("{prefix}-ingest")).await;
    }
    let mut report = measured?;
    if options.store == StoreKind::Embedded {
        report.disk = Some(disk_report(&store_config, report.points_published).await?);
    }
    report.store = options.store;
    report.broker = broker;
    report.vehicles = options.vehicles;
    report.messages = total_messages;
    report.points = total_points;
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Messages per worker batch, on average over the run so far, from the child's `/metrics`.
fn batch_messages_mean(http: &str) -> f64 {
    let agent = agent();
    let name = tripline_pipeline::metrics::BATCH_MESSAGES;
    let sum = scrape::<f64>(&agent, http, &format!("{name}_sum")).unwrap_or(f64::NAN);
    let count = scrape::<f64>(&agent, http, &format!("{name}_count")).unwrap_or(f64::NAN);
    sum / count
}

/// The child's own stage times from its `/metrics`.
fn stage_times(http: &str) -> StageTimes {
    let agent = agent();
    let quantiles = |name: &str| Quantiles {
        p50: scrape_quantile_ms(&agent, http, name, "0.5"),
        p99: scrape_quantile_ms(&agent, http, name, "0.99"),
    };
    let count = |name| scrape::<f64>(&agent, http, name).unwrap_or(0.0);
    let (reused, reads) = (count(tripline_indexer::metrics::REUSED), count(tripline_indexer::metrics::READS));
    StageTimes {
        ack: quantiles(tripline_ingest::metrics::ACK_LATENCY),
        handoff: quantiles(tripline_ingest::metrics::HANDOFF_SECONDS),
        lookup: quantiles(tripline_ingest::metrics::LOOKUP_SECONDS),
        trip_read: quantiles(tripline_pipeline::metrics::TRIP_READ_SECONDS),
        queue_wait: quantiles(tripline_pipeline::metrics::QUEUE_WAIT_SECONDS),
        apply: quantiles(tripline_pipeline::metrics::APPLY_SECONDS),
        write: quantiles(tripline_pipeline::metrics::WRITE_SECONDS),
        index_read: quantiles(tripline_indexer::metrics::READ_SECONDS),
        index_commit: quantiles(tripline_indexer::metrics::COMMIT_SECONDS),
        index_delay: quantiles(tripline_indexer::metrics::DELAY_SECONDS),
        index_reused_share: if reused + reads > 0.0 { reused / (reused + reads) } else { f64::NAN },
    }
}

/// `streams` live streams and a webhook following the child's probes (none for 0).
async fn follow_push(
    child: &RunningChild,
    key: &str,
    dir: &Path,
    tenant: &TenantId,
    streams: usize,
) -> Result<Option<push::PushWatch>, Failure> {
    if streams == 0 {
        return Ok(None);
    }
    let data_dir = dir.join("tripline-data");
    let watch = push::watch(&child.http, key, &data_dir, tenant.as_str(), "-probe-", streams).await?;
    eprintln!("tripline bench: {streams} live streams and a webhook follow the child");
    Ok(Some(watch))
}

/// The freshness phase: the fleet publishes at half the measured load (or `--rate`) while the
/// probes run, and `pushed` (if any) times each probe's `trip.started`. Fills the report's
/// freshness, durable, push and load figures; returns the points it published.
#[allow(clippy::too_many_arguments)] // the phase's inputs, each used once
async fn freshness(
    child: &RunningChild,
    mqtt: &Mqtt,
    key: &str,
    prefix: &str,
    probes: &[VehicleId],
    fleet: &mut [VehicleSim],
    options: &BenchOptions,
    pushed: Option<push::PushWatch>,
    report: &mut BenchReport,
) -> Result<usize, Failure> {
    let rate = options.rate.unwrap_or(report.points_per_s / 2.0).max(1.0);
    let seconds = options.probe_seconds.max(1) as f64;
    let rounds_needed = ((rate * seconds) / (options.points * options.vehicles).max(1) as f64).ceil() as usize;
    let mut load = Vec::new();
    for _ in 0..rounds_needed.max(1) {
        load.extend(fleet_round(fleet, options.points, None)?);
    }
    let interval = Duration::from_secs_f64(options.points as f64 / rate);
    let load_points: usize = load.iter().map(|m| m.points).sum();
    eprintln!("tripline bench: freshness at {rate:.0} points/s for {seconds:.0} s");
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let load_task = {
        let (mqtt, id) = (mqtt.clone(), format!("{prefix}-fleet2"));
        tokio::spawn(async move { publish(&mqtt, &id, load, interval).await })
    };
    // Probes start once the load runs at its pace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (delays, published) = probe(mqtt, &child.http, key, probes, until).await;
    let load_elapsed = load_task.await.map_err(|e| Failure::Runtime(e.into()))??;
    if let Some(pushed) = pushed {
        // Stragglers of the last probes arrive.
        tokio::time::sleep(Duration::from_secs(2)).await;
        (report.push_ms, report.webhook_ms) = pushed.delays(&published, PROBE_GIVE_UP);
        report.push_streams = options.streams;
    }
    report.freshness_ms = Freshness::of(delays.iter().map(|d| d.0).collect());
    report.durable_ms = Freshness::of(delays.iter().map(|d| d.1).collect());
    report.after_durable_ms = Freshness::of(delays.iter().map(|d| (d.0 - d.1).max(0.0)).collect());
    // The load as achieved (the target when the publisher kept up).
    report.freshness_load_points_per_s = load_points as f64 / load_elapsed.as_secs_f64().max(1e-3);
    Ok(load_points + published.len())
}

/// Stops the child as an operator would (SIGTERM), and kills it if it has not exited within
/// [`STOP_GRACE`].
async fn stop_child(mut child: RunningChild) {
    let _ = Command::new("kill").args(["-TERM", &child.child.id().to_string()]).status();
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !matches!(child.child.try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a stopped child may take to drain and exit.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The stopped child's embedded store, compacted, per point published.
async fn disk_report(store_config: &Config, points: usize) -> Result<DiskReport, Failure> {
    let store = EmbeddedStore::open(&store_config.embedded()).context("opening the run's store")?;
    let usage = store.compact().await.context("compacting the run's store")?;
    let per_point = |bytes: u64| bytes as f64 / points.max(1) as f64;
    Ok(DiskReport {
        point_bytes_per_point: per_point(usage.point_chunks_bytes),
        tables_bytes_per_point: per_point(usage.tables_bytes),
        journal_bytes_per_point: per_point(usage.journal_bytes),
    })
}

/// The simulated fleet and its throughput messages, generated up front.
struct Fleet {
    vehicles: Vec<VehicleSim>,
    /// The probe vehicles (each probe trip on a vehicle not seen before).
    probes: Vec<VehicleId>,
    /// The throughput messages' points, round by round (for the ceiling).
    rounds: Vec<Vec<(VehicleId, TripId, Vec<Point>)>>,
    /// The throughput messages.
    messages: Vec<FleetMessage>,
}

impl Fleet {
    fn new(prefix: &str, options: &BenchOptions, t0: i64) -> Result<Fleet, Failure> {
        let mut vehicles: Vec<VehicleSim> =
            (0..options.vehicles).map(|v| VehicleSim::new(prefix, v, options.seed, t0)).collect::<Result<_, _>>()?;
        let probes: Vec<VehicleId> = (0..1000)
            .map(|k| VehicleId::parse(&format!("{prefix}-probe-{k}")))
            .collect::<Result<_, _>>()
            .map_err(|e| Failure::Runtime(e.into()))?;
        let mut rounds = Vec::with_capacity(options.messages);
        let mut messages = Vec::with_capacity(options.messages * options.vehicles);
        for _ in 0..options.messages {
            let mut round = Vec::new();
            messages.extend(fleet_round(&mut vehicles, options.points, Some(&mut round))?);
            rounds.push(round);
        }
        Ok(Fleet { vehicles, probes, rounds, messages })
    }
}

/// Registers `vehicles` to a new `tenant` with API key `key`, all with one new secret (one hash
/// to compute, for thousands of vehicles); returns the secret.
async fn register_fleet(
    store: &AnyStore,
    tenant: &TenantId,
    key: &str,
    vehicles: &[VehicleId],
) -> Result<String, Failure> {
    let registry = "registering the fleet";
    store.create_tenant(tenant, &tripline_query_api::api_key_hash(key)).await.context(registry)?;
    store.add_vehicles(tenant, vehicles).await.context(registry)?;
    let secret = tripline_ingest::credentials::new_secret().context("no randomness")?;
    let hash = tripline_ingest::credentials::hash_secret(&secret).context("hashing the fleet's secret")?;
    let secrets: Vec<_> = vehicles.iter().map(|v| (v.clone(), Some(hash.clone()))).collect();
    store.set_vehicle_secrets(&secrets).await.context(registry)?;
    Ok(secret)
}

/// The store-only ceiling of the fleet's `rounds`, in a store of its own, removed afterwards, so
/// that ingest starts on an empty store as the ceiling did (and does not pay for compacting the
/// ceiling's data): embedded, a data dir beside the child's; ScyllaDB, a keyspace
/// `<keyspace>_ceiling`. The points go under other vehicle ids, so ingest also starts from an
/// empty trip set as a fresh fleet would.
async fn measure_ceiling(
    store_config: &Config,
    store: StoreKind,
    dir: &Path,
    tenant: &TenantId,
    rounds: Vec<Vec<(VehicleId, TripId, Vec<Point>)>>,
) -> Result<f64, Failure> {
    let renamed = |(v, t, p): (VehicleId, TripId, Vec<Point>)| (VehicleId::parse(&format!("c{v}")).unwrap_or(v), t, p);
    let rounds = rounds.into_iter().map(|round| round.into_iter().map(renamed).collect()).collect();
    let mut ceiling_config = store_config.clone();
    match store {
        StoreKind::Embedded => ceiling_config.data_dir = dir.join("ceiling-data"),
        StoreKind::Scylla => {
            ceiling_config.scylla.keyspace = ceiling_keyspace(&store_config.scylla.keyspace);
            tripline_store::ScyllaStore::apply_schema(&ceiling_config.scylla()).await.context("scylla ceiling")?;
        }
    }
    let ceiling_store = crate::config::open_store(&ceiling_config).await?;
    let rate = ceiling(&ceiling_store, tenant, rounds).await;
    drop(ceiling_store);
    match store {
        StoreKind::Embedded => {
            let _ = std::fs::remove_dir_all(&ceiling_config.data_dir);
        }
        StoreKind::Scylla => {
            tripline_store::ScyllaStore::drop_keyspace(&ceiling_config.scylla()).await.context("scylla ceiling")?
        }
    }
    Ok(rate)
}

/// The child's configuration: the operator's, with a data directory in `dir`, the chosen store,
/// the broker at `url` (with a client id of its own) or the embedded endpoint on `port` over
/// plain MQTT (the fleet publishes plain), and the API's limits lifted for the measurement.
fn child_config(
    config: &Config,
    store: StoreKind,
    dir: &Path,
    prefix: &str,
    url: Option<&str>,
    port: u16,
) -> Result<Config, Failure> {
    let mut child = config.clone();
    child.data_dir = dir.join("tripline-data");
    child.store = store;
    // The child runs in `dir`: files named relative to here are found from there too.
    for path in [&mut child.regions, &mut child.mqtt.password_file] {
        if let Some(file) = path.as_mut() {
            *file = std::path::absolute(&*file).with_context(|| file.display().to_string())?;
        }
    }
    let mqtt = &mut child.mqtt;
    match url {
        Some(url) => {
            mqtt.url = Some(url.to_owned());
            mqtt.client_id = Some(format!("{prefix}-ingest"));
        }
        None => {
            mqtt.url = None;
            mqtt.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            (mqtt.tls_cert_file, mqtt.tls_key_file, mqtt.tls_client_ca_file) = (None, None, None);
        }
    }
    child.http.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    (child.http.rate_per_s, child.http.burst, child.http.max_connections) = (1e6, 1e6, 4096);
    // The push measurement's streams (one key) and webhook receiver (this process).
    child.push.max_streams_per_key = 4096;
    child.push.webhook_allowed_networks = vec!["127.0.0.1/32".to_owned()];
    Ok(child)
}

/// Waits until the search API finds `trips` trips and the indexer has nothing uncommitted.
async fn wait_caught_up(child: &RunningChild, key: &str, trips: usize) -> Result<(), Failure> {
    let (http, agent) = (&child.http, agent());
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        check_alive(child.child.id())?;
        let found = search_total(&agent, http, key, "limit=1");
        let lag = scrape::<f64>(&agent, http, "tripline_indexer_lag_seconds");
        if found.is_some_and(|n| n as usize >= trips) && lag == Some(0.0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Failure::Runtime(anyhow::anyhow!("the index did not catch up within 10 minutes")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The throughput phase: every message as fast as acknowledged, until the child acknowledged all.
async fn throughput(
    child: &RunningChild,
    mqtt: &Mqtt,
    prefix: &str,
    messages: Vec<FleetMessage>,
    total_points: usize,
) -> Result<BenchReport, Failure> {
    let total = messages.len() as u64;
    let pid = child.child.id();
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let started = Instant::now();
    publish(mqtt, &format!("{prefix}-fleet"), messages, Duration::ZERO).await?;
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(600);
    while scrape::<u64>(&agent, &child.http, "tripline_ingest_acks_total").unwrap_or(0) < total {
        check_alive(pid)?;
        if Instant::now() > deadline {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "tripline did not acknowledge every message within 10 minutes"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid).unwrap_or(cpu_before) - cpu_before;
    Ok(BenchReport {
        points_per_s: total_points as f64 / elapsed,
        messages_per_s: total as f64 / elapsed,
        cpu_cores: cpu / elapsed,
        ..BenchReport::default()
    })
}

/// Removes the ingest role's persistent session from an external broker (a clean-session
/// connect with the same client id), so the broker does not keep queueing for it.
async fn forget_session(host: &str, port: u16, client_id: &str) {
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::ConnAck(_)) = event {
                break;
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_childs_configuration_is_the_operators_with_the_benchs_settings_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut operator = Config::default();
        operator.ingest.workers = 3;
        operator.mqtt.tls_cert_file = Some("server.pem".into());
        let child = child_config(&operator, StoreKind::Embedded, dir.path(), "b1", None, 18830).unwrap();
        let file = dir.path().join("tripline.toml");
        std::fs::write(&file, toml::to_string(&child).unwrap()).unwrap();
        let read = crate::config::load(Some(&file)).unwrap();
        assert_eq!(read.ingest.workers, 3, "the operator's settings go to the child");
        assert_eq!(read.data_dir, dir.path().join("tripline-data"));
        assert_eq!(read.mqtt.listen, Some("127.0.0.1:18830".parse().unwrap()));
        assert_eq!(read.mqtt.tls_cert_file, None, "the fleet publishes plain MQTT");
        assert_eq!((read.http.rate_per_s, read.push.max_streams_per_key), (1e6, 4096));
        let external = child_config(&operator, StoreKind::Scylla, dir.path(), "b1", Some("mqtt://h:1883"), 0).unwrap();
        assert_eq!(
            (external.mqtt.url.as_deref(), external.mqtt.client_id.as_deref(), external.store),
            (Some("mqtt://h:1883"), Some("b1-ingest"), StoreKind::Scylla)
        );
    }

    #[test]
    fn a_simulated_vehicle_refuses_to_pass_the_present() {
        let now = tripline_model::time::now_ms();
        let mut vehicle = VehicleSim::new("sim", 0, 7, now - 3_600_000).unwrap();
        let mut sent = 0;
        // An hour at 1 Hz is 3,600 points and the pauses between trips: far below this bound.
        let refused = (0..10_000)
            .find_map(|_| match vehicle.next_message(10) {
                Ok((_, points)) => {
                    let now = tripline_model::time::now_ms();
                    assert!(points.iter().all(|p| p.ts_ms <= now), "no point from the future");
                    sent += points.len();
                    None
                }
                Err(failure) => Some(failure),
            })
            .expect("the simulation stops at the present");
        assert!(sent > 0, "the hour before now was simulated");
        assert!(matches!(&refused, Failure::Usage(reason) if reason.contains("reached the present")), "{refused:?}");
    }

    #[test]
    fn a_counter_is_summed_over_its_labels() {
        let text = "# TYPE tripline_ingest_rejections_total counter\n\
                    tripline_ingest_rejections_total{reason=\"timestamp_future\"} 12\n\
                    tripline_ingest_rejections_total{reason=\"schema\"} 3\n\
                    tripline_ingest_rejections_total_other 100\n\
                    tripline_ingest_acks_total 9\n";
        assert_eq!(sum_over_labels(text, "tripline_ingest_rejections_total"), 15.0);
        assert_eq!(sum_over_labels(text, "tripline_ingest_acks_total"), 9.0);
        assert_eq!(sum_over_labels(text, "tripline_missing_total"), 0.0);
    }

    #[test]
    fn a_child_that_exited_fails_the_bench_and_a_running_one_does_not() {
        let mut running = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(check_alive(running.id()).is_ok());
        let exited = Command::new("true").spawn().unwrap();
        let pid = exited.id();
        // Not reaped yet: a zombie, as the bench's child is until it is dropped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while check_alive(pid).is_ok() {
            assert!(Instant::now() < deadline, "pid {pid} still alive");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(exited);
        running.kill().unwrap();
        running.wait().unwrap();
    }
}
