//! `(topic, bytes)` → typed, validated data, or a rejection with one of the contract's reasons.
//!
//! Pure and synchronous: the clock is a parameter, so every rule is testable without a runtime.
//! The decoder never panics, whatever the bytes (a property test holds it to that).

use serde_json::error::Category;

use crate::ModelError;
use crate::ids::{TripId, VehicleId};
use crate::point::{FieldRepairs, Point, PointRules, RawPoint};
use crate::reject::RejectReason;
use crate::time::{check_ts_range, parse_rfc3339_ms};
use crate::topic::{Topic, TopicKind};
use crate::wire::{MAX_PAYLOAD_BYTES, MAX_POINTS_PER_MESSAGE, RawTelemetry, RawTripMarker, TripMarker};

/// Limits and rules the decoder applies. `Default` is the contract's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeConfig {
    /// Largest accepted payload.
    pub max_payload_bytes: usize,
    /// Most points per Telemetry message.
    pub max_points: usize,
    /// How far ahead of "now" a timestamp may be.
    pub max_future_ms: i64,
    /// How far behind "now" a timestamp may be (the late window).
    pub late_window_ms: i64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            max_points: MAX_POINTS_PER_MESSAGE,
            max_future_ms: crate::point::DEFAULT_MAX_FUTURE_MS,
            late_window_ms: crate::point::DEFAULT_LATE_WINDOW_MS,
        }
    }
}

impl DecodeConfig {
    /// The single-point rules at `now_ms` (`None`: skip the rules measured against "now").
    pub fn point_rules(&self, now_ms: Option<i64>) -> PointRules {
        PointRules { now_ms, max_future_ms: self.max_future_ms, max_age_ms: self.late_window_ms }
    }
}

/// A usable message.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Samples from `vehicles/{id}/telemetry`.
    Telemetry(Telemetry),
    /// A marker from `vehicles/{id}/trips`.
    Marker {
        /// The topic's vehicle.
        vehicle_id: VehicleId,
        /// The marker.
        marker: TripMarker,
        /// Fields tripline did not know.
        unknown_fields: u32,
    },
}

/// A decoded Telemetry message: the points kept and the points dropped, with reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Telemetry {
    /// The topic's vehicle.
    pub vehicle_id: VehicleId,
    /// The device's trip, when it names one.
    pub trip_id: Option<TripId>,
    /// Points that passed every single-point rule, in message order.
    pub points: Vec<Point>,
    /// Points dropped, with why.
    pub rejected: Vec<PointRejection>,
    /// Fields tripline did not know, over the message and all its points.
    pub unknown_fields: u32,
    /// Optional point fields cleared because their value was impossible.
    pub cleared_fields: u32,
}

/// One dropped point.
#[derive(Clone, Debug, PartialEq)]
pub struct PointRejection {
    /// Position of the point in the message's `points` array.
    pub index: usize,
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail.
    pub detail: String,
    /// The point as sent.
    pub point: RawPoint,
}

/// A message that cannot be used at all.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRejection {
    /// Why.
    pub reason: RejectReason,
    /// Human-readable detail (for the rejection record and logs).
    pub detail: String,
    /// The topic's vehicle, when the topic could be read.
    pub vehicle_id: Option<VehicleId>,
}

impl MessageRejection {
    fn new(reason: RejectReason, detail: impl Into<String>, vehicle_id: Option<&VehicleId>) -> Self {
        MessageRejection { reason, detail: detail.into(), vehicle_id: vehicle_id.cloned() }
    }
}

fn json_rejection(error: &serde_json::Error, vehicle_id: &VehicleId) -> MessageRejection {
    let reason = match error.classify() {
        Category::Data => RejectReason::Schema,
        Category::Syntax | Category::Eof | Category::Io => RejectReason::MalformedJson,
    };
    MessageRejection::new(reason, error.to_string(), Some(vehicle_id))
}

fn schema(error: &ModelError, vehicle_id: &VehicleId) -> MessageRejection {
    MessageRejection::new(RejectReason::Schema, error.to_string(), Some(vehicle_id))
}

fn check_payload_vehicle(claimed: Option<&str>, vehicle_id: &VehicleId) -> Result<(), MessageRejection> {
    match claimed {
        Some(claimed) if claimed != vehicle_id.as_str() => Err(MessageRejection::new(
            RejectReason::TopicMismatch,
            format!(
                "payload names vehicle {:?}, topic names {vehicle_id}",
                claimed.chars().take(80).collect::<String>()
            ),
            Some(vehicle_id),
        )),
        _ => Ok(()),
    }
}

