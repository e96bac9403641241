//! The read store's behaviour on a known set of trips.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use tripline_model::{EventCounts, EventKind, Place, TenantId, TripId, TripStatus, TripSummary, VehicleId};
use tripline_store::{Checkpoint, TripRecord};

use crate::{Cursor, SortOrder, TripIndex, TripQuery};

const T0: i64 = 1_795_600_800_000; // 2026-11-25T10:00:00Z
const HOUR: i64 = 3_600_000;

struct Spec {
    tenant: &'static str,
    vehicle: &'static str,
    id: &'static str,
    start_h: i64,
    hours: i64,
    score: f64,
    km: f64,
    events: EventCounts,
    regions: &'static [&'static str],
    position: (f64, f64),
    status: TripStatus,
}

fn spec(tenant: &'static str, vehicle: &'static str, id: &'static str, start_h: i64) -> Spec {
    Spec {
        tenant,
        vehicle,
        id,
        start_h,
        hours: 1,
        score: 80.0,
        km: 10.0,
        events: EventCounts::default(),
        regions: &[],
        position: (52.52, 13.40),
        status: TripStatus::Completed,
    }
}

fn record(s: &Spec) -> TripRecord {
    let at = |ms: i64| tripline_model::time::to_datetime(ms);
    let (start, end) = (T0 + s.start_h * HOUR, T0 + (s.start_h + s.hours) * HOUR);
    TripRecord {
        tenant: TenantId::parse(s.tenant).unwrap(),
        summary: TripSummary {
            trip_id: TripId::parse(s.id).unwrap(),
            vehicle_id: VehicleId::parse(s.vehicle).unwrap(),
            status: s.status,
            start_time: at(start),
            end_time: at(end),
            duration_s: (s.hours * 3600) as f64,
            moving_time_s: 0.0,
            idle_time_s: 0.0,
            distance_km: s.km,
            max_speed_kmh: 90.0,
            avg_speed_kmh: 40.0,
            start: Place { lat: s.position.0, lon: s.position.1, region: None },
            end: Place { lat: s.position.0, lon: s.position.1, region: None },
            regions: s.regions.iter().map(|r| (*r).to_owned()).collect(),
            events: s.events,
            speeding_s: 0.0,
            night_driving_s: 0.0,
            point_count: 100,
            rejected_point_count: 0,
            score: s.score,
            score_version: 1,
            updated_at: at(end),
        },
        events: Vec::new(),
        cells: tripline_model::cell::cells([s.position]),
        dropped: Default::default(),
    }
}

fn index_of(specs: &[Spec]) -> TripIndex {
    let index = TripIndex::in_memory().unwrap();
    let mut writer = index.writer().unwrap();
    for s in specs {
        index.upsert(&writer, &record(s)).unwrap();
    }
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    index
}

fn ids(index: &TripIndex, tenant: &str, query: &TripQuery) -> Vec<String> {
    let page = index.search(&TenantId::parse(tenant).unwrap(), query).unwrap();
    page.trips.iter().map(|t| t.trip_id.to_string()).collect()
}

fn query() -> TripQuery {
    TripQuery { limit: 50, ..TripQuery::default() }
}

fn fleet() -> Vec<Spec> {
    vec![
        Spec { score: 95.0, km: 5.0, regions: &["Berlin"], ..spec("acme", "car-1", "a1", 0) },
        Spec {
            score: 60.0,
            km: 30.0,
            events: EventCounts { harsh_braking: 2, ..EventCounts::default() },
            regions: &["Berlin", "Brandenburg"],
            ..spec("acme", "car-1", "a2", 2)
        },
        Spec {
            score: 75.0,
            km: 12.0,
            events: EventCounts { speeding: 1, harsh_braking: 1, ..EventCounts::default() },
            position: (48.137, 11.575),
            status: TripStatus::Active,
            ..spec("acme", "car-2", "a3", 4)
        },
        Spec { regions: &["Berlin"], ..spec("globex", "car-9", "g1", 0) },
    ]
}

