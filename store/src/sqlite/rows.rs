//! Rows as SQLite stores them, and their checked conversion to and from domain types.
//!
//! Reading never trusts the file: every integer is range-checked and every enum string parsed,
//! and a value that does not fit is a [`StoreError::Corrupt`] naming the table and column.

use crate::{InstanceSummary, IntervalRow, StoreError, UsageTotals};
use rusqlite::types::Type;
use rusqlite::Row;
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    Bucket, GpuUuid, GramsCo2e, GramsPerKwh, HostId, InstanceId, KilowattHours, Millijoules,
    Milliwatts, RegionId, UnixMillis,
};

/// Converts a stored integer to the domain's type, or reports corruption.
pub(crate) fn stored_int<T: TryFrom<i64>>(
    table: &'static str,
    column: &str,
    v: i64,
) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("{column} = {v} is out of range"),
    })
}

/// Converts an unsigned domain value to the signed integer SQLite stores, refusing values above
/// `i64::MAX` rather than wrapping them.
pub(crate) fn to_stored(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| {
        StoreError::Invalid(format!(
            "{what} {v} exceeds the storable maximum {}",
            i64::MAX
        ))
    })
}

/// Columns of `samples` in the order [`RawSample::from_row`] reads them.
pub(crate) const SAMPLE_COLUMNS: &str = "host, gpu_uuid, instance_id, seq, start_ms, end_ms, \
     energy_mj, power_mw, power_max_mw, util_pct, mem_used_bytes, temp_c, sm_clock_mhz, \
     chain_start, energy_source, attribution";

/// A `samples` row as stored.
pub(crate) struct RawSample {
    host: String,
    gpu: String,
    instance: String,
    seq: i64,
    start_ms: i64,
    end_ms: i64,
    energy_mj: i64,
    power_mw: i64,
    power_max_mw: i64,
    util_pct: i64,
    mem_used_bytes: i64,
    temp_c: i64,
    sm_clock_mhz: i64,
    chain_start: i64,
    energy_source: String,
    attribution: String,
}

impl RawSample {
    /// Reads [`SAMPLE_COLUMNS`].
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            host: r.get(0)?,
            gpu: r.get(1)?,
            instance: r.get(2)?,
            seq: r.get(3)?,
            start_ms: r.get(4)?,
            end_ms: r.get(5)?,
            energy_mj: r.get(6)?,
            power_mw: r.get(7)?,
            power_max_mw: r.get(8)?,
            util_pct: r.get(9)?,
            mem_used_bytes: r.get(10)?,
            temp_c: r.get(11)?,
            sm_clock_mhz: r.get(12)?,
            chain_start: r.get(13)?,
            energy_source: r.get(14)?,
            attribution: r.get(15)?,
        })
    }

    /// Checks and converts to the domain sample.
    pub(crate) fn decode(self) -> Result<EnergySample, StoreError> {
        const T: &str = "samples";
        let energy_source =
            EnergySource::parse(&self.energy_source).ok_or_else(|| StoreError::Corrupt {
                table: T,
                detail: format!("energy_source {:?}", self.energy_source),
            })?;
        let attribution =
            Attribution::parse(&self.attribution).ok_or_else(|| StoreError::Corrupt {
                table: T,
                detail: format!("attribution {:?}", self.attribution),
            })?;
        Ok(EnergySample {
            host: HostId(self.host),
            gpu: GpuUuid(self.gpu),
            instance: InstanceId(self.instance),
            seq: stored_int(T, "seq", self.seq)?,
            start: UnixMillis(self.start_ms),
            end: UnixMillis(self.end_ms),
            energy: Millijoules(stored_int(T, "energy_mj", self.energy_mj)?),
            power: Milliwatts(stored_int(T, "power_mw", self.power_mw)?),
            power_max: Milliwatts(stored_int(T, "power_max_mw", self.power_max_mw)?),
            util_gpu_pct: stored_int(T, "util_pct", self.util_pct)?,
            mem_used_bytes: stored_int(T, "mem_used_bytes", self.mem_used_bytes)?,
            temp_c: stored_int(T, "temp_c", self.temp_c)?,
            sm_clock_mhz: stored_int(T, "sm_clock_mhz", self.sm_clock_mhz)?,
            chain_start: stored_bool(T, "chain_start", self.chain_start)?,
            energy_source,
            attribution,
        })
    }
}

fn stored_bool(table: &'static str, column: &str, v: i64) -> Result<bool, StoreError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StoreError::Corrupt {
            table,
            detail: format!("{column} = {v} is not 0 or 1"),
        }),
    }
}

