//! The engine on real recordings from `../shared/data/real-trips` (read in place, never copied).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{NaiveDateTime, TimeZone};
use tripline_enrich::{TripEngine, cut_trips, sort_points};
use tripline_model::{Point, TripStatus};

use crate::support::*;

/// One enviroCar track: its points (GPS speed as `speed_mps`), OBD speeds, and enviroCar's length.
struct EnviroCarTrack {
    id: String,
    points: Vec<Point>,
    obd_kmh: Vec<Option<f64>>,
    length_km: f64,
}

fn phenomenon(properties: &serde_json::Value, name: &str) -> Option<f64> {
    properties["phenomenons"][name]["value"].as_f64()
}

fn envirocar_tracks(root: &Path) -> Vec<EnviroCarTrack> {
    let mut files: Vec<_> = std::fs::read_dir(root.join("envirocar")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "geojson"))
        .map(|path| {
            let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let mut points = Vec::new();
            let mut obd_kmh = Vec::new();
            for feature in doc["features"].as_array().unwrap() {
                let coords = &feature["geometry"]["coordinates"];
                let props = &feature["properties"];
                points.push(Point {
                    seq: None,
                    ts_ms: tripline_model::time::parse_rfc3339_ms(props["time"].as_str().unwrap()).unwrap(),
                    lat: coords[1].as_f64().unwrap(),
                    lon: coords[0].as_f64().unwrap(),
                    speed_mps: phenomenon(props, "GPS Speed").map(|kmh| kmh / 3.6),
                    heading_deg: phenomenon(props, "GPS Bearing"),
                    accuracy_m: None,
                    alt_m: phenomenon(props, "GPS Altitude"),
                    ignition: None,
                    odometer_m: None,
                });
                obd_kmh.push(phenomenon(props, "Speed"));
            }
            EnviroCarTrack {
                id: doc["properties"]["id"].as_str().unwrap().to_owned(),
                points,
                obd_kmh,
                length_km: doc["properties"]["length"].as_f64().unwrap(),
            }
        })
        .collect()
}

#[test]
fn envirocar_distances_are_within_2_percent_of_envirocar_length() {
    let Some(root) = real_trips() else { return };
    let tracks = envirocar_tracks(&root);
    assert_eq!(tracks.len(), 10);
    let mut errors = Vec::new();
    for track in &tracks {
        let summary = report(track.points.clone()).summary;
        let error = (summary.distance_km - track.length_km) / track.length_km;
        eprintln!(
            "envirocar {}: {:.3} km vs {:.3} km ({:+.2} %)",
            track.id,
            summary.distance_km,
            track.length_km,
            error * 100.0
        );
        errors.push(error.abs());
        assert!(
            error.abs() < 0.02,
            "track {}: {} km vs enviroCar {} km",
            track.id,
            summary.distance_km,
            track.length_km
        );
    }
    eprintln!("envirocar distance: median |error| {:.2} %", median(&mut errors) * 100.0);
}

#[test]
fn envirocar_distances_hold_without_reported_speed() {
    let Some(root) = real_trips() else { return };
    for track in envirocar_tracks(&root) {
        let points = track.points.iter().map(|p| Point { speed_mps: None, heading_deg: None, ..p.clone() });
        let summary = report(points).summary;
        let error = (summary.distance_km - track.length_km) / track.length_km;
        assert!(
            error.abs() < 0.03,
            "track {} without speed: {} km vs {} km",
            track.id,
            summary.distance_km,
            track.length_km
        );
    }
}

#[test]
fn derived_speed_agrees_with_obd_speed() {
    let Some(root) = real_trips() else { return };
    let mut errors_kmh = Vec::new();
    for track in envirocar_tracks(&root) {
        let points: Vec<Point> =
            track.points.iter().map(|p| Point { speed_mps: None, heading_deg: None, ..p.clone() }).collect();
        let obd: BTreeMap<i64, f64> =
            track.points.iter().zip(&track.obd_kmh).filter_map(|(p, s)| s.map(|s| (p.ts_ms, s))).collect();
        let mut trip = TripEngine::new(vehicle("ec"), trip("ec"));
        trip.add_points(points);
        trip.refresh(&engine());
        for p in trip.enriched() {
            if let Some(obd_kmh) = obd.get(&p.point.ts_ms) {
                errors_kmh.push((p.speed_mps * 3.6 - obd_kmh).abs());
            }
        }
    }
    let n = errors_kmh.len();
    let median_kmh = median(&mut errors_kmh);
    let p90 = errors_kmh[n * 9 / 10];
    eprintln!("derived vs OBD speed over {n} points: median |error| {median_kmh:.2} km/h, p90 {p90:.2} km/h");
    assert!(n > 1000);
    assert!(median_kmh < 5.0, "median error {median_kmh} km/h");
}