#[test]
fn an_upsert_replaces_the_document_and_a_delete_removes_it() {
    let index = index_of(&[spec("acme", "car-1", "t1", 0)]);
    let mut writer = index.writer().unwrap();
    let updated = Spec { score: 42.0, ..spec("acme", "car-1", "t1", 0) };
    index.upsert(&writer, &record(&updated)).unwrap();
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    let page = index.search(&TenantId::parse("acme").unwrap(), &query()).unwrap();
    assert_eq!((page.total, page.trips[0].score), (1, 42.0));
    index.delete(
        &writer,
        &TenantId::parse("acme").unwrap(),
        &VehicleId::parse("car-1").unwrap(),
        &TripId::parse("t1").unwrap(),
    );
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    assert_eq!(index.document_count(), 0);
}

#[test]
fn each_parameter_filters_as_the_contract_says() {
    every_parameter_filters(&index_of(&fleet()));
}

/// The schema of the indexes the first version built (2026-11): more indexed than today.
fn first_schema() -> tantivy::schema::Schema {
    use tantivy::schema::{FAST, INDEXED, STORED, STRING, TEXT};
    let mut b = tantivy::schema::Schema::builder();
    b.add_text_field("key", STRING);
    b.add_text_field("tenant", STRING | FAST);
    b.add_text_field("vehicle_id", STRING | FAST);
    b.add_text_field("trip_id", STRING);
    b.add_text_field("status", STRING);
    for name in ["start_ms", "end_ms", "score_milli", "distance_m"] {
        b.add_i64_field(name, INDEXED | FAST);
    }
    b.add_text_field("event_kind", STRING | FAST);
    for kind in EventKind::ALL {
        b.add_u64_field(&format!("events_{}", kind.as_str()), FAST);
    }
    b.add_text_field("region", STRING | FAST);
    b.add_text_field("cell", STRING);
    b.add_text_field("text", TEXT);
    b.add_u64_field("tiebreak", FAST);
    b.add_text_field("summary", STORED);
    b.build()
}

/// A folder holding an empty index of `schema`, as another version left it.
fn index_folder_with(schema: tantivy::schema::Schema, name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tripline-index-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    tantivy::Index::create_in_dir(&dir, schema).unwrap();
    dir
}

