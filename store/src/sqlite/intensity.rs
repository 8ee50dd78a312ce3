//! The intensity ledger, restatements and the coverage report in SQLite.
//!
//! A restatement is a compare-and-set: an interval's intensity is replaced only if it still
//! holds the value the pass read, and the record is written in the same transaction, so two
//! passes racing never restate one interval twice nor lose a record. A pass that fails part
//! way rolls back whole, and summaries sum the interval rows themselves (no rollups here), so
//! they always equal the stored intervals.

use super::db_err;
use super::rows::{stored_int, RawInterval, INTERVAL_COLUMNS};
use crate::{LedgerQuery, LedgerWrite, RegionCoverage, Restatement, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use wattprint_core::intensity::{
    IntensityKind, IntensityPoint, JoinedIntensity, PointKind, Signal,
};
use wattprint_core::{
    Bucket, GpuUuid, GramsPerKwh, InstanceId, Millijoules, RegionId, TenantId, UnixMillis,
};

/// Version 2: the intensity ledger and the restatement record.
///
/// `issued_ms` is 0 for actuals and `model_version` '' when the provider gives none, so the
/// primary key identifies a point without NULLs (which SQLite keys treat as all distinct).
pub(crate) const V2: &str = r#"
CREATE TABLE intensity_points (
    region        TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    signal        TEXT NOT NULL CHECK (signal IN ('marginal', 'average')),
    kind          TEXT NOT NULL CHECK (kind IN ('actual', 'forecast')),
    issued_ms     INTEGER NOT NULL,
    provider      TEXT NOT NULL,
    model_version TEXT NOT NULL,
    duration_ms   INTEGER NOT NULL CHECK (duration_ms > 0),
    value         REAL NOT NULL,
    fetched_at_ms INTEGER NOT NULL,
    PRIMARY KEY (region, at_ms, signal, kind, issued_ms, provider, model_version)
) STRICT;
CREATE INDEX intensity_points_by_fetch ON intensity_points (fetched_at_ms);

CREATE TABLE restatements (
    instance_id    TEXT NOT NULL,
    gpu_uuid       TEXT NOT NULL,
    bucket_ms      INTEGER NOT NULL,
    tenant         TEXT NOT NULL,
    region         TEXT NOT NULL,
    energy_mj      INTEGER NOT NULL CHECK (energy_mj >= 0),
    pue            REAL NOT NULL,
    prev_value     REAL,
    prev_kind      TEXT,
    prev_source    TEXT,
    prev_point_ms  INTEGER,
    prev_replayed  INTEGER,
    new_value      REAL NOT NULL,
    new_kind       TEXT NOT NULL,
    new_source     TEXT NOT NULL,
    new_point_ms   INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    restated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (instance_id, gpu_uuid, bucket_ms, new_kind, new_point_ms, new_source)
) STRICT;
CREATE INDEX restatements_by_tenant ON restatements (tenant, bucket_ms);
"#;

const T_POINTS: &str = "intensity_points";
const T_RESTATED: &str = "restatements";

/// Adds points to the ledger in one transaction.
pub(crate) fn write_points(
    conn: &mut Connection,
    points: &[IntensityPoint],
) -> Result<LedgerWrite, StoreError> {
    const OP: &str = "writing intensity points";
    for p in points {
        p.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let mut outcome = LedgerWrite::default();
    {
        let key = "region = ?1 AND at_ms = ?2 AND signal = ?3 AND kind = ?4 AND issued_ms = ?5 \
                   AND provider = ?6 AND model_version = ?7";
        let mut find = tx
            .prepare_cached(&format!(
                "SELECT value, duration_ms FROM intensity_points WHERE {key}"
            ))
            .map_err(db_err(OP))?;
        let mut update = tx
            .prepare_cached(&format!(
                "UPDATE intensity_points SET value = ?8, duration_ms = ?9, fetched_at_ms = ?10 \
                 WHERE {key}"
            ))
            .map_err(db_err(OP))?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO intensity_points (region, at_ms, signal, kind, issued_ms, provider, \
                 model_version, value, duration_ms, fetched_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(db_err(OP))?;
        for p in points {
            let k = params![
                p.region.as_str(),
                p.at.0,
                p.signal.as_str(),
                p.kind.as_str(),
                p.issued_at.map_or(0, |i| i.0),
                p.provider.as_str(),
                p.model_version.as_deref().unwrap_or(""),
            ];
            let stored: Option<(f64, i64)> = find
                .query_row(k, |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db_err(OP))?;
            let all = params![
                p.region.as_str(),
                p.at.0,
                p.signal.as_str(),
                p.kind.as_str(),
                p.issued_at.map_or(0, |i| i.0),
                p.provider.as_str(),
                p.model_version.as_deref().unwrap_or(""),
                p.value.0,
                p.duration_ms,
                p.fetched_at.0,
            ];
            match stored {
                None => {
                    insert.execute(all).map_err(db_err(OP))?;
                    outcome.new += 1;
                }
                Some((v, d)) if v.to_bits() == p.value.0.to_bits() && d == p.duration_ms => {
                    outcome.unchanged += 1;
                }
                Some(_) => {
                    update.execute(all).map_err(db_err(OP))?;
                    outcome.revised += 1;
                }
            }
        }
    }
    tx.commit().map_err(db_err(OP))?;
    Ok(outcome)
}

/// Reads ledger points.
pub(crate) fn read_points(
    conn: &mut Connection,
    q: &LedgerQuery,
) -> Result<Vec<IntensityPoint>, StoreError> {
    const OP: &str = "reading intensity points";
    let mut stmt = conn
        .prepare_cached(
            "SELECT region, at_ms, signal, kind, issued_ms, provider, model_version, \
             duration_ms, value, fetched_at_ms FROM intensity_points \
             WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR region = ?3) \
             AND (?4 IS NULL OR signal = ?4) AND (?5 IS NULL OR fetched_at_ms >= ?5) \
             ORDER BY region, at_ms, signal, kind, issued_ms, provider, model_version",
        )
        .map_err(db_err(OP))?;
    let rows = stmt
        .query_map(
            params![
                q.from.0,
                q.to.0,
                q.region.as_ref().map(RegionId::as_str),
                q.signal.map(Signal::as_str),
                q.fetched_since.map(|t| t.0),
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, f64>(8)?,
                    r.get::<_, i64>(9)?,
                ))
            },
        )
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    rows.into_iter()
        .map(
            |(region, at, signal, kind, issued, provider, model, duration_ms, value, fetched)| {
                let corrupt = |detail: String| StoreError::Corrupt {
                    table: T_POINTS,
                    detail,
                };
                let signal = Signal::parse(&signal)
                    .ok_or_else(|| corrupt(format!("unknown signal {signal:?}")))?;
                let kind = PointKind::parse(&kind)
                    .ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?;
                Ok(IntensityPoint {
                    region: RegionId(region),
                    at: UnixMillis(at),
                    duration_ms,
                    value: GramsPerKwh(value),
                    signal,
                    kind,
                    issued_at: (kind == PointKind::Forecast).then_some(UnixMillis(issued)),
                    provider,
                    model_version: (!model.is_empty()).then_some(model),
                    fetched_at: UnixMillis(fetched),
                })
            },
        )
        .collect()
}

/// The intervals of `region` in `[from, to)` whose intensity could still improve: not an
/// actual for their own bucket, and not replayed. With their tenant.
pub(crate) fn restatement_candidates(
    conn: &mut Connection,
    region: &RegionId,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<Vec<(TenantId, crate::IntervalRow)>, StoreError> {
    const OP: &str = "reading intervals to restate";
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {INTERVAL_COLUMNS}, tenant FROM intervals \
             WHERE region = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 \
             AND coalesce(intensity_replayed, 0) = 0 \
             AND NOT (coalesce(intensity_kind, '') = 'actual' AND intensity_point_ms = bucket_ms) \
             ORDER BY bucket_ms, instance_id, gpu_uuid"
        ))
        .map_err(db_err(OP))?;
    let raw = stmt
        .query_map(params![region.as_str(), from.0, to.0], |r| {
            Ok((RawInterval::from_row(r)?, r.get::<_, String>(15)?))
        })
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    raw.into_iter()
        .map(|(row, tenant)| Ok((TenantId(tenant), row.decode()?)))
        .collect()
}

