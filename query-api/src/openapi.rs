//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` annotations
//! and the request and response types' `ToSchema` derives, and served at `GET /openapi.json`
//! (no token needed). Built once, on the first request.
//!
//! Errors are one schema, [`ProblemDocument`](crate::error) (RFC 7807), behind reusable
//! responses ([`BadRequest`], [`Unauthorized`], …) so every operation lists the same bodies.
//! Types of `wattprint-core` that appear in responses are described here by mirrors
//! ([`FootprintSchema`], [`FootprintProvenanceSchema`]) rather than by adding utoipa to core;
//! the OpenAPI test validates real responses against the document, so a mirror that drifts
//! fails it.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
pub use wattprint_api_types::schema::{
    series_points_schema, FootprintProvenanceSchema, FootprintSchema,
};

use crate::error::{ApiError, Problem};
use crate::service::{AggregatePoint, RawPoint};

/// Name of the bearer-token security scheme in the document.
pub const BEARER: &str = "bearer";

/// What the document says about the API as a whole: units and conventions.
pub const API_DESCRIPTION: &str = "\
Tenant-scoped GPU energy and carbon metering: inventory, series, workloads with SCI, \
what-ifs, summaries and restatements. Every `/v1` route takes a bearer JWT: a tenant's \
(role `reader`, or `admin` to create, label and close workloads), the tenant being taken \
from the verified token and from nowhere else; or, on `/v1/operator`, an operator's. \
Requests are rate-limited per tenant and per operator, and answers given without a \
verified token (401s, health, this document) per client IP (429 with `Retry-After`). \
What-ifs have a compute budget per request (422 `over-budget`, saying what was asked and \
the limit) and a cap on those one tenant runs at once (429).

Units are in the field names:
- `*_mj` (e.g. `energy_mj`): energy in millijoules, exact integers (counter arithmetic); \
`*_kwh` (e.g. `energy_kwh`): the same in kilowatt-hours (1 kWh = 3 600 000 000 mJ).
- `*co2e_g` (e.g. `co2e_g`, `facility_co2e_g`): grams of CO2-equivalent; `*_g_per_kwh`: grid intensity, gCO2e per kWh; \
`sci_g_per_unit`: gCO2e per functional unit (SCI, ISO/IEC 21031).
- `*_w`: watts; `*_pct`: percent; `temp_c`: degrees Celsius; `*_ms`: milliseconds; \
`*_minutes`, `*_hours`: as named; `coverage`: a fraction 0 to 1; `pue`: a ratio ≥ 1.
- Times in responses are RFC 3339 in UTC with milliseconds (`2026-11-23T00:00:00.000Z`); \
times in requests are RFC 3339 (any offset) or integer Unix milliseconds. Ranges are \
`[from, to)`.

Emissions are summed per 5-minute GPU-interval (Σ E_i × I_i, never E × mean I); `facility` \
figures include the interval's PUE. Every failure is an RFC 7807 `application/problem+json` \
document (`ProblemDocument`).";

/// The OpenAPI document of the REST API (gRPC is described by `proto/`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wattprint query API",
        version = env!("CARGO_PKG_VERSION"),
        description = API_DESCRIPTION,
    ),
    paths(
        crate::routes::healthz,
        openapi_json,
        crate::routes::list_instances,
        crate::routes::instance_series,
        crate::workloads::get_list,
        crate::routes::create_workload,
        crate::routes::get_workload,
        crate::workloads::put_labels,
        crate::workloads::post_close,
        crate::routes::workload_whatif,
        crate::routes::tenant_summary,
        crate::routes::list_restatements,
        crate::routes::workload_evidence,
        crate::statements::http::list,
        crate::statements::http::get,
        crate::operator::list_tenants,
        crate::operator::tenant_summary,
        crate::operator::statements_export,
    ),
    components(
        // Schemas only query parameters or `schema_with` refer to: utoipa registers those of
        // bodies by itself, not these.
        schemas(
            Problem,
            RawPoint,
            AggregatePoint,
            crate::time::Step,
            crate::workloads::StatusFilter,
        ),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            UnsupportedMediaType,
            Unprocessable,
            Unavailable,
            TooManyRequests,
            InternalError,
        )
    ),
    modifiers(&BearerAuth, &ParamSchemas),
    tags(
        (name = "meta", description = "Health and this document; no token needed."),
        (name = "inventory", description = "The tenant's instances and their GPUs."),
        (name = "series", description = "Energy, power and emissions of an instance over time."),
        (name = "workloads", description = "Named runs over instances and time: footprint, SCI and what-ifs."),
        (name = "summary", description = "The tenant's usage over a range, per instance and in total."),
        (name = "restatements", description = "Intervals whose intensity was replaced by better data, with the emissions each change made."),
        (name = "operator", description = "Cross-tenant reads for the provider's operators (billing); operator tokens only."),
    )
)]
pub struct ApiDoc;