#[test]
fn an_index_the_first_version_built_keeps_working() {
    let dir = index_folder_with(first_schema(), "first");
    let index = TripIndex::open_or_create(&dir).unwrap();
    assert_eq!(index.schema(), first_schema(), "an existing index keeps its schema");
    let mut writer = index.live_writer().unwrap();
    for s in fleet() {
        index.upsert(&writer, &record(&s)).unwrap();
    }
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    every_parameter_filters(&index);
    drop(writer);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_index_this_version_cannot_fill_is_refused_with_the_field_named() {
    use tantivy::schema::{FAST, STRING};
    // Today's schema, but the score a text field.
    let mut b = tantivy::schema::Schema::builder();
    for (_, entry) in crate::doc_mapping::schema().fields() {
        if entry.name() == "score_milli" {
            b.add_text_field("score_milli", STRING | FAST);
        } else {
            b.add_field(entry.clone());
        }
    }
    let dir = index_folder_with(b.build(), "foreign");
    let error = TripIndex::open_or_create(&dir).unwrap_err().to_string();
    assert!(error.contains("another version") && error.contains("field score_milli"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn every_parameter_filters(index: &TripIndex) {
    let q = query;
    assert_eq!(ids(index, "acme", &q()), ["a3", "a2", "a1"], "newest first by default");
    let car1 = TripQuery { vehicle_id: Some(VehicleId::parse("car-1").unwrap()), ..q() };
    assert_eq!(ids(index, "acme", &car1), ["a2", "a1"]);
    // Trips overlapping [1:30, 2:30): a2 (2:00–3:00) only; a1 ends at 1:00.
    let window = TripQuery { from_ms: Some(T0 + 3 * HOUR / 2), to_ms: Some(T0 + 5 * HOUR / 2), ..q() };
    assert_eq!(ids(index, "acme", &window), ["a2"]);
    let edge = TripQuery { from_ms: Some(T0 + HOUR), to_ms: Some(T0 + 2 * HOUR), ..q() };
    assert_eq!(ids(index, "acme", &edge), ["a1"], "[from, to): a trip starting at `to` is out");
    assert_eq!(ids(index, "acme", &TripQuery { status: Some(TripStatus::Active), ..q() }), ["a3"]);
    assert_eq!(ids(index, "acme", &TripQuery { min_score: Some(75.0), ..q() }), ["a3", "a1"]);
    assert_eq!(ids(index, "acme", &TripQuery { max_score: Some(60.0), ..q() }), ["a2"]);
    assert_eq!(
        ids(index, "acme", &TripQuery { min_distance_km: Some(12.0), max_distance_km: Some(30.0), ..q() }),
        ["a3", "a2"]
    );
    let braking = TripQuery { events: vec![EventKind::HarshBraking], ..q() };
    assert_eq!(ids(index, "acme", &braking), ["a3", "a2"]);
    let both = TripQuery { events: vec![EventKind::HarshBraking, EventKind::Speeding], ..q() };
    assert_eq!(ids(index, "acme", &both), ["a3"]);
    assert_eq!(ids(index, "acme", &TripQuery { regions: vec!["Brandenburg".to_owned()], ..q() }), ["a2"]);
    let munich = TripQuery { bbox: Some((11.5, 48.1, 11.6, 48.2)), ..q() };
    assert_eq!(ids(index, "acme", &munich), ["a3"]);
    let europe = TripQuery { bbox: Some((-10.0, 35.0, 30.0, 60.0)), ..q() };
    assert_eq!(ids(index, "acme", &europe).len(), 3, "a large box matches at a coarse precision");
    assert_eq!(ids(index, "acme", &TripQuery { q: Some("Brandenburg".to_owned()), ..q() }), ["a2"]);
    assert_eq!(ids(index, "acme", &TripQuery { q: Some("car-2 speeding".to_owned()), ..q() }), ["a3"]);
    let combined = TripQuery {
        vehicle_id: Some(VehicleId::parse("car-1").unwrap()),
        regions: vec!["Berlin".to_owned()],
        min_score: Some(90.0),
        ..q()
    };
    assert_eq!(ids(index, "acme", &combined), ["a1"]);
}

#[test]
fn another_tenant_is_invisible_even_to_crafted_text() {
    let index = index_of(&fleet());
    assert_eq!(ids(&index, "globex", &query()), ["g1"]);
    for text in ["globex", "tenant:globex", "car-9", "g1", "*", "tenant:acme OR tenant:globex"] {
        let found = ids(&index, "acme", &TripQuery { q: Some(text.to_owned()), ..query() });
        assert!(!found.contains(&"g1".to_owned()), "{text:?} leaked {found:?}");
    }
    assert!(ids(&index, "initech", &query()).is_empty());
}

#[test]
fn sort_orders_are_total_and_pages_return_every_trip_once() {
    // 25 trips, many sharing a score and a distance: ties are broken by the key hash.
    let specs: Vec<Spec> = (0..25)
        .map(|n| Spec {
            score: f64::from(n % 4) * 10.0,
            km: f64::from(n % 3),
            ..spec("acme", "car-1", Box::leak(format!("p{n}").into_boxed_str()), i64::from(n % 5))
        })
        .collect();
    let index = index_of(&specs);
    for sort in SortOrder::ALL {
        let mut seen = Vec::new();
        let mut values = Vec::new();
        let mut cursor = None;
        loop {
            let page = index
                .search(&TenantId::parse("acme").unwrap(), &TripQuery { sort, limit: 7, cursor, ..query() })
                .unwrap();
            assert_eq!(page.total, 25);
            for trip in &page.trips {
                seen.push(trip.trip_id.to_string());
                values.push(match sort {
                    SortOrder::StartTimeDesc | SortOrder::StartTimeAsc => trip.start_time.timestamp_millis() as f64,
                    SortOrder::ScoreAsc | SortOrder::ScoreDesc => trip.score,
                    SortOrder::DistanceAsc | SortOrder::DistanceDesc => trip.distance_km,
                });
            }
            // The cursor round-trips as text.
            cursor = page.next.map(|c| Cursor::decode(&c.encode(), sort).unwrap());
            if cursor.is_none() {
                break;
            }
        }
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!((seen.len(), unique.len()), (25, 25), "{sort:?}: every trip exactly once");
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        if matches!(sort, SortOrder::StartTimeDesc | SortOrder::ScoreDesc | SortOrder::DistanceDesc) {
            sorted.reverse();
        }
        assert_eq!(values, sorted, "{sort:?}");
    }
}

#[test]
fn updates_between_pages_neither_repeat_nor_skip_trips_that_keep_their_place() {
    let specs: Vec<Spec> =
        (0..10).map(|n| spec("acme", "car-1", Box::leak(format!("u{n}").into_boxed_str()), i64::from(n))).collect();
    let index = index_of(&specs);
    let tenant = TenantId::parse("acme").unwrap();
    let first = index.search(&tenant, &TripQuery { limit: 4, ..query() }).unwrap();
    // Between pages: every trip's score changes (the default sort is by start time) and a new
    // trip starts later than all of them.
    let mut writer = index.writer().unwrap();
    for s in &specs {
        index.upsert(&writer, &record(&Spec { score: 10.0, ..spec(s.tenant, s.vehicle, s.id, s.start_h) })).unwrap();
    }
    index.upsert(&writer, &record(&spec("acme", "car-1", "new", 20))).unwrap();
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    let mut seen: Vec<String> = first.trips.iter().map(|t| t.trip_id.to_string()).collect();
    let mut cursor = first.next;
    while let Some(c) = cursor {
        let page = index.search(&tenant, &TripQuery { limit: 4, cursor: Some(c), ..query() }).unwrap();
        seen.extend(page.trips.iter().map(|t| t.trip_id.to_string()));
        cursor = page.next;
    }
    let expected: Vec<String> = (0..10).rev().map(|n| format!("u{n}")).collect();
    assert_eq!(seen, expected);
}

#[test]
fn the_checkpoint_commits_with_the_data_and_survives_a_reopen() {
    let dir = std::env::temp_dir().join(format!("tripline-index-{}-{}", std::process::id(), T0));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let index = TripIndex::open_or_create(&dir).unwrap();
        assert_eq!(index.checkpoint().unwrap(), Checkpoint::default());
        let mut writer = index.writer().unwrap();
        index.upsert(&writer, &record(&spec("acme", "car-1", "c1", 0))).unwrap();
        let mut checkpoint = Checkpoint::default();
        checkpoint.positions.insert("embedded".to_owned(), 7);
        index.commit(&mut writer, &checkpoint).unwrap();
        // Added but not committed: lost with its (uncommitted) progress.
        index.upsert(&writer, &record(&spec("acme", "car-1", "c2", 1))).unwrap();
    }
    let index = TripIndex::open_or_create(&dir).unwrap();
    assert_eq!(index.checkpoint().unwrap().position("embedded"), 7);
    assert_eq!(ids(&index, "acme", &query()), ["c1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_cursors_are_refused() {
    let cursor = Cursor::decode(&format!("a{:016x}{:016x}", 5, 6), SortOrder::StartTimeDesc).unwrap();
    assert!(Cursor::decode(&cursor.encode(), SortOrder::ScoreAsc).is_err(), "another sort order");
    for bad in ["", "zzz", "a123", &format!("a{}", "g".repeat(32))] {
        assert!(Cursor::decode(bad, SortOrder::StartTimeDesc).is_err(), "{bad:?}");
    }
}

#[test]
fn stats_group_the_selected_trips() {
    use crate::GroupBy;
    let index = index_of(&fleet());
    let acme = TenantId::parse("acme").unwrap();
    let by_kind = index.stats(&acme, &query(), GroupBy::EventKind).unwrap();
    let kinds: Vec<(&str, u64, u64)> = by_kind.iter().map(|b| (b.key.as_str(), b.trips, b.events)).collect();
    assert_eq!(kinds, [("harsh_braking", 2, 3), ("speeding", 1, 1)]);
    let braking = &by_kind[0];
    assert_eq!((braking.distance_km, braking.avg_score), (42.0, 67.5));
    let regions = index.stats(&acme, &query(), GroupBy::Region).unwrap();
    let regions: Vec<(&str, u64)> = regions.iter().map(|b| (b.key.as_str(), b.trips)).collect();
    assert_eq!(regions, [("Berlin", 2), ("Brandenburg", 1)], "globex's Berlin trip is not counted");
    let vehicles = index.stats(&acme, &TripQuery { min_score: Some(70.0), ..query() }, GroupBy::VehicleId).unwrap();
    let vehicles: Vec<(&str, u64)> = vehicles.iter().map(|b| (b.key.as_str(), b.trips)).collect();
    assert_eq!(vehicles, [("car-1", 1), ("car-2", 1)], "the search selects the trips");
}

#[test]
fn days_follow_the_zone_across_a_daylight_saving_change() {
    use crate::GroupBy;
    // Europe/Berlin leaves summer time at 2026-10-25T01:00Z. Trips start at
    // 2026-10-24T22:30Z (00:30 CEST on the 25th) and 2026-10-25T22:30Z (23:30 CET on the 25th).
    let specs: Vec<Spec> = ["2026-10-24T22:30:00Z", "2026-10-25T22:30:00Z"]
        .iter()
        .enumerate()
        .map(|(n, at)| {
            let start = tripline_model::time::parse_rfc3339_ms(at).unwrap();
            let start_h = (start - T0).div_euclid(HOUR);
            let mut s = spec("acme", "car-1", Box::leak(format!("d{n}").into_boxed_str()), start_h);
            s.hours = 1;
            s
        })
        .collect();
    // T0 is on the hour and both starts are at :30, so shift the records to the exact times.
    let index = TripIndex::in_memory().unwrap();
    let mut writer = index.writer().unwrap();
    for s in &specs {
        let mut r = record(s);
        let start = r.summary.start_time + chrono::Duration::minutes(30);
        r.summary.start_time = start;
        index.upsert(&writer, &r).unwrap();
    }
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let berlin = GroupBy::parse("day", Some("Europe/Berlin")).unwrap();
    let days: Vec<(String, u64)> =
        index.stats(&acme, &query(), berlin).unwrap().into_iter().map(|b| (b.key, b.trips)).collect();
    assert_eq!(days, [("2026-10-25".to_owned(), 2)]);
    let utc = GroupBy::parse("day", None).unwrap();
    let days: Vec<(String, u64)> =
        index.stats(&acme, &query(), utc).unwrap().into_iter().map(|b| (b.key, b.trips)).collect();
    assert_eq!(days, [("2026-10-24".to_owned(), 1), ("2026-10-25".to_owned(), 1)]);
    assert!(GroupBy::parse("day", Some("Mars/Olympus")).is_none());
    // India is UTC+5:30: 18:15Z and 18:45Z fall on two local days.
    let india = GroupBy::parse("day", Some("Asia/Kolkata")).unwrap();
    let index = TripIndex::in_memory().unwrap();
    let mut writer = index.writer().unwrap();
    for (n, at) in ["2026-11-25T18:15:00Z", "2026-11-25T18:45:00Z"].iter().enumerate() {
        let mut r = record(&spec("acme", "car-1", Box::leak(format!("i{n}").into_boxed_str()), 0));
        r.summary.start_time = tripline_model::time::to_datetime(tripline_model::time::parse_rfc3339_ms(at).unwrap());
        index.upsert(&writer, &r).unwrap();
    }
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    let days: Vec<(String, u64)> =
        index.stats(&acme, &query(), india).unwrap().into_iter().map(|b| (b.key, b.trips)).collect();
    assert_eq!(days, [("2026-11-25".to_owned(), 1), ("2026-11-26".to_owned(), 1)]);
}
