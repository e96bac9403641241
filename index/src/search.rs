//! Searching one tenant's trips: the contract's parameters as a structured query, sort orders,
//! and cursors.
//!
//! Every sort order is a total order: (the sort value, then a hash of the trip's key). A cursor
//! is the position of the last trip returned; the next page is every matching trip strictly after
//! it. So paging returns each trip exactly once as long as trips do not move in the sort order
//! between pages (a trip whose sort value changes in between may be seen twice or not at all).

use std::ops::Bound;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::{Index, Searcher, SegmentReader, TantivyDocument, Term};
use tripline_model::{EventKind, TenantId, TripStatus, TripSummary, VehicleId};

use crate::doc_mapping::{Fields, distance_m, score_milli};
use crate::{IndexError, IndexResult};

/// Most cells a `bbox` filter looks up; a larger box is matched at a coarser precision.
const MAX_BBOX_CELLS: usize = 256;

/// The order of search results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Newest first (the default).
    #[default]
    StartTimeDesc,
    /// Oldest first.
    StartTimeAsc,
    /// Lowest score first.
    ScoreAsc,
    /// Highest score first.
    ScoreDesc,
    /// Shortest first.
    DistanceAsc,
    /// Longest first.
    DistanceDesc,
}

impl SortOrder {
    /// The order named as in the contract (`start_time`, `-start_time`, `score`, …).
    pub fn parse(name: &str) -> Option<SortOrder> {
        Some(match name {
            "start_time" => SortOrder::StartTimeAsc,
            "-start_time" => SortOrder::StartTimeDesc,
            "score" => SortOrder::ScoreAsc,
            "-score" => SortOrder::ScoreDesc,
            "distance_km" => SortOrder::DistanceAsc,
            "-distance_km" => SortOrder::DistanceDesc,
            _ => return None,
        })
    }

    fn code(self) -> char {
        match self {
            SortOrder::StartTimeDesc => 'a',
            SortOrder::StartTimeAsc => 'b',
            SortOrder::ScoreAsc => 'c',
            SortOrder::ScoreDesc => 'd',
            SortOrder::DistanceAsc => 'e',
            SortOrder::DistanceDesc => 'f',
        }
    }

    /// Every order (for tests over all of them).
    #[cfg(test)]
    pub(crate) const ALL: [SortOrder; 6] = [
        SortOrder::StartTimeDesc,
        SortOrder::StartTimeAsc,
        SortOrder::ScoreAsc,
        SortOrder::ScoreDesc,
        SortOrder::DistanceAsc,
        SortOrder::DistanceDesc,
    ];

    fn field(self) -> &'static str {
        match self {
            SortOrder::StartTimeDesc | SortOrder::StartTimeAsc => "start_ms",
            SortOrder::ScoreAsc | SortOrder::ScoreDesc => "score_milli",
            SortOrder::DistanceAsc | SortOrder::DistanceDesc => "distance_m",
        }
    }

    fn descending(self) -> bool {
        matches!(self, SortOrder::StartTimeDesc | SortOrder::ScoreDesc | SortOrder::DistanceDesc)
    }
}

/// Where a page ended: opaque to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    sort: SortOrder,
    /// The position: larger comes first.
    position: (i64, u64),
}

impl Cursor {
    /// The cursor as clients see it.
    pub fn encode(&self) -> String {
        format!("{}{:016x}{:016x}", self.sort.code(), self.position.0 as u64, self.position.1)
    }

    /// Reads a cursor issued for `sort`.
    pub fn decode(text: &str, sort: SortOrder) -> IndexResult<Cursor> {
        let mut chars = text.chars();
        if chars.next() != Some(sort.code()) || text.len() != 33 {
            return Err(IndexError::BadCursor);
        }
        let primary = text.get(1..17).and_then(|h| u64::from_str_radix(h, 16).ok()).ok_or(IndexError::BadCursor)?;
        let tie = text.get(17..33).and_then(|h| u64::from_str_radix(h, 16).ok()).ok_or(IndexError::BadCursor)?;
        Ok(Cursor { sort, position: (primary as i64, tie) })
    }
}

/// A search, as the contract's parameters say (already validated).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TripQuery {
    /// Free text: every word must occur (vehicle id, region names, event kinds).
    pub q: Option<String>,
    /// Only this vehicle's trips.
    pub vehicle_id: Option<VehicleId>,
    /// Trips overlapping `[from_ms, to_ms)`.
    pub from_ms: Option<i64>,
    /// See `from_ms`.
    pub to_ms: Option<i64>,
    /// Only trips with this status.
    pub status: Option<TripStatus>,
    /// Score bounds, inclusive.
    pub min_score: Option<f64>,
    /// See `min_score`.
    pub max_score: Option<f64>,
    /// Distance bounds, km, inclusive.
    pub min_distance_km: Option<f64>,
    /// See `min_distance_km`.
    pub max_distance_km: Option<f64>,
    /// Trips with at least one event of each kind.
    pub events: Vec<EventKind>,
    /// Trips through each region.
    pub regions: Vec<String>,
    /// Trips through the box (min_lon, min_lat, max_lon, max_lat), at geohash-cell precision.
    pub bbox: Option<(f64, f64, f64, f64)>,
    /// Order.
    pub sort: SortOrder,
    /// Page size.
    pub limit: usize,
    /// Continue after this position.
    pub cursor: Option<Cursor>,
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchPage {
    /// Every trip the search matches (all pages).
    pub total: u64,
    /// This page.
    pub trips: Vec<TripSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

fn term(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, text), IndexRecordOption::Basic))
}

