//! The worker pool against the embedded store: durable before complete, idempotent, restartable.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tripline_enrich::sim::{Device, Leg, Start, simulate};
use tripline_enrich::{Enricher, TripEngine, TripReport, auto_trip_id};
use tripline_model::{Decoded, Point, RejectReason, Telemetry, TenantId, TripId, TripStatus, VehicleId};
use tripline_pipeline::{Completion, Work, Worker, WorkerConfig};
use tripline_store::{ChangeFeed, Checkpoint, EmbeddedStore, PointStore, Rejection, RejectionStore, TripStore};

/// 2026-11-25T10:00:00Z, a Wednesday morning (not night in UTC).
const T0_MS: i64 = 1_795_600_800_000;

fn trip(id: &str) -> TripId {
    TripId::parse(id).unwrap()
}

fn engine() -> Enricher {
    Enricher::for_test()
}

/// A drive outside every bundled region, sampled every `interval_s` with position noise.
fn drive(legs: &[Leg], interval_s: f64, gps_noise_m: f64, seed: u64) -> Vec<Point> {
    let device = Device { interval_s, gps_noise_m, reports_speed: true, reports_heading: true, first_seq: Some(1) };
    simulate(Start { lat: 45.0, lon: 10.0, heading_deg: 90.0, ts_ms: T0_MS }, legs, &device, seed)
}

/// The engine's report of `points` as one completed trip, offline.
fn report(points: Vec<Point>) -> TripReport {
    let mut trip = TripEngine::new(VehicleId::parse("car-1").unwrap(), self::trip("trip-1"));
    trip.add_points(points);
    trip.report(&engine(), TripStatus::Completed, Some(T0_MS)).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Completion) {
    let count = Arc::new(AtomicUsize::new(0));
    let make = {
        let count = Arc::clone(&count);
        move || -> Completion {
            let count = Arc::clone(&count);
            Box::new(move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
        }
    };
    (count, make)
}

fn telemetry(vehicle: &str, trip: Option<&str>, points: Vec<Point>) -> Telemetry {
    Telemetry {
        vehicle_id: VehicleId::parse(vehicle).unwrap(),
        trip_id: trip.map(|t| TripId::parse(t).unwrap()),
        points,
        rejected: Vec::new(),
        unknown_fields: 0,
        cleared_fields: 0,
    }
}

fn drive_points(seed: u64) -> Vec<Point> {
    let legs = [
        Leg::Speed { to_kmh: 50.0, rate_mps2: 2.0 },
        Leg::Cruise { duration_s: 120.0 },
        Leg::Speed { to_kmh: 0.0, rate_mps2: 2.0 },
    ];
    drive(&legs, 1.0, 2.0, seed)
}

fn worker(store: &EmbeddedStore) -> Worker<EmbeddedStore> {
    Worker::new(Arc::new(engine()), store.clone(), WorkerConfig::default())
}

async fn changes(store: &EmbeddedStore) -> usize {
    store.read_changes(&Checkpoint::default(), 10_000).await.unwrap().changes.len()
}

#[tokio::test]
async fn results_are_durable_before_completion_and_redelivery_changes_nothing() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (completed, done) = counter();
    let mut w = worker(&store);
    let points = drive_points(1);
    let messages: Vec<Vec<Point>> = points.chunks(20).map(<[Point]>::to_vec).collect();
    for message in &messages {
        w.process(vec![telemetry_work(telemetry("car-1", Some("trip-1"), message.clone()), done())]).await;
    }
    assert_eq!(completed.load(Ordering::SeqCst), messages.len());
    let stored = store.trip(&tenant(), &TripId::parse("trip-1").unwrap()).await.unwrap().unwrap();
    let offline = report(points.clone()).summary;
    assert_eq!(stored.summary.distance_km, offline.distance_km);
    assert_eq!(stored.summary.point_count, offline.point_count);
    assert_eq!(stored.summary.status, TripStatus::Active);
    let vehicle = VehicleId::parse("car-1").unwrap();
    let stored_points = store.vehicle_points(&vehicle, T0_MS - 60_000, T0_MS + 3_600_000).await.unwrap();
    assert_eq!(stored_points.len(), points.len());
    let announced = changes(&store).await;

    // The same messages again (a redelivery after a crash): nothing changes, not even a write.
    for message in &messages {
        w.process(vec![telemetry_work(telemetry("car-1", Some("trip-1"), message.clone()), done())]).await;
    }
    assert_eq!(completed.load(Ordering::SeqCst), 2 * messages.len());
    assert_eq!(store.trip(&tenant(), &TripId::parse("trip-1").unwrap()).await.unwrap().unwrap(), stored);
    assert_eq!(changes(&store).await, announced, "no trip rewritten");
}

