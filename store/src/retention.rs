//! Keeping the quarantine bounded: records older than a retention (days) are deleted, and
//! optionally each host keeps at most a number of records (its newest), by a loop a service
//! runs beside its enricher.
//!
//! SQLite deletes in one transaction. ClickHouse runs `ALTER TABLE quarantine DELETE` (a
//! mutation, asynchronous, issued only when a count finds rows due) on every server; on
//! servers ≥ 23.8 the table also gets a TTL of the retention, so the server drops expired
//! rows in its merges even when no loop runs. Replay (`wattprint quarantine replay`) reads
//! what is kept, as before. A failed round is logged and retried the next one.

use crate::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::UnixMillis;

/// Days a quarantined record is kept by default.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Longest retention accepted (100 years: longer is a typo, not a policy).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// How often the loop prunes by default.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3_600);

const DAY_MS: i64 = 86_400_000;

/// How long, and how much, the quarantine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantineRetention {
    /// Records received more than this many days ago are deleted (1 to
    /// [`MAX_RETENTION_DAYS`]).
    pub days: u32,
    /// At most this many records per host, its newest (`None`: no cap).
    pub max_per_host: Option<u64>,
}

impl Default for QuarantineRetention {
    fn default() -> Self {
        Self {
            days: DEFAULT_RETENTION_DAYS,
            max_per_host: None,
        }
    }
}

impl QuarantineRetention {
    /// Records received before this time are due for deletion at `now`.
    pub fn cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(
            now.0
                .saturating_sub(i64::from(self.days).saturating_mul(DAY_MS)),
        )
    }
}

/// What one pruning round deleted (ClickHouse: rows its mutations were issued for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuarantinePrune {
    /// Records past the retention.
    pub expired: u64,
    /// Records beyond a host's cap.
    pub over_cap: u64,
}

/// Prunes the quarantine by `rules` now, then every `every`, until `shutdown` completes.
pub async fn keep_bounded(
    store: Arc<dyn Store>,
    rules: QuarantineRetention,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let now = UnixMillis(crate::sqlite::now_ms());
        match store.prune_quarantine(&rules, now).await {
            Ok(p) if p.expired + p.over_cap > 0 => {
                tracing::info!(
                    expired = p.expired,
                    over_cap = p.over_cap,
                    "quarantine pruned"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "pruning the quarantine failed; retrying next round");
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    #[test]
    fn cutoff_is_days_before_now() {
        let r = QuarantineRetention {
            days: 2,
            max_per_host: None,
        };
        assert_eq!(r.cutoff(UnixMillis(3 * DAY_MS)), UnixMillis(DAY_MS));
        assert_eq!(QuarantineRetention::default().days, 30);
    }

    #[tokio::test]
    async fn rounds_run_until_shutdown() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let stop = tokio::time::sleep(Duration::from_millis(30));
        tokio::time::timeout(
            Duration::from_secs(5),
            keep_bounded(
                store,
                QuarantineRetention::default(),
                Duration::from_millis(5),
                stop,
            ),
        )
        .await
        .expect("keep_bounded returns once shutdown completes");
    }
}
