//! The query parameters: described once, as the structs below (which `/openapi.json` shows
//! through the handlers' annotations in `routes.rs`, and whose names are the parameters each
//! route accepts), and read by pure functions into validated queries — every bad value a 400
//! that names its parameter, unknown parameters refused, every value at most
//! [`MAX_VALUE_BYTES`], single-valued ones given once.

use std::sync::LazyLock;

use tripline_index::{Cursor, SortOrder, TripQuery};
use tripline_model::{EventKind, NoticeKind, TripStatus, VehicleId};
use utoipa::IntoParams;

use crate::error::ApiError;

/// Largest page.
pub const MAX_LIMIT: usize = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 50;
/// Longest accepted parameter value, bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

// The structs' fields are read by the OpenAPI derive and their names by `names`, not by code.
#[allow(dead_code)]
mod described {
    use super::IntoParams;

    /// The vehicle filter of `/v1/trips` and `/v1/stats` (`/v1/vehicles/{id}/trips` names it in its
    /// path instead).
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct VehicleFilter {
        /// Only this vehicle's trips.
        #[param(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
        vehicle_id: Option<String>,
    }

    /// Search parameters (`/v1/trips`, `/v1/vehicles/{id}/trips`, `/v1/stats`), after
    /// [`VehicleFilter`] and before [`PageParams`].
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct SearchParams {
        /// Free text: every word must occur among the vehicle id, region names and event kinds.
        #[param(max_length = 1024)]
        q: Option<String>,
        /// RFC 3339 with an offset: trips overlapping [from, to); before `to`.
        #[param(format = DateTime)]
        from: Option<String>,
        /// RFC 3339 with an offset: trips overlapping [from, to); after `from`.
        #[param(format = DateTime)]
        to: Option<String>,
        /// Only trips in this state.
        #[param(inline)]
        status: Option<tripline_model::TripStatus>,
        /// Lowest score, inclusive.
        min_score: Option<f64>,
        /// Highest score, inclusive.
        max_score: Option<f64>,
        /// Shortest distance, km, inclusive.
        min_distance_km: Option<f64>,
        /// Longest distance, km, inclusive.
        max_distance_km: Option<f64>,
        /// Repeatable: the trip has at least one event of each kind given.
        #[param(inline)]
        event: Option<Vec<tripline_model::EventKind>>,
        /// Repeatable: the trip passed through each region given.
        #[param(max_length = 1024)]
        region: Option<Vec<String>>,
        /// `min_lon,min_lat,max_lon,max_lat` (longitudes in [-180, 180], latitudes in [-90, 90],
        /// each minimum at most its maximum): the trip passed through the box (to geohash-cell
        /// precision).
        #[param(pattern = r"^-?[0-9]+(\.[0-9]+)?(,-?[0-9]+(\.[0-9]+)?){3}$")]
        bbox: Option<String>,
        /// Order of the trips (default `-start_time`, newest first).
        #[param(pattern = r"^-?(start_time|score|distance_km)$")]
        sort: Option<String>,
    }

    /// Grouping of `/v1/stats`.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct StatsParams {
        /// What a bucket is.
        #[param(pattern = "^(event_kind|region|vehicle_id|day)$")]
        group_by: String,
        /// IANA zone of `day` buckets (default UTC), e.g. `Europe/Berlin`; a trip counts on the local
        /// day it starts.
        #[param(max_length = 64)]
        tz: Option<String>,
    }

    /// Paging of searches and listings.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct PageParams {
        /// Page size, default 50.
        #[param(minimum = 1, maximum = 1000)]
        limit: Option<u32>,
        /// `next_cursor` of the previous page (opaque; a search's only for the same search).
        #[param(max_length = 1024)]
        cursor: Option<String>,
    }

    /// Filters of `/v1/stream` (none: every message of the tenant).
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub(crate) struct StreamParams {
        /// Repeatable: only these vehicles' messages.
        #[param(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
        vehicle_id: Option<Vec<String>>,
        /// Repeatable: only messages of these types.
        #[param(pattern = r"^(trip\.started|trip\.updated|trip\.completed|event\.detected)$")]
        r#type: Option<Vec<String>>,
        /// Repeatable: `event.detected` only for these event kinds (other types unaffected).
        #[param(inline)]
        event: Option<Vec<tripline_model::EventKind>>,
    }
}

