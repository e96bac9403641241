//! Kinematics estimated over a span of time, not between neighbouring samples.
//!
//! At 10 Hz, one metre of GPS wander between two fixes reads as 10 m/s of speed and a harsh
//! event; differences between neighbours are only sound at the rate they were tuned for. Here a
//! quadratic in time is fitted (weighted least squares) to the positions of a trailing window of
//! fixed *duration*, so the same drive sampled at 1, 5, 10 or 20 Hz is measured over the same
//! span: more samples only make the estimate quieter. The fit gives a velocity vector (speed and
//! course) at the window's mean time and an acceleration vector, split into a longitudinal part
//! (along the velocity) and a lateral part. Where the device reports speed (Doppler, far better
//! than differentiated positions), the longitudinal acceleration is the slope of a straight line
//! through the reported speeds of a shorter window instead. `docs/kinematics.md` gives the model,
//! its noise and its limits.
//!
//! The fit's sums slide with the window ([`FitSums`]): a fix is added when it enters and taken
//! out when it leaves, so a fix costs the same at any sampling rate. The sums are kept in exact
//! integer arithmetic (times in ms, positions in nanodegrees, weights in fixed point), so they
//! depend only on which fixes the window holds, never on the order they came and went in: a live
//! trip continued point by point and a recompute from scratch give the same bits.

use tripline_model::Point;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;
/// Positional accuracy assumed where a point gives none, for the relative weights.
const DEFAULT_ACCURACY_M: f64 = 5.0;
/// A fix this accurate or better weighs as much as one of exactly this accuracy (no single
/// fix dominates a window by claiming centimetres).
const MIN_ACCURACY_M: f64 = 1.0;
/// Positions in the sums are whole nanodegrees (about a millimetre).
const UNITS_PER_DEGREE: f64 = 1e9;
/// Weights in the sums are `WEIGHT_ONE / accuracy²`, rounded (at least 1): a fix of 1 m weighs
/// 65,536, one of 5 m 2,621 (relative weights within 0.04 % down to 50 m).
const WEIGHT_ONE: f64 = 65_536.0;
/// The longest span, in ms, a window of the fit may cover (a setting's limit keeps windows below
/// it). With weights of at most 2¹⁶, times within 2²¹ ms of the origin, positions within 2⁴⁰
/// nanodegrees of it and at most [`MAX_FIT_FIXES`] fixes, every sum and every step of moving
/// the origin stays below 2¹¹⁵.
pub(crate) const MAX_FIT_SPAN_MS: i64 = 1 << 20;
/// The most fixes a window of the fit holds.
pub(crate) const MAX_FIT_FIXES: usize = 512;

/// How far before the newest fix the speed of a fix is read from its window's fit.
const NOW_LAG_S: f64 = 1.0;

/// What a window of fixes says about the vehicle's motion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Motion {
    /// Speed at the window's mean time, m/s.
    pub(crate) speed_mps: f64,
    /// Speed at most [`NOW_LAG_S`] before the newest fix, m/s.
    pub(crate) speed_now_mps: f64,
    /// Course at the window's mean time, degrees clockwise from north (when fast enough to
    /// have one).
    pub(crate) heading_deg: Option<f64>,
    /// Acceleration along the course, m/s² (when the vehicle is fast enough to have a course,
    /// or from reported speeds).
    pub(crate) longitudinal_mps2: Option<f64>,
    /// Acceleration across the course, m/s², positive turning right.
    pub(crate) lateral_mps2: Option<f64>,
    /// The window's mean time: when these values hold, Unix ms.
    pub(crate) at_ms: i64,
}

/// A fix as the sums take it: whole milliseconds, nanodegrees, a fixed-point weight, and any
/// reported speed (mm/s) and heading (unwrapped, microdegrees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fix {
    ts_ms: i64,
    lat: i64,
    lon: i64,
    weight: i64,
    /// [`NONE`] when not reported.
    speed: i64,
    /// [`NONE`] when not reported, or reported at a speed too low for a heading.
    heading: i64,
}