/// go-track: points per track (local time of Aracaju → UTC), the device of each car track, and
/// the dataset's own distance column.
struct GoTrack {
    tracks: BTreeMap<u32, Vec<Point>>,
    device_of: BTreeMap<u32, String>,
    distance_km: BTreeMap<u32, f64>,
}

fn go_track(root: &Path) -> GoTrack {
    let tz: chrono_tz::Tz = "America/Maceio".parse().unwrap();
    let mut reader = csv::Reader::from_path(root.join("go-track/go_track_tracks.csv")).unwrap();
    let mut device_of = BTreeMap::new();
    let mut distance_km = BTreeMap::new();
    for row in reader.records() {
        let row = row.unwrap();
        let id: u32 = row[0].parse().unwrap();
        if &row[8] == "1" {
            device_of.insert(id, row[1].to_owned());
            distance_km.insert(id, row[4].parse().unwrap());
        }
    }
    let mut tracks: BTreeMap<u32, Vec<Point>> = BTreeMap::new();
    let mut reader = csv::Reader::from_path(root.join("go-track/go_track_trackspoints.csv")).unwrap();
    for row in reader.records() {
        let row = row.unwrap();
        let id: u32 = row[2].parse().unwrap();
        if !device_of.contains_key(&id) {
            continue;
        }
        let local = NaiveDateTime::parse_from_str(&row[3], "%Y-%m-%d %H:%M:%S").unwrap();
        let ts_ms = tz.from_local_datetime(&local).single().unwrap().timestamp_millis();
        tracks.entry(id).or_default().push(Point::new(ts_ms, row[0].parse().unwrap(), row[1].parse().unwrap()));
    }
    GoTrack { tracks, device_of, distance_km }
}

#[test]
fn go_track_cutter_recovers_trip_boundaries() {
    let Some(root) = real_trips() else { return };
    let data = go_track(&root);
    let gap_ms = 600_000;
    let mut by_device: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for id in data.tracks.keys() {
        by_device.entry(data.device_of[id].as_str()).or_default().push(*id);
    }
    let span = |id: &u32| {
        let points = &data.tracks[id];
        let (lo, hi) = points.iter().fold((i64::MAX, i64::MIN), |(lo, hi), p| (lo.min(p.ts_ms), hi.max(p.ts_ms)));
        (lo, hi)
    };
    let (mut originals, mut separable, mut cut_total) = (0, 0, 0);
    let (mut exact, mut separable_found) = (0, 0);
    for ids in by_device.values() {
        // Concatenate the device's car tracks without trip ids, as the device would have sent them.
        let mut points: Vec<(u32, Point)> =
            ids.iter().flat_map(|id| data.tracks[id].iter().map(move |p| (*id, p.clone()))).collect();
        points.sort_by(|a, b| tripline_enrich::track::canonical_cmp(&a.1, &b.1));
        let plain: Vec<Point> = points.iter().map(|(_, p)| p.clone()).collect();
        let ranges = cut_trips(&plain, 600.0);
        cut_total += ranges.len();
        // A track is separable when no other track of its device comes within the trip gap and it
        // has no gap of its own longer than the trip gap: only those can be recovered from time.
        for id in ids {
            originals += 1;
            let (lo, hi) = span(id);
            let mut own: Vec<i64> = data.tracks[id].iter().map(|p| p.ts_ms).collect();
            own.sort_unstable();
            let inner_ok = own.windows(2).all(|w| w[1] - w[0] <= gap_ms);
            let apart = ids.iter().filter(|o| *o != id).all(|o| {
                let (olo, ohi) = span(o);
                olo > hi + gap_ms || ohi < lo - gap_ms
            });
            let recovered = ranges
                .iter()
                .any(|r| points[r.clone()].iter().all(|(t, _)| t == id) && r.len() == data.tracks[id].len());
            if recovered {
                exact += 1;
            }
            let holds_it: Vec<_> =
                ranges.iter().filter(|r| points[(*r).clone()].iter().any(|(t, _)| t == id)).collect();
            let clean = holds_it.len() == 1 && points[holds_it[0].clone()].iter().all(|(t, _)| t == id);
            if inner_ok && apart {
                separable += 1;
                if recovered && clean {
                    separable_found += 1;
                }
            }
        }
    }
    let precision = exact as f64 / cut_total as f64;
    let recall = exact as f64 / originals as f64;
    let separable_recall = separable_found as f64 / separable as f64;
    eprintln!(
        "go-track cutter: {originals} car tracks, {cut_total} cut trips; precision {precision:.3}, recall {recall:.3}; \
         {separable} tracks separable in time, recall on them {separable_recall:.3}"
    );
    assert!(separable >= 30, "only {separable} separable tracks");
    // Precision and recall on separable tracks: each is exactly one cut trip, holding nothing else.
    assert_eq!(separable_found, separable, "every track apart from the others by more than the trip gap is recovered");
}

