//! `tripline replay FILE…`: publishes trips from files over MQTT as vehicles would (QoS 1, a
//! bounded window of messages in flight), paced by the points' own times or as fast as the
//! broker acknowledges.
//!
//! Decisions where the contract is silent: points go out `--per-message` (default 10) at a time
//! per trip; a trip with an id ends with an `end` marker on `vehicles/{id}/trips`; a GPX track
//! without a name gets the id `tripline summarize` gives it, so both see the same trips;
//! `--vehicles N` (N > 1) publishes each trip as vehicles `{vehicle}-1` … `{vehicle}-N`, with trip
//! ids suffixed the same way; `--rebase-time` shifts every trip so that it ends when the replay
//! ends (now, with `--speed max`), so a paced replay never sends a point from the future.
//! The default speed is `max`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tripline_model::point::RawPoint;
use tripline_model::time::{parse_rfc3339_ms, to_datetime};
use tripline_model::tripfile::FileRecord;
use tripline_model::{TripId, VehicleId};

use crate::config::{BrokerUrl, Config};
use crate::{Failure, runtime};

/// Messages a vehicle's connection has published and not yet acknowledged, at most.
const IN_FLIGHT: u16 = 20;

/// How to replay.
#[derive(Clone, Debug)]
pub(crate) struct ReplayOptions {
    /// Time factor (2.0: twice as fast as recorded); `None`: as fast as acknowledged.
    pub(crate) speed: Option<f64>,
    /// Vehicles each trip is published as.
    pub(crate) vehicles: usize,
    /// Shift each trip so that it ends when the replay ends.
    pub(crate) rebase_time: bool,
    /// Points per message.
    pub(crate) per_message: usize,
    /// The vehicle of GPX files.
    pub(crate) gpx_vehicle: Option<String>,
    /// The broker (`mqtt://host:port`); default: the configured one.
    pub(crate) url: Option<String>,
    /// A CSV file of `vehicle_id,secret` (as `tripline fleet add` prints it).
    pub(crate) credentials: Option<PathBuf>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            speed: None,
            vehicles: 1,
            rebase_time: false,
            per_message: 10,
            gpx_vehicle: None,
            url: None,
            credentials: None,
        }
    }
}

/// `--speed`: a factor against the recording, or `None` for as fast as acknowledged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Speed(pub(crate) Option<f64>);

/// Parses `--speed`: `max` or a positive factor.
pub(crate) fn parse_speed(text: &str) -> Result<Speed, String> {
    if text == "max" {
        return Ok(Speed(None));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(Speed(Some(v))),
        _ => Err(format!("a positive number or `max`, not {text:?}")),
    }
}

/// One message of the plan.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Message {
    /// When to publish it, from the start of the replay (zero for `--speed max`).
    pub(crate) at: Duration,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
    /// Points it carries (0 for a marker).
    pub(crate) points: usize,
}

/// What will be published.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub(crate) messages: Vec<Message>,
    pub(crate) trips: usize,
    pub(crate) vehicles: usize,
    pub(crate) points: usize,
}

/// A trip read from the files.
struct FileTrip {
    vehicle: VehicleId,
    trip_id: Option<TripId>,
    /// A GPX track without a usable name: it gets the id `tripline summarize` gives it.
    track: bool,
    /// Points with their time when readable (unreadable ones go out as they are, for tripline to
    /// reject).
    points: Vec<(Option<i64>, RawPoint)>,
}

fn point_ms(point: &RawPoint) -> Option<i64> {
    point.ts_ms.or_else(|| point.ts.as_deref().and_then(|ts| parse_rfc3339_ms(ts).ok()))
}

