//! Query API metrics (`docs/metrics.md`, "Query API"): requests by route template, method and
//! status ([`track`], a middleware on the router, so the label is the matched template and
//! never a raw URL), gRPC calls by method and gRPC status code, rate-limited requests by role,
//! auth refusals by reason, and the JWKS refreshes.

use crate::auth::AuthError;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::LazyLock;
use std::time::Instant;
use wattprint_runtime::metrics::{self, Counter, Gauge, Histogram, KeyValue, UpDownCounter};

struct ApiMetrics {
    statement_last_issued: Gauge<f64>,
    requests: Counter<u64>,
    duration: Histogram<f64>,
    in_flight: UpDownCounter<i64>,
    rate_limited: Counter<u64>,
    auth_refusals: Counter<u64>,
    grpc_requests: Counter<u64>,
    jwks_refreshes: Counter<u64>,
    jwks_refresh_errors: Counter<u64>,
    jwks_last_refresh: Gauge<f64>,
}

static API: LazyLock<ApiMetrics> = LazyLock::new(|| ApiMetrics {
    statement_last_issued: metrics::meter()
        .f64_gauge("wattprint.statement.last_issued_period_end_timestamp")
        .with_unit("s")
        .with_description(
            "End of the newest month with an issued statement (any tenant); 0 before the first.",
        )
        .build(),
    requests: metrics::counter("wattprint.api.requests", "Requests answered."),
    duration: metrics::seconds_histogram("wattprint.api.request_duration", "Request to response."),
    in_flight: metrics::meter()
        .i64_up_down_counter("wattprint.api.requests_in_flight")
        .with_description("Requests being served.")
        .build(),
    rate_limited: metrics::counter(
        "wattprint.api.rate_limited_requests",
        "Requests refused with 429.",
    ),
    auth_refusals: metrics::counter(
        "wattprint.api.auth_refusals",
        "Requests refused with 401/403.",
    ),
    grpc_requests: metrics::counter(
        "wattprint.api.grpc_requests",
        "gRPC calls answered, by method and gRPC status code.",
    ),
    jwks_refreshes: metrics::counter(
        "wattprint.api.jwks_refreshes",
        "JWKS loads that succeeded (the first load and refreshes).",
    ),
    jwks_refresh_errors: metrics::counter(
        "wattprint.api.jwks_refresh_errors",
        "JWKS fetches that failed (the cached set stays in use).",
    ),
    jwks_last_refresh: metrics::meter()
        .f64_gauge("wattprint.api.jwks_last_refresh_timestamp")
        .with_unit("s")
        .with_description("Unix time the key set was last loaded.")
        .build(),
});

/// gRPC status codes by number, as the `code` label names them.
const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// The `code` label of a `grpc-status` value (`unknown` for anything not a code).
fn grpc_code_name(value: &axum::http::HeaderValue) -> &'static str {
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .and_then(|n| GRPC_CODES.get(n).copied())
        .unwrap_or("unknown")
}

/// The methods of `wattprint.v1.TenantQuery` and `wattprint.v1.OperatorQuery`
/// (`proto/wattprint/v1/query.proto`; a unit test holds the two together), as paths: the
/// `route` label's values besides `other`.
const GRPC_METHODS: [&str; 14] = [
    "/wattprint.v1.TenantQuery/ListInstances",
    "/wattprint.v1.TenantQuery/GetWorkloadFootprint",
    "/wattprint.v1.TenantQuery/GetWorkloadWhatIf",
    "/wattprint.v1.TenantQuery/ListRestatements",
    "/wattprint.v1.TenantQuery/GetInstanceSeries",
    "/wattprint.v1.TenantQuery/ListWorkloads",
    "/wattprint.v1.TenantQuery/CreateWorkload",
    "/wattprint.v1.TenantQuery/SetWorkloadLabels",
    "/wattprint.v1.TenantQuery/CloseWorkload",
    "/wattprint.v1.TenantQuery/GetTenantSummary",
    "/wattprint.v1.TenantQuery/ListStatements",
    "/wattprint.v1.TenantQuery/GetStatement",
    "/wattprint.v1.TenantQuery/GetWorkloadEvidence",
    "/wattprint.v1.OperatorQuery/ExportStatements",
];

/// Counts one gRPC call with the code it ended with. The `route` label is the method's path
/// (`/wattprint.v1.TenantQuery/GetTenantSummary`) when it names a method of a service, else
/// `other`: a raw path never becomes a label (a refusal before routing, such as a spent rate
/// limit, can answer any path).
fn grpc_answered(path: &str, code: &'static str) {
    let route = GRPC_METHODS
        .iter()
        .find(|m| **m == path)
        .map_or("other", |m| m);
    API.grpc_requests.add(
        1,
        &[KeyValue::new("route", route), KeyValue::new("code", code)],
    );
}

