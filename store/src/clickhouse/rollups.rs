//! Hourly rollups of the 5-minute data that cannot double count, and the tenant summary that
//! reads them.
//!
//! # Why not a materialized view
//!
//! Exactly-once in this store rests on `shares` being a `ReplacingMergeTree` read with `FINAL`:
//! a share inserted twice (a redelivery racing its first write, a retried insert) is stored
//! twice and collapsed at read time. A materialized view sees every *insert*, so it would add
//! both copies. Rollups are therefore computed by a query over `shares FINAL`, never from
//! inserts.
//!
//! # Design
//!
//! - **Rows.** `rollup_hourly` holds one row per `(tenant, instance, hour, GPU)`: the totals of
//!   that GPU's 5-minute intervals in the hour, aggregated from `shares FINAL` by the same
//!   per-interval SQL as the raw reads ([`intervals_sql`]): so a rollup row *is* the sum of
//!   the intervals the raw path would read, duplicates already collapsed.
//! - **Staleness is detected, never assumed away.** Every insert into `shares` (new samples,
//!   and restatements rewriting shares with better intensity) adds, in the same query and
//!   after the block is stored, one mark per `(tenant, instance, hour)` it touched to
//!   `rollup_marks` (the `shares_rollup_marks` materialized view, schema version 9; a
//!   `SummingMergeTree`: the hour's write count only grows); the write path relies on it
//!   (before version 9 it inserted its marks separately, after the shares). A recompute
//!   reads the count **first**, then the shares, and stamps its rows with that count
//!   (`writes_seen`): every write counted in the stamp had its shares in before its mark, so
//!   the rows include them. A rollup row is used only while its stamp equals the hour's
//!   current count; any write since makes the hour read from the 5-minute data until it is
//!   recomputed.
//! - **One row per key, whoever recomputes.** `rollup_hourly` is a
//!   `ReplacingMergeTree(writes_seen)` read with `FINAL`: recomputing twice, or two processes
//!   recomputing at once, leaves one row per key, the one with the highest stamp. Rows are
//!   never added up across recomputes, so recomputing is idempotent.
//! - **Each hour is read from exactly one source.** A summary first fixes, in one query, the
//!   set of stale `(instance, hour)`s; the second query reads rollups for the whole hours
//!   inside the range that are *not* in the set, and the 5-minute data for the rest (the
//!   ragged edges, open and stale hours). Both parts use the same fixed set, so no hour is in
//!   both, whatever is written or recomputed between the two queries.
//!
//! # Convergence and the check before billing reads
//!
//! Because the mark is part of the shares insert, no failure between two requests (a process
//! killed, a connection cut, a server down) can leave rewritten shares without their mark:
//! either the insert was stored and its hours are stale until recomputed, or it was not and
//! the rollups still equal the shares. So a summary always equals the sum of the 5-minute
//! intervals, whatever failed between requests. (What is left is inside one query: the server
//! writes the view's block after the shares block. A restatement also marks its hours before
//! the rewrite, so only a server crash between those two blocks *and* a recompute racing
//! between the early mark and the rewrite could leave a rewritten hour looking fresh.) (Before version 9 a restatement wrote its marks in a separate
//! insert after the shares; when that insert failed the hour kept a rollup stamped fresh over
//! the old intensity, for good, since a restatement run again finds nothing left to restate.)
//!
//! The check a summary runs first (the stale set, [`stale_sql`]) is that reconciliation: it
//! compares, per `(instance, hour)` in the range, the rollup's stamp with the write count,
//! over `rollup_marks` and `rollup_hourly` only (rows per instance-hour, never per sample).
//! Comparing rollup values with the intervals themselves would cost the raw read the rollups
//! exist to avoid; [`SummaryPath::Raw`] is that read, for audits and tests. Hours found stale
//! are read from the 5-minute data; the refresh loop recomputes them.
//!
//! # One instance's hours
//!
//! [`ClickHouseStore::instance_hourly_usage_by`] (series at 1 h / 1 d steps, workload
//! footprints) reads an instance's hourly write counts and its `rollup_hourly FINAL` rows at
//! once, decides staleness per hour by the same rule as [`stale_sql`] (every row's stamp equal
//! to the hour's count; an hour with marks and no row is stale), and reads `shares FINAL`
//! only for the stale hours, if any.
//!
//! # When rollups are computed
//!
//! From the write path: a batch that carries shares of an instance in two different hours has
//! moved on from the earlier one, so that hour is recomputed right after the batch is stored
//! (a late batch of an old hour recomputes it the same way). Anything else (an hour whose last
//! samples came alone, a backfill) is caught by [`Store::refresh_rollups`](crate::Store), which
//! recomputes every stale closed hour of a range.

use super::daily::{ceil_day, floor_day};
use super::schema::{day_of, hour_of, HOUR_MS};
use super::{ch_err, placeholders, ClickHouseStore};
use crate::{GpuHourUsage, InstanceSummary, StoreError, UsageTotals};
use ::clickhouse::Row;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use wattprint_core::{
    GpuUuid, GramsCo2e, InstanceId, KilowattHours, Millijoules, Milliwatts, RegionId, TenantId,
    UnixMillis,
};

/// Most stale `(instance, hour)` pairs a summary excludes one by one; beyond, whole hours.
const MAX_STALE_PAIRS: u64 = 500;
/// Most stale hours a summary excludes; beyond, it reads everything from the 5-minute data.
const MAX_STALE_HOURS: u64 = 2_000;
/// `(instance, hour)`s recomputed by one query.
const RECOMPUTE_KEYS: usize = 1_000;
/// Hours a refresh looks at per pass (bounds the stale list held in memory).
const REFRESH_WINDOW_HOURS: i64 = 24;
/// The recompute and summary queries carry key lists: allow more than the default 256 KiB.
pub(super) const MAX_QUERY_SIZE: &str = "16777216";