/// Groups records into trips in order of first appearance: by trip id, by GPX track, or (no id)
/// one stream per vehicle that tripline cuts itself. Each trip in time order (stable: a point
/// with an unreadable time stays behind the point before it).
fn trips_of(records: Vec<FileRecord>) -> Vec<FileTrip> {
    type Key = (VehicleId, Option<TripId>, Option<(usize, usize)>);
    let mut trips: Vec<FileTrip> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for record in records {
        let track = if record.trip_id.is_some() { None } else { record.track.map(|t| (record.source, t)) };
        let key = (record.vehicle_id.clone(), record.trip_id.clone(), track);
        let at = *index.entry(key).or_insert_with(|| {
            trips.push(FileTrip {
                vehicle: record.vehicle_id.clone(),
                trip_id: record.trip_id.clone(),
                track: track.is_some(),
                points: Vec::new(),
            });
            trips.len() - 1
        });
        trips[at].points.push((point_ms(&record.point), record.point));
    }
    for trip in &mut trips {
        let mut last = i64::MIN;
        let mut keyed: Vec<(i64, usize, (Option<i64>, RawPoint))> = Vec::with_capacity(trip.points.len());
        for (n, point) in std::mem::take(&mut trip.points).into_iter().enumerate() {
            last = point.0.unwrap_or(last);
            keyed.push((last, n, point));
        }
        keyed.sort_by_key(|(ms, n, _)| (*ms, *n));
        trip.points = keyed.into_iter().map(|(_, _, p)| p).collect();
    }
    trips
}

fn first_ms(trip: &FileTrip) -> Option<i64> {
    trip.points.iter().find_map(|(ms, _)| *ms)
}

fn last_ms(trip: &FileTrip) -> Option<i64> {
    trip.points.iter().rev().find_map(|(ms, _)| *ms)
}

fn shifted(point: &RawPoint, shift_ms: i64) -> RawPoint {
    let mut point = point.clone();
    if shift_ms == 0 {
        return point;
    }
    if let Some(ms) = point.ts_ms.as_mut() {
        *ms += shift_ms;
    }
    if let Some(ts) = point.ts.as_mut()
        && let Ok(ms) = parse_rfc3339_ms(ts)
    {
        *ts = to_datetime(ms + shift_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    }
    point
}

fn suffixed<T>(
    base: &str,
    k: usize,
    n: usize,
    parse: impl Fn(&str) -> Result<T, tripline_model::ModelError>,
) -> Result<T, String> {
    let text = if n > 1 { format!("{base}-{k}") } else { base.to_owned() };
    parse(&text).map_err(|e| format!("--vehicles {n}: id {text:?}: {e}"))
}

/// Builds the messages from the trips read. `now_ms` anchors `--rebase-time`.
pub(crate) fn plan(records: Vec<FileRecord>, options: &ReplayOptions, now_ms: i64) -> Result<Plan, String> {
    let trips = trips_of(records);
    let factor = options.speed.unwrap_or(f64::INFINITY);
    let span = |trip: &FileTrip| match (first_ms(trip), last_ms(trip)) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    let longest = trips.iter().map(span).max().unwrap_or(0);
    let to_wall = |ms: i64| Duration::from_secs_f64((ms.max(0) as f64 / 1000.0 / factor).min(1e9));
    // With --rebase-time every trip ends when the replay ends.
    let replay_end_ms = now_ms + to_wall(longest).as_millis() as i64;
    let per_message = options.per_message.clamp(1, 1000);
    let mut messages: Vec<(Duration, usize, Message)> = Vec::new();
    let mut vehicles = std::collections::BTreeSet::new();
    let mut points_total = 0;
    let mut trip_count = 0;
    for trip in &trips {
        let (Some(first), Some(last)) = (first_ms(trip), last_ms(trip)) else { continue };
        let shift = if options.rebase_time { replay_end_ms - last } else { 0 };
        // Trips end together when rebased, start together otherwise.
        let delay = if options.rebase_time { longest - (last - first) } else { 0 };
        for k in 1..=options.vehicles.max(1) {
            let n = options.vehicles.max(1);
            let vehicle = suffixed(trip.vehicle.as_str(), k, n, VehicleId::parse)?;
            let trip_id = match &trip.trip_id {
                Some(id) => Some(suffixed(id.as_str(), k, n, TripId::parse)?),
                None if trip.track => Some(tripline_enrich::auto_trip_id(&vehicle, first + shift)),
                None => None,
            };
            vehicles.insert(vehicle.clone());
            trip_count += 1;
            let topic = format!("vehicles/{vehicle}/telemetry");
            let mut last_at = Duration::ZERO;
            let mut previous_ms = first;
            for chunk in trip.points.chunks(per_message) {
                let chunk_ms = chunk.iter().rev().find_map(|(ms, _)| *ms).unwrap_or(previous_ms);
                previous_ms = chunk_ms;
                let at = to_wall(delay + chunk_ms - first);
                last_at = at;
                let points: Vec<RawPoint> = chunk.iter().map(|(_, p)| shifted(p, shift)).collect();
                let payload = match &trip_id {
                    Some(id) => serde_json::json!({"trip_id": id, "points": points}),
                    None => serde_json::json!({"points": points}),
                };
                points_total += chunk.len();
                let payload = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
                let seq = messages.len();
                messages.push((at, seq, Message { at, topic: topic.clone(), payload, points: chunk.len() }));
            }
            if let Some(id) = &trip_id {
                let ts = to_datetime(last + shift).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let payload = serde_json::to_vec(&serde_json::json!({"trip_id": id, "event": "end", "ts": ts}))
                    .map_err(|e| e.to_string())?;
                let seq = messages.len();
                let topic = format!("vehicles/{vehicle}/trips");
                messages.push((last_at, seq, Message { at: last_at, topic, payload, points: 0 }));
            }
        }
    }
    messages.sort_by_key(|(at, seq, _)| (*at, *seq));
    Ok(Plan {
        messages: messages.into_iter().map(|(_, _, m)| m).collect(),
        trips: trip_count,
        vehicles: vehicles.len(),
        points: points_total,
    })
}

/// The broker to publish to: `--url`, else `[mqtt] url`, else the embedded endpoint's address.
fn broker(config: &Config, url: Option<&str>) -> Result<BrokerUrl, Failure> {
    match url.or(config.mqtt.url.as_deref()) {
        Some(url) => crate::config::mqtt_endpoint(url),
        None => {
            let listen = config.mqtt.listen.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 1883)));
            let host = if listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { listen.ip().to_string() };
            // The embedded endpoint serves TLS when it has a certificate.
            Ok(BrokerUrl { host, port: listen.port(), tls: config.mqtt.tls_cert_file.is_some() })
        }
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplayReport {
    pub(crate) published: usize,
    pub(crate) acknowledged: usize,
    pub(crate) points: usize,
    pub(crate) trips: usize,
    pub(crate) vehicles: usize,
}

