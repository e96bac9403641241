//! Kinematics that hold at any sampling rate: the same simulated drives, with a consumer
//! receiver's errors (a wandering offset of metres, white noise, multipath outliers), sampled at
//! 1, 5, 10 and 20 Hz with and without reported speed and heading.

use tripline_enrich::EnrichConfig;
use tripline_enrich::sim::{Device, Leg, Receiver, Rng, Start, Track};
use tripline_model::{EventKind, Point, TripSummary};

use crate::support::*;

/// Sampling rates, Hz.
const RATES: [f64; 4] = [1.0, 5.0, 10.0, 20.0];
/// Physics step of the simulated drives (fine enough for 20 Hz).
const STEP_S: f64 = 0.01;
/// White noise of the fixes on top of the receiver's wander, metres per axis.
const WHITE_M: f64 = 0.1;

fn seeds() -> u64 {
    std::env::var("TRIPLINE_RATE_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

/// A calm drive of about `minutes`: pulling away and braking at 1–2.5 m/s², bends at up to
/// 2.5 m/s² lateral, traffic-light stops of 20–60 s.
fn calm_legs(rng: &mut Rng, minutes: f64) -> Vec<Leg> {
    let mut legs = Vec::new();
    let mut elapsed_s = 0.0;
    let mut speed_kmh = 0.0;
    while elapsed_s < minutes * 60.0 {
        let roll = rng.unit();
        if speed_kmh == 0.0 {
            speed_kmh = rng.range(40.0, 80.0);
            legs.push(Leg::Speed { to_kmh: speed_kmh, rate_mps2: rng.range(1.0, 2.5) });
            elapsed_s += 10.0;
        } else if roll < 0.4 {
            let duration_s = rng.range(15.0, 60.0);
            legs.push(Leg::Cruise { duration_s });
            elapsed_s += duration_s;
        } else if roll < 0.65 {
            legs.push(Leg::Turn { angle_deg: rng.range(-90.0, 90.0), lateral_mps2: rng.range(1.0, 2.5) });
            elapsed_s += 5.0;
        } else if roll < 0.85 {
            speed_kmh = (speed_kmh + rng.range(-25.0, 25.0)).clamp(30.0, 110.0);
            legs.push(Leg::Speed { to_kmh: speed_kmh, rate_mps2: rng.range(0.8, 2.0) });
            elapsed_s += 10.0;
        } else {
            speed_kmh = 0.0;
            legs.push(Leg::Speed { to_kmh: 0.0, rate_mps2: rng.range(1.0, 2.5) });
            let duration_s = rng.range(20.0, 60.0);
            legs.push(Leg::Stop { duration_s, ignition: true });
            elapsed_s += duration_s + 10.0;
        }
    }
    legs.push(Leg::Speed { to_kmh: 0.0, rate_mps2: 1.5 });
    legs
}

/// A calm drive with three injected manoeuvres: braking at −4 m/s² for 1.5 s, accelerating at
/// +3.5 m/s² for 2 s, and a bend at 5 m/s² lateral for about 2 s.
fn manoeuvre_legs(rng: &mut Rng) -> Vec<Leg> {
    let mut legs = calm_legs(rng, 1.0);
    let calm = |rng: &mut Rng, legs: &mut Vec<Leg>| {
        legs.push(Leg::Cruise { duration_s: rng.range(15.0, 30.0) });
    };
    legs.pop();
    legs.push(Leg::Speed { to_kmh: 70.0, rate_mps2: 1.5 });
    calm(rng, &mut legs);
    legs.push(Leg::Speed { to_kmh: 70.0 - 4.0 * 1.5 * 3.6, rate_mps2: 4.0 });
    calm(rng, &mut legs);
    legs.push(Leg::Speed { to_kmh: 48.4 + 3.5 * 2.0 * 3.6, rate_mps2: 3.5 });
    calm(rng, &mut legs);
    // 5 m/s² at 73.6 km/h (20.4 m/s) turns 14°/s: 28° take 2 s.
    legs.push(Leg::Turn { angle_deg: if rng.unit() < 0.5 { 28.0 } else { -28.0 }, lateral_mps2: 5.0 });
    calm(rng, &mut legs);
    legs.extend(calm_legs(rng, 1.0));
    legs
}

fn start(seed: u64) -> Start {
    let mut rng = Rng::new(seed ^ 0x57a7);
    Start {
        lat: rng.range(-50.0, 60.0),
        lon: rng.range(-120.0, 120.0),
        heading_deg: rng.range(0.0, 360.0),
        ts_ms: T0_MS,
    }
}

/// Seconds the track stands still (slower than the engine's moving threshold, 3 km/h, for at
/// least its `min_idle_s`: shorter halts are driving), and seconds in all, over the span its
/// fixes `points` cover (at 1 Hz the track may end up to a second after its last fix).
fn truth_times(track: &Track, points: &[Point]) -> (f64, f64) {
    let config = EnrichConfig::default();
    let threshold_mps = config.moving_speed_kmh / 3.6;
    let seconds = |p: Option<&Point>| p.map_or(0.0, |p| (p.ts_ms - T0_MS) as f64 / 1000.0);
    let (first_t, end_t) = (seconds(points.first()), seconds(points.last()));
    let (mut standing_s, mut halt_s) = (0.0, 0.0);
    let mut last_t = first_t;
    for state in track.states.iter().filter(|s| s.t_s >= first_t && s.t_s <= end_t + 1e-9) {
        if state.speed_mps < threshold_mps {
            halt_s += state.t_s - last_t;
        } else {
            if halt_s >= config.min_idle_s {
                standing_s += halt_s;
            }
            halt_s = 0.0;
        }
        last_t = state.t_s;
    }
    if halt_s >= config.min_idle_s {
        standing_s += halt_s;
    }
    (standing_s, last_t - first_t)
}

fn sample(track: &Track, hz: f64, reports: bool, seed: u64) -> Vec<Point> {
    let device = Device {
        interval_s: 1.0 / hz,
        gps_noise_m: WHITE_M,
        reports_speed: reports,
        reports_heading: reports,
        first_seq: None,
    };
    track.sample(&device, &Receiver::consumer(4.0), seed)
}

fn harsh(summary: &TripSummary) -> [u32; 3] {
    [EventKind::HarshBraking, EventKind::HarshAcceleration, EventKind::HarshCornering].map(|k| summary.events.get(k))
}

/// Whether `measured` is within `share` of `truth` (or a second, for a trip that hardly stands).
fn within(measured: f64, truth: f64, share: f64) -> bool {
    (measured - truth).abs() <= (share * truth).max(1.0)
}

/// Harsh events allowed in the calm drives, and the share of the truth moving and idle time
/// must be within. At 1 Hz with positions alone, a quadratic through three fixes is the only
/// estimate that still resolves a 1.5 s manoeuvre, and it keeps all of their noise: a calm
/// drive's 2.5 m/s² reads above 3 m/s² in a few drives in a hundred (docs/kinematics.md).
/// Everywhere else the bounds hold as they are, and times hold them at every rate.
fn calm_bounds(hz: f64, reports: bool) -> (usize, f64) {
    if hz < 2.0 && !reports { (5, 0.02) } else { (0, 0.02) }
}

#[test]
fn calm_drives_give_no_harsh_event_at_any_rate() {
    let mut failures = Vec::new();
    let mut worst = [(0f64, 0f64); 8];
    let mut with_events = [0usize; 8];
    for seed in 0..seeds() {
        let legs = calm_legs(&mut Rng::new(seed), 5.0);
        let track = Track::drive(start(seed), &legs, STEP_S);
        for (r, hz) in RATES.into_iter().enumerate() {
            for reports in [true, false] {
                let points = sample(&track, hz, reports, seed);
                let (standing_s, total_s) = truth_times(&track, &points);
                let summary = report(points).summary;
                let case = format!("seed {seed} at {hz} Hz (speed reported: {reports})");
                let slot = r * 2 + usize::from(reports);
                with_events[slot] += usize::from(harsh(&summary) != [0, 0, 0]);
                let (moving, idle) = (summary.moving_time_s, summary.idle_time_s);
                let share = calm_bounds(hz, reports).1;
                if !within(moving, total_s - standing_s, share) || !within(idle, standing_s, share) {
                    failures.push(format!(
                        "{case}: moving {moving} s, idle {idle} s; truth {:.1} s, {standing_s:.1} s",
                        total_s - standing_s
                    ));
                }
                worst[slot].0 = worst[slot].0.max((moving - (total_s - standing_s)).abs() / (total_s - standing_s));
                worst[slot].1 = worst[slot].1.max((idle - standing_s).abs() / standing_s.max(1.0));
            }
        }
    }
    eprintln!("drives with a harsh event by rate, without / with speed: {with_events:?}");
    eprintln!("largest relative error of (moving, idle) by rate, without / with speed: {worst:.3?}");
    for (r, hz) in RATES.into_iter().enumerate() {
        for reports in [true, false] {
            let (allowed, _) = calm_bounds(hz, reports);
            let found = with_events[r * 2 + usize::from(reports)];
            if found > allowed {
                failures.push(format!("{hz} Hz (speed reported: {reports}): {found} calm drives with a harsh event"));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Share of seeds in which each manoeuvre must come out as exactly one event, by rate: at 1 Hz
/// a 1.5 s brake straddles two sampling intervals, and the best any estimate can say of it
/// is 3.0–4.0 m/s² depending on where the samples fall (docs/kinematics.md); at 5 Hz the
/// 2-second window holds 11 fixes and is noisier than at 10 and 20. A turn counts only where
/// reported headings and positions agree on it, which at 1 Hz costs a few turns. (Measured over
/// 100 seeds: 98/99/98 % at 1 Hz with speed, 89/97/100 % without; 100/100/100 % and
/// 100/99/100 % at 5 Hz; all found at 10 and 20 Hz. Over 500 seeds: 98/99/96 % at 1 Hz with
/// speed.)
fn required_share(hz: f64, reports: bool) -> [f64; 3] {
    match (hz as u32, reports) {
        (1, true) => [0.95, 0.95, 0.95],
        (1, false) => [0.8, 0.9, 0.95],
        (5, _) => [0.97, 0.97, 0.97],
        _ => [1.0, 1.0, 1.0],
    }
}

#[test]
fn injected_manoeuvres_give_exactly_their_events_at_any_rate() {
    let mut failures = Vec::new();
    let mut found = [[0u32; 3]; 8];
    let n = seeds();
    for seed in 0..n {
        let legs = manoeuvre_legs(&mut Rng::new(seed ^ 0xbad));
        let track = Track::drive(start(seed), &legs, STEP_S);
        for (r, hz) in RATES.into_iter().enumerate() {
            for reports in [true, false] {
                let full = report(sample(&track, hz, reports, seed));
                let counts = harsh(&full.summary);
                if counts.iter().any(|&c| c > 1) {
                    failures.push(format!(
                        "seed {seed} at {hz} Hz (speed reported: {reports}): {counts:?} {:?}",
                        full.events
                    ));
                }
                for (kind, count) in counts.into_iter().enumerate() {
                    found[r * 2 + usize::from(reports)][kind] += u32::from(count == 1);
                }
            }
        }
    }
    for (r, hz) in RATES.into_iter().enumerate() {
        for reports in [true, false] {
            let shares = found[r * 2 + usize::from(reports)].map(|f| f64::from(f) / n as f64);
            eprintln!(
                "{hz} Hz (speed reported: {reports}): braking, acceleration, cornering found in {shares:?} of seeds"
            );
            for (kind, (share, required)) in shares.into_iter().zip(required_share(hz, reports)).enumerate() {
                if share < required {
                    failures.push(format!("{hz} Hz (speed reported: {reports}): kind {kind} found in {share} of seeds, {required} required"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