pub(crate) use described::{PageParams, SearchParams, StatsParams, StreamParams, VehicleFilter};

/// The parameter names a struct above describes.
fn names<P: IntoParams>() -> Vec<String> {
    P::into_params(|| None).into_iter().map(|p| p.name).collect()
}

/// What a search accepts: the vehicle filter, the search's own parameters and paging.
pub(crate) static SEARCH: LazyLock<Vec<String>> =
    LazyLock::new(|| [names::<VehicleFilter>(), names::<SearchParams>(), names::<PageParams>()].concat());
/// What stats accept: a search's and the grouping.
static STATS: LazyLock<Vec<String>> = LazyLock::new(|| [SEARCH.clone(), names::<StatsParams>()].concat());
static PAGE: LazyLock<Vec<String>> = LazyLock::new(names::<PageParams>);
static STREAM: LazyLock<Vec<String>> = LazyLock::new(names::<StreamParams>);

fn check_keys(pairs: &[(String, String)], allowed: &[String]) -> Result<(), ApiError> {
    for (key, value) in pairs {
        if !allowed.contains(key) {
            return Err(ApiError::bad_parameter(key, "unknown parameter"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::bad_parameter(key, format!("longer than {MAX_VALUE_BYTES} bytes")));
        }
    }
    Ok(())
}

/// The single value of `key`; a repeated single-valued parameter is an error.
fn single<'a>(pairs: &'a [(String, String)], key: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = pairs.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::bad_parameter(key, "given more than once"));
    }
    Ok(first)
}

fn number(pairs: &[(String, String)], key: &str) -> Result<Option<f64>, ApiError> {
    single(pairs, key)?
        .map(|v| match v.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            _ => Err(ApiError::bad_parameter(key, format!("{v:?} is not a finite number"))),
        })
        .transpose()
}

fn time(pairs: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    single(pairs, key)?
        .map(|v| {
            tripline_model::time::parse_rfc3339_ms(v)
                .map_err(|_| ApiError::bad_parameter(key, format!("{v:?} is not an RFC 3339 time with an offset")))
        })
        .transpose()
}

/// `limit` (1–1000, default 50).
pub fn limit(pairs: &[(String, String)]) -> Result<usize, ApiError> {
    match single(pairs, "limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_parameter("limit", format!("{v:?} is not an integer from 1 to {MAX_LIMIT}"))),
        },
    }
}

/// A search (`/v1/trips`, `/v1/vehicles/{id}/trips`).
pub fn search(pairs: &[(String, String)]) -> Result<TripQuery, ApiError> {
    check_keys(pairs, &SEARCH)?;
    read_search(pairs)
}

/// A search's query from `pairs`, whose keys were checked.
fn read_search(pairs: &[(String, String)]) -> Result<TripQuery, ApiError> {
    let vehicle_id = single(pairs, "vehicle_id")?
        .map(|v| VehicleId::parse(v).map_err(|e| ApiError::bad_parameter("vehicle_id", e)))
        .transpose()?;
    let status = match single(pairs, "status")? {
        None => None,
        Some("active") => Some(TripStatus::Active),
        Some("completed") => Some(TripStatus::Completed),
        Some(v) => return Err(ApiError::bad_parameter("status", format!("{v:?}: expected active or completed"))),
    };
    let sort = match single(pairs, "sort")? {
        None => SortOrder::default(),
        Some(v) => SortOrder::parse(v).ok_or_else(|| {
            ApiError::bad_parameter(
                "sort",
                format!("{v:?}: expected start_time, -start_time, score, -score, distance_km or -distance_km"),
            )
        })?,
    };
    let events = event_kinds(pairs)?;
    let regions: Vec<String> = pairs.iter().filter(|(k, _)| k == "region").map(|(_, v)| v.clone()).collect();
    let bbox = single(pairs, "bbox")?.map(parse_bbox).transpose()?;
    let cursor = single(pairs, "cursor")?
        .map(|c| Cursor::decode(c, sort).map_err(|_| ApiError::bad_parameter("cursor", "not a cursor of this search")))
        .transpose()?;
    let query = TripQuery {
        q: single(pairs, "q")?.map(str::to_owned),
        vehicle_id,
        from_ms: time(pairs, "from")?,
        to_ms: time(pairs, "to")?,
        status,
        min_score: number(pairs, "min_score")?,
        max_score: number(pairs, "max_score")?,
        min_distance_km: number(pairs, "min_distance_km")?,
        max_distance_km: number(pairs, "max_distance_km")?,
        events,
        regions,
        bbox,
        sort,
        limit: limit(pairs)?,
        cursor,
    };
    if let (Some(from), Some(to)) = (query.from_ms, query.to_ms)
        && from >= to
    {
        return Err(ApiError::bad_parameter("to", "must be after from"));
    }
    Ok(query)
}

