//! Rows as ClickHouse stores them (RowBinary, field order = column order of the query), and
//! their checked conversion to and from domain types.
//!
//! Reading never trusts the server: enum strings are parsed, buckets checked for alignment and
//! narrowing conversions range-checked; a value that does not fit is [`StoreError::Corrupt`].

use crate::{EnrichedSample, EnrichedShare, IntervalRow, QuarantineRecord, StoreError};
use ::clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::mem::take;
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    Bucket, GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, UnixMillis,
};

fn flag(v: bool) -> u8 {
    u8::from(v)
}

fn stored_bool(table: &'static str, column: &str, v: u8) -> Result<bool, StoreError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(StoreError::Corrupt {
            table,
            detail: format!("{column} = {v} is not 0 or 1"),
        }),
    }
}

/// A `samples` row.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub(crate) struct StoredSample {
    pub tenant: String,
    pub instance_id: String,
    pub gpu_uuid: String,
    pub seq: u64,
    pub host: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub energy_mj: u64,
    pub power_mw: u32,
    pub power_max_mw: u32,
    pub util_pct: u32,
    pub mem_used_bytes: u64,
    pub temp_c: u32,
    pub sm_clock_mhz: u32,
    pub chain_start: u8,
    pub energy_source: String,
    pub attribution: String,
}

impl StoredSample {
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
            gpu: GpuUuid(self.gpu_uuid),
            instance: InstanceId(self.instance_id),
            seq: self.seq,
            start: UnixMillis(self.start_ms),
            end: UnixMillis(self.end_ms),
            energy: Millijoules(self.energy_mj),
            power: Milliwatts(self.power_mw),
            power_max: Milliwatts(self.power_max_mw),
            util_gpu_pct: self.util_pct,
            mem_used_bytes: self.mem_used_bytes,
            temp_c: self.temp_c,
            sm_clock_mhz: self.sm_clock_mhz,
            chain_start: stored_bool(T, "chain_start", self.chain_start)?,
            energy_source,
            attribution,
        })
    }
}

/// A `samples` row as written: borrowed from the sample it encodes, so a batch's rows cost no
/// allocation of their own (the write path's rows; [`StoredSample`] is the row read back).
#[derive(Debug, Row, Serialize)]
pub(crate) struct NewSample<'a> {
    tenant: &'a str,
    instance_id: &'a str,
    gpu_uuid: &'a str,
    seq: u64,
    host: &'a str,
    start_ms: i64,
    end_ms: i64,
    energy_mj: u64,
    power_mw: u32,
    power_max_mw: u32,
    util_pct: u32,
    mem_used_bytes: u64,
    temp_c: u32,
    sm_clock_mhz: u32,
    chain_start: u8,
    energy_source: &'a str,
    attribution: &'a str,
}

impl<'a> NewSample<'a> {
    /// The row for a sample of `tenant`.
    pub(crate) fn of(tenant: &'a str, s: &'a EnergySample) -> Self {
        Self {
            tenant,
            instance_id: s.instance.as_str(),
            gpu_uuid: s.gpu.as_str(),
            seq: s.seq,
            host: s.host.as_str(),
            start_ms: s.start.0,
            end_ms: s.end.0,
            energy_mj: s.energy.0,
            power_mw: s.power.0,
            power_max_mw: s.power_max.0,
            util_pct: s.util_gpu_pct,
            mem_used_bytes: s.mem_used_bytes,
            temp_c: s.temp_c,
            sm_clock_mhz: s.sm_clock_mhz,
            chain_start: flag(s.chain_start),
            energy_source: s.energy_source.as_str(),
            attribution: s.attribution.as_str(),
        }
    }
}

/// A `shares` row: one bucket's share of one sample, under the deterministic key
/// `(instance_id, bucket_ms, gpu_uuid, seq)`.
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub(crate) struct StoredShare {
    pub tenant: String,
    pub instance_id: String,
    pub bucket_ms: i64,
    pub gpu_uuid: String,
    pub seq: u64,
    pub energy_mj: u64,
    pub estimated_mj: u64,
    pub covered_ms: i64,
    pub power_max_mw: u32,
    pub region: String,
    pub has_intensity: u8,
    pub intensity_value: f64,
    pub intensity_kind: String,
    pub intensity_source: String,
    pub intensity_point_ms: i64,
    pub intensity_replayed: u8,
    pub pue: f64,
}

/// The key of a [`StoredShare`].
pub(crate) type ShareKey = (String, i64, String, u64);