#[tokio::test]
async fn a_long_trip_holds_few_points_and_a_late_point_rebuilds_it_from_the_store() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let mut w = worker(&store);
    // Three drives back to back: ~1,000 points of one trip, sent ten at a time.
    let mut points = Vec::new();
    for seed in 10..13u64 {
        let offset = points.last().map_or(0, |p: &Point| p.ts_ms - T0_MS + 1000);
        points.extend(drive_points(seed).into_iter().map(|mut p| {
            p.ts_ms += offset;
            p.seq = p.seq.map(|s| s + seed * 10_000);
            p
        }));
    }
    let late = points.remove(points.len() / 2);
    let send = |message: Vec<Point>| telemetry_work(telemetry("car-long", Some("trip-long"), message), done());
    for message in points.chunks(10) {
        w.process(vec![send(message.to_vec())]).await;
    }
    assert!(w.points_in_memory() < 150, "{} of {} points held", w.points_in_memory(), points.len());
    let trip_id = TripId::parse("trip-long").unwrap();
    let offline = |points: &[Point]| {
        let mut t = TripEngine::new(VehicleId::parse("car-long").unwrap(), trip_id.clone());
        t.add_points(points.to_vec());
        t.report(&engine(), TripStatus::Active, None).unwrap()
    };
    let stored = store.trip(&tenant(), &trip_id).await.unwrap().unwrap();
    let expected = offline(&points);
    assert_eq!(stored.summary.point_count, expected.summary.point_count);
    assert_eq!(stored.summary.distance_km, expected.summary.distance_km);
    assert_eq!(stored.events, expected.events, "a trimmed trip continues exactly as a full pass");

    // Early messages again (a redelivery): recognised without the points, nothing rewritten.
    let announced = changes(&store).await;
    for message in points.chunks(10).take(5) {
        w.process(vec![send(message.to_vec())]).await;
    }
    assert_eq!(changes(&store).await, announced, "no trip rewritten");

    // A point from the middle, late: the trip is rebuilt from the store and equals a full pass.
    w.process(vec![send(vec![late.clone()])]).await;
    let mut all = points.clone();
    all.push(late);
    let expected = offline(&all);
    let stored = store.trip(&tenant(), &trip_id).await.unwrap().unwrap();
    assert_eq!(stored.summary.point_count, expected.summary.point_count);
    assert_eq!(stored.summary.distance_km, expected.summary.distance_km);
    assert_eq!(stored.summary.score, expected.summary.score);
    assert_eq!(stored.events, expected.events);
    assert!(w.points_in_memory() < 150, "trimmed again after the rebuild: {}", w.points_in_memory());
}

#[tokio::test]
async fn a_restarted_worker_reopens_the_trip_from_the_store() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let points = drive_points(2);
    let (first, second) = points.split_at(points.len() / 2);
    worker(&store).process(vec![telemetry_work(telemetry("car-2", Some("trip-2"), first.to_vec()), done())]).await;
    // A new worker (a process restart): it knows nothing of trip-2 until a point arrives.
    let mut restarted = worker(&store);
    let mut late_and_rest: Vec<Point> = second.to_vec();
    late_and_rest.push(first[3].clone()); // a duplicate of a stored point
    restarted.process(vec![telemetry_work(telemetry("car-2", Some("trip-2"), late_and_rest), done())]).await;
    let stored = store.trip(&tenant(), &TripId::parse("trip-2").unwrap()).await.unwrap().unwrap();
    let mut offline = TripEngine::new(VehicleId::parse("car-2").unwrap(), TripId::parse("trip-2").unwrap());
    offline.add_points(points.clone());
    let offline = offline.report(&engine(), TripStatus::Active, None).unwrap().summary;
    assert_eq!(stored.summary.point_count, offline.point_count);
    assert_eq!(stored.summary.distance_km, offline.distance_km);
    assert_eq!(stored.summary.events, offline.events);
}

