//! Writes the project's own fixture trips (`fixtures/trips/`) from the seeded simulator.
//!
//! `cargo run -p tripline-enrich --example make_fixtures -- fixtures/trips`
//!
//! The output is deterministic; rerun only to change the fixtures on purpose, then regenerate the
//! golden summaries (`scripts/regen-golden.sh`).

use std::fmt::Write as _;
use std::path::PathBuf;

use tripline_enrich::sim::{Device, Leg, Start, simulate};
use tripline_model::Point;
use tripline_model::time::{format_rfc3339_ms, parse_rfc3339_ms};

fn ms(rfc3339: &str) -> i64 {
    parse_rfc3339_ms(rfc3339).expect("literal timestamp")
}

fn opt(value: Option<f64>) -> String {
    value.map(|v| format!("{v}")).unwrap_or_default()
}

fn csv_row(vehicle: &str, trip: &str, p: &Point) -> String {
    format!(
        "{vehicle},{trip},{},{},{},{},{},{},{},{}\n",
        p.seq.map(|s| s.to_string()).unwrap_or_default(),
        format_rfc3339_ms(p.ts_ms),
        p.lat,
        p.lon,
        opt(p.speed_mps),
        opt(p.heading_deg),
        opt(p.accuracy_m),
        p.ignition.map(|i| i.to_string()).unwrap_or_default(),
    )
}

/// Every event kind, a duplicate, a jump, a late point, bad points and a stop with jitter.
fn harsh_events() -> String {
    let legs = [
        Leg::Speed { to_kmh: 60.0, rate_mps2: 3.6 },
        Leg::Cruise { duration_s: 20.0 },
        Leg::Speed { to_kmh: 15.0, rate_mps2: 4.5 },
        Leg::Speed { to_kmh: 50.0, rate_mps2: 2.0 },
        Leg::Cruise { duration_s: 10.0 },
        Leg::Turn { angle_deg: 90.0, lateral_mps2: 5.5 },
        Leg::Speed { to_kmh: 150.0, rate_mps2: 2.5 },
        Leg::Cruise { duration_s: 30.0 },
        Leg::Speed { to_kmh: 0.0, rate_mps2: 2.0 },
        Leg::Stop { duration_s: 120.0, ignition: true },
        Leg::Speed { to_kmh: 40.0, rate_mps2: 1.5 },
        Leg::Cruise { duration_s: 30.0 },
        Leg::Speed { to_kmh: 0.0, rate_mps2: 1.5 },
    ];
    let device =
        Device { interval_s: 1.0, gps_noise_m: 2.5, reports_speed: true, reports_heading: true, first_seq: Some(1000) };
    let start = Start { lat: 45.4384, lon: 10.9917, heading_deg: 80.0, ts_ms: ms("2026-11-20T08:00:00Z") };
    let mut points = simulate(start, &legs, &device, 42);
    points[80].lat += 0.05; // a GPS jump: ~5.5 km off for one sample
    let late = points.remove(120); // arrives last
    let mut out = String::from("vehicle_id,trip_id,seq,ts,lat,lon,speed_mps,heading_deg,accuracy_m,ignition\n");
    for (i, p) in points.iter().enumerate() {
        out.push_str(&csv_row("fx-harsh", "fx-harsh-1", p));
        if i == 50 {
            out.push_str(&csv_row("fx-harsh", "fx-harsh-1", p)); // a duplicate
        }
    }
    out.push_str(&csv_row("fx-harsh", "fx-harsh-1", &late));
    let mut null_island = points[200].clone();
    (null_island.lat, null_island.lon, null_island.seq) = (0.0, 0.0, Some(9000));
    out.push_str(&csv_row("fx-harsh", "fx-harsh-1", &null_island));
    let mut off_globe = points[201].clone();
    (off_globe.lat, off_globe.seq) = (95.0, Some(9001));
    out.push_str(&csv_row("fx-harsh", "fx-harsh-1", &off_globe));
    out
}

