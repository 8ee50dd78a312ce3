//! The quarantine in SQLite: input the pipeline refused, kept for an operator to inspect.
//!
//! A unique key over what identifies a refusal makes a redelivered one land once; `seq` is
//! stored as text so any `u64` a refused sample carried is kept exactly.

use super::db_err;
use crate::{QuarantineRecord, StoreError};
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