/// Decodes one MQTT message. `now_ms` is the injected clock (`None` skips the rules measured
/// against the current time).
pub fn decode(
    topic: &str,
    payload: &[u8],
    config: &DecodeConfig,
    now_ms: Option<i64>,
) -> Result<Message, MessageRejection> {
    let topic =
        Topic::parse(topic).map_err(|e| MessageRejection::new(RejectReason::InvalidTopic, e.to_string(), None))?;
    let vehicle_id = &topic.vehicle_id;
    if payload.len() > config.max_payload_bytes {
        return Err(MessageRejection::new(
            RejectReason::PayloadTooLarge,
            format!("payload is {} bytes, the limit is {}", payload.len(), config.max_payload_bytes),
            Some(vehicle_id),
        ));
    }
    match topic.kind {
        TopicKind::Telemetry => decode_telemetry(topic.vehicle_id, payload, config, now_ms).map(Message::Telemetry),
        TopicKind::Trips => decode_marker(topic.vehicle_id, payload, config, now_ms),
    }
}

fn decode_telemetry(
    vehicle_id: VehicleId,
    payload: &[u8],
    config: &DecodeConfig,
    now_ms: Option<i64>,
) -> Result<Telemetry, MessageRejection> {
    let raw: RawTelemetry = serde_json::from_slice(payload).map_err(|e| json_rejection(&e, &vehicle_id))?;
    check_payload_vehicle(raw.vehicle_id.as_deref(), &vehicle_id)?;
    let trip_id = raw.trip_id.as_deref().map(TripId::parse).transpose().map_err(|e| schema(&e, &vehicle_id))?;
    if raw.points.is_empty() || raw.points.len() > config.max_points {
        let detail = format!("`points` must hold 1 to {} samples, it holds {}", config.max_points, raw.points.len());
        return Err(MessageRejection::new(RejectReason::Schema, detail, Some(&vehicle_id)));
    }
    let rules = config.point_rules(now_ms);
    let mut repairs = FieldRepairs::default();
    let mut unknown_fields = u32::try_from(raw.unknown.len()).unwrap_or(u32::MAX);
    let mut points = Vec::with_capacity(raw.points.len());
    let mut rejected = Vec::new();
    for (index, raw_point) in raw.points.into_iter().enumerate() {
        unknown_fields = unknown_fields.saturating_add(raw_point.unknown_fields);
        let point = match Point::from_raw(&raw_point, &mut repairs) {
            Ok(point) => point,
            // A sample dated beyond any clock rule's reach loses only itself.
            Err(error @ ModelError::TimestampOutOfRange { future, .. }) => {
                let reason = if future { RejectReason::TimestampFuture } else { RejectReason::TimestampTooOld };
                rejected.push(PointRejection { index, reason, detail: error.to_string(), point: raw_point });
                continue;
            }
            Err(error) => {
                let detail = format!("points[{index}]: {error}");
                return Err(MessageRejection::new(RejectReason::Schema, detail, Some(&vehicle_id)));
            }
        };
        match rules.check(&point) {
            None => points.push(point),
            Some((reason, detail)) => rejected.push(PointRejection { index, reason, detail, point: raw_point }),
        }
    }
    Ok(Telemetry { vehicle_id, trip_id, points, rejected, unknown_fields, cleared_fields: repairs.cleared_fields })
}

