//! Issued monthly statements: stored once per tenant and month and never changed.
//!
//! The content is rendered and hashed by the query API; the store keeps the bytes and enforces
//! the one rule that makes a statement a statement: the first issue of a tenant's month wins,
//! and every later attempt (another replica, a retry) gets the stored one back unchanged.

use serde::{Deserialize, Serialize};
use wattprint_core::{TenantId, UnixMillis};

/// A statement as issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedStatement {
    /// Owner.
    pub tenant: TenantId,
    /// The month, `YYYY-MM` (UTC).
    pub period: String,
    /// When it was issued (the scheduled issue time: the month's end plus the grace).
    pub issued_at: UnixMillis,
    /// When its numbers were computed; among concurrent issuers the earliest computation wins.
    pub computed_at: UnixMillis,
    /// SHA-256 of `body`, hex.
    pub content_sha256: String,
    /// The statement's JSON.
    pub body: String,
}

/// Checks a period is `YYYY-MM` with a month 01–12 (what every store keys on).
pub fn check_period(period: &str) -> Result<(), crate::StoreError> {
    let ok = period.len() == 7
        && period.as_bytes()[4] == b'-'
        && period[..4].bytes().all(|b| b.is_ascii_digit())
        && period[5..]
            .parse::<u8>()
            .is_ok_and(|m| (1..=12).contains(&m));
    if ok {
        Ok(())
    } else {
        Err(crate::StoreError::Invalid(format!(
            "statement period {period:?} is not YYYY-MM"
        )))
    }
}
