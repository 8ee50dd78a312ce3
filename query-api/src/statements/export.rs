//! The operator's export of a month for every tenant, for billing and data warehouses: each
//! tenant's statement exactly as the tenant reads it (issued ones as issued, the others
//! preliminary), stacked as the rows of [`super::table`] in CSV or Parquet.

use wattprint_api_types::StatementView;
use wattprint_core::{TenantScope, UnixMillis};

use super::{statement, tenants, Period, Sources, StatementPolicy};
use crate::error::ApiError;

/// The formats of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// CSV with one header row.
    Csv,
    /// Parquet, one row group.
    Parquet,
}

impl ExportFormat {
    /// The format named by a file extension (`csv`, `parquet`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "csv" => Some(Self::Csv),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// Its file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }

    /// Its MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Every tenant's statement of `period` at `now`, by tenant id.
#[tracing::instrument(skip_all, fields(%period, tenants = tracing::field::Empty))]
pub async fn all_tenants(
    src: Sources<'_>,
    period: Period,
    now: UnixMillis,
    policy: StatementPolicy,
) -> Result<Vec<StatementView>, ApiError> {
    let tenants = tenants(src).await?;
    tracing::Span::current().record("tenants", tenants.len());
    let mut views = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        // Operators read every tenant: the caller checked the role.
        let scope = TenantScope::from_verified(tenant);
        views.push(statement(src, &scope, period, now, policy).await?.view);
    }
    Ok(views)
}

/// Every tenant's statement of `period` at `now`, rendered in `format`.
pub async fn render(
    src: Sources<'_>,
    period: Period,
    now: UnixMillis,
    policy: StatementPolicy,
    format: ExportFormat,
) -> Result<Vec<u8>, ApiError> {
    let mut rows = Vec::new();
    for view in all_tenants(src, period, now, policy).await? {
        rows.extend(super::table::rows(&view)?);
    }
    match format {
        ExportFormat::Csv => Ok(super::csv::render_rows(&rows)?.into_bytes()),
        ExportFormat::Parquet => super::parquet::render_rows(&rows),
    }
}
