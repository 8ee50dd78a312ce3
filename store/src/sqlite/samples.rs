//! Samples and their 5-minute intervals in SQLite.
//!
//! A sample is stored once under `(GPU, seq)`: a redelivery identical to the stored one is a
//! duplicate, a different one a conflict, and one overlapping stored energy of its GPU is
//! refused. A stored sample's shares are added to their intervals in the same transaction,
//! so an interval counts each sample exactly once.

use super::db_err;
use super::inventory::require_instance;
use super::rows::{to_stored, RawInterval, RawSample, RawUsage, INTERVAL_COLUMNS, SAMPLE_COLUMNS};
use crate::{
    EnrichedSample, GpuHourUsage, InstanceSummary, IntervalRow, RefusedSample, RegionHourEnergy,
    SampleRow, StoreError, TenantSummary, WriteOutcome,
};
use rusqlite::{params, CachedStatement, Connection, TransactionBehavior};
use wattprint_core::sample::{EnergySample, EnergySource, MAX_SAMPLE_SPAN_MS};
use wattprint_core::timeline::{GpuTimeline, SpanKey};
use wattprint_core::{GpuUuid, InstanceId, RegionId, TenantId, UnixMillis, BUCKET_MS};

/// The integer forms of a sample's unsigned values, checked before any write.
pub(super) struct Checked {
    seq: i64,
    energy_mj: i64,
    mem_used_bytes: i64,
}

/// Validates the sample ([`crate::checks::check_enriched`]) and converts its unsigned values
/// to SQLite's integers.
pub(super) fn check_enriched(s: &EnrichedSample) -> Result<Checked, StoreError> {
    crate::checks::check_enriched(s)?;
    let sample = &s.sample;
    Ok(Checked {
        seq: to_stored("sequence number", sample.seq)?,
        energy_mj: to_stored("energy (mJ)", sample.energy.0)?,
        mem_used_bytes: to_stored("memory used (bytes)", sample.mem_used_bytes)?,
    })
}

const INSERT_SAMPLE: &str = "INSERT INTO samples (gpu_uuid, seq, tenant, instance_id, host, \
     start_ms, end_ms, energy_mj, power_mw, power_max_mw, util_pct, mem_used_bytes, temp_c, \
     sm_clock_mhz, chain_start, energy_source, attribution) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
     ON CONFLICT (gpu_uuid, seq) DO NOTHING";

/// Adds one share to its interval. Region, PUE and a joined intensity are kept from the first
/// write of the interval; an interval first written without intensity takes the first one that
/// arrives later (all five columns together, so they never mix two joins).
const UPSERT_INTERVAL: &str = "INSERT INTO intervals (instance_id, gpu_uuid, bucket_ms, tenant, \
     energy_mj, estimated_mj, covered_ms, samples, power_max_mw, region, intensity_g_per_kwh, \
     intensity_kind, intensity_source, intensity_point_ms, intensity_replayed, pue) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
     ON CONFLICT (instance_id, gpu_uuid, bucket_ms) DO UPDATE SET \
     energy_mj = energy_mj + excluded.energy_mj, \
     estimated_mj = estimated_mj + excluded.estimated_mj, \
     covered_ms = covered_ms + excluded.covered_ms, \
     samples = samples + 1, \
     power_max_mw = max(power_max_mw, excluded.power_max_mw), \
     intensity_g_per_kwh = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_g_per_kwh ELSE intensity_g_per_kwh END, \
     intensity_source = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_source ELSE intensity_source END, \
     intensity_point_ms = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_point_ms ELSE intensity_point_ms END, \
     intensity_replayed = CASE WHEN intensity_kind IS NULL \
         THEN excluded.intensity_replayed ELSE intensity_replayed END, \
     intensity_kind = coalesce(intensity_kind, excluded.intensity_kind)";