/// Vehicle secrets (`--credentials`): vehicle id → secret. A vehicle without one connects
/// without credentials (which only a broker allowing anonymous clients accepts).
pub(crate) type Secrets = HashMap<String, String>;

/// Reads `vehicle_id,secret` rows (as `tripline fleet add|import|rotate-secret` print them).
pub(crate) fn read_secrets(path: &Path) -> Result<Secrets, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?.clone();
    let (Some(v), Some(s)) =
        (headers.iter().position(|h| h == "vehicle_id"), headers.iter().position(|h| h == "secret"))
    else {
        return Err(Failure::Usage(format!(
            "{}: the header must name the columns vehicle_id and secret",
            path.display()
        )));
    };
    let mut secrets = Secrets::new();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| Failure::Usage(format!("{}: line {}: {e}", path.display(), n + 2)))?;
        if let (Some(vehicle), Some(secret)) = (record.get(v), record.get(s)) {
            secrets.insert(vehicle.to_owned(), secret.to_owned());
        }
    }
    Ok(secrets)
}

/// Publishes `plan` to the broker at `host:port`, each vehicle on a connection of its own (as
/// vehicles connect, and as a broker enforcing per-vehicle topics requires) with its secret from
/// `secrets`; returns once every message is acknowledged (or a connection failed for good).
pub(crate) async fn publish(
    target: &Target,
    plan: Plan,
    bar: Option<&ProgressBar>,
    secrets: &Secrets,
) -> Result<ReplayReport, Failure> {
    let Plan { messages, trips, vehicles, points } = plan;
    let total = messages.len();
    let mut by_vehicle: Vec<(String, Vec<Message>)> = Vec::new();
    let mut index = HashMap::new();
    for message in messages {
        let vehicle = tripline_model::topic::Topic::parse(&message.topic)
            .map(|topic| topic.vehicle_id.as_str().to_owned())
            .unwrap_or_default();
        let n = *index.entry(vehicle.clone()).or_insert_with(|| {
            by_vehicle.push((vehicle, Vec::new()));
            by_vehicle.len() - 1
        });
        by_vehicle[n].1.push(message);
    }
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = by_vehicle
        .into_iter()
        .map(|(vehicle, messages)| {
            let connection = VehicleConnection {
                target: target.clone(),
                secret: secrets.get(&vehicle).cloned(),
                vehicle,
                bar: bar.cloned(),
            };
            tokio::spawn(connection.publish(messages, start))
        })
        .collect();
    let mut acknowledged = 0;
    for task in tasks {
        acknowledged += task.await.map_err(|e| Failure::Runtime(e.into()))??;
    }
    Ok(ReplayReport { published: total, acknowledged, points, trips, vehicles })
}

