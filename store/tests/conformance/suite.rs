//! The conformance suite: what every backend must do, written once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tripline_model::{
    EventCounts, Notice, NoticeKind, Place, Point, RejectReason, TenantId, TripId, TripStatus, TripSummary, VehicleId,
};
use tripline_store::{
    Change, Checkpoint, DeliveryAttempt, DeliveryOutcome, Derived, KeptWrite, OutboxItem, Rejection, Store, StoreError,
    StoredPoint, TripKey, TripRecord, Webhook, WriteSet,
};

/// 2026-11-24T23:59:00Z: a minute before midnight, so trips cross a day boundary.
const T0: i64 = 1_795_564_740_000;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn vehicle(name: &str) -> VehicleId {
    VehicleId::parse(name).unwrap()
}

fn trip_id(name: &str) -> TripId {
    TripId::parse(name).unwrap()
}

fn point(v: &str, trip: &str, i: i64, seq: Option<u64>) -> StoredPoint {
    StoredPoint {
        vehicle_id: vehicle(v),
        trip_id: trip_id(trip),
        point: Point {
            seq,
            ts_ms: T0 + i * 1000,
            lat: 52.5 + i as f64 * 1e-4,
            lon: 13.4,
            speed_mps: Some(10.0 + i as f64 * 0.01),
            heading_deg: if i % 2 == 0 { Some(90.0) } else { None },
            accuracy_m: Some(4.5),
            alt_m: None,
            ignition: Some(true),
            odometer_m: Some(1000.0 + i as f64),
        },
        derived: Derived {
            distance_m: 11.1,
            speed_mps: 10.0,
            speed_derived: false,
            heading_deg: Some(90.0),
            accel_mps2: if i > 0 { Some(0.1) } else { None },
            lateral_accel_mps2: None,
            region: if i % 3 == 0 { Some("Berlin".to_owned()) } else { None },
            moving: true,
        },
    }
}

fn trip(t: &str, v: &str, id: &str, start_i: i64, end_i: i64) -> TripRecord {
    let at = |i: i64| tripline_model::time::to_datetime(T0 + i * 1000);
    TripRecord {
        tenant: tenant(t),
        summary: TripSummary {
            trip_id: trip_id(id),
            vehicle_id: vehicle(v),
            status: TripStatus::Active,
            start_time: at(start_i),
            end_time: at(end_i),
            duration_s: (end_i - start_i) as f64,
            moving_time_s: 0.0,
            idle_time_s: 0.0,
            distance_km: 1.5,
            max_speed_kmh: 50.0,
            avg_speed_kmh: 30.0,
            start: Place { lat: 52.5, lon: 13.4, region: Some("Berlin".to_owned()) },
            end: Place { lat: 52.6, lon: 13.4, region: None },
            regions: vec!["Berlin".to_owned()],
            events: EventCounts { harsh_braking: 1, ..EventCounts::default() },
            speeding_s: 0.0,
            night_driving_s: 0.0,
            point_count: (end_i - start_i + 1) as u64,
            rejected_point_count: 0,
            score: 88.5,
            score_version: 1,
            updated_at: at(end_i),
        },
        events: Vec::new(),
        cells: vec!["u33dc0".to_owned()],
        dropped: Default::default(),
    }
}

fn rejection(t: Option<&str>, n: u32, at_ms: i64) -> Rejection {
    let payload = format!("{{\"broken\": {n}").into_bytes();
    let topic = "vehicles/car-1/telemetry";
    Rejection {
        id: Rejection::id_for(topic, &payload, None),
        tenant: t.map(tenant),
        vehicle_id: Some(vehicle("car-1")),
        received_at_ms: at_ms,
        reason: RejectReason::MalformedJson,
        detail: "EOF while parsing".to_owned(),
        topic: topic.to_owned(),
        point_index: None,
        payload_size: payload.len() as u64,
        payload_sha256: String::new(),
        payload,
    }
}

async fn all_changes<S: Store>(store: &S, from: &Checkpoint, limit: usize) -> (Vec<String>, Checkpoint) {
    let mut checkpoint = from.clone();
    let mut seen = Vec::new();
    loop {
        let batch = store.read_changes(&checkpoint, limit).await.unwrap();
        if batch.changes.is_empty() {
            return (seen, checkpoint);
        }
        assert!(batch.checkpoint.covers(&checkpoint), "checkpoints only move forward");
        seen.extend(batch.changes.iter().map(|c| c.trip_id.as_str().to_owned()));
        checkpoint = batch.checkpoint;
    }
}

pub(crate) async fn rewrites_are_idempotent<S: Store>(store: &S) {
    let points: Vec<StoredPoint> = (0..20).map(|i| point("car-1", "t1", i, Some(i as u64))).collect();
    let record = trip("acme", "car-1", "t1", 0, 19);
    let rejected = rejection(Some("acme"), 1, T0);
    for round in 0..2 {
        store.write_points(&points).await.unwrap();
        store.upsert_trips(std::slice::from_ref(&record)).await.unwrap();
        let mut later = rejected.clone();
        later.received_at_ms += round * 60_000; // a redelivery arrives later
        store.append_rejections(&[later]).await.unwrap();
    }
    let stored = store.vehicle_points(&vehicle("car-1"), T0, T0 + 3_600_000).await.unwrap();
    assert_eq!(stored, points);
    assert_eq!(store.trip(&tenant("acme"), &trip_id("t1")).await.unwrap(), Some(record));
    let listed = store.rejections(Some(&tenant("acme")), None, 10).await.unwrap();
    assert_eq!(listed.items, vec![rejected], "one rejection, with its first arrival time");
}

