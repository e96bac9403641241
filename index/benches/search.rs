//! Search latency on a large index, and indexing throughput.
//!
//! `cargo bench -p tripline-index --bench search` (`TRIPLINE_BENCH_TRIPS` overrides the default
//! 1,000,000 trips). Generates trips for 20 tenants × 500 vehicles over 90 days with random scores,
//! distances, events, regions and places; indexes them on disk in one writer (trip updates/s),
//! then runs a mix of searches as tenants would (default listing, filters, free text, bbox,
//! sorts, deep pages, stats) and reports p50/p99 per kind and overall. Between the two, the
//! indexer's cycle: a live writer replacing 300 trips and committing, 60 times (commit p50/p99, CPU
//! per cycle with merges).

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark reports on stdout and fails loudly

use std::time::Instant;

use tripline_index::{GroupBy, SortOrder, TripIndex, TripQuery};
use tripline_model::{EventCounts, EventKind, Place, TenantId, TripId, TripStatus, TripSummary, VehicleId};
use tripline_store::{Checkpoint, TripRecord};

const TENANTS: u64 = 20;
const VEHICLES_PER_TENANT: u64 = 500;
const DAY_MS: i64 = 86_400_000;
const T0: i64 = 1_788_220_800_000; // 2026-09-01T00:00:00Z
const REGIONS: &[&str] = &["Berlin", "Brandenburg", "Hamburg", "Bavaria", "Hesse", "Saxony", "Bremen", "Saarland"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn trip(rng: &mut Rng, n: u64) -> TripRecord {
    let tenant = n % TENANTS;
    let vehicle = rng.below(VEHICLES_PER_TENANT);
    let start = T0 + rng.below(90 * DAY_MS as u64) as i64;
    let minutes = 5 + rng.below(90) as i64;
    let at = tripline_model::time::to_datetime;
    let mut events = EventCounts::default();
    for kind in EventKind::ALL {
        if rng.unit() < 0.2 {
            for _ in 0..=rng.below(3) {
                events.add(kind);
            }
        }
    }
    let regions: Vec<String> =
        (0..1 + rng.below(2)).map(|_| REGIONS[rng.below(REGIONS.len() as u64) as usize].to_owned()).collect();
    let (lat, lon) = (47.5 + rng.unit() * 7.0, 6.0 + rng.unit() * 8.0);
    let cells = tripline_model::cell::cells((0..10).map(|i| (lat + f64::from(i) * 0.005, lon + f64::from(i) * 0.005)));
    TripRecord {
        tenant: TenantId::parse(&format!("tenant-{tenant}")).unwrap(),
        summary: TripSummary {
            trip_id: TripId::parse(&format!("trip-{n}")).unwrap(),
            vehicle_id: VehicleId::parse(&format!("t{tenant}-car-{vehicle}")).unwrap(),
            status: if rng.unit() < 0.02 { TripStatus::Active } else { TripStatus::Completed },
            start_time: at(start),
            end_time: at(start + minutes * 60_000),
            duration_s: (minutes * 60) as f64,
            moving_time_s: (minutes * 50) as f64,
            idle_time_s: (minutes * 10) as f64,
            distance_km: (rng.unit() * 80.0 * 100.0).round() / 100.0,
            max_speed_kmh: 50.0 + rng.unit() * 100.0,
            avg_speed_kmh: 20.0 + rng.unit() * 60.0,
            start: Place { lat, lon, region: Some(regions[0].clone()) },
            end: Place { lat: lat + 0.05, lon: lon + 0.05, region: None },
            regions,
            events,
            speeding_s: 0.0,
            night_driving_s: 0.0,
            point_count: (minutes * 60) as u64,
            rejected_point_count: 0,
            score: (rng.unit() * 1000.0).round() / 10.0,
            score_version: 1,
            updated_at: at(start + minutes * 60_000),
        },
        events: Vec::new(),
        cells,
        dropped: Default::default(),
    }
}

/// The indexer's cycle: a live writer replaces a few hundred trips and commits, the reader
/// reloads. Reports the commit (reload included) and a reload alone, which the commit's time
/// holds once.
fn live_commits(index: &TripIndex, rng: &mut Rng, trips: u64) {
    const CYCLES: usize = 60;
    const CHANGED: u64 = 300;
    let mut writer = index.live_writer().unwrap();
    let (mut commits, mut reloads) = (Vec::new(), Vec::new());
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    for _ in 0..CYCLES {
        for _ in 0..CHANGED {
            let n = rng.below(trips);
            index.upsert(&writer, &trip(rng, n)).unwrap();
        }
        let t = Instant::now();
        index.commit(&mut writer, &Checkpoint::default()).unwrap();
        commits.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        index.reload().unwrap();
        reloads.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Merges started by these commits finish before the CPU is counted.
    writer.wait_merging_threads().unwrap();
    let (cpu, wall) = (cpu_seconds() - cpu, wall.elapsed().as_secs_f64());
    commits.sort_by(f64::total_cmp);
    reloads.sort_by(f64::total_cmp);
    println!(
        "live commit of {CHANGED} changed trips ({CYCLES} cycles): p50 {:.1} ms, p99 {:.1} ms; a reload alone p50 {:.1} ms; \
         CPU {:.0} ms a cycle (merges included) in {:.0} ms",
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
        percentile(&reloads, 0.5),
        cpu * 1000.0 / CYCLES as f64,
        wall * 1000.0 / CYCLES as f64,
    );
}

/// CPU time of this process so far (user and system, all threads), from `/proc/self/stat`;
/// 0 where there is none.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after_name.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<f64>().ok()).sum();
    ticks / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let trips: u64 = std::env::var("TRIPLINE_BENCH_TRIPS").ok().and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("tripline-search-bench-{}", std::process::id()));
    let index = TripIndex::open_or_create(&dir).unwrap();
    let mut writer = index.writer().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    for n in 0..trips {
        index.upsert(&writer, &trip(&mut rng, n)).unwrap();
        if n % 100_000 == 99_999 {
            index.commit(&mut writer, &Checkpoint::default()).unwrap();
        }
    }
    index.commit(&mut writer, &Checkpoint::default()).unwrap();
    let indexing = started.elapsed().as_secs_f64();
    println!(
        "indexed {trips} trips in {indexing:.1} s: {:.0} trip updates/s (one writer, commit every 100k)",
        trips as f64 / indexing
    );
    drop(writer);
    live_commits(&index, &mut rng, trips);

    type Make = fn(&mut Rng) -> TripQuery;
    let kinds: Vec<(&str, Make)> = vec![
        ("default listing", |_| TripQuery { limit: 50, ..TripQuery::default() }),
        ("vehicle", |r| TripQuery {
            vehicle_id: Some(VehicleId::parse(&format!("t3-car-{}", r.below(VEHICLES_PER_TENANT))).unwrap()),
            limit: 50,
            ..TripQuery::default()
        }),
        ("time window + event", |r| {
            let from = T0 + r.below(80) as i64 * DAY_MS;
            TripQuery {
                from_ms: Some(from),
                to_ms: Some(from + 7 * DAY_MS),
                events: vec![EventKind::HarshBraking],
                limit: 50,
                ..TripQuery::default()
            }
        }),
        ("score range, by score", |r| {
            let lo = r.below(80) as f64;
            TripQuery {
                min_score: Some(lo),
                max_score: Some(lo + 10.0),
                sort: SortOrder::ScoreDesc,
                limit: 50,
                ..TripQuery::default()
            }
        }),
        ("region + distance, by distance", |r| TripQuery {
            regions: vec![REGIONS[r.below(REGIONS.len() as u64) as usize].to_owned()],
            min_distance_km: Some(20.0),
            sort: SortOrder::DistanceDesc,
            limit: 50,
            ..TripQuery::default()
        }),
        ("free text", |r| TripQuery {
            q: Some(format!("{} speeding", REGIONS[r.below(REGIONS.len() as u64) as usize])),
            limit: 50,
            ..TripQuery::default()
        }),
        ("bbox", |r| {
            let (lat, lon) = (48.0 + r.unit() * 6.0, 7.0 + r.unit() * 6.0);
            TripQuery { bbox: Some((lon, lat, lon + 0.3, lat + 0.2)), limit: 50, ..TripQuery::default() }
        }),
        ("limit 1000", |_| TripQuery { limit: 1000, ..TripQuery::default() }),
    ];
    let mut all = Vec::new();
    println!("{:<32} {:>9} {:>9}", "query (tenant-scoped, 200 each)", "p50 ms", "p99 ms");
    for (name, make) in &kinds {
        let mut times = Vec::new();
        for i in 0..200u64 {
            let tenant = TenantId::parse(&format!("tenant-{}", i % TENANTS)).unwrap();
            let mut query = make(&mut rng);
            if query.vehicle_id.is_some() {
                query.vehicle_id = Some(
                    VehicleId::parse(&format!("t{}-car-{}", i % TENANTS, rng.below(VEHICLES_PER_TENANT))).unwrap(),
                );
            }
            let t = Instant::now();
            let page = index.search(&tenant, &query).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(page);
        }
        times.sort_by(f64::total_cmp);
        println!("{name:<32} {:>9.2} {:>9.2}", percentile(&times, 0.5), percentile(&times, 0.99));
        all.extend(times);
    }
    // Deep paging: 20 pages of 50 with cursors.
    let mut times = Vec::new();
    for i in 0..20u64 {
        let tenant = TenantId::parse(&format!("tenant-{i}")).unwrap();
        let mut cursor = None;
        for _ in 0..20 {
            let t = Instant::now();
            let page = index.search(&tenant, &TripQuery { limit: 50, cursor, ..TripQuery::default() }).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            cursor = page.next;
        }
    }
    times.sort_by(f64::total_cmp);
    println!("{:<32} {:>9.2} {:>9.2}", "pages 1-20 by cursor", percentile(&times, 0.5), percentile(&times, 0.99));
    all.extend(times);
    let groupings = [
        ("stats by event kind", GroupBy::EventKind),
        ("stats by region", GroupBy::Region),
        ("stats by vehicle", GroupBy::VehicleId),
        ("stats by day (Europe/Berlin)", GroupBy::parse("day", Some("Europe/Berlin")).unwrap()),
    ];
    for (name, group) in groupings {
        let mut times = Vec::new();
        for i in 0..50u64 {
            let tenant = TenantId::parse(&format!("tenant-{}", i % TENANTS)).unwrap();
            let t = Instant::now();
            std::hint::black_box(index.stats(&tenant, &TripQuery::default(), group).unwrap());
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!("{name:<32} {:>9.2} {:>9.2}", percentile(&times, 0.5), percentile(&times, 0.99));
        all.extend(times);
    }
    all.sort_by(f64::total_cmp);
    println!("{:<32} {:>9.2} {:>9.2}", "ALL searches and stats", percentile(&all, 0.5), percentile(&all, 0.99));
    let _ = std::fs::remove_dir_all(&dir);
}
