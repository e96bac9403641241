//! What tripline pushes to insurers, on the live stream and to webhooks: a trip started, changed,
//! completed, or one of its driving events was detected.
//!
//! The worker decides what to tell when it writes a trip ([`TripNotices`], kept in that write's
//! change-feed entry), so that reading the feed again from any position tells the same things in
//! the same order. [`PushMessage`] is what a client receives.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::hash::Fnv1a64;
use crate::ids::{TenantId, TripId, VehicleId};
use crate::summary::{Event, TripSummary};

/// The kinds of message, as the contract names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NoticeKind {
    /// A trip's first write.
    #[serde(rename = "trip.started")]
    TripStarted,
    /// A trip changed (at most once per configured interval per trip).
    #[serde(rename = "trip.updated")]
    TripUpdated,
    /// A trip ended (marker, ignition cycle, gap or idleness).
    #[serde(rename = "trip.completed")]
    TripCompleted,
    /// A harsh braking, acceleration or cornering, or a speeding episode.
    #[serde(rename = "event.detected")]
    EventDetected,
}

impl NoticeKind {
    /// Every kind, in declaration order.
    pub const ALL: [NoticeKind; 4] =
        [NoticeKind::TripStarted, NoticeKind::TripUpdated, NoticeKind::TripCompleted, NoticeKind::EventDetected];

    /// The contract's name (`trip.started`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::TripStarted => "trip.started",
            NoticeKind::TripUpdated => "trip.updated",
            NoticeKind::TripCompleted => "trip.completed",
            NoticeKind::EventDetected => "event.detected",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<NoticeKind> {
        NoticeKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for NoticeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing to tell about a trip.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The trip's first write.
    Started,
    /// The trip changed.
    Updated,
    /// The trip ended.
    Completed,
    /// A driving event was detected.
    Event(Event),
}

impl Notice {
    /// Its kind.
    pub fn kind(&self) -> NoticeKind {
        match self {
            Notice::Started => NoticeKind::TripStarted,
            Notice::Updated => NoticeKind::TripUpdated,
            Notice::Completed => NoticeKind::TripCompleted,
            Notice::Event(_) => NoticeKind::EventDetected,
        }
    }
}

/// What one trip write tells: its notices and the trip as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TripNotices {
    /// In the order they are told.
    pub notices: Vec<Notice>,
    /// The summary as written.
    pub trip: TripSummary,
}

impl TripNotices {
    /// The messages, in order, as of `at_ms` (when the write was made), for `tenant`.
    pub fn messages(&self, tenant: &TenantId, at_ms: i64) -> Vec<PushMessage> {
        self.notices.iter().map(|notice| PushMessage::new(tenant, &self.trip, notice, at_ms)).collect()
    }
}

/// A message as clients receive it (the body of an SSE event and of a webhook request),
/// following the Standard Webhooks payload shape: `type`, `timestamp`, `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushMessage {
    /// Stable id: the same notice of the same write gets the same id (a retried write, a
    /// redelivery), a different one never does. Receivers de-duplicate by it.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: NoticeKind,
    /// When tripline wrote the change.
    pub timestamp: DateTime<Utc>,
    /// For `trip.*`: the trip summary; for `event.detected`: the event with its trip and vehicle.
    pub data: PushData,
}

/// A message's `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PushData {
    /// The trip summary (`trip.started`, `trip.updated`, `trip.completed`).
    Trip(Box<TripSummary>),
    /// A detected event.
    Event(EventData),
}

/// `event.detected`'s data: the event, its trip and vehicle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The vehicle.
    pub vehicle_id: VehicleId,
    /// The trip.
    pub trip_id: TripId,
    /// The event's fields, as in a trip's `event_list`.
    #[serde(flatten)]
    pub event: Event,
}

