//! The intensity ledger, restatements and the coverage report in ClickHouse.
//!
//! A restatement rewrites the shares of an interval under their own keys with the new
//! intensity: `shares` is a `ReplacingMergeTree` without a version column, so `FINAL` keeps the
//! row inserted last. The record goes in first and is keyed by the transition (interval and new
//! value), so a pass interrupted after it and run again re-records the same transition once.
//! The hours touched get their rollup marks from the shares insert itself (the
//! `shares_rollup_marks` view, schema version 9): there is no separate marks write that could
//! fail after the shares were rewritten and leave a stale rollup looking fresh. They are also
//! marked once before the rewrite, which costs one small insert per pass.

use super::rows::{AggregatedInterval, RollupMark, StoredShare, INTERVAL_SELECT};
use super::{ch_err, now_ms, rollups, ClickHouseStore};
use crate::{
    decide_restatements, LedgerQuery, LedgerWrite, RegionCoverage, RestateOutcome, Restatement,
    StoreError,
};
use ::clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, PointKind, Signal,
};
use wattprint_core::{
    Bucket, GpuUuid, GramsPerKwh, InstanceId, Millijoules, RegionId, TenantId, UnixMillis,
};

/// Version 3's tables; see [`super::schema`] for the dialect placeholders.
pub(crate) fn v3_tables(few: &str, delta: &str, month_of: impl Fn(&str) -> String) -> Vec<String> {
    vec![
        // `issued_ms` is 0 for actuals, `model_version` '' when the provider gives none. The
        // version column keeps the latest fetch of a point the provider revised.
        format!(
            "CREATE TABLE IF NOT EXISTS intensity_points (
                region        {few},
                at_ms         Int64{delta},
                signal        {few},
                kind          {few},
                issued_ms     Int64,
                provider      {few},
                model_version {few},
                duration_ms   Int64,
                value         Float64,
                fetched_at_ms Int64
            ) ENGINE = ReplacingMergeTree(fetched_at_ms)
            PARTITION BY {}
            ORDER BY (region, at_ms, signal, kind, issued_ms, provider, model_version)",
            month_of("at_ms")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS restatements (
                tenant         {few},
                instance_id    String,
                gpu_uuid       String,
                bucket_ms      Int64{delta},
                region         {few},
                energy_mj      UInt64,
                pue            Float64,
                has_prev       UInt8,
                prev_value     Float64,
                prev_kind      {few},
                prev_source    String,
                prev_point_ms  Int64,
                prev_replayed  UInt8,
                new_value      Float64,
                new_kind       {few},
                new_source     String,
                new_point_ms   Int64,
                reason         String,
                restated_at_ms Int64
            ) ENGINE = ReplacingMergeTree(restated_at_ms)
            PARTITION BY {}
            ORDER BY (tenant, instance_id, gpu_uuid, bucket_ms, new_kind, new_point_ms, new_source)",
            month_of("bucket_ms")
        ),
    ]
}

/// An `intensity_points` row.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
struct StoredPoint {
    region: String,
    at_ms: i64,
    signal: String,
    kind: String,
    issued_ms: i64,
    provider: String,
    model_version: String,
    duration_ms: i64,
    value: f64,
    fetched_at_ms: i64,
}

type PointKey = (String, i64, String, String, i64, String, String);

impl StoredPoint {
    fn encode(p: &IntensityPoint) -> Self {
        Self {
            region: p.region.0.clone(),
            at_ms: p.at.0,
            signal: p.signal.as_str().to_owned(),
            kind: p.kind.as_str().to_owned(),
            issued_ms: p.issued_at.map_or(0, |i| i.0),
            provider: p.provider.clone(),
            model_version: p.model_version.clone().unwrap_or_default(),
            duration_ms: p.duration_ms,
            value: p.value.0,
            fetched_at_ms: p.fetched_at.0,
        }
    }

    fn key(&self) -> PointKey {
        (
            self.region.clone(),
            self.at_ms,
            self.signal.clone(),
            self.kind.clone(),
            self.issued_ms,
            self.provider.clone(),
            self.model_version.clone(),
        )
    }