/// Every `event` (repeatable): event kinds.
fn event_kinds(pairs: &[(String, String)]) -> Result<Vec<EventKind>, ApiError> {
    let mut events = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == "event") {
        let kind = EventKind::from_name(v).ok_or_else(|| {
            ApiError::bad_parameter(
                "event",
                format!("{v:?}: expected harsh_braking, harsh_acceleration, harsh_cornering or speeding"),
            )
        })?;
        events.push(kind);
    }
    Ok(events)
}

/// `/v1/stream`: `vehicle_id`, `type` (message types) and `event` (event kinds of
/// `event.detected`), each repeatable.
pub(crate) fn stream(pairs: &[(String, String)]) -> Result<crate::stream::StreamFilter, ApiError> {
    check_keys(pairs, &STREAM)?;
    let mut filter = crate::stream::StreamFilter { events: event_kinds(pairs)?, ..Default::default() };
    for (key, v) in pairs {
        match key.as_str() {
            "vehicle_id" => filter.vehicles.push(VehicleId::parse(v).map_err(|e| ApiError::bad_parameter(key, e))?),
            "type" => filter.kinds.push(NoticeKind::parse(v).ok_or_else(|| {
                ApiError::bad_parameter(
                    key,
                    format!("{v:?}: expected trip.started, trip.updated, trip.completed or event.detected"),
                )
            })?),
            _ => {}
        }
    }
    Ok(filter)
}