/// Counts a gRPC response by its status: from the headers of a trailers-only response (every
/// error a handler returns), else from the trailers when the body ends with them.
fn count_grpc(path: String, response: Response) -> Response {
    use http_body_util::BodyExt as _;
    if let Some(status) = response.headers().get("grpc-status") {
        grpc_answered(&path, grpc_code_name(status));
        return response;
    }
    let is_grpc = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body.map_frame(move |frame| {
        if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
            grpc_answered(&path, grpc_code_name(status));
        }
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
}

/// The key set was loaded (`Ok`) or a fetch of it failed.
pub(crate) fn jwks_fetched(ok: bool) {
    if ok {
        API.jwks_refreshes.add(1, &[]);
        API.jwks_last_refresh.record(metrics::unix_now(), &[]);
    } else {
        API.jwks_refresh_errors.add(1, &[]);
    }
}

/// Middleware: counts and times every request under its route template.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let method: &'static str = match (grpc, request.method().as_str()) {
        (true, _) => "grpc",
        (false, "GET") => "GET",
        (false, "POST") => "POST",
        (false, "PUT") => "PUT",
        (false, _) => "other",
    };
    let path = grpc.then(|| request.uri().path().to_owned());
    let m = &*API;
    m.in_flight.add(1, &[]);
    let start = Instant::now();
    let response = next.run(request).await;
    m.in_flight.add(-1, &[]);
    let labels = [
        KeyValue::new("route", route),
        KeyValue::new("method", method),
    ];
    m.duration.record(start.elapsed().as_secs_f64(), &labels);
    let status = KeyValue::new("status", i64::from(response.status().as_u16()));
    let [route, method] = labels;
    m.requests.add(1, &[route, method, status]);
    match path {
        Some(path) => count_grpc(path, response),
        None => response,
    }
}

/// One request refused with 429 for a caller of `role` (`reader`, `admin`, `operator`).
pub(crate) fn rate_limited(role: &'static str) {
    API.rate_limited.add(1, &[KeyValue::new("role", role)]);
}

/// One request refused with 401 for `err`.
pub(crate) fn auth_refused(err: &AuthError) {
    auth_refused_as(refusal_reason(err));
}

/// One request refused with 401/403 for `reason` (the catalogue's closed set).
pub(crate) fn auth_refused_as(reason: &'static str) {
    API.auth_refusals.add(1, &[KeyValue::new("reason", reason)]);
}

fn refusal_reason(err: &AuthError) -> &'static str {
    match err {
        AuthError::MissingToken => "missing_token",
        AuthError::MalformedHeader | AuthError::TooLarge | AuthError::Mint(_) => "malformed",
        AuthError::AlgorithmRefused(_) | AuthError::NotConfigured => "bad_signature",
        AuthError::UnknownKey(_) => "unknown_key",
        AuthError::Expired => "expired",
        AuthError::NotYetValid => "not_yet_valid",
        AuthError::Invalid(why) => {
            const BY_TEXT: [(&str, &str); 5] = [
                ("InvalidIssuer", "wrong_issuer"),
                ("InvalidAudience", "wrong_audience"),
                ("lifetime", "lifetime_too_long"),
                ("no iat", "missing_iat"),
                ("InvalidSignature", "bad_signature"),
            ];
            BY_TEXT
                .iter()
                .find(|(needle, _)| why.contains(needle))
                .map_or("malformed", |(_, reason)| reason)
        }
    }
}

/// The newest issued month ends at `end` (Unix ms; 0: none issued yet).
pub(crate) fn statement_last_issued(end_ms: i64) {
    API.statement_last_issued
        .record(end_ms as f64 / 1000.0, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grpc_route_labels_are_the_methods_of_the_proto() {
        let proto = include_str!("../../proto/wattprint/v1/query.proto");
        let mut service = "";
        let mut declared = Vec::new();
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.trim_end_matches('{').trim();
            } else if let Some(rpc) = line.strip_prefix("rpc ") {
                let method = rpc.split('(').next().unwrap_or_default().trim();
                declared.push(format!("/wattprint.v1.{service}/{method}"));
            }
        }
        let mut labelled: Vec<String> = GRPC_METHODS.iter().map(|m| (*m).to_owned()).collect();
        declared.sort_unstable();
        labelled.sort_unstable();
        assert_eq!(labelled, declared);
    }
}