fn i64_range(field: Field, lower: Bound<i64>, upper: Bound<i64>) -> Box<dyn Query> {
    let map = |b: Bound<i64>| match b {
        Bound::Included(v) => Bound::Included(Term::from_field_i64(field, v)),
        Bound::Excluded(v) => Bound::Excluded(Term::from_field_i64(field, v)),
        Bound::Unbounded => Bound::Unbounded,
    };
    Box::new(RangeQuery::new(map(lower), map(upper)))
}

/// The structured query of a search, tenant filter first. User text only ever becomes terms of
/// the `text` field.
pub(crate) fn build(index: &Index, fields: &Fields, tenant: &TenantId, query: &TripQuery) -> Box<dyn Query> {
    let mut must: Vec<Box<dyn Query>> = vec![term(fields.tenant, tenant.as_str())];
    if let Some(vehicle) = &query.vehicle_id {
        must.push(term(fields.vehicle_id, vehicle.as_str()));
    }
    if let Some(from) = query.from_ms {
        must.push(i64_range(fields.end_ms, Bound::Included(from), Bound::Unbounded));
    }
    if let Some(to) = query.to_ms {
        must.push(i64_range(fields.start_ms, Bound::Unbounded, Bound::Excluded(to)));
    }
    if let Some(status) = query.status {
        must.push(term(
            fields.status,
            match status {
                TripStatus::Active => "active",
                TripStatus::Completed => "completed",
            },
        ));
    }
    let bound = |v: Option<f64>, f: fn(f64) -> i64| v.map_or(Bound::Unbounded, |v| Bound::Included(f(v)));
    if query.min_score.is_some() || query.max_score.is_some() {
        must.push(i64_range(
            fields.score_milli,
            bound(query.min_score, score_milli),
            bound(query.max_score, score_milli),
        ));
    }
    if query.min_distance_km.is_some() || query.max_distance_km.is_some() {
        must.push(i64_range(
            fields.distance_m,
            bound(query.min_distance_km, distance_m),
            bound(query.max_distance_km, distance_m),
        ));
    }
    for kind in &query.events {
        must.push(term(fields.event_kind, kind.as_str()));
    }
    for region in &query.regions {
        must.push(term(fields.region, region));
    }
    if let Some(bbox) = query.bbox {
        let cells = (2..=tripline_model::cell::TRIP_CELL_PRECISION)
            .rev()
            .find_map(|precision| tripline_model::cell::covering(bbox, precision, MAX_BBOX_CELLS))
            .unwrap_or_default();
        let any: Vec<(Occur, Box<dyn Query>)> = cells.iter().map(|c| (Occur::Should, term(fields.cell, c))).collect();
        // A box too large even for 2-character cells matches everything it covers anyway.
        if !any.is_empty() {
            must.push(Box::new(BooleanQuery::new(any)));
        }
    }
    if let Some(text) = &query.q
        && let Ok(mut analyzer) = index.tokenizer_for_field(fields.text)
    {
        let mut stream = analyzer.token_stream(text);
        while let Some(token) = stream.next() {
            must.push(term(fields.text, &token.text));
        }
    }
    Box::new(BooleanQuery::new(must.into_iter().map(|q| (Occur::Must, q)).collect()))
}

/// Runs a search on `searcher`.
pub(crate) fn run(
    searcher: &Searcher,
    index: &Index,
    fields: &Fields,
    tenant: &TenantId,
    query: &TripQuery,
) -> IndexResult<SearchPage> {
    let built = build(index, fields, tenant, query);
    let sort = query.sort;
    let after = query.cursor.filter(|c| c.sort == sort).map(|c| c.position);
    let field = sort.field();
    let descending = sort.descending();
    let position = move |segment: &SegmentReader| {
        let values = segment.fast_fields().i64(field).ok();
        let ties = segment.fast_fields().u64("tiebreak").ok();
        move |doc: tantivy::DocId| -> Option<(i64, u64)> {
            let value = values.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
            let tie = ties.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
            let key = (if descending { value } else { value.saturating_neg() }, tie);
            match after {
                Some(cursor) if key >= cursor => None,
                _ => Some(key),
            }
        }
    };
    let limit = query.limit.max(1);
    let (total, top) = searcher.search(&built, &(Count, TopDocs::with_limit(limit).order_by(position)))?;
    let mut trips = Vec::with_capacity(top.len());
    let mut last = None;
    for (key, address) in top {
        let Some(key) = key else { continue };
        let doc: TantivyDocument = searcher.doc(address)?;
        let json = doc.get_first(fields.summary).and_then(|v| v.as_str()).unwrap_or_default();
        let summary: TripSummary =
            serde_json::from_str(json).map_err(|e| IndexError::Corrupt { detail: e.to_string() })?;
        trips.push(summary);
        last = Some(key);
    }
    let next = if trips.len() == limit { last.map(|position| Cursor { sort, position }) } else { None };
    Ok(SearchPage { total: total as u64, trips, next })
}

#[cfg(test)]
mod cursor_tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_cursor_reads_back_for_its_sort_and_only_for_it(
            primary in any::<i64>(), tie in any::<u64>(), sort in 0..6usize, other in 0..6usize,
        ) {
            let cursor = Cursor { sort: SortOrder::ALL[sort], position: (primary, tie) };
            let text = cursor.encode();
            prop_assert_eq!(Cursor::decode(&text, SortOrder::ALL[sort]).unwrap(), cursor);
            prop_assert_eq!(Cursor::decode(&text, SortOrder::ALL[other]).is_ok(), sort == other);
        }

        #[test]
        fn any_text_is_a_cursor_or_refused_without_panicking(text in "\\PC{0,40}", sort in 0..6usize) {
            let _ = Cursor::decode(&text, SortOrder::ALL[sort]);
        }
    }
}
