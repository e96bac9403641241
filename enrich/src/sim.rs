//! A deterministic, seeded vehicle simulator: drives a list of manoeuvres with simple physics and
//! samples them like a GPS/CAN device would (interval, position noise, optional speed and
//! heading). Used for the project's own fixture trips, property tests and benchmarks.

use tripline_model::Point;

/// Metres per degree of latitude (and of longitude at the equator).
const METRES_PER_DEGREE: f64 = 111_320.0;
/// Physics step.
const STEP_S: f64 = 0.1;

/// A small, fast, seeded random source (SplitMix64): same seed, same trip, on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Roughly normal, mean 0, standard deviation `sigma` (sum of uniforms).
    pub fn noise(&mut self, sigma: f64) -> f64 {
        let sum: f64 = (0..6).map(|_| self.unit()).sum();
        (sum - 3.0) * sigma * std::f64::consts::SQRT_2
    }
}

/// One manoeuvre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Leg {
    /// Change speed to `to_kmh` at `rate_mps2` (magnitude).
    Speed {
        /// Target speed.
        to_kmh: f64,
        /// Acceleration or deceleration magnitude.
        rate_mps2: f64,
    },
    /// Keep the current speed.
    Cruise {
        /// How long.
        duration_s: f64,
    },
    /// Turn by `angle_deg` (positive: right) at the current speed with `lateral_mps2`.
    Turn {
        /// Total heading change.
        angle_deg: f64,
        /// Lateral acceleration during the turn.
        lateral_mps2: f64,
    },
    /// Stand still (speed must be 0), ignition on or off.
    Stop {
        /// How long.
        duration_s: f64,
        /// Ignition during the stop.
        ignition: bool,
    },
}

/// How the simulated device samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    /// Seconds between samples.
    pub interval_s: f64,
    /// Position noise (standard deviation per axis).
    pub gps_noise_m: f64,
    /// Whether samples carry `speed_mps`.
    pub reports_speed: bool,
    /// Whether samples carry `heading_deg`.
    pub reports_heading: bool,
    /// Whether samples carry `seq`, starting at this value.
    pub first_seq: Option<u64>,
}

/// Where and when a simulated trip starts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Start {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Initial heading, degrees.
    pub heading_deg: f64,
    /// Start time, Unix milliseconds.
    pub ts_ms: i64,
}

/// How a consumer GNSS receiver errs beyond the white noise of [`Device::gps_noise_m`]: a
/// slowly wandering offset (atmosphere, satellite geometry, the receiver's own filter: metres
/// of error that change over tens of seconds, smooth over one), the occasional multipath
/// outlier, and noise on the reported speed (Doppler) and heading.
#[derive(Clone, Debug, PartialEq)]
pub struct Receiver {
    /// Standard deviation of the wandering offset, per axis, metres (3–5 for a phone or a
    /// dongle under open sky).
    pub wander_m: f64,
    /// How long the offset takes to decorrelate, seconds.
    pub wander_s: f64,
    /// How long the offset's own rate of change takes to decorrelate, seconds (the receiver's
    /// filter keeps it smooth below this).
    pub wander_rate_s: f64,
    /// Chance per second of a multipath outlier; each lasts one fix.
    pub outliers_per_s: f64,
    /// Size of an outlier, metres, uniform in this range.
    pub outlier_m: (f64, f64),
    /// White noise on the reported speed, m/s.
    pub speed_noise_mps: f64,
    /// White noise on the reported heading, degrees.
    pub heading_noise_deg: f64,
}

impl Receiver {
    /// An ideal receiver: only the device's white noise.
    pub const IDEAL: Receiver = Receiver {
        wander_m: 0.0,
        wander_s: 60.0,
        wander_rate_s: 5.0,
        outliers_per_s: 0.0,
        outlier_m: (0.0, 0.0),
        speed_noise_mps: 0.0,
        heading_noise_deg: 0.0,
    };

    /// A consumer receiver whose offset wanders by `wander_m` (per axis), with a multipath
    /// outlier of 10–40 m every five minutes or so.
    pub fn consumer(wander_m: f64) -> Self {
        Receiver {
            wander_m,
            wander_s: 60.0,
            wander_rate_s: 5.0,
            outliers_per_s: 1.0 / 300.0,
            outlier_m: (10.0, 40.0),
            speed_noise_mps: 0.1,
            heading_noise_deg: 1.0,
        }
    }
}