#[test]
fn go_track_distances_against_the_dataset_column() {
    let Some(root) = real_trips() else { return };
    let data = go_track(&root);
    let mut relative = Vec::new();
    for (id, points) in &data.tracks {
        let mut points = points.clone();
        sort_points(&mut points);
        let mut trip = TripEngine::new(vehicle("gt"), trip("gt"));
        trip.add_points(points);
        let Some(report) = trip.report(&engine(), TripStatus::Completed, None) else { continue };
        let reference = data.distance_km[id];
        if reference > 0.2 {
            relative.push((report.summary.distance_km - reference) / reference);
        }
    }
    let n = relative.len();
    let mut abs: Vec<f64> = relative.iter().map(|r| r.abs()).collect();
    let median_abs = median(&mut abs);
    let median_signed = median(&mut relative.clone());
    eprintln!(
        "go-track distance vs dataset column over {n} car tracks: median |error| {:.1} %, median signed {:+.1} %",
        median_abs * 100.0,
        median_signed * 100.0
    );
    assert!(n > 50);
    assert!(median_abs < 0.15, "median relative error {median_abs}");
}

/// The KITTI drive: time (Unix ms, from the first frame at `T0_MS`), position, and the inertial
/// unit's forward speed and acceleration.
fn kitti(root: &Path) -> Vec<(i64, f64, f64, f64, f64)> {
    let dir = root.join("kitti-oxts-0926-1313");
    let stamps = std::fs::read_to_string(dir.join("timestamps.txt")).unwrap();
    let parse = |line: &str| NaiveDateTime::parse_from_str(line.trim(), "%Y-%m-%d %H:%M:%S%.f").unwrap();
    let times: Vec<_> = stamps.lines().filter(|l| !l.trim().is_empty()).map(parse).collect();
    times
        .iter()
        .enumerate()
        .map(|(i, time)| {
            let line = std::fs::read_to_string(dir.join(format!("data/{i:010}.txt"))).unwrap();
            let v: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
            let ms = (*time - times[0]).num_milliseconds();
            (T0_MS + ms, v[0], v[1], v[8], v[14])
        })
        .collect()
}

/// Truth at `at_ms`, linearly interpolated: (forward speed, forward acceleration).
fn kitti_truth(frames: &[(i64, f64, f64, f64, f64)], at_ms: i64) -> (f64, f64) {
    let i = frames.partition_point(|f| f.0 < at_ms).clamp(1, frames.len() - 1);
    let (a, b) = (&frames[i - 1], &frames[i]);
    let f = ((at_ms - a.0) as f64 / (b.0 - a.0) as f64).clamp(0.0, 1.0);
    (a.3 + f * (b.3 - a.3), a.4 + f * (b.4 - a.4))
}