/// No days read from daily rollups: an empty range, so `x < lo OR x >= hi` holds for all `x`.
pub(super) const NO_DAYS: (i64, i64) = (i64::MIN, i64::MIN);

/// The `(tenant, instance, period)`s of `touched` (hours, each floored to its period by
/// `period`) before the latest period touched for the same `(tenant, instance)`: the stream
/// has moved past them.
pub(super) fn moved_past(
    touched: &BTreeSet<(String, String, i64)>,
    period: fn(i64) -> i64,
) -> BTreeSet<(&str, &str, i64)> {
    let mut latest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (t, i, h) in touched {
        let e = latest.entry((t.as_str(), i.as_str())).or_insert(period(*h));
        *e = (*e).max(period(*h));
    }
    touched
        .iter()
        .map(|(t, i, h)| (t.as_str(), i.as_str(), period(*h)))
        .filter(|(t, i, p)| latest.get(&(*t, *i)).is_some_and(|l| p < l))
        .collect()
}

/// Start of the hour containing `t`.
pub(crate) fn floor_hour(t: i64) -> i64 {
    t.div_euclid(HOUR_MS).saturating_mul(HOUR_MS)
}

/// Start of the first hour starting at or after `t`.
pub(crate) fn ceil_hour(t: i64) -> i64 {
    let f = floor_hour(t);
    if f == t {
        f
    } else {
        f.saturating_add(HOUR_MS)
    }
}

/// Per-interval aggregates of `shares FINAL` under `filter`, grouped per
/// `(tenant, instance, GPU, bucket)`: the same values as `INTERVAL_SELECT` (region, PUE and
/// intensity from the lowest sequence number, the intensity from the lowest that has one), with
/// `iv_` aliases that shadow no column.
pub(super) fn intervals_sql(filter: &str) -> String {
    narrowed_intervals_sql("", filter)
}

/// [`intervals_sql`] with `key_filter`, conditions on key columns only (`instance_id`,
/// `bucket_ms`, `gpu_uuid`, `seq` and functions of them), applied before `FINAL` as `PREWHERE`
/// (none when empty), and `filter` after it. Every copy of a key passes or fails a key
/// condition alike, so `FINAL` picks among the copies left exactly as over the whole table,
/// while 18.16 reads the other columns of far fewer rows (a ragged month's edges: 4× less).
pub(super) fn narrowed_intervals_sql(key_filter: &str, filter: &str) -> String {
    let prewhere = if key_filter.is_empty() {
        String::new()
    } else {
        format!("PREWHERE {key_filter} ")
    };
    format!(
        "SELECT tenant, instance_id, gpu_uuid, bucket_ms, \
         sum(energy_mj) AS iv_energy, sum(toFloat64(energy_mj)) AS iv_energy_f, \
         sum(estimated_mj) AS iv_estimated, sum(covered_ms) AS iv_covered, \
         count() AS iv_samples, max(power_max_mw) AS iv_power_max, \
         argMin(pue, seq) AS iv_pue, toString(argMin(region, seq)) AS iv_region, \
         max(has_intensity) AS iv_has, \
         argMinIf(intensity_value, seq, has_intensity = 1) AS iv_value, \
         toString(argMinIf(intensity_kind, seq, has_intensity = 1)) AS iv_kind, \
         argMinIf(intensity_replayed, seq, has_intensity = 1) AS iv_replayed \
         FROM shares FINAL {prewhere}WHERE {filter} \
         GROUP BY tenant, instance_id, gpu_uuid, bucket_ms"
    )
}

/// The totals columns of `rollup_hourly`, in table order.
const TOTAL_COLUMNS: &str = "gpu_intervals, energy_mj, energy_float, estimated_mj, covered_ms, \
     samples, power_max_mw, facility_kwh, it_co2e_g, facility_co2e_g, weighted_intensity, \
     intensity_sum, energy_with_intensity_mj, missing_energy_mj, intervals_actual, \
     intervals_forecast, intervals_fallback, intervals_missing, intervals_replayed, \
     intervals_unknown";

/// [`TOTAL_COLUMNS`] aggregated over the intervals of [`intervals_sql`]. Emissions per
/// interval use the arithmetic of `GramsPerKwh::emissions` (`E · I / MJ_PER_KWH`, then
/// `× PUE`), as the API does with interval rows.
const TOTALS_OF_INTERVALS: &str = "count() AS gpu_intervals, sum(iv_energy) AS energy_mj, \
     sum(iv_energy_f) AS energy_float, sum(iv_estimated) AS estimated_mj, \
     sum(iv_covered) AS covered_ms, sum(iv_samples) AS samples, \
     max(iv_power_max) AS power_max_mw, \
     sum(iv_energy_f / 3600000000 * iv_pue) AS facility_kwh, \
     sum(if(iv_has = 1, iv_energy_f * iv_value / 3600000000, 0)) AS it_co2e_g, \
     sum(if(iv_has = 1, iv_energy_f * iv_value / 3600000000 * iv_pue, 0)) AS facility_co2e_g, \
     sum(if(iv_has = 1, iv_energy_f * iv_value, 0)) AS weighted_intensity, \
     sum(if(iv_has = 1, iv_value, 0)) AS intensity_sum, \
     sum(if(iv_has = 1, iv_energy, 0)) AS energy_with_intensity_mj, \
     sum(if(iv_has = 1, 0, iv_energy)) AS missing_energy_mj, \
     countIf(iv_has = 1 AND iv_kind = 'actual') AS intervals_actual, \
     countIf(iv_has = 1 AND iv_kind = 'forecast') AS intervals_forecast, \
     countIf(iv_has = 1 AND iv_kind = 'fallback_average') AS intervals_fallback, \
     countIf(iv_has = 0) AS intervals_missing, \
     countIf(iv_has = 1 AND iv_replayed = 1) AS intervals_replayed, \
     countIf(iv_has = 1 AND iv_kind NOT IN ('actual', 'forecast', 'fallback_average')) \
     AS intervals_unknown";

