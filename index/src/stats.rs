//! Aggregations over the trips a search selects (`/v1/stats`): one collector over fast fields.
//!
//! Tantivy's own date histogram buckets by fixed intervals in UTC; a day in an IANA zone with
//! daylight saving is 23 or 25 hours long twice a year, so days are computed here, per trip, in
//! the requested zone (a trip counts on the local day it starts).

use std::collections::{BTreeMap, HashMap};

use chrono::TimeZone;
use serde::Serialize;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};
use tripline_model::EventKind;

/// Zone offsets and their changes fall on quarter hours (UTC+5:45, +9:30, …; transitions at
/// whole local minutes of such offsets), so every instant of a UTC quarter hour has one local day.
const QUARTER_HOUR_MS: i64 = 900_000;
/// Days from 0001-01-01 to 1970-01-01 (chrono's "days from the common era").
const UNIX_EPOCH_DAYS_FROM_CE: i64 = 719_163;

/// The local day number (days since 1970-01-01) of a UTC instant in `tz`.
fn local_day(tz: chrono_tz::Tz, utc_ms: i64) -> Option<i64> {
    match tz.timestamp_millis_opt(utc_ms) {
        chrono::LocalResult::Single(t) => {
            Some(i64::from(chrono::Datelike::num_days_from_ce(&t.date_naive())) - UNIX_EPOCH_DAYS_FROM_CE)
        }
        _ => None,
    }
}

/// What to group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// Each event kind: trips with at least one, and that kind's events.
    EventKind,
    /// Each region a trip passed.
    Region,
    /// Each vehicle.
    VehicleId,
    /// The local day a trip starts, in the zone.
    Day(chrono_tz::Tz),
}

impl GroupBy {
    /// `event_kind`, `region`, `vehicle_id` or `day` (with `tz`, default UTC).
    pub fn parse(name: &str, tz: Option<&str>) -> Option<GroupBy> {
        Some(match name {
            "event_kind" => GroupBy::EventKind,
            "region" => GroupBy::Region,
            "vehicle_id" => GroupBy::VehicleId,
            "day" => GroupBy::Day(match tz {
                Some(name) => name.parse().ok()?,
                None => chrono_tz::UTC,
            }),
            _ => return None,
        })
    }
}

/// One bucket, as the contract shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bucket {
    /// The group's key.
    pub key: String,
    /// Trips in the group.
    pub trips: u64,
    /// Their distance.
    pub distance_km: f64,
    /// Their events (for `event_kind`: of that kind).
    pub events: u64,
    /// Their mean score.
    pub avg_score: f64,
}

/// Totals of one group.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Acc {
    trips: u64,
    distance_m: i64,
    events: u64,
    score_milli: i64,
}

impl Acc {
    fn add(&mut self, other: Acc) {
        self.trips += other.trips;
        self.distance_m += other.distance_m;
        self.events += other.events;
        self.score_milli += other.score_milli;
    }
}

/// The collector.
pub(crate) struct Stats {
    pub(crate) group: GroupBy,
}

pub(crate) struct SegmentStats {
    group: GroupBy,
    distance: Option<Column<i64>>,
    score: Option<Column<i64>>,
    start: Option<Column<i64>>,
    counts: Vec<Option<Column<u64>>>,
    strings: Option<StrColumn>,
    by_key: HashMap<String, Acc>,
    by_ord: HashMap<u64, Acc>,
    /// Local day (days since 1970-01-01 in the zone) → totals.
    by_day: HashMap<i64, Acc>,
    /// UTC quarter hour → its local day: one zone conversion per quarter hour seen, not per trip.
    day_of_quarter: HashMap<i64, Option<i64>>,
}

impl Collector for Stats {
    type Fruit = BTreeMap<String, Acc>;
    type Child = SegmentStats;

