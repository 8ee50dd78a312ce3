//! Issued statements in ClickHouse: a `ReplacingMergeTree` keyed by (tenant, period) whose
//! version falls as the computation time rises, so the earliest-computed issue is the one
//! `FINAL` reads, whichever insert lands last. An issuer that finds the month issued stores
//! nothing; one that raced another gets the winner back.

use super::{ch_err, ClickHouseStore};
use crate::{IssuedStatement, StoreError};
use ::clickhouse::Row;
use serde::{Deserialize, Serialize};
use wattprint_core::{TenantId, UnixMillis};

/// A `statements` row.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub(crate) struct StoredStatement {
    pub tenant: String,
    pub period: String,
    pub issued_at_ms: i64,
    pub computed_at_ms: i64,
    pub content_sha256: String,
    pub body: String,
    pub version: u64,
}

impl StoredStatement {
    fn decode(self) -> IssuedStatement {
        IssuedStatement {
            tenant: TenantId(self.tenant),
            period: self.period,
            issued_at: UnixMillis(self.issued_at_ms),
            computed_at: UnixMillis(self.computed_at_ms),
            content_sha256: self.content_sha256,
            body: self.body,
        }
    }
}

impl ClickHouseStore {
    pub(super) async fn insert_statement(
        &self,
        s: &IssuedStatement,
    ) -> Result<IssuedStatement, StoreError> {
        const OP: &str = "issuing a statement";
        if let Some(stored) = self
            .load_statements(&s.tenant, Some(&s.period))
            .await?
            .pop()
        {
            return Ok(stored);
        }
        let row = StoredStatement {
            tenant: s.tenant.0.clone(),
            period: s.period.clone(),
            issued_at_ms: s.issued_at.0,
            computed_at_ms: s.computed_at.0,
            content_sha256: s.content_sha256.clone(),
            body: s.body.clone(),
            version: u64::MAX - u64::try_from(s.computed_at.0).unwrap_or(0),
        };
        self.insert("statements", &[row], OP).await?;
        self.load_statements(&s.tenant, Some(&s.period))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Backend {
                op: OP,
                source: "the statement just inserted cannot be read back".into(),
            })
    }

    pub(super) async fn load_statements(
        &self,
        tenant: &TenantId,
        period: Option<&str>,
    ) -> Result<Vec<IssuedStatement>, StoreError> {
        let sql = format!(
            "SELECT ?fields FROM statements FINAL WHERE tenant = ? {} ORDER BY period DESC",
            if period.is_some() {
                "AND period = ?"
            } else {
                ""
            }
        );
        let mut q = self.client.query(&sql).bind(tenant.as_str());
        if let Some(p) = period {
            q = q.bind(p);
        }
        let rows: Vec<StoredStatement> =
            q.fetch_all().await.map_err(ch_err("reading statements"))?;
        Ok(rows.into_iter().map(StoredStatement::decode).collect())
    }
}
