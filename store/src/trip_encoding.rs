//! Trip records as stored: a version byte, then the record in postcard (varints, times as Unix
//! milliseconds, strings borrowed while encoding). A third of the JSON it replaces, and faster
//! both ways; the API's JSON is built from the decoded record, so it does not change.
//!
//! Version 2 appends the trip's [`DroppedPoints`] after the version-1 body, so version-1 records
//! (no dropped points) and records written before the binary encoding (JSON text, starting with
//! `{`) still decode.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tripline_model::time::to_datetime;
use tripline_model::{
    DroppedPoints, Event, EventCounts, EventKind, Place, Point, TenantId, TripId, TripStatus, TripSummary, VehicleId,
};

use crate::records::TripRecord;
use crate::{StoreError, StoreResult};

/// Version byte of the first binary encoding.
const TRIP_V1: u8 = 1;
/// Version byte of the encoding with the dropped points after the version-1 body.
const TRIP_V2: u8 = 2;

#[derive(Serialize, Deserialize)]
struct PlaceWire<'a> {
    lat: f64,
    lon: f64,
    #[serde(borrow)]
    region: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct EventWire<'a> {
    kind: EventKind,
    ts_ms: i64,
    lat: f64,
    lon: f64,
    value: f64,
    #[serde(borrow)]
    unit: Cow<'a, str>,
    duration_s: f64,
}

/// A [`TripRecord`] as encoded (field order is the format: append only, with a new version).
#[derive(Serialize, Deserialize)]
struct TripWire<'a> {
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    trip_id: Cow<'a, str>,
    #[serde(borrow)]
    vehicle_id: Cow<'a, str>,
    status: TripStatus,
    start_ms: i64,
    end_ms: i64,
    duration_s: f64,
    moving_time_s: f64,
    idle_time_s: f64,
    distance_km: f64,
    max_speed_kmh: f64,
    avg_speed_kmh: f64,
    #[serde(borrow)]
    start: PlaceWire<'a>,
    #[serde(borrow)]
    end: PlaceWire<'a>,
    regions: Vec<Cow<'a, str>>,
    events: EventCounts,
    speeding_s: f64,
    night_driving_s: f64,
    point_count: u64,
    rejected_point_count: u64,
    score: f64,
    score_version: u32,
    updated_ms: i64,
    event_list: Vec<EventWire<'a>>,
    cells: Vec<Cow<'a, str>>,
}

/// A dropped point as encoded (the model's `Point` skips absent fields, which postcard, not
/// self-describing, cannot read back).
#[derive(Serialize, Deserialize)]
struct PointWire {
    seq: Option<u64>,
    ts_ms: i64,
    lat: f64,
    lon: f64,
    speed_mps: Option<f64>,
    heading_deg: Option<f64>,
    accuracy_m: Option<f64>,
    alt_m: Option<f64>,
    ignition: Option<bool>,
    odometer_m: Option<f64>,
}

/// [`DroppedPoints`] as encoded, after the version-1 body (field order is the format).
#[derive(Serialize, Deserialize)]
struct DroppedWire {
    jumps: Vec<PointWire>,
    jumps_beyond: u64,
    rejected_keys: Vec<u64>,
    rejected_beyond: u64,
}

fn dropped_wire(dropped: &DroppedPoints) -> DroppedWire {
    let point = |p: &Point| PointWire {
        seq: p.seq,
        ts_ms: p.ts_ms,
        lat: p.lat,
        lon: p.lon,
        speed_mps: p.speed_mps,
        heading_deg: p.heading_deg,
        accuracy_m: p.accuracy_m,
        alt_m: p.alt_m,
        ignition: p.ignition,
        odometer_m: p.odometer_m,
    };
    DroppedWire {
        jumps: dropped.jumps.iter().map(point).collect(),
        jumps_beyond: dropped.jumps_beyond,
        rejected_keys: dropped.rejected_keys.clone(),
        rejected_beyond: dropped.rejected_beyond,
    }
}

fn dropped(wire: DroppedWire) -> DroppedPoints {
    let point = |p: PointWire| Point {
        seq: p.seq,
        ts_ms: p.ts_ms,
        lat: p.lat,
        lon: p.lon,
        speed_mps: p.speed_mps,
        heading_deg: p.heading_deg,
        accuracy_m: p.accuracy_m,
        alt_m: p.alt_m,
        ignition: p.ignition,
        odometer_m: p.odometer_m,
    };
    DroppedPoints {
        jumps: wire.jumps.into_iter().map(point).collect(),
        jumps_beyond: wire.jumps_beyond,
        rejected_keys: wire.rejected_keys,
        rejected_beyond: wire.rejected_beyond,
    }
}

