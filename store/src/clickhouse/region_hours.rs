//! Every tenant's facility energy per region and hour (market-based emissions): hourly rollups
//! where they can give it, 5-minute data elsewhere.
//!
//! A rollup row serves its `(instance, hour)` while it is fresh (the rule of
//! `clickhouse/rollups.rs`) and its intervals lie in one known region (`regions = 1`, schema
//! version 12). The `(instance, hour)`s where some row does not are fixed first, in one query,
//! and both parts of the read use that one set, so no hour is read from both. A row that the
//! read itself finds in other than one region (recomputed in between) makes it read the whole
//! range from 5-minute data. Both parts sum `energy / 3.6e9 × PUE` per interval, each interval
//! its own tenant's (region and PUE of its lowest `seq`), as the rollups are computed.

use super::rollups::{
    ceil_hour, floor_hour, intervals_sql, stale_sql, Excluded, SummaryPath, NO_DAYS,
};
use super::schema::hour_of;
use super::ClickHouseStore;
use crate::{RegionHourEnergy, StoreError};
use ::clickhouse::Row;
use serde::Deserialize;
use wattprint_core::{RegionId, UnixMillis};

const OP: &str = "reading facility energy per region and hour";

/// One `(region, hour)` of the read; `mixed` when a rollup row read lay in other than one
/// region.
#[derive(Debug, Row, Deserialize)]
struct RegionHour {
    region: String,
    hour_ms: i64,
    facility_kwh: f64,
    mixed: u8,
}

impl ClickHouseStore {
    /// Every tenant's facility energy of `regions` per hour over buckets in `[from, to)`, read
    /// by `path` ([`SummaryPath::Raw`]: 5-minute data only, the reference for tests).
    pub async fn region_hourly_facility_energy_by(
        &self,
        regions: &[RegionId],
        (from, to): (UnixMillis, UnixMillis),
        path: SummaryPath,
    ) -> Result<Vec<RegionHourEnergy>, StoreError> {
        if regions.is_empty() || to <= from {
            return Ok(Vec::new());
        }
        let hours = (ceil_hour(from.0), floor_hour(to.0));
        let excluded = if path == SummaryPath::Raw || hours.0 >= hours.1 {
            Excluded::Everything
        } else {
            self.unrolled_region_hours(hours).await?
        };
        let mut rows = self
            .region_hours(regions, (from.0, to.0), hours, &excluded)
            .await?;
        if rows.iter().any(|r| r.mixed != 0) {
            tracing::debug!("an hourly rollup changed region during the read: 5-minute data");
            rows = self
                .region_hours(regions, (from.0, to.0), hours, &Excluded::Everything)
                .await?;
        }
        Ok(rows
            .into_iter()
            .map(|r| RegionHourEnergy {
                region: RegionId(r.region),
                hour: UnixMillis(r.hour_ms),
                facility_kwh: r.facility_kwh,
            })
            .collect())
    }

    /// The `(instance, hour)`s of the whole hours `[h1, h2)`, any tenant's, whose rollups
    /// cannot give energy per region: stale or missing, or of intervals in other than one
    /// known region.
    async fn unrolled_region_hours(&self, (h1, h2): (i64, i64)) -> Result<Excluded, StoreError> {
        let unrolled = format!(
            "SELECT instance_id, hour_ms FROM ({}) UNION ALL \
             SELECT instance_id, hour_ms FROM rollup_hourly FINAL \
             WHERE hour_ms >= ? AND hour_ms < ? AND regions != 1",
            stale_sql("1 = 1 AND (hour_ms < ? OR hour_ms >= ?)")
        );
        let bind = |mut q: ::clickhouse::query::Query| {
            for _ in 0..2 {
                q = q.bind(NO_DAYS.0).bind(NO_DAYS.1).bind(h1).bind(h2);
            }
            q.bind(h1).bind(h2)
        };
        self.excluded_by(&unrolled, bind, OP).await
    }

    /// The read itself: 5-minute data for the buckets of `[from, to)` outside the whole hours
    /// `[h1, h2)` or `excluded`, rollups for the rest.
    async fn region_hours(
        &self,
        regions: &[RegionId],
        (from, to): (i64, i64),
        (h1, h2): (i64, i64),
        excluded: &Excluded,
    ) -> Result<Vec<RegionHour>, StoreError> {
        let marks = vec!["?"; regions.len()].join(", ");
        let (raw_extra, rollup_extra) = excluded.filters();
        let raw = format!(
            "SELECT iv_region AS region, {hour} AS hour_ms, \
             iv_energy_f / 3600000000 * iv_pue AS kwh, iv_energy AS mj, toUInt8(0) AS mixed \
             FROM ({intervals}) WHERE iv_region IN ({marks})",
            hour = hour_of("bucket_ms"),
            intervals = intervals_sql(&format!("bucket_ms >= ? AND bucket_ms < ?{raw_extra}")),
        );
        // A rollup row in other than one region is read whatever its region, to be seen.
        let union = if *excluded == Excluded::Everything {
            raw
        } else {
            format!(
                "{raw} UNION ALL \
                 SELECT toString(region), hour_ms, facility_kwh, energy_mj, \
                 toUInt8(regions != 1) FROM rollup_hourly FINAL \
                 WHERE hour_ms >= ? AND hour_ms < ?{rollup_extra} \
                 AND (region IN ({marks}) OR regions != 1)"
            )
        };
        let sql = format!(
            "SELECT region, hour_ms, sum(kwh), max(mixed) FROM ({union}) \
             GROUP BY region, hour_ms HAVING sum(mj) > 0 ORDER BY region, hour_ms"
        );
        let bind_regions = |mut q: ::clickhouse::query::Query| {
            for r in regions {
                q = q.bind(r.as_str());
            }
            q
        };
        let mut q = self.client.query(&sql).bind(from).bind(to);
        if *excluded != Excluded::Everything {
            q = excluded.bind_set(q.bind(h1).bind(h2));
        }
        q = bind_regions(q);
        if *excluded != Excluded::Everything {
            q = bind_regions(excluded.bind_set(q.bind(h1).bind(h2)));
        }
        self.fetch(
            q.with_option("max_query_size", super::rollups::MAX_QUERY_SIZE),
            OP,
        )
        .await
    }
}
