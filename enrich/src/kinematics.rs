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

use tripline_model::Point;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;
/// Positional accuracy assumed where a point gives none, for the relative weights.
const DEFAULT_ACCURACY_M: f64 = 5.0;
/// A fix this accurate or better weighs as much as one of exactly this accuracy (no single
/// fix dominates a window by claiming centimetres).
const MIN_ACCURACY_M: f64 = 1.0;

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

/// The samples of one window, relative to its newest point.
#[derive(Default, Clone, Debug)]
pub(crate) struct Window {
    t: Vec<f64>,
    x: Vec<f64>,
    y: Vec<f64>,
    w: Vec<f64>,
    /// Reported speeds of the samples inside the speed window, with their times.
    speeds: Vec<(f64, f64)>,
    /// Reported headings (unwrapped, degrees) of the samples inside the speed window that also
    /// report a speed fast enough for a heading, with their times and speeds.
    headings: Vec<(f64, f64, f64)>,
    /// Scratch: every reported speed of the window, with its time and heading.
    reported: Vec<(f64, f64, Option<f64>)>,
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

impl Window {
    /// Fills the window from `points` (in time order, the newest last; already restricted to
    /// the span to fit and without the fixes found to be outliers). `speed_span_s`: how far
    /// back reported speeds are used.
    /// `cos_lat`: the cosine of the window's latitude (any of its fixes': a window spans metres).
    pub(crate) fn fill<'a>(
        &mut self,
        points: impl Iterator<Item = &'a Point>,
        cos_lat: f64,
        speed_span_s: f64,
        min_heading_speed_mps: f64,
    ) {
        self.t.clear();
        self.x.clear();
        self.y.clear();
        self.w.clear();
        self.speeds.clear();
        self.headings.clear();
        let mut reported = std::mem::take(&mut self.reported);
        reported.clear();
        let mut origin: Option<(i64, f64, f64)> = None;
        for p in points {
            let (t0, lat0, lon0) = *origin.get_or_insert((p.ts_ms, p.lat, p.lon));
            let t = (p.ts_ms - t0) as f64 / 1000.0;
            self.t.push(t);
            self.y.push((p.lat - lat0) * METRES_PER_DEGREE);
            self.x.push((p.lon - lon0) * METRES_PER_DEGREE * cos_lat);
            let accuracy = p.accuracy_m.unwrap_or(DEFAULT_ACCURACY_M).max(MIN_ACCURACY_M);
            self.w.push(1.0 / (accuracy * accuracy));
            if let Some(v) = p.speed_mps {
                reported.push((t, v, p.heading_deg));
            }
        }
        self.fill_reported(&reported, speed_span_s, min_heading_speed_mps);
        self.reported = reported;
    }

    /// Keeps the reported speeds and headings (`(t, speed, heading)`, in time order) of the
    /// last `speed_span_s`, and at least the last two.
    fn fill_reported(&mut self, reported: &[(f64, f64, Option<f64>)], speed_span_s: f64, min_heading_speed_mps: f64) {
        let Some(&last) = self.t.last() else { return };
        let inside = reported.iter().rev().take_while(|r| last - r.0 <= speed_span_s + 1e-9).count();
        let recent = &reported[reported.len() - inside.max(2).min(reported.len())..];
        self.speeds.extend(recent.iter().map(|&(t, v, _)| (t, v)));
        // Headings unwrapped sample to sample: the turn between two is less than 180°.
        let mut previous: Option<(f64, f64)> = None;
        for &(t, v, heading) in recent {
            let Some(h) = heading.filter(|_| v >= min_heading_speed_mps) else { continue };
            let unwrapped = match previous {
                Some((raw, unwrapped)) => {
                    let turn = h - raw;
                    unwrapped
                        + if turn > 180.0 {
                            turn - 360.0
                        } else if turn < -180.0 {
                            turn + 360.0
                        } else {
                            turn
                        }
                }
                None => h,
            };
            previous = Some((h, unwrapped));
            self.headings.push((t, unwrapped, v));
        }
    }

    /// The weighted moments of time (centred on `mean_t`) and the weighted sums of each
    /// coordinate times 1, t and t², for the normal equations.
    fn moments(&self, mean_t: f64) -> (Moments, [f64; 3], [f64; 3]) {
        let (mut m, mut x, mut y) = (Moments::default(), [0.0; 3], [0.0; 3]);
        for i in 0..self.t.len() {
            let (t, w) = (self.t[i] - mean_t, self.w[i]);
            let (wt, wt2) = (w * t, w * t * t);
            m.s0 += w;
            m.s1 += wt;
            m.s2 += wt2;
            m.s3 += wt2 * t;
            m.s4 += wt2 * t * t;
            for (sums, z) in [(&mut x, self.x[i]), (&mut y, self.y[i])] {
                sums[0] += w * z;
                sums[1] += wt * z;
                sums[2] += wt2 * z;
            }
        }
        (m, x, y)
    }