/// Writes a checked batch in one `IMMEDIATE` transaction: each sample is new (stored with its
/// shares), a duplicate, a conflict, or refused for overlapping its GPU's stored energy.
pub(super) fn write_samples(
    conn: &mut Connection,
    batch: &[EnrichedSample],
    checked: &[Checked],
) -> Result<WriteOutcome, StoreError> {
    const OP: &str = "writing samples";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let mut outcome = WriteOutcome::default();
    {
        let mut insert = tx.prepare_cached(INSERT_SAMPLE).map_err(db_err(OP))?;
        let mut upsert = tx.prepare_cached(UPSERT_INTERVAL).map_err(db_err(OP))?;
        let mut load = tx
            .prepare_cached(&format!(
                "SELECT {SAMPLE_COLUMNS} FROM samples WHERE gpu_uuid = ?1 AND seq = ?2"
            ))
            .map_err(db_err(OP))?;
        // The GPU's stored spans starting before this one ends, latest first. The walk stops
        // at the first that ends by its start (stored spans do not overlap, so none earlier
        // can reach it): a check reads the spans it overlaps plus one, not the whole
        // MAX_SAMPLE_SPAN_MS before it. Its own key is the duplicate/conflict check's.
        let mut before_end = tx
            .prepare_cached(&format!(
                "SELECT seq, start_ms, end_ms FROM samples \
                 WHERE gpu_uuid = ?1 AND start_ms < ?3 AND start_ms > ?2 - {MAX_SAMPLE_SPAN_MS} \
                 ORDER BY start_ms DESC"
            ))
            .map_err(db_err(OP))?;
        for (es, c) in batch.iter().zip(checked) {
            let s = &es.sample;
            let span = SpanKey {
                seq: s.seq,
                start: s.start,
                end: s.end,
            };
            let stored = spans_before_end(&mut before_end, s, c.seq)?;
            if let Err(o) = GpuTimeline::new(stored).claim(&s.gpu, span) {
                tracing::warn!(gpu = %s.gpu, seq = s.seq, stored_seq = o.stored_seq, "sample overlaps stored energy of its GPU; refused");
                outcome.refused.push(RefusedSample::overlap(o));
                continue;
            }
            let inserted = insert
                .execute(params![
                    s.gpu.as_str(),
                    c.seq,
                    es.tenant.as_str(),
                    s.instance.as_str(),
                    s.host.as_str(),
                    s.start.0,
                    s.end.0,
                    c.energy_mj,
                    s.power.0,
                    s.power_max.0,
                    s.util_gpu_pct,
                    c.mem_used_bytes,
                    s.temp_c,
                    s.sm_clock_mhz,
                    s.chain_start,
                    s.energy_source.as_str(),
                    s.attribution.as_str(),
                ])
                .map_err(db_err(OP))?;
            if inserted == 1 {
                outcome.inserted = outcome.inserted.saturating_add(1);
                add_shares(&mut upsert, es)?;
            } else {
                let stored = load
                    .query_row(params![s.gpu.as_str(), c.seq], RawSample::from_row)
                    .map_err(db_err(OP))?
                    .decode()?;
                if stored == *s {
                    outcome.duplicates = outcome.duplicates.saturating_add(1);
                } else {
                    tracing::warn!(
                        gpu = %s.gpu,
                        seq = s.seq,
                        "sample redelivered with different content; kept the stored one"
                    );
                    outcome.conflicts.push((s.gpu.clone(), s.seq));
                }
            }
        }
    }
    tx.commit().map_err(db_err(OP))?;
    Ok(outcome)
}

/// The GPU's stored spans that `s` could overlap, from `before_end` (the GPU's spans starting
/// before `s` ends, latest first), leaving out its own key `seq`.
fn spans_before_end(
    before_end: &mut CachedStatement<'_>,
    s: &EnergySample,
    seq: i64,
) -> Result<Vec<SpanKey>, StoreError> {
    const OP: &str = "writing samples";
    let mut stored = Vec::new();
    let mut rows = before_end
        .query(params![s.gpu.as_str(), s.start.0, s.end.0])
        .map_err(db_err(OP))?;
    while let Some(row) = rows.next().map_err(db_err(OP))? {
        let row_seq: i64 = row.get(0).map_err(db_err(OP))?;
        let key = SpanKey {
            seq: row_seq as u64,
            start: UnixMillis(row.get(1).map_err(db_err(OP))?),
            end: UnixMillis(row.get(2).map_err(db_err(OP))?),
        };
        if key.end <= s.start {
            break;
        }
        if row_seq != seq {
            stored.push(key);
        }
    }
    Ok(stored)
}

