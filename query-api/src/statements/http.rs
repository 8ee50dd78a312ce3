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

use super::{statement, Period, Sources};
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
    let issued = state
        .store
        .issued_statements(&scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no statement".into()))?;
    let now = UnixMillis::now();
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
    Ok(Json(StatementList { statements }))
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
    let (name, format) = match raw.rsplit_once('.') {
        Some((name, ext @ ("csv" | "pdf" | "json"))) => (name, ext),
        Some((_, ext)) => {
            return Err(ApiError::BadRequest(format!(
                "statement format {ext:?} is not json, csv or pdf"
            )))
        }
        None => (raw.as_str(), "json"),
    };
    let period = Period::parse(name).map_err(ApiError::BadRequest)?;
    tracing::Span::current().record("period", name);
    let join = state.intensity_join().ok();
    let src = Sources {
        store: state.store.as_ref(),
        catalog: &state.catalog,
        join: join.as_deref(),
    };
    let served = statement(src, &scope, period, UnixMillis::now(), state.statements).await?;
    let (content_type, body): (&str, Vec<u8>) = match format {
        "csv" => (
            "text/csv; charset=utf-8",
            super::csv::render(&served.view)?.into_bytes(),
        ),
        "pdf" => ("application/pdf", super::pdf::render(&served.view)),
        _ => return Ok(([(CONTENT_TYPE, "application/json")], served.body).into_response()),
    };
    let disposition = format!(
        "attachment; filename=\"wattprint-statement-{}-{period}.{format}\"",
        served.view.tenant
    );
    Ok((
        [
            (CONTENT_TYPE, content_type.to_owned()),
            (CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}
