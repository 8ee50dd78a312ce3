//! The quarantine in SQLite: input the pipeline refused, kept for an operator to inspect.
//!
//! A unique key over what identifies a refusal makes a redelivered one land once; `seq` is
//! stored as text so any `u64` a refused sample carried is kept exactly. Records past the
//! retention, and a host's beyond its cap, are deleted by [`prune_quarantine`].

use super::db_err;
use crate::{QuarantinePrune, QuarantineRecord, QuarantineRetention, StoreError};
use rusqlite::{params, Connection, TransactionBehavior};
use wattprint_core::{GpuUuid, HostId, UnixMillis};

/// Holds refused input; a redelivered refusal is kept once (its first copy).
pub(super) fn write_quarantine(
    conn: &mut Connection,
    records: &[QuarantineRecord],
) -> Result<(), StoreError> {
    const OP: &str = "writing quarantine";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    {
        let mut stmt = tx
            .prepare_cached(
                // A redelivered refusal is held once: the first copy stays.
                "INSERT OR IGNORE INTO quarantine \
                 (received_at_ms, host, gpu_uuid, seq, reason, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err(OP))?;
        for r in records {
            // Text, so any u64 a refused sample carried is kept exactly.
            let seq = r.seq.map(|s| s.to_string());
            stmt.execute(params![
                r.received_at.0,
                r.host.as_str(),
                r.gpu.as_ref().map(GpuUuid::as_str),
                seq,
                r.reason,
                r.payload
            ])
            .map_err(db_err(OP))?;
        }
    }
    tx.commit().map_err(db_err(OP))
}

/// Deletes, in one transaction, the records received before the retention's cutoff (by the
/// time index) and, with a cap, each host's records beyond its newest `max_per_host`.
pub(super) fn prune_quarantine(
    conn: &mut Connection,
    rules: &QuarantineRetention,
    now: UnixMillis,
) -> Result<QuarantinePrune, StoreError> {
    const OP: &str = "pruning quarantine";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let expired = tx
        .execute(
            "DELETE FROM quarantine WHERE received_at_ms < ?1",
            [rules.cutoff(now).0],
        )
        .map_err(db_err(OP))?;
    let over_cap = match rules.max_per_host {
        None => 0,
        Some(cap) => tx
            .execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM ( \
                     SELECT id, row_number() OVER ( \
                         PARTITION BY host ORDER BY received_at_ms DESC, id DESC) AS nth \
                     FROM quarantine) WHERE nth > ?1)",
                [i64::try_from(cap).unwrap_or(i64::MAX)],
            )
            .map_err(db_err(OP))?,
    };
    tx.commit().map_err(db_err(OP))?;
    Ok(QuarantinePrune {
        expired: expired as u64,
        over_cap: over_cap as u64,
    })
}

/// The newest `limit` quarantined records, newest first.
pub(super) fn load_quarantine(
    conn: &mut Connection,
    limit: u32,
) -> Result<Vec<QuarantineRecord>, StoreError> {
    const OP: &str = "reading quarantine";
    type RawRow = (i64, String, Option<String>, Option<String>, String, String);
    let mut stmt = conn
        .prepare_cached(
            "SELECT received_at_ms, host, gpu_uuid, seq, reason, payload FROM quarantine \
             ORDER BY received_at_ms DESC, id DESC LIMIT ?1",
        )
        .map_err(db_err(OP))?;
    let rows = stmt
        .query_map([limit], |r| -> rusqlite::Result<RawRow> {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    rows.into_iter()
        .map(|(at, host, gpu, seq, reason, payload)| {
            let seq = seq
                .map(|s| {
                    s.parse::<u64>().map_err(|_| StoreError::Corrupt {
                        table: "quarantine",
                        detail: format!("seq {s:?} is not an unsigned integer"),
                    })
                })
                .transpose()?;
            Ok(QuarantineRecord {
                received_at: UnixMillis(at),
                host: HostId(host),
                gpu: gpu.map(GpuUuid),
                seq,
                reason,
                payload,
            })
        })
        .collect()
}

/// [`crate::Store::quarantine_counts`]: records by refusal kind (each row is one record: a
/// redelivered refusal is kept once).
pub(super) fn count_quarantine(
    conn: &mut Connection,
) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
    const OP: &str = "counting quarantine";
    let kind = crate::refusal_kind_sql(|c, n| format!("instr({c}, {n}) > 0"), "reason");
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {kind} AS kind, count(*) FROM quarantine GROUP BY kind"
        ))
        .map_err(db_err(OP))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    Ok(rows
        .into_iter()
        .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
        .collect())
}