/// Adds each of a newly stored sample's shares to its interval ([`UPSERT_INTERVAL`]).
fn add_shares(upsert: &mut CachedStatement<'_>, es: &EnrichedSample) -> Result<(), StoreError> {
    const OP: &str = "writing samples";
    let s = &es.sample;
    let estimated = s.energy_source == EnergySource::PowerIntegration;
    let power_max = s.power_max.max(s.power).0;
    for share in &es.shares {
        // Fits: shares sum to the sample's energy, checked to fit in i64.
        let energy = to_stored("share energy (mJ)", share.energy.0)?;
        let i = share.intensity.as_ref();
        upsert
            .execute(params![
                s.instance.as_str(),
                s.gpu.as_str(),
                share.bucket.start().0,
                es.tenant.as_str(),
                energy,
                if estimated { energy } else { 0 },
                share.covered_ms,
                power_max,
                es.region.as_str(),
                i.map(|i| i.value.0),
                i.map(|i| i.kind.as_str()),
                i.map(|i| i.source.as_str()),
                i.map(|i| i.point_at.0),
                i.map(|i| i.replayed),
                es.pue,
            ])
            .map_err(db_err(OP))?;
    }
    Ok(())
}

/// The instance's samples overlapping `[from, to)`, in time order, at most `limit`.
/// The samples of tenant `?1`, instance `?2` overlapping `[?3, ?4)`, at most `?5`. The start
/// index is named: a sample ends at most [`MAX_SAMPLE_SPAN_MS`] after it starts, so starts in
/// `(?3 − span, ?4)` are a short range, where the planner (without statistics) may pick the
/// end index and walk every sample of the instance ending after `?3`.
fn read_samples_sql() -> String {
    format!(
        "SELECT {SAMPLE_COLUMNS} FROM samples INDEXED BY samples_by_instance_start \
         WHERE tenant = ?1 AND instance_id = ?2 AND start_ms < ?4 AND end_ms > ?3 \
         AND start_ms > ?3 - {MAX_SAMPLE_SPAN_MS} \
         ORDER BY start_ms, end_ms, gpu_uuid, seq LIMIT ?5"
    )
}

pub(super) fn read_samples(
    conn: &mut Connection,
    tenant: &TenantId,
    instance: &InstanceId,
    from: UnixMillis,
    to: UnixMillis,
    limit: u32,
) -> Result<Vec<SampleRow>, StoreError> {
    const OP: &str = "reading samples";
    let tx = conn.transaction().map_err(db_err(OP))?;
    require_instance(&tx, tenant, instance, OP)?;
    let mut stmt = tx.prepare_cached(&read_samples_sql()).map_err(db_err(OP))?;
    let raw = stmt
        .query_map(
            params![tenant.as_str(), instance.as_str(), from.0, to.0, limit],
            RawSample::from_row,
        )
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    raw.into_iter()
        .map(|r| {
            Ok(SampleRow {
                sample: r.decode()?,
            })
        })
        .collect()
}

/// Every tenant's facility energy (Σ energy × PUE, kWh) per region and hour over the intervals
/// of `regions` with buckets in `[from, to)`, by region then hour.
pub(super) fn region_hourly_facility_energy(
    conn: &mut Connection,
    regions: &[RegionId],
    from: UnixMillis,
    to: UnixMillis,
) -> Result<Vec<RegionHourEnergy>, StoreError> {
    const OP: &str = "reading facility energy per region and hour";
    if regions.is_empty() {
        return Ok(Vec::new());
    }
    let marks = vec!["?"; regions.len()].join(", ");
    // Whole hours (a statement's period) read the hourly totals through their hour index,
    // about a twelfth of the rows; any other range reads the intervals.
    let sql = if from.0.rem_euclid(crate::HOUR_MS) == 0 && to.0.rem_euclid(crate::HOUR_MS) == 0 {
        format!(
            "SELECT region, hour_ms, TOTAL(facility_kwh) FROM interval_hours \
             WHERE hour_ms >= ? AND hour_ms < ? AND region IN ({marks}) \
             GROUP BY region, hour_ms HAVING SUM(energy_mj) > 0 ORDER BY region, hour_ms"
        )
    } else {
        format!(
            "SELECT region, (bucket_ms / 3600000) * 3600000 AS hour_ms, \
             SUM(energy_mj * pue) / 3600000000.0 FROM intervals \
             WHERE bucket_ms >= ? AND bucket_ms < ? AND region IN ({marks}) \
             GROUP BY region, hour_ms HAVING SUM(energy_mj) > 0 ORDER BY region, hour_ms"
        )
    };
    let mut stmt = conn.prepare(&sql).map_err(db_err(OP))?;
    let args: Vec<rusqlite::types::Value> = [from.0.into(), to.0.into()]
        .into_iter()
        .chain(regions.iter().map(|r| r.as_str().to_owned().into()))
        .collect();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, f64>(2)?,
            ))
        })
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    Ok(rows
        .into_iter()
        .map(|(region, hour, facility_kwh)| RegionHourEnergy {
            region: RegionId(region),
            hour: UnixMillis(hour),
            facility_kwh,
        })
        .collect())
}

