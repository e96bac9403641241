//! One GPS/CAN sample: as it arrives ([`RawPoint`]), and once it is structurally valid ([`Point`]).
//!
//! Two steps, so that every caller applies the same rules:
//! 1. [`Point::from_raw`] — structure: required fields present, timestamp readable. A failure
//!    here is a schema violation of the whole message.
//! 2. [`PointRules::check`] — plausibility of one point on its own: coordinates, (0, 0), and the
//!    timestamp against an injected clock. A failure drops just that point, with a
//!    [`RejectReason`].

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ModelError;
use crate::reject::RejectReason;
use crate::time::{check_ts_range, parse_rfc3339_ms};

/// A structurally valid sample. Coordinates are WGS84 degrees; every other unit is in the name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Per-vehicle counter set by the device, used for de-duplication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Sample time, Unix milliseconds (RFC 3339 `ts` on the wire).
    #[serde(rename = "ts", with = "crate::time::rfc3339_ms")]
    pub ts_ms: i64,
    /// Latitude, WGS84 degrees.
    pub lat: f64,
    /// Longitude, WGS84 degrees.
    pub lon: f64,
    /// Speed reported by the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    /// Course over ground, degrees clockwise from north, in [0, 360).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// Horizontal accuracy (radius) reported by the receiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
    /// Altitude above the WGS84 ellipsoid or sea level, as the device reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_m: Option<f64>,
    /// Ignition state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignition: Option<bool>,
    /// Vehicle odometer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odometer_m: Option<f64>,
}

/// A sample exactly as a device sent it: every field optional, unknown fields counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RawPoint {
    /// `seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `ts` (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// `ts_ms` (Unix milliseconds), an alternative to `ts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<i64>,
    /// `lat`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// `lon`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// `speed_mps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed_mps: Option<f64>,
    /// `heading_deg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading_deg: Option<f64>,
    /// `accuracy_m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
    /// `alt_m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alt_m: Option<f64>,
    /// `ignition`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignition: Option<bool>,
    /// `odometer_m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub odometer_m: Option<f64>,
    /// How many fields of this point tripline did not know (ignored, counted).
    #[serde(skip)]
    pub unknown_fields: u32,
}

/// The result of reading a point's optional fields: values that cannot be true (a negative
/// speed, a heading of 500°) are treated as absent and counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldRepairs {
    /// Optional fields cleared because their value was impossible.
    pub cleared_fields: u32,
}

fn keep_if(value: Option<f64>, ok: impl Fn(f64) -> bool, repairs: &mut FieldRepairs) -> Option<f64> {
    match value {
        Some(v) if ok(v) => Some(v),
        Some(_) => {
            repairs.cleared_fields += 1;
            None
        }
        None => None,
    }
}

/// Fastest speed a device may report before tripline treats the value as absent (~1080 km/h).
const MAX_REPORTED_SPEED_MPS: f64 = 300.0;

/// Decimals a device's values are kept to: finer than any receiver measures, so nothing real is
/// lost, and coarse enough that the stored columns pack into a few bits
/// (a phone reports 15–17 significant digits of noise). Applied once, by [`Point::from_raw`],
/// so that live ingest, trips reloaded from the store and offline summaries see the same values.
pub struct PointPrecision;

impl PointPrecision {
    /// Latitude and longitude: 1e-7° (1.1 cm at the equator), as GNSS receivers report them.
    pub const DEGREES: u8 = 7;
    /// Reported speed: 0.01 m/s (0.036 km/h).
    pub const SPEED_MPS: u8 = 2;
    /// Reported course: 0.1°.
    pub const HEADING_DEG: u8 = 1;
    /// Reported accuracy, altitude and odometer: 1 cm.
    pub const METRES: u8 = 2;
}

/// Largest magnitude a fixed-point value may have and still be an exact integer in an `f64`.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// `v` rounded to `decimals` decimals; values too large to round stay as they are, and −0 is 0.
pub fn quantise(v: f64, decimals: u8) -> f64 {
    let scale = 10f64.powi(i32::from(decimals));
    let scaled = (v * scale).round();
    if v.is_finite() && scaled.abs() < MAX_EXACT { scaled / scale + 0.0 } else { v }
}