fn parse_bbox(v: &str) -> Result<(f64, f64, f64, f64), ApiError> {
    let bad = || ApiError::bad_parameter("bbox", format!("{v:?}: expected min_lon,min_lat,max_lon,max_lat"));
    let numbers: Vec<f64> =
        v.split(',').map(|n| n.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let [min_lon, min_lat, max_lon, max_lat] = numbers[..] else { return Err(bad()) };
    let lon_ok = |x: f64| (-180.0..=180.0).contains(&x);
    let lat_ok = |x: f64| (-90.0..=90.0).contains(&x);
    if !(lon_ok(min_lon) && lon_ok(max_lon) && lat_ok(min_lat) && lat_ok(max_lat))
        || min_lon > max_lon
        || min_lat > max_lat
    {
        return Err(bad());
    }
    Ok((min_lon, min_lat, max_lon, max_lat))
}

/// `/v1/stats`: the search's selection, `group_by` (required) and `tz` (IANA, default UTC).
pub fn stats(pairs: &[(String, String)]) -> Result<(TripQuery, tripline_index::GroupBy), ApiError> {
    check_keys(pairs, &STATS)?;
    let query = read_search(pairs)?;
    let tz = single(pairs, "tz")?;
    if let Some(name) = tz
        && name.parse::<chrono_tz::Tz>().is_err()
    {
        return Err(ApiError::bad_parameter("tz", format!("{name:?} is not an IANA time zone")));
    }
    let group = match single(pairs, "group_by")? {
        None => return Err(ApiError::bad_parameter("group_by", "required: event_kind, region, vehicle_id or day")),
        Some(name) => tripline_index::GroupBy::parse(name, tz).ok_or_else(|| {
            ApiError::bad_parameter("group_by", format!("{name:?}: expected event_kind, region, vehicle_id or day"))
        })?,
    };
    Ok((query, group))
}

/// A listing that takes only `cursor` and `limit` (points, rejections).
pub fn paging(pairs: &[(String, String)]) -> Result<(Option<String>, usize), ApiError> {
    check_keys(pairs, &PAGE)?;
    Ok((single(pairs, "cursor")?.map(str::to_owned), limit(pairs)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_search_parameter_is_read() {
        let query = search(&pairs(&[
            ("q", "berlin"),
            ("vehicle_id", "car-1"),
            ("from", "2026-11-01T00:00:00Z"),
            ("to", "2026-11-02T00:00:00+01:00"),
            ("status", "active"),
            ("min_score", "50"),
            ("max_score", "90.5"),
            ("min_distance_km", "1"),
            ("max_distance_km", "100"),
            ("event", "harsh_braking"),
            ("event", "speeding"),
            ("region", "Berlin"),
            ("region", "Brandenburg"),
            ("bbox", "13.0,52.0,14.0,53.0"),
            ("sort", "-score"),
            ("limit", "1000"),
        ]))
        .unwrap();
        assert_eq!(query.q.as_deref(), Some("berlin"));
        assert_eq!(query.vehicle_id.unwrap().as_str(), "car-1");
        assert_eq!(query.to_ms.unwrap() - query.from_ms.unwrap(), 23 * 3_600_000);
        assert_eq!(query.status, Some(TripStatus::Active));
        assert_eq!((query.min_score, query.max_score), (Some(50.0), Some(90.5)));
        assert_eq!(query.events, vec![EventKind::HarshBraking, EventKind::Speeding]);
        assert_eq!(query.regions.len(), 2);
        assert_eq!(query.bbox, Some((13.0, 52.0, 14.0, 53.0)));
        assert_eq!((query.sort, query.limit), (SortOrder::ScoreDesc, 1000));
        assert_eq!(search(&[]).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_values_and_unknown_parameters_name_the_parameter() {
        let cases: &[(&str, &str)] = &[
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "ten"),
            ("from", "yesterday"),
            ("from", "2026-11-01T00:00:00"),
            ("status", "parked"),
            ("min_score", "NaN"),
            ("event", "tailgating"),
            ("bbox", "1,2,3"),
            ("bbox", "14,52,13,53"),
            ("bbox", "0,95,1,96"),
            ("sort", "speed"),
            ("vehicle_id", "bad id!"),
            ("cursor", "not-a-cursor"),
            ("tenant", "globex"),
        ];
        for (key, value) in cases {
            let error = search(&pairs(&[(key, value)])).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{key}={value}");
            assert!(error.message.contains(key), "{key}={value}: {}", error.message);
        }
        let twice = search(&pairs(&[("limit", "5"), ("limit", "6")])).unwrap_err();
        assert!(twice.message.contains("more than once"));
        let backwards = search(&pairs(&[("from", "2026-11-02T00:00:00Z"), ("to", "2026-11-01T00:00:00Z")]));
        assert!(backwards.is_err());
        let long = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(search(&pairs(&[("q", &long)])).is_err());
    }

    #[test]
    fn stats_need_a_grouping_and_a_real_zone() {
        let (_, group) = stats(&pairs(&[("group_by", "day"), ("tz", "Europe/Berlin")])).unwrap();
        assert_eq!(group, tripline_index::GroupBy::Day(chrono_tz::Europe::Berlin));
        assert!(stats(&pairs(&[("group_by", "region"), ("min_score", "3")])).is_ok());
        for (bad, name) in [
            (vec![], "group_by"),
            (vec![("group_by", "colour")], "group_by"),
            (vec![("group_by", "day"), ("tz", "Mars/Base")], "tz"),
        ] {
            let error = stats(&pairs(&bad)).unwrap_err();
            assert!(error.message.contains(name), "{bad:?}");
        }
        assert!(search(&pairs(&[("group_by", "day")])).is_err(), "only stats take group_by");
    }

    #[test]
    fn paging_takes_only_cursor_and_limit() {
        assert_eq!(paging(&pairs(&[("limit", "10")])).unwrap(), (None, 10));
        assert!(paging(&pairs(&[("q", "x")])).is_err());
    }
}