/// Interval rows for buckets in `[from, to)`: of one instance (by bucket then GPU; unknown or
/// another tenant's: `NotFound`), or with `instance` None of all the tenant's instances,
/// those given up included (by instance, bucket, GPU).
pub(super) fn read_intervals(
    conn: &mut Connection,
    tenant: &TenantId,
    instance: Option<&InstanceId>,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<Vec<IntervalRow>, StoreError> {
    const OP: &str = "reading intervals";
    let tx = conn.transaction().map_err(db_err(OP))?;
    // Two statements, so the one-instance read keeps its range of the clustered table.
    match instance {
        Some(instance) => {
            require_instance(&tx, tenant, instance, OP)?;
            let mut stmt = tx
                .prepare_cached(&one_instance_intervals_sql())
                .map_err(db_err(OP))?;
            // At least one row per bucket: the vector grows less often.
            let buckets = usize::try_from(to.since(from) / BUCKET_MS).unwrap_or(0);
            decode_intervals(
                stmt.query(params![tenant.as_str(), instance.as_str(), from.0, to.0]),
                buckets.min(MAX_RESERVED_ROWS),
                OP,
            )
        }
        None => {
            let mut stmt = tx
                .prepare_cached(&tenant_intervals_sql())
                .map_err(db_err(OP))?;
            decode_intervals(stmt.query(params![tenant.as_str(), from.0, to.0]), 0, OP)
        }
    }
}

/// The most rows a read reserves room for before it has seen them (a year of buckets).
const MAX_RESERVED_ROWS: usize = 366 * 288;

/// Decodes interval rows as SQLite steps through them, into one vector (a month of one
/// instance is 34,560 rows: no intermediate copy of them).
fn decode_intervals(
    rows: rusqlite::Result<rusqlite::Rows<'_>>,
    reserve: usize,
    op: &'static str,
) -> Result<Vec<IntervalRow>, StoreError> {
    let mut rows = rows.map_err(db_err(op))?;
    let mut out = Vec::with_capacity(reserve);
    while let Some(r) = rows.next().map_err(db_err(op))? {
        out.push(RawInterval::from_row(r).map_err(db_err(op))?.decode()?);
    }
    Ok(out)
}

/// One instance's intervals of tenant `?1`, instance `?2`, buckets in `[?3, ?4)`: a range
/// of the table's primary key `(instance, bucket, GPU)`, in its order (`+tenant` keeps the
/// planner off `intervals_by_tenant`, whose every row would cost a lookup in the table).
fn one_instance_intervals_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals \
         WHERE +tenant = ?1 AND instance_id = ?2 AND bucket_ms >= ?3 AND bucket_ms < ?4 \
         ORDER BY bucket_ms, gpu_uuid"
    )
}

/// Every interval of tenant `?1` with buckets in `[?2, ?3)`, by instance, bucket and GPU:
/// the instances with daily totals in those days, each one's range of the clustered primary
/// key, in its order (no sort, no lookup per row through a tenant index).
fn tenant_intervals_sql() -> String {
    format!(
        "SELECT {INTERVAL_COLUMNS} FROM intervals WHERE {} \
         AND +tenant = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 \
         ORDER BY instance_id, bucket_ms, gpu_uuid",
        super::days::with_days_in("?2", "?3")
    )
}

