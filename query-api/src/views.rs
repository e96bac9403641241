//! JSON shapes of what the store holds, in the contract's units (km/h, RFC 3339).

use serde::Serialize;
use tripline_store::{Rejection, StoredPoint};

/// One enriched point.
#[derive(Debug, Serialize)]
pub(crate) struct PointView {
    ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    lat: f64,
    lon: f64,
    speed_kmh: f64,
    speed_derived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading_deg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accel_mps2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lateral_accel_mps2: Option<f64>,
    distance_m: f64,
    moving: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alt_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignition: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    odometer_m: Option<f64>,
}

impl From<StoredPoint> for PointView {
    fn from(p: StoredPoint) -> Self {
        PointView {
            ts: tripline_model::time::format_rfc3339_ms(p.point.ts_ms),
            seq: p.point.seq,
            lat: p.point.lat,
            lon: p.point.lon,
            speed_kmh: p.derived.speed_mps * 3.6,
            speed_derived: p.derived.speed_derived,
            heading_deg: p.derived.heading_deg,
            accel_mps2: p.derived.accel_mps2,
            lateral_accel_mps2: p.derived.lateral_accel_mps2,
            distance_m: p.derived.distance_m,
            moving: p.derived.moving,
            region: p.derived.region,
            accuracy_m: p.point.accuracy_m,
            alt_m: p.point.alt_m,
            ignition: p.point.ignition,
            odometer_m: p.point.odometer_m,
        }
    }
}

/// One rejected message or point. The payload is shown as text (invalid UTF-8 replaced).
#[derive(Debug, Serialize)]
pub(crate) struct RejectionView {
    id: String,
    received_at: String,
    reason: &'static str,
    detail: String,
    topic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    vehicle_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    point_index: Option<u32>,
    payload: String,
    payload_bytes: usize,
}

impl From<Rejection> for RejectionView {
    fn from(r: Rejection) -> Self {
        RejectionView {
            id: r.id,
            received_at: tripline_model::time::format_rfc3339_ms(r.received_at_ms),
            reason: r.reason.as_str(),
            detail: r.detail,
            topic: r.topic,
            vehicle_id: r.vehicle_id.map(|v| v.to_string()),
            point_index: r.point_index,
            payload: String::from_utf8_lossy(&r.payload).into_owned(),
            payload_bytes: r.payload.len(),
        }
    }
}