/// A `shares` row as written, borrowed like [`NewSample`].
#[derive(Debug, Row, Serialize)]
pub(crate) struct NewShare<'a> {
    tenant: &'a str,
    instance_id: &'a str,
    bucket_ms: i64,
    gpu_uuid: &'a str,
    seq: u64,
    energy_mj: u64,
    estimated_mj: u64,
    covered_ms: i64,
    power_max_mw: u32,
    region: &'a str,
    has_intensity: u8,
    intensity_value: f64,
    intensity_kind: &'a str,
    intensity_source: &'a str,
    intensity_point_ms: i64,
    intensity_replayed: u8,
    pue: f64,
}

impl<'a> NewShare<'a> {
    /// The row for one share of an enriched sample.
    pub(crate) fn of(es: &'a EnrichedSample, share: &'a EnrichedShare) -> Self {
        let s = &es.sample;
        let estimated = s.energy_source == EnergySource::PowerIntegration;
        let i = share.intensity.as_ref();
        Self {
            tenant: es.tenant.as_str(),
            instance_id: s.instance.as_str(),
            bucket_ms: share.bucket.start().0,
            gpu_uuid: s.gpu.as_str(),
            seq: s.seq,
            energy_mj: share.energy.0,
            estimated_mj: if estimated { share.energy.0 } else { 0 },
            covered_ms: share.covered_ms,
            power_max_mw: s.power_max.max(s.power).0,
            region: es.region.as_str(),
            has_intensity: flag(i.is_some()),
            intensity_value: i.map_or(0.0, |i| i.value.0),
            intensity_kind: i.map_or("", |i| i.kind.as_str()),
            intensity_source: i.map_or("", |i| i.source.as_str()),
            intensity_point_ms: i.map_or(0, |i| i.point_at.0),
            intensity_replayed: flag(i.is_some_and(|i| i.replayed)),
            pue: es.pue,
        }
    }

    /// Its deterministic key.
    pub(crate) fn key(&self) -> ShareKey {
        (
            self.instance_id.to_owned(),
            self.bucket_ms,
            self.gpu_uuid.to_owned(),
            self.seq,
        )
    }

    /// Whether `stored` holds exactly this row.
    pub(crate) fn is_stored_as(&self, stored: &StoredShare) -> bool {
        let StoredShare {
            tenant,
            instance_id,
            bucket_ms,
            gpu_uuid,
            seq,
            energy_mj,
            estimated_mj,
            covered_ms,
            power_max_mw,
            region,
            has_intensity,
            intensity_value,
            intensity_kind,
            intensity_source,
            intensity_point_ms,
            intensity_replayed,
            pue,
        } = stored;
        (
            tenant.as_str(),
            instance_id.as_str(),
            *bucket_ms,
            gpu_uuid.as_str(),
            *seq,
        ) == (
            self.tenant,
            self.instance_id,
            self.bucket_ms,
            self.gpu_uuid,
            self.seq,
        ) && (*energy_mj, *estimated_mj, *covered_ms, *power_max_mw)
            == (
                self.energy_mj,
                self.estimated_mj,
                self.covered_ms,
                self.power_max_mw,
            )
            && (
                region.as_str(),
                *has_intensity,
                *intensity_value,
                intensity_kind.as_str(),
            ) == (
                self.region,
                self.has_intensity,
                self.intensity_value,
                self.intensity_kind,
            )
            && (
                intensity_source.as_str(),
                *intensity_point_ms,
                *intensity_replayed,
                *pue,
            ) == (
                self.intensity_source,
                self.intensity_point_ms,
                self.intensity_replayed,
                self.pue,
            )
    }
}

impl StoredShare {
    /// Its deterministic key.
    pub(crate) fn key(&self) -> ShareKey {
        (
            self.instance_id.clone(),
            self.bucket_ms,
            self.gpu_uuid.clone(),
            self.seq,
        )
    }
}

/// One 5-minute interval aggregated from `shares FINAL`, in [`INTERVAL_SELECT`]'s order
/// (RowBinary is positional; the select has no aliases, which ClickHouse would let shadow the
/// columns inside the other aggregates).
#[derive(Debug, Row, Deserialize)]
pub(crate) struct AggregatedInterval {
    instance_id: String,
    gpu_uuid: String,
    bucket_ms: i64,
    energy_mj: u64,
    energy_float: f64,
    estimated_mj: u64,
    covered_ms: i64,
    samples: u64,
    power_max_mw: u32,
    region: String,
    pue: f64,
    has_intensity: u8,
    intensity_value: f64,
    intensity_kind: String,
    intensity_source: String,
    intensity_point_ms: i64,
    intensity_replayed: u8,
    tenant: String,
}

