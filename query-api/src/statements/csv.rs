//! A statement as CSV for spreadsheets and data warehouses: the rows of [`super::table`] under
//! one header row, so statements of many tenants stack in one file (the operator's export).
//! Numbers are printed with Rust's shortest round-trip formatting; no value is an empty cell.

use super::table::{Cell, COLUMNS};
use wattprint_api_types::StatementView;

use crate::error::ApiError;

/// Renders `view` as CSV with a header row.
pub fn render(view: &StatementView) -> Result<String, ApiError> {
    render_rows(&super::table::rows(view)?)
}

/// Renders table rows (of one or many statements) as CSV with a header row.
pub fn render_rows(rows: &[Vec<Cell>]) -> Result<String, ApiError> {
    let fail = |e: csv::Error| ApiError::Internal(format!("rendering a statement as CSV: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS.iter().map(|(name, _)| name))
        .map_err(fail)?;
    for row in rows {
        w.write_record(row.iter().map(|cell| match cell {
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Float(f) => f.to_string(),
            Cell::Null => String::new(),
        }))
        .map_err(fail)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::Internal(format!("rendering a statement as CSV: {e}")))?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(format!("statement CSV: {e}")))
}