/// Columns of `intervals` in the order [`RawInterval::from_row`] reads them.
pub(crate) const INTERVAL_COLUMNS: &str = "instance_id, gpu_uuid, bucket_ms, energy_mj, \
     estimated_mj, covered_ms, samples, power_max_mw, region, intensity_g_per_kwh, \
     intensity_kind, intensity_source, intensity_point_ms, intensity_replayed, pue";

/// An `intervals` row as stored.
pub(crate) struct RawInterval {
    instance: String,
    gpu: String,
    bucket_ms: i64,
    energy_mj: i64,
    estimated_mj: i64,
    covered_ms: i64,
    samples: i64,
    power_max_mw: i64,
    region: String,
    intensity_value: Option<f64>,
    /// Parsed as read (no copy of the common case); an unknown kind keeps its text.
    intensity_kind: Option<Result<IntensityKind, String>>,
    intensity_source: Option<String>,
    intensity_point_ms: Option<i64>,
    intensity_replayed: Option<i64>,
    pue: f64,
}

impl RawInterval {
    /// Reads [`INTERVAL_COLUMNS`].
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            instance: r.get(0)?,
            gpu: r.get(1)?,
            bucket_ms: r.get(2)?,
            energy_mj: r.get(3)?,
            estimated_mj: r.get(4)?,
            covered_ms: r.get(5)?,
            samples: r.get(6)?,
            power_max_mw: r.get(7)?,
            region: r.get(8)?,
            intensity_value: r.get(9)?,
            intensity_kind: r
                .get_ref(10)?
                .as_str_or_null()
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(10, Type::Text, Box::new(e))
                })?
                .map(|k| IntensityKind::parse(k).ok_or_else(|| k.to_owned())),
            intensity_source: r.get(11)?,
            intensity_point_ms: r.get(12)?,
            intensity_replayed: r.get(13)?,
            pue: r.get(14)?,
        })
    }

    /// Checks and converts to the domain row.
    pub(crate) fn decode(self) -> Result<IntervalRow, StoreError> {
        const T: &str = "intervals";
        let bucket =
            Bucket::aligned(UnixMillis(self.bucket_ms)).ok_or_else(|| StoreError::Corrupt {
                table: T,
                detail: format!(
                    "bucket_ms = {} is not on a 5-minute boundary",
                    self.bucket_ms
                ),
            })?;
        let intensity = match (
            self.intensity_value,
            self.intensity_kind,
            self.intensity_source,
            self.intensity_point_ms,
            self.intensity_replayed,
        ) {
            (None, None, None, None, None) => None,
            (Some(value), Some(kind), Some(source), Some(point_ms), Some(replayed)) => {
                let kind = kind.map_err(|kind| StoreError::Corrupt {
                    table: T,
                    detail: format!("unknown intensity_kind {kind:?}"),
                })?;
                Some(JoinedIntensity {
                    value: GramsPerKwh(value),
                    kind,
                    source,
                    point_at: UnixMillis(point_ms),
                    replayed: stored_bool(T, "intensity_replayed", replayed)?,
                })
            }
            _ => {
                return Err(StoreError::Corrupt {
                    table: T,
                    detail: format!(
                        "intensity columns partly NULL for {}/{}/{}",
                        self.instance, self.gpu, self.bucket_ms
                    ),
                })
            }
        };
        Ok(IntervalRow {
            instance: InstanceId(self.instance),
            gpu: GpuUuid(self.gpu),
            bucket,
            energy: Millijoules(stored_int(T, "energy_mj", self.energy_mj)?),
            estimated: Millijoules(stored_int(T, "estimated_mj", self.estimated_mj)?),
            covered_ms: self.covered_ms,
            samples: stored_int(T, "samples", self.samples)?,
            power_max: Milliwatts(stored_int(T, "power_max_mw", self.power_max_mw)?),
            region: RegionId(self.region),
            intensity,
            pue: self.pue,
        })
    }
}