/// Per `(instance, GPU, hour)` totals of the intervals under `filter` (plus the tenant when
/// `with_tenant`), with a region of the intervals and how many regions they lie in, columns
/// named as in `rollup_hourly`.
fn hourly_sql(filter: &str, with_tenant: bool) -> String {
    narrowed_hourly_sql("", filter, with_tenant)
}

/// [`hourly_sql`] of [`narrowed_intervals_sql`].
fn narrowed_hourly_sql(key_filter: &str, filter: &str, with_tenant: bool) -> String {
    let tenant = if with_tenant { "tenant, " } else { "" };
    format!(
        "SELECT {tenant}instance_id, gpu_uuid, {hour} AS hour_ms, {TOTALS_OF_INTERVALS}, \
         any(iv_region) AS region, toUInt64(uniqExact(iv_region)) AS regions \
         FROM ({inner}) GROUP BY {tenant}instance_id, gpu_uuid, hour_ms",
        hour = hour_of("bucket_ms"),
        inner = narrowed_intervals_sql(key_filter, filter),
    )
}

/// The SQL computing [`TOTAL_COLUMNS`] and `hour_mask` per `(tenant, instance, GPU, day)` from
/// the intervals under `filter`, named as in `rollup_daily`.
fn totals_by_day_sql(filter: &str) -> String {
    format!(
        "SELECT tenant, instance_id, gpu_uuid, {day} AS day_ms, {TOTALS_OF_INTERVALS}, \
         groupBitOr(bitShiftLeft(toUInt32(1), toUInt8(intDiv(bucket_ms - {day}, {HOUR_MS})))) \
         AS hour_mask \
         FROM ({inner}) GROUP BY tenant, instance_id, gpu_uuid, day_ms",
        day = day_of("bucket_ms"),
        inner = intervals_sql(filter),
    )
}

/// A rollup table and how its rows are computed, for [`ClickHouseStore::recompute_into`].
pub(super) struct Grain {
    /// The table.
    pub table: &'static str,
    /// Its period column.
    pub key: &'static str,
    /// The period's length.
    pub length_ms: i64,
    /// Columns after the totals (with a leading comma), computed alongside them.
    pub extra: &'static str,
    /// SQL computing the rows, with the tenant, from the intervals under a filter.
    pub computed: fn(&str) -> String,
    /// The operation named in errors.
    pub op: &'static str,
}

/// `(tenant, instance, period start, write count)`: one rollup row set to recompute.
pub(super) type RecomputeJob<'a> = (&'a str, &'a str, i64, u64);

/// Hourly rollups, with their intervals' region (schema version 12).
const HOURLY: Grain = Grain {
    table: "rollup_hourly",
    key: "hour_ms",
    length_ms: HOUR_MS,
    extra: ", region, regions",
    computed: |filter| hourly_sql(filter, true),
    op: "recomputing rollups",
};

/// Daily rollups, with the hours that have data (see `clickhouse/daily.rs`).
pub(super) const DAILY: Grain = Grain {
    table: "rollup_daily",
    key: "day_ms",
    length_ms: super::schema::DAY_MS,
    extra: ", hour_mask",
    computed: totals_by_day_sql,
    op: "recomputing daily rollups",
};

/// Per-instance aggregate of hourly and daily rows (rollups and raw alike), in
/// [`StoredUsage`]'s order; the last counts the instance-hours read from rollups (each row
/// lists them in `rollup_hours`: none for 5-minute data, its hour for an hourly rollup, the
/// bits of `hour_mask` for a daily one). No aliases: they would shadow the columns inside the
/// other aggregates.
const SUMMARY_SELECT: &str = "instance_id, uniqExact(gpu_uuid), sum(gpu_intervals), \
     sum(energy_mj), sum(energy_float), sum(estimated_mj), sum(covered_ms), sum(samples), \
     max(power_max_mw), sum(facility_kwh), sum(it_co2e_g), sum(facility_co2e_g), \
     sum(missing_energy_mj), sum(intervals_actual), sum(intervals_forecast), \
     sum(intervals_fallback), sum(intervals_missing), sum(intervals_replayed), \
     sum(intervals_unknown), uniqExactArray(rollup_hours), toInt64(0), toFloat64(0), \
     toUInt64(0), '', toUInt64(0)";

/// One instance's row of [`SUMMARY_SELECT`].
#[derive(Debug, Row, Deserialize)]
struct StoredUsage {
    instance_id: String,
    gpus: u64,
    gpu_intervals: u64,
    energy_mj: u64,
    energy_float: f64,
    estimated_mj: u64,
    covered_ms: i64,
    samples: u64,
    power_max_mw: u32,
    facility_kwh: f64,
    it_co2e_g: f64,
    facility_co2e_g: f64,
    missing_energy_mj: u64,
    actual: u64,
    forecast: u64,
    fallback: u64,
    missing: u64,
    replayed: u64,
    unknown: u64,
    rollup_hours: u64,
    /// The hour of a per-GPU row ([`GPU_HOUR_SELECT`]); 0 in a summary.
    hour_ms: i64,
    /// Σ intensity of a per-GPU row; 0 in a summary.
    intensity_sum: f64,
    /// The write count a rollup row was computed at; 0 in a summary and for 5-minute data.
    writes_seen: u64,
    /// A region of a per-GPU row's intervals; empty in a summary.
    region: String,
    /// How many regions a per-GPU row's intervals lie in: 0 in a summary and in rollup rows
    /// computed before schema version 12 (unknown).
    regions: u64,
}