pub(crate) async fn points_round_trip_in_time_order_across_days<S: Store>(store: &S) {
    // Around midnight (T0 + 60 s), with and without seq, written in reverse.
    let mut points: Vec<StoredPoint> =
        (0..120).map(|i| point("car-2", "t2", i, if i % 2 == 0 { Some(i as u64) } else { None })).collect();
    points.reverse();
    store.write_points(&points).await.unwrap();
    points.reverse();
    let stored = store.vehicle_points(&vehicle("car-2"), T0, T0 + 120_000).await.unwrap();
    assert_eq!(stored, points);
    let window = store.vehicle_points(&vehicle("car-2"), T0 + 50_000, T0 + 70_000).await.unwrap();
    assert_eq!(window.len(), 20);
    assert!(window.iter().all(|p| (T0 + 50_000..T0 + 70_000).contains(&p.point.ts_ms)));
    assert!(store.vehicle_points(&vehicle("car-3"), T0, T0 + 120_000).await.unwrap().is_empty());
    let too_wide = store.vehicle_points(&vehicle("car-2"), T0, T0 + 40 * tripline_store::DAY_MS).await;
    assert!(matches!(too_wide, Err(StoreError::Refused { .. })), "reads are bounded to a month of partitions");
}

pub(crate) async fn another_tenant_sees_nothing<S: Store>(store: &S) {
    store.write_points(&(0..5).map(|i| point("car-a", "ta", i, Some(i as u64))).collect::<Vec<_>>()).await.unwrap();
    store.upsert_trips(&[trip("tenant-a", "car-a", "ta", 0, 4)]).await.unwrap();
    store.append_rejections(&[rejection(Some("tenant-a"), 2, T0)]).await.unwrap();
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    assert!(store.trip(&a, &trip_id("ta")).await.unwrap().is_some());
    assert!(store.trip(&b, &trip_id("ta")).await.unwrap().is_none());
    assert!(store.trip_points(&b, &trip_id("ta"), None, 10).await.unwrap().is_none());
    assert_eq!(store.trip_points(&a, &trip_id("ta"), None, 10).await.unwrap().unwrap().items.len(), 5);
    assert!(store.rejections(Some(&b), None, 10).await.unwrap().items.is_empty());
    assert!(store.rejections(None, None, 10).await.unwrap().items.is_empty(), "owned rejections are not unowned");
}

