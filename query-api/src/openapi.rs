//! `/openapi.json`: the OpenAPI 3 description, generated from the handlers' annotations
//! (`routes.rs`, their parameters described in `params.rs`) and the answer types they return.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
        crate::routes::stream,
        crate::routes::deliveries,
        crate::routes::ready,
        crate::routes::page,
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
        let described: Vec<&str> = doc["paths"]["/v1/trips"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(described, crate::params::SEARCH.iter().map(String::as_str).collect::<Vec<_>>(), "what is read");
        let of_vehicle = doc["paths"]["/v1/vehicles/{vehicle_id}/trips"]["get"]["parameters"].as_array().unwrap();
        assert_eq!(of_vehicle.iter().filter(|p| p["name"] == "vehicle_id").count(), 1, "only the path's");
        assert!(doc["components"]["schemas"]["TripSummary"].is_object());
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    }
}