impl Point {
    /// A fix at `ts_ms` and a position, with no optional field.
    pub fn new(ts_ms: i64, lat: f64, lon: f64) -> Point {
        Point {
            seq: None,
            ts_ms,
            lat,
            lon,
            speed_mps: None,
            heading_deg: None,
            accuracy_m: None,
            alt_m: None,
            ignition: None,
            odometer_m: None,
        }
    }

    /// Checks the structure of a raw point: `ts` or `ts_ms` (equal when both are given), `lat` and
    /// `lon` present. Impossible optional values are cleared and counted in `repairs`; the rest
    /// are kept to [`PointPrecision`].
    pub fn from_raw(raw: &RawPoint, repairs: &mut FieldRepairs) -> Result<Point, ModelError> {
        let ts_ms = match (&raw.ts, raw.ts_ms) {
            (Some(text), None) => parse_rfc3339_ms(text)?,
            (None, Some(ms)) => check_ts_range(ms)?,
            (Some(text), Some(ms)) => {
                let parsed = parse_rfc3339_ms(text)?;
                if parsed != check_ts_range(ms)? {
                    return Err(ModelError::Schema { detail: "`ts` and `ts_ms` disagree".to_owned() });
                }
                parsed
            }
            (None, None) => return Err(ModelError::Schema { detail: "point has neither `ts` nor `ts_ms`".to_owned() }),
        };
        let (Some(lat), Some(lon)) = (raw.lat, raw.lon) else {
            return Err(ModelError::Schema { detail: "point needs both `lat` and `lon`".to_owned() });
        };
        let metres = |v: f64| quantise(v, PointPrecision::METRES);
        Ok(Point {
            seq: raw.seq,
            ts_ms,
            lat: quantise(lat, PointPrecision::DEGREES),
            lon: quantise(lon, PointPrecision::DEGREES),
            speed_mps: keep_if(
                raw.speed_mps,
                |v| v.is_finite() && (0.0..=MAX_REPORTED_SPEED_MPS).contains(&v),
                repairs,
            )
            .map(|v| quantise(v, PointPrecision::SPEED_MPS)),
            heading_deg: keep_if(raw.heading_deg, |v| v.is_finite() && (0.0..=360.0).contains(&v), repairs)
                .map(|h| quantise(h, PointPrecision::HEADING_DEG))
                .map(|h| if h >= 360.0 { 0.0 } else { h }),
            accuracy_m: keep_if(raw.accuracy_m, |v| v.is_finite() && v >= 0.0, repairs).map(metres),
            alt_m: keep_if(raw.alt_m, f64::is_finite, repairs).map(metres),
            ignition: raw.ignition,
            odometer_m: keep_if(raw.odometer_m, |v| v.is_finite() && v >= 0.0, repairs).map(metres),
        })
    }

    /// The point as the wire's raw form (for encoding and for keeping rejected points).
    pub fn to_raw(&self) -> RawPoint {
        RawPoint {
            seq: self.seq,
            ts: Some(crate::time::format_rfc3339_ms(self.ts_ms)),
            ts_ms: None,
            lat: Some(self.lat),
            lon: Some(self.lon),
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
            accuracy_m: self.accuracy_m,
            alt_m: self.alt_m,
            ignition: self.ignition,
            odometer_m: self.odometer_m,
            unknown_fields: 0,
        }
    }
}

/// Plausibility rules for a single point on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointRules {
    /// "Now", Unix milliseconds; `None` skips the rules measured against the current time
    /// (offline summaries of old recordings).
    pub now_ms: Option<i64>,
    /// How far ahead of `now_ms` a timestamp may be (device clock skew).
    pub max_future_ms: i64,
    /// How far behind `now_ms` a timestamp may be: the late window.
    pub max_age_ms: i64,
}

/// Default tolerance for device clocks running ahead: 5 minutes.
pub const DEFAULT_MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Default late window: 7 days.
pub const DEFAULT_LATE_WINDOW_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// Both coordinates within this many degrees of zero (~0.1 m) count as (0, 0).
const NULL_ISLAND_EPSILON_DEG: f64 = 1e-6;

impl PointRules {
    /// The contract's defaults, measured against `now_ms`.
    pub fn at(now_ms: i64) -> Self {
        PointRules { now_ms: Some(now_ms), ..Self::without_clock() }
    }