/// The vehicle's true state at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct State {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Heading, degrees (not wrapped).
    pub heading_deg: f64,
    /// Speed, m/s.
    pub speed_mps: f64,
    /// Longitudinal acceleration, m/s².
    pub accel_mps2: f64,
    /// Lateral acceleration, m/s² (positive: turning right).
    pub lateral_mps2: f64,
    /// Seconds since the start.
    pub t_s: f64,
    /// Ignition.
    pub ignition: bool,
}

/// A drive's true states, one per physics step.
#[derive(Clone, Debug)]
pub struct Track {
    start: Start,
    /// The states, in time order.
    pub states: Vec<State>,
}

impl Track {
    /// Drives `legs` from `start` with a physics step of `step_s`.
    pub fn drive(start: Start, legs: &[Leg], step_s: f64) -> Track {
        let mut state = State {
            lat: start.lat,
            lon: start.lon,
            heading_deg: start.heading_deg,
            speed_mps: 0.0,
            accel_mps2: 0.0,
            lateral_mps2: 0.0,
            t_s: 0.0,
            ignition: true,
        };
        let mut states = Vec::new();
        let mut advance = |state: &mut State, accel: f64, yaw_dps: f64| {
            state.speed_mps = (state.speed_mps + accel * step_s).max(0.0);
            state.accel_mps2 = accel;
            state.lateral_mps2 = yaw_dps.to_radians() * state.speed_mps;
            state.heading_deg += yaw_dps * step_s;
            let ds = state.speed_mps * step_s;
            let h = state.heading_deg.to_radians();
            state.lat += ds * h.cos() / METRES_PER_DEGREE;
            state.lon += ds * h.sin() / (METRES_PER_DEGREE * state.lat.to_radians().cos());
            state.t_s += step_s;
            states.push(*state);
        };
        for leg in legs {
            match *leg {
                Leg::Speed { to_kmh, rate_mps2 } => {
                    let target = to_kmh / 3.6;
                    while (state.speed_mps - target).abs() > rate_mps2 * step_s / 2.0 {
                        let accel = if state.speed_mps < target { rate_mps2 } else { -rate_mps2 };
                        advance(&mut state, accel, 0.0);
                    }
                    state.speed_mps = target;
                }
                Leg::Cruise { duration_s } => {
                    for _ in 0..(duration_s / step_s).round() as usize {
                        advance(&mut state, 0.0, 0.0);
                    }
                }
                Leg::Turn { angle_deg, lateral_mps2 } => {
                    let v = state.speed_mps.max(1.0);
                    let yaw_dps = (lateral_mps2 / v).to_degrees() * angle_deg.signum();
                    let steps = (angle_deg.abs() / yaw_dps.abs() / step_s).round() as usize;
                    for _ in 0..steps {
                        advance(&mut state, 0.0, yaw_dps);
                    }
                }
                Leg::Stop { duration_s, ignition } => {
                    state.speed_mps = 0.0;
                    state.ignition = ignition;
                    for _ in 0..(duration_s / step_s).round() as usize {
                        advance(&mut state, 0.0, 0.0);
                    }
                    state.ignition = true;
                }
            }
        }
        Track { start, states }
    }

