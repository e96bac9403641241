//! The contract's error body, produced in one place: `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// 400 naming the parameter.
    pub fn bad_parameter(name: &str, why: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_parameter",
            message: format!("parameter {name}: {why}"),
        }
    }

    /// 401.
    pub fn unauthorized() -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or unknown API key (Authorization: Bearer <key>)".to_owned(),
        }
    }

    /// 404, the same for another tenant's resource as for a missing one.
    pub fn not_found(what: &str) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, code: "not_found", message: format!("{what} not found") }
    }

    /// 429.
    pub fn rate_limited() -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many requests for this API key; slow down".to_owned(),
        }
    }

    /// 429: the key holds as many live streams as it may.
    pub fn too_many_streams(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_streams",
            message: format!("this API key already holds {limit} open streams; close one first"),
        }
    }

    /// 429: too many failed authentications from this client address.
    pub fn auth_flood() -> ApiError {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "rate_limited",
            message: "too many failed authentications from this address; slow down".to_owned(),
        }
    }

    /// 503: a backend cannot answer now. The cause is logged, not sent.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %cause, "request failed: backend unavailable");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: "the store or index cannot answer right now; try again".to_owned(),
        }
    }

    /// 503 from `/readyz`: a part of the process cannot do its work; the reason is sent (it is
    /// about the process, never about a tenant's data).
    pub fn not_ready(reason: String) -> ApiError {
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, code: "not_ready", message: reason }
    }

    /// 500: a bug or corrupt data. The cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "request failed");
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal", message: "internal error".to_owned() }
    }
}

impl From<tripline_store::StoreError> for ApiError {
    fn from(error: tripline_store::StoreError) -> Self {
        match error {
            tripline_store::StoreError::BadCursor => ApiError::bad_parameter("cursor", "not a cursor of this listing"),
            tripline_store::StoreError::Unavailable { .. } => ApiError::unavailable(&error),
            other => ApiError::internal(&other),
        }
    }
}

impl From<tripline_index::IndexError> for ApiError {
    fn from(error: tripline_index::IndexError) -> Self {
        match error {
            tripline_index::IndexError::BadCursor => ApiError::bad_parameter("cursor", "not a cursor of this search"),
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