#[test]
fn kitti_speed_and_acceleration_follow_the_inertial_truth_under_receiver_noise() {
    use tripline_enrich::sim::{Receiver, ReceiverErrors};
    let Some(root) = real_trips() else { return };
    let frames = kitti(&root);
    assert_eq!(frames.len(), 270);
    const METRES_PER_DEGREE: f64 = 111_320.0;
    for (wander_m, white_m) in [(0.0, 0.0), (3.0, 0.1), (5.0, 0.1), (5.0, 0.3)] {
        let receiver = Receiver { outliers_per_s: 0.0, ..Receiver::consumer(wander_m) };
        let (mut speed_sq, mut accel_sq, mut speeds, mut accels) = (0.0, 0.0, 0usize, 0usize);
        let (mut moving_sq, mut movings) = (0.0, 0usize);
        let mut events = 0;
        for seed in 0..20 {
            let mut errors = ReceiverErrors::new(&receiver, white_m, seed);
            let mut last_ms = frames[0].0;
            let points: Vec<Point> = frames
                .iter()
                .map(|&(ts_ms, lat, lon, _, _)| {
                    for _ in 0..((ts_ms - last_ms) / 10) {
                        errors.advance(0.01);
                    }
                    last_ms = ts_ms;
                    let (north, east) = errors.fix(0.1);
                    Point {
                        seq: None,
                        ts_ms,
                        lat: lat + north / METRES_PER_DEGREE,
                        lon: lon + east / (METRES_PER_DEGREE * lat.to_radians().cos()),
                        speed_mps: None,
                        heading_deg: None,
                        accuracy_m: Some((2.0 * wander_m).max(3.0)),
                        alt_m: None,
                        ignition: None,
                        odometer_m: None,
                    }
                })
                .collect();
            let mut trip_engine = TripEngine::new(vehicle("kitti"), trip("kitti"));
            trip_engine.add_points(points);
            let report = trip_engine.report(&engine(), TripStatus::Completed, None).unwrap();
            events += report.summary.events.total();
            // The car stands for 17 s, then pulls away to 9.25 m/s: speed is compared throughout
            // (0 while standing), acceleration once the car moves fast enough to have a course.
            for p in trip_engine.enriched() {
                let Some(at_ms) = p.estimated_at_ms() else { continue };
                let (vf, af) = kitti_truth(&frames, at_ms);
                speed_sq += (p.speed_mps - vf).powi(2);
                speeds += 1;
                if p.moving {
                    moving_sq += (p.speed_mps - vf).powi(2);
                    movings += 1;
                }
                if let Some(accel) = p.accel_mps2 {
                    accel_sq += (accel - af).powi(2);
                    accels += 1;
                }
            }
        }
        let speed_rms = (speed_sq / speeds as f64).sqrt();
        let moving_rms = (moving_sq / movings as f64).sqrt();
        let accel_rms = (accel_sq / accels as f64).sqrt();
        eprintln!(
            "kitti, wander {wander_m} m, white {white_m} m: speed RMS error {speed_rms:.3} m/s over {speeds} \
             estimates ({moving_rms:.3} m/s over the {movings} once movement is confirmed), forward acceleration \
             RMS error {accel_rms:.3} m/s² over {accels}, {events} events in 20 seeds"
        );
        // (Accelerations start once movement is confirmed: later with a worse `accuracy_m`.)
        assert!(speeds > 20 * 250 && accels > 20 * 10, "estimates: {speeds}, {accels}");
        assert_eq!(events, 0, "the drive has no harsh event");
        // Until the fixes leave the stop's radius (twice `accuracy_m`), a pulling-away car reads
        // 0 m/s: nearly all of the error over the whole drive, and more the worse the accuracy.
        assert!(speed_rms < 2.0 && moving_rms < 0.5, "speed RMS error {speed_rms}, moving {moving_rms}");
        assert!(accel_rms < 0.5, "acceleration RMS error {accel_rms}");
    }
}

/// Harsh events, idle time and average speed on every real trip, with the device's speed and
/// heading and without them: printed for the record (docs/kinematics.md lists them), bounded by
/// what the recordings can show. enviroCar samples every 5 s and go-track every 6 s (median):
/// a window of three fixes spans 10 s or more, so only an acceleration held that long could be
/// harsh, and no real car trip here holds one.
#[test]
fn real_trips_give_events_their_sampling_can_support() {
    let Some(root) = real_trips() else { return };
    let eng = engine();
    let mut total = 0;
    for track in envirocar_tracks(&root) {
        let without: Vec<Point> =
            track.points.iter().map(|p| Point { speed_mps: None, heading_deg: None, ..p.clone() }).collect();
        let mut line = format!("enviroCar {} ({} points):", track.id, track.points.len());
        for (label, points) in [("reported speed", track.points.clone()), ("positions only", without)] {
            let s = report_with(&eng, points).summary;
            let e = &s.events;
            line += &format!(
                " {label}: braking {} acceleration {} cornering {} speeding {}, idle {} s, avg {} km/h;",
                e.harsh_braking, e.harsh_acceleration, e.harsh_cornering, e.speeding, s.idle_time_s, s.avg_speed_kmh
            );
            total += e.harsh_braking + e.harsh_acceleration + e.harsh_cornering;
        }
        eprintln!("{line}");
    }
    let data = go_track(&root);
    let (mut go_events, mut go_trips) = ([0u32; 3], 0);
    for points in data.tracks.values() {
        let e = report_with(&eng, points.clone()).summary.events;
        for (sum, n) in go_events.iter_mut().zip([e.harsh_braking, e.harsh_acceleration, e.harsh_cornering]) {
            *sum += n;
        }
        go_trips += 1;
    }
    eprintln!("go-track, {go_trips} car tracks: braking, acceleration, cornering {go_events:?}");
    assert_eq!(total, 0, "harsh events on enviroCar trips sampled every 5 s");
    assert!(go_events.iter().sum::<u32>() <= 2, "harsh events on go-track car trips: {go_events:?}");
}