/// Applies restatements decided from [`restatement_candidates`]: each only if the interval
/// still holds the intensity it was read with. Returns the ones applied, with the energy and
/// PUE the interval had when it was changed.
pub(crate) fn apply_restatements(
    conn: &mut Connection,
    decided: Vec<Restatement>,
) -> Result<Vec<Restatement>, StoreError> {
    const OP: &str = "restating intervals";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let mut applied = Vec::new();
    {
        let mut update = tx
            .prepare_cached(
                "UPDATE intervals SET intensity_g_per_kwh = ?4, intensity_kind = ?5, \
                 intensity_source = ?6, intensity_point_ms = ?7, intensity_replayed = 0 \
                 WHERE instance_id = ?1 AND gpu_uuid = ?2 AND bucket_ms = ?3 \
                 AND intensity_g_per_kwh IS ?8 AND intensity_kind IS ?9 \
                 AND intensity_source IS ?10 AND intensity_point_ms IS ?11 \
                 RETURNING energy_mj, pue",
            )
            .map_err(db_err(OP))?;
        let mut record = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO restatements (instance_id, gpu_uuid, bucket_ms, tenant, \
                 region, energy_mj, pue, prev_value, prev_kind, prev_source, prev_point_ms, \
                 prev_replayed, new_value, new_kind, new_source, new_point_ms, reason, \
                 restated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 ?13, ?14, ?15, ?16, ?17, ?18)",
            )
            .map_err(db_err(OP))?;
        for mut r in decided {
            let p = r.previous.as_ref();
            let c = &r.current;
            let changed: Option<(i64, f64)> = update
                .query_row(
                    params![
                        r.instance.as_str(),
                        r.gpu.as_str(),
                        r.bucket.start().0,
                        c.value.0,
                        c.kind.as_str(),
                        c.source.as_str(),
                        c.point_at.0,
                        p.map(|p| p.value.0),
                        p.map(|p| p.kind.as_str()),
                        p.map(|p| p.source.as_str()),
                        p.map(|p| p.point_at.0),
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(db_err(OP))?;
            let Some((energy_mj, pue)) = changed else {
                continue; // Changed since it was read: the next pass sees the new value.
            };
            r.energy = Millijoules(stored_int(T_RESTATED, "energy_mj", energy_mj)?);
            r.pue = pue;
            let p = r.previous.as_ref();
            record
                .execute(params![
                    r.instance.as_str(),
                    r.gpu.as_str(),
                    r.bucket.start().0,
                    r.tenant.as_str(),
                    r.region.as_str(),
                    energy_mj,
                    pue,
                    p.map(|p| p.value.0),
                    p.map(|p| p.kind.as_str()),
                    p.map(|p| p.source.as_str()),
                    p.map(|p| p.point_at.0),
                    p.map(|p| p.replayed),
                    c.value.0,
                    c.kind.as_str(),
                    c.source.as_str(),
                    c.point_at.0,
                    r.reason.as_str(),
                    r.restated_at.0,
                ])
                .map_err(db_err(OP))?;
            applied.push(r);
        }
    }
    tx.commit().map_err(db_err(OP))?;
    Ok(applied)
}

fn decode_restatement(r: &Row<'_>) -> rusqlite::Result<RawRestatement> {
    Ok(RawRestatement {
        instance: r.get(0)?,
        gpu: r.get(1)?,
        bucket_ms: r.get(2)?,
        tenant: r.get(3)?,
        region: r.get(4)?,
        energy_mj: r.get(5)?,
        pue: r.get(6)?,
        prev: (r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?, r.get(11)?),
        new: (r.get(12)?, r.get(13)?, r.get(14)?, r.get(15)?),
        reason: r.get(16)?,
        restated_at_ms: r.get(17)?,
    })
}

/// Value, kind, source, point time and replayed flag of an intensity that may be absent.
type NullableIntensity = (
    Option<f64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

struct RawRestatement {
    instance: String,
    gpu: String,
    bucket_ms: i64,
    tenant: String,
    region: String,
    energy_mj: i64,
    pue: f64,
    prev: NullableIntensity,
    new: (f64, String, String, i64),
    reason: String,
    restated_at_ms: i64,
}

fn kind(s: &str) -> Result<IntensityKind, StoreError> {
    IntensityKind::parse(s).ok_or_else(|| StoreError::Corrupt {
        table: T_RESTATED,
        detail: format!("unknown intensity kind {s:?}"),
    })
}

impl RawRestatement {
    fn decode(self) -> Result<Restatement, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            table: T_RESTATED,
            detail,
        };
        let bucket = Bucket::aligned(UnixMillis(self.bucket_ms))
            .ok_or_else(|| corrupt(format!("bucket_ms {} not aligned", self.bucket_ms)))?;
        let previous = match self.prev {
            (None, None, None, None, None) => None,
            (Some(v), Some(k), Some(source), Some(at), Some(replayed)) => Some(JoinedIntensity {
                value: GramsPerKwh(v),
                kind: kind(&k)?,
                source,
                point_at: UnixMillis(at),
                replayed: replayed != 0,
            }),
            _ => return Err(corrupt("previous intensity partly NULL".to_owned())),
        };
        let (v, k, source, at) = self.new;
        Ok(Restatement {
            tenant: TenantId(self.tenant),
            instance: InstanceId(self.instance),
            gpu: GpuUuid(self.gpu),
            bucket,
            region: RegionId(self.region),
            energy: Millijoules(stored_int(T_RESTATED, "energy_mj", self.energy_mj)?),
            pue: self.pue,
            previous,
            current: JoinedIntensity {
                value: GramsPerKwh(v),
                kind: kind(&k)?,
                source,
                point_at: UnixMillis(at),
                replayed: false,
            },
            reason: self.reason,
            restated_at: UnixMillis(self.restated_at_ms),
        })
    }
}