#[tokio::test]
async fn points_without_trip_ids_are_cut_and_an_earlier_point_renames_the_trip() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let mut w = worker(&store);
    let first = drive_points(3);
    let gap_ms = 15 * 60 * 1000;
    let second: Vec<Point> = drive_points(4)
        .into_iter()
        .map(|mut p| {
            p.ts_ms += first.last().unwrap().ts_ms - T0_MS + gap_ms;
            p.seq = p.seq.map(|s| s + 100_000);
            p
        })
        .collect();
    for chunk in first.chunks(25).chain(second.chunks(25)) {
        w.process(vec![telemetry_work(telemetry("car-3", None, chunk.to_vec()), done())]).await;
    }
    let vehicle = VehicleId::parse("car-3").unwrap();
    let first_id = auto_trip_id(&vehicle, first[0].ts_ms);
    let second_id = auto_trip_id(&vehicle, second[0].ts_ms);
    let a = store.trip(&tenant(), &first_id).await.unwrap().unwrap();
    let b = store.trip(&tenant(), &second_id).await.unwrap().unwrap();
    assert_eq!((a.summary.point_count as usize, a.summary.status), (first.len(), TripStatus::Completed));
    assert_eq!((b.summary.point_count as usize, b.summary.status), (second.len(), TripStatus::Active));

    // A late point two minutes before the first trip began: that trip now starts earlier, so its
    // derived id changes; the old id disappears.
    let mut early = first[0].clone();
    early.ts_ms -= 120_000;
    early.seq = Some(999_999);
    w.process(vec![telemetry_work(telemetry("car-3", None, vec![early.clone()]), done())]).await;
    assert!(store.trip(&tenant(), &first_id).await.unwrap().is_none());
    let renamed = store.trip(&tenant(), &auto_trip_id(&vehicle, early.ts_ms)).await.unwrap().unwrap();
    assert_eq!(renamed.summary.point_count as usize, first.len() + 1);
}

#[tokio::test]
async fn rejections_are_stored_and_their_messages_completed() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (completed, done) = counter();
    let payload = b"{not json".to_vec();
    let rejection = Rejection {
        id: Rejection::id_for("vehicles/car-9/telemetry", &payload, None),
        tenant: Some(tenant()),
        vehicle_id: Some(VehicleId::parse("car-9").unwrap()),
        received_at_ms: T0_MS,
        reason: RejectReason::MalformedJson,
        detail: "EOF".to_owned(),
        topic: "vehicles/car-9/telemetry".to_owned(),
        point_index: None,
        payload_size: payload.len() as u64,
        payload_sha256: String::new(),
        payload,
    };
    worker(&store).process(vec![Work::new(Decoded::Rejected(rejection.clone()), done())]).await;
    assert_eq!(completed.load(Ordering::SeqCst), 1);
    assert_eq!(store.rejections(Some(&tenant()), None, 10).await.unwrap().items, vec![rejection]);
}

#[tokio::test]
async fn an_end_marker_completes_the_trip() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let mut w = worker(&store);
    w.process(vec![telemetry_work(telemetry("car-5", Some("trip-5"), drive_points(5)), done())]).await;
    let marker = tripline_model::TripMarker {
        trip_id: TripId::parse("trip-5").unwrap(),
        event: tripline_model::MarkerEvent::End,
        ts_ms: T0_MS,
    };
    w.process(vec![Work::new(
        Decoded::Marker { tenant: tenant(), vehicle_id: VehicleId::parse("car-5").unwrap(), marker },
        done(),
    )])
    .await;
    let trip = store.trip(&tenant(), &TripId::parse("trip-5").unwrap()).await.unwrap().unwrap();
    assert_eq!(trip.summary.status, TripStatus::Completed);
}