impl PushMessage {
    /// The message telling `notice` about `trip` of `tenant`, written at `at_ms`.
    pub fn new(tenant: &TenantId, trip: &TripSummary, notice: &Notice, at_ms: i64) -> PushMessage {
        let kind = notice.kind();
        // What tells this notice apart from every other one of the trip: an event by its kind and
        // time, an update or completion by the summary's write time; a trip starts once.
        let discriminator = match notice {
            Notice::Started => String::new(),
            Notice::Updated | Notice::Completed => trip.updated_at.timestamp_millis().to_string(),
            Notice::Event(event) => format!("{}@{}", event.kind.as_str(), event.ts.timestamp_millis()),
        };
        let hash = |seed: u64| {
            Fnv1a64::with_seed(seed)
                .write(tenant.as_str().as_bytes())
                .write(&[0])
                .write(trip.vehicle_id.as_str().as_bytes())
                .write(&[0])
                .write(trip.trip_id.as_str().as_bytes())
                .write(&[0])
                .write(kind.as_str().as_bytes())
                .write(&[0])
                .write(discriminator.as_bytes())
                .finish()
        };
        let id = format!("msg_{:016x}{:016x}", hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
        let data = match notice {
            Notice::Event(event) => PushData::Event(EventData {
                vehicle_id: trip.vehicle_id.clone(),
                trip_id: trip.trip_id.clone(),
                event: event.clone(),
            }),
            _ => PushData::Trip(Box::new(trip.clone())),
        };
        PushMessage { id, kind, timestamp: crate::time::to_datetime(at_ms), data }
    }

    /// The vehicle it is about.
    pub fn vehicle_id(&self) -> &VehicleId {
        match &self.data {
            PushData::Trip(trip) => &trip.vehicle_id,
            PushData::Event(event) => &event.vehicle_id,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::summary::{EventCounts, EventKind, Place, TripStatus};

    fn summary(updated_at_ms: i64) -> TripSummary {
        let place = Place { lat: 52.5, lon: 13.4, region: None };
        TripSummary {
            trip_id: TripId::parse("t1").unwrap(),
            vehicle_id: VehicleId::parse("car-1").unwrap(),
            status: TripStatus::Active,
            start_time: crate::time::to_datetime(1_000),
            end_time: crate::time::to_datetime(61_000),
            duration_s: 60.0,
            moving_time_s: 60.0,
            idle_time_s: 0.0,
            distance_km: 1.0,
            max_speed_kmh: 60.0,
            avg_speed_kmh: 60.0,
            start: place.clone(),
            end: place,
            regions: Vec::new(),
            events: EventCounts::default(),
            speeding_s: 0.0,
            night_driving_s: 0.0,
            point_count: 61,
            rejected_point_count: 0,
            score: 100.0,
            score_version: 1,
            updated_at: crate::time::to_datetime(updated_at_ms),
        }
    }

    fn braking(ts_ms: i64) -> Event {
        Event {
            kind: EventKind::HarshBraking,
            ts: crate::time::to_datetime(ts_ms),
            lat: 52.5,
            lon: 13.4,
            value: 4.1,
            unit: "m/s2".to_owned(),
            duration_s: 1.0,
        }
    }

    #[test]
    fn a_notice_keeps_its_id_and_a_different_notice_never_shares_it() {
        let acme = TenantId::parse("acme").unwrap();
        let ids = |notices: &TripNotices| -> Vec<String> {
            notices.messages(&acme, 5_000).into_iter().map(|m| m.id).collect()
        };
        let first = TripNotices {
            notices: vec![Notice::Started, Notice::Event(braking(20_000)), Notice::Updated],
            trip: summary(70_000),
        };
        // The same write again (a retry) tells the same ids; a later write tells new ones.
        assert_eq!(ids(&first), ids(&first.clone()));
        let later = TripNotices {
            notices: vec![Notice::Event(braking(30_000)), Notice::Updated, Notice::Completed],
            trip: summary(80_000),
        };
        let mut all: Vec<String> = ids(&first).into_iter().chain(ids(&later)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
        // Another tenant's notice of the same trip id is another message.
        let other = TenantId::parse("other").unwrap();
        assert_ne!(first.messages(&other, 5_000)[0].id, ids(&first)[0]);
    }

    #[test]
    fn a_message_has_the_standard_webhooks_shape() {
        let acme = TenantId::parse("acme").unwrap();
        let notices =
            TripNotices { notices: vec![Notice::Event(braking(20_000)), Notice::Completed], trip: summary(1) };
        let messages = notices.messages(&acme, 1_800_000_000_000);
        let event = serde_json::to_value(&messages[0]).unwrap();
        assert_eq!(event["type"], "event.detected");
        assert_eq!(event["timestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(event["data"]["trip_id"], "t1");
        assert_eq!(event["data"]["kind"], "harsh_braking");
        assert_eq!(event["data"]["unit"], "m/s2");
        let completed = serde_json::to_value(&messages[1]).unwrap();
        assert_eq!(completed["type"], "trip.completed");
        assert_eq!(completed["data"]["vehicle_id"], "car-1");
        assert_eq!(completed["data"]["point_count"], 61);
        let back: PushMessage = serde_json::from_value(completed).unwrap();
        assert_eq!(back, messages[1]);
        assert_eq!(back.vehicle_id().as_str(), "car-1");
        assert_eq!(NoticeKind::parse("trip.updated"), Some(NoticeKind::TripUpdated));
        assert_eq!(NoticeKind::parse("trip"), None);
    }
}
