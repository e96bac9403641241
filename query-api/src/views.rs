//! JSON shapes of what the store holds, in the contract's units (km/h, RFC 3339).

use serde::Serialize;
use tripline_model::TripSummary;
use tripline_store::{DeliveryAttempt, DeliveryOutcome, Rejection, StoredPoint};
use utoipa::ToSchema;

/// A page of trips.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchAnswer {
    /// Every trip the search matches (all pages).
    pub(crate) total: u64,
    /// This page.
    pub(crate) trips: Vec<TripSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// One group of `/v1/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BucketView {
    key: String,
    trips: u64,
    distance_km: f64,
    events: u64,
    avg_score: f64,
}

impl From<tripline_index::Bucket> for BucketView {
    fn from(b: tripline_index::Bucket) -> Self {
        BucketView { key: b.key, trips: b.trips, distance_km: b.distance_km, events: b.events, avg_score: b.avg_score }
    }
}

/// The answer of `/v1/stats`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatsAnswer {
    pub(crate) buckets: Vec<BucketView>,
}

/// A page of a trip's points.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PointsAnswer {
    pub(crate) points: Vec<PointView>,
    pub(crate) next_cursor: Option<String>,
}

/// A page of rejections.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RejectionsAnswer {
    pub(crate) rejections: Vec<RejectionView>,
    pub(crate) next_cursor: Option<String>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable snake_case code.
    code: String,
    /// For people.
    message: String,
}

/// One enriched point.
#[derive(Debug, Serialize, ToSchema)]
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

/// One rejected message or point. The payload is shown as text (invalid UTF-8 replaced): its
/// first 16 KiB, with the whole payload's size and SHA-256.
#[derive(Debug, Serialize, ToSchema)]
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
    /// The whole payload's size.
    payload_bytes: u64,
    /// Only the payload's first 16 KiB are kept.
    payload_truncated: bool,
    /// The whole payload's SHA-256, hex.
    #[serde(skip_serializing_if = "String::is_empty")]
    payload_sha256: String,
}

impl From<Rejection> for RejectionView {
    fn from(r: Rejection) -> Self {
        let full_size = r.full_size();
        RejectionView {
            id: r.id,
            received_at: tripline_model::time::format_rfc3339_ms(r.received_at_ms),
            reason: r.reason.as_str(),
            detail: r.detail,
            topic: r.topic,
            vehicle_id: r.vehicle_id.map(|v| v.to_string()),
            point_index: r.point_index,
            payload_bytes: full_size,
            payload_truncated: full_size > r.payload.len() as u64,
            payload: String::from_utf8_lossy(&r.payload).into_owned(),
            payload_sha256: r.payload_sha256,
        }
    }
}

/// A page of webhook delivery attempts.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveriesAnswer {
    pub(crate) deliveries: Vec<DeliveryView>,
    pub(crate) next_cursor: Option<String>,
}

/// One delivery attempt of a webhook message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryView {
    /// The attempt.
    id: String,
    webhook_id: String,
    /// The message's `webhook-id`, the same on every attempt.
    message_id: String,
    /// The message's type.
    #[serde(rename = "type")]
    kind: &'static str,
    vehicle_id: String,
    /// 1 for the first attempt.
    attempt: u32,
    /// When it was made.
    at: String,
    /// The receiver's HTTP status, if it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// Why it failed without an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    latency_ms: u64,
    /// `delivered`, `retrying` or `failed` (given up).
    outcome: &'static str,
    /// When the next attempt is due (`retrying`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
}

impl From<DeliveryAttempt> for DeliveryView {
    fn from(a: DeliveryAttempt) -> Self {
        DeliveryView {
            id: a.id,
            webhook_id: a.webhook_id,
            message_id: a.message_id,
            kind: a.kind.as_str(),
            vehicle_id: a.vehicle_id.as_str().to_owned(),
            attempt: a.attempt,
            at: tripline_model::time::format_rfc3339_ms(a.at_ms),
            status: a.status,
            error: a.error,
            latency_ms: a.latency_ms,
            outcome: match a.outcome {
                DeliveryOutcome::Delivered => "delivered",
                DeliveryOutcome::Retrying => "retrying",
                DeliveryOutcome::Failed => "failed",
            },
            next_attempt_at: a.next_at_ms.map(tripline_model::time::format_rfc3339_ms),
        }
    }
}
