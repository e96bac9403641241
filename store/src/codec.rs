//! Byte layouts of the embedded store's keys and values, and the text of paging cursors.
//!
//! Keys sort the way reads need them: numbers are big-endian with the sign bit flipped, text
//! parts end with a 0 byte (identifiers never contain one).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tripline_model::{Point, TripId};

use crate::chunk::{ChunkId, ChunkRow};
use crate::records::{Derived, TripRecord, day_of};
use crate::{StoreError, StoreResult};

/// Appends `v` so that byte order equals numeric order.
pub(crate) fn push_i64(key: &mut Vec<u8>, v: i64) {
    key.extend_from_slice(&((v as u64) ^ (1 << 63)).to_be_bytes());
}

/// `v` alone, as [`push_i64`] writes it (a key or value of one number).
pub(crate) fn i64_bytes(v: i64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8);
    push_i64(&mut bytes, v);
    bytes
}

pub(crate) fn read_i64(bytes: &[u8]) -> Option<i64> {
    let array: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(array) ^ (1 << 63)) as i64)
}

pub(crate) fn push_text(key: &mut Vec<u8>, text: &str) {
    key.extend_from_slice(text.as_bytes());
    key.push(0);
}

/// `vehicle \0 start_ts stamp`: a vehicle's point chunks in order of their first point.
pub(crate) fn chunk_key(vehicle: &str, start_ts: i64, stamp: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(vehicle.len() + 17);
    push_text(&mut out, vehicle);
    push_i64(&mut out, start_ts);
    push_i64(&mut out, stamp);
    out
}

/// `vehicle \0 ts`: where a vehicle's chunks starting at or after `ts_ms` are.
pub(crate) fn point_bound(vehicle: &str, ts_ms: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(vehicle.len() + 9);
    push_text(&mut out, vehicle);
    push_i64(&mut out, ts_ms);
    out
}

/// An embedded chunk (the key holds vehicle, start and stamp).
#[derive(Serialize, Deserialize)]
pub(crate) struct ChunkValue<'a> {
    pub(crate) expires_at_ms: i64,
    pub(crate) trip_id: Cow<'a, str>,
    pub(crate) end_ts: i64,
    pub(crate) sealed: bool,
    #[serde(borrow)]
    pub(crate) points: Cow<'a, [u8]>,
}

impl<'a> ChunkValue<'a> {
    pub(crate) fn of(row: &'a ChunkRow, expires_at_ms: i64) -> Self {
        ChunkValue {
            expires_at_ms,
            trip_id: Cow::Borrowed(row.trip_id.as_str()),
            end_ts: row.end_ts,
            sealed: row.sealed,
            points: Cow::Borrowed(&row.points),
        }
    }

    /// The chunk row stored under `key` (from [`chunk_key`]).
    pub(crate) fn row(self, key: &[u8]) -> StoreResult<ChunkRow> {
        let corrupt = |detail: String| StoreError::Corrupt { table: "point_chunks", detail };
        let at = key.iter().position(|&b| b == 0).ok_or_else(|| corrupt("chunk key without vehicle".to_owned()))?;
        let rest = &key[at + 1..];
        let (Some(start_ts), Some(stamp)) = (read_i64(rest), rest.get(8..).and_then(read_i64)) else {
            return Err(corrupt("chunk key too short".to_owned()));
        };
        Ok(ChunkRow {
            id: ChunkId { day: day_of(start_ts), start_ts, stamp },
            trip_id: TripId::parse(&self.trip_id).map_err(|e| corrupt(e.to_string()))?,
            end_ts: self.end_ts,
            sealed: self.sealed,
            points: self.points.into_owned(),
        })
    }
}

/// A point row of the layout before chunks (the key held vehicle, time and `seq_key`), read
/// once to move a store to chunks (and written by its test).
#[derive(Serialize, Deserialize)]
pub(crate) struct PointRow<'a> {
    pub(crate) expires_at_ms: i64,
    pub(crate) trip_id: std::borrow::Cow<'a, str>,
    pub(crate) seq: Option<u64>,
    pub(crate) ts_ms: i64,
    pub(crate) lat: f64,
    pub(crate) lon: f64,
    pub(crate) speed_mps: Option<f64>,
    pub(crate) heading_deg: Option<f64>,
    pub(crate) accuracy_m: Option<f64>,
    pub(crate) alt_m: Option<f64>,
    pub(crate) ignition: Option<bool>,
    pub(crate) odometer_m: Option<f64>,
    pub(crate) derived: std::borrow::Cow<'a, Derived>,
}

impl<'a> PointRow<'a> {
    #[cfg(test)]
    pub(crate) fn new(trip_id: &'a TripId, p: &Point, derived: &'a Derived, expires_at_ms: i64) -> Self {
        PointRow {
            expires_at_ms,
            trip_id: std::borrow::Cow::Borrowed(trip_id.as_str()),
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
            derived: std::borrow::Cow::Borrowed(derived),
        }
    }

    pub(crate) fn point(&self) -> Point {
        Point {
            seq: self.seq,
            ts_ms: self.ts_ms,
            lat: self.lat,
            lon: self.lon,
            speed_mps: self.speed_mps,
            heading_deg: self.heading_deg,
            accuracy_m: self.accuracy_m,
            alt_m: self.alt_m,
            ignition: self.ignition,
            odometer_m: self.odometer_m,
        }
    }
}

/// A JSON record with its expiry (trips, rejections, changes).
#[derive(Serialize, Deserialize)]
pub(crate) struct Expiring<T> {
    pub(crate) expires_at_ms: i64,
    pub(crate) record: T,
}