#[tokio::test]
async fn a_flood_of_trip_ids_holds_no_more_than_the_live_trip_maximum() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(86_400)).unwrap();
    let config = WorkerConfig { max_live_trips: 10, ..WorkerConfig::default() };
    let mut w = Worker::new(Arc::new(engine()), store.clone(), config);
    let (completed, done) = counter();
    // End markers of 200 trips nobody drove, then a real trip: memory stays at the maximum.
    for batch in 0..20 {
        let markers = (0..10)
            .map(|n| {
                Work::new(
                    Decoded::Marker {
                        tenant: tenant(),
                        vehicle_id: VehicleId::parse("car-7").unwrap(),
                        marker: tripline_model::TripMarker {
                            trip_id: TripId::parse(&format!("random-{batch}-{n}")).unwrap(),
                            event: tripline_model::MarkerEvent::End,
                            ts_ms: T0_MS,
                        },
                    },
                    done(),
                )
            })
            .collect();
        w.process(markers).await;
        assert!(w.trips_in_memory() <= 10, "{} trips held", w.trips_in_memory());
    }
    w.process(vec![telemetry_work(telemetry("car-7", Some("real"), drive_points(5)), done())]).await;
    assert!(w.trips_in_memory() <= 10);
    assert_eq!(completed.load(Ordering::SeqCst), 201, "every message completed");
    let trip = store.trip(&tenant(), &TripId::parse("real").unwrap()).await.unwrap().unwrap();
    assert_eq!(trip.summary.point_count as usize, drive_points(5).len(), "the real trip is whole");
}

#[tokio::test]
async fn a_jump_is_a_stored_rejection_and_a_reopened_trip_counts_its_dropped_points_as_before() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let points = drive_points(8);
    let (first, second) = points.split_at(points.len() / 2);
    // Half a second after a point of the first half, 5 km away: an implausible jump.
    let jump = Point { seq: None, ts_ms: first[40].ts_ms + 500, lat: first[40].lat + 0.045, ..first[40].clone() };
    // A point the decoder dropped (its coordinates off the globe).
    let off_globe = tripline_model::RawPoint {
        ts: Some(tripline_model::time::format_rfc3339_ms(first[20].ts_ms + 250)),
        lat: Some(95.0),
        lon: Some(13.4),
        ..tripline_model::RawPoint::default()
    };
    let first_message = || {
        let mut t = telemetry("car-8", Some("trip-8"), [first, std::slice::from_ref(&jump)].concat());
        t.rejected = vec![tripline_model::PointRejection {
            index: 0,
            reason: RejectReason::InvalidCoordinates,
            detail: "latitude 95 is outside [-90, 90]".to_owned(),
            point: off_globe.clone(),
        }];
        telemetry_work(t, done())
    };
    worker(&store).process(vec![first_message()]).await;
    let trip_id = TripId::parse("trip-8").unwrap();
    let before = store.trip(&tenant(), &trip_id).await.unwrap().unwrap();
    assert_eq!(before.summary.rejected_point_count, 2, "the jump and the off-globe point");
    let jumps = |items: Vec<Rejection>| items.into_iter().filter(|r| r.reason == RejectReason::ImplausibleJump).count();
    let stored = store.rejections(Some(&tenant()), None, 100).await.unwrap().items;
    let rejection = stored.iter().find(|r| r.reason == RejectReason::ImplausibleJump).expect("the jump is stored");
    assert_eq!(rejection.vehicle_id, Some(VehicleId::parse("car-8").unwrap()));
    let kept: serde_json::Value = serde_json::from_slice(&rejection.payload).unwrap();
    assert_eq!(kept["lat"], serde_json::json!(jump.lat), "the dropped point is kept: {kept}");

    // A restarted worker: the trip reopens from the store with the second half.
    let mut restarted = worker(&store);
    restarted.process(vec![telemetry_work(telemetry("car-8", Some("trip-8"), second.to_vec()), done())]).await;
    let after = store.trip(&tenant(), &trip_id).await.unwrap().unwrap();
    assert_eq!(after.summary.rejected_point_count, 2, "the count survives the reopen");
    assert_eq!(after.summary.point_count as usize, points.len());
    // Another restart, and the first message redelivered: nothing is counted twice.
    worker(&store).process(vec![first_message()]).await;
    let redelivered = store.trip(&tenant(), &trip_id).await.unwrap().unwrap();
    assert_eq!(redelivered.summary, after.summary, "a redelivery changes nothing");
    let offline = report([points.clone(), vec![jump]].concat()).summary;
    assert_eq!(after.summary.distance_km, offline.distance_km, "the jump stays out of the distance");
    assert_eq!(jumps(store.rejections(Some(&tenant()), None, 100).await.unwrap().items), 1, "stored once");
}