    fn for_segment(&self, _segment: SegmentOrdinal, reader: &SegmentReader) -> tantivy::Result<SegmentStats> {
        let fast = reader.fast_fields();
        let strings = match self.group {
            GroupBy::Region => fast.str("region")?,
            GroupBy::VehicleId => fast.str("vehicle_id")?,
            GroupBy::EventKind | GroupBy::Day(_) => None,
        };
        Ok(SegmentStats {
            group: self.group,
            distance: fast.i64("distance_m").ok(),
            score: fast.i64("score_milli").ok(),
            start: fast.i64("start_ms").ok(),
            counts: EventKind::ALL.iter().map(|k| fast.u64(&format!("events_{}", k.as_str())).ok()).collect(),
            strings,
            by_key: HashMap::new(),
            by_ord: HashMap::new(),
            by_day: HashMap::new(),
            day_of_quarter: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        let mut merged: Self::Fruit = BTreeMap::new();
        for fruit in fruits {
            for (key, acc) in fruit {
                merged.entry(key).or_default().add(acc);
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for SegmentStats {
    type Fruit = BTreeMap<String, Acc>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let first = |c: &Option<Column<i64>>| c.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
        let mut counts = [0u64; 4];
        for (slot, column) in counts.iter_mut().zip(&self.counts) {
            *slot = column.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
        }
        let base = Acc {
            trips: 1,
            distance_m: first(&self.distance),
            events: counts.iter().sum(),
            score_milli: first(&self.score),
        };
        match self.group {
            GroupBy::EventKind => {
                for (kind, count) in EventKind::ALL.iter().zip(&counts) {
                    if *count > 0 {
                        self.by_key.entry(kind.as_str().to_owned()).or_default().add(Acc { events: *count, ..base });
                    }
                }
            }
            GroupBy::Day(tz) => {
                let quarter = first(&self.start).div_euclid(QUARTER_HOUR_MS);
                let day =
                    *self.day_of_quarter.entry(quarter).or_insert_with(|| local_day(tz, quarter * QUARTER_HOUR_MS));
                if let Some(day) = day {
                    self.by_day.entry(day).or_default().add(base);
                }
            }
            GroupBy::Region | GroupBy::VehicleId => {
                if let Some(strings) = &self.strings {
                    for ord in strings.term_ords(doc) {
                        self.by_ord.entry(ord).or_default().add(base);
                    }
                }
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        let mut out: Self::Fruit = BTreeMap::new();
        let mut put = |key: String, acc: Acc| out.entry(key).or_default().add(acc);
        for (key, acc) in self.by_key {
            put(key, acc);
        }
        for (day, acc) in self.by_day {
            if let Some(date) = chrono::NaiveDate::from_num_days_from_ce_opt((day + UNIX_EPOCH_DAYS_FROM_CE) as i32) {
                put(date.format("%Y-%m-%d").to_string(), acc);
            }
        }
        if let Some(strings) = &self.strings {
            // One pass through the dictionary for all ordinals (a lookup per ordinal would
            // decode a dictionary block each time).
            let mut ords: Vec<(u64, Acc)> = self.by_ord.into_iter().collect();
            ords.sort_unstable_by_key(|(ord, _)| *ord);
            let sorted: Vec<u64> = ords.iter().map(|(ord, _)| *ord).collect();
            let mut accs = ords.into_iter().map(|(_, acc)| acc);
            let _ = strings.dictionary().sorted_ords_to_term_cb(&sorted, |bytes| {
                if let Some(acc) = accs.next() {
                    put(String::from_utf8_lossy(bytes).into_owned(), acc);
                }
            });
        }
        out
    }
}

/// The buckets of a collected fruit, sorted by key.
pub(crate) fn buckets(fruit: BTreeMap<String, Acc>) -> Vec<Bucket> {
    fruit
        .into_iter()
        .map(|(key, Acc { trips, distance_m, events, score_milli })| Bucket {
            key,
            trips,
            distance_km: distance_m as f64 / 1000.0,
            events,
            avg_score: if trips == 0 {
                0.0
            } else {
                (score_milli as f64 / 1000.0 / trips as f64 * 100.0).round() / 100.0
            },
        })
        .collect()
}