    /// Only the rules that do not depend on the current time.
    pub fn without_clock() -> Self {
        PointRules { now_ms: None, max_future_ms: DEFAULT_MAX_FUTURE_MS, max_age_ms: DEFAULT_LATE_WINDOW_MS }
    }

    /// Why `point` must be dropped, if it must.
    pub fn check(&self, point: &Point) -> Option<(RejectReason, String)> {
        let (lat, lon) = (point.lat, point.lon);
        if !lat.is_finite() || !lon.is_finite() || !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Some((RejectReason::InvalidCoordinates, format!("lat {lat}, lon {lon} is not a WGS84 position")));
        }
        if lat.abs() <= NULL_ISLAND_EPSILON_DEG && lon.abs() <= NULL_ISLAND_EPSILON_DEG {
            return Some((RejectReason::NullIsland, "position (0, 0): receiver without a fix".to_owned()));
        }
        if let Some(now_ms) = self.now_ms {
            if point.ts_ms > now_ms.saturating_add(self.max_future_ms) {
                let ahead_s = (point.ts_ms - now_ms) / 1000;
                return Some((RejectReason::TimestampFuture, format!("timestamp {ahead_s} s in the future")));
            }
            if point.ts_ms < now_ms.saturating_sub(self.max_age_ms) {
                let age_s = (now_ms - point.ts_ms) / 1000;
                return Some((
                    RejectReason::TimestampTooOld,
                    format!("timestamp {age_s} s old, beyond the late window"),
                ));
            }
        }
        None
    }
}

// ----------------------------------------------------------------------------- deserialization

#[derive(Clone, Copy)]
enum Field {
    Seq,
    Ts,
    TsMs,
    Lat,
    Lon,
    SpeedMps,
    HeadingDeg,
    AccuracyM,
    AltM,
    Ignition,
    OdometerM,
    Unknown,
}