#[tokio::test]
async fn a_batch_is_cut_at_its_byte_bound_and_every_message_is_written() {
    let batches_of = |max_batch_bytes: usize| async move {
        let (store, dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
        let (completed, done) = counter();
        let config = WorkerConfig { max_batch_bytes, ..WorkerConfig::default() };
        let (queue, received) = flume::bounded(64);
        let points = drive_points(9);
        let messages: Vec<&[Point]> = points.chunks(20).collect();
        for message in &messages {
            let telemetry = telemetry("car-9", Some("trip-9"), message.to_vec());
            queue.send(telemetry_work(telemetry, done())).unwrap();
        }
        drop(queue);
        Worker::new(Arc::new(engine()), store.clone(), config).run(received).await;
        assert_eq!(completed.load(Ordering::SeqCst), messages.len(), "every message completed");
        let trip = store.trip(&tenant(), &TripId::parse("trip-9").unwrap()).await.unwrap().unwrap();
        assert_eq!(trip.summary.point_count as usize, points.len(), "every point written");
        // Each batch writes the trip once.
        let batches = changes(&store).await;
        drop(dir);
        (batches, messages.len())
    };
    assert_eq!(batches_of(WorkerConfig::default().max_batch_bytes).await.0, 1, "all queued: one batch");
    let (batches, messages) = batches_of(1).await;
    assert_eq!(batches, messages, "each message over the bound: a batch each");
}

#[tokio::test]
async fn a_write_within_the_update_interval_is_told_once_the_interval_passes() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (completed, done) = counter();
    let every = std::time::Duration::from_millis(300);
    let config = WorkerConfig { trip_update_every: every, ..WorkerConfig::default() };
    let (queue, received) = flume::bounded(64);
    let running = tokio::spawn(Worker::new(Arc::new(engine()), store.clone(), config).run(received));
    let points = drive_points(10);
    let (first, rest) = points.split_at(20);
    let send = |part: &[Point]| {
        let telemetry = telemetry("car-10", Some("trip-10"), part.to_vec());
        queue.send(telemetry_work(telemetry, done())).unwrap();
    };
    send(first);
    while completed.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Right after the start: within the interval, this write tells nothing by itself.
    send(rest);
    let told = |store: EmbeddedStore| async move {
        let changes = store.read_changes(&Checkpoint::default(), 10_000).await.unwrap().changes;
        changes.iter().flat_map(|c| c.messages()).map(|m| (m.kind.as_str(), m.data)).collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let updated = loop {
        let told = told(store.clone()).await;
        if let Some((_, data)) = told.iter().find(|(kind, _)| *kind == "trip.updated") {
            break data.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no trip.updated after the interval: {told:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let tripline_model::PushData::Trip(summary) = updated else { panic!("an update tells the trip: {updated:?}") };
    assert_eq!(summary.point_count as usize, points.len(), "the update tells the last state");
    tokio::time::sleep(3 * every).await;
    let kinds: Vec<&str> = told(store.clone()).await.into_iter().map(|(kind, _)| kind).collect();
    assert_eq!(kinds, ["trip.started", "trip.updated"], "told once, nothing more owed");
    drop(queue);
    running.await.unwrap();
}

/// The drive of `seed`, an hour later than [`drive_points`] (a vehicle's next trip).
fn later_drive(seed: u64) -> Vec<Point> {
    let mut points = drive_points(seed);
    for p in &mut points {
        p.ts_ms += 3_600_000;
    }
    points
}

/// `telemetry` of acme's vehicle as one message, completed by `done`.
fn telemetry_work(telemetry: Telemetry, done: Completion) -> Work {
    Work::new(Decoded::Telemetry { tenant: tenant(), telemetry, rejections: Vec::new() }, done)
}

/// Trip `trip` of car-20 with `points`, as one message.
fn car_20(trip: &str, points: &[Point], done: &impl Fn() -> Completion) -> Vec<Work> {
    let telemetry = telemetry("car-20", Some(trip), points.to_vec());
    vec![telemetry_work(telemetry, done())]
}

/// What the engine makes of `points` all at once.
fn offline(trip: &str, points: &[Point], status: TripStatus) -> tripline_model::TripSummary {
    let mut offline = TripEngine::new(VehicleId::parse("car-20").unwrap(), TripId::parse(trip).unwrap());
    offline.add_points(points.to_vec());
    offline.report(&engine(), status, None).unwrap().summary
}

async fn assert_stored_as(store: &EmbeddedStore, trip: &str, points: &[Point], status: TripStatus) {
    let stored = store.trip(&tenant(), &TripId::parse(trip).unwrap()).await.unwrap().unwrap().summary;
    let expected = offline(trip, points, status);
    assert_eq!(
        (stored.status, stored.point_count, stored.distance_km, stored.events, stored.score),
        (expected.status, expected.point_count, expected.distance_km, expected.events, expected.score),
        "{trip}"
    );
    let vehicle = VehicleId::parse("car-20").unwrap();
    let read = store.vehicle_points(&vehicle, T0_MS - 1, T0_MS + 7_200_000).await.unwrap();
    let read = read.iter().filter(|p| p.trip_id.as_str() == trip).count();
    assert_eq!(read, points.len(), "{trip}: every point read back once");
}

#[tokio::test]
async fn a_trip_its_vehicle_moved_on_from_leaves_memory_and_a_late_message_reopens_it() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (completed, done) = counter();
    let config = WorkerConfig { park_after: std::time::Duration::ZERO, ..WorkerConfig::default() };
    let mut w = Worker::new(Arc::new(engine()), store.clone(), config);
    let (a, b) = (drive_points(20), later_drive(21));
    let (a_first, a_late) = a.split_at(a.len() - 5);
    w.process(car_20("trip-a", a_first, &done)).await;
    assert_eq!((w.trips_in_memory(), w.trips_parked()), (1, 0), "the vehicle's only trip stays");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    w.process(car_20("trip-b", &b, &done)).await;
    assert_eq!((w.trips_in_memory(), w.trips_parked()), (1, 1), "trip-a parked once trip-b came");
    // The rest of trip-a, and a point it had already: reopened from the store, nothing lost
    // or doubled; now trip-b is the one left behind.
    let mut late = a_late.to_vec();
    late.push(a_first[7].clone());
    w.process(car_20("trip-a", &late, &done)).await;
    assert_eq!((w.trips_in_memory(), w.trips_parked()), (1, 1));
    assert_eq!(completed.load(Ordering::SeqCst), 3);
    assert_stored_as(&store, "trip-a", &a, TripStatus::Active).await;
    assert_stored_as(&store, "trip-b", &b, TripStatus::Active).await;
}

#[tokio::test]
async fn a_parked_trip_is_completed_when_idle_as_if_it_had_stayed() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let idle = std::time::Duration::from_millis(300);
    let config = WorkerConfig { park_after: std::time::Duration::ZERO, idle_eviction: idle, ..WorkerConfig::default() };
    let mut w = Worker::new(Arc::new(engine()), store.clone(), config);
    let (a, b) = (drive_points(22), later_drive(23));
    w.process(car_20("trip-a", &a, &done)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    w.process(car_20("trip-b", &b, &done)).await;
    assert_eq!(w.trips_parked(), 1);
    tokio::time::sleep(idle + std::time::Duration::from_millis(50)).await;
    w.tidy().await;
    assert_eq!((w.trips_in_memory(), w.trips_parked()), (0, 0), "both completed and forgotten");
    assert_stored_as(&store, "trip-a", &a, TripStatus::Completed).await;
    assert_stored_as(&store, "trip-b", &b, TripStatus::Completed).await;
}

#[tokio::test]
async fn a_trip_parked_at_the_live_maximum_is_still_completed_when_idle() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (_, done) = counter();
    let idle = std::time::Duration::from_millis(300);
    // One live trip at most, and nothing parks on its own (the vehicles do not move on).
    let config = WorkerConfig {
        max_live_trips: 1,
        park_after: std::time::Duration::from_secs(3600),
        idle_eviction: idle,
        ..WorkerConfig::default()
    };
    let mut w = Worker::new(Arc::new(engine()), store.clone(), config);
    let a = drive_points(24);
    w.process(car_20("trip-a", &a, &done)).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let other = telemetry("car-21", Some("trip-c"), drive_points(25));
    w.process(vec![telemetry_work(other, done())]).await;
    assert_eq!((w.trips_in_memory(), w.trips_parked()), (1, 1), "the older trip left memory, parked");
    tokio::time::sleep(idle + std::time::Duration::from_millis(50)).await;
    w.tidy().await;
    assert_eq!((w.trips_in_memory(), w.trips_parked()), (0, 0));
    assert_stored_as(&store, "trip-a", &a, TripStatus::Completed).await;
}

#[tokio::test]
async fn many_parked_trips_due_at_once_are_all_told_and_completed_a_few_at_a_time() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let (completed, done) = counter();
    let config = WorkerConfig {
        trip_update_every: std::time::Duration::from_millis(300),
        park_after: std::time::Duration::ZERO,
        idle_eviction: std::time::Duration::from_secs(2),
        // A few trips a round.
        reopen_points: 500,
        ..WorkerConfig::default()
    };
    let (queue, received) = flume::bounded(1024);
    let running = tokio::spawn(Worker::new(Arc::new(engine()), store.clone(), config).run(received));
    // Many more parked trips than are reopened at once, each owing an update and then due for
    // completion.
    let vehicles = 101;
    let send = |i: usize, trip: &str, points: &[Point]| {
        let telemetry = telemetry(&format!("fleet-{i}"), Some(&format!("{trip}-{i}")), points.to_vec());
        queue.send(telemetry_work(telemetry, done())).unwrap();
    };
    let drives: Vec<Vec<Point>> = (0..vehicles).map(|i| drive_points(100 + i as u64)).collect();
    for (i, points) in drives.iter().enumerate() {
        send(i, "a", &points[..20]);
    }
    while completed.load(Ordering::SeqCst) < vehicles {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Within the update interval: each rest owes an update, and each vehicle moves on.
    for (i, points) in drives.iter().enumerate() {
        send(i, "a", &points[20..]);
        send(i, "b", &later_drive(100 + i as u64));
    }
    let status_of = |trip: String| {
        let store = store.clone();
        async move { store.trip(&tenant(), &TripId::parse(&trip).unwrap()).await.unwrap().map(|t| t.summary) }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let updated = loop {
        let changes = store.read_changes(&Checkpoint::default(), 100_000).await.unwrap().changes;
        let updated: std::collections::HashSet<String> = changes
            .iter()
            .flat_map(|c| c.messages())
            .filter(|m| m.kind.as_str() == "trip.updated")
            .filter_map(|m| match m.data {
                tripline_model::PushData::Trip(summary) => Some(summary),
                _ => None,
            })
            .filter(|s| s.trip_id.as_str().starts_with("a-"))
            .map(|s| (s.trip_id.as_str().to_owned(), s.point_count as usize))
            .filter(|(trip, count)| *count == drives[trip[2..].parse::<usize>().unwrap()].len())
            .map(|(trip, _)| trip)
            .collect();
        if updated.len() == vehicles || std::time::Instant::now() > deadline {
            break updated;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(updated.len(), vehicles, "every parked trip told its last state");
    loop {
        let mut open = Vec::new();
        for i in 0..vehicles {
            for trip in [format!("a-{i}"), format!("b-{i}")] {
                if status_of(trip.clone()).await.is_none_or(|s| s.status != TripStatus::Completed) {
                    open.push(trip);
                }
            }
        }
        if open.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not completed: {open:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let a0 = status_of("a-0".to_owned()).await.unwrap();
    assert_eq!(a0.point_count as usize, drives[0].len(), "completed with all its points");
    drop(queue);
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trips_left_open_by_a_stopped_process_are_completed_once_idle_by_the_next() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    // A process takes part of two trips and stops before they go idle (no end marker).
    let (completed, done) = counter();
    let (queue, received) = flume::bounded(16);
    let first = tokio::spawn(worker(&store).run(received));
    let drives: Vec<Vec<Point>> = (0..2).map(|i| drive_points(300 + i)).collect();
    for (i, points) in drives.iter().enumerate() {
        let telemetry = telemetry(&format!("left-{i}"), Some(&format!("open-{i}")), points[..40].to_vec());
        queue.send(telemetry_work(telemetry, done())).unwrap();
    }
    // And one that ended properly.
    queue.send(telemetry_work(telemetry("left-2", Some("ended"), drive_points(302)), done())).unwrap();
    queue.send(Work::new(end_marker("left-2", "ended"), done())).unwrap();
    while completed.load(Ordering::SeqCst) < 4 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    first.abort();
    let status = |trip: &'static str| {
        let store = store.clone();
        async move { store.trip(&tenant(), &TripId::parse(trip).unwrap()).await.unwrap().map(|t| t.summary) }
    };
    assert_eq!(status("open-0").await.unwrap().status, TripStatus::Active);
    let ended_before = status("ended").await.unwrap();

    // The next process never hears of them again: it finds them and completes them once idle.
    let config = WorkerConfig { idle_eviction: std::time::Duration::from_secs(1), ..WorkerConfig::default() };
    let pool = tripline_pipeline::Pool::start(2, &Arc::new(engine()), &store, &config);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (i, points) in drives.iter().enumerate() {
        let trip = ["open-0", "open-1"][i];
        let summary = loop {
            let summary = status(trip).await.unwrap();
            if summary.status == TripStatus::Completed || std::time::Instant::now() > deadline {
                break summary;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(summary.status, TripStatus::Completed, "{trip}");
        assert_eq!(summary.point_count as usize, 40, "{trip}: every stored point, once");
        assert_eq!(summary.end_time.timestamp_millis(), points[39].ts_ms, "{trip}");
    }
    assert_eq!(status("ended").await.unwrap(), ended_before, "a completed trip is left as it was");
    drop(pool.queues);
    for task in pool.tasks {
        task.await.unwrap();
    }
}

fn end_marker(vehicle: &str, trip: &str) -> Decoded {
    let marker = tripline_model::TripMarker {
        trip_id: TripId::parse(trip).unwrap(),
        event: tripline_model::MarkerEvent::End,
        ts_ms: T0_MS,
    };
    Decoded::Marker { tenant: tenant(), vehicle_id: VehicleId::parse(vehicle).unwrap(), marker }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_trip_another_process_keeps_writing_is_not_completed_until_idle() {
    let (store, _dir) = EmbeddedStore::for_test(std::time::Duration::from_secs(3600)).unwrap();
    let points = drive_points(310);
    // Another ingest process (default settings) holds the trip and keeps writing it.
    let (completed, done) = counter();
    let mut other = worker(&store);
    let send = |range: std::ops::Range<usize>| {
        telemetry_work(telemetry("shared-car", Some("shared-trip"), points[range].to_vec()), done())
    };
    other.process(vec![send(0..10)]).await;
    // This process starts, adopts the open trip, and would complete it after 1 s of quiet.
    let config = WorkerConfig { idle_eviction: std::time::Duration::from_secs(1), ..WorkerConfig::default() };
    let pool = tripline_pipeline::Pool::start(1, &Arc::new(engine()), &store, &config);
    let status = || {
        let store = store.clone();
        async move { store.trip(&tenant(), &TripId::parse("shared-trip").unwrap()).await.unwrap().unwrap().summary }
    };
    for part in 1..10 {
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        other.process(vec![send(part * 10..part * 10 + 10)]).await;
        assert_eq!(status().await.status, TripStatus::Active, "written 400 ms ago by the other process");
    }
    assert_eq!(completed.load(Ordering::SeqCst), 10);
    // Once the other process is quiet for longer, this one completes it, with every point.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let summary = loop {
        let summary = status().await;
        if summary.status == TripStatus::Completed || std::time::Instant::now() > deadline {
            break summary;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(summary.status, TripStatus::Completed);
    assert_eq!(summary.point_count, 100);
    let changes = store.read_changes(&Checkpoint::default(), 100_000).await.unwrap().changes;
    let told_completed =
        changes.iter().flat_map(|c| c.messages()).filter(|m| m.kind.as_str() == "trip.completed").count();
    assert_eq!(told_completed, 1, "completed once, at the end");
    drop(pool.queues);
    for task in pool.tasks {
        task.await.unwrap();
    }
}