    fn decode(self) -> Result<IntensityPoint, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            table: "intensity_points",
            detail,
        };
        let signal = Signal::parse(&self.signal)
            .ok_or_else(|| corrupt(format!("unknown signal {:?}", self.signal)))?;
        let kind = PointKind::parse(&self.kind)
            .ok_or_else(|| corrupt(format!("unknown kind {:?}", self.kind)))?;
        Ok(IntensityPoint {
            region: RegionId(self.region),
            at: UnixMillis(self.at_ms),
            duration_ms: self.duration_ms,
            value: GramsPerKwh(self.value),
            signal,
            kind,
            issued_at: (kind == PointKind::Forecast).then_some(UnixMillis(self.issued_ms)),
            provider: self.provider,
            model_version: (!self.model_version.is_empty()).then_some(self.model_version),
            fetched_at: UnixMillis(self.fetched_at_ms),
        })
    }
}

/// A `restatements` row.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct StoredRestatement {
    tenant: String,
    instance_id: String,
    gpu_uuid: String,
    bucket_ms: i64,
    region: String,
    energy_mj: u64,
    pue: f64,
    has_prev: u8,
    prev_value: f64,
    prev_kind: String,
    prev_source: String,
    prev_point_ms: i64,
    prev_replayed: u8,
    new_value: f64,
    new_kind: String,
    new_source: String,
    new_point_ms: i64,
    reason: String,
    restated_at_ms: i64,
}

impl StoredRestatement {
    fn encode(r: &Restatement) -> Self {
        let p = r.previous.as_ref();
        Self {
            tenant: r.tenant.0.clone(),
            instance_id: r.instance.0.clone(),
            gpu_uuid: r.gpu.0.clone(),
            bucket_ms: r.bucket.start().0,
            region: r.region.0.clone(),
            energy_mj: r.energy.0,
            pue: r.pue,
            has_prev: u8::from(p.is_some()),
            prev_value: p.map_or(0.0, |p| p.value.0),
            prev_kind: p.map_or_else(String::new, |p| p.kind.as_str().to_owned()),
            prev_source: p.map_or_else(String::new, |p| p.source.clone()),
            prev_point_ms: p.map_or(0, |p| p.point_at.0),
            prev_replayed: u8::from(p.is_some_and(|p| p.replayed)),
            new_value: r.current.value.0,
            new_kind: r.current.kind.as_str().to_owned(),
            new_source: r.current.source.clone(),
            new_point_ms: r.current.point_at.0,
            reason: r.reason.clone(),
            restated_at_ms: r.restated_at.0,
        }
    }

    fn decode(self) -> Result<Restatement, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            table: "restatements",
            detail,
        };
        let kind = |s: &str| {
            IntensityKind::parse(s).ok_or_else(|| corrupt(format!("unknown intensity kind {s:?}")))
        };
        let bucket = Bucket::aligned(UnixMillis(self.bucket_ms))
            .ok_or_else(|| corrupt(format!("bucket_ms {} not aligned", self.bucket_ms)))?;
        let previous = if self.has_prev == 1 {
            Some(JoinedIntensity {
                value: GramsPerKwh(self.prev_value),
                kind: kind(&self.prev_kind)?,
                source: self.prev_source,
                point_at: UnixMillis(self.prev_point_ms),
                replayed: self.prev_replayed == 1,
            })
        } else {
            None
        };
        Ok(Restatement {
            tenant: TenantId(self.tenant),
            instance: InstanceId(self.instance_id),
            gpu: GpuUuid(self.gpu_uuid),
            bucket,
            region: RegionId(self.region),
            energy: Millijoules(self.energy_mj),
            pue: self.pue,
            previous,
            current: JoinedIntensity {
                value: GramsPerKwh(self.new_value),
                kind: kind(&self.new_kind)?,
                source: self.new_source,
                point_at: UnixMillis(self.new_point_ms),
                replayed: false,
            },
            reason: self.reason,
            restated_at: UnixMillis(self.restated_at_ms),
        })
    }
}

/// A coverage row, in the select's order.
#[derive(Debug, Row, Deserialize)]
struct CoverageRow {
    region: String,
    actual: u64,
    nearest_actual: u64,
    forecast: u64,
    fallback: u64,
    missing: u64,
    replayed: u64,
}

