//! axum handlers: parse, authenticate, call [`crate::service`], render. Every failure is an
//! [`ApiError`] problem document, including bad paths, queries, bodies and unknown routes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::field::Empty;
use wattprint_core::{InstanceId, UnixMillis, WorkloadId};

use crate::auth::AuthenticatedTenant;
pub use wattprint_api_types::{
    Health, InstanceList, RestatementsParams, SeriesParams, SummaryParams, WhatIfParams,
};

use crate::error::ApiError;
use crate::restatements::{RestatementsRequest, RestatementsView};
use crate::service::{
    self, check_id, Series, SeriesRequest, SummaryRequest, TenantSummaryView, WorkloadDetail,
    WorkloadRequest, WorkloadView,
};
use crate::time::{parse_instant, parse_required_instant, Step};
use crate::whatif::{WhatIfRequest, WhatIfView};
use crate::ApiState;
use wattprint_api_types::WorkloadEvidence;

/// Range a series covers when `from` is not given: one hour before `to`.
pub const DEFAULT_SERIES_RANGE_MS: i64 = 3_600_000;

/// The API's routes with tracing, over `state`: REST, plus the gRPC service at
/// `/wattprint.v1.TenantQuery/*` ([`crate::grpc::grpc_routes`]). Any other path gets the
/// problem+json 404 (a gRPC call to it: gRPC `UNIMPLEMENTED`).
pub fn router(state: ApiState) -> Router {
    let limits = state.limits;
    let unauthenticated = state.unauthenticated.clone();
    let app = Router::new()
        .merge(crate::grpc::grpc_routes(state.clone()))
        .merge(crate::operator::operator_routes())
        .merge(crate::portal::portal_routes())
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route("/v1/instances", get(list_instances))
        .route("/v1/instances/{id}/series", get(instance_series))
        .route(
            "/v1/workloads",
            get(crate::workloads::get_list).post(create_workload),
        )
        .route("/v1/workloads/{id}", get(get_workload))
        .route(
            "/v1/workloads/{id}/labels",
            put(crate::workloads::put_labels),
        )
        .route(
            "/v1/workloads/{id}/close",
            post(crate::workloads::post_close),
        )
        .route("/v1/workloads/{id}/whatif", get(workload_whatif))
        .route("/v1/workloads/{id}/evidence", get(workload_evidence))
        .route("/v1/summary", get(tenant_summary))
        .route("/v1/restatements", get(list_restatements))
        .route("/v1/statements", get(crate::statements::http::list))
        .route("/v1/statements/{period}", get(crate::statements::http::get))
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    let app = match unauthenticated {
        Some(limiter) => app.layer(axum::middleware::from_fn_with_state(
            limiter,
            crate::iplimit::limit_unauthenticated,
        )),
        None => app,
    };
    app.layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state)
}

/// Liveness
///
/// `ok` while the process serves and its main loops turn; 503 (a problem document naming the
/// loop) when one (the enricher's, where it runs in this process) has not turned for longer
/// than it may. No token needed.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses(
        (status = 200, description = "The process serves.", body = Health),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn healthz() -> Response {
    match wattprint_runtime::metrics::liveness::check() {
        Ok(()) => Json(Health {
            status: "ok".into(),
        })
        .into_response(),
        // A problem document whose detail names the silent loop.
        Err(stale) => ApiError::Unavailable(stale).into_response(),
    }
}

/// Unknown paths: a problem+json 404, or for a gRPC call (to a service this server does not
/// have) a gRPC `UNIMPLEMENTED`.
async fn unknown_route(uri: Uri, headers: HeaderMap) -> Response {
    if crate::grpc::is_grpc_request(&headers) {
        return crate::grpc::unimplemented_response(uri.path());
    }
    ApiError::NotFound("no such route".into()).into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The caller's instances
///
/// Every instance of the tenant with its grid region, zip code and GPUs.
#[utoipa::path(
    get,
    path = "/v1/instances",
    tag = "inventory",
    security(("bearer" = [])),
    params(crate::workloads::PageParams),
    responses(
        (status = 200, description = "A page of the tenant's instances, by id.", body = InstanceList),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(count = Empty))]
pub(crate) async fn list_instances(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    query: Result<Query<crate::workloads::PageParams>, QueryRejection>,
) -> Result<Json<InstanceList>, ApiError> {
    let Query(page) = query?;
    let all = service::list_instances(state.store.as_ref(), &scope).await?;
    let (instances, next_cursor) =
        crate::workloads::paginate(all, |i| i.instance_id.as_str(), &page)?;
    tracing::Span::current().record("count", instances.len());
    Ok(Json(InstanceList {
        instances,
        next_cursor,
    }))
}

