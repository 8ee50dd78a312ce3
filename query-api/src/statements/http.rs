//! REST for statements: the tenant's months, and one month as JSON (an issued one byte for
//! byte as issued) or CSV. Tenant-scoped like every route: another tenant's month is simply
//! not there.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::Json;
use wattprint_api_types::{StatementList, StatementSummary, StatementView};
use wattprint_core::UnixMillis;

use super::{statement, Period};
use crate::auth::AuthenticatedTenant;
use crate::error::ApiError;
use crate::ApiState;

/// The tenant's statements
///
/// Issued months, newest first, then the months not issued yet that can be read as
/// preliminary statements (the current month, and the last one during its grace).
#[utoipa::path(
    get,
    path = "/v1/statements",
    tag = "statements",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant's statements.", body = StatementList),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all)]
pub(crate) async fn list(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
) -> Result<Json<StatementList>, ApiError> {
    Ok(Json(summaries(&state, &scope, UnixMillis::now()).await?))
}

/// The tenant's months at `now`: issued newest first, after the preliminary ones (the current
/// month, and the last one until it is issued).
pub async fn summaries(
    state: &ApiState,
    scope: &wattprint_core::TenantScope,
    now: UnixMillis,
) -> Result<StatementList, ApiError> {
    let issued = state
        .store
        .issued_statements(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no statement".into()))?;
    let current = Period::containing(now);
    let mut statements: Vec<StatementSummary> = [current, current.prev()]
        .into_iter()
        .filter(|p| !issued.iter().any(|s| s.period == p.to_string()))
        .map(|p| StatementSummary {
            period: p.to_string(),
            status: "preliminary".into(),
            issued_at: None,
            content_sha256: None,
        })
        .collect();
    statements.extend(issued.into_iter().map(|s| StatementSummary {
        period: s.period,
        status: "issued".into(),
        issued_at: Some(s.issued_at.to_rfc3339()),
        content_sha256: Some(s.content_sha256),
    }));
    Ok(StatementList { statements })
}

/// A monthly statement
///
/// The tenant's month: `YYYY-MM` or `YYYY-MM.json` for JSON, `YYYY-MM.csv` for CSV,
/// `YYYY-MM.pdf` for the PDF to file. Issued
/// months are served exactly as issued (`content_sha256` is the SHA-256 of the JSON with that
/// field null); other months are preliminary, computed on read.
#[utoipa::path(
    get,
    path = "/v1/statements/{period}",
    tag = "statements",
    security(("bearer" = [])),
    params(("period" = String, Path, description = "The month, `YYYY-MM`, optionally with `.json`, `.csv` or `.pdf`.")),
    responses(
        (status = 200, description = "The statement (JSON; CSV for `.csv`, PDF for `.pdf`).", body = StatementView),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 401, response = crate::openapi::Unauthorized),
        (status = 403, response = crate::openapi::Forbidden),
        (status = 404, response = crate::openapi::NotFound),
        (status = 429, response = crate::openapi::TooManyRequests),
        (status = 500, response = crate::openapi::InternalError),
    )
)]
#[tracing::instrument(skip_all, fields(period))]
pub(crate) async fn get(
    State(state): State<ApiState>,
    AuthenticatedTenant(scope): AuthenticatedTenant,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(raw) = path?;
    let doc = document(&state, &scope, &raw, UnixMillis::now()).await?;
    tracing::Span::current().record("period", doc.view.period.as_str());
    if doc.format == "json" {
        return Ok(([(CONTENT_TYPE, doc.content_type)], doc.body).into_response());
    }
    let filename = format!(
        "wattprint-statement-{}-{}.{}",
        doc.view.tenant, doc.view.period, doc.format
    );
    Ok(attachment(doc.content_type, &filename, doc.body))
}

/// A document to download: `body` as `content_type`, saved as `filename`.
pub(crate) fn attachment(content_type: &str, filename: &str, body: Vec<u8>) -> Response {
    (
        [
            (CONTENT_TYPE, content_type.to_owned()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// A statement rendered in one format: what REST and gRPC both serve.
pub struct Document {
    /// The statement.
    pub view: StatementView,
    /// `json`, `csv` or `pdf`.
    pub format: &'static str,
    /// Its MIME type.
    pub content_type: &'static str,
    /// Its bytes (JSON: an issued statement's bytes as issued).
    pub body: Vec<u8>,
}

/// The tenant's statement named `name` (`YYYY-MM`, optionally `.json`, `.csv` or `.pdf`) at
/// `now`, rendered.
pub async fn document(
    state: &ApiState,
    scope: &wattprint_core::TenantScope,
    name: &str,
    now: UnixMillis,
) -> Result<Document, ApiError> {
    let (period, format) = match name.rsplit_once('.') {
        Some((p, "csv")) => (p, "csv"),
        Some((p, "pdf")) => (p, "pdf"),
        Some((p, "json")) => (p, "json"),
        Some((_, ext)) => {
            return Err(ApiError::BadRequest(format!(
                "statement format {ext:?} is not json, csv or pdf"
            )))
        }
        None => (name, "json"),
    };
    let period = Period::parse(period).map_err(ApiError::BadRequest)?;
    let join = state.intensity_join().ok();
    let src = state.statement_sources(join.as_deref());
    let served = statement(src, scope, period, now, state.statements).await?;
    let (content_type, body) = match format {
        "csv" => (
            "text/csv; charset=utf-8",
            super::csv::render(&served.view)?.into_bytes(),
        ),
        "pdf" => ("application/pdf", super::pdf::render(&served.view)),
        _ => ("application/json", served.body.into_bytes()),
    };
    Ok(Document {
        view: served.view,
        format,
        content_type,
        body,
    })
}