    /// Samples the track as `device` with `receiver`'s errors; `seed` fixes them. The wandering
    /// offset follows the track's steps (the same offset whatever the device's interval), so one
    /// drive sampled at different rates sees the same errors.
    pub fn sample(&self, device: &Device, receiver: &Receiver, seed: u64) -> Vec<Point> {
        let mut errors = ReceiverErrors::new(receiver, device.gps_noise_m, seed);
        let mut points = Vec::new();
        let mut next_sample_s = 0.0;
        let mut seq = device.first_seq;
        let mut last_t = 0.0;
        for state in &self.states {
            errors.advance(state.t_s - last_t);
            last_t = state.t_s;
            if state.t_s + 1e-9 < next_sample_s {
                continue;
            }
            next_sample_s += device.interval_s;
            let (north_m, east_m) = errors.fix(device.interval_s);
            let (speed, heading) = errors.motion(state.speed_mps, state.heading_deg);
            let lat = state.lat + north_m / METRES_PER_DEGREE;
            let lon = state.lon + east_m / (METRES_PER_DEGREE * state.lat.to_radians().cos());
            points.push(Point {
                seq,
                ts_ms: self.start.ts_ms + (state.t_s * 1000.0).round() as i64,
                lat,
                lon,
                speed_mps: device.reports_speed.then_some((speed.max(0.0) * 100.0).round() / 100.0),
                heading_deg: device
                    .reports_heading
                    .then_some(((heading.rem_euclid(360.0)) * 10.0).round() / 10.0 % 360.0),
                accuracy_m: Some((device.gps_noise_m.max(receiver.wander_m) * 2.0).max(3.0)),
                alt_m: None,
                ignition: Some(state.ignition),
                odometer_m: None,
            });
            seq = seq.map(|s| s + 1);
        }
        points
    }
}

/// A receiver's errors as time goes by: what [`Track::sample`] adds to the truth, and what a
/// test adds to a recording that is cleaner than a consumer receiver.
pub struct ReceiverErrors<'a> {
    receiver: &'a Receiver,
    white_m: f64,
    white: Rng,
    errors: Rng,
    wander: Wander,
}

impl<'a> ReceiverErrors<'a> {
    /// `receiver`'s errors, with white noise of `white_m` per axis on each fix; `seed` fixes them.
    pub fn new(receiver: &'a Receiver, white_m: f64, seed: u64) -> Self {
        let mut errors = Rng::new(seed ^ 0x6e55_5f77_616e_6465);
        let wander = Wander::new(receiver, &mut errors);
        ReceiverErrors { receiver, white_m, white: Rng::new(seed), errors, wander }
    }

    /// Lets `dt_s` pass (in one step: keep it small, a tenth of a second or less).
    pub fn advance(&mut self, dt_s: f64) {
        self.wander.step(self.receiver, dt_s, &mut self.errors);
    }

    /// The error of a fix taken now, metres north and east: the wander, white noise, and with a
    /// chance of `outliers_per_s × interval_s` a multipath outlier.
    pub fn fix(&mut self, interval_s: f64) -> (f64, f64) {
        let mut north_m = self.white.noise(self.white_m) + self.wander.north_m;
        let mut east_m = self.white.noise(self.white_m) + self.wander.east_m;
        let receiver = self.receiver;
        if receiver.outliers_per_s > 0.0 && self.errors.unit() < receiver.outliers_per_s * interval_s {
            let size = self.errors.range(receiver.outlier_m.0, receiver.outlier_m.1);
            let angle = self.errors.range(0.0, std::f64::consts::TAU);
            north_m += size * angle.cos();
            east_m += size * angle.sin();
        }
        (north_m, east_m)
    }

    /// A reported speed and heading, with their noise.
    pub fn motion(&mut self, speed_mps: f64, heading_deg: f64) -> (f64, f64) {
        let receiver = self.receiver;
        let speed =
            speed_mps + if receiver.speed_noise_mps > 0.0 { self.errors.noise(receiver.speed_noise_mps) } else { 0.0 };
        let heading = heading_deg
            + if receiver.heading_noise_deg > 0.0 { self.errors.noise(receiver.heading_noise_deg) } else { 0.0 };
        (speed, heading)
    }
}

/// The receiver's wandering offset: a second-order Gauss–Markov process (the offset's rate is
/// an Ornstein–Uhlenbeck process; the offset integrates it and decays), smooth at short scales.
struct Wander {
    north_m: f64,
    east_m: f64,
    north_rate: f64,
    east_rate: f64,
    /// Standard deviation of the rate that gives the offset its standard deviation.
    rate_sigma: f64,
}

