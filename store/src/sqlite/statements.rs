//! Issued statements in SQLite: `INSERT OR IGNORE` on (tenant, period) makes the first issue
//! win, in one transaction with the read-back.

use super::db_err;
use crate::{IssuedStatement, StoreError};
use rusqlite::{params, Connection, TransactionBehavior};
use wattprint_core::{TenantId, UnixMillis};

const COLUMNS: &str = "tenant, period, issued_at_ms, computed_at_ms, content_sha256, body";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IssuedStatement> {
    Ok(IssuedStatement {
        tenant: TenantId(r.get(0)?),
        period: r.get(1)?,
        issued_at: UnixMillis(r.get(2)?),
        computed_at: UnixMillis(r.get(3)?),
        content_sha256: r.get(4)?,
        body: r.get(5)?,
    })
}

pub(super) fn issue(
    conn: &mut Connection,
    s: &IssuedStatement,
) -> Result<IssuedStatement, StoreError> {
    const OP: &str = "issuing a statement";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    tx.execute(
        &format!("INSERT OR IGNORE INTO statements ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            s.tenant.as_str(),
            s.period,
            s.issued_at.0,
            s.computed_at.0,
            s.content_sha256,
            s.body
        ],
    )
    .map_err(db_err(OP))?;
    let stored = tx
        .query_row(
            &format!("SELECT {COLUMNS} FROM statements WHERE tenant = ?1 AND period = ?2"),
            params![s.tenant.as_str(), s.period],
            row,
        )
        .map_err(db_err(OP))?;
    tx.commit().map_err(db_err(OP))?;
    Ok(stored)
}

pub(super) fn load(
    conn: &Connection,
    tenant: &TenantId,
    period: Option<&str>,
) -> Result<Vec<IssuedStatement>, StoreError> {
    const OP: &str = "reading statements";
    let sql = format!(
        "SELECT {COLUMNS} FROM statements WHERE tenant = ?1 {} ORDER BY period DESC",
        if period.is_some() {
            "AND period = ?2"
        } else {
            ""
        }
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err(OP))?;
    let rows = match period {
        Some(p) => stmt.query_map(params![tenant.as_str(), p], row),
        None => stmt.query_map(params![tenant.as_str()], row),
    }
    .map_err(db_err(OP))?;
    rows.collect::<Result<_, _>>().map_err(db_err(OP))
}