/// A series request from its optional parts, with the defaults REST and gRPC share: step
/// `5m`, `to` now, `from` [`DEFAULT_SERIES_RANGE_MS`] before `to`.
pub(crate) fn series_request(
    from: Option<&str>,
    to: Option<&str>,
    step: Option<&str>,
) -> Result<SeriesRequest, ApiError> {
    let step = Step::parse(step.unwrap_or("5m")).map_err(ApiError::BadRequest)?;
    let to = match to {
        Some(s) => parse_instant("to", s).map_err(ApiError::BadRequest)?,
        None => UnixMillis::now(),
    };
    let from = match from {
        Some(s) => parse_instant("from", s).map_err(ApiError::BadRequest)?,
        None => UnixMillis(to.0.saturating_sub(DEFAULT_SERIES_RANGE_MS)),
    };
    Ok(SeriesRequest { from, to, step })
}

/// An instance's series
///
/// All GPUs of the instance summed per step (`5m`, `1h`, `1d`: energy, power, coverage,
/// intensity and emissions), or the stored samples of each GPU (`raw`). Aggregated ranges are
/// widened to whole steps; empty steps are listed with zero coverage.
#[utoipa::path(
    get,
    path = "/v1/instances/{id}/series",
    tag = "series",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Instance id: 1 to 256 characters, no control characters."), SeriesParams),
    responses(
        (status = 200, description = "The series.", body = Series),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(instance = Empty, step = Empty, points = Empty))]
pub(crate) async fn instance_series(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    let Path(id) = path?;
    let Query(params) = query?;
    check_id("instance", &id)?;
    let span = tracing::Span::current();
    span.record("instance", id.as_str());
    let req = series_request(
        params.from.as_deref(),
        params.to.as_deref(),
        params.step.as_deref(),
    )?;
    span.record("step", req.step.as_str());
    let series = service::instance_series(
        state.store.as_ref(),
        &scope,
        &InstanceId::new(id),
        req,
        &state.limits,
        state.intensity_join().ok().as_deref(),
    )
    .await?;
    span.record("points", series.points.len());
    Ok(Json(series))
}

/// Create a workload
///
/// A named run over some of the tenant's instances and a time range, with what its functional
/// unit R counts. Every instance must be the caller's.
#[utoipa::path(
    post,
    path = "/v1/workloads",
    tag = "workloads",
    security(("bearer" = [])),
    request_body = WorkloadRequest,
    responses(
        (status = 201, description = "Created.", body = WorkloadView,
            headers(("Location" = String, description = "`/v1/workloads/{id}` of the new workload"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(workload = Empty, instances = Empty))]
pub(crate) async fn create_workload(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    body: Result<Json<WorkloadRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    scope.require_admin()?;
    let Json(req) = body?;
    let span = tracing::Span::current();
    span.record("instances", req.instance_ids.len());
    let view = service::create_workload(state.store.as_ref(), &scope, &req, &state.limits).await?;
    span.record("workload", view.id.as_str());
    let mut resp = (StatusCode::CREATED, Json(&view)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/workloads/{}", view.id)) {
        resp.headers_mut().insert(LOCATION, loc);
    }
    tracing::info!("workload created");
    Ok(resp)
}

/// A workload with its footprint
///
/// Energy (exact, edge buckets clipped to the range), operational emissions per 5-minute
/// GPU-interval, embodied share, SCI per functional unit, coverage and provenance.
#[utoipa::path(
    get,
    path = "/v1/workloads/{id}",
    tag = "workloads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Workload id: 1 to 256 characters, no control characters.")),
    responses(
        (status = 200, description = "The workload and its footprint.", body = WorkloadDetail),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(workload = Empty))]