impl Wander {
    fn new(receiver: &Receiver, rng: &mut Rng) -> Self {
        if receiver.wander_m <= 0.0 {
            return Wander { north_m: 0.0, east_m: 0.0, north_rate: 0.0, east_rate: 0.0, rate_sigma: 0.0 };
        }
        let (tau, tau_rate) = (receiver.wander_s, receiver.wander_rate_s);
        // Var(offset) = σ_rate² · τ_rate · τ² / (τ_rate + τ) for this process.
        let rate_sigma = receiver.wander_m * ((tau_rate + tau) / (tau_rate * tau * tau)).sqrt();
        Wander {
            north_m: rng.noise(receiver.wander_m),
            east_m: rng.noise(receiver.wander_m),
            north_rate: rng.noise(rate_sigma),
            east_rate: rng.noise(rate_sigma),
            rate_sigma,
        }
    }

    fn step(&mut self, receiver: &Receiver, dt_s: f64, rng: &mut Rng) {
        if self.rate_sigma <= 0.0 || dt_s <= 0.0 {
            return;
        }
        let kick = self.rate_sigma * (2.0 * dt_s / receiver.wander_rate_s).sqrt();
        for (offset, rate) in [(&mut self.north_m, &mut self.north_rate), (&mut self.east_m, &mut self.east_rate)] {
            *rate += -*rate * dt_s / receiver.wander_rate_s + rng.noise(kick);
            *offset += (*rate - *offset / receiver.wander_s) * dt_s;
        }
    }
}

/// Drives `legs` from `start` and samples them with `device`; `seed` fixes the noise.
pub fn simulate(start: Start, legs: &[Leg], device: &Device, seed: u64) -> Vec<Point> {
    Track::drive(start, legs, STEP_S).sample(device, &Receiver::IDEAL, seed)
}

/// A plausible everyday trip of about `minutes`: urban and extra-urban driving with stops and
/// turns, and, depending on the seed, the occasional harsh manoeuvre or speeding stretch.
pub fn everyday_legs(rng: &mut Rng, minutes: f64) -> Vec<Leg> {
    let mut legs = Vec::new();
    let mut elapsed_s = 0.0;
    let mut speed_kmh = 0.0;
    while elapsed_s < minutes * 60.0 {
        let roll = rng.unit();
        let leg = if speed_kmh == 0.0 {
            speed_kmh = rng.range(30.0, 90.0);
            let rate = if roll < 0.1 { 3.6 } else { rng.range(1.0, 2.5) };
            Leg::Speed { to_kmh: speed_kmh, rate_mps2: rate }
        } else if roll < 0.35 {
            Leg::Cruise { duration_s: rng.range(20.0, 120.0) }
        } else if roll < 0.55 {
            let lateral = if rng.unit() < 0.1 { 4.8 } else { rng.range(1.0, 2.5) };
            Leg::Turn { angle_deg: rng.range(-120.0, 120.0), lateral_mps2: lateral }
        } else if roll < 0.75 {
            speed_kmh = (speed_kmh + rng.range(-30.0, 30.0)).clamp(20.0, 140.0);
            Leg::Speed { to_kmh: speed_kmh, rate_mps2: rng.range(0.8, 2.0) }
        } else if roll < 0.9 {
            speed_kmh = 0.0;
            let rate = if rng.unit() < 0.15 { 4.2 } else { rng.range(1.0, 2.5) };
            legs.push(Leg::Speed { to_kmh: 0.0, rate_mps2: rate });
            Leg::Stop { duration_s: rng.range(5.0, 60.0), ignition: true }
        } else {
            Leg::Cruise { duration_s: rng.range(5.0, 30.0) }
        };
        elapsed_s += match leg {
            Leg::Cruise { duration_s } | Leg::Stop { duration_s, .. } => duration_s,
            _ => 15.0,
        };
        legs.push(leg);
    }
    legs.push(Leg::Speed { to_kmh: 0.0, rate_mps2: 2.0 });
    legs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_trip() {
        let device = Device {
            interval_s: 1.0,
            gps_noise_m: 3.0,
            reports_speed: true,
            reports_heading: true,
            first_seq: Some(1),
        };
        let start = Start { lat: 45.0, lon: 10.0, heading_deg: 90.0, ts_ms: 1_700_000_000_000 };
        let legs = everyday_legs(&mut Rng::new(7), 5.0);
        let a = simulate(start, &legs, &device, 7);
        assert_eq!(a, simulate(start, &legs, &device, 7));
        assert_ne!(a, simulate(start, &legs, &device, 8));
        assert!(a.len() > 250);
    }
}
