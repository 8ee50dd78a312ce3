//! The quarantine in ClickHouse: input the pipeline refused, kept for an operator.
//!
//! Rows are only appended; a redelivered refusal is stored again and read once, its first
//! copy, so the result matches the SQLite store's.

use super::rows::StoredQuarantine;
use super::ClickHouseStore;
use crate::{QuarantineRecord, StoreError};

impl ClickHouseStore {
    /// Holds refused input, each record stamped with a strictly increasing write time.
    pub(super) async fn insert_quarantine(
        &self,
        records: &[QuarantineRecord],
    ) -> Result<(), StoreError> {
        let written_ns = self.tick();
        let rows: Vec<StoredQuarantine> = (0u32..)
            .zip(records)
            .map(|(pos, r)| StoredQuarantine::encode(r, written_ns, pos))
            .collect();
        self.insert("quarantine", &rows, "writing quarantine").await
    }

    /// The newest `limit` held refusals, each redelivered one once (its first copy).
    pub(super) async fn read_quarantine(
        &self,
        limit: u32,
    ) -> Result<Vec<QuarantineRecord>, StoreError> {
        let q = self
            .client
            .query(
                // A redelivered refusal is read once, its first copy (as SQLite keeps it).
                "SELECT ?fields FROM (SELECT * FROM quarantine \
                 ORDER BY received_at_ms, written_ns, position \
                 LIMIT 1 BY host, gpu_uuid, seq, payload) \
                 ORDER BY received_at_ms DESC, written_ns DESC, position DESC LIMIT ?",
            )
            .bind(limit);
        let rows: Vec<StoredQuarantine> = self.fetch(q, "reading quarantine").await?;
        Ok(rows.into_iter().map(StoredQuarantine::decode).collect())
    }
}