/// Aggregates of [`AggregatedInterval`] over the shares of one `(instance, GPU, bucket)`.
///
/// Sums are exact UInt64 (ClickHouse wraps on overflow, so a Float64 sum rides along to detect
/// it). Region, PUE and intensity come from the lowest sequence number, the intensity from the
/// lowest one that has any: the same answer whatever order the shares arrived in.
pub(crate) const INTERVAL_SELECT: &str = "instance_id, gpu_uuid, bucket_ms, \
     sum(energy_mj), sum(toFloat64(energy_mj)), sum(estimated_mj), sum(covered_ms), count(), \
     max(power_max_mw), argMin(region, seq), argMin(pue, seq), max(has_intensity), \
     argMinIf(intensity_value, seq, has_intensity = 1), \
     argMinIf(intensity_kind, seq, has_intensity = 1), \
     argMinIf(intensity_source, seq, has_intensity = 1), \
     argMinIf(intensity_point_ms, seq, has_intensity = 1), \
     argMinIf(intensity_replayed, seq, has_intensity = 1), argMin(tenant, seq)";

impl AggregatedInterval {
    /// [`INTERVAL_SELECT`] computed here: the aggregates of `shares`, the shares of one
    /// `(instance, GPU, bucket)` as `FINAL` leaves them (one per key), sorted by `seq`, whose
    /// strings it takes; None when there are none. Sums wrap as ClickHouse's do, and the float
    /// sum detects it alike.
    pub(crate) fn of_shares(shares: &mut [StoredShare]) -> Option<Self> {
        let energy_mj = shares.iter().fold(0u64, |a, s| a.wrapping_add(s.energy_mj));
        // As `toFloat64`: only compared with 2^64.
        let energy_float = shares.iter().map(|s| s.energy_mj as f64).sum();
        let estimated_mj = shares
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.estimated_mj));
        let covered_ms = shares
            .iter()
            .fold(0i64, |a, s| a.wrapping_add(s.covered_ms));
        let power_max_mw = shares.iter().map(|s| s.power_max_mw).max().unwrap_or(0);
        let has_intensity = shares.iter().map(|s| s.has_intensity).max().unwrap_or(0);
        let samples = shares.len() as u64;
        let with_intensity = shares.iter_mut().find(|s| s.has_intensity == 1);
        let (intensity_value, intensity_point_ms, intensity_replayed) =
            with_intensity.as_ref().map_or((0.0, 0, 0), |s| {
                (
                    s.intensity_value,
                    s.intensity_point_ms,
                    s.intensity_replayed,
                )
            });
        let (intensity_kind, intensity_source) = with_intensity
            .map(|s| (take(&mut s.intensity_kind), take(&mut s.intensity_source)))
            .unwrap_or_default();
        let first = shares.first_mut()?;
        Some(Self {
            instance_id: take(&mut first.instance_id),
            gpu_uuid: take(&mut first.gpu_uuid),
            bucket_ms: first.bucket_ms,
            energy_mj,
            energy_float,
            estimated_mj,
            covered_ms,
            samples,
            power_max_mw,
            region: take(&mut first.region),
            pue: first.pue,
            has_intensity,
            intensity_value,
            intensity_kind,
            intensity_source,
            intensity_point_ms,
            intensity_replayed,
            tenant: take(&mut first.tenant),
        })
    }

    /// The tenant the interval was stored for.
    pub(crate) fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Checks and converts to the domain row.
    pub(crate) fn decode(self) -> Result<IntervalRow, StoreError> {
        const T: &str = "shares";
        let bucket =
            Bucket::aligned(UnixMillis(self.bucket_ms)).ok_or_else(|| StoreError::Corrupt {
                table: T,
                detail: format!(
                    "bucket_ms = {} is not on a 5-minute boundary",
                    self.bucket_ms
                ),
            })?;
        // 2^64 as f64: a float sum at or past it means the integer sum wrapped.
        if self.energy_float >= 18_446_744_073_709_551_616.0 {
            return Err(StoreError::Corrupt {
                table: T,
                detail: format!(
                    "energy of {}/{}/{} overflows 64 bits",
                    self.instance_id, self.gpu_uuid, self.bucket_ms
                ),
            });
        }
        let intensity = if stored_bool(T, "has_intensity", self.has_intensity)? {
            let kind =
                IntensityKind::parse(&self.intensity_kind).ok_or_else(|| StoreError::Corrupt {
                    table: T,
                    detail: format!("unknown intensity_kind {:?}", self.intensity_kind),
                })?;
            Some(JoinedIntensity {
                value: GramsPerKwh(self.intensity_value),
                kind,
                source: self.intensity_source,
                point_at: UnixMillis(self.intensity_point_ms),
                replayed: stored_bool(T, "intensity_replayed", self.intensity_replayed)?,
            })
        } else {
            None
        };
        Ok(IntervalRow {
            instance: InstanceId(self.instance_id),
            gpu: GpuUuid(self.gpu_uuid),
            bucket,
            energy: Millijoules(self.energy_mj),
            estimated: Millijoules(self.estimated_mj),
            covered_ms: self.covered_ms,
            samples: u32::try_from(self.samples).map_err(|_| StoreError::Corrupt {
                table: T,
                detail: format!("{} samples in one interval", self.samples),
            })?,
            power_max: Milliwatts(self.power_max_mw),
            region: RegionId(self.region),
            intensity,
            pue: self.pue,
        })
    }
}