/// Where vehicles publish: a broker's address and, for `mqtts://`, the TLS to use.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<tripline_ingest::tls::ClientTls>,
}

impl Target {
    /// The target of `url`, trusting `[mqtt] tls_ca_file` when it is `mqtts://`.
    pub(crate) fn new(config: &Config, url: BrokerUrl) -> Result<Target, Failure> {
        let tls = if url.tls { Some(config.mqtt.client_tls(false).map_err(Failure::Usage)?) } else { None };
        Ok(Target { host: url.host, port: url.port, tls })
    }

    fn url(&self) -> String {
        format!("{}://{}:{}", if self.tls.is_some() { "mqtts" } else { "mqtt" }, self.host, self.port)
    }
}

/// One vehicle's connection.
struct VehicleConnection {
    target: Target,
    vehicle: String,
    secret: Option<String>,
    bar: Option<ProgressBar>,
}

impl VehicleConnection {
    /// Publishes `messages` at their times from `start`; returns how many were acknowledged.
    async fn publish(self, messages: Vec<Message>, start: tokio::time::Instant) -> Result<usize, Failure> {
        let VehicleConnection { target, vehicle, secret, bar } = self;
        let client_id = format!("tripline-replay-{}-{vehicle}", std::process::id());
        let mut options = MqttOptions::new(client_id, &target.host, target.port);
        if let Some(tls) = &target.tls {
            options
                .set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls.0.clone())));
        }
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        options.set_inflight(IN_FLIGHT);
        options.set_max_packet_size(512 * 1024, 512 * 1024);
        if let Some(secret) = &secret {
            options.set_credentials(&vehicle, secret);
        }
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(IN_FLIGHT));
        let total = messages.len();
        let publisher = tokio::spawn(async move {
            for message in messages {
                if !message.at.is_zero() {
                    tokio::time::sleep_until(start + message.at).await;
                }
                if client.publish(message.topic, QoS::AtLeastOnce, false, message.payload).await.is_err() {
                    return Err(());
                }
            }
            Ok(client)
        });
        let mut acknowledged = 0;
        let mut failures = 0u32;
        let mut publisher = Some(publisher);
        let mut client = None;
        while acknowledged < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acknowledged += 1;
                    failures = 0;
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    let hint = if secret.is_none() { " (give its secret with --credentials)" } else { "" };
                    return Err(Failure::Runtime(anyhow::anyhow!(
                        "broker {} refused vehicle {vehicle}: {code:?}{hint}",
                        target.url()
                    )));
                }
                Err(error) => {
                    failures += 1;
                    if failures > 10 {
                        return Err(Failure::Runtime(
                            anyhow::Error::new(error).context(format!("broker {}", target.url())),
                        ));
                    }
                    tracing::warn!(%error, %vehicle, "broker connection failed; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if publisher.as_ref().is_some_and(tokio::task::JoinHandle::is_finished)
                && let Some(task) = publisher.take()
            {
                // Keep the client alive until every acknowledgement is in.
                client = task.await.ok().and_then(Result::ok);
                if client.is_none() {
                    return Err(Failure::Runtime(anyhow::anyhow!("broker {}: publishing stopped", target.url())));
                }
            }
        }
        if let Some(client) = client {
            let _ = client.disconnect().await;
            // Let the DISCONNECT go out.
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        Ok(acknowledged)
    }
}