impl StoredUsage {
    fn decode(self) -> Result<InstanceSummary, StoreError> {
        const T: &str = "shares";
        // 2^64 as f64: a float sum at or past it means the integer sum wrapped.
        if self.energy_float >= 18_446_744_073_709_551_616.0 {
            return Err(StoreError::Corrupt {
                table: T,
                detail: format!("energy of {} overflows 64 bits", self.instance_id),
            });
        }
        if self.unknown > 0 {
            return Err(StoreError::Corrupt {
                table: T,
                detail: format!(
                    "instance {} has {} intervals with an unknown intensity_kind",
                    self.instance_id, self.unknown
                ),
            });
        }
        Ok(InstanceSummary {
            gpus: u32::try_from(self.gpus).map_err(|_| StoreError::Corrupt {
                table: T,
                detail: format!("{} GPUs on instance {}", self.gpus, self.instance_id),
            })?,
            totals: UsageTotals {
                gpu_intervals: self.gpu_intervals,
                energy: Millijoules(self.energy_mj),
                estimated: Millijoules(self.estimated_mj),
                facility_energy: KilowattHours(self.facility_kwh),
                covered_ms: self.covered_ms,
                samples: self.samples,
                power_max: Some(Milliwatts(self.power_max_mw)),
                it_co2e: GramsCo2e(self.it_co2e_g),
                facility_co2e: GramsCo2e(self.facility_co2e_g),
                energy_without_intensity: Millijoules(self.missing_energy_mj),
                intervals_actual: self.actual,
                intervals_forecast: self.forecast,
                intervals_fallback: self.fallback,
                intervals_missing_intensity: self.missing,
                intervals_replayed_intensity: self.replayed,
            },
            instance: InstanceId(self.instance_id),
        })
    }
}

/// One `(GPU, hour)` row of an instance in [`StoredUsage`]'s columns (the GPU in the
/// instance's place), from a rollup table or from [`hourly_sql`]'s output.
const GPU_HOUR_SELECT: &str = "gpu_uuid, toUInt64(1), gpu_intervals, energy_mj, energy_float, \
     estimated_mj, covered_ms, samples, power_max_mw, facility_kwh, it_co2e_g, facility_co2e_g, \
     missing_energy_mj, intervals_actual, intervals_forecast, intervals_fallback, \
     intervals_missing, intervals_replayed, intervals_unknown, toUInt64(0), hour_ms, \
     intensity_sum, writes_seen, region, regions";

impl StoredUsage {
    /// A row of [`GPU_HOUR_SELECT`], checked with [`StoredUsage::decode`]'s rules (errors name
    /// the GPU as the instance).
    fn decode_gpu_hour(self) -> Result<GpuHourUsage, StoreError> {
        let (hour, intensity_sum) = (UnixMillis(self.hour_ms), self.intensity_sum);
        let region = (self.regions == 1).then(|| RegionId(self.region.clone()));
        let usage = self.decode()?;
        Ok(GpuHourUsage {
            gpu: GpuUuid::new(usage.instance.0),
            hour,
            totals: usage.totals,
            intensity_sum,
            region,
        })
    }
}

/// A `(tenant, instance, hour)` whose rollup is missing or stale, with its current write count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Row, Deserialize)]
pub(crate) struct StaleHour {
    tenant: String,
    instance_id: String,
    hour_ms: i64,
    writes: u64,
}

/// `(instance, hour)`s of a tenant that must not be read from rollups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Excluded {
    /// These pairs.
    Pairs(Vec<(String, i64)>),
    /// Every instance in these hours.
    Hours(Vec<i64>),
    /// Every hour: no rollups at all.
    Everything,
}

impl Excluded {
    /// SQL to append to a key filter of `shares` (key columns only, as `PREWHERE` needs; placeholders: the whole hours `[?, ?)`, then
    /// [`Self::bind_set`]): buckets outside those hours or excluded; and to a filter of
    /// `rollup_hourly` (placeholders: [`Self::bind_set`]): rows not excluded. Nothing for
    /// [`Excluded::Everything`], where no rollup is read.
    pub(super) fn filters(&self) -> (String, String) {
        let bucket_hour = hour_of("bucket_ms");
        match self {
            Excluded::Everything => (String::new(), String::new()),
            Excluded::Pairs(p) if p.is_empty() => (
                " AND (bucket_ms < ? OR bucket_ms >= ?)".to_owned(),
                String::new(),
            ),
            Excluded::Pairs(p) => {
                let set = placeholders(p.len(), 2);
                (
                    format!(
                        " AND (bucket_ms < ? OR bucket_ms >= ? \
                         OR (instance_id, {bucket_hour}) IN ({set}))"
                    ),
                    format!(" AND (instance_id, hour_ms) NOT IN ({set})"),
                )
            }
            Excluded::Hours(h) => {
                let set = placeholders(h.len(), 1);
                (
                    format!(" AND (bucket_ms < ? OR bucket_ms >= ? OR {bucket_hour} IN ({set}))"),
                    format!(" AND hour_ms NOT IN ({set})"),
                )
            }
        }
    }

    /// Binds the set's placeholders of [`Self::filters`].
    pub(super) fn bind_set(&self, mut q: ::clickhouse::query::Query) -> ::clickhouse::query::Query {
        match self {
            Excluded::Pairs(p) => {
                for (i, h) in p {
                    q = q.bind(i.as_str()).bind(*h);
                }
            }
            Excluded::Hours(h) => {
                for h in h {
                    q = q.bind(*h);
                }
            }
            Excluded::Everything => {}
        }
        q
    }
}

/// How a summary reads the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummaryPath {
    /// Rollups for whole, fresh hours; 5-minute data for the rest (what the `Store` uses).
    Auto,
    /// 5-minute data only (the reference the rollups are tested and benchmarked against).
    Raw,
}