/// A `sample_keys` row: sample `(gpu_uuid, seq)` is stored under `instance_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Row, Serialize, Deserialize)]
pub(crate) struct SampleKey {
    pub gpu_uuid: String,
    pub seq: u64,
    pub instance_id: String,
}

impl SampleKey {
    /// The key of a sample.
    pub(crate) fn of(s: &EnergySample) -> Self {
        Self {
            gpu_uuid: s.gpu.0.clone(),
            seq: s.seq,
            instance_id: s.instance.0.clone(),
        }
    }
}

/// A `sample_keys` row as written, borrowed from its sample.
#[derive(Debug, Row, Serialize)]
pub(crate) struct NewSampleKey<'a> {
    gpu_uuid: &'a str,
    seq: u64,
    instance_id: &'a str,
}

impl<'a> NewSampleKey<'a> {
    /// The marker of a sample.
    pub(crate) fn of(s: &'a EnergySample) -> Self {
        Self {
            gpu_uuid: s.gpu.as_str(),
            seq: s.seq,
            instance_id: s.instance.as_str(),
        }
    }
}

/// A `gpu_spans` row: the time one stored sample of a GPU covers (one GPU, one timeline).
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub(crate) struct GpuSpan {
    pub gpu_uuid: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub seq: u64,
}

impl GpuSpan {
    /// As the timeline sees it.
    pub(crate) fn key(&self) -> wattprint_core::timeline::SpanKey {
        span_key(self.seq, self.start_ms, self.end_ms)
    }
}

fn span_key(seq: u64, start_ms: i64, end_ms: i64) -> wattprint_core::timeline::SpanKey {
    wattprint_core::timeline::SpanKey {
        seq,
        start: wattprint_core::UnixMillis(start_ms),
        end: wattprint_core::UnixMillis(end_ms),
    }
}

/// A `gpu_spans` row as written, borrowed from its sample.
#[derive(Debug, Row, Serialize)]
pub(crate) struct NewSpan<'a> {
    gpu_uuid: &'a str,
    start_ms: i64,
    end_ms: i64,
    seq: u64,
}

impl<'a> NewSpan<'a> {
    /// The span of a sample.
    pub(crate) fn of(s: &'a EnergySample) -> Self {
        Self {
            gpu_uuid: s.gpu.as_str(),
            start_ms: s.start.0,
            end_ms: s.end.0,
            seq: s.seq,
        }
    }

    /// As the timeline sees it.
    pub(crate) fn key(&self) -> wattprint_core::timeline::SpanKey {
        span_key(self.seq, self.start_ms, self.end_ms)
    }
}

/// A `rollup_marks` row: one write added shares to `(tenant, instance, hour)`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct RollupMark {
    pub tenant: String,
    pub instance_id: String,
    pub hour_ms: i64,
    pub writes: u64,
}

/// A `quarantine` row.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct StoredQuarantine {
    pub received_at_ms: i64,
    pub written_ns: i64,
    pub position: u32,
    pub host: String,
    pub gpu_uuid: Option<String>,
    pub seq: Option<u64>,
    pub reason: String,
    pub payload: String,
}