impl ClickHouseStore {
    /// [`crate::Store::write_intensity`].
    pub(crate) async fn write_points(
        &self,
        points: &[IntensityPoint],
    ) -> Result<LedgerWrite, StoreError> {
        const OP: &str = "writing intensity points";
        for p in points {
            p.validate()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
        }
        // What is stored already, region by region over the batch's span.
        let mut spans: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for p in points {
            let span = spans.entry(p.region.as_str()).or_insert((p.at.0, p.at.0));
            span.0 = span.0.min(p.at.0);
            span.1 = span.1.max(p.at.0);
        }
        let mut stored: HashMap<PointKey, StoredPoint> = HashMap::new();
        for (region, (from, to)) in spans {
            let q = self
                .client
                .query(
                    "SELECT ?fields FROM intensity_points FINAL \
                     WHERE region = ? AND at_ms >= ? AND at_ms <= ?",
                )
                .bind(region)
                .bind(from)
                .bind(to);
            for row in self.fetch::<StoredPoint>(q, OP).await? {
                stored.insert(row.key(), row);
            }
        }
        let mut outcome = LedgerWrite::default();
        let mut rows: Vec<StoredPoint> = Vec::new();
        for p in points {
            let row = StoredPoint::encode(p);
            let key = row.key();
            match stored.get(&key) {
                None => outcome.new += 1,
                Some(s)
                    if s.value.to_bits() == row.value.to_bits()
                        && s.duration_ms == row.duration_ms =>
                {
                    outcome.unchanged += 1;
                    continue;
                }
                Some(_) => outcome.revised += 1,
            }
            stored.insert(key, row.clone());
            rows.push(row);
        }
        self.insert("intensity_points", &rows, OP).await?;
        Ok(outcome)
    }

    /// [`crate::Store::intensity_points`].
    pub(crate) async fn read_points(
        &self,
        q: &LedgerQuery,
    ) -> Result<Vec<IntensityPoint>, StoreError> {
        const OP: &str = "reading intensity points";
        let mut sql =
            "SELECT ?fields FROM intensity_points FINAL WHERE at_ms >= ? AND at_ms < ?".to_owned();
        if q.region.is_some() {
            sql.push_str(" AND region = ?");
        }
        if q.signal.is_some() {
            sql.push_str(" AND signal = ?");
        }
        if q.fetched_since.is_some() {
            sql.push_str(" AND fetched_at_ms >= ?");
        }
        sql.push_str(" ORDER BY region, at_ms, signal, kind, issued_ms, provider, model_version");
        let mut query = self.client.query(&sql).bind(q.from.0).bind(q.to.0);
        if let Some(r) = &q.region {
            query = query.bind(r.as_str());
        }
        if let Some(s) = q.signal {
            query = query.bind(s.as_str());
        }
        if let Some(t) = q.fetched_since {
            query = query.bind(t.0);
        }
        self.fetch::<StoredPoint>(query, OP)
            .await?
            .into_iter()
            .map(StoredPoint::decode)
            .collect()
    }