/// The tenant's restatements with buckets in `[from, to)`.
pub(crate) fn read_restatements(
    conn: &mut Connection,
    tenant: &TenantId,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<Vec<Restatement>, StoreError> {
    const OP: &str = "reading restatements";
    let mut stmt = conn
        .prepare_cached(
            "SELECT instance_id, gpu_uuid, bucket_ms, tenant, region, energy_mj, pue, \
             prev_value, prev_kind, prev_source, prev_point_ms, prev_replayed, new_value, \
             new_kind, new_source, new_point_ms, reason, restated_at_ms FROM restatements \
             WHERE tenant = ?1 AND bucket_ms >= ?2 AND bucket_ms < ?3 \
             ORDER BY bucket_ms, instance_id, gpu_uuid, restated_at_ms, new_kind",
        )
        .map_err(db_err(OP))?;
    let raw = stmt
        .query_map(params![tenant.as_str(), from.0, to.0], decode_restatement)
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    raw.into_iter().map(RawRestatement::decode).collect()
}

/// Deletes the restatement records of buckets before `before`; how many.
pub(crate) fn prune_restatements(
    conn: &mut Connection,
    before: UnixMillis,
) -> Result<u64, StoreError> {
    let n = conn
        .execute(
            "DELETE FROM restatements WHERE bucket_ms < ?1",
            params![before.0],
        )
        .map_err(db_err("pruning restatements"))?;
    Ok(n as u64)
}

/// Per region, how the intervals with buckets in `[from, to)` were joined.
pub(crate) fn coverage(
    conn: &mut Connection,
    from: UnixMillis,
    to: UnixMillis,
) -> Result<Vec<RegionCoverage>, StoreError> {
    const OP: &str = "reading intensity coverage";
    let mut stmt = conn
        .prepare_cached(
            "SELECT region, \
             SUM(CASE WHEN intensity_kind = 'actual' \
                 AND (intensity_point_ms = bucket_ms OR intensity_replayed = 1) THEN 1 ELSE 0 END), \
             SUM(CASE WHEN intensity_kind = 'actual' \
                 AND intensity_point_ms <> bucket_ms AND intensity_replayed = 0 THEN 1 ELSE 0 END), \
             SUM(CASE WHEN intensity_kind = 'forecast' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN intensity_kind = 'fallback_average' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN intensity_kind IS NULL THEN 1 ELSE 0 END), \
             SUM(CASE WHEN intensity_replayed = 1 THEN 1 ELSE 0 END) \
             FROM intervals WHERE bucket_ms >= ?1 AND bucket_ms < ?2 \
             GROUP BY region ORDER BY region",
        )
        .map_err(db_err(OP))?;
    let raw = stmt
        .query_map(params![from.0, to.0], |r| {
            Ok((
                r.get::<_, String>(0)?,
                [
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ],
            ))
        })
        .map_err(db_err(OP))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err(OP))?;
    raw.into_iter()
        .map(|(region, n)| {
            let c = |i: usize| stored_int::<u64>("intervals", "count", n[i]);
            Ok(RegionCoverage {
                region: RegionId(region),
                actual: c(0)?,
                nearest_actual: c(1)?,
                forecast: c(2)?,
                fallback: c(3)?,
                missing: c(4)?,
                replayed: c(5)?,
            })
        })
        .collect()
}
