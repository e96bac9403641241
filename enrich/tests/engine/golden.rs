//! Golden summaries of the project's fixture trips (`fixtures/trips/` → `fixtures/golden/`).
//!
//! Regenerate only on purpose: `scripts/regen-golden.sh` (sets `TRIPLINE_REGEN_GOLDEN=1`).

use std::path::{Path, PathBuf};

use tripline_enrich::batch::summarize_records;
use tripline_enrich::{EnrichConfig, Enricher, Regions};
use tripline_model::VehicleId;
use tripline_model::tripfile::{TripFileFormat, parse_trip_file};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The fixture files and, for GPX, their vehicle.
const FIXTURES: &[(&str, Option<&str>)] =
    &[("harsh-events.csv", None), ("no-trip-ids.jsonl", None), ("night-drive.gpx", Some("fx-night"))];

fn fixture_summaries() -> Vec<tripline_model::TripSummary> {
    let regions =
        Regions::from_geojson(&std::fs::read_to_string(root().join("fixtures/regions.geojson")).unwrap()).unwrap();
    let engine = Enricher::new(EnrichConfig::default(), regions).unwrap();
    let mut records = Vec::new();
    for (name, vehicle) in FIXTURES {
        let path = root().join("fixtures/trips").join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let vehicle = vehicle.map(|v| VehicleId::parse(v).unwrap());
        let parsed = parse_trip_file(TripFileFormat::from_path(&path).unwrap(), &text, vehicle.as_ref()).unwrap();
        assert!(parsed.errors.is_empty(), "{name}: {:?}", parsed.errors);
        records.extend(parsed.records);
    }
    summarize_records(records, &engine).reports.into_iter().map(|r| r.summary).collect()
}

#[test]
fn fixture_summaries_match_the_golden_file() {
    let summaries = fixture_summaries();
    let actual: String = summaries.iter().map(|s| serde_json::to_string(s).unwrap() + "\n").collect();
    let golden = root().join("fixtures/golden/summaries.jsonl");
    if std::env::var("TRIPLINE_REGEN_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&golden, &actual).unwrap();
        eprintln!("regenerated {}", golden.display());
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(actual, expected, "summaries changed; if on purpose, run scripts/regen-golden.sh and review the diff");
}

#[test]
fn fixtures_exercise_every_rule_they_are_meant_to() {
    let summaries = fixture_summaries();
    let harsh = summaries.iter().find(|s| s.trip_id.as_str() == "fx-harsh-1").unwrap();
    for kind in tripline_model::EventKind::ALL {
        assert!(harsh.events.get(kind) >= 1, "fx-harsh-1 has no {kind:?}");
    }
    assert_eq!(harsh.rejected_point_count, 3, "a jump, (0, 0) and an off-globe latitude");
    assert!(harsh.idle_time_s >= 100.0, "the two-minute stop with jitter is idle time");
    let cutter: Vec<_> = summaries.iter().filter(|s| s.vehicle_id.as_str() == "fx-cutter").collect();
    assert_eq!(cutter.len(), 4, "two drives split by a 15-minute silence, each split by an ignition cycle");
    assert!(cutter.iter().all(|s| s.regions == ["Hamm"]));
    let night = summaries.iter().find(|s| s.trip_id.as_str() == "fx-night-1").unwrap();
    assert!(night.night_driving_s > 400.0 && night.regions == ["Chemnitz"]);
}