fn decode_marker(
    vehicle_id: VehicleId,
    payload: &[u8],
    config: &DecodeConfig,
    now_ms: Option<i64>,
) -> Result<Message, MessageRejection> {
    let raw: RawTripMarker = serde_json::from_slice(payload).map_err(|e| json_rejection(&e, &vehicle_id))?;
    check_payload_vehicle(raw.vehicle_id.as_deref(), &vehicle_id)?;
    let trip_id = TripId::parse(&raw.trip_id).map_err(|e| schema(&e, &vehicle_id))?;
    let ts_ms = match (raw.ts.as_deref(), raw.ts_ms) {
        (Some(text), None) => parse_rfc3339_ms(text),
        (None, Some(ms)) => check_ts_range(ms),
        (Some(text), Some(ms)) => parse_rfc3339_ms(text).and_then(|parsed| {
            if parsed == ms {
                Ok(parsed)
            } else {
                Err(ModelError::Schema { detail: "`ts` and `ts_ms` disagree".to_owned() })
            }
        }),
        (None, None) => Err(ModelError::Schema { detail: "marker has neither `ts` nor `ts_ms`".to_owned() }),
    }
    .map_err(|e| schema(&e, &vehicle_id))?;
    if let Some(now_ms) = now_ms {
        // A marker is judged by the same clock rules as a point; it has no position to check.
        let rules = config.point_rules(Some(now_ms));
        let probe = Point::new(ts_ms, 1.0, 1.0);
        if let Some((reason, detail)) = rules.check(&probe) {
            return Err(MessageRejection::new(reason, detail, Some(&vehicle_id)));
        }
    }
    let unknown_fields = u32::try_from(raw.unknown.len()).unwrap_or(u32::MAX);
    Ok(Message::Marker { vehicle_id, marker: TripMarker { trip_id, event: raw.event, ts_ms }, unknown_fields })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::point::PointPrecision;
    use crate::wire::encode_telemetry;

    const NOW_MS: i64 = 1_795_000_000_000; // 2026-11-18
    const TOPIC: &str = "vehicles/car-1/telemetry";

    fn decode_now(topic: &str, payload: &[u8]) -> Result<Message, MessageRejection> {
        decode(topic, payload, &DecodeConfig::default(), Some(NOW_MS))
    }

    fn telemetry(payload: &str) -> Telemetry {
        match decode_now(TOPIC, payload.as_bytes()) {
            Ok(Message::Telemetry(t)) => t,
            other => panic!("expected telemetry, got {other:?}"),
        }
    }

    fn rejection(topic: &str, payload: &[u8]) -> RejectReason {
        decode_now(topic, payload).expect_err("expected a rejection").reason
    }

    fn point_json(ts_ms: i64, lat: &str, lon: &str) -> String {
        format!(r#"{{"ts_ms": {ts_ms}, "lat": {lat}, "lon": {lon}}}"#)
    }

    #[test]
    fn a_valid_message_keeps_every_point_with_its_fields() {
        let t = telemetry(
            r#"{"trip_id": "t-1", "points": [
                {"seq": 1017, "ts": "2026-11-18T10:15:30.250Z", "lat": 52.520008, "lon": 13.404954,
                 "speed_mps": 13.9, "heading_deg": 271.0, "accuracy_m": 4.5, "alt_m": 34.0,
                 "ignition": true, "odometer_m": 123456789}]}"#,
        );
        assert_eq!(t.vehicle_id.as_str(), "car-1");
        assert_eq!(t.trip_id.as_ref().map(TripId::as_str), Some("t-1"));
        let p = &t.points[0];
        assert_eq!(
            (p.seq, p.lat, p.lon, p.speed_mps, p.ignition),
            (Some(1017), 52.520008, 13.404954, Some(13.9), Some(true))
        );
        assert_eq!(crate::time::format_rfc3339_ms(p.ts_ms), "2026-11-18T10:15:30.250Z");
        assert!(t.rejected.is_empty());
    }

    #[test]
    fn malformed_json_is_rejected_as_malformed_json() {
        assert_eq!(rejection(TOPIC, br#"{"points": ["#), RejectReason::MalformedJson);
        assert_eq!(rejection(TOPIC, b"\xff\xfe"), RejectReason::MalformedJson);
        assert_eq!(rejection(TOPIC, b""), RejectReason::MalformedJson);
        // JSON cannot carry a non-finite number; one beyond f64's range fails in the parser.
        let huge = format!(r#"{{"points": [{}]}}"#, point_json(NOW_MS, "1e400", "13.4"));
        assert_eq!(rejection(TOPIC, huge.as_bytes()), RejectReason::MalformedJson);
    }

    #[test]
    fn structural_problems_are_rejected_as_schema() {
        let cases = [
            r#"[1, 2]"#.to_owned(),
            r#"{"points": []}"#.to_owned(),
            r#"{"trip_id": "t 1", "points": [{"ts_ms": 1795000000000, "lat": 1, "lon": 1}]}"#.to_owned(),
            r#"{"points": [{"ts_ms": 1795000000000, "lat": 1}]}"#.to_owned(),
            r#"{"points": [{"lat": 1, "lon": 1}]}"#.to_owned(),
            r#"{"points": [{"ts": "2026-11-18 10:00", "lat": 1, "lon": 1}]}"#.to_owned(),
            r#"{"points": [{"ts_ms": 1795000000000, "lat": "52.1", "lon": 1}]}"#.to_owned(),
            format!(r#"{{"points": [{}]}}"#, vec![point_json(NOW_MS, "1", "1"); 1001].join(",")),
        ];
        for case in cases {
            assert_eq!(rejection(TOPIC, case.as_bytes()), RejectReason::Schema, "{case:.120}");
        }
    }

    #[test]
    fn a_point_dated_beyond_year_9999_or_before_year_1_loses_only_itself() {
        let t = telemetry(&format!(
            r#"{{"points": [{}, {{"ts": "10000-01-01T00:00:00Z", "lat": 1, "lon": 1}}, {}, {}]}}"#,
            point_json(NOW_MS, "1", "1"),
            point_json(253_402_300_800_000, "1", "1"),
            point_json(-62_135_596_800_001, "1", "1"),
        ));
        assert_eq!(t.points.len(), 1, "the good point stays");
        let reasons: Vec<(usize, RejectReason)> = t.rejected.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (1, RejectReason::TimestampFuture),
                (2, RejectReason::TimestampFuture),
                (3, RejectReason::TimestampTooOld)
            ]
        );
    }

    #[test]
    fn payloads_over_256_kib_are_rejected_before_parsing() {
        let mut payload = vec![b' '; 256 * 1024 + 1];
        payload[0] = b'{';
        assert_eq!(rejection(TOPIC, &payload), RejectReason::PayloadTooLarge);
    }

    #[test]
    fn a_payload_naming_another_vehicle_is_a_topic_mismatch() {
        let payload = format!(r#"{{"vehicle_id": "car-2", "points": [{}]}}"#, point_json(NOW_MS, "1", "1"));
        assert_eq!(rejection(TOPIC, payload.as_bytes()), RejectReason::TopicMismatch);
        let same = format!(r#"{{"vehicle_id": "car-1", "points": [{}]}}"#, point_json(NOW_MS, "1", "1"));
        assert!(decode_now(TOPIC, same.as_bytes()).is_ok());
    }

    #[test]
    fn topics_outside_the_contract_are_invalid_topics() {
        let payload = format!(r#"{{"points": [{}]}}"#, point_json(NOW_MS, "1", "1"));
        let rejected = decode_now("vehicles/car 1/telemetry", payload.as_bytes()).unwrap_err();
        assert_eq!((rejected.reason, rejected.vehicle_id), (RejectReason::InvalidTopic, None));
    }

    #[test]
    fn bad_points_are_dropped_with_their_reason_and_the_rest_kept() {
        let day_ms = 24 * 3600 * 1000;
        let points = [
            point_json(NOW_MS, "52.5", "13.4"),
            point_json(NOW_MS, "91", "13.4"),
            point_json(NOW_MS, "52.5", "-180.5"),
            point_json(NOW_MS, "0.0", "0"),
            point_json(NOW_MS + 3_600_000, "52.5", "13.4"),
            point_json(NOW_MS - 8 * day_ms, "52.5", "13.4"),
            point_json(NOW_MS - 6 * day_ms, "52.5", "13.4"),
        ];
        let t = telemetry(&format!(r#"{{"points": [{}]}}"#, points.join(",")));
        assert_eq!(t.points.len(), 2);
        let reasons: Vec<(usize, RejectReason)> = t.rejected.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                (1, RejectReason::InvalidCoordinates),
                (2, RejectReason::InvalidCoordinates),
                (3, RejectReason::NullIsland),
                (4, RejectReason::TimestampFuture),
                (5, RejectReason::TimestampTooOld),
            ]
        );
        assert_eq!(t.rejected[1].point.lon, Some(-180.5));
    }

    #[test]
    fn without_a_clock_old_and_future_points_are_kept() {
        let payload = format!(r#"{{"points": [{}]}}"#, point_json(0, "52.5", "13.4"));
        let decoded = decode(TOPIC, payload.as_bytes(), &DecodeConfig::default(), None).unwrap();
        let Message::Telemetry(t) = decoded else { panic!("telemetry expected") };
        assert_eq!(t.points.len(), 1);
    }

    #[test]
    fn unknown_fields_are_counted_across_message_and_points() {
        let t = telemetry(&format!(
            r#"{{"firmware": "1.2", "points": [{{"ts_ms": {NOW_MS}, "lat": 1, "lon": 1, "rpm": 900, "gear": 3}}]}}"#
        ));
        assert_eq!(t.unknown_fields, 3);
    }

    #[test]
    fn markers_decode_and_are_judged_by_the_clock() {
        let ok =
            decode_now("vehicles/car-1/trips", br#"{"trip_id": "t-9", "event": "end", "ts": "2026-11-18T10:00:00Z"}"#);
        let Ok(Message::Marker { marker, .. }) = ok else { panic!("marker expected: {ok:?}") };
        assert_eq!((marker.trip_id.as_str(), marker.event), ("t-9", crate::wire::MarkerEvent::End));
        let future = br#"{"trip_id": "t-9", "event": "start", "ts": "2027-01-01T00:00:00Z"}"#;
        assert_eq!(rejection("vehicles/car-1/trips", future), RejectReason::TimestampFuture);
        let bad_event = br#"{"trip_id": "t-9", "event": "pause", "ts": "2026-11-18T10:00:00Z"}"#;
        assert_eq!(rejection("vehicles/car-1/trips", bad_event), RejectReason::Schema);
    }

    // ------------------------------------------------------------------------- properties

    fn arb_point() -> impl Strategy<Value = Point> {
        (
            (any::<Option<u64>>(), NOW_MS - 6 * 24 * 3_600_000..NOW_MS, -89.9..89.9_f64, -179.9..179.9_f64),
            (
                proptest::option::of(0.0..80.0_f64),
                proptest::option::of(0.0..359.9_f64),
                proptest::option::of(0.0..100.0_f64),
                proptest::option::of(-400.0..9000.0_f64),
                any::<Option<bool>>(),
                proptest::option::of(0.0..1e9_f64),
            ),
        )
            .prop_filter("not (0, 0)", |((_, _, lat, lon), _)| lat.abs() > 1e-6 || lon.abs() > 1e-6)
            .prop_map(
                |((seq, ts_ms, lat, lon), (speed_mps, heading_deg, accuracy_m, alt_m, ignition, odometer_m))| {
                    // Values as a device at the stored precision sends them.
                    let at = |decimals: u8| move |v: f64| crate::point::quantise(v, decimals);
                    let metres = at(PointPrecision::METRES);
                    Point {
                        seq,
                        ts_ms,
                        lat: at(PointPrecision::DEGREES)(lat),
                        lon: at(PointPrecision::DEGREES)(lon),
                        speed_mps: speed_mps.map(at(PointPrecision::SPEED_MPS)),
                        heading_deg: heading_deg.map(at(PointPrecision::HEADING_DEG)),
                        accuracy_m: accuracy_m.map(metres),
                        alt_m: alt_m.map(metres),
                        ignition,
                        odometer_m: odometer_m.map(metres),
                    }
                },
            )
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-z_]{0,12}".prop_map(Value::String),
            Just(Value::String("2026-11-18T10:00:00Z".to_owned())),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let keys = prop_oneof![
                Just("points".to_owned()),
                Just("trip_id".to_owned()),
                Just("ts".to_owned()),
                Just("ts_ms".to_owned()),
                Just("lat".to_owned()),
                Just("lon".to_owned()),
                Just("seq".to_owned()),
                Just("speed_mps".to_owned()),
                Just("event".to_owned()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(keys, inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512), trips in any::<bool>()) {
            let topic = if trips { "vehicles/v/trips" } else { TOPIC };
            let _ = decode_now(topic, &bytes);
        }

        #[test]
        fn decode_never_panics_on_arbitrary_json(value in arb_json(), trips in any::<bool>()) {
            let topic = if trips { "vehicles/v/trips" } else { TOPIC };
            let bytes = serde_json::to_vec(&value).unwrap();
            let _ = decode_now(topic, &bytes);
        }

        #[test]
        fn encoded_telemetry_decodes_to_the_same_points(points in proptest::collection::vec(arb_point(), 1..50), with_trip in any::<bool>()) {
            let trip_id = with_trip.then(|| TripId::parse("trip-7").unwrap());
            let payload = encode_telemetry(trip_id.as_ref(), &points);
            let decoded = decode_now(TOPIC, &payload).unwrap();
            let Message::Telemetry(t) = decoded else { panic!("telemetry expected") };
            prop_assert_eq!(t.trip_id, trip_id);
            prop_assert_eq!(t.points, points);
            prop_assert!(t.rejected.is_empty());
            prop_assert_eq!(t.unknown_fields, 0);
        }
    }
}