impl Field {
    fn from_name(name: &str) -> Field {
        match name {
            "seq" => Field::Seq,
            "ts" => Field::Ts,
            "ts_ms" => Field::TsMs,
            "lat" => Field::Lat,
            "lon" => Field::Lon,
            "speed_mps" => Field::SpeedMps,
            "heading_deg" => Field::HeadingDeg,
            "accuracy_m" => Field::AccuracyM,
            "alt_m" => Field::AltM,
            "ignition" => Field::Ignition,
            "odometer_m" => Field::OdometerM,
            _ => Field::Unknown,
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a point field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(Field::from_name(name))
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

fn set_once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    slot: &mut Option<T>,
    seen: &mut bool,
    name: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if *seen {
        return Err(de::Error::duplicate_field(name));
    }
    *seen = true;
    *slot = map.next_value()?;
    Ok(())
}

impl<'de> Deserialize<'de> for RawPoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PointVisitor;
        impl<'de> Visitor<'de> for PointVisitor {
            type Value = RawPoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a point object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPoint, A::Error> {
                let mut p = RawPoint::default();
                let mut seen = [false; 11];
                while let Some(field) = map.next_key::<Field>()? {
                    let s = &mut seen;
                    match field {
                        Field::Seq => set_once(&mut p.seq, &mut s[0], "seq", &mut map)?,
                        Field::Ts => set_once(&mut p.ts, &mut s[1], "ts", &mut map)?,
                        Field::TsMs => set_once(&mut p.ts_ms, &mut s[2], "ts_ms", &mut map)?,
                        Field::Lat => set_once(&mut p.lat, &mut s[3], "lat", &mut map)?,
                        Field::Lon => set_once(&mut p.lon, &mut s[4], "lon", &mut map)?,
                        Field::SpeedMps => set_once(&mut p.speed_mps, &mut s[5], "speed_mps", &mut map)?,
                        Field::HeadingDeg => set_once(&mut p.heading_deg, &mut s[6], "heading_deg", &mut map)?,
                        Field::AccuracyM => set_once(&mut p.accuracy_m, &mut s[7], "accuracy_m", &mut map)?,
                        Field::AltM => set_once(&mut p.alt_m, &mut s[8], "alt_m", &mut map)?,
                        Field::Ignition => set_once(&mut p.ignition, &mut s[9], "ignition", &mut map)?,
                        Field::OdometerM => set_once(&mut p.odometer_m, &mut s[10], "odometer_m", &mut map)?,
                        Field::Unknown => {
                            map.next_value::<IgnoredAny>()?;
                            p.unknown_fields = p.unknown_fields.saturating_add(1);
                        }
                    }
                }
                Ok(p)
            }
        }
        deserializer.deserialize_map(PointVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawPoint {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_fields_are_counted_not_fatal() {
        let p = raw(r#"{"ts_ms": 1, "lat": 1.0, "lon": 2.0, "rpm": 2000, "fuel": {"l": 3}}"#);
        assert_eq!(p.unknown_fields, 2);
        assert_eq!(p.lat, Some(1.0));
    }

    #[test]
    fn duplicate_fields_are_a_schema_error() {
        assert!(serde_json::from_str::<RawPoint>(r#"{"lat": 1.0, "lat": 2.0}"#).is_err());
    }

    #[test]
    fn impossible_optional_values_are_cleared_and_counted() {
        let p = raw(r#"{"ts_ms": 1, "lat": 1.0, "lon": 2.0, "speed_mps": -1, "heading_deg": 360, "accuracy_m": -3}"#);
        let mut repairs = FieldRepairs::default();
        let point = Point::from_raw(&p, &mut repairs).unwrap();
        assert_eq!(point.speed_mps, None);
        assert_eq!(point.accuracy_m, None);
        assert_eq!(point.heading_deg, Some(0.0));
        assert_eq!(repairs.cleared_fields, 2);
    }

    #[test]
    fn a_phones_digits_are_kept_to_the_stored_precision() {
        let p = raw(r#"{"ts_ms": 1, "lat": 51.681368224760234, "lon": -0.00000004, "speed_mps": 13.888888,
                "heading_deg": 359.97, "accuracy_m": 3.9000000953674316, "alt_m": 102.123, "odometer_m": 5.5}"#);
        let point = Point::from_raw(&p, &mut FieldRepairs::default()).unwrap();
        assert_eq!(point.lat, 51.6813682);
        // Rounded to zero, and to a positive zero (which a fixed-point column stores).
        assert!(point.lon == 0.0 && point.lon.is_sign_positive());
        assert_eq!(point.speed_mps, Some(13.89));
        assert_eq!(point.heading_deg, Some(0.0));
        assert_eq!((point.accuracy_m, point.alt_m, point.odometer_m), (Some(3.9), Some(102.12), Some(5.5)));
        // Decoding what was decoded changes nothing.
        assert_eq!(Point::from_raw(&point.to_raw(), &mut FieldRepairs::default()).unwrap(), point);
    }

    #[test]
    fn ts_and_ts_ms_must_agree_when_both_given() {
        let mut repairs = FieldRepairs::default();
        let agree = raw(r#"{"ts": "1970-01-01T00:00:01Z", "ts_ms": 1000, "lat": 1, "lon": 1}"#);
        assert_eq!(Point::from_raw(&agree, &mut repairs).unwrap().ts_ms, 1000);
        let disagree = raw(r#"{"ts": "1970-01-01T00:00:01Z", "ts_ms": 1001, "lat": 1, "lon": 1}"#);
        assert!(Point::from_raw(&disagree, &mut repairs).is_err());
    }

    #[test]
    fn non_finite_coordinates_are_invalid_coordinates() {
        let mut point =
            Point::from_raw(&raw(r#"{"ts_ms": 0, "lat": 1, "lon": 1}"#), &mut FieldRepairs::default()).unwrap();
        for (lat, lon) in [(f64::NAN, 1.0), (1.0, f64::INFINITY), (f64::NEG_INFINITY, 1.0)] {
            (point.lat, point.lon) = (lat, lon);
            assert_eq!(PointRules::without_clock().check(&point).map(|r| r.0), Some(RejectReason::InvalidCoordinates));
        }
    }

    #[test]
    fn rules_measured_against_the_clock_are_skipped_without_one() {
        let point = Point::from_raw(&raw(r#"{"ts_ms": 0, "lat": 1, "lon": 1}"#), &mut FieldRepairs::default()).unwrap();
        assert_eq!(PointRules::without_clock().check(&point), None);
        let now = DEFAULT_LATE_WINDOW_MS + 1;
        assert_eq!(PointRules::at(now).check(&point).map(|r| r.0), Some(RejectReason::TimestampTooOld));
    }
}
