//! The query parameters as `/openapi.json` describes them: structs read only by the OpenAPI
//! derive of the handlers' annotations (`routes.rs`). Parsing is `params.rs`; a test keeps the
//! two lists equal.

#![allow(dead_code)] // the fields are read by the OpenAPI derive, not by code

use utoipa::IntoParams;

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
/// [`VehicleFilter`]. Every value is at most 1,024 bytes; single-valued ones are given once.
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
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page of the same search (opaque).
    #[param(max_length = 1024)]
    cursor: Option<String>,
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

/// Paging of listings.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque).
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
