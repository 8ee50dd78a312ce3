//! Daily rollups: the hourly protocol of `clickhouse/rollups.rs` at the grain of a UTC day, so
//! a month reads about 30 rows per GPU instead of 720.
//!
//! `rollup_daily` rows are computed from `shares FINAL` like the hourly ones and stamped with
//! the day's write count from `rollup_marks_daily`, read **before** the shares (every shares
//! insert marks its days through the `shares_rollup_marks_daily` view, schema version 11). A
//! day is read from its rollup only while every instance's stamp equals the day's count; any
//! write since (a late sample, a restatement) sends the whole day back to the hourly and
//! 5-minute tiers until it is recomputed. Which days a summary reads here is fixed by one
//! query before the summary's own, so no day is read from two tiers.

use super::rollups::{moved_past, RecomputeJob, DAILY};
use super::schema::DAY_MS;
use super::ClickHouseStore;
use crate::StoreError;
use ::clickhouse::Row;
use serde::Deserialize;
use std::collections::BTreeSet;
use wattprint_core::TenantId;

/// Start of the UTC day containing `t`.
pub(crate) fn floor_day(t: i64) -> i64 {
    t.div_euclid(DAY_MS).saturating_mul(DAY_MS)
}

/// Start of the first UTC day starting at or after `t`.
pub(crate) fn ceil_day(t: i64) -> i64 {
    let f = floor_day(t);
    if f == t {
        f
    } else {
        f.saturating_add(DAY_MS)
    }
}

/// A `(tenant, instance, day)` whose daily rollup is missing or stale, with its write count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Row, Deserialize)]
pub(crate) struct StaleDay {
    tenant: String,
    instance_id: String,
    day_ms: i64,
    writes: u64,
}

/// SQL selecting stale `(tenant, instance, day)`s with their write counts, days in `[?, ?)`,
/// `tenant_filter` applied to both tables (placeholders: filter values then the two bounds,
/// for each table); `tenant_filter` names key columns only (a `PREWHERE` on `rollup_daily`,
/// as in `stale_sql`).
fn stale_days_sql(tenant_filter: &str) -> String {
    format!(
        "SELECT tenant, instance_id, day_ms, m_writes FROM ( \
             SELECT tenant, instance_id, day_ms, sum(writes) AS m_writes FROM rollup_marks_daily \
             WHERE {tenant_filter} AND day_ms >= ? AND day_ms < ? \
             GROUP BY tenant, instance_id, day_ms \
         ) AS marked ANY LEFT JOIN ( \
             SELECT tenant, instance_id, day_ms, \
                 min(writes_seen) AS r_lo, max(writes_seen) AS r_hi \
             FROM rollup_daily FINAL \
             PREWHERE {tenant_filter} AND day_ms >= ? AND day_ms < ? \
             GROUP BY tenant, instance_id, day_ms \
         ) AS rolled USING (tenant, instance_id, day_ms) \
         WHERE r_lo != m_writes OR r_hi != m_writes"
    )
}

/// The longest run of consecutive days in `[d1, d2)` none of which is in `stale`.
fn longest_fresh_run(d1: i64, d2: i64, stale: &BTreeSet<i64>) -> Option<(i64, i64)> {
    let mut best: Option<(i64, i64)> = None;
    let mut start = d1;
    let mut cut = |start: i64, end: i64| {
        let len = |a: i64, b: i64| i128::from(b) - i128::from(a);
        if end > start && best.is_none_or(|(a, b)| len(start, end) > len(a, b)) {
            best = Some((start, end));
        }
    };
    for &day in stale.range(d1..d2) {
        cut(start, day);
        start = day.saturating_add(DAY_MS);
    }
    cut(start, d2);
    best
}

impl ClickHouseStore {
    async fn stale_days(
        &self,
        tenant: Option<&TenantId>,
        d1: i64,
        d2: i64,
    ) -> Result<Vec<StaleDay>, StoreError> {
        const OP: &str = "finding stale daily rollups";
        let filter = if tenant.is_some() {
            "tenant = ?"
        } else {
            "1 = 1"
        };
        let sql = format!(
            "{} ORDER BY tenant, day_ms, instance_id",
            stale_days_sql(filter)
        );
        let mut q = self.client.query(&sql);
        for _ in 0..2 {
            if let Some(t) = tenant {
                q = q.bind(t.as_str());
            }
            q = q.bind(d1).bind(d2);
        }
        self.fetch(q, OP).await
    }