/// A value not reported, in a [`Fix`].
const NONE: i64 = i64::MIN;
const MICRODEGREES: f64 = 1e6;

impl Fix {
    /// The fix of `point`, weighted by `1 / accuracy²`. `headings`: the raw and unwrapped
    /// heading of the fix before that had one (updated): headings are unwrapped fix to fix
    /// (the turn between two is less than 180°), so a window's line through them has the turn
    /// rate for its slope. `min_heading_speed_mps`: a heading at a lower speed is compass noise.
    pub(crate) fn of(point: &Point, headings: &mut Option<(i64, i64)>, min_heading_speed_mps: f64) -> Self {
        let accuracy = point.accuracy_m.unwrap_or(DEFAULT_ACCURACY_M).max(MIN_ACCURACY_M);
        let heading = match point.heading_deg.zip(point.speed_mps) {
            Some((h, v)) if v >= min_heading_speed_mps => {
                let raw = whole(h * MICRODEGREES);
                let unwrapped = headings.map_or(raw, |(before, unwrapped)| {
                    let turn = (raw - before).rem_euclid(360_000_000);
                    unwrapped + if turn > 180_000_000 { turn - 360_000_000 } else { turn }
                });
                *headings = Some((raw, unwrapped));
                unwrapped
            }
            _ => NONE,
        };
        Fix {
            ts_ms: point.ts_ms,
            lat: whole(point.lat * UNITS_PER_DEGREE),
            lon: whole(point.lon * UNITS_PER_DEGREE),
            weight: whole(WEIGHT_ONE / (accuracy * accuracy)).max(1),
            speed: point.speed_mps.map_or(NONE, |v| whole(v * 1000.0)),
            heading,
        }
    }

    /// The time of the fix, Unix ms.
    pub(crate) fn ts_ms(&self) -> i64 {
        self.ts_ms
    }

    /// Whether the fix reports a speed.
    pub(crate) fn has_speed(&self) -> bool {
        self.speed != NONE
    }
}

/// The sums of a weighted least-squares quadratic through the fixes of a window, relative to an
/// origin: `Σ w·tᵏ` for k ≤ 4 and `Σ w·tᵏ·z` for k ≤ 2 and each axis, with `t` in ms and `z` in
/// nanodegrees. Adding, removing and moving the origin are exact.
///
/// The origin is a corner of the grid cell of the window's first fix ([`ORIGIN_GRID_MS`],
/// [`ORIGIN_GRID_UNITS`]): a function of the window alone, near enough for the fit to centre
/// its moments in floating point without loss, and one that moves every few seconds rather than
/// with every fix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FitSums {
    origin: (i64, i64, i64),
    count: usize,
    time: [i128; 5],
    east: [i128; 3],
    north: [i128; 3],
    /// The reported headings of the same fixes (see [`Headings`]): the turn over the span the
    /// positions measure, so that the two measure the same stretch of road.
    headings: Headings,
}

/// The time grid of the sums' origin, ms.
const ORIGIN_GRID_MS: i64 = 4096;
/// The position grid of the sums' origin, nanodegrees (about 120 km).
const ORIGIN_GRID_UNITS: i64 = 1 << 30;

/// Sums over a window's fixes that slide with it: fixes are taken in as they enter and out as
/// they leave, exactly, so the sums are those of the fixes held whatever came and went.
pub(crate) trait Sliding: Copy + Default {
    /// No fixes, for a window starting with `first`.
    fn empty(first: &Fix) -> Self;
    /// Takes `fix` in.
    fn add(&mut self, fix: &Fix);
    /// Takes `fix` (taken in before) out.
    fn remove(&mut self, fix: &Fix);
    /// The window starts with `first` now.
    fn rebase(&mut self, first: &Fix);
}

impl Sliding for FitSums {
    fn empty(first: &Fix) -> Self {
        FitSums { origin: Self::origin_for(first), ..FitSums::default() }
    }

    fn add(&mut self, fix: &Fix) {
        self.count += 1;
        self.headings.apply(fix, 1);
        let (time, east, north) = self.terms(fix);
        self.time.iter_mut().zip(time).for_each(|(sum, term)| *sum += term);
        self.east.iter_mut().zip(east).for_each(|(sum, term)| *sum += term);
        self.north.iter_mut().zip(north).for_each(|(sum, term)| *sum += term);
    }