pub(crate) async fn get_workload(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkloadDetail>, ApiError> {
    let Path(id) = path?;
    check_id("workload", &id)?;
    tracing::Span::current().record("workload", id.as_str());
    let detail = service::workload_detail(
        state.store.as_ref(),
        &scope,
        &state.catalog,
        &WorkloadId::new(id),
        &state.limits,
        state.intensity_join().ok().as_deref(),
    )
    .await?;
    Ok(Json(detail))
}

/// A workload's energy evidence
///
/// The JSON a model provider attaches to its model documentation (the EU AI Act asks for the
/// energy used to train a general-purpose model): the workload and its span, instances, GPUs
/// and regions, measured vs estimated energy (kWh and exact mJ), facility energy and PUE,
/// marginal, location-based and embodied emissions, intensity sources, model versions and
/// provenance, method notes, and `content_sha256` (SHA-256 of the JSON as served with
/// `generated_at` set to `""` and that field null: the content, not the request time).
/// The numbers are the footprint's (`GET /v1/workloads/{id}`).
#[utoipa::path(
    get,
    path = "/v1/workloads/{id}/evidence",
    tag = "workloads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Workload id: 1 to 256 characters, no control characters.")),
    responses(
        (status = 200, description = "The evidence.", body = WorkloadEvidence),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
pub(crate) async fn workload_evidence(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<WorkloadEvidence>, ApiError> {
    let Path(id) = path?;
    let evidence = crate::evidence::workload_evidence(&state, &scope, &id).await?;
    Ok(Json(evidence))
}

/// Carbon-aware what-ifs of a workload
///
/// Flexible Start and Pause and Resume (Dodge et al. 2022) on the actual marginal intensity of
/// the workload's grid region, in hindsight. What cannot be computed is listed in
/// `unavailable` with the reason.
#[utoipa::path(
    get,
    path = "/v1/workloads/{id}/whatif",
    tag = "workloads",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Workload id: 1 to 256 characters, no control characters."), WhatIfParams),
    responses(
        (status = 200, description = "The what-ifs.", body = WhatIfView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::Unprocessable),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
#[tracing::instrument(skip_all, fields(workload = Empty))]
pub(crate) async fn workload_whatif(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WhatIfParams>, QueryRejection>,
) -> Result<Json<WhatIfView>, ApiError> {
    let Path(id) = path?;
    check_id("workload", &id)?;
    tracing::Span::current().record("workload", id.as_str());
    let Query(params) = query?;
    let basis = params
        .basis
        .as_deref()
        .map(crate::whatif::parse_basis)
        .transpose()?
        .unwrap_or_default();
    let req = WhatIfRequest::parse(params.window_hours.as_deref(), params.factor.as_deref())?
        .with_basis(basis);
    let join = state.intensity_join()?;
    // At most `whatif_per_tenant` of the tenant's what-ifs at once (429 beyond).
    let _slot = state.searches.enter(scope.tenant())?;
    let view = crate::whatif::workload_whatif(
        state.store.as_ref(),
        &scope,
        &join,
        &WorkloadId::new(id),
        &req,
        &state.limits,
    )
    .await?;
    Ok(Json(view))
}

fn parse_summary_params(p: &SummaryParams) -> Result<SummaryRequest, ApiError> {
    Ok(SummaryRequest {
        from: parse_required_instant("from", p.from.as_deref()).map_err(ApiError::BadRequest)?,
        to: parse_required_instant("to", p.to.as_deref()).map_err(ApiError::BadRequest)?,
    })
}

/// The caller's usage over a range
///
/// Energy, emissions and provenance per instance with data in the range and in total, over
/// the 5-minute buckets overlapping `[from, to)` (a month fits the default range limit).
#[utoipa::path(
    get,
    path = "/v1/summary",
    tag = "summary",
    security(("bearer" = [])),
    params(SummaryParams),
    responses(
        (status = 200, description = "The summary.", body = TenantSummaryView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(instances = Empty))]
pub(crate) async fn tenant_summary(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    query: Result<Query<SummaryParams>, QueryRejection>,
) -> Result<Json<TenantSummaryView>, ApiError> {
    let Query(params) = query?;
    let req = parse_summary_params(&params)?;
    let view = service::tenant_summary(state.store.as_ref(), &scope, req, &state.limits).await?;
    tracing::Span::current().record("instances", view.instances.len());
    Ok(Json(view))
}

/// The caller's intensity restatements
///
/// GPU-intervals whose bucket overlaps `[from, to)` and whose intensity was replaced when
/// better data arrived, with E × ΔI per record and totals that are what a summary over the
/// same range moved by. Never truncated: too many records is a 400 asking for a shorter range.
#[utoipa::path(
    get,
    path = "/v1/restatements",
    tag = "restatements",
    security(("bearer" = [])),
    params(RestatementsParams),
    responses(
        (status = 200, description = "The restatements and their totals.", body = RestatementsView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(count = Empty))]
pub(crate) async fn list_restatements(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    query: Result<Query<RestatementsParams>, QueryRejection>,
) -> Result<Json<RestatementsView>, ApiError> {
    let Query(params) = query?;
    let req = RestatementsRequest::parse(params.from.as_deref(), params.to.as_deref())?;
    let view =
        crate::restatements::list_restatements(state.store.as_ref(), &scope, req, &state.limits)
            .await?;
    tracing::Span::current().record("count", view.restatements.len());
    Ok(Json(view))
}