/// Adds the bearer-JWT security scheme the operations refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "JWT (RS256, ES256 or EdDSA from the configured JWKS; HS256 in the \
                         embedded dev mode) with the configured `iss` and `aud`, naming the \
                         tenant and roles (`reader`, `admin`, `operator`).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Puts the rules of [`wattprint_api_types::schema`] on the parameters the `#[utoipa::path]`
/// attributes cannot express them for: path ids (`id`, `tenant`: the same id schema as in
/// bodies, from one pattern constant), a statement's `period`, and each value of the what-if's comma-separated lists
/// (`window_hours`, `factor`: the attributes bound the list, not its items).
struct ParamSchemas;

impl Modify for ParamSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ArrayItems, Schema};
        use utoipa::openapi::RefOr;
        use wattprint_api_types::schema::{
            factor_item, id_schema, statement_period_schema, window_hours_item,
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put];
            for op in operations.into_iter().flatten() {
                for param in op.parameters.iter_mut().flatten() {
                    let item_bounds = match (&param.parameter_in, param.name.as_str()) {
                        (ParameterIn::Path, "id" | "tenant") => {
                            param.schema = Some(RefOr::T(id_schema()));
                            continue;
                        }
                        (ParameterIn::Path, "period") => {
                            param.schema = Some(RefOr::T(statement_period_schema()));
                            continue;
                        }
                        (ParameterIn::Query, "window_hours") => window_hours_item(),
                        (ParameterIn::Query, "factor") => factor_item(),
                        _ => continue,
                    };
                    if let Some(RefOr::T(Schema::Array(list))) = &mut param.schema {
                        list.items = ArrayItems::RefOrSchema(Box::new(RefOr::T(item_bounds)));
                    }
                }
            }
        }
    }
}

/// The document as served, serialized once.
fn document() -> Option<&'static [u8]> {
    static DOC: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    DOC.get_or_init(|| match serde_json::to_vec(&ApiDoc::openapi()) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::error!(error = %e, "openapi document does not serialize");
            None
        }
    })
    .as_deref()
}

/// The OpenAPI 3.1 document of this API
///
/// Generated from the code; the same document on every call.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalError),
    )
)]
pub(crate) async fn openapi_json() -> Response {
    match document() {
        Some(bytes) => {
            let mut resp = bytes.into_response();
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        None => ApiError::Internal("openapi document does not serialize".into()).into_response(),
    }
}

pub use responses::*;

/// The problem responses operations refer to (`#/components/responses/*`): each a
/// [`ProblemDocument`](crate::error) with its own description and headers.
pub mod responses {
    // Never built: only the field's type matters, as the response body's schema.
    #![allow(dead_code)]

    use utoipa::ToResponse;

    use crate::error::Problem;

    /// A parameter, the path or the body is invalid; `detail` says which and why.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct BadRequest(Problem);

    /// No token, or one that does not verify (expired, wrong signature, issuer or audience).
    #[derive(ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"wattprint\"`, with `error=\"invalid_token\"` when a token was sent"))
    )]
    pub struct Unauthorized(Problem);

    /// The token is valid but does not allow this request: a reader asking to write, an operator
    /// token on a tenant route, a tenant token on an operator route.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Forbidden(Problem);

    /// The thing does not exist or is not the caller's (the same answer for both).
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct NotFound(Problem);

    /// The request conflicts with the thing's state (e.g. closing a closed workload at another end).
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Conflict(Problem);

    /// The body is not declared as `application/json`.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct UnsupportedMediaType(Problem);

    /// The request is well formed but this data cannot answer it, or (type
    /// `urn:wattprint:problem:over-budget`) a what-if would cost more search cells than the
    /// server allows one request; `detail` says why, or how much was asked and the limit.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Unprocessable(Problem);

    /// This server is not configured to answer the request (e.g. no intensity sources).
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct Unavailable(Problem);

    /// The caller's request budget is spent (the tenant's, or the client IP's for answers
    /// given without a verified token); retry after `Retry-After` seconds.
    #[derive(ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds until a request will be accepted again"))
    )]
    pub struct TooManyRequests(Problem);

    /// The store failed; the cause is logged, never shown.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub struct InternalError(Problem);
}