    fn remove(&mut self, fix: &Fix) {
        self.count -= 1;
        self.headings.apply(fix, -1);
        let (time, east, north) = self.terms(fix);
        self.time.iter_mut().zip(time).for_each(|(sum, term)| *sum -= term);
        self.east.iter_mut().zip(east).for_each(|(sum, term)| *sum -= term);
        self.north.iter_mut().zip(north).for_each(|(sum, term)| *sum -= term);
    }

    /// Moves the origin to that of a window starting with `first` (the sums stay those of the
    /// same fixes).
    fn rebase(&mut self, first: &Fix) {
        let origin = Self::origin_for(first);
        if self.count == 0 {
            *self = FitSums { origin, ..FitSums::default() };
            return;
        }
        if origin == self.origin {
            return;
        }
        let (d, dy, dx) = (
            i128::from(origin.0 - self.origin.0),
            i128::from(origin.1 - self.origin.1),
            i128::from(origin.2 - self.origin.2),
        );
        // Positions first (Σ w·tᵏ·(z − dz) = Σ w·tᵏ·z − dz·Σ w·tᵏ), then time, by the binomial
        // expansion of (t − d)ᵏ.
        for k in 0..3 {
            self.east[k] -= dx * self.time[k];
            self.north[k] -= dy * self.time[k];
        }
        if d != 0 {
            let [s0, s1, s2, s3, s4] = self.time;
            let (d2, d3) = (d * d, d * d * d);
            self.time = [
                s0,
                s1 - d * s0,
                s2 - 2 * d * s1 + d2 * s0,
                s3 - 3 * d * s2 + 3 * d2 * s1 - d3 * s0,
                s4 - 4 * d * s3 + 6 * d2 * s2 - 4 * d3 * s1 + d3 * d * s0,
            ];
            for z in [&mut self.east, &mut self.north] {
                let [z0, z1, z2] = *z;
                *z = [z0, z1 - d * z0, z2 - 2 * d * z1 + d2 * z0];
            }
        }
        self.origin = origin;
    }
}

impl FitSums {
    /// The origin of the sums of a window that starts with `first`.
    fn origin_for(first: &Fix) -> (i64, i64, i64) {
        let corner = |value: i64, grid: i64| value.div_euclid(grid) * grid;
        (
            corner(first.ts_ms, ORIGIN_GRID_MS),
            corner(first.lat, ORIGIN_GRID_UNITS),
            corner(first.lon, ORIGIN_GRID_UNITS),
        )
    }

    /// How many fixes the sums hold.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The origin's time, Unix ms.
    fn origin_ms(&self) -> i64 {
        self.origin.0
    }

    /// What `fix` adds to each sum of the fit: `(time, east, north)`. The products that fit 64
    /// bits are taken in 64 bits (`w·t²` is below 2⁵⁸, `w·z` below 2⁵⁶), the others widened.
    fn terms(&self, fix: &Fix) -> ([i128; 5], [i128; 3], [i128; 3]) {
        let t = fix.ts_ms - self.origin.0;
        let (x, y) = (fix.lon - self.origin.2, fix.lat - self.origin.1);
        let w = fix.weight;
        let (wt, wt2) = (w * t, w * t * t);
        let wt3 = i128::from(wt2) * i128::from(t);
        let wide = |a: i64, b: i64| i128::from(a) * i128::from(b);
        (
            [i128::from(w), i128::from(wt), i128::from(wt2), wt3, wt3 * i128::from(t)],
            [i128::from(w * x), wide(wt, x), wide(wt2, x)],
            [i128::from(w * y), wide(wt, y), wide(wt2, y)],
        )
    }