impl StoredQuarantine {
    /// The row for the `position`-th record of a write made at `written_ns`.
    pub(crate) fn encode(r: &QuarantineRecord, written_ns: i64, position: u32) -> Self {
        Self {
            received_at_ms: r.received_at.0,
            written_ns,
            position,
            host: r.host.0.clone(),
            gpu_uuid: r.gpu.as_ref().map(|g| g.0.clone()),
            seq: r.seq,
            reason: r.reason.clone(),
            payload: r.payload.clone(),
        }
    }

    /// The record.
    pub(crate) fn decode(self) -> QuarantineRecord {
        QuarantineRecord {
            received_at: UnixMillis(self.received_at_ms),
            host: HostId(self.host),
            gpu: self.gpu_uuid.map(GpuUuid),
            seq: self.seq,
            reason: self.reason,
            payload: self.payload,
        }
    }
}

/// An `instances` row (one version).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct StoredInstance {
    pub instance_id: String,
    pub tenant: String,
    pub region: String,
    pub zip_code: Option<String>,
    pub version: u64,
}

/// A `gpus` row (one version; `attached = 0` is a tombstone).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct StoredGpu {
    pub uuid: String,
    pub instance_id: String,
    pub model: String,
    pub power_limit_mw: u32,
    pub attached: u8,
    pub version: u64,
}

/// A `gpu_hosts` row: the host whose agent reads GPU `uuid`, as of `version`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct StoredGpuHost {
    pub uuid: String,
    pub host: String,
    pub version: u64,
}

/// A `workloads` row.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct StoredWorkload {
    pub tenant: String,
    pub id: String,
    pub label: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub functional_unit: String,
    pub functional_units: f64,
    pub instances: Vec<String>,
    pub created_at_ms: i64,
    pub created_ns: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::TenantId;

    /// A power-integrated sample (so its share is an estimate) with one share and intensity.
    fn enriched() -> EnrichedSample {
        let bucket = Bucket::aligned(UnixMillis(1_700_000_100_000)).unwrap();
        EnrichedSample {
            sample: EnergySample {
                host: HostId::from("h1"),
                gpu: GpuUuid::from("GPU-1"),
                instance: InstanceId::from("i-1"),
                seq: 7,
                start: bucket.start(),
                end: UnixMillis(bucket.start().0 + 1_000),
                energy: Millijoules(420),
                power: Milliwatts(420_000),
                power_max: Milliwatts(300_000),
                util_gpu_pct: 50,
                mem_used_bytes: 1,
                temp_c: 60,
                sm_clock_mhz: 1_500,
                chain_start: false,
                energy_source: EnergySource::PowerIntegration,
                attribution: Attribution::Exclusive,
            },
            tenant: TenantId::from("acme"),
            region: RegionId::from("CAISO_NORTH"),
            pue: 1.2,
            shares: vec![EnrichedShare {
                bucket,
                energy: Millijoules(420),
                covered_ms: 1_000,
                intensity: Some(JoinedIntensity {
                    value: GramsPerKwh(250.5),
                    kind: IntensityKind::Actual,
                    source: "watttime:CAISO_NORTH".into(),
                    point_at: bucket.start(),
                    replayed: false,
                }),
            }],
        }
    }

    #[test]
    fn a_new_share_is_stored_as_the_row_with_its_columns_and_no_other() {
        let es = enriched();
        let new = NewShare::of(&es, &es.shares[0]);
        // By hand: an estimate (power integration), the larger of power and its max.
        let stored = StoredShare {
            tenant: "acme".into(),
            instance_id: "i-1".into(),
            bucket_ms: 1_700_000_100_000,
            gpu_uuid: "GPU-1".into(),
            seq: 7,
            energy_mj: 420,
            estimated_mj: 420,
            covered_ms: 1_000,
            power_max_mw: 420_000,
            region: "CAISO_NORTH".into(),
            has_intensity: 1,
            intensity_value: 250.5,
            intensity_kind: "actual".into(),
            intensity_source: "watttime:CAISO_NORTH".into(),
            intensity_point_ms: 1_700_000_100_000,
            intensity_replayed: 0,
            pue: 1.2,
        };
        assert!(new.is_stored_as(&stored));
        assert_eq!(new.key(), stored.key());
        let re_enriched = StoredShare {
            intensity_value: 999.0,
            ..stored.clone()
        };
        assert!(!new.is_stored_as(&re_enriched));
        let elsewhere = StoredShare {
            instance_id: "i-2".into(),
            ..stored
        };
        assert!(!new.is_stored_as(&elsewhere));
    }
}
