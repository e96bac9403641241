//! What a live trip has told insurers (the live stream and webhooks), and what its next write
//! tells: a pure function of the trip as written before and as it is now.

use std::collections::HashSet;

use tripline_model::{Event, EventKind, Notice, TripStatus, TripSummary};

/// What has been told about one trip.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Told {
    started: bool,
    completed: bool,
    /// Events told, by kind and start time.
    events: HashSet<(EventKind, i64)>,
    /// When `trip.updated` (or the start) was last told, Unix milliseconds.
    updated_at_ms: i64,
    /// A write of the active trip was not told (it came within the interval of the last
    /// update): an update is owed once the interval has passed, so the last state is told even
    /// when nothing more arrives.
    update_owed: bool,
}

impl Told {
    /// A trip written before (reopened from the store): its start, completion and events were
    /// told then.
    pub(crate) fn written(status: TripStatus, events: &[Event], now_ms: i64) -> Told {
        Told {
            started: true,
            completed: status == TripStatus::Completed,
            events: events.iter().map(event_key).collect(),
            updated_at_ms: now_ms,
            update_owed: false,
        }
    }

    /// Whether an update is owed at `now_ms`: a write was not told and the interval passed.
    pub(crate) fn owes_update(&self, now_ms: i64, update_every_ms: i64) -> bool {
        self.update_owed && now_ms - self.updated_at_ms >= update_every_ms
    }

    /// What writing `summary` with `events` at `now_ms` tells, in order: the start (first
    /// write), each event not told before (in time order), then the completion, or else an update
    /// when `update_every_ms` has passed since the last one (if not, one is owed).
    pub(crate) fn next(
        &mut self,
        summary: &TripSummary,
        events: &[Event],
        now_ms: i64,
        update_every_ms: i64,
    ) -> Vec<Notice> {
        let mut notices = Vec::new();
        if !self.started {
            self.started = true;
            self.updated_at_ms = now_ms;
            notices.push(Notice::Started);
        }
        for event in events {
            if self.events.insert(event_key(event)) {
                notices.push(Notice::Event(event.clone()));
            }
        }
        match summary.status {
            TripStatus::Completed if !self.completed => {
                self.completed = true;
                self.update_owed = false;
                notices.push(Notice::Completed);
            }
            TripStatus::Completed => {}
            TripStatus::Active => {
                // A completed trip that grows again (a late point) is active again.
                self.completed = false;
                if notices.first() == Some(&Notice::Started) {
                    self.update_owed = false;
                } else if now_ms - self.updated_at_ms >= update_every_ms {
                    self.updated_at_ms = now_ms;
                    self.update_owed = false;
                    notices.push(Notice::Updated);
                } else {
                    self.update_owed = true;
                }
            }
        }
        notices
    }
}

fn event_key(event: &Event) -> (EventKind, i64) {
    (event.kind, event.ts.timestamp_millis())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tripline_model::{EventCounts, Place, TripId, VehicleId};

    use super::*;

    fn summary(status: TripStatus) -> TripSummary {
        let place = Place { lat: 52.5, lon: 13.4, region: None };
        TripSummary {
            trip_id: TripId::parse("t1").unwrap(),
            vehicle_id: VehicleId::parse("car-1").unwrap(),
            status,
            start_time: tripline_model::time::to_datetime(0),
            end_time: tripline_model::time::to_datetime(60_000),
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
            updated_at: tripline_model::time::to_datetime(0),
        }
    }

    fn event(kind: EventKind, ts_ms: i64) -> Event {
        Event {
            kind,
            ts: tripline_model::time::to_datetime(ts_ms),
            lat: 52.5,
            lon: 13.4,
            value: 4.0,
            unit: "m/s2".to_owned(),
            duration_s: 1.0,
        }
    }

    fn kinds(notices: &[Notice]) -> Vec<&'static str> {
        notices.iter().map(|n| n.kind().as_str()).collect()
    }

    #[test]
    fn a_trip_tells_its_start_each_event_once_and_its_completion() {
        let mut told = Told::default();
        let active = summary(TripStatus::Active);
        let braking = event(EventKind::HarshBraking, 10_000);
        assert_eq!(
            kinds(&told.next(&active, std::slice::from_ref(&braking), 0, 30_000)),
            ["trip.started", "event.detected"]
        );
        // Within the update interval, a write with nothing new tells nothing.
        assert!(told.next(&active, std::slice::from_ref(&braking), 10_000, 30_000).is_empty());
        let speeding = event(EventKind::Speeding, 20_000);
        let both = [braking.clone(), speeding.clone()];
        assert_eq!(told.next(&active, &both, 20_000, 30_000), [Notice::Event(speeding)]);
        // Once the interval passed, an update.
        assert_eq!(kinds(&told.next(&active, &both, 30_000, 30_000)), ["trip.updated"]);
        assert!(told.next(&active, &both, 59_999, 30_000).is_empty());
        let completed = summary(TripStatus::Completed);
        assert_eq!(kinds(&told.next(&completed, &both, 60_000, 30_000)), ["trip.completed"]);
        assert!(told.next(&completed, &both, 999_000, 30_000).is_empty(), "completed once");
    }

    #[test]
    fn a_write_within_the_interval_is_owed_an_update_once_the_interval_passes() {
        let mut told = Told::default();
        let active = summary(TripStatus::Active);
        assert_eq!(kinds(&told.next(&active, &[], 0, 30_000)), ["trip.started"]);
        assert!(!told.owes_update(60_000, 30_000), "the start told everything written");
        assert!(told.next(&active, &[], 10_000, 30_000).is_empty());
        assert!(!told.owes_update(29_999, 30_000), "not before the interval");
        assert!(told.owes_update(30_000, 30_000));
        // Telling it (the worker writes the trip again) settles it.
        assert_eq!(kinds(&told.next(&active, &[], 30_000, 30_000)), ["trip.updated"]);
        assert!(!told.owes_update(90_000, 30_000));
        // A completion owes nothing more.
        assert!(told.next(&active, &[], 40_000, 30_000).is_empty());
        assert_eq!(kinds(&told.next(&summary(TripStatus::Completed), &[], 41_000, 30_000)), ["trip.completed"]);
        assert!(!told.owes_update(99_000, 30_000));
    }

    #[test]
    fn a_reopened_trip_does_not_tell_again_what_its_stored_write_told() {
        let braking = event(EventKind::HarshBraking, 10_000);
        let mut told = Told::written(TripStatus::Active, std::slice::from_ref(&braking), 0);
        let active = summary(TripStatus::Active);
        assert!(told.next(&active, std::slice::from_ref(&braking), 1_000, 30_000).is_empty());
        // A completed trip that grows again completes again.
        let mut done = Told::written(TripStatus::Completed, &[], 0);
        assert!(done.next(&summary(TripStatus::Completed), &[], 1_000, 30_000).is_empty());
        assert_eq!(kinds(&done.next(&active, &[], 40_000, 30_000)), ["trip.updated"]);
        assert_eq!(kinds(&done.next(&summary(TripStatus::Completed), &[], 41_000, 30_000)), ["trip.completed"]);
    }
}