fn place_wire(place: &Place) -> PlaceWire<'_> {
    PlaceWire { lat: place.lat, lon: place.lon, region: place.region.as_deref().map(Cow::Borrowed) }
}

fn place(wire: PlaceWire<'_>) -> Place {
    Place { lat: wire.lat, lon: wire.lon, region: wire.region.map(Cow::into_owned) }
}

/// The stored bytes of a trip record.
pub(crate) fn encode(record: &TripRecord) -> StoreResult<Vec<u8>> {
    let s = &record.summary;
    let wire = TripWire {
        tenant: Cow::Borrowed(record.tenant.as_str()),
        trip_id: Cow::Borrowed(s.trip_id.as_str()),
        vehicle_id: Cow::Borrowed(s.vehicle_id.as_str()),
        status: s.status,
        start_ms: s.start_time.timestamp_millis(),
        end_ms: s.end_time.timestamp_millis(),
        duration_s: s.duration_s,
        moving_time_s: s.moving_time_s,
        idle_time_s: s.idle_time_s,
        distance_km: s.distance_km,
        max_speed_kmh: s.max_speed_kmh,
        avg_speed_kmh: s.avg_speed_kmh,
        start: place_wire(&s.start),
        end: place_wire(&s.end),
        regions: s.regions.iter().map(|r| Cow::Borrowed(r.as_str())).collect(),
        events: s.events,
        speeding_s: s.speeding_s,
        night_driving_s: s.night_driving_s,
        point_count: s.point_count,
        rejected_point_count: s.rejected_point_count,
        score: s.score,
        score_version: s.score_version,
        updated_ms: s.updated_at.timestamp_millis(),
        event_list: record
            .events
            .iter()
            .map(|e| EventWire {
                kind: e.kind,
                ts_ms: e.ts.timestamp_millis(),
                lat: e.lat,
                lon: e.lon,
                value: e.value,
                unit: Cow::Borrowed(e.unit.as_str()),
                duration_s: e.duration_s,
            })
            .collect(),
        cells: record.cells.iter().map(|c| Cow::Borrowed(c.as_str())).collect(),
    };
    let mut out = Vec::with_capacity(512);
    out.push(TRIP_V2);
    postcard::to_io(&wire, &mut out).map_err(|e| corrupt(e.to_string()))?;
    postcard::to_io(&dropped_wire(&record.dropped), &mut out).map_err(|e| corrupt(e.to_string()))?;
    Ok(out)
}

/// A trip record from its stored bytes (binary, or JSON from before the binary encoding).
pub(crate) fn decode(bytes: &[u8]) -> StoreResult<TripRecord> {
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
        Some(&TRIP_V1) => {
            let wire: TripWire<'_> = postcard::from_bytes(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            record(wire, DroppedPoints::default())
        }
        Some(&TRIP_V2) => {
            let (wire, rest) =
                postcard::take_from_bytes::<TripWire<'_>>(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            let trailer: DroppedWire = postcard::from_bytes(rest).map_err(|e| corrupt(e.to_string()))?;
            record(wire, dropped(trailer))
        }
        _ => Err(corrupt("unknown trip record version".to_owned())),
    }
}