    /// The quadratic through the fixes: velocity (east, north, m/s) at their weighted mean time,
    /// acceleration (m/s²), and that mean time relative to the origin, in seconds. `None` when
    /// there are fewer than three fixes or they are too degenerate to say anything (all at one
    /// or two instants). `cos_lat`: the cosine of the window's latitude (any of its fixes': a
    /// window spans metres).
    fn quadratic(&self, cos_lat: f64) -> Option<Quadratic> {
        if self.count < 3 {
            return None;
        }
        // Exact integers to seconds and metres; then the moments are centred on the weighted
        // mean time, where the velocity comes out and the equations are well conditioned.
        const PER_MS: [f64; 5] = [1.0, 1e-3, 1e-6, 1e-9, 1e-12];
        let [s0, s1, s2, s3, s4] = [0, 1, 2, 3, 4].map(|k| to_f64(self.time[k]) * PER_MS[k]);
        let per_unit = METRES_PER_DEGREE / UNITS_PER_DEGREE;
        let east = [0, 1, 2].map(|k| to_f64(self.east[k]) * per_unit * cos_lat * PER_MS[k]);
        let north = [0, 1, 2].map(|k| to_f64(self.north[k]) * per_unit * PER_MS[k]);
        let m = s1 / s0;
        let (m2, m3) = (m * m, m * m * m);
        let moments = Moments {
            s0,
            s1: s1 - m * s0,
            s2: s2 - 2.0 * m * s1 + m2 * s0,
            s3: s3 - 3.0 * m * s2 + 3.0 * m2 * s1 - m3 * s0,
            s4: s4 - 4.0 * m * s3 + 6.0 * m2 * s2 - 4.0 * m3 * s1 + m3 * m * s0,
        };
        let centre = |[z0, z1, z2]: [f64; 3]| (z0, z1 - m * z0, z2 - 2.0 * m * z1 + m2 * z0);
        let (x0, x1, x2) = centre(east);
        let (y0, y1, y2) = centre(north);
        let (vx, ax) = solve_quadratic(&moments, x0, x1, x2)?;
        let (vy, ay) = solve_quadratic(&moments, y0, y1, y2)?;
        Some(Quadratic { velocity: (vx, vy), acceleration: (ax, ay), mean_s: m })
    }
}

/// `value` as an `f64` (within an ulp: from the two halves of its magnitude, which is faster than
/// the exactly rounded conversion and rounds the same way every time).
fn to_f64(value: i128) -> f64 {
    const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;
    let magnitude = value.unsigned_abs();
    let f = ((magnitude >> 64) as u64 as f64) * TWO_TO_64 + (magnitude as u64 as f64);
    if value < 0 { -f } else { f }
}

/// `value` to the nearest whole number (halves away from zero), without a library call.
fn whole(value: f64) -> i64 {
    (value + 0.5f64.copysign(value)) as i64
}

/// A fitted quadratic: see [`FitSums::quadratic`].
struct Quadratic {
    velocity: (f64, f64),
    acceleration: (f64, f64),
    mean_s: f64,
}

/// Sums of a weighted least-squares fit of a quadratic in time.
#[derive(Default, Clone, Copy)]
struct Moments {
    s0: f64,
    s1: f64,
    s2: f64,
    s3: f64,
    s4: f64,
}

/// The reported speeds and headings of the newest fixes of a window, as the sums of the
/// straight lines through them (exact integers, like [`FitSums`]).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReportedSums {
    /// Reported speeds (mm/s) against time (ms).
    speeds: LineSums,
    /// Reported headings of the same fixes.
    headings: Headings,
}

impl Sliding for ReportedSums {
    fn empty(_: &Fix) -> Self {
        ReportedSums::default()
    }

    /// Takes `fix` in (when it reports a speed).
    fn add(&mut self, fix: &Fix) {
        self.apply(fix, 1);
    }

    fn remove(&mut self, fix: &Fix) {
        self.apply(fix, -1);
    }

    /// Line slopes do not depend on where time starts.
    fn rebase(&mut self, _: &Fix) {}
}

impl ReportedSums {
    fn apply(&mut self, fix: &Fix, sign: i64) {
        if fix.speed != NONE {
            self.speeds.apply(fix.ts_ms, fix.speed, sign);
            self.headings.apply(fix, sign);
        }
    }
}

