//! `/openapi.json`: the OpenAPI 3 description, generated from the handlers' annotations and the
//! answer types they return. The parameter structs here only describe; parsing is `params.rs`,
//! and a test keeps the two lists equal.

#![allow(dead_code)] // the parameter structs are read by the OpenAPI derive, not by code

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

/// Search parameters (`/v1/trips`, `/v1/vehicles/{id}/trips`, `/v1/stats`).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Free text: every word must occur among the vehicle id, region names and event kinds.
    q: Option<String>,
    /// Only this vehicle's trips.
    vehicle_id: Option<String>,
    /// RFC 3339: trips overlapping [from, to).
    from: Option<String>,
    /// RFC 3339: trips overlapping [from, to).
    to: Option<String>,
    /// `active` or `completed`.
    status: Option<String>,
    /// Lowest score, inclusive.
    min_score: Option<f64>,
    /// Highest score, inclusive.
    max_score: Option<f64>,
    /// Shortest distance, km, inclusive.
    min_distance_km: Option<f64>,
    /// Longest distance, km, inclusive.
    max_distance_km: Option<f64>,
    /// Repeatable: the trip has at least one event of each kind given.
    event: Option<Vec<String>>,
    /// Repeatable: the trip passed through each region given.
    region: Option<Vec<String>>,
    /// `min_lon,min_lat,max_lon,max_lat`: the trip passed through the box (to geohash-cell precision).
    bbox: Option<String>,
    /// `start_time`, `-start_time` (default), `score`, `-score`, `distance_km`, `-distance_km`.
    sort: Option<String>,
    /// 1 to 1000, default 50.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Grouping of `/v1/stats`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsParams {
    /// `event_kind`, `region`, `vehicle_id` or `day`.
    group_by: String,
    /// IANA zone of `day` buckets (default UTC); a trip counts on the local day it starts.
    tz: Option<String>,
}

/// Paging of listings.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// 1 to 1000, default 50.
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("the tenant's API key")).build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "tripline query API", description = "Trips, scores and events of one tenant's vehicles."),
    paths(
        crate::routes::search,
        crate::routes::trip,
        crate::routes::points,
        crate::routes::vehicle_trips,
        crate::routes::stats,
        crate::routes::rejections,
        crate::routes::ready,
    ),
    modifiers(&BearerKey)
)]
struct ApiDoc;

/// The document.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_route_is_described_with_the_parameters_the_code_reads() {
        let doc = serde_json::to_value(document()).unwrap();
        for path in [
            "/v1/trips",
            "/v1/trips/{trip_id}",
            "/v1/trips/{trip_id}/points",
            "/v1/vehicles/{vehicle_id}/trips",
            "/v1/stats",
            "/v1/rejections",
            "/readyz",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path} described");
        }
        let described: Vec<String> = doc["paths"]["/v1/trips"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(described, crate::params::SEARCH_KEYS, "docs and parser agree");
        assert!(doc["components"]["schemas"]["TripSummary"].is_object());
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}