fn record(w: TripWire<'_>, dropped: DroppedPoints) -> StoreResult<TripRecord> {
    let summary = TripSummary {
        trip_id: TripId::parse(&w.trip_id).map_err(|e| corrupt(e.to_string()))?,
        vehicle_id: VehicleId::parse(&w.vehicle_id).map_err(|e| corrupt(e.to_string()))?,
        status: w.status,
        start_time: to_datetime(w.start_ms),
        end_time: to_datetime(w.end_ms),
        duration_s: w.duration_s,
        moving_time_s: w.moving_time_s,
        idle_time_s: w.idle_time_s,
        distance_km: w.distance_km,
        max_speed_kmh: w.max_speed_kmh,
        avg_speed_kmh: w.avg_speed_kmh,
        start: place(w.start),
        end: place(w.end),
        regions: w.regions.into_iter().map(Cow::into_owned).collect(),
        events: w.events,
        speeding_s: w.speeding_s,
        night_driving_s: w.night_driving_s,
        point_count: w.point_count,
        rejected_point_count: w.rejected_point_count,
        score: w.score,
        score_version: w.score_version,
        updated_at: to_datetime(w.updated_ms),
    };
    let events = w
        .event_list
        .into_iter()
        .map(|e| Event {
            kind: e.kind,
            ts: to_datetime(e.ts_ms),
            lat: e.lat,
            lon: e.lon,
            value: e.value,
            unit: e.unit.into_owned(),
            duration_s: e.duration_s,
        })
        .collect();
    Ok(TripRecord {
        tenant: TenantId::parse(&w.tenant).map_err(|e| corrupt(e.to_string()))?,
        summary,
        events,
        cells: w.cells.into_iter().map(Cow::into_owned).collect(),
        dropped,
    })
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { table: "trips", detail }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record() -> TripRecord {
        let at = |ms: i64| to_datetime(1_795_564_740_000 + ms);
        TripRecord {
            tenant: TenantId::parse("acme").unwrap(),
            summary: TripSummary {
                trip_id: TripId::parse("t1").unwrap(),
                vehicle_id: VehicleId::parse("car-1").unwrap(),
                status: TripStatus::Completed,
                start_time: at(0),
                end_time: at(1_520_250),
                duration_s: 1520.25,
                moving_time_s: 1310.0,
                idle_time_s: 140.0,
                distance_km: 18.42,
                max_speed_kmh: 104.2,
                avg_speed_kmh: 50.6,
                start: Place { lat: 52.5, lon: 13.4, region: Some("Berlin".to_owned()) },
                end: Place { lat: 52.6, lon: 13.5, region: None },
                regions: vec!["Berlin".to_owned(), "Brandenburg".to_owned()],
                events: EventCounts { harsh_braking: 1, harsh_cornering: 2, ..EventCounts::default() },
                speeding_s: 45.0,
                night_driving_s: 0.0,
                point_count: 305,
                rejected_point_count: 2,
                score: 87.5,
                score_version: 1,
                updated_at: at(1_600_000),
            },
            events: vec![Event {
                kind: EventKind::HarshBraking,
                ts: at(60_000),
                lat: 52.51,
                lon: 13.41,
                value: 3.4,
                unit: "m/s2".to_owned(),
                duration_s: 1.0,
            }],
            cells: vec!["u33dc0".to_owned(), "u33dc1".to_owned()],
            dropped: DroppedPoints {
                jumps: vec![Point {
                    seq: Some(9),
                    ts_ms: 1_795_564_800_000,
                    lat: 52.9,
                    lon: 13.9,
                    speed_mps: Some(30.5),
                    heading_deg: None,
                    accuracy_m: Some(4.0),
                    alt_m: None,
                    ignition: Some(true),
                    odometer_m: None,
                }],
                jumps_beyond: 0,
                rejected_keys: vec![7, 1 << 60],
                rejected_beyond: 3,
            },
        }
    }

    #[test]
    fn a_trip_record_round_trips_in_a_third_of_its_json() {
        let record = record();
        let bytes = encode(&record).unwrap();
        assert_eq!(decode(&bytes).unwrap(), record);
        let json = serde_json::to_vec(&record).unwrap();
        assert!(bytes.len() * 3 < json.len(), "{} bytes against {} of JSON", bytes.len(), json.len());
    }

    #[test]
    fn version_1_records_read_with_nothing_dropped() {
        let record = TripRecord { dropped: DroppedPoints::default(), ..record() };
        let mut bytes = encode(&record).unwrap();
        // A version-1 record is the version-2 body without its trailer.
        let trailer = postcard::to_stdvec(&dropped_wire(&DroppedPoints::default())).unwrap();
        bytes.truncate(bytes.len() - trailer.len());
        bytes[0] = TRIP_V1;
        assert_eq!(decode(&bytes).unwrap(), record);
    }

    #[test]
    fn records_written_as_json_still_read() {
        let record = record();
        assert_eq!(decode(&serde_json::to_vec(&record).unwrap()).unwrap(), record);
        assert!(decode(&[9, 1, 2]).is_err());
        assert!(decode(&[TRIP_V1, 1, 2]).is_err());
        assert!(decode(&[TRIP_V2, 1, 2]).is_err());
        assert!(decode(&[]).is_err());
    }
}