    /// The days of `tenant` a summary over whole days `[d1, d2)` reads from daily rollups: the
    /// longest run of days whose every instance has a fresh rollup (days without data count as
    /// fresh: there is nothing to read), or None.
    pub(super) async fn fresh_days(
        &self,
        tenant: &TenantId,
        d1: i64,
        d2: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        if d1 >= d2 {
            return Ok(None);
        }
        let stale: BTreeSet<i64> = self
            .stale_days(Some(tenant), d1, d2)
            .await?
            .into_iter()
            .map(|s| s.day_ms)
            .collect();
        Ok(longest_fresh_run(d1, d2, &stale))
    }

    /// Recomputes the given days from `shares FINAL`, stamped with the counts they carry.
    pub(super) async fn recompute_days(&self, stale: &[StaleDay]) -> Result<(), StoreError> {
        let jobs: Vec<RecomputeJob<'_>> = stale
            .iter()
            .map(|s| {
                (
                    s.tenant.as_str(),
                    s.instance_id.as_str(),
                    s.day_ms,
                    s.writes,
                )
            })
            .collect();
        self.recompute_into(&DAILY, &jobs).await
    }

    /// Recomputes every stale daily rollup of the days that end by `to` and overlap the day
    /// before `from` or later (a refresh window of a few hours still closes yesterday), a
    /// day at a time. Returns how many `(tenant, instance, day)`s it recomputed.
    pub(super) async fn refresh_days(&self, from: i64, to: i64) -> Result<u64, StoreError> {
        const OP: &str = "refreshing daily rollups";
        let (mut day, end) = (floor_day(from.saturating_sub(DAY_MS)), floor_day(to));
        let mut done = 0u64;
        while day < end {
            let Some(next) = self
                .next_marked("rollup_marks_daily", "day_ms", day, end, OP)
                .await?
            else {
                break;
            };
            day = next.max(day);
            let stale = self
                .stale_days(None, day, day.saturating_add(DAY_MS))
                .await?;
            self.recompute_days(&stale).await?;
            done += stale.len() as u64;
            day = day.saturating_add(DAY_MS);
        }
        Ok(done)
    }

    /// After a write: recomputes, per `(tenant, instance)`, the days before the latest one the
    /// write touched (`touched` holds hours). Failures are logged: a stale rollup is never read.
    pub(super) async fn roll_up_passed_days(&self, touched: &BTreeSet<(String, String, i64)>) {
        // A day's recompute takes every stale instance of it: the days alone are the jobs.
        let passed: BTreeSet<i64> = moved_past(touched, floor_day)
            .into_iter()
            .map(|(_, _, day)| day)
            .collect();
        for day in passed {
            let result = async {
                let stale = self.stale_days(None, day, day + DAY_MS).await?;
                self.recompute_days(&stale).await
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, day, "daily rollup recompute after a write failed; the day reads from hourly data until refreshed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_both_ways() {
        assert_eq!(floor_day(DAY_MS + 1), DAY_MS);
        assert_eq!(ceil_day(DAY_MS + 1), 2 * DAY_MS);
        assert_eq!(ceil_day(DAY_MS), DAY_MS);
        assert_eq!(floor_day(-1), -DAY_MS);
        assert_eq!(ceil_day(-1), 0);
    }

    #[test]
    fn the_longest_run_skips_stale_days() {
        let d = DAY_MS;
        let stale = |days: &[i64]| days.iter().map(|k| k * d).collect::<BTreeSet<_>>();
        assert_eq!(longest_fresh_run(0, 10 * d, &stale(&[])), Some((0, 10 * d)));
        assert_eq!(longest_fresh_run(0, 10 * d, &stale(&[9])), Some((0, 9 * d)));
        assert_eq!(
            longest_fresh_run(0, 10 * d, &stale(&[0])),
            Some((d, 10 * d))
        );
        assert_eq!(
            longest_fresh_run(0, 10 * d, &stale(&[2, 4])),
            Some((5 * d, 10 * d))
        );
        assert_eq!(longest_fresh_run(0, 2 * d, &stale(&[0, 1])), None);
        assert_eq!(longest_fresh_run(0, 0, &stale(&[])), None);
        assert_eq!(longest_fresh_run(0, d, &stale(&[5])), Some((0, d)));
    }
}