/// Per GPU and hour, one instance's totals from `interval_hours` (hours in `[from, to)`,
/// whole hours, checked by the caller): a contiguous read of the clustered table.
pub(super) fn read_hourly_usage(
    conn: &mut Connection,
    tenant: &TenantId,
    instance: &InstanceId,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<Vec<GpuHourUsage>, StoreError> {
    const OP: &str = "reading hourly usage";
    let tx = conn.transaction().map_err(db_err(OP))?;
    require_instance(&tx, tenant, instance, OP)?;
    let mut stmt = tx
        .prepare_cached(super::days::instance_hours_sql())
        .map_err(db_err(OP))?;
    let raw = stmt
        .query_map(
            params![tenant.as_str(), instance.as_str(), from.0, to.0],
            |r| {
                Ok((
                    RawUsage::from_row(r)?,
                    r.get::<_, i64>(17)?,
                    r.get::<_, f64>(18)?,
                    r.get::<_, String>(19)?,
                ))
            },
        )
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    // Rows are per region: a GPU-hour in several regions (rare: an instance moved) is merged
    // into one row without a region.
    let mut out: Vec<GpuHourUsage> = Vec::with_capacity(raw.len());
    for (usage, hour, intensity_sum, region) in raw {
        // The GPU was read in the instance's place.
        let summary = usage.decode()?;
        let row = GpuHourUsage {
            gpu: GpuUuid::new(summary.instance.0),
            hour: UnixMillis(hour),
            totals: summary.totals,
            intensity_sum,
            region: Some(RegionId(region)),
        };
        match out.last_mut() {
            Some(last) if last.hour == row.hour && last.gpu == row.gpu => last.merge(row),
            _ => out.push(row),
        }
    }
    Ok(out)
}

/// One aggregate over the tenant's `intervals` rows (already one row per instance, GPU and
/// bucket, written exactly once per sample): no rollups needed at the embedded store's scale.
/// The `(tenant, instance)`s that have 5-minute intervals (every stored sample has one).
pub(super) fn sample_instances(conn: &mut Connection) -> Result<Vec<(String, String)>, StoreError> {
    const OP: &str = "pruning samples";
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT tenant, instance_id FROM intervals")
        .map_err(db_err(OP))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    Ok(rows)
}

/// Deletes the instance's samples that ended before `before` (an index range: a sample that
/// ended before it started before it).
pub(super) fn prune_instance_samples(
    conn: &mut Connection,
    tenant: &str,
    instance: &str,
    before: UnixMillis,
) -> Result<u64, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM samples WHERE tenant = ?1 AND instance_id = ?2 AND start_ms < ?3 \
             AND end_ms < ?3",
            params![tenant, instance, before.0],
        )
        .map_err(db_err("pruning samples"))?;
    Ok(n as u64)
}

pub(super) fn summarise(
    conn: &mut Connection,
    tenant: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<TenantSummary, StoreError> {
    const OP: &str = "summarising a tenant";
    // Whole days from their daily totals, the ragged edges from the intervals.
    let (d1, d2) = super::days::whole_days(from.0, to.0);
    let mut stmt = conn
        .prepare_cached(&super::days::summary_sql())
        .map_err(db_err(OP))?;
    let raw = stmt
        .query_map(
            params![tenant.as_str(), d1, d2, from.0, to.0],
            RawUsage::from_row,
        )
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    let instances = raw
        .into_iter()
        .map(RawUsage::decode)
        .collect::<Result<Vec<InstanceSummary>, _>>()?;
    Ok(TenantSummary::of(instances, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples of an edge window are a range of the start index, whatever the planner
    /// would choose.
    #[test]
    fn edge_samples_read_a_range_of_the_start_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn, &super::super::schema::MIGRATIONS).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", read_samples_sql()))
            .unwrap()
            .query_map(params!["t", "i", 0, 1, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan[0].contains("samples_by_instance_start (tenant=? AND instance_id=? AND start_ms>? AND start_ms<?)"),
            "{plan:?}"
        );
    }

    /// A tenant's intervals are its instances' ranges of the clustered primary key, in its
    /// order (no temporary sort of every row).
    #[test]
    fn tenant_intervals_read_ranges_of_the_primary_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn, &super::super::schema::MIGRATIONS).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", tenant_intervals_sql()))
            .unwrap()
            .query_map(params!["t", 0, 1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan[0].starts_with("SEARCH intervals USING PRIMARY KEY (instance_id=? AND bucket_ms>? AND bucket_ms<?)"),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|p| p.contains("FOR ORDER BY")), "{plan:?}");
    }

    /// One instance's intervals are a range of the clustered primary key, read in its order
    /// (no sort, no lookup per row through another index).
    #[test]
    fn one_instance_intervals_read_a_range_of_the_primary_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn, &super::super::schema::MIGRATIONS).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                one_instance_intervals_sql()
            ))
            .unwrap()
            .query_map(params!["t", "i", 0, 1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            plan,
            ["SEARCH intervals USING PRIMARY KEY (instance_id=? AND bucket_ms>? AND bucket_ms<?)"],
        );
    }
}