/// No trip ids: two drives split by a 15-minute silence, then an ignition cycle.
fn no_trip_ids() -> String {
    let device =
        Device { interval_s: 5.0, gps_noise_m: 4.0, reports_speed: false, reports_heading: false, first_seq: None };
    let drive = |start: Start, seed| {
        let legs = [
            Leg::Speed { to_kmh: 45.0, rate_mps2: 1.5 },
            Leg::Cruise { duration_s: 90.0 },
            Leg::Turn { angle_deg: -90.0, lateral_mps2: 2.0 },
            Leg::Cruise { duration_s: 60.0 },
            Leg::Speed { to_kmh: 0.0, rate_mps2: 1.5 },
            Leg::Stop { duration_s: 60.0, ignition: false },
            Leg::Speed { to_kmh: 35.0, rate_mps2: 1.5 },
            Leg::Cruise { duration_s: 60.0 },
            Leg::Speed { to_kmh: 0.0, rate_mps2: 1.5 },
        ];
        simulate(start, &legs, &device, seed)
    };
    let first = drive(Start { lat: 51.6739, lon: 7.8150, heading_deg: 0.0, ts_ms: ms("2026-11-20T16:00:00Z") }, 7);
    let last_ts = first.last().map_or(0, |p| p.ts_ms);
    let second = drive(Start { lat: 51.6800, lon: 7.8000, heading_deg: 180.0, ts_ms: last_ts + 15 * 60 * 1000 }, 8);
    let mut out = String::new();
    for p in first.iter().chain(&second) {
        let mut line = String::new();
        write!(
            line,
            "{{\"vehicle_id\": \"fx-cutter\", \"ts\": \"{}\", \"lat\": {}, \"lon\": {}, \"accuracy_m\": {}, \"ignition\": {}}}",
            format_rfc3339_ms(p.ts_ms),
            p.lat,
            p.lon,
            opt(p.accuracy_m),
            p.ignition.unwrap_or(true)
        )
        .expect("write to a string");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A night drive in Chemnitz sampled every 15 s, as GPX (vehicle given on the command line).
fn night_drive() -> String {
    let legs = [
        Leg::Speed { to_kmh: 50.0, rate_mps2: 1.5 },
        Leg::Cruise { duration_s: 240.0 },
        Leg::Turn { angle_deg: 90.0, lateral_mps2: 2.0 },
        Leg::Cruise { duration_s: 240.0 },
        Leg::Speed { to_kmh: 0.0, rate_mps2: 1.5 },
    ];
    let device =
        Device { interval_s: 15.0, gps_noise_m: 3.0, reports_speed: false, reports_heading: false, first_seq: None };
    // 23:40 in Chemnitz (CET, UTC+1).
    let start = Start { lat: 50.8300, lon: 12.9100, heading_deg: 45.0, ts_ms: ms("2026-11-20T22:40:00Z") };
    let points = simulate(start, &legs, &device, 9);
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<gpx version=\"1.1\" creator=\"tripline make_fixtures\" xmlns=\"http://www.topografix.com/GPX/1/1\">\n  <trk><name>fx-night-1</name><trkseg>\n",
    );
    for p in &points {
        out.push_str(&format!(
            "    <trkpt lat=\"{}\" lon=\"{}\"><time>{}</time></trkpt>\n",
            p.lat,
            p.lon,
            format_rfc3339_ms(p.ts_ms)
        ));
    }
    out.push_str("  </trkseg></trk>\n</gpx>\n");
    out
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fixtures/trips".to_owned()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("harsh-events.csv"), harsh_events())?;
    std::fs::write(dir.join("no-trip-ids.jsonl"), no_trip_ids())?;
    std::fs::write(dir.join("night-drive.gpx"), night_drive())?;
    eprintln!("wrote fixtures to {}", dir.display());
    Ok(())
}