pub(crate) async fn cursors_return_every_row_exactly_once<S: Store>(store: &S) {
    // Points of two trips interleave in one vehicle's time line; only t3's come back.
    let points: Vec<StoredPoint> =
        (0..50).map(|i| point("car-4", if i % 5 == 0 { "other" } else { "t3" }, i, Some(i as u64))).collect();
    store.write_points(&points).await.unwrap();
    store.upsert_trips(&[trip("acme", "car-4", "t3", 0, 49)]).await.unwrap();
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = store.trip_points(&tenant("acme"), &trip_id("t3"), cursor.as_deref(), 7).await.unwrap().unwrap();
        assert!(page.items.len() <= 7);
        seen.extend(page.items.iter().map(|p| p.point.seq.unwrap()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<u64> = (0..50).filter(|i| i % 5 != 0).collect();
    assert_eq!(seen, expected);

    for n in 0..10 {
        store.append_rejections(&[rejection(Some("acme"), 100 + n, T0 + i64::from(n) * 1000)]).await.unwrap();
    }
    let mut cursor: Option<String> = None;
    let mut times = Vec::new();
    loop {
        let page = store.rejections(Some(&tenant("acme")), cursor.as_deref(), 3).await.unwrap();
        times.extend(page.items.iter().map(|r| r.received_at_ms));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<i64> = (0..10).rev().map(|n| T0 + n * 1000).collect();
    assert_eq!(times, expected, "newest first, each once");

    // Many in the same millisecond (a flood), of a tenant and of no tenant: each page goes on
    // exactly where the last stopped.
    for owner in [Some("acme"), None] {
        let batch: Vec<Rejection> = (0..25).map(|n| rejection(owner, 500 + n, T0 + 50_000)).collect();
        store.append_rejections(&batch).await.unwrap();
        let owner = owner.map(tenant);
        let mut cursor: Option<String> = None;
        let mut ids = Vec::new();
        loop {
            let page = store.rejections(owner.as_ref(), cursor.as_deref(), 4).await.unwrap();
            ids.extend(page.items.iter().filter(|r| r.received_at_ms == T0 + 50_000).map(|r| r.id.clone()));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!((ids.len(), unique.len()), (25, 25), "{owner:?}: each of the same millisecond once");
    }

    let trips: Vec<TripRecord> = (0..5).map(|n| trip("acme", &format!("car-s{n}"), &format!("s{n}"), 0, 10)).collect();
    store.upsert_trips(&trips).await.unwrap();
    let mut cursor: Option<String> = None;
    let mut ids = BTreeSet::new();
    let mut total = 0;
    loop {
        let page = store.scan_trips(cursor.as_deref(), 2).await.unwrap();
        total += page.items.len();
        ids.extend(page.items.iter().map(|t| t.summary.trip_id.as_str().to_owned()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(total, 6, "t3 and s0..s4, each once");
    assert_eq!(ids.len(), 6);
}

pub(crate) async fn change_feed_resumes_exactly_from_a_checkpoint<S: Store>(store: &S) {
    let (before, start) = all_changes(store, &Checkpoint::default(), 100).await;
    assert!(before.is_empty());
    for chunk in 0..6 {
        let trips: Vec<TripRecord> =
            (0..5).map(|n| trip("acme", "car-f", &format!("f{}", chunk * 5 + n), 0, 1)).collect();
        store.upsert_trips(&trips).await.unwrap();
    }
    let expected: Vec<String> = (0..30).map(|n| format!("f{n}")).collect();
    let (seen, end) = all_changes(store, &start, 7).await;
    assert_eq!(seen, expected, "in order, each once");
    assert!(store.read_changes(&end, 100).await.unwrap().changes.is_empty());
    // Resume from the middle: exactly the rest.
    let first = store.read_changes(&start, 12).await.unwrap();
    assert_eq!(first.changes.len(), 12);
    let (rest, _) = all_changes(store, &first.checkpoint, 5).await;
    assert_eq!(rest, expected[12..].to_vec());
    // The checkpoint survives a round trip through JSON (the indexer's commit payload).
    let json = serde_json::to_string(&first.checkpoint).unwrap();
    assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), first.checkpoint);
    // The head is where a reader that has seen everything stands; what comes after it is new.
    let head = store.feed_head().await.unwrap();
    assert!(head.covers(&end) && end.covers(&head), "head {head:?} is the end of the feed {end:?}");
    store.upsert_trips(&[trip("acme", "car-f", "f30", 0, 1)]).await.unwrap();
    let (after, _) = all_changes(store, &head, 100).await;
    assert_eq!(after, vec!["f30".to_owned()]);
}

pub(crate) async fn concurrent_writers_lose_nothing<S: Store>(store: &S) {
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let v = format!("car-c{w}");
            for chunk in 0..5 {
                let points: Vec<StoredPoint> =
                    (chunk * 40..(chunk + 1) * 40).map(|i| point(&v, &format!("c{w}"), i, Some(i as u64))).collect();
                store.write_points(&points).await.unwrap();
                store.upsert_trips(&[trip("acme", &v, &format!("c{w}"), 0, (chunk + 1) * 40 - 1)]).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for w in 0..8 {
        let stored = store.vehicle_points(&vehicle(&format!("car-c{w}")), T0, T0 + 3_600_000).await.unwrap();
        assert_eq!(stored.len(), 200, "writer {w}");
        let t = store.trip(&tenant("acme"), &trip_id(&format!("c{w}"))).await.unwrap().unwrap();
        assert_eq!(t.summary.point_count, 200, "the last upsert of each trip wins");
    }
    let (changes, _) = all_changes(store, &Checkpoint::default(), 13).await;
    let mut per_trip: BTreeMap<String, usize> = BTreeMap::new();
    for id in changes {
        *per_trip.entry(id).or_default() += 1;
    }
    assert_eq!(per_trip.len(), 8);
    assert!(per_trip.values().all(|n| *n == 5), "every upsert announced: {per_trip:?}");
}

pub(crate) async fn registry_rules_hold<S: Store>(store: &S) {
    let (acme, other) = (tenant("acme"), tenant("other"));
    store.create_tenant(&acme, "hash-acme").await.unwrap();
    assert!(matches!(store.create_tenant(&acme, "hash-2").await, Err(StoreError::TenantExists { .. })));
    assert_eq!(store.tenant_for_key("hash-acme").await.unwrap(), Some(acme.clone()));
    assert_eq!(store.tenant_for_key("hash-2").await.unwrap(), None, "a refused tenant's key is not registered");
    assert!(store.tenant_exists(&acme).await.unwrap());
    assert!(!store.tenant_exists(&other).await.unwrap());
    assert!(matches!(store.add_vehicles(&other, &[vehicle("v1")]).await, Err(StoreError::UnknownTenant { .. })));
    store.add_vehicles(&acme, &[vehicle("v1"), vehicle("v2")]).await.unwrap();
    store.add_vehicles(&acme, &[vehicle("v1")]).await.unwrap();
    assert_eq!(store.vehicle_tenant(&vehicle("v1")).await.unwrap(), Some(acme.clone()));
    assert_eq!(store.vehicle_tenant(&vehicle("v9")).await.unwrap(), None);
    store.create_tenant(&other, "hash-other").await.unwrap();
    assert!(matches!(store.add_vehicles(&other, &[vehicle("v2")]).await, Err(StoreError::VehicleOwned { .. })));
    assert_eq!(store.vehicle_tenant(&vehicle("v2")).await.unwrap(), Some(acme.clone()));
    // Two tenants registering one new vehicle at once: one wins, the other is told the owner.
    for n in 0..5 {
        let contested = vehicle(&format!("contested-{n}"));
        let (first, second) = tokio::join!(
            store.add_vehicles(&acme, std::slice::from_ref(&contested)),
            store.add_vehicles(&other, std::slice::from_ref(&contested))
        );
        let owner = store.vehicle_tenant(&contested).await.unwrap().unwrap();
        let (won, lost) = if owner == acme { (first, second) } else { (second, first) };
        won.unwrap();
        assert!(matches!(lost, Err(StoreError::VehicleOwned { owner: ref o, .. }) if *o == owner), "{lost:?}");
    }

    // API keys: replaced, the old one resolves to nothing; removed; unknown tenants refused.
    assert_eq!(store.replace_api_key(&acme, Some("hash-acme-2")).await.unwrap().as_deref(), Some("hash-acme"));
    assert_eq!(store.tenant_for_key("hash-acme").await.unwrap(), None);
    assert_eq!(store.tenant_for_key("hash-acme-2").await.unwrap(), Some(acme.clone()));
    assert_eq!(store.replace_api_key(&acme, None).await.unwrap().as_deref(), Some("hash-acme-2"));
    assert_eq!(store.tenant_for_key("hash-acme-2").await.unwrap(), None);
    assert_eq!(store.replace_api_key(&acme, Some("hash-acme-3")).await.unwrap(), None);
    assert_eq!(store.tenant_for_key("hash-acme-3").await.unwrap(), Some(acme.clone()));
    assert!(matches!(store.replace_api_key(&tenant("nobody"), Some("x")).await, Err(StoreError::UnknownTenant { .. })));

    // Secrets: set, replaced, removed; only for registered vehicles, all or nothing.
    assert_eq!(store.vehicle_secret(&vehicle("v1")).await.unwrap(), None);
    store
        .set_vehicle_secrets(&[(vehicle("v1"), Some("h1".to_owned())), (vehicle("v2"), Some("h2".to_owned()))])
        .await
        .unwrap();
    assert_eq!(store.vehicle_secret(&vehicle("v1")).await.unwrap().as_deref(), Some("h1"));
    store.set_vehicle_secrets(&[(vehicle("v1"), Some("h1b".to_owned()))]).await.unwrap();
    assert_eq!(store.vehicle_secret(&vehicle("v1")).await.unwrap().as_deref(), Some("h1b"));
    store.set_vehicle_secrets(&[(vehicle("v2"), None)]).await.unwrap();
    assert_eq!(store.vehicle_secret(&vehicle("v2")).await.unwrap(), None);
    let refused = store
        .set_vehicle_secrets(&[(vehicle("v1"), Some("h1c".to_owned())), (vehicle("v9"), Some("x".to_owned()))])
        .await;
    assert!(matches!(refused, Err(StoreError::UnknownVehicle { .. })), "{refused:?}");
    assert_eq!(store.vehicle_secret(&vehicle("v1")).await.unwrap().as_deref(), Some("h1b"), "nothing set");
    let all = store.all_vehicle_secrets().await.unwrap();
    assert_eq!(all, vec![(vehicle("v1"), "h1b".to_owned())], "v2's was removed");
}

pub(crate) async fn deleted_trips_are_gone_and_announced<S: Store>(store: &S) {
    store.upsert_trips(&[trip("acme", "car-d", "d1", 0, 5)]).await.unwrap();
    let (_, after_upsert) = all_changes(store, &Checkpoint::default(), 100).await;
    store.delete_trip(&tenant("acme"), &vehicle("car-d"), &trip_id("d1")).await.unwrap();
    assert!(store.trip(&tenant("acme"), &trip_id("d1")).await.unwrap().is_none());
    assert!(store.trip_of_vehicle(&tenant("acme"), &vehicle("car-d"), &trip_id("d1")).await.unwrap().is_none());
    let (changes, _) = all_changes(store, &after_upsert, 100).await;
    assert_eq!(changes, vec!["d1".to_owned()]);
}

/// Every open trip's id, read through pages of `limit`.
pub(crate) async fn open_trip_ids<S: Store>(store: &S, limit: usize) -> Vec<String> {
    let (mut cursor, mut ids) = (None::<String>, Vec::new());
    loop {
        let page = store.scan_open_trips(cursor.as_deref(), limit).await.unwrap();
        assert!(page.items.len() <= limit);
        ids.extend(page.items.iter().map(|t| {
            assert_eq!(t.summary.status, TripStatus::Active);
            t.summary.trip_id.as_str().to_owned()
        }));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.sort();
    ids
}

pub(crate) async fn open_trips_are_listed_until_completed_or_deleted<S: Store>(store: &S) {
    let completed = |t: &str, v: &str, id: &str| {
        let mut record = trip(t, v, id, 0, 5);
        record.summary.status = TripStatus::Completed;
        record
    };
    let open: Vec<TripRecord> =
        (0..7).map(|i| trip(["acme", "globex"][i % 2], &format!("car-o{i}"), &format!("o{i}"), 0, 5)).collect();
    store.upsert_trips(&open).await.unwrap();
    store.upsert_trips(&[completed("acme", "car-c", "c1")]).await.unwrap();
    // Rewritten while live (the same mark), as a worker does on every write set.
    store.upsert_trips(&open[..2]).await.unwrap();
    let all: Vec<String> = (0..7).map(|i| format!("o{i}")).collect();
    assert_eq!(open_trip_ids(store, 2).await, all, "each open trip once, through pages of two");
    assert_eq!(open_trip_ids(store, 100).await, all);

    // Completed in a write set, deleted (a renamed cut), completed alone.
    let set = WriteSet { trips: vec![completed("acme", "car-o0", "o0")], ..WriteSet::default() };
    store.write_batch(&set).await.unwrap();
    let set = WriteSet { deletes: vec![TripKey::of(&open[1])], ..WriteSet::default() };
    store.write_batch(&set).await.unwrap();
    store.upsert_trips(&[completed("acme", "car-o2", "o2")]).await.unwrap();
    assert_eq!(open_trip_ids(store, 3).await, all[3..].to_vec());

    // A late point reopens a completed trip: listed again.
    store.upsert_trips(&open[..1]).await.unwrap();
    let mut reopened = all[3..].to_vec();
    reopened.insert(0, "o0".to_owned());
    assert_eq!(open_trip_ids(store, 3).await, reopened);
    assert!(matches!(store.scan_open_trips(Some("xyz"), 5).await, Err(StoreError::BadCursor)));
}

pub(crate) async fn foreign_cursors_are_refused<S: Store>(store: &S) {
    store.upsert_trips(&[trip("acme", "car-x", "x1", 0, 5)]).await.unwrap();
    assert!(matches!(
        store.trip_points(&tenant("acme"), &trip_id("x1"), Some("nonsense"), 5).await,
        Err(StoreError::BadCursor)
    ));
    assert!(matches!(store.rejections(Some(&tenant("acme")), Some("1.not-hex"), 5).await, Err(StoreError::BadCursor)));
    assert!(matches!(store.scan_trips(Some("xyz"), 5).await, Err(StoreError::BadCursor)));
}

pub(crate) async fn retention_expires_records<S: Store>(store: &S) {
    let points: Vec<StoredPoint> = (0..3).map(|i| point("car-r", "r1", i, Some(i as u64))).collect();
    store.write_points(&points).await.unwrap();
    store.upsert_trips(&[trip("acme", "car-r", "r1", 0, 2)]).await.unwrap();
    store.append_rejections(&[rejection(Some("acme"), 7, T0)]).await.unwrap();
    assert_eq!(store.vehicle_points(&vehicle("car-r"), T0, T0 + 60_000).await.unwrap().len(), 3);
    assert!(store.trip(&tenant("acme"), &trip_id("r1")).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(store.vehicle_points(&vehicle("car-r"), T0, T0 + 60_000).await.unwrap().is_empty());
    assert!(store.trip(&tenant("acme"), &trip_id("r1")).await.unwrap().is_none());
    assert!(store.rejections(Some(&tenant("acme")), None, 10).await.unwrap().items.is_empty());
}

/// For a store keeping points and trips an hour and rejections 2 s.
pub(crate) async fn rejections_expire_after_their_own_retention<S: Store>(store: &S) {
    store.upsert_trips(&[trip("acme", "car-q", "q1", 0, 2)]).await.unwrap();
    let rejected = rejection(Some("acme"), 8, T0);
    // A message and its redelivery in one write: one rejection, at the first receipt.
    let redelivered = Rejection { received_at_ms: rejected.received_at_ms + 5, ..rejected.clone() };
    let set = WriteSet { rejections: vec![redelivered, rejected.clone()], ..WriteSet::default() };
    store.write_batch(&set).await.unwrap();
    let listed = store.rejections(Some(&tenant("acme")), None, 10).await.unwrap().items;
    assert_eq!(listed.iter().map(|r| r.received_at_ms).collect::<Vec<_>>(), [rejected.received_at_ms]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(store.rejections(Some(&tenant("acme")), None, 10).await.unwrap().items.is_empty());
    assert!(store.trip(&tenant("acme"), &trip_id("q1")).await.unwrap().is_some(), "the trip is kept longer");
}

pub(crate) async fn several_writers_are_merged<S: Store>(first: &S, second: &S) {
    for n in 0..10 {
        let store = if n % 2 == 0 { first } else { second };
        store.upsert_trips(&[trip("acme", "car-m", &format!("m{n}"), 0, 1)]).await.unwrap();
    }
    let (changes, checkpoint) = all_changes(first, &Checkpoint::default(), 3).await;
    let ids: BTreeSet<String> = changes.into_iter().collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(checkpoint.positions.len(), 2, "one position per writer");
    first.keep_written();
    first.upsert_trips(&[trip("acme", "car-m", "m0", 0, 2)]).await.unwrap();
    let (last, _) = entries(second, &checkpoint).await;
    assert_eq!(second.take_written(&last[0].key(), &last[0].writer, last[0].seq), None, "written by the other");
    assert!(first.take_written(&last[0].key(), &last[0].writer, last[0].seq).is_some());

    // The first now reads its own entries from memory, the second's from the cluster: both
    // readers see the same feed, from the start (entries written before keeping included) and
    // from the checkpoint, a few entries at a time.
    let signal = first.feed_signal().unwrap();
    for n in 10..20 {
        let store = if n % 3 == 0 { second } else { first };
        store.upsert_trips(&[trip("acme", "car-m", &format!("m{n}"), 0, 1)]).await.unwrap();
    }
    assert!(signal.has_changed().unwrap(), "the first's writes are signalled");
    for from in [Checkpoint::default(), checkpoint] {
        let (mut mine, at_first) = all_changes(first, &from, 2).await;
        let (mut theirs, at_second) = all_changes(second, &from, 2).await;
        assert_eq!(at_first, at_second);
        assert_eq!(mine.len(), theirs.len(), "each entry once");
        mine.sort();
        theirs.sort();
        assert_eq!(mine, theirs);
    }
}

pub(crate) async fn a_write_set_lands_whole_with_its_trips_announced<S: Store>(store: &S) {
    store.upsert_trips(&[trip("acme", "car-w", "old", 0, 5)]).await.unwrap();
    let (_, start) = all_changes(store, &Checkpoint::default(), 100).await;
    let set = WriteSet {
        points: (0..5).map(|i| point("car-w", "w1", i, Some(i as u64))).collect(),
        rejections: vec![rejection(Some("acme"), 7, 1_000)],
        deletes: vec![TripKey::new(&tenant("acme"), &vehicle("car-w"), &trip_id("old"))],
        trips: vec![trip("acme", "car-w", "w1", 0, 4)],
        notices: [(
            TripKey::new(&tenant("acme"), &vehicle("car-w"), &trip_id("w1")),
            vec![Notice::Started, Notice::Completed],
        )]
        .into(),
    };
    let before = tripline_model::time::now_ms();
    store.write_batch(&set).await.unwrap();
    store.write_batch(&set).await.unwrap(); // idempotent
    let points = store.vehicle_points(&vehicle("car-w"), T0 - 1000, T0 + 60_000).await.unwrap();
    assert_eq!(points.len(), 5);
    assert!(store.trip(&tenant("acme"), &trip_id("w1")).await.unwrap().is_some());
    assert!(store.trip(&tenant("acme"), &trip_id("old")).await.unwrap().is_none());
    let rejections = store.rejections(Some(&tenant("acme")), None, 10).await.unwrap();
    assert_eq!(rejections.items.len(), 1);
    let (changes, _) = all_changes(store, &start, 100).await;
    assert_eq!(changes, vec!["old", "w1", "old", "w1"], "the deletion and the trip announced, per write");
    // Each trip entry tells what its write told, with the trip as written and the write's time;
    // a deletion tells nothing.
    let (read, _) = entries(store, &start).await;
    let told: Vec<Vec<&str>> = read.iter().map(|c| c.messages().iter().map(|m| m.kind.as_str()).collect()).collect();
    assert_eq!(told, [vec![], vec!["trip.started", "trip.completed"], vec![], vec!["trip.started", "trip.completed"]]);
    assert!(read.iter().all(|c| c.at_ms >= before && c.at_ms <= tripline_model::time::now_ms()));
    let written = read[1].notices.as_ref().unwrap();
    assert_eq!(written.trip, set.trips[0].summary);
    let (first, again) = (read[1].messages(), read[3].messages());
    assert_eq!(first[0].id, again[0].id, "a rewrite tells the same message ids");
}

/// The feed entries after `from`, each with its writer and sequence number.
async fn entries<S: Store>(store: &S, from: &Checkpoint) -> (Vec<Change>, Checkpoint) {
    let batch = store.read_changes(from, 100).await.unwrap();
    for change in &batch.changes {
        assert!(!change.writer.is_empty() && change.seq > 0, "every entry says where it is: {change:?}");
        assert!(batch.checkpoint.position(&change.writer) >= change.seq);
    }
    (batch.changes, batch.checkpoint)
}

pub(crate) async fn written_trips_are_handed_over_once_for_their_own_entry<S: Store>(store: &S) {
    let first = trip("acme", "car-k", "k1", 0, 3);
    store.upsert_trips(std::slice::from_ref(&first)).await.unwrap();
    let (before, start) = entries(store, &Checkpoint::default()).await;
    let key = before[0].key();
    assert_eq!(store.take_written(&key, &before[0].writer, before[0].seq), None, "nothing kept until asked");

    store.keep_written();
    let second = trip("acme", "car-k", "k1", 0, 4);
    store.upsert_trips(std::slice::from_ref(&second)).await.unwrap();
    let set = WriteSet {
        deletes: vec![TripKey::new(&tenant("acme"), &vehicle("car-k"), &trip_id("k0"))],
        trips: vec![trip("acme", "car-k", "k2", 5, 6)],
        ..WriteSet::default()
    };
    store.write_batch(&set).await.unwrap();
    let (changes, _) = entries(store, &start).await;
    let ids: Vec<&str> = changes.iter().map(|c| c.trip_id.as_str()).collect();
    assert_eq!(ids, ["k1", "k0", "k2"]);
    let (k1, k0, k2) = (&changes[0], &changes[1], &changes[2]);
    assert!(k1.seq < k0.seq && k0.seq < k2.seq, "in write order");
    assert_eq!(store.take_written(&k1.key(), "another-writer", k1.seq), None);
    let later = Some(KeptWrite::Written(Box::new(second)));
    assert_eq!(store.take_written(&k1.key(), &k1.writer, before[0].seq), later, "an older entry: the later write");
    assert_eq!(store.take_written(&k1.key(), &k1.writer, k1.seq), later, "its own entry");
    assert_eq!(store.take_written(&k1.key(), &k1.writer, k1.seq), None, "handed over once");
    assert_eq!(store.take_written(&k0.key(), &k0.writer, k0.seq), Some(KeptWrite::Deleted), "a deletion");
    assert_eq!(
        store.take_written(&k2.key(), &k2.writer, k2.seq),
        Some(KeptWrite::Written(Box::new(set.trips[0].clone())))
    );

    store.delete_trip(&tenant("acme"), &vehicle("car-k"), &trip_id("k2")).await.unwrap();
    let (deleted, _) = entries(store, &start).await;
    let last = deleted.last().unwrap();
    assert_eq!(store.take_written(&last.key(), &last.writer, last.seq), Some(KeptWrite::Deleted));
}

pub(crate) async fn redelivered_points_in_other_chunks_read_back_once<S: Store>(store: &S) {
    let points: Vec<StoredPoint> = (0..40).map(|i| point("car-d", "td", i, Some(i as u64))).collect();
    store.write_points(&points).await.unwrap();
    // Redeliveries after a restart land in new chunks, cut differently; one point changed since.
    store.write_points(&points[10..25]).await.unwrap();
    let mut changed = points[12].clone();
    changed.derived.moving = false;
    store.write_points(&[points[30].clone(), changed.clone(), points[5].clone()]).await.unwrap();
    store.upsert_trips(&[trip("acme", "car-d", "td", 0, 39)]).await.unwrap();
    let mut expected = points.clone();
    expected[12] = changed;
    assert_eq!(store.vehicle_points(&vehicle("car-d"), T0, T0 + 60_000).await.unwrap(), expected);
    let page = store.trip_points(&tenant("acme"), &trip_id("td"), None, 100).await.unwrap().unwrap();
    assert_eq!(page.items, expected, "each point once, as last written, in order, with its seq");
    // A point moved to another trip (a renamed trip rewritten under its new id) leaves the old one.
    let moved: Vec<StoredPoint> =
        points[35..].iter().map(|p| StoredPoint { trip_id: trip_id("te"), ..p.clone() }).collect();
    store.write_points(&moved).await.unwrap();
    let page = store.trip_points(&tenant("acme"), &trip_id("td"), None, 100).await.unwrap().unwrap();
    assert_eq!(page.items.len(), 35);
}

pub(crate) async fn a_seal_cut_short_loses_and_duplicates_nothing<S: Store>(store: &S) {
    let points: Vec<StoredPoint> = (0..90).map(|i| point("car-k", "tk", i, Some(i as u64))).collect();
    // As a live trip is written: a few points per write set.
    for part in points.chunks(4) {
        store.write_points(part).await.unwrap();
    }
    store.write_points(&points[20..30]).await.unwrap();
    let neighbour: Vec<StoredPoint> = (100..110).map(|i| point("car-k", "tn", i, Some(i as u64))).collect();
    store.write_points(&neighbour).await.unwrap();
    store.upsert_trips(&[trip("acme", "car-k", "tk", 0, 89), trip("acme", "car-k", "tn", 100, 109)]).await.unwrap();
    let (from, to) = (T0, T0 + 89_000);
    let read =
        || async { store.trip_points(&tenant("acme"), &trip_id("tk"), None, 1000).await.unwrap().unwrap().items };
    // Crashed after writing the sealed chunks, before deleting what they replace.
    assert!(store.seal_trip_interrupted(&vehicle("car-k"), &trip_id("tk"), from, to).await.unwrap());
    assert_eq!(read().await, points);
    // Run again (the next completion, or a restart): finished.
    assert!(store.seal_trip(&vehicle("car-k"), &trip_id("tk"), from, to).await.unwrap());
    assert_eq!(read().await, points);
    assert!(!store.seal_trip(&vehicle("car-k"), &trip_id("tk"), from, to).await.unwrap(), "nothing left to seal");
    assert_eq!(store.vehicle_points(&vehicle("car-k"), T0, T0 + 120_000).await.unwrap(), [points, neighbour].concat());
    // Paging a sealed trip: every point once.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = store.trip_points(&tenant("acme"), &trip_id("tk"), cursor.as_deref(), 13).await.unwrap().unwrap();
        seen.extend(page.items.iter().map(|p| p.point.seq.unwrap()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..90).collect::<Vec<u64>>());
}

pub(crate) async fn a_points_cursor_addresses_only_its_own_trip<S: Store>(store: &S) {
    store.write_points(&(0..30).map(|i| point("car-x", "x1", i, Some(i as u64))).collect::<Vec<_>>()).await.unwrap();
    store.write_points(&(40..70).map(|i| point("car-x", "x2", i, Some(i as u64))).collect::<Vec<_>>()).await.unwrap();
    store.upsert_trips(&[trip("acme", "car-x", "x1", 0, 29), trip("acme", "car-x", "x2", 40, 69)]).await.unwrap();
    let page = store.trip_points(&tenant("acme"), &trip_id("x1"), None, 10).await.unwrap().unwrap();
    let cursor = page.next.unwrap();
    assert!(matches!(
        store.trip_points(&tenant("acme"), &trip_id("x2"), Some(&cursor), 10).await,
        Err(StoreError::BadCursor)
    ));
    // Forged: a time far outside the trip, or the trip's own tag with a changed time.
    let tag = cursor.rsplit('.').next().unwrap();
    for forged in [format!("{}.0.{tag}", i64::MIN), format!("{}.0.{tag}", T0 + 3_600_000), "1.2.3".to_owned()] {
        assert!(matches!(
            store.trip_points(&tenant("acme"), &trip_id("x1"), Some(&forged), 10).await,
            Err(StoreError::BadCursor)
        ));
    }
    let next = store.trip_points(&tenant("acme"), &trip_id("x1"), Some(&cursor), 10).await.unwrap().unwrap();
    assert_eq!(next.items.first().and_then(|p| p.point.seq), Some(10));
}

fn webhook(id: &str, t: &str) -> Webhook {
    Webhook {
        id: id.to_owned(),
        tenant: tenant(t),
        url: "https://receiver.example/hooks".to_owned(),
        types: vec![NoticeKind::TripCompleted],
        vehicles: Vec::new(),
        secret: "whsec_c2VjcmV0".to_owned(),
        previous_secret: None,
        previous_until_ms: 0,
        created_at_ms: T0,
    }
}

fn outbox_item(n: u32) -> OutboxItem {
    OutboxItem {
        key: OutboxItem::key_of(T0 + i64::from(n), "w1", u64::from(n), 0),
        message_id: format!("msg_{n}"),
        kind: NoticeKind::TripCompleted,
        vehicle_id: vehicle("car-1"),
        body: format!("{{\"n\": {n}}}"),
        written_at_ms: T0,
        attempts: 0,
        next_at_ms: T0,
    }
}

fn attempt(t: &str, item: &OutboxItem, n: u32, at_ms: i64, outcome: DeliveryOutcome) -> DeliveryAttempt {
    DeliveryAttempt {
        id: DeliveryAttempt::id_for("wh_1", &item.message_id, n),
        tenant: tenant(t),
        webhook_id: "wh_1".to_owned(),
        message_id: item.message_id.clone(),
        kind: item.kind,
        vehicle_id: item.vehicle_id.clone(),
        attempt: n,
        at_ms,
        status: Some(500),
        error: None,
        latency_ms: 12,
        outcome,
        next_at_ms: (outcome == DeliveryOutcome::Retrying).then_some(at_ms + 1000),
    }
}

pub(crate) async fn a_webhook_keeps_its_outbox_cursor_and_attempts<S: Store>(store: &S) {
    let from = Checkpoint { positions: [("w1".to_owned(), 7)].into() };
    let hook = webhook("wh_1", "acme");
    store.put_webhook(&hook, &from).await.unwrap();
    store.put_webhook(&webhook("wh_2", "globex"), &Checkpoint::default()).await.unwrap();
    let (cursor, items) = store.outbox("wh_1").await.unwrap().unwrap();
    assert_eq!((cursor, items), (from.clone(), Vec::new()), "a new webhook starts at its position");
    // A new secret keeps the cursor.
    let rotated =
        Webhook { secret: "whsec_bmV3".to_owned(), previous_secret: Some(hook.secret.clone()), ..hook.clone() };
    store.put_webhook(&rotated, &Checkpoint::default()).await.unwrap();
    let mut all = store.webhooks().await.unwrap();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all, [rotated.clone(), webhook("wh_2", "globex")]);
    assert_eq!(store.outbox("wh_1").await.unwrap().unwrap().0, from);

    // Items and the cursor after them; the same again changes nothing; they read in key order.
    let items: Vec<OutboxItem> = (1..=3).rev().map(outbox_item).collect();
    let after = Checkpoint { positions: [("w1".to_owned(), 10)].into() };
    store.enqueue("wh_1", &items, &after).await.unwrap();
    store.enqueue("wh_1", &items, &after).await.unwrap();
    let (cursor, waiting) = store.outbox("wh_1").await.unwrap().unwrap();
    assert_eq!(cursor, after);
    assert_eq!(waiting.iter().map(|i| i.message_id.as_str()).collect::<Vec<_>>(), ["msg_1", "msg_2", "msg_3"]);
    assert!(store.outbox("wh_2").await.unwrap().unwrap().1.is_empty(), "outboxes are apart");

    // A retry stays with its new schedule; a delivery leaves; both are listed, newest first.
    let now = tripline_model::time::now_ms();
    let retry = OutboxItem { attempts: 1, next_at_ms: T0 + 60_000, ..waiting[0].clone() };
    let first = attempt("acme", &retry, 1, now - 2_000, DeliveryOutcome::Retrying);
    let delivered = attempt("acme", &waiting[1], 1, now - 1_000, DeliveryOutcome::Delivered);
    store.settle("wh_1", &[(retry.clone(), first.clone()), (waiting[1].clone(), delivered.clone())]).await.unwrap();
    let waiting: Vec<OutboxItem> = store.outbox("wh_1").await.unwrap().unwrap().1;
    assert_eq!(
        waiting.iter().map(|i| (i.message_id.as_str(), i.attempts)).collect::<Vec<_>>(),
        [("msg_1", 1), ("msg_3", 0)]
    );
    let listed = store.deliveries(&tenant("acme"), None, 10).await.unwrap();
    assert_eq!(listed.items, [delivered.clone(), first.clone()]);
    let page = store.deliveries(&tenant("acme"), None, 1).await.unwrap();
    assert_eq!(page.items, [delivered]);
    let rest = store.deliveries(&tenant("acme"), page.next.as_deref(), 10).await.unwrap();
    assert_eq!((rest.items, rest.next), (vec![first], None));
    assert!(store.deliveries(&tenant("globex"), None, 10).await.unwrap().items.is_empty(), "another tenant's");

    // Removed: gone with its outbox; a late enqueue or retry of it keeps nothing.
    assert_eq!(store.remove_webhook("wh_1").await.unwrap(), Some(rotated));
    assert_eq!(store.remove_webhook("wh_1").await.unwrap(), None);
    store.enqueue("wh_1", &items, &after).await.unwrap();
    store.settle("wh_1", &[(retry.clone(), attempt("acme", &retry, 2, now, DeliveryOutcome::Retrying))]).await.unwrap();
    assert_eq!(store.outbox("wh_1").await.unwrap(), None);
    assert_eq!(store.webhooks().await.unwrap().len(), 1);
}