/// The reported headings of a window's fixes that have one, as the sums of the straight line
/// through them (unwrapped microdegrees against ms), and the sum of those fixes' speeds (mm/s):
/// speed × turn rate is the lateral acceleration.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Headings {
    line: LineSums,
    speeds: i128,
}

impl Headings {
    fn apply(&mut self, fix: &Fix, sign: i64) {
        if fix.heading != NONE {
            self.line.apply(fix.ts_ms, fix.heading, sign);
            self.speeds += i128::from(sign * fix.speed);
        }
    }

    /// The lateral acceleration they give, m/s² (positive to the right).
    fn lateral_mps2(&self) -> Option<f64> {
        self.line.slope().map(|microdegrees_per_ms| {
            let rate = (microdegrees_per_ms * 1000.0 / MICRODEGREES).to_radians();
            rate * to_f64(self.speeds) / 1000.0 / self.line.n as f64
        })
    }
}

/// The sums of a least-squares straight line through `(t, value)` samples, exact: times are Unix
/// ms and values whole units, so that sums of squares of times stay below 2¹⁰⁰.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct LineSums {
    n: i64,
    t: i128,
    tt: i128,
    value: i128,
    tv: i128,
}

impl LineSums {
    fn apply(&mut self, t: i64, value: i64, sign: i64) {
        let (t, value, sign128) = (i128::from(t), i128::from(value), i128::from(sign));
        self.n += sign;
        self.t += sign128 * t;
        self.tt += sign128 * t * t;
        self.value += sign128 * value;
        self.tv += sign128 * t * value;
    }

    /// The line's slope, in units per ms: `None` with fewer than two samples at different times.
    fn slope(&self) -> Option<f64> {
        let n = i128::from(self.n);
        let spread = n * self.tt - self.t * self.t;
        (self.n >= 2 && spread > 0).then(|| to_f64(n * self.tv - self.t * self.value) / to_f64(spread))
    }
}

/// The motion of a window: the quadratic through `sums` (the window's fixes, the newest
/// included, which is at `newest_ms`, and their reported headings), with `reported` speeds and
/// headings of its newest fixes.
/// `None` when the window is too short or too degenerate to say anything.
/// `min_heading_speed_mps`: below this the course (and so the split of the acceleration) is
/// noise.
pub(crate) fn motion(
    sums: &FitSums,
    newest_ms: i64,
    reported: &ReportedSums,
    cos_lat: f64,
    min_heading_speed_mps: f64,
) -> Option<Motion> {
    let Quadratic { velocity: (vx, vy), acceleration: (ax, ay), mean_s } = sums.quadratic(cos_lat)?;
    let speed_mps = (vx * vx + vy * vy).sqrt();
    // The speed of "now" is read at most `NOW_LAG_S` before the newest fix: where the fixes
    // are dense that is the window's middle (quietest), where they are sparse the fit is
    // read nearer its end rather than seconds late.
    let newest_s = (newest_ms - sums.origin_ms()) as f64 / 1000.0;
    let ahead = (newest_s - mean_s - NOW_LAG_S).max(0.0);
    let (nx, ny) = (vx + ax * ahead, vy + ay * ahead);
    let speed_now_mps = (nx * nx + ny * ny).sqrt();
    let at_ms = sums.origin_ms() + (mean_s * 1000.0).round() as i64;
    let has_course = speed_mps >= min_heading_speed_mps;
    let heading_deg = has_course.then(|| {
        let h = vx.atan2(vy).to_degrees();
        if h < 0.0 { h + 360.0 } else { h }
    });
    let along = has_course.then(|| (ax * vx + ay * vy) / speed_mps);
    let across = has_course.then(|| (vy * ax - vx * ay) / speed_mps);
    // (mm/s per ms is m/s².)
    let longitudinal_mps2 = reported.speeds.slope().or(along);
    // Reported headings give the lateral acceleration as speed × turn rate: over the fixes the
    // positions span, or over the newest second where that turns harder the same way (where
    // fixes are sparse, a line through the window's headings spreads a short turn over all of
    // it, while the positions' quadratic weighs its middle). With the positions' own, the two
    // independent measurements must agree: the smaller counts, and none when they turn
    // opposite ways (noise in either alone is no turn).
    let turning = match (sums.headings.lateral_mps2(), reported.headings.lateral_mps2()) {
        (Some(window), Some(newest)) if window * newest > 0.0 && newest.abs() > window.abs() => Some(newest),
        (window, newest) => window.or(newest),
    };
    let lateral_mps2 = match (turning, across) {
        (Some(a), Some(b)) => Some(if a * b <= 0.0 {
            0.0
        } else if a.abs() < b.abs() {
            a
        } else {
            b
        }),
        (a, b) => a.or(b),
    };
    Some(Motion { speed_mps, speed_now_mps, heading_deg, longitudinal_mps2, lateral_mps2, at_ms })
}

