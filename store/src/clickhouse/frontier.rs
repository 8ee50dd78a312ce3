//! Each GPU's write frontier: the highest `seq` and the latest span end stored for it.
//!
//! A sample beyond its GPU's frontier (a higher `seq`, starting at or after the stored end)
//! cannot duplicate, conflict with or overlap anything stored: a sample's span is written
//! before anything else of it, and `gpu_frontier` (schema version 10) is fed by a view on
//! `gpu_spans`, so it covers every stored span whoever wrote it. A batch's GPUs whose samples
//! all lie beyond the frontier skip the read-before-write lookups; the others are decided
//! against the store as before. Agents number samples upwards across restarts, so in steady
//! state every GPU is beyond, and a batch costs one narrow read of `gpu_frontier`.
//!
//! The frontier is read for every batch, never cached: a process that wrote a GPU a second ago
//! still sees what another writer stored since (a consumer-group rebalance), so the guarantees
//! are those of the full lookups, including the race the module docs of `clickhouse.rs`
//! describe.

use super::ClickHouseStore;
use crate::{EnrichedSample, StoreError};
use clickhouse::Row;
use serde::Deserialize;
use std::collections::HashMap;
use wattprint_core::sample::EnergySample;

/// GPUs per frontier lookup.
const GPUS_PER_QUERY: usize = 500;

/// What is stored of one GPU: its highest `seq` and latest span end (`None`: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Frontier(Option<(u64, i64)>);

impl Frontier {
    /// Whether `s` lies beyond everything stored of its GPU.
    pub(crate) fn is_beyond(self, s: &EnergySample) -> bool {
        self.admits(s.seq, s.start.0)
    }

    fn admits(self, seq: u64, start_ms: i64) -> bool {
        self.0
            .is_none_or(|(stored_seq, end_ms)| seq > stored_seq && start_ms >= end_ms)
    }
}

#[derive(Row, Deserialize)]
struct FrontierRow {
    gpu_uuid: String,
    seq: u64,
    end_ms: i64,
}

impl ClickHouseStore {
    /// The frontier of every GPU in `batch` (absent: nothing stored of it).
    pub(super) async fn frontiers_of(
        &self,
        batch: &[&EnrichedSample],
        op: &'static str,
    ) -> Result<HashMap<String, Frontier>, StoreError> {
        let mut gpus: Vec<&str> = batch.iter().map(|es| es.sample.gpu.as_str()).collect();
        gpus.sort_unstable();
        gpus.dedup();
        let mut out = HashMap::new();
        for chunk in gpus.chunks(GPUS_PER_QUERY) {
            let sql = format!(
                "SELECT gpu_uuid, maxMerge(max_seq) AS seq, maxMerge(max_end) AS end_ms \
                 FROM gpu_frontier WHERE gpu_uuid IN ({}) GROUP BY gpu_uuid",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = self.client.query(&sql);
            for gpu in chunk {
                q = q.bind(*gpu);
            }
            for r in self.fetch::<FrontierRow>(q, op).await? {
                out.insert(r.gpu_uuid, Frontier(Some((r.seq, r.end_ms))));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_needs_both_a_higher_seq_and_a_later_start() {
        let f = Frontier(Some((10, 5_000)));
        assert!(f.admits(11, 5_000));
        assert!(!f.admits(10, 5_000), "same seq");
        assert!(!f.admits(9, 6_000), "lower seq, later");
        assert!(!f.admits(11, 4_999), "overlaps the end");
        assert!(Frontier::default().admits(0, 0), "nothing stored");
    }
}
