//! The quarantine in ClickHouse: input the pipeline refused, kept for an operator.
//!
//! Rows are only appended; a redelivered refusal is stored again and read once, its first
//! copy, so the result matches the SQLite store's.
//!
//! Bounded by [`ClickHouseStore::prune_held`]: a count first (the primary key starts with the
//! receive time), then an `ALTER TABLE … DELETE` mutation only when rows are due, so an idle
//! round costs one small query. Servers ≥ 23.8 also get a TTL of the retention (set once per
//! process, without rewriting existing parts), so expired rows go in merges even where no
//! loop runs; 18.16 has no TTL. A host's cap counts records as reads do (a redelivered copy
//! is not another record) and deletes the host's rows older than its `cap`-th newest record.

use super::rows::StoredQuarantine;
use super::{ch_err, ClickHouseStore};
use crate::{QuarantinePrune, QuarantineRecord, QuarantineRetention, StoreError};
use std::sync::atomic::Ordering;
use wattprint_core::UnixMillis;

/// Each held refusal once, its first copy (as reads see them), with its host and time.
const FIRST_COPIES: &str = "SELECT host, received_at_ms FROM quarantine \
     ORDER BY received_at_ms, written_ns, position LIMIT 1 BY host, gpu_uuid, seq, payload";

/// The TTL clause of a `days` retention (modern servers only).
fn ttl_sql(days: u32) -> String {
    format!(
        "ALTER TABLE quarantine MODIFY TTL \
         toDateTime(intDiv(received_at_ms, 1000)) + toIntervalDay({days})"
    )
}

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

    /// [`crate::Store::quarantine_counts`]: held refusals by kind, each redelivered one once.
    pub(super) async fn count_quarantine(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let kind = crate::refusal_kind_sql(|c, n| format!("position({c}, {n}) > 0"), "reason");
        let counts: Vec<(String, u64)> = self
            .client
            .query(&format!(
                "SELECT {kind} AS kind, count() AS n FROM (SELECT reason FROM quarantine \
                 ORDER BY received_at_ms, written_ns, position \
                 LIMIT 1 BY host, gpu_uuid, seq, payload) GROUP BY kind"
            ))
            .fetch_all()
            .await
            .map_err(ch_err("counting quarantine"))?;
        Ok(counts.into_iter().collect())
    }

    /// [`crate::Store::prune_quarantine`]: issues the deletes (mutations complete shortly
    /// after, in the background) and returns how many rows they cover.
    pub(super) async fn prune_held(
        &self,
        rules: &QuarantineRetention,
        now: UnixMillis,
    ) -> Result<QuarantinePrune, StoreError> {
        const OP: &str = "pruning quarantine";
        if self.modern && self.quarantine_ttl_days.load(Ordering::Relaxed) != rules.days {
            self.client
                .query(&ttl_sql(rules.days))
                .with_option("materialize_ttl_after_modify", "0")
                .execute()
                .await
                .map_err(ch_err(OP))?;
            self.quarantine_ttl_days
                .store(rules.days, Ordering::Relaxed);
        }
        let cutoff = rules.cutoff(now).0;
        let expired: u64 = self
            .client
            .query("SELECT count() FROM quarantine WHERE received_at_ms < ?")
            .bind(cutoff)
            .fetch_one()
            .await
            .map_err(ch_err(OP))?;
        if expired > 0 {
            self.client
                .query("ALTER TABLE quarantine DELETE WHERE received_at_ms < ?")
                .bind(cutoff)
                .execute()
                .await
                .map_err(ch_err(OP))?;
        }
        let over_cap = match rules.max_per_host {
            Some(cap) => self.cap_hosts(cap, cutoff).await?,
            None => 0,
        };
        Ok(QuarantinePrune { expired, over_cap })
    }

    /// Deletes, per host holding more than `cap` records received at or after `cutoff`, its
    /// rows older than its `cap`-th newest record. Returns the records deleted.
    async fn cap_hosts(&self, cap: u64, cutoff: i64) -> Result<u64, StoreError> {
        const OP: &str = "capping quarantine per host";
        let crowded: Vec<(String, u64)> = self
            .client
            .query(&format!(
                "SELECT toString(host) AS h, count() AS n FROM ({FIRST_COPIES}) \
                 WHERE received_at_ms >= ? GROUP BY h HAVING n > ? ORDER BY h"
            ))
            .bind(cutoff)
            .bind(cap)
            .fetch_all()
            .await
            .map_err(ch_err(OP))?;
        let mut deleted = 0;
        for (host, rows) in crowded {
            // The cap-th newest row's time: rows older go (rows at that very time all stay).
            let keep_from: i64 = self
                .client
                .query(&format!(
                    "SELECT received_at_ms FROM ({FIRST_COPIES}) WHERE host = ? \
                     ORDER BY received_at_ms DESC LIMIT ?, 1"
                ))
                .bind(host.as_str())
                .bind(cap.saturating_sub(1))
                .fetch_one()
                .await
                .map_err(ch_err(OP))?;
            self.client
                .query("ALTER TABLE quarantine DELETE WHERE host = ? AND received_at_ms < ?")
                .bind(host.as_str())
                .bind(keep_from)
                .execute()
                .await
                .map_err(ch_err(OP))?;
            tracing::debug!(host, rows, cap, "quarantine capped");
            deleted += rows - cap;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_the_retention_in_days() {
        assert!(ttl_sql(30).ends_with("+ toIntervalDay(30)"));
    }
}
