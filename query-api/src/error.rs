//! One error type for the API, rendered as RFC 7807 `application/problem+json`.
//!
//! Store failures become a 500 whose body says nothing about internals; the cause is logged.
//! "Not found" is the same answer for what does not exist and what belongs to another tenant.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use thiserror::Error;
use wattprint_store::StoreError;

pub use wattprint_api_types::Problem;

use crate::auth::AuthError;

/// Media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a request can fail with.
#[derive(Debug, Error)]
pub enum ApiError {
    /// A parameter or body is invalid; the message says which and why.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON of the expected shape.
    #[error("{0}")]
    InvalidBody(String),
    /// The body is not declared as JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is larger than the server accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No usable token.
    #[error("{0}")]
    Unauthorized(AuthError),
    /// The token is valid but does not allow this request (a reader asking to write, an
    /// operator token on a tenant route, a tenant token on an operator route).
    #[error("{0}")]
    Forbidden(String),
    /// The caller's request budget is spent; it may retry after `retry_after_s` seconds.
    #[error("rate limit exceeded: retry in {retry_after_s} s")]
    TooManyRequests {
        /// Whole seconds until a request will be accepted again (at least 1).
        retry_after_s: u64,
    },
    /// The thing does not exist or is not the caller's.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the stored state (e.g. closing a workload closed elsewhere).
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but this data cannot answer it; the message says why.
    #[error("{0}")]
    Unprocessable(String),
    /// The request would cost more computation than the server allows one request (a what-if
    /// search over its budget); refused before any work. The message says how much was asked
    /// and the limit.
    #[error("{0}")]
    OverBudget(String),
    /// The server is not configured to answer this request.
    #[error("{0}")]
    Unavailable(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A real failure of the store or of stored data. Logged; never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unprocessable(_) | ApiError::OverBudget(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable problem type URI and title.
    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("urn:wattprint:problem:bad-request", "Bad request"),
            ApiError::InvalidBody(_) => {
                ("urn:wattprint:problem:invalid-body", "Invalid request body")
            }
            ApiError::UnsupportedMediaType(_) => (
                "urn:wattprint:problem:unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::PayloadTooLarge(_) => (
                "urn:wattprint:problem:payload-too-large",
                "Request body too large",
            ),
            ApiError::Unauthorized(_) => ("urn:wattprint:problem:unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => ("urn:wattprint:problem:forbidden", "Forbidden"),
            ApiError::TooManyRequests { .. } => {
                ("urn:wattprint:problem:rate-limited", "Too many requests")
            }
            ApiError::NotFound(_) => ("urn:wattprint:problem:not-found", "Not found"),
            ApiError::Conflict(_) => ("urn:wattprint:problem:conflict", "Conflict"),
            ApiError::MethodNotAllowed => (
                "urn:wattprint:problem:method-not-allowed",
                "Method not allowed",
            ),
            ApiError::Unprocessable(_) => (
                "urn:wattprint:problem:unprocessable",
                "Cannot be computed from this data",
            ),
            ApiError::OverBudget(_) => (
                "urn:wattprint:problem:over-budget",
                "Request over the server's compute budget",
            ),
            ApiError::Unavailable(_) => (
                "urn:wattprint:problem:unavailable",
                "Not available on this server",
            ),
            ApiError::Internal(_) => ("urn:wattprint:problem:internal", "Internal error"),
        }
    }

    /// What the caller is told (the problem's `detail`, and the gRPC status message).
    pub(crate) fn detail(&self) -> String {
        match self {
            ApiError::Internal(_) => {
                "the server failed to answer this request; it has been logged".into()
            }
            other => other.to_string(),
        }
    }

    /// Maps a store error. `not_found` is what the caller is told for `NotFound`, so the
    /// store's own wording (which might say more) is never shown.
    pub fn from_store(err: StoreError, not_found: impl FnOnce() -> String) -> ApiError {
        match err {
            StoreError::NotFound(_) => ApiError::NotFound(not_found()),
            StoreError::Invalid(msg) => ApiError::BadRequest(msg),
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        if let ApiError::Forbidden(_) = &self {
            crate::metrics::auth_refused_as("forbidden_role");
        }
        let (kind, title) = self.kind_and_title();
        let body = Problem {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            retry_after_s: None,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (status, bytes).into_response();
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ApiError::Unauthorized(err) = &self {
            let challenge = match err {
                AuthError::MissingToken => r#"Bearer realm="wattprint""#,
                _ => r#"Bearer realm="wattprint", error="invalid_token""#,
            };
            resp.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let ApiError::TooManyRequests { retry_after_s } = &self {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                "request body must be sent as application/json".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(
                format!("{}: send a smaller request body", other.body_text()),
            ),
            other => ApiError::InvalidBody(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = ApiError::from_store(
            StoreError::Corrupt {
                table: "intervals",
                detail: "secret detail".into(),
            },
            || "x".into(),
        );
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.detail().contains("secret"));
        let nf = ApiError::from_store(StoreError::NotFound("tenant t2 owns it".into()), || {
            "instance i not found".into()
        });
        assert_eq!(nf.detail(), "instance i not found");
    }
}