/// The velocity (at centred time zero) and acceleration of the weighted least-squares quadratic
/// through one coordinate, from the moments and the coordinate's weighted sums.
fn solve_quadratic(m: &Moments, z0: f64, z1: f64, z2: f64) -> Option<(f64, f64)> {
    // Normal equations [s0 s1 s2; s1 s2 s3; s2 s3 s4] · [c0 c1 c2] = [z0 z1 z2], by Cramer's rule.
    let det =
        m.s0 * (m.s2 * m.s4 - m.s3 * m.s3) - m.s1 * (m.s1 * m.s4 - m.s3 * m.s2) + m.s2 * (m.s1 * m.s3 - m.s2 * m.s2);
    // Scale-free test for a degenerate window (all samples at one or two instants).
    let scale = m.s0 * m.s2 * m.s4;
    if !(det.is_finite() && scale > 0.0 && det > 1e-9 * scale) {
        return None;
    }
    let c1 = (m.s0 * (z1 * m.s4 - m.s3 * z2) - z0 * (m.s1 * m.s4 - m.s3 * m.s2) + m.s2 * (m.s1 * z2 - z1 * m.s2)) / det;
    let c2 = (m.s0 * (m.s2 * z2 - z1 * m.s3) - m.s1 * (m.s1 * z2 - z1 * m.s2) + z0 * (m.s1 * m.s3 - m.s2 * m.s2)) / det;
    Some((c1, 2.0 * c2))
}

/// How far `mid` lies from where two other fixes put it: the distance, in metres, between its
/// position and the straight line through `a` and `b` at its time (interpolated, or
/// extrapolated when `mid` is not between them). A fix that real motion cannot explain
/// ([`max_bend_m`]) by a margin is an outlier (multipath): a single wild fix must become
/// neither a harsh event nor extra distance.
/// `cos_lat`: the cosine of their latitude (any of the three's).
pub(crate) fn off_track_m(a: &Point, mid: &Point, b: &Point, cos_lat: f64) -> f64 {
    let (t0, t1, t2) = (a.ts_ms, mid.ts_ms, b.ts_ms);
    if t2 == t0 {
        return 0.0;
    }
    let f = (t1 - t0) as f64 / (t2 - t0) as f64;
    let lat = a.lat + f * (b.lat - a.lat);
    let lon = a.lon + f * (b.lon - a.lon);
    let dy = (mid.lat - lat) * METRES_PER_DEGREE;
    let dx = (mid.lon - lon) * METRES_PER_DEGREE * cos_lat;
    (dx * dx + dy * dy).sqrt()
}