/// SQL selecting stale `(tenant, instance, hour)`s with their write counts, hours in
/// `[?, ?)`, `tenant_filter` applied to both tables (placeholders: tenant filter values, then
/// the two hour bounds, for each of the two tables). Joined subqueries carry aliases: servers
/// since 20.x refuse them without (`joined_subquery_requires_alias`). `tenant_filter` names
/// key columns only: on `rollup_hourly` it is a `PREWHERE`, applied before `FINAL` (every
/// version of a key passes or fails it alike), so 18.16 collapses only the rows asked for.
pub(super) fn stale_sql(tenant_filter: &str) -> String {
    format!(
        "SELECT tenant, instance_id, hour_ms, m_writes FROM ( \
             SELECT tenant, instance_id, hour_ms, sum(writes) AS m_writes FROM rollup_marks \
             WHERE {tenant_filter} AND hour_ms >= ? AND hour_ms < ? \
             GROUP BY tenant, instance_id, hour_ms \
         ) AS marked ANY LEFT JOIN ( \
             SELECT tenant, instance_id, hour_ms, \
                 min(writes_seen) AS r_lo, max(writes_seen) AS r_hi \
             FROM rollup_hourly FINAL \
             PREWHERE {tenant_filter} AND hour_ms >= ? AND hour_ms < ? \
             GROUP BY tenant, instance_id, hour_ms \
         ) AS rolled USING (tenant, instance_id, hour_ms) \
         WHERE r_lo != m_writes OR r_hi != m_writes"
    )
}

impl ClickHouseStore {
    /// Stale or missing rollups of `tenant` (all tenants when None) for hours in
    /// `[from_hour, to_hour)`, ordered, at most `limit` (all when None).
    async fn stale_hours(
        &self,
        tenant: Option<&TenantId>,
        from_hour: i64,
        to_hour: i64,
        limit: Option<u64>,
    ) -> Result<Vec<StaleHour>, StoreError> {
        self.stale_hours_outside(tenant, from_hour, to_hour, NO_DAYS, limit)
            .await
    }

    /// [`Self::stale_hours`] leaving out the hours of `days` (read from daily rollups).
    async fn stale_hours_outside(
        &self,
        tenant: Option<&TenantId>,
        from_hour: i64,
        to_hour: i64,
        days: (i64, i64),
        limit: Option<u64>,
    ) -> Result<Vec<StaleHour>, StoreError> {
        const OP: &str = "finding stale rollups";
        let filter = if tenant.is_some() {
            "tenant = ? AND (hour_ms < ? OR hour_ms >= ?)"
        } else {
            "1 = 1 AND (hour_ms < ? OR hour_ms >= ?)"
        };
        let sql = format!(
            "{} ORDER BY tenant, hour_ms, instance_id{}",
            stale_sql(filter),
            if limit.is_some() { " LIMIT ?" } else { "" }
        );
        let mut q = self.client.query(&sql);
        for _ in 0..2 {
            if let Some(t) = tenant {
                q = q.bind(t.as_str());
            }
            q = q.bind(days.0).bind(days.1).bind(from_hour).bind(to_hour);
        }
        if let Some(limit) = limit {
            q = q.bind(limit);
        }
        self.fetch(q, OP).await
    }

    /// Recomputes the given `(tenant, instance, hour)`s, each stamped with the write count it
    /// carries (read before this call, so before the shares are read here).
    pub(crate) async fn recompute(&self, stale: &[StaleHour]) -> Result<(), StoreError> {
        let jobs: Vec<RecomputeJob<'_>> = stale
            .iter()
            .map(|s| {
                (
                    s.tenant.as_str(),
                    s.instance_id.as_str(),
                    s.hour_ms,
                    s.writes,
                )
            })
            .collect();
        self.recompute_into(&HOURLY, &jobs).await
    }

