//! What tripline says about a trip: the contract's TripSummary and events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{TripId, VehicleId};

/// Whether a trip may still grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TripStatus {
    /// Points may still arrive (no end marker, no trip gap yet).
    Active,
    /// Ended by a marker, an ignition cycle or a gap longer than the trip gap.
    Completed,
}

/// The kinds of driving event tripline detects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    /// Longitudinal deceleration beyond the threshold.
    HarshBraking,
    /// Longitudinal acceleration beyond the threshold.
    HarshAcceleration,
    /// Lateral acceleration beyond the threshold.
    HarshCornering,
    /// Above the speed limit by more than the tolerance, for at least the minimum duration.
    Speeding,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 4] =
        [EventKind::HarshBraking, EventKind::HarshAcceleration, EventKind::HarshCornering, EventKind::Speeding];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HarshBraking => "harsh_braking",
            EventKind::HarshAcceleration => "harsh_acceleration",
            EventKind::HarshCornering => "harsh_cornering",
            EventKind::Speeding => "speeding",
        }
    }

    /// The kind named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One detected event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// When it started.
    pub ts: DateTime<Utc>,
    /// Where it started, WGS84 degrees.
    pub lat: f64,
    /// Where it started, WGS84 degrees.
    pub lon: f64,
    /// The peak measured value, in `unit`.
    pub value: f64,
    /// Unit of `value`: `m/s2` for harsh events, `km/h` for speeding (the peak speed).
    pub unit: String,
    /// How long it lasted.
    pub duration_s: f64,
}

/// Event counts per kind, as in the contract's `events` object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventCounts {
    /// Harsh braking events.
    pub harsh_braking: u32,
    /// Harsh acceleration events.
    pub harsh_acceleration: u32,
    /// Harsh cornering events.
    pub harsh_cornering: u32,
    /// Speeding episodes.
    pub speeding: u32,
}

impl EventCounts {
    /// The count for `kind`.
    pub fn get(&self, kind: EventKind) -> u32 {
        match kind {
            EventKind::HarshBraking => self.harsh_braking,
            EventKind::HarshAcceleration => self.harsh_acceleration,
            EventKind::HarshCornering => self.harsh_cornering,
            EventKind::Speeding => self.speeding,
        }
    }

    /// Adds one event of `kind`.
    pub fn add(&mut self, kind: EventKind) {
        let slot = match kind {
            EventKind::HarshBraking => &mut self.harsh_braking,
            EventKind::HarshAcceleration => &mut self.harsh_acceleration,
            EventKind::HarshCornering => &mut self.harsh_cornering,
            EventKind::Speeding => &mut self.speeding,
        };
        *slot = slot.saturating_add(1);
    }

    /// All events together.
    pub fn total(&self) -> u32 {
        EventKind::ALL.into_iter().map(|kind| self.get(kind)).sum()
    }
}

/// A trip's first or last position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Place {
    /// WGS84 degrees.
    pub lat: f64,
    /// WGS84 degrees.
    pub lon: f64,
    /// The region containing the position, if any.
    pub region: Option<String>,
}

/// The contract's TripSummary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TripSummary {
    /// The trip.
    pub trip_id: TripId,
    /// Its vehicle.
    pub vehicle_id: VehicleId,
    /// Active or completed.
    pub status: TripStatus,
    /// First kept point's time.
    pub start_time: DateTime<Utc>,
    /// Last kept point's time.
    pub end_time: DateTime<Utc>,
    /// `end_time - start_time`.
    pub duration_s: f64,
    /// Time spent moving.
    pub moving_time_s: f64,
    /// Time with ignition on (or unknown) and not moving.
    pub idle_time_s: f64,
    /// Distance driven.
    pub distance_km: f64,
    /// Highest speed.
    pub max_speed_kmh: f64,
    /// Distance over moving time.
    pub avg_speed_kmh: f64,
    /// Where it started.
    pub start: Place,
    /// Where it ended.
    pub end: Place,
    /// Regions passed through, in order of first entry.
    pub regions: Vec<String>,
    /// Event counts per kind.
    pub events: EventCounts,
    /// Time spent speeding.
    pub speeding_s: f64,
    /// Time driven at night (local time of the region).
    pub night_driving_s: f64,
    /// Points kept.
    pub point_count: u64,
    /// Points dropped by the per-point rules.
    pub rejected_point_count: u64,
    /// Usage-based-insurance score, 0–100 (higher is safer).
    pub score: f64,
    /// Version of the scoring formula that produced `score`.
    pub score_version: u32,
    /// When tripline last changed this summary.
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/trips/{id}`: the summary plus its events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TripDetail {
    /// The summary's fields, inline.
    #[serde(flatten)]
    pub summary: TripSummary,
    /// Every event, in time order.
    pub event_list: Vec<Event>,
}