/// The farthest that motion with at most `max_accel_mps2` strays from the straight line through
/// its positions at `a_ms` and `b_ms`, at `mid_ms` (between them, or beyond them on the line
/// extended).
pub(crate) fn max_bend_m(a_ms: i64, mid_ms: i64, b_ms: i64, max_accel_mps2: f64) -> f64 {
    0.5 * max_accel_mps2 * ((mid_ms - a_ms) as f64 / 1000.0).abs() * ((mid_ms - b_ms) as f64 / 1000.0).abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(ts_ms: i64, north_m: f64, east_m: f64, speed: Option<f64>) -> Point {
        let lat0: f64 = 45.0;
        let lat = lat0 + north_m / METRES_PER_DEGREE;
        let lon = 10.0 + east_m / (METRES_PER_DEGREE * lat0.to_radians().cos());
        Point { speed_mps: speed, accuracy_m: Some(3.0), ..Point::new(ts_ms, lat, lon) }
    }

    /// The motion of a window of `points` (in time order), its sums built fix by fix, the
    /// reported speeds of the last second.
    fn fit(points: &[Point]) -> Option<Motion> {
        let mut headings = None;
        let fixes: Vec<_> = points.iter().map(|p| Fix::of(p, &mut headings, 2.0)).collect();
        let mut sums = FitSums::empty(fixes.first()?);
        fixes.iter().for_each(|f| sums.add(f));
        let newest_ms = points.last()?.ts_ms;
        let mut reported = ReportedSums::default();
        fixes.iter().filter(|f| newest_ms - f.ts_ms <= 1000).for_each(|f| reported.add(f));
        motion(&sums, newest_ms, &reported, 45f64.to_radians().cos(), 2.0)
    }

    #[test]
    fn a_quadratic_track_is_measured_exactly_at_any_rate() {
        // Heading east at 10 m/s, braking at 2 m/s², while drifting north at 1 m/s² (a turn).
        for step_ms in [50i64, 100, 200, 1000] {
            let points: Vec<_> = (0..=2000 / step_ms)
                .map(|i| {
                    let t = (i * step_ms) as f64 / 1000.0;
                    fix(i * step_ms, 0.5 * t * t, 10.0 * t - t * t, None)
                })
                .collect();
            let motion = fit(&points).unwrap();
            assert!((motion.at_ms - 1000).abs() <= 1, "{step_ms} ms: {}", motion.at_ms);
            // At t = 1 s: velocity (8, 1), acceleration (−2, 1).
            assert!((motion.speed_mps - 65f64.sqrt()).abs() < 0.01, "{step_ms} ms: {motion:?}");
            let along = (-2.0 * 8.0 + 1.0) / 65f64.sqrt();
            let across = (1.0 * -2.0 - 8.0 * 1.0) / 65f64.sqrt();
            assert!((motion.longitudinal_mps2.unwrap() - along).abs() < 0.01, "{step_ms} ms: {motion:?}");
            assert!((motion.lateral_mps2.unwrap() - across).abs() < 0.01, "{step_ms} ms: {motion:?}");
        }
    }

    #[test]
    fn reported_speeds_give_the_longitudinal_acceleration() {
        let points: Vec<_> = (0..=20i64).map(|i| fix(i * 100, 0.0, i as f64, Some(10.0 - 0.3 * i as f64))).collect();
        let motion = fit(&points).unwrap();
        assert!((motion.longitudinal_mps2.unwrap() + 3.0).abs() < 1e-9, "{motion:?}");
    }

    #[test]
    fn too_few_or_simultaneous_samples_say_nothing() {
        let two: Vec<_> = (0..2i64).map(|i| fix(i * 1000, 0.0, 10.0 * i as f64, None)).collect();
        let same: Vec<_> = (0..4i64).map(|i| fix(1000, 0.0, i as f64, None)).collect();
        assert_eq!(fit(&two), None);
        assert_eq!(fit(&same), None);
    }

    fn fix_of(point: &Point) -> Fix {
        Fix::of(point, &mut None, 2.0)
    }

    #[test]
    fn headings_unwrap_across_north_and_give_the_turn_rate() {
        // Turning right at 10°/s through north at 20 m/s, 10 Hz: 5 m/s² to the right.
        let points: Vec<_> = (0..=20i64)
            .map(|i| {
                let mut p = fix(i * 100, 0.0, 2.0 * i as f64, Some(20.0));
                p.heading_deg = Some((350.0 + i as f64).rem_euclid(360.0));
                p
            })
            .collect();
        let motion = fit(&points).unwrap();
        // The positions go straight: they do not agree on a turn, so (next to) none.
        assert!(motion.lateral_mps2.unwrap().abs() < 1e-6, "{motion:?}");
        let mut headings = None;
        let fixes: Vec<_> = points.iter().map(|p| Fix::of(p, &mut headings, 2.0)).collect();
        let mut sums = FitSums::empty(&fixes[0]);
        fixes.iter().for_each(|f| sums.add(f));
        let rate = sums.headings.line.slope().unwrap() * 1000.0 / MICRODEGREES;
        assert!((rate - 10.0).abs() < 1e-6, "{rate} °/s");
    }

    #[test]
    fn a_turn_in_the_newest_second_counts_at_its_own_rate_where_fixes_are_sparse() {
        // 1 Hz, east at 20 m/s while the positions curve north at 6 m/s²; the reported heading
        // turns 14° in the last second only. A line through all three headings says 7°/s; the
        // newest second's 14°/s (4.9 m/s² at 20 m/s) agrees with the positions, and counts.
        let points: Vec<_> = [90.0, 90.0, 76.0]
            .into_iter()
            .enumerate()
            .map(|(i, heading)| {
                let t = i as f64;
                let mut p = fix(i as i64 * 1000, 3.0 * t * t, 20.0 * t, Some(20.0));
                p.heading_deg = Some(heading);
                p
            })
            .collect();
        let lateral = fit(&points).unwrap().lateral_mps2.unwrap();
        let expected = -14f64.to_radians() * 20.0;
        assert!((lateral - expected).abs() < 1e-6, "{lateral} m/s², {expected} expected");
    }

    #[test]
    fn the_sums_are_those_of_the_fixes_held_whatever_came_and_went() {
        // Fixes with different accuracies, 20 Hz, on a curve: a window slid along them (fixes
        // added, the oldest removed, the origin moved to the oldest held) holds exactly the sums
        // of a window built from its fixes alone.
        let points: Vec<_> = (0..200i64)
            .map(|i| {
                let t = i as f64 / 20.0;
                let mut p = fix(i * 50, 3.0 * t * t, 25.0 * t, None);
                p.accuracy_m = Some(1.0 + (i % 7) as f64);
                p
            })
            .collect();
        let mut sliding = FitSums::empty(&fix_of(&points[0]));
        for (i, p) in points.iter().enumerate() {
            sliding.add(&fix_of(p));
            if i >= 40 {
                sliding.remove(&fix_of(&points[i - 40]));
                sliding.rebase(&fix_of(&points[i - 39]));
            }
        }
        let mut fresh = FitSums::empty(&fix_of(&points[160]));
        points[160..].iter().for_each(|p| fresh.add(&fix_of(p)));
        assert_eq!(sliding, fresh);
        assert_eq!(sliding.count(), 40);
    }

    #[test]
    fn wide_integers_convert_to_within_an_ulp_either_side_of_zero() {
        for value in
            [0i128, -1, 5, -123_456_789, 1 << 70, -(1 << 70) - 12_345, i128::from(i64::MIN) - 1, (1 << 100) + 1]
        {
            let exact = value as f64;
            assert!((to_f64(value) - exact).abs() <= exact.abs() * f64::EPSILON, "{value}");
        }
        assert_eq!([whole(2.5), whole(-2.5), whole(2.4999), whole(-0.2)], [3, -3, 2, 0]);
    }

    #[test]
    fn a_wild_fix_is_off_the_track_of_its_neighbours() {
        let [a, b, c, wild] = [(0, 0.0, 0.0), (1000, 0.0, 10.0), (2000, 0.0, 20.0), (1000, 25.0, 10.0)]
            .map(|(t, n, e)| fix(t, n, e, None));
        let cos = 45f64.to_radians().cos();
        assert!(off_track_m(&a, &b, &c, cos) < 1e-6);
        assert!(off_track_m(&a, &c, &b, cos) < 1e-6, "extrapolated");
        assert!((off_track_m(&a, &wild, &c, cos) - 25.0).abs() < 1e-3);
        assert!((max_bend_m(0, 1000, 2000, 10.0) - 5.0).abs() < 1e-12);
        assert!((max_bend_m(0, 2000, 1000, 10.0) - 10.0).abs() < 1e-12);
    }
}