/// `tripline replay FILE…`.
pub(crate) fn run(config: &Config, files: &[PathBuf], options: &ReplayOptions) -> Result<(), Failure> {
    let (records, skipped) = crate::summarize::read_trip_files(files, options.gpx_vehicle.as_deref())?;
    crate::summarize::report_skipped(files, &skipped);
    let errors = skipped.len();
    let plan = plan(records, options, tripline_model::time::now_ms()).map_err(Failure::Usage)?;
    if plan.messages.is_empty() {
        return Err(Failure::Usage("nothing to replay: no readable points in the files".to_owned()));
    }
    let target = Target::new(config, broker(config, options.url.as_deref())?)?;
    let bar = ProgressBar::new(plan.messages.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} messages acknowledged  {per_sec}  {elapsed}")
    {
        bar.set_style(style);
    }
    let started = Instant::now();
    let secrets = options.credentials.as_deref().map(read_secrets).transpose()?.unwrap_or_default();
    let report = runtime()?.block_on(publish(&target, plan, Some(&bar), &secrets))?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "tripline: replayed {} trip(s) of {} vehicle(s) to {}: {} messages ({} points) published, {} acknowledged, in {seconds:.1} s ({:.0} points/s){}",
        report.trips,
        report.vehicles,
        target.url(),
        report.published,
        report.points,
        report.acknowledged,
        report.points as f64 / seconds.max(1e-3),
        if errors > 0 { format!("; {errors} unreadable record(s) skipped") } else { String::new() }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tripline_model::tripfile::{TripFileFormat, parse_trip_file};

    fn records(text: &str) -> Vec<FileRecord> {
        parse_trip_file(TripFileFormat::Csv, text, None).unwrap().records
    }

    const CSV: &str = "vehicle_id,trip_id,ts,lat,lon\n\
        car-1,t1,2026-11-20T08:00:10Z,52.0,13.0\n\
        car-1,t1,2026-11-20T08:00:00Z,52.0,13.0\n\
        car-1,t1,2026-11-20T08:00:20Z,52.0,13.001\n\
        car-2,,2026-11-20T09:00:00Z,52.0,13.0\n";

    #[test]
    fn trips_become_ordered_messages_with_end_markers() {
        let options = ReplayOptions { per_message: 2, ..ReplayOptions::default() };
        let plan = plan(records(CSV), &options, 0).unwrap();
        assert_eq!((plan.trips, plan.vehicles, plan.points), (2, 2, 4));
        let topics: Vec<&str> = plan.messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "vehicles/car-1/telemetry",
                "vehicles/car-1/telemetry",
                "vehicles/car-1/trips",
                "vehicles/car-2/telemetry"
            ]
        );
        let first: serde_json::Value = serde_json::from_slice(&plan.messages[0].payload).unwrap();
        assert_eq!(first["trip_id"], "t1");
        assert_eq!(first["points"][0]["ts"], "2026-11-20T08:00:00Z", "points in time order");
        let marker: serde_json::Value = serde_json::from_slice(&plan.messages[2].payload).unwrap();
        assert_eq!((marker["event"].as_str(), marker["ts"].as_str()), (Some("end"), Some("2026-11-20T08:00:20.000Z")));
        let untracked: serde_json::Value = serde_json::from_slice(&plan.messages[3].payload).unwrap();
        assert!(untracked.get("trip_id").is_none(), "no id: tripline cuts the trip");
    }

    #[test]
    fn clones_rebasing_and_pacing() {
        let now = parse_rfc3339_ms("2026-11-25T12:00:00Z").unwrap();
        let options =
            ReplayOptions { speed: Some(10.0), vehicles: 3, rebase_time: true, per_message: 1, ..Default::default() };
        let plan = plan(records(CSV), &options, now).unwrap();
        assert_eq!((plan.trips, plan.vehicles), (6, 6));
        assert!(plan.messages.iter().any(|m| m.topic == "vehicles/car-1-3/telemetry"));
        // The longest trip lasts 20 s: at speed 10 the replay takes 2 s, and every trip ends then.
        let end = now + 2000;
        let last = plan.messages.iter().rfind(|m| m.topic == "vehicles/car-1-2/telemetry").unwrap();
        let body: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!(parse_rfc3339_ms(body["points"][0]["ts"].as_str().unwrap()).unwrap(), end);
        assert_eq!(body["trip_id"], "t1-2");
        assert_eq!(last.at, Duration::from_secs(2));
        let single = plan.messages.iter().find(|m| m.topic == "vehicles/car-2-1/telemetry").unwrap();
        assert_eq!(single.at, Duration::from_secs(2), "a one-point trip ends with the others");
        assert!(plan.messages.windows(2).all(|w| w[0].at <= w[1].at), "in publishing order");
    }

    #[test]
    fn speeds_are_checked() {
        assert_eq!(parse_speed("max").unwrap(), Speed(None));
        assert_eq!(parse_speed("2.5").unwrap(), Speed(Some(2.5)));
        assert!(parse_speed("0").is_err() && parse_speed("fast").is_err() && parse_speed("-1").is_err());
    }
}