    /// Recomputes rollup rows of `grain` for `(tenant, instance, period start, write count)`
    /// jobs from `shares FINAL`, each stamped with its count, a tenant and a chunk of jobs per
    /// query.
    pub(super) async fn recompute_into(
        &self,
        grain: &Grain,
        jobs: &[RecomputeJob<'_>],
    ) -> Result<(), StoreError> {
        let mut by_tenant: BTreeMap<&str, Vec<&RecomputeJob<'_>>> = BTreeMap::new();
        for job in jobs {
            by_tenant.entry(job.0).or_default().push(job);
        }
        for (tenant, keys) in by_tenant {
            for chunk in keys.chunks(RECOMPUTE_KEYS) {
                let instances: BTreeSet<&str> = chunk.iter().map(|k| k.1).collect();
                let lo = chunk.iter().map(|k| k.2).min().unwrap_or(0);
                let hi = chunk
                    .iter()
                    .map(|k| k.2)
                    .max()
                    .unwrap_or(0)
                    .saturating_add(grain.length_ms);
                let filter = format!(
                    "tenant = ? AND instance_id IN ({}) AND bucket_ms >= ? AND bucket_ms < ?",
                    placeholders(instances.len(), 1)
                );
                // The job list joins on (instance, period) only: the tenant is fixed per
                // query, and a join key never mixes `LowCardinality` with `String`. `ALL`,
                // not `ANY`: each job matches one row per GPU, and since 20.x `ANY INNER`
                // keeps one left row per key too (a modern server rolled up one GPU).
                let (table, key, extra) = (grain.table, grain.key, grain.extra);
                let sql = format!(
                    "INSERT INTO {table} (tenant, instance_id, {key}, gpu_uuid, \
                     writes_seen, {TOTAL_COLUMNS}{extra}) \
                     SELECT tenant, instance_id, {key}, gpu_uuid, job_writes, \
                     {TOTAL_COLUMNS}{extra} \
                     FROM ({computed}) AS computed ALL INNER JOIN ( \
                         SELECT tupleElement(job, 1) AS instance_id, \
                             toInt64(tupleElement(job, 2)) AS {key}, \
                             toUInt64(tupleElement(job, 3)) AS job_writes \
                         FROM (SELECT arrayJoin(?) AS job) \
                     ) AS jobs USING (instance_id, {key})",
                    computed = (grain.computed)(&filter)
                );
                let mut q = self.client.query(&sql).bind(tenant);
                for i in &instances {
                    q = q.bind(*i);
                }
                let jobs: Vec<(&str, i64, u64)> = chunk.iter().map(|k| (k.1, k.2, k.3)).collect();
                q.bind(lo)
                    .bind(hi)
                    .bind(jobs)
                    .with_option("max_query_size", MAX_QUERY_SIZE)
                    .execute()
                    .await
                    .map_err(ch_err(grain.op))?;
            }
        }
        Ok(())
    }

    /// Recomputes every stale or missing rollup of the whole hours in `[from, to)`, a day of
    /// marked hours at a time (empty stretches are skipped). Returns how many
    /// `(tenant, instance, hour)`s it recomputed.
    pub(crate) async fn refresh(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<u64, StoreError> {
        const OP: &str = "refreshing rollups";
        let (mut at, end) = (ceil_hour(from.0), floor_hour(to.0));
        let mut done = 0u64;
        while at < end {
            let Some(next) = self
                .next_marked("rollup_marks", "hour_ms", at, end, OP)
                .await?
            else {
                break;
            };
            at = next.max(at);
            let until = at.saturating_add(REFRESH_WINDOW_HOURS * HOUR_MS).min(end);
            let stale = self.stale_hours(None, at, until, None).await?;
            self.recompute(&stale).await?;
            done += stale.len() as u64;
            at = until;
        }
        let days = self.refresh_days(from.0, to.0).await?;
        if done + days > 0 {
            tracing::debug!(recomputed = done, days, "rollups refreshed");
        }
        Ok(done + days)
    }

    /// The first period start in `[at, end)` with a write mark in `table` (period column
    /// `key`), or None: a wide refresh range is mostly empty.
    pub(super) async fn next_marked(
        &self,
        table: &str,
        key: &str,
        at: i64,
        end: i64,
        op: &'static str,
    ) -> Result<Option<i64>, StoreError> {
        let (next, marked): (i64, u64) = self
            .client
            .query(&format!(
                "SELECT min({key}), count() FROM {table} WHERE {key} >= ? AND {key} < ?"
            ))
            .bind(at)
            .bind(end)
            .fetch_one()
            .await
            .map_err(ch_err(op))?;
        Ok((marked > 0).then_some(next))
    }

    /// After a write: recomputes, per `(tenant, instance)` of `touched`, the hours before the
    /// latest one it touched (the stream has moved past them). Failures are logged, not
    /// returned: the write is stored, and a stale rollup is never read.
    pub(crate) async fn roll_up_passed_hours(&self, touched: &BTreeSet<(String, String, i64)>) {
        const OP: &str = "recomputing rollups after a write";
        let passed: Vec<(&str, &str, i64)> = moved_past(touched, |h| h).into_iter().collect();
        if passed.is_empty() {
            return;
        }
        let result = async {
            let mut stale = Vec::with_capacity(passed.len());
            for chunk in passed.chunks(RECOMPUTE_KEYS) {
                let sql = format!(
                    "SELECT tenant, instance_id, hour_ms, sum(writes) FROM rollup_marks \
                     WHERE (tenant, instance_id, hour_ms) IN ({}) \
                     GROUP BY tenant, instance_id, hour_ms",
                    placeholders(chunk.len(), 3)
                );
                let mut q = self.client.query(&sql);
                for (t, i, h) in chunk {
                    q = q.bind(*t).bind(*i).bind(*h);
                }
                stale.extend(
                    self.fetch::<StaleHour>(q.with_option("max_query_size", MAX_QUERY_SIZE), OP)
                        .await?,
                );
            }
            self.recompute(&stale).await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, hours = passed.len(), "rollup recompute after a write failed; those hours read from 5-minute data until refreshed");
        }
    }

    /// What of the whole hours `[h1, h2)` the summary must read from 5-minute data: the stale
    /// `(instance, hour)` pairs, or only their hours when there are too many pairs, or
    /// everything when there are too many hours.
    async fn excluded_from_rollups(
        &self,
        tenant: &TenantId,
        h1: i64,
        h2: i64,
        days: (i64, i64),
    ) -> Result<Excluded, StoreError> {
        let stale = stale_sql("tenant = ? AND (hour_ms < ? OR hour_ms >= ?)");
        let bind = |mut q: ::clickhouse::query::Query| {
            for _ in 0..2 {
                q = q
                    .bind(tenant.as_str())
                    .bind(days.0)
                    .bind(days.1)
                    .bind(h1)
                    .bind(h2);
            }
            q
        };
        self.excluded_by(&stale, bind, "summarising a tenant").await
    }

    /// The `(instance, hour)`s that `unrolled` selects (its placeholders bound by `bind`) as
    /// an [`Excluded`]: those pairs, or only their hours when there are too many pairs, or
    /// everything when there are too many hours.
    pub(super) async fn excluded_by(
        &self,
        unrolled: &str,
        bind: impl Fn(::clickhouse::query::Query) -> ::clickhouse::query::Query,
        op: &'static str,
    ) -> Result<Excluded, StoreError> {
        let sql = format!(
            "SELECT DISTINCT instance_id, hour_ms FROM ({unrolled}) \
             ORDER BY hour_ms, instance_id LIMIT ?"
        );
        let pairs: Vec<(String, i64)> = self
            .fetch(bind(self.client.query(&sql)).bind(MAX_STALE_PAIRS + 1), op)
            .await?;
        if pairs.len() as u64 <= MAX_STALE_PAIRS {
            return Ok(Excluded::Pairs(pairs));
        }
        let sql = format!("SELECT DISTINCT hour_ms FROM ({unrolled}) ORDER BY hour_ms LIMIT ?");
        let hours: Vec<i64> = self
            .fetch(bind(self.client.query(&sql)).bind(MAX_STALE_HOURS + 1), op)
            .await?;
        Ok(if hours.len() as u64 <= MAX_STALE_HOURS {
            Excluded::Hours(hours)
        } else {
            Excluded::Everything
        })
    }

    /// Per GPU and hour, one instance's totals over the whole hours `[from, to)`: fresh hourly
    /// rollups, and 5-minute data (`shares FINAL`) for the hours found stale first (one fixed
    /// set, so no hour is read from both), by `path`.
    pub async fn instance_hourly_usage_by(
        &self,
        tenant: &TenantId,
        instance: &InstanceId,
        (from, to): (UnixMillis, UnixMillis),
        path: SummaryPath,
    ) -> Result<Vec<GpuHourUsage>, StoreError> {
        const OP: &str = "reading hourly usage";
        crate::check_whole_hours(from, to)?;
        if to <= from {
            self.require_instances(tenant, std::slice::from_ref(instance), OP)
                .await?;
            return Ok(Vec::new());
        }
        let (t, i) = (tenant.as_str(), instance.as_str());
        // 5-minute data of the hours `[a, b)` named in `only` (all of them when None).
        let raw = |(a, b): (i64, i64), only: Option<&[i64]>| {
            let key_filter = format!(
                "instance_id = ? AND bucket_ms >= ? AND bucket_ms < ?{}",
                if only.is_some() {
                    format!(" AND has(?, {})", hour_of("bucket_ms"))
                } else {
                    String::new()
                }
            );
            let sql = format!(
                "SELECT {GPU_HOUR_SELECT} FROM (SELECT *, toUInt64(0) AS writes_seen FROM ({})) \
                 ORDER BY hour_ms, gpu_uuid",
                narrowed_hourly_sql(&key_filter, "tenant = ?", false)
            );
            let q = self.client.query(&sql).bind(i).bind(a).bind(b);
            let q = match only {
                Some(hours) => q.bind(hours),
                None => q,
            };
            let q = q.bind(t);
            self.fetch::<StoredUsage>(q.with_option("max_query_size", MAX_QUERY_SIZE), OP)
        };
        // The instance's check runs beside the reads (all filtered by the tenant): a
        // foreign or unknown instance answers `NotFound` and its rows, none, are dropped.
        let owned = self.require_instances(tenant, std::slice::from_ref(instance), OP);
        if path == SummaryPath::Raw {
            let (rows, ()) = tokio::try_join!(raw((from.0, to.0), None), owned)?;
            return rows.into_iter().map(StoredUsage::decode_gpu_hour).collect();
        }
        // The hours' write counts and the rollup rows with the counts they were computed at,
        // read at once; an hour is read from its rollup only when every row's count is its
        // current one (`stale_sql`'s rule), else from 5-minute data, read after.
        let marks = async {
            let q = self
                .client
                .query(
                    "SELECT hour_ms, sum(writes) FROM rollup_marks WHERE tenant = ? \
                     AND instance_id = ? AND hour_ms >= ? AND hour_ms < ? GROUP BY hour_ms",
                )
                .bind(t)
                .bind(i)
                .bind(from.0)
                .bind(to.0);
            self.fetch::<(i64, u64)>(q, OP).await
        };
        let rolled = async {
            let q = self
                .client
                .query(&format!(
                    "SELECT {GPU_HOUR_SELECT} FROM rollup_hourly FINAL PREWHERE tenant = ? \
                     AND instance_id = ? AND hour_ms >= ? AND hour_ms < ? \
                     ORDER BY hour_ms, gpu_uuid"
                ))
                .bind(t)
                .bind(i)
                .bind(from.0)
                .bind(to.0);
            self.fetch::<StoredUsage>(q, OP).await
        };
        let (marks, rolled, ()) = tokio::try_join!(marks, rolled, owned)?;
        let marks: BTreeMap<i64, u64> = marks.into_iter().collect();
        let stale: BTreeSet<i64> = marks
            .iter()
            .filter(|(hour, writes)| {
                let rows = rolled.iter().filter(|r| r.hour_ms == **hour);
                rows.clone().next().is_none() || rows.into_iter().any(|r| r.writes_seen != **writes)
            })
            .map(|(hour, _)| *hour)
            .collect();
        let mut rows: Vec<StoredUsage> = rolled
            .into_iter()
            .filter(|r| !stale.contains(&r.hour_ms))
            .collect();
        if let (Some(first), Some(last)) = (stale.first(), stale.last()) {
            let hours: Vec<i64> = stale.iter().copied().collect();
            rows.extend(raw((*first, last + HOUR_MS), Some(&hours)).await?);
            rows.sort_by(|a, b| (a.hour_ms, &a.instance_id).cmp(&(b.hour_ms, &b.instance_id)));
        }
        rows.into_iter().map(StoredUsage::decode_gpu_hour).collect()
    }

    /// The tenant's usage per instance over buckets starting in `[from, to)`, read by `path`.
    pub async fn tenant_summary_by(
        &self,
        tenant: &TenantId,
        from: UnixMillis,
        to: UnixMillis,
        path: SummaryPath,
    ) -> Result<Vec<(InstanceSummary, u64)>, StoreError> {
        const OP: &str = "summarising a tenant";
        if to <= from {
            return Ok(Vec::new());
        }
        let (h1, h2) = (ceil_hour(from.0), floor_hour(to.0));
        // Whole days with fresh daily rollups are read from them and left out of the rest.
        let days = match path {
            SummaryPath::Auto => self
                .fresh_days(tenant, ceil_day(from.0), floor_day(to.0))
                .await?
                .unwrap_or(NO_DAYS),
            SummaryPath::Raw => NO_DAYS,
        };
        // Whether anything of the range lies outside the daily rollups read (an aligned month
        // with every day fresh reads nothing else, and checks no hour).
        let beyond_days = !(days.0 <= from.0 && to.0 <= days.1);
        let excluded = if path == SummaryPath::Raw || h1 >= h2 || !beyond_days {
            Excluded::Everything
        } else {
            self.excluded_from_rollups(tenant, h1, h2, days).await?
        };

        // The 5-minute part: the edges, and the excluded hours in between. Only instances with
        // marks in the range are read, so the primary key (instance first) narrows the scan.
        // All but the tenant are key conditions, read before `FINAL` (`PREWHERE`).
        let mut raw_key_filter = String::from(
            "instance_id IN (SELECT instance_id FROM rollup_marks \
             WHERE tenant = ? AND hour_ms >= ? AND hour_ms < ? \
             AND (hour_ms < ? OR hour_ms >= ?)) \
             AND bucket_ms >= ? AND bucket_ms < ? AND (bucket_ms < ? OR bucket_ms >= ?)",
        );
        // Key columns of `rollup_hourly` only, as its `PREWHERE`.
        let mut rollup_filter = String::from(
            "tenant = ? AND hour_ms >= ? AND hour_ms < ? AND (hour_ms < ? OR hour_ms >= ?)",
        );
        let (raw_extra, rollup_extra) = excluded.filters();
        raw_key_filter.push_str(&raw_extra);
        rollup_filter.push_str(&rollup_extra);
        let raw = format!(
            "SELECT instance_id, gpu_uuid, hour_ms, {TOTAL_COLUMNS}, toUInt8(0) AS from_rollup, \
             emptyArrayInt64() AS rollup_hours FROM ({})",
            narrowed_hourly_sql(&raw_key_filter, "tenant = ?", false)
        );
        let mut union = if !beyond_days {
            String::new()
        } else if excluded == Excluded::Everything {
            raw
        } else {
            format!(
                "{raw} UNION ALL \
                 SELECT instance_id, gpu_uuid, hour_ms, {TOTAL_COLUMNS}, toUInt8(1) AS from_rollup, \
                 [hour_ms] AS rollup_hours FROM rollup_hourly FINAL PREWHERE {rollup_filter}"
            )
        };
        if days != NO_DAYS {
            if !union.is_empty() {
                union.push_str(" UNION ALL ");
            }
            union.push_str(&format!(
                "SELECT instance_id, gpu_uuid, day_ms AS hour_ms, {TOTAL_COLUMNS}, \
                 toUInt8(2) AS from_rollup, \
                 arrayMap((k, d) -> toInt64(d + k * {HOUR_MS}), {hours}, \
                 replicate(day_ms, {hours})) AS rollup_hours \
                 FROM rollup_daily FINAL PREWHERE tenant = ? AND day_ms >= ? AND day_ms < ?",
                // Lambdas take the row's values as arguments: 18.16 does not read columns
                // that a lambda only captures.
                hours = "arrayFilter((k, m) -> bitAnd(m, bitShiftLeft(toUInt32(1), k)) != 0, \
                         range(24), replicate(hour_mask, range(24)))"
            ));
        }
        let sql = format!(
            "SELECT {SUMMARY_SELECT} FROM ({union}) GROUP BY instance_id ORDER BY instance_id"
        );

        let mut q = self.client.query(&sql);
        if beyond_days {
            q = q
                .bind(tenant.as_str())
                .bind(floor_hour(from.0))
                .bind(to.0)
                .bind(days.0)
                .bind(days.1)
                .bind(from.0)
                .bind(to.0)
                .bind(days.0)
                .bind(days.1);
            if excluded != Excluded::Everything {
                q = excluded.bind_set(q.bind(h1).bind(h2));
            }
            q = q.bind(tenant.as_str());
        }
        if beyond_days && excluded != Excluded::Everything {
            q = excluded.bind_set(
                q.bind(tenant.as_str())
                    .bind(h1)
                    .bind(h2)
                    .bind(days.0)
                    .bind(days.1),
            );
        }
        if days != NO_DAYS {
            q = q.bind(tenant.as_str()).bind(days.0).bind(days.1);
        }
        let rows: Vec<StoredUsage> = self
            .fetch(q.with_option("max_query_size", MAX_QUERY_SIZE), OP)
            .await?;
        rows.into_iter()
            .map(|r| {
                let hours = r.rollup_hours;
                Ok((r.decode()?, hours))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_round_both_ways() {
        assert_eq!(floor_hour(HOUR_MS + 1), HOUR_MS);
        assert_eq!(ceil_hour(HOUR_MS + 1), 2 * HOUR_MS);
        assert_eq!(ceil_hour(HOUR_MS), HOUR_MS);
        assert_eq!(floor_hour(-1), -HOUR_MS);
        assert_eq!(ceil_hour(-1), 0);
    }

    #[test]
    fn rollup_columns_match_the_totals_computed() {
        // Every rollup column is produced, by name and in order, by the raw aggregation.
        let produced: Vec<&str> = TOTALS_OF_INTERVALS
            .split(" AS ")
            .skip(1)
            .map(|s| s.split([',', ' ']).next().unwrap_or(""))
            .collect();
        let columns: Vec<&str> = TOTAL_COLUMNS.split(", ").map(str::trim).collect();
        assert_eq!(produced, columns);
        let table: Vec<&str> = super::super::schema::ROLLUP_TOTAL_COLUMNS
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(table, columns, "rollup_daily's columns");
    }
}