/// First byte of an embedded trip value in the binary layout: `[1][expires_at_ms i64 LE][trip]`
/// (the trip as [`crate::trip_encoding`] writes it). Values from before start with `{` (JSON).
const TRIP_VALUE_V1: u8 = 1;

/// An embedded trip value: its expiry and the record.
pub(crate) fn encode_trip_value(expires_at_ms: i64, record: &TripRecord) -> StoreResult<Vec<u8>> {
    let trip = crate::trip_encoding::encode(record)?;
    let mut out = Vec::with_capacity(9 + trip.len());
    out.push(TRIP_VALUE_V1);
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(&trip);
    Ok(out)
}

/// The expiry of an embedded trip value.
pub(crate) fn trip_value_expiry(value: &[u8]) -> StoreResult<i64> {
    match value.first() {
        Some(&TRIP_VALUE_V1) => value
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes)
            .ok_or(StoreError::Corrupt { table: "trips", detail: "trip value too short".to_owned() }),
        _ => Ok(decode_json::<Expiring<serde_json::Value>>(value, "trips")?.expires_at_ms),
    }
}

/// An embedded trip value's record, `None` once expired at `now_ms`.
pub(crate) fn decode_trip_value(value: &[u8], now_ms: i64) -> StoreResult<Option<TripRecord>> {
    if trip_value_expiry(value)? <= now_ms {
        return Ok(None);
    }
    match value.first() {
        Some(&TRIP_VALUE_V1) => crate::trip_encoding::decode(&value[9..]).map(Some),
        _ => Ok(Some(decode_json::<Expiring<TripRecord>>(value, "trips")?.record)),
    }
}

pub(crate) fn encode_postcard<T: Serialize>(value: &T, table: &'static str) -> StoreResult<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| StoreError::Corrupt { table, detail: e.to_string() })
}

pub(crate) fn decode_postcard<'a, T: Deserialize<'a>>(bytes: &'a [u8], table: &'static str) -> StoreResult<T> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt { table, detail: e.to_string() })
}

pub(crate) fn encode_json<T: Serialize>(value: &T, table: &'static str) -> StoreResult<Vec<u8>> {
    // Room for a typical trip record up front: growing from empty reallocates a dozen times.
    let mut out = Vec::with_capacity(2048);
    serde_json::to_writer(&mut out, value).map_err(|e| StoreError::Corrupt { table, detail: e.to_string() })?;
    Ok(out)
}

pub(crate) fn decode_json<'a, T: Deserialize<'a>>(bytes: &'a [u8], table: &'static str) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { table, detail: e.to_string() })
}

/// Cursor text for a rejection position: `{received_at_ms}.{id}`.
pub(crate) fn rejection_cursor(received_at_ms: i64, id: &str) -> String {
    format!("{received_at_ms}.{id}")
}

pub(crate) fn parse_rejection_cursor(cursor: &str) -> StoreResult<(i64, String)> {
    let (ts, id) = cursor.split_once('.').ok_or(StoreError::BadCursor)?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::BadCursor);
    }
    Ok((ts.parse().map_err(|_| StoreError::BadCursor)?, id.to_owned()))
}

/// Bytes as lowercase hex (cursors over raw keys).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> StoreResult<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return Err(StoreError::BadCursor);
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|pair| u8::from_str_radix(pair, 16).ok()).ok_or(StoreError::BadCursor))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_numbers_sort_as_bytes() {
        let values = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let keys: Vec<Vec<u8>> = values
            .iter()
            .map(|v| {
                let mut k = Vec::new();
                push_i64(&mut k, *v);
                k
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keys.iter().map(|k| read_i64(k).unwrap()).collect::<Vec<_>>(), values);
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        assert_eq!(parse_rejection_cursor(&rejection_cursor(5, "abc1")).unwrap(), (5, "abc1".to_owned()));
        assert!(parse_rejection_cursor("5.zz").is_err());
        assert_eq!(unhex(&hex(&[0, 1, 255])).unwrap(), vec![0, 1, 255]);
        assert!(unhex("abc").is_err());
    }

    proptest::proptest! {
        #[test]
        fn chunk_keys_sort_as_their_vehicle_start_and_stamp(
            a in ("[A-Za-z0-9._:-]{1,8}", proptest::prelude::any::<i64>(), proptest::prelude::any::<i64>()),
            b in ("[A-Za-z0-9._:-]{1,8}", proptest::prelude::any::<i64>(), proptest::prelude::any::<i64>()),
        ) {
            let key = |(v, start, stamp): &(String, i64, i64)| chunk_key(v, *start, *stamp);
            // Vehicle first (its bytes, then the 0 that ends it), then start, then stamp.
            let tuple = |(v, start, stamp): &(String, i64, i64)| (v.as_bytes().to_vec(), *start, *stamp);
            proptest::prop_assert_eq!(key(&a).cmp(&key(&b)), tuple(&a).cmp(&tuple(&b)));
            // A bound at a start sorts before every chunk of that vehicle starting there or later.
            let bound = point_bound(&a.0, a.1);
            proptest::prop_assert!(bound <= key(&a));
            if b.0 == a.0 {
                proptest::prop_assert_eq!(bound <= key(&b), b.1 >= a.1);
            }
        }

        #[test]
        fn cursors_read_back_what_they_hold(ts in proptest::prelude::any::<i64>(), id in "[0-9a-f]{1,32}", bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(parse_rejection_cursor(&rejection_cursor(ts, &id)).unwrap(), (ts, id));
            proptest::prop_assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        }

        #[test]
        fn any_cursor_text_is_read_or_refused_without_panicking(text in "\\PC{0,40}") {
            let _ = parse_rejection_cursor(&text);
            let _ = unhex(&text);
        }
    }
}