    /// Fits the window; `None` when it is too short or too degenerate to say anything.
    /// `min_heading_speed_mps`: below this the course (and so the split of the acceleration)
    /// is noise. `origin_ms`: the time of the window's first sample.
    pub(crate) fn fit(&self, origin_ms: i64, min_heading_speed_mps: f64) -> Option<Motion> {
        if self.t.len() < 3 {
            return None;
        }
        // Centre time on the weighted mean: the velocity comes out at that time, and the sums
        // stay well conditioned.
        let sw: f64 = self.w.iter().sum();
        let mean_t = self.t.iter().zip(&self.w).map(|(t, w)| t * w).sum::<f64>() / sw;
        let (m, [x0, x1, x2], [y0, y1, y2]) = self.moments(mean_t);
        let (vx, ax) = solve_quadratic(&m, x0, x1, x2)?;
        let (vy, ay) = solve_quadratic(&m, y0, y1, y2)?;
        let speed_mps = (vx * vx + vy * vy).sqrt();
        // The speed of "now" is read at most `NOW_LAG_S` before the newest fix: where the fixes
        // are dense that is the window's middle (quietest), where they are sparse the fit is
        // read nearer its end rather than seconds late.
        let ahead = self.t.last().map_or(0.0, |t| (t - mean_t - NOW_LAG_S).max(0.0));
        let (nx, ny) = (vx + ax * ahead, vy + ay * ahead);
        let speed_now_mps = (nx * nx + ny * ny).sqrt();
        let at_ms = origin_ms + (mean_t * 1000.0).round() as i64;
        let has_course = speed_mps >= min_heading_speed_mps;
        let heading_deg = has_course.then(|| {
            let h = vx.atan2(vy).to_degrees();
            if h < 0.0 { h + 360.0 } else { h }
        });
        let along = has_course.then(|| (ax * vx + ay * vy) / speed_mps);
        let across = has_course.then(|| (vy * ax - vx * ay) / speed_mps);
        let longitudinal_mps2 = slope(self.speeds.iter().map(|&(t, v)| (t, v))).or(along);
        // Reported headings give the lateral acceleration as speed × turn rate. With the
        // positions' own, the two independent measurements must agree: the smaller counts, and
        // none when they turn opposite ways (noise in either alone is no turn).
        let turning = slope(self.headings.iter().map(|&(t, h, _)| (t, h.to_radians()))).map(|rate| {
            let n = self.headings.len() as f64;
            rate * self.headings.iter().map(|h| h.2).sum::<f64>() / n
        });
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
}

/// Slope of the least-squares straight line through `(t, value)` samples (at least two, at
/// different times).
fn slope(samples: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let (mut n, mut sum_t, mut sum_v) = (0.0, 0.0, 0.0);
    for (t, v) in samples.clone() {
        n += 1.0;
        sum_t += t;
        sum_v += v;
    }
    if n < 2.0 {
        return None;
    }
    let (mean_t, mean_v) = (sum_t / n, sum_v / n);
    let (mut stv, mut stt) = (0.0, 0.0);
    for (t, v) in samples {
        stv += (t - mean_t) * (v - mean_v);
        stt += (t - mean_t) * (t - mean_t);
    }
    (stt > 0.0).then(|| stv / stt)
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
        Point {
            seq: None,
            ts_ms,
            lat: lat0 + north_m / METRES_PER_DEGREE,
            lon: 10.0 + east_m / (METRES_PER_DEGREE * lat0.to_radians().cos()),
            speed_mps: speed,
            heading_deg: None,
            accuracy_m: Some(3.0),
            alt_m: None,
            ignition: None,
            odometer_m: None,
        }
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
            let mut window = Window::default();
            window.fill(points.iter(), 45f64.to_radians().cos(), 1.0, 2.0);
            let motion = window.fit(0, 2.0).unwrap();
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
        let mut window = Window::default();
        window.fill(points.iter(), 45f64.to_radians().cos(), 1.0, 2.0);
        let motion = window.fit(0, 2.0).unwrap();
        assert!((motion.longitudinal_mps2.unwrap() + 3.0).abs() < 1e-9, "{motion:?}");
    }

    #[test]
    fn too_few_or_simultaneous_samples_say_nothing() {
        let two: Vec<_> = (0..2i64).map(|i| fix(i * 1000, 0.0, 10.0 * i as f64, None)).collect();
        let same: Vec<_> = (0..4i64).map(|i| fix(1000, 0.0, i as f64, None)).collect();
        let mut window = Window::default();
        window.fill(two.iter(), 45f64.to_radians().cos(), 1.0, 2.0);
        assert_eq!(window.fit(0, 2.0), None);
        window.fill(same.iter(), 45f64.to_radians().cos(), 1.0, 2.0);
        assert_eq!(window.fit(0, 2.0), None);
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