    /// [`crate::Store::restate`].
    pub(crate) async fn restate_region(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
        join: &IntensityJoin,
    ) -> Result<RestateOutcome, StoreError> {
        const OP: &str = "restating intervals";
        let sql = format!(
            "SELECT {INTERVAL_SELECT} FROM shares FINAL \
             WHERE region = ? AND bucket_ms >= ? AND bucket_ms < ? \
             GROUP BY instance_id, gpu_uuid, bucket_ms ORDER BY bucket_ms, instance_id, gpu_uuid"
        );
        let q = self
            .client
            .query(&sql)
            .bind(region.as_str())
            .bind(from.0)
            .bind(to.0);
        let intervals: Vec<AggregatedInterval> = self.fetch(q, OP).await?;
        let candidates = intervals
            .into_iter()
            .map(|i| {
                let tenant = TenantId(i.tenant().to_owned());
                Ok((tenant, i.decode()?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let decided = decide_restatements(region, join, candidates, UnixMillis(now_ms()));
        let (Some(first), Some(last)) = (decided.first(), decided.last()) else {
            return Ok(RestateOutcome::default());
        };
        let by_interval: HashMap<(&str, &str, i64), &JoinedIntensity> = decided
            .iter()
            .map(|r| {
                (
                    (r.instance.as_str(), r.gpu.as_str(), r.bucket.start().0),
                    &r.current,
                )
            })
            .collect();
        let q = self
            .client
            .query(
                "SELECT ?fields FROM shares FINAL \
                 WHERE region = ? AND bucket_ms >= ? AND bucket_ms <= ?",
            )
            .bind(region.as_str())
            .bind(first.bucket.start().0)
            .bind(last.bucket.start().0);
        let mut shares: Vec<StoredShare> = self.fetch(q, OP).await?;
        shares.retain_mut(|sh| {
            let Some(new) =
                by_interval.get(&(sh.instance_id.as_str(), sh.gpu_uuid.as_str(), sh.bucket_ms))
            else {
                return false;
            };
            sh.has_intensity = 1;
            sh.intensity_value = new.value.0;
            sh.intensity_kind = new.kind.as_str().to_owned();
            sh.intensity_source = new.source.clone();
            sh.intensity_point_ms = new.point_at.0;
            sh.intensity_replayed = 0;
            true
        });
        let records: Vec<StoredRestatement> =
            decided.iter().map(StoredRestatement::encode).collect();
        self.insert("restatements", &records, OP).await?;
        // Marked stale before the rewrite as well: should the view's own mark be lost inside
        // the shares insert (a server crash between its two blocks), the hours still read
        // from the 5-minute data unless a recompute ran in between.
        let marks: Vec<RollupMark> = decided
            .iter()
            .map(|r| {
                let hour = rollups::floor_hour(r.bucket.start().0);
                (r.tenant.0.clone(), r.instance.0.clone(), hour)
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(tenant, instance_id, hour_ms)| RollupMark {
                tenant,
                instance_id,
                hour_ms,
                writes: 1,
            })
            .collect();
        self.insert("rollup_marks", &marks, OP).await?;
        self.insert("shares", &shares, OP).await?;
        Ok(RestateOutcome::of(&decided))
    }

    /// [`crate::Store::prune_restatements`]: a count, then (only when some are due) a
    /// mutation the server runs in the background.
    pub(super) async fn prune_old_restatements(
        &self,
        before: UnixMillis,
    ) -> Result<u64, StoreError> {
        const OP: &str = "pruning restatements";
        let due: u64 = self
            .client
            .query("SELECT count() FROM restatements WHERE bucket_ms < ?")
            .bind(before.0)
            .fetch_one()
            .await
            .map_err(ch_err(OP))?;
        if due > 0 {
            self.client
                .query("ALTER TABLE restatements DELETE WHERE bucket_ms < ?")
                .bind(before.0)
                .execute()
                .await
                .map_err(ch_err(OP))?;
        }
        Ok(due)
    }

    /// [`crate::Store::restatements`].
    pub(crate) async fn read_restatements(
        &self,
        tenant: &TenantId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Restatement>, StoreError> {
        const OP: &str = "reading restatements";
        let q = self
            .client
            .query(
                "SELECT ?fields FROM restatements FINAL \
                 WHERE tenant = ? AND bucket_ms >= ? AND bucket_ms < ? \
                 ORDER BY bucket_ms, instance_id, gpu_uuid, restated_at_ms, new_kind",
            )
            .bind(tenant.as_str())
            .bind(from.0)
            .bind(to.0);
        self.fetch::<StoredRestatement>(q, OP)
            .await?
            .into_iter()
            .map(StoredRestatement::decode)
            .collect()
    }

    /// [`crate::Store::intensity_coverage`].
    pub(crate) async fn coverage(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionCoverage>, StoreError> {
        const OP: &str = "reading intensity coverage";
        let q = self
            .client
            .query(
                "SELECT toString(cv_region), \
                 countIf(cv_has = 1 AND cv_kind = 'actual' \
                     AND (cv_point = cv_bucket OR cv_replayed = 1)), \
                 countIf(cv_has = 1 AND cv_kind = 'actual' \
                     AND cv_point != cv_bucket AND cv_replayed = 0), \
                 countIf(cv_has = 1 AND cv_kind = 'forecast'), \
                 countIf(cv_has = 1 AND cv_kind = 'fallback_average'), \
                 countIf(cv_has = 0), \
                 countIf(cv_has = 1 AND cv_replayed = 1) \
                 FROM (SELECT bucket_ms AS cv_bucket, \
                     toString(argMin(region, seq)) AS cv_region, \
                     max(has_intensity) AS cv_has, \
                     toString(argMinIf(intensity_kind, seq, has_intensity = 1)) AS cv_kind, \
                     argMinIf(intensity_point_ms, seq, has_intensity = 1) AS cv_point, \
                     argMinIf(intensity_replayed, seq, has_intensity = 1) AS cv_replayed \
                     FROM shares FINAL WHERE bucket_ms >= ? AND bucket_ms < ? \
                     GROUP BY instance_id, gpu_uuid, bucket_ms) \
                 GROUP BY cv_region ORDER BY cv_region",
            )
            .bind(from.0)
            .bind(to.0);
        Ok(self
            .fetch::<CoverageRow>(q, OP)
            .await?
            .into_iter()
            .map(|r| RegionCoverage {
                region: RegionId(r.region),
                actual: r.actual,
                nearest_actual: r.nearest_actual,
                forecast: r.forecast,
                fallback: r.fallback,
                missing: r.missing,
                replayed: r.replayed,
            })
            .collect())
    }
}