/// Aggregates of `intervals` per instance, in the order [`RawUsage::from_row`] reads them.
///
/// Emissions are summed per interval with the arithmetic of
/// [`GramsPerKwh::emissions`] (`E · I / MJ_PER_KWH`, then `× PUE`), facility energy as
/// `E / MJ_PER_KWH × PUE`, so they agree with what the API computes from interval rows.
/// `intensity_kind IS NULL` is the one marker of a missing intensity (the columns are written
/// together); a kind no build knows is counted apart and reported as corrupt.
/// (The reference the daily totals of `interval_days` are tested against.)
#[cfg(test)]
pub(crate) const USAGE_COLUMNS: &str = "instance_id, COUNT(DISTINCT gpu_uuid), COUNT(*), \
     SUM(energy_mj), SUM(estimated_mj), TOTAL(energy_mj / 3600000000.0 * pue), \
     SUM(covered_ms), SUM(samples), MAX(power_max_mw), \
     TOTAL(CASE WHEN intensity_kind IS NOT NULL \
         THEN energy_mj * intensity_g_per_kwh / 3600000000.0 END), \
     TOTAL(CASE WHEN intensity_kind IS NOT NULL \
         THEN energy_mj * intensity_g_per_kwh / 3600000000.0 * pue END), \
     SUM(CASE WHEN intensity_kind IS NULL THEN energy_mj ELSE 0 END), \
     SUM(CASE WHEN intensity_kind = 'actual' THEN 1 ELSE 0 END), \
     SUM(CASE WHEN intensity_kind = 'forecast' THEN 1 ELSE 0 END), \
     SUM(CASE WHEN intensity_kind = 'fallback_average' THEN 1 ELSE 0 END), \
     SUM(CASE WHEN intensity_kind IS NULL THEN 1 ELSE 0 END), \
     SUM(CASE WHEN intensity_kind IS NOT NULL AND intensity_replayed = 1 THEN 1 ELSE 0 END)";

/// One instance's aggregate of `intervals` as SQLite returns it.
pub(crate) struct RawUsage {
    instance: String,
    gpus: i64,
    intervals: i64,
    energy_mj: i64,
    estimated_mj: i64,
    facility_kwh: f64,
    covered_ms: i64,
    samples: i64,
    power_max_mw: i64,
    it_co2e_g: f64,
    facility_co2e_g: f64,
    missing_energy_mj: i64,
    actual: i64,
    forecast: i64,
    fallback: i64,
    missing: i64,
    replayed: i64,
}

impl RawUsage {
    /// Reads [`USAGE_COLUMNS`].
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            instance: r.get(0)?,
            gpus: r.get(1)?,
            intervals: r.get(2)?,
            energy_mj: r.get(3)?,
            estimated_mj: r.get(4)?,
            facility_kwh: r.get(5)?,
            covered_ms: r.get(6)?,
            samples: r.get(7)?,
            power_max_mw: r.get(8)?,
            it_co2e_g: r.get(9)?,
            facility_co2e_g: r.get(10)?,
            missing_energy_mj: r.get(11)?,
            actual: r.get(12)?,
            forecast: r.get(13)?,
            fallback: r.get(14)?,
            missing: r.get(15)?,
            replayed: r.get(16)?,
        })
    }

    /// Checks and converts to the domain summary.
    pub(crate) fn decode(self) -> Result<InstanceSummary, StoreError> {
        const T: &str = "intervals";
        let intervals: u64 = stored_int(T, "count", self.intervals)?;
        let actual: u64 = stored_int(T, "actual intervals", self.actual)?;
        let forecast: u64 = stored_int(T, "forecast intervals", self.forecast)?;
        let fallback: u64 = stored_int(T, "fallback intervals", self.fallback)?;
        let missing: u64 = stored_int(T, "missing intervals", self.missing)?;
        if actual + forecast + fallback + missing != intervals {
            return Err(StoreError::Corrupt {
                table: T,
                detail: format!(
                    "instance {} has intervals with an unknown intensity_kind",
                    self.instance
                ),
            });
        }
        Ok(InstanceSummary {
            gpus: stored_int(T, "gpus", self.gpus)?,
            totals: UsageTotals {
                gpu_intervals: intervals,
                energy: Millijoules(stored_int(T, "energy_mj", self.energy_mj)?),
                estimated: Millijoules(stored_int(T, "estimated_mj", self.estimated_mj)?),
                facility_energy: KilowattHours(self.facility_kwh),
                covered_ms: self.covered_ms,
                samples: stored_int(T, "samples", self.samples)?,
                power_max: Some(Milliwatts(stored_int(
                    T,
                    "power_max_mw",
                    self.power_max_mw,
                )?)),
                it_co2e: GramsCo2e(self.it_co2e_g),
                facility_co2e: GramsCo2e(self.facility_co2e_g),
                energy_without_intensity: Millijoules(stored_int(
                    T,
                    "energy_mj",
                    self.missing_energy_mj,
                )?),
                intervals_actual: actual,
                intervals_forecast: forecast,
                intervals_fallback: fallback,
                intervals_missing_intensity: missing,
                intervals_replayed_intensity: stored_int(T, "replayed", self.replayed)?,
            },
            instance: InstanceId(self.instance),
        })
    }
}
