//! The provider operator's routes: cross-tenant reads for billing exports, open only to
//! operator tokens ([`AuthenticatedOperator`]; a tenant token gets 403).
//!
//! - `GET /v1/operator/tenants`: every tenant of the inventory with its instance and GPU counts
//! - `GET /v1/operator/tenants/{tenant}/summary?from=&to=`: the body a tenant gets from its own
//!   `GET /v1/summary`, computed by the same [`service::tenant_summary`]. A tenant with no
//!   instance in the inventory is not an error (it may have given its instances up and still be
//!   billed for the range): its summary is empty.
//! - `GET /v1/operator/statements/{YYYY-MM}.csv` and `.parquet`: every tenant's statement of
//!   the month, stacked ([`crate::statements::export`]).
//!
//! This is the one place besides the token verifier that creates a
//! [`TenantScope`]: from the path, after the caller proved it is an operator.

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tracing::field::Empty;
use wattprint_core::{TenantId, TenantScope, UnixMillis};

use crate::auth::{AuthenticatedOperator, OperatorAccess};
pub use wattprint_api_types::{TenantList, TenantView};

use crate::error::ApiError;
use crate::routes::SummaryParams;
use crate::service::{self, SummaryRequest, TenantSummaryView};
use crate::statements::export::{self, ExportFormat};
use crate::statements::Period;
use crate::time::parse_required_instant;
use crate::ApiState;

/// The operator routes, to be merged into [`crate::router`].
pub fn operator_routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/operator/tenants", get(list_tenants))
        .route("/v1/operator/tenants/{tenant}/summary", get(tenant_summary))
        .route("/v1/operator/statements/{period}", get(statements_export))
}

/// Every tenant (operators)
///
/// Each tenant of the inventory with its instance and GPU counts. Operator tokens only.
#[utoipa::path(
    get,
    path = "/v1/operator/tenants",
    operation_id = "operator_list_tenants",
    tag = "operator",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenants, by id.", body = TenantList),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(count = Empty))]
pub(crate) async fn list_tenants(
    State(state): State<ApiState>,
    AuthenticatedOperator(operator): AuthenticatedOperator,
) -> Result<Json<TenantList>, ApiError> {
    let inventory = state
        .store
        .inventory()
        .await
        .map_err(|e| ApiError::from_store(e, || "no inventory".into()))?;
    let mut tenants: BTreeMap<String, TenantView> = BTreeMap::new();
    for record in inventory {
        let view = tenants
            .entry(record.tenant.to_string())
            .or_insert_with(|| TenantView {
                tenant: record.tenant.to_string(),
                instances: 0,
                gpus: 0,
            });
        view.instances += 1;
        view.gpus += record.gpus.len();
    }
    tracing::Span::current().record("count", tenants.len());
    tracing::info!(operator = operator.subject(), "operator listed tenants");
    Ok(Json(TenantList {
        tenants: tenants.into_values().collect(),
    }))
}

/// A tenant's usage over a range (operators)
///
/// The body the tenant gets from its own `GET /v1/summary`; a tenant without instances gets
/// an empty summary. Operator tokens only.
#[utoipa::path(
    get,
    path = "/v1/operator/tenants/{tenant}/summary",
    operation_id = "operator_tenant_summary",
    tag = "operator",
    security(("bearer" = [])),
    params(("tenant" = String, Path, description = "Tenant id: 1 to 256 characters, no control characters."), SummaryParams),
    responses(
        (status = 200, description = "The tenant's summary.", body = TenantSummaryView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(tenant = Empty, instances = Empty))]
pub(crate) async fn tenant_summary(
    State(state): State<ApiState>,
    AuthenticatedOperator(operator): AuthenticatedOperator,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<SummaryParams>, QueryRejection>,
) -> Result<Json<TenantSummaryView>, ApiError> {
    let Path(tenant) = path?;
    let Query(params) = query?;
    service::check_id("tenant", &tenant)?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let req = SummaryRequest {
        from: parse_required_instant("from", params.from.as_deref())
            .map_err(ApiError::BadRequest)?,
        to: parse_required_instant("to", params.to.as_deref()).map_err(ApiError::BadRequest)?,
    };
    // The caller is a verified operator: it may read any tenant.
    let scope = TenantScope::from_verified(TenantId::new(tenant));
    let view = service::tenant_summary(state.store.as_ref(), &scope, req, &state.limits).await?;
    tracing::Span::current().record("instances", view.instances.len());
    tracing::info!(
        operator = operator.subject(),
        "operator read a tenant summary"
    );
    Ok(Json(view))
}

/// Every tenant's statement of a month (operators)
///
/// `YYYY-MM.csv` or `YYYY-MM.parquet`: the rows of every tenant's statement of the month as
/// the tenant reads it (issued ones as issued, the others preliminary), one row per line, with
/// `usage_period` (the month a line's usage belongs to: the corrected month for adjustments)
/// and `model_version`. Operator tokens only.
#[utoipa::path(
    get,
    path = "/v1/operator/statements/{period}",
    operation_id = "operator_statements_export",
    tag = "operator",
    security(("bearer" = [])),
    params(("period" = String, Path, description = "The month and format: `YYYY-MM.csv` or `YYYY-MM.parquet`.")),
    responses(
        (status = 200, description = "Every tenant's statement lines.", content(
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.parquet"),
        )),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn statements_export(
    State(state): State<ApiState>,
    AuthenticatedOperator(operator): AuthenticatedOperator,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let (period, format) = name.rsplit_once('.').ok_or_else(|| {
        ApiError::BadRequest(format!("{name:?} is not YYYY-MM.csv or YYYY-MM.parquet"))
    })?;
    let export = export_statements(&state, &operator, period, format).await?;
    Ok(crate::statements::http::attachment(
        export.format.content_type(),
        &export.filename(),
        export.body,
    ))
}

/// Every tenant's statements of a month, rendered: what the REST route and the gRPC
/// `OperatorQuery.ExportStatements` both serve.
#[derive(Debug)]
pub struct StatementsExport {
    /// The month.
    pub period: Period,
    /// CSV or Parquet.
    pub format: ExportFormat,
    /// The file.
    pub body: Vec<u8>,
}

impl StatementsExport {
    /// The file's name: `wattprint-statements-YYYY-MM.csv` or `.parquet`.
    pub fn filename(&self) -> String {
        format!(
            "wattprint-statements-{}.{}",
            self.period,
            self.format.extension()
        )
    }
}

/// Every tenant's statement of `period` (`YYYY-MM`) in `format` (`csv` or `parquet`) for a
/// verified operator; 400 for a bad month or format.
#[tracing::instrument(skip_all, fields(period = Empty, format = Empty))]
pub(crate) async fn export_statements(
    state: &ApiState,
    operator: &OperatorAccess,
    period: &str,
    format: &str,
) -> Result<StatementsExport, ApiError> {
    let format = ExportFormat::from_extension(format).ok_or_else(|| {
        ApiError::BadRequest(format!("export format {format:?} is not csv or parquet"))
    })?;
    let period = Period::parse(period).map_err(ApiError::BadRequest)?;
    let span = tracing::Span::current();
    span.record("period", period.to_string());
    span.record("format", format.extension());
    let join = state.intensity_join().ok();
    let src = state.statement_sources(join.as_deref());
    let body = export::render(src, period, UnixMillis::now(), state.statements, format).await?;
    tracing::info!(
        operator = operator.subject(),
        "operator exported statements"
    );
    Ok(StatementsExport {
        period,
        format,
        body,
    })
}
