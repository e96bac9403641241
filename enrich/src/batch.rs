//! Offline enrichment of whole trip files (`tripline summarize`): records → trips → reports.
//!
//! Records with a `trip_id` form that trip; GPX tracks without a usable name form one trip each;
//! the rest are cut per vehicle by gaps and ignition cycles. Only the rules that do not depend on
//! the current time apply.

use std::collections::BTreeMap;

use tripline_model::point::FieldRepairs;
use tripline_model::tripfile::{FileRecord, RecordError};
use tripline_model::{Point, PointRules, RejectReason, TripId, TripStatus, VehicleId};

use crate::cut::{auto_trip_id, cut_trips};
use crate::track::canonical_cmp;
use crate::{Enricher, TripEngine, TripReport};

/// How records are grouped into trips.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Grouping {
    Explicit(TripId),
    Track(usize),
    Cut,
}

/// What a batch produced.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// One report per trip, ordered by vehicle, then start time.
    pub reports: Vec<TripReport>,
    /// Records that were not points at all (schema), with why.
    pub errors: Vec<RecordError>,
    /// Points dropped, per reason: the per-point rules, then implausible jumps.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Points ignored as duplicates of another point of their trip.
    pub duplicates: u64,
}

#[derive(Default)]
struct Group {
    kept: Vec<Point>,
    rejected: Vec<Point>,
}

/// Enriches every trip found in `records`.
pub fn summarize_records(records: Vec<FileRecord>, engine: &Enricher) -> BatchOutput {
    let rules = PointRules::without_clock();
    let mut output = BatchOutput::default();
    let mut groups: BTreeMap<(VehicleId, Grouping), Group> = BTreeMap::new();
    for record in records {
        let mut repairs = FieldRepairs::default();
        let point = match Point::from_raw(&record.point, &mut repairs) {
            Ok(point) => point,
            Err(error) => {
                output.errors.push(RecordError { source: record.source, line: record.line, detail: error.to_string() });
                continue;
            }
        };
        let grouping = match (record.trip_id, record.track) {
            (Some(trip_id), _) => Grouping::Explicit(trip_id),
            (None, Some(track)) => Grouping::Track(track),
            (None, None) => Grouping::Cut,
        };
        let group = groups.entry((record.vehicle_id, grouping)).or_default();
        match rules.check(&point) {
            None => group.kept.push(point),
            Some((reason, _)) => {
                *output.rejected.entry(reason).or_default() += 1;
                group.rejected.push(point);
            }
        }
    }
    for ((vehicle_id, grouping), mut group) in groups {
        group.kept.sort_by(canonical_cmp);
        let trips: Vec<(TripId, Vec<Point>, Vec<Point>)> = match grouping {
            Grouping::Explicit(trip_id) => vec![(trip_id, group.kept, group.rejected)],
            Grouping::Track(_) => match group.kept.first() {
                Some(first) => vec![(auto_trip_id(&vehicle_id, first.ts_ms), group.kept, group.rejected)],
                None => Vec::new(),
            },
            Grouping::Cut => split_cut(&vehicle_id, group.kept, group.rejected, engine.config.trip_gap_s),
        };
        for (trip_id, kept, rejected) in trips {
            let mut trip = TripEngine::new(vehicle_id.clone(), trip_id);
            output.duplicates += trip.add_points(kept).duplicates as u64;
            trip.add_rejected(&rejected);
            if let Some(report) = trip.report(engine, TripStatus::Completed, None) {
                output.reports.push(report);
            }
            if trip.jump_count() > 0 {
                *output.rejected.entry(RejectReason::ImplausibleJump).or_default() += trip.jump_count() as u64;
            }
        }
    }
    output.reports.sort_by(|a, b| {
        (&a.summary.vehicle_id, a.summary.start_time, &a.summary.trip_id).cmp(&(
            &b.summary.vehicle_id,
            b.summary.start_time,
            &b.summary.trip_id,
        ))
    });
    output
}

/// Cuts one vehicle's points into trips; each rejected point goes to the trip nearest in time.
fn split_cut(
    vehicle_id: &VehicleId,
    kept: Vec<Point>,
    rejected: Vec<Point>,
    trip_gap_s: f64,
) -> Vec<(TripId, Vec<Point>, Vec<Point>)> {
    let ranges = cut_trips(&kept, trip_gap_s);
    let mut trips: Vec<(TripId, Vec<Point>, Vec<Point>)> = ranges
        .into_iter()
        .map(|range| {
            let points = kept[range].to_vec();
            (auto_trip_id(vehicle_id, points[0].ts_ms), points, Vec::new())
        })
        .collect();
    for point in rejected {
        let nearest = trips.iter_mut().min_by_key(|(_, points, _)| {
            let (start, end) = (points[0].ts_ms, points[points.len() - 1].ts_ms);
            if point.ts_ms < start { start - point.ts_ms } else { (point.ts_ms - end).max(0) }
        });
        if let Some((_, _, rejected)) = nearest {
            rejected.push(point);
        }
    }
    trips
}
