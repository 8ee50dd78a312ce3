//! Keeping the quarantine and the raw samples bounded, by a loop a service runs beside its
//! enricher: quarantine records older than a retention (days) are deleted, and optionally each
//! host keeps at most a number of records (its newest); raw samples older than their own
//! retention are deleted while their 5-minute intervals, rollups and statements stay, so no
//! total changes. The sample retention is longer than the lateness limit
//! ([`SampleLimits::max_age_ms`]), so a redelivery of a pruned sample is refused for its age
//! before a store could take it for new. Restatement records (the history of intervals whose
//! intensity was replaced) are kept for their own retention, by the interval's time; the
//! intervals keep their restated values, so no total changes either.
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
use wattprint_core::sample::SampleLimits;
use wattprint_core::UnixMillis;

/// Days a quarantined record is kept by default.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// Longest retention accepted (100 years: longer is a typo, not a policy).
pub const MAX_RETENTION_DAYS: u32 = 36_500;
/// Days raw samples are kept by default.
pub const DEFAULT_SAMPLE_RETENTION_DAYS: u32 = 35;

/// How long raw samples are kept: the lateness limit plus a day, at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRetention {
    /// Samples that ended more than this many days ago are deleted.
    pub days: u32,
}

impl Default for SampleRetention {
    fn default() -> Self {
        Self {
            days: DEFAULT_SAMPLE_RETENTION_DAYS,
        }
    }
}

impl SampleRetention {
    /// The shortest retention accepted: a day more than the lateness limit.
    pub fn min_days() -> u32 {
        let limit = SampleLimits::default().max_age_ms;
        u32::try_from(limit.div_euclid(DAY_MS) + 1 + i64::from(limit % DAY_MS != 0))
            .unwrap_or(u32::MAX)
    }

    /// Samples that ended before this time are due for deletion at `now`.
    pub fn cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(
            now.0
                .saturating_sub(i64::from(self.days).saturating_mul(DAY_MS)),
        )
    }
}

/// Days restatement records are kept by default (13 months: a year of history and the
/// adjustment window of the statements issued in it).
pub const DEFAULT_RESTATEMENT_RETENTION_DAYS: u32 = 400;

/// How long restatement records are kept, by the restated interval's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestatementRetention {
    /// Records of intervals that began more than this many days ago are deleted.
    pub days: u32,
}

impl Default for RestatementRetention {
    fn default() -> Self {
        Self {
            days: DEFAULT_RESTATEMENT_RETENTION_DAYS,
        }
    }
}

impl RestatementRetention {
    /// The shortest retention accepted: a month and a day (intensity is restated within
    /// days; a month's records stay readable beside its statement).
    pub const MIN_DAYS: u32 = 32;

    /// Records of intervals before this time are due for deletion at `now`.
    pub fn cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(
            now.0
                .saturating_sub(i64::from(self.days).saturating_mul(DAY_MS)),
        )
    }
}

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

/// Prunes the quarantine by `rules`, the raw samples by `samples` and the restatement records
/// by `restatements` now, then every `every`, until `shutdown` completes.
pub async fn keep_bounded(
    store: Arc<dyn Store>,
    rules: QuarantineRetention,
    samples: SampleRetention,
    restatements: RestatementRetention,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let now = UnixMillis(crate::sqlite::now_ms());
        match store.prune_restatements(restatements.cutoff(now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                days = restatements.days,
                "restatement records pruned"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "pruning restatement records failed; retrying next round");
            }
        }
        match store.prune_samples(&samples, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(samples = n, days = samples.days, "raw samples pruned"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning raw samples failed; retrying next round");
            }
        }
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

    #[test]
    fn samples_outlive_the_lateness_limit() {
        // 30 days of lateness: 31 days at least, 35 by default.
        assert_eq!(SampleRetention::min_days(), 31);
        assert!(SampleRetention::default().days >= SampleRetention::min_days());
        let r = SampleRetention { days: 31 };
        assert_eq!(r.cutoff(UnixMillis(40 * DAY_MS)), UnixMillis(9 * DAY_MS));
    }

    #[test]
    fn restatements_are_kept_by_their_interval_time() {
        let r = RestatementRetention { days: 32 };
        assert_eq!(r.cutoff(UnixMillis(40 * DAY_MS)), UnixMillis(8 * DAY_MS));
        assert!(RestatementRetention::default().days >= RestatementRetention::MIN_DAYS);
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
                SampleRetention::default(),
                RestatementRetention::default(),
                Duration::from_millis(5),
                stop,
            ),
        )
        .await
        .expect("keep_bounded returns once shutdown completes");
    }
}
