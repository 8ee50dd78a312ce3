//! Storage for Wattprint: the [`Store`] trait both the embedded SQLite store and the
//! distributed ClickHouse store implement, and the rows that cross it.
//!
//! Writes are idempotent: a sample is identified by `(gpu, seq)`, and writing it again is
//! counted as a duplicate and changes nothing. Every tenant-facing read takes a
//! [`TenantScope`] and returns only that tenant's rows.
//!
//! Backends do no tracing of their own: wrap one in [`Traced`] for a span per operation.

mod checks;
pub mod clickhouse;
pub mod config;
mod metrics;
pub mod placements;
pub mod retention;
pub mod rollups;
pub mod sqlite;
pub mod statements;
mod traced;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use wattprint_core::intensity::{
    restatement_reason, IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, Signal,
};
use wattprint_core::sample::EnergySample;
use wattprint_core::sci::FootprintProvenance;
use wattprint_core::{
    Bucket, GpuUuid, GramsCo2e, HostId, InstanceId, KilowattHours, Millijoules, Milliwatts,
    RegionId, TenantId, TenantScope, UnixMillis, WorkloadId,
};

pub use self::clickhouse::ClickHouseStore;
pub use placements::{GpuPlacement, PlacementVersion};
pub use retention::{QuarantinePrune, QuarantineRetention, SampleRetention};
pub use sqlite::{SqliteStore, SqliteSync};
pub use statements::IssuedStatement;
pub use traced::Traced;

/// A SQL expression naming the refusal kind of the text column `column`, as
/// [`wattprint_core::sample::refusal_kind`] does: `contains(column, needle)` is the dialect's
/// case-sensitive substring test (SQLite `instr(…) > 0`, ClickHouse `position(…) > 0`).
pub(crate) fn refusal_kind_sql(contains: impl Fn(&str, &str) -> String, column: &str) -> String {
    let mut sql = String::from("CASE");
    for (needle, kind) in wattprint_core::sample::REFUSAL_KINDS {
        // No needle holds a backslash, which the dialects treat differently.
        let needle = format!("'{}'", needle.replace('\'', "''"));
        sql.push_str(&format!(
            " WHEN {} THEN '{kind}'",
            contains(column, &needle)
        ));
    }
    sql.push_str(" ELSE 'other' END");
    sql
}

/// A GPU in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// NVML uuid.
    pub uuid: GpuUuid,
    /// Model name as NVML reports it (the hardware catalog's key).
    pub model: String,
    /// Enforced power limit (samples above 2x are absurd).
    pub power_limit: Milliwatts,
    /// The GPU host whose agent reads this GPU: the only host the gateway accepts its samples
    /// from. Empty in records stored before hosts were recorded: no host may write such a GPU
    /// until the operator names its host.
    #[serde(default)]
    pub host: HostId,
}

/// An instance, its owner, location and GPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Owner.
    pub tenant: TenantId,
    /// The instance.
    pub instance: InstanceId,
    /// Grid region whose intensity applies.
    pub region: RegionId,
    /// Zip code of the datacenter, when known.
    pub zip_code: Option<String>,
    /// GPUs attached.
    pub gpus: Vec<GpuRecord>,
}

/// One bucket's share of an enriched sample.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichedShare {
    /// The bucket.
    pub bucket: Bucket,
    /// Energy in the bucket.
    pub energy: Millijoules,
    /// Milliseconds of the bucket covered.
    pub covered_ms: i64,
    /// Intensity joined to the bucket (None: no data, reported as missing).
    pub intensity: Option<JoinedIntensity>,
}

/// A validated sample with everything the enricher added: owner, region, PUE and its
/// per-bucket shares joined with intensity.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichedSample {
    /// The sample as the agent sent it.
    pub sample: EnergySample,
    /// Owner of the sample's instance.
    pub tenant: TenantId,
    /// Region of the instance.
    pub region: RegionId,
    /// Facility overhead of the region (1.0 when not configured).
    pub pue: f64,
    /// Shares per 5-minute bucket; they sum to the sample's energy.
    pub shares: Vec<EnrichedShare>,
}

/// What a write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Samples stored for the first time.
    pub inserted: u32,
    /// Samples already stored with identical content (redelivery): nothing changed.
    pub duplicates: u32,
    /// Samples whose `(gpu, seq)` was stored with different content: not applied, quarantined.
    pub conflicts: Vec<(GpuUuid, u64)>,
    /// Samples refused one by one, the rest of the batch written: values no store can hold
    /// (see [`wattprint_core::sample::check_storable`]) or a span overlapping stored energy of
    /// the same GPU (see [`wattprint_core::timeline`]). Not applied; the enricher quarantines
    /// them with the reason.
    pub refused: Vec<RefusedSample>,
}

/// A sample a store refused to write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedSample {
    /// The GPU.
    pub gpu: GpuUuid,
    /// Its sequence number.
    pub seq: u64,
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// What was wrong, for operators.
    pub reason: String,
}

/// Why a store refused a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A value the store cannot hold, or enrichment that does not add up.
    Invalid,
    /// Its span overlaps stored energy of the same GPU under another key.
    Overlap,
}

impl RefusedSample {
    pub(crate) fn invalid(s: &EnergySample, e: StoreError) -> Self {
        Self {
            gpu: s.gpu.clone(),
            seq: s.seq,
            kind: RefusalKind::Invalid,
            reason: e.to_string(),
        }
    }

    pub(crate) fn overlap(o: wattprint_core::timeline::Overlap) -> Self {
        Self {
            gpu: o.gpu.clone(),
            seq: o.seq,
            kind: RefusalKind::Overlap,
            reason: o.to_string(),
        }
    }
}

/// A refused sample kept for operators, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// When the gateway refused it.
    pub received_at: UnixMillis,
    /// Host that sent it.
    pub host: HostId,
    /// GPU, if it could be read.
    pub gpu: Option<GpuUuid>,
    /// Sequence number, if it could be read.
    pub seq: Option<u64>,
    /// Why it was refused.
    pub reason: String,
    /// The sample as received (JSON), for inspection and replay. The same `host`, `gpu`,
    /// `seq` and `payload` refused again (a redelivery) is held once.
    pub payload: String,
}

/// A stored raw sample (for charts at the finest resolution).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// The sample.
    pub sample: EnergySample,
}

/// Facility energy of every tenant in one region over one hour: what the region's contractual
/// instruments (certificates, PPA volumes) are matched against, hour by hour.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionHourEnergy {
    /// The region.
    pub region: RegionId,
    /// Start of the hour (a multiple of 3,600,000 ms).
    pub hour: UnixMillis,
    /// Σ IT energy × PUE over the hour's intervals of every tenant, kWh.
    pub facility_kwh: f64,
}

/// A stored 5-minute interval of one GPU of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalRow {
    /// Instance.
    pub instance: InstanceId,
    /// GPU.
    pub gpu: GpuUuid,
    /// Bucket.
    pub bucket: Bucket,
    /// Energy in the bucket, exact.
    pub energy: Millijoules,
    /// Part of it estimated (power integration) rather than counted.
    pub estimated: Millijoules,
    /// Milliseconds covered by samples.
    pub covered_ms: i64,
    /// Samples that contributed.
    pub samples: u32,
    /// Highest power seen.
    pub power_max: Milliwatts,
    /// Region.
    pub region: RegionId,
    /// Intensity joined (None: missing).
    pub intensity: Option<JoinedIntensity>,
    /// PUE applied.
    pub pue: f64,
}

/// A workload to create: a named time range over instances, with a functional unit and
/// free-form labels. Without an end it is *open* (still running) until closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWorkload {
    /// Human name (e.g. `bert-finetune-run-3`).
    pub label: String,
    /// Instances it ran on (all must belong to the tenant).
    pub instances: Vec<InstanceId>,
    /// Start of the range.
    pub from: UnixMillis,
    /// End of the range (exclusive); `None` while the workload is open.
    pub to: Option<UnixMillis>,
    /// What R counts (e.g. `training run`, `1k inferences`).
    pub functional_unit: String,
    /// How many of them (R).
    pub functional_units: f64,
    /// Key/value labels (team, project, cost centre…), at most [`MAX_WORKLOAD_LABELS`].
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Most labels one workload may carry.
pub const MAX_WORKLOAD_LABELS: usize = 64;

/// A change to a stored workload (tenant admin action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadUpdate {
    /// Replace the labels.
    Labels(BTreeMap<String, String>),
    /// Close an open workload at this end. Closing again at the same end changes nothing; at
    /// another end it is a [`StoreError::Conflict`].
    Close(UnixMillis),
}

/// A stored workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Id.
    pub id: WorkloadId,
    /// Owner.
    pub tenant: TenantId,
    /// Definition.
    #[serde(flatten)]
    pub spec: NewWorkload,
    /// Creation time.
    pub created_at: UnixMillis,
}

/// Totals over a set of 5-minute GPU-intervals (one GPU of one instance in one bucket), with the
/// provenance counts the interval rows carry. Emissions are Σ over intervals of E_i × I_i
/// (and × PUE_i for the facility figure), never E_total × mean I.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageTotals {
    /// GPU-intervals counted.
    pub gpu_intervals: u64,
    /// IT (GPU) energy, exact.
    pub energy: Millijoules,
    /// Part of `energy` estimated by power integration rather than read from the counter.
    pub estimated: Millijoules,
    /// Facility energy: Σ E_i × PUE_i.
    pub facility_energy: KilowattHours,
    /// GPU-milliseconds covered by samples.
    pub covered_ms: i64,
    /// Bucket shares of samples that contributed (a sample crossing a bucket edge counts in
    /// each bucket it touches).
    pub samples: u64,
    /// Highest single-GPU power reading; `None` when nothing was counted.
    pub power_max: Option<Milliwatts>,
    /// IT emissions: Σ E_i × I_i over intervals with an intensity.
    pub it_co2e: GramsCo2e,
    /// Facility emissions: Σ E_i × PUE_i × I_i.
    pub facility_co2e: GramsCo2e,
    /// Energy of intervals without intensity (their emissions are not counted).
    pub energy_without_intensity: Millijoules,
    /// GPU-intervals joined with an actual marginal value.
    pub intervals_actual: u64,
    /// GPU-intervals joined with a forecast.
    pub intervals_forecast: u64,
    /// GPU-intervals joined with the region's average (flagged fallback).
    pub intervals_fallback: u64,
    /// GPU-intervals without intensity.
    pub intervals_missing_intensity: u64,
    /// GPU-intervals whose intensity was a historical series replayed on a shifted clock.
    pub intervals_replayed_intensity: u64,
}

impl UsageTotals {
    /// Adds one 5-minute GPU-interval with the arithmetic both stores' summaries use:
    /// emissions `E · I` (then `× PUE`) per interval, facility energy `E × PUE`.
    pub fn add_interval(&mut self, row: &IntervalRow) {
        let e = row.energy;
        self.gpu_intervals = self.gpu_intervals.saturating_add(1);
        self.energy = Millijoules(self.energy.0.saturating_add(e.0));
        self.estimated = Millijoules(self.estimated.0.saturating_add(row.estimated.0));
        self.facility_energy = KilowattHours(self.facility_energy.0 + e.to_kwh().0 * row.pue);
        self.covered_ms = self.covered_ms.saturating_add(row.covered_ms);
        self.samples = self.samples.saturating_add(u64::from(row.samples));
        self.power_max = Some(
            self.power_max
                .map_or(row.power_max, |p| p.max(row.power_max)),
        );
        match &row.intensity {
            Some(j) => {
                let g = j.value.emissions(e).0;
                self.it_co2e += GramsCo2e(g);
                self.facility_co2e += GramsCo2e(g * row.pue);
                match j.kind {
                    IntensityKind::Actual => self.intervals_actual += 1,
                    IntensityKind::Forecast => self.intervals_forecast += 1,
                    IntensityKind::FallbackAverage => self.intervals_fallback += 1,
                }
                if j.replayed {
                    self.intervals_replayed_intensity += 1;
                }
            }
            None => {
                self.intervals_missing_intensity += 1;
                self.energy_without_intensity =
                    Millijoules(self.energy_without_intensity.0.saturating_add(e.0));
            }
        }
    }

    /// Adds `other` into `self`. Integer sums saturate (they cannot reach 2^64 from stored
    /// data, which the stores check), float sums add.
    pub fn add(&mut self, other: &UsageTotals) {
        self.gpu_intervals = self.gpu_intervals.saturating_add(other.gpu_intervals);
        self.energy = Millijoules(self.energy.0.saturating_add(other.energy.0));
        self.estimated = Millijoules(self.estimated.0.saturating_add(other.estimated.0));
        self.facility_energy = KilowattHours(self.facility_energy.0 + other.facility_energy.0);
        self.covered_ms = self.covered_ms.saturating_add(other.covered_ms);
        self.samples = self.samples.saturating_add(other.samples);
        self.power_max = match (self.power_max, other.power_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.it_co2e += other.it_co2e;
        self.facility_co2e += other.facility_co2e;
        self.energy_without_intensity = Millijoules(
            self.energy_without_intensity
                .0
                .saturating_add(other.energy_without_intensity.0),
        );
        self.intervals_actual = self.intervals_actual.saturating_add(other.intervals_actual);
        self.intervals_forecast = self
            .intervals_forecast
            .saturating_add(other.intervals_forecast);
        self.intervals_fallback = self
            .intervals_fallback
            .saturating_add(other.intervals_fallback);
        self.intervals_missing_intensity = self
            .intervals_missing_intensity
            .saturating_add(other.intervals_missing_intensity);
        self.intervals_replayed_intensity = self
            .intervals_replayed_intensity
            .saturating_add(other.intervals_replayed_intensity);
    }

    /// The provenance block of a footprint (same field names and meaning as
    /// [`wattprint_core::sci::Footprint`]'s).
    pub fn provenance(&self) -> FootprintProvenance {
        FootprintProvenance {
            energy_measured_share: if self.energy.0 == 0 {
                1.0
            } else {
                1.0 - self.estimated.0 as f64 / self.energy.0 as f64
            },
            intervals_actual: self.intervals_actual,
            intervals_forecast: self.intervals_forecast,
            intervals_fallback: self.intervals_fallback,
            intervals_missing_intensity: self.intervals_missing_intensity,
            energy_without_intensity_mj: self.energy_without_intensity.0,
            intervals_replayed_intensity: self.intervals_replayed_intensity,
        }
    }
}

/// Milliseconds in an hour: the grain of [`Store::instance_hourly_usage`].
pub const HOUR_MS: i64 = 3_600_000;

/// The shortest range of one instance's intervals read as two halves side by side.
const HALVED_READ_MIN_MS: i64 = 2 * 24 * HOUR_MS;

/// `[from, to)` as two halves split on a bucket boundary, when it is long enough for reading
/// them side by side to pay (a month of one instance is 34,560 rows): SQLite reads the halves
/// on two read connections at once and appends the second to the first, which keeps the
/// order by bucket. (Two ClickHouse queries at once measured no faster over HTTP.) Each half is as consistent as any read; a write landing between the two
/// reads shows in the half that reads after it, as it would in a later request.
pub(crate) fn halves(from: UnixMillis, to: UnixMillis) -> Option<[(UnixMillis, UnixMillis); 2]> {
    if to.since(from) < HALVED_READ_MIN_MS {
        return None;
    }
    let mid = UnixMillis(
        from.0 + to.since(from) / 2 / wattprint_core::BUCKET_MS * wattprint_core::BUCKET_MS,
    );
    Some([(from, mid), (mid, to)])
}

/// The totals of one GPU's 5-minute intervals in one whole hour of one instance: what a
/// series at a step of whole hours (1 h, 1 d) is summed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuHourUsage {
    /// The GPU.
    pub gpu: GpuUuid,
    /// Start of the hour (UTC).
    pub hour: UnixMillis,
    /// Its intervals' totals, with the arithmetic of [`UsageTotals::add_interval`].
    pub totals: UsageTotals,
    /// Σ I_i (g/kWh) over its intervals with an intensity: the plain mean a series reports
    /// when those intervals have no energy to weight by.
    pub intensity_sum: f64,
    /// The region of every one of its intervals; `None` when they lie in several regions or
    /// the store cannot tell (ClickHouse rollups computed before schema version 12). With it,
    /// figures on the region's average intensity can be taken per hour.
    pub region: Option<RegionId>,
}

impl GpuHourUsage {
    /// Adds one interval of this GPU and hour.
    pub fn add_interval(&mut self, row: &IntervalRow) {
        self.region = if self.totals.gpu_intervals == 0 {
            Some(row.region.clone())
        } else {
            self.region.take().filter(|r| *r == row.region)
        };
        self.totals.add_interval(row);
        if let Some(j) = &row.intensity {
            self.intensity_sum += j.value.0;
        }
    }

    /// Adds `other`, the same GPU and hour's totals in another region (a store keeping them
    /// per region).
    pub fn merge(&mut self, other: GpuHourUsage) {
        self.region = self
            .region
            .take()
            .filter(|r| other.region.as_ref() == Some(r));
        self.totals.add(&other.totals);
        self.intensity_sum += other.intensity_sum;
    }
}

/// Per GPU and hour, the totals of `rows` (5-minute intervals of one instance): the
/// reference [`Store::instance_hourly_usage`] must equal. Ordered by hour, then GPU.
pub fn hourly_usage(rows: &[IntervalRow]) -> Vec<GpuHourUsage> {
    let mut by_key: BTreeMap<(i64, &GpuUuid), GpuHourUsage> = BTreeMap::new();
    for row in rows {
        let hour = row.bucket.start().0.div_euclid(HOUR_MS) * HOUR_MS;
        by_key
            .entry((hour, &row.gpu))
            .or_insert_with(|| GpuHourUsage {
                gpu: row.gpu.clone(),
                hour: UnixMillis(hour),
                ..GpuHourUsage::default()
            })
            .add_interval(row);
    }
    by_key.into_values().collect()
}

/// Refuses a range that is not whole hours: `[from, to)` with both on an hour.
pub(crate) fn check_whole_hours(from: UnixMillis, to: UnixMillis) -> Result<(), StoreError> {
    if from.0.rem_euclid(HOUR_MS) != 0 || to.0.rem_euclid(HOUR_MS) != 0 {
        return Err(StoreError::Invalid(format!(
            "hourly usage needs a range of whole hours, got [{}, {})",
            from.0, to.0
        )));
    }
    Ok(())
}

/// `rows` read window by window as [`Store::windows_samples`] answers them: by instance,
/// start, end, GPU, sequence number, each `(instance, GPU, seq)` once, at most `limit`.
pub(crate) fn in_window_order(mut rows: Vec<SampleRow>, limit: u32) -> Vec<SampleRow> {
    let key = |r: &SampleRow| {
        let s = &r.sample;
        (s.instance.clone(), s.start, s.end, s.gpu.clone(), s.seq)
    };
    rows.sort_by_cached_key(key);
    rows.dedup_by(|a, b| {
        let (a, b) = (&a.sample, &b.sample);
        (&a.instance, &a.gpu, a.seq) == (&b.instance, &b.gpu, b.seq)
    });
    rows.truncate(limit as usize);
    rows
}
/// One instance's usage in a tenant summary.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSummary {
    /// The instance.
    pub instance: InstanceId,
    /// Distinct GPUs with intervals in the range.
    pub gpus: u32,
    /// Its totals.
    pub totals: UsageTotals,
}

/// A tenant's usage over a time range: per instance and in total.
///
/// Counts the intervals whose 5-minute bucket starts in the range and that were stored for the
/// tenant, including those of instances the tenant has since given up (a bill covers what the
/// tenant used, not what it owns today).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantSummary {
    /// Instances with intervals in the range, by instance id.
    pub instances: Vec<InstanceSummary>,
    /// Sum over the instances.
    pub totals: UsageTotals,
    /// How many (instance, hour)s were read from precomputed rollups rather than from the
    /// 5-minute data (0 for stores without rollups). The numbers are the same either way.
    pub rollup_instance_hours: u64,
}

impl TenantSummary {
    /// A summary of `instances`, with totals summed in their order.
    pub fn of(instances: Vec<InstanceSummary>, rollup_instance_hours: u64) -> Self {
        let mut totals = UsageTotals::default();
        for i in &instances {
            totals.add(&i.totals);
        }
        Self {
            instances,
            totals,
            rollup_instance_hours,
        }
    }
}

/// What a rollup refresh did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupRefresh {
    /// (tenant, instance, hour)s found stale or missing, and recomputed.
    pub recomputed: u64,
}

/// What writing intensity ledger points did. A point is identified by region, signal, kind,
/// provider, period start, issue time and model version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerWrite {
    /// Points the ledger did not have.
    pub new: u32,
    /// Points fetched again with the same value: nothing changed.
    pub unchanged: u32,
    /// Points the provider published again with another value: the later fetch is kept.
    pub revised: u32,
}

/// Which ledger points to read.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerQuery {
    /// One region, or all.
    pub region: Option<RegionId>,
    /// One signal, or both.
    pub signal: Option<Signal>,
    /// Periods starting in `[from, to)`.
    pub from: UnixMillis,
    /// End of the range (exclusive).
    pub to: UnixMillis,
    /// Only points fetched at or after this time (incremental refresh).
    pub fetched_since: Option<UnixMillis>,
}

/// An interval whose emissions were recomputed because better intensity arrived: the value it
/// had, the value it has now, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Restatement {
    /// Owner.
    pub tenant: TenantId,
    /// Instance.
    pub instance: InstanceId,
    /// GPU.
    pub gpu: GpuUuid,
    /// The interval's bucket.
    pub bucket: Bucket,
    /// Region.
    pub region: RegionId,
    /// The interval's energy when restated.
    pub energy: Millijoules,
    /// Its PUE.
    pub pue: f64,
    /// Intensity before (None: it had none).
    pub previous: Option<JoinedIntensity>,
    /// Intensity now.
    pub current: JoinedIntensity,
    /// Why it changed, in words.
    pub reason: String,
    /// When it was restated.
    pub restated_at: UnixMillis,
}

impl Restatement {
    /// Change of the interval's IT emissions: E × (I_now − I_before), I_before = 0 if none.
    pub fn it_co2e_delta(&self) -> GramsCo2e {
        let before = self
            .previous
            .as_ref()
            .map_or(GramsCo2e(0.0), |p| p.value.emissions(self.energy));
        GramsCo2e(self.current.value.emissions(self.energy).0 - before.0)
    }

    /// Change of the interval's facility emissions: the IT change × PUE.
    pub fn facility_co2e_delta(&self) -> GramsCo2e {
        GramsCo2e(self.it_co2e_delta().0 * self.pue)
    }
}

/// What one restatement pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestateOutcome {
    /// GPU-intervals restated.
    pub intervals: u64,
    /// Sum of their IT emission changes.
    pub it_co2e_delta: GramsCo2e,
}

impl RestateOutcome {
    /// The totals of restatements applied.
    pub fn of(applied: &[Restatement]) -> Self {
        Self {
            intervals: applied.len() as u64,
            it_co2e_delta: GramsCo2e(applied.iter().map(|r| r.it_co2e_delta().0).sum()),
        }
    }
}

/// The restatements `join` calls for among intervals read from a store (with their tenants):
/// one per interval it now has better intensity for.
pub(crate) fn decide_restatements(
    region: &RegionId,
    join: &IntensityJoin,
    candidates: Vec<(TenantId, IntervalRow)>,
    now: UnixMillis,
) -> Vec<Restatement> {
    candidates
        .into_iter()
        .filter_map(|(tenant, row)| {
            let current = join.restatement(region, row.bucket, row.intensity.as_ref())?;
            Some(Restatement {
                reason: restatement_reason(row.bucket, row.intensity.as_ref(), &current),
                tenant,
                instance: row.instance,
                gpu: row.gpu,
                bucket: row.bucket,
                region: region.clone(),
                energy: row.energy,
                pue: row.pue,
                previous: row.intensity,
                current,
                restated_at: now,
            })
        })
        .collect()
}

/// How a region's GPU-intervals in a range were joined (operator coverage report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCoverage {
    /// Region.
    pub region: RegionId,
    /// Joined with the actual for their bucket.
    pub actual: u64,
    /// Joined with the nearest actual of another bucket.
    pub nearest_actual: u64,
    /// Joined with a forecast.
    pub forecast: u64,
    /// Joined with the average (flagged fallback).
    pub fallback: u64,
    /// Without intensity.
    pub missing: u64,
    /// Joined with a replayed historical series.
    pub replayed: u64,
}

/// Store errors, with the operation that failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("{op}: {source}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request names something the tenant does not have.
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The request contradicts the stored state (e.g. closing a closed workload elsewhere).
    #[error("{0}")]
    Conflict(String),
    /// A stored value could not be decoded (schema drift or corruption).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
}

/// Storage behind ingest and the query API.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts or updates instances and their GPUs (operator action), effective now.
    async fn upsert_inventory(&self, instances: &[InstanceRecord]) -> Result<(), StoreError> {
        self.upsert_inventory_at(instances, UnixMillis::now()).await
    }

    /// Inserts or updates instances and their GPUs, the changes effective from `at` in the
    /// inventory's history ([`placements`]): samples before `at` stay with the old placement.
    async fn upsert_inventory_at(
        &self,
        instances: &[InstanceRecord],
        at: UnixMillis,
    ) -> Result<(), StoreError>;

    /// Every GPU's placements in time, all tenants (for ingest, never for tenant reads).
    async fn placement_history(&self) -> Result<Vec<PlacementVersion>, StoreError>;

    /// The whole inventory, all tenants (for ingest and operators, never for tenant reads).
    async fn inventory(&self) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Writes samples and their interval shares. Idempotent per `(gpu, seq)`; a sample that
    /// is invalid or overlaps stored energy of its GPU is refused alone (in
    /// [`WriteOutcome::refused`]) and the rest of the batch is written. An error means the
    /// backend failed and nothing can be assumed written; retrying the batch is safe.
    async fn write_samples(&self, samples: &[EnrichedSample]) -> Result<WriteOutcome, StoreError>;

    /// Keeps refused samples with their reasons.
    async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<(), StoreError>;

    /// Most recent quarantine records, newest first (operator view).
    async fn quarantine(&self, limit: u32) -> Result<Vec<QuarantineRecord>, StoreError>;

    /// How many records the quarantine holds, by refusal kind
    /// ([`wattprint_core::sample::refusal_kind`] of the reason; a redelivered refusal counts
    /// once, as [`Store::quarantine`] reads it). Kinds with no record are absent.
    async fn quarantine_counts(&self) -> Result<BTreeMap<String, u64>, StoreError>;

    /// Deletes quarantine records received before `rules.cutoff(now)` and, with a cap, each
    /// host's records beyond its newest `max_per_host` (see [`retention`]). Running it again
    /// deletes nothing more.
    async fn prune_quarantine(
        &self,
        rules: &QuarantineRetention,
        now: UnixMillis,
    ) -> Result<QuarantinePrune, StoreError>;

    /// Deletes the raw samples that ended before `rules.cutoff(now)`; their 5-minute
    /// intervals, rollups and statements stay, so no total changes. Returns the samples
    /// deleted (ClickHouse: due for deletion, its mutations run in the background; a modern
    /// server also gets a TTL of `rules.days`). Running it again deletes nothing.
    async fn prune_samples(
        &self,
        rules: &SampleRetention,
        now: UnixMillis,
    ) -> Result<u64, StoreError>;

    /// The tenant's instances.
    async fn list_instances(&self, scope: &TenantScope) -> Result<Vec<InstanceRecord>, StoreError>;

    /// Stores `statement` unless its tenant's month is issued already, and returns the one
    /// stored: the first issue wins, every later one (another replica, a retry) gets it back.
    async fn issue_statement(
        &self,
        statement: &IssuedStatement,
    ) -> Result<IssuedStatement, StoreError>;

    /// The tenant's issued statement of `period` (`YYYY-MM`), if issued.
    async fn issued_statement(
        &self,
        scope: &TenantScope,
        period: &str,
    ) -> Result<Option<IssuedStatement>, StoreError>;

    /// The tenant's issued statements, newest month first.
    async fn issued_statements(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<IssuedStatement>, StoreError>;

    /// Raw samples of one of the tenant's instances whose span overlaps `[from, to)`, by time,
    /// at most `limit`. Unknown or foreign instance: `NotFound`.
    async fn instance_samples(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError>;

    /// 5-minute intervals of one of the tenant's instances with buckets starting in
    /// `[from, to)`, by bucket then GPU. Unknown or foreign instance: `NotFound`.
    async fn instance_intervals(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError>;

    /// [`Store::instance_intervals`] of several of the tenant's instances over several
    /// disjoint ranges at once (a workload's ragged ends): the rows with buckets starting in
    /// any of `ranges`, by instance, bucket, GPU. Any unknown or foreign instance: `NotFound`.
    /// Stores answer it in one read; the default reads one by one.
    async fn instances_intervals(
        &self,
        scope: &TenantScope,
        instances: &[InstanceId],
        ranges: &[(UnixMillis, UnixMillis)],
    ) -> Result<Vec<IntervalRow>, StoreError> {
        let mut out = Vec::new();
        for instance in instances {
            for &(from, to) in ranges {
                out.extend(self.instance_intervals(scope, instance, from, to).await?);
            }
        }
        out.sort_by(|a, b| (&a.instance, a.bucket, &a.gpu).cmp(&(&b.instance, b.bucket, &b.gpu)));
        Ok(out)
    }

    /// [`Store::instance_samples`] over several `(instance, from, to)` windows at once: each
    /// of the tenant's samples whose instance is a window's and whose span overlaps that
    /// window, once however many windows it overlaps, by instance, start, end, GPU, sequence
    /// number; at most `limit` in all. Any unknown or foreign
    /// instance: `NotFound`. Stores answer it in one read; the default reads one by one.
    async fn windows_samples(
        &self,
        scope: &TenantScope,
        windows: &[(InstanceId, UnixMillis, UnixMillis)],
        limit: u32,
    ) -> Result<Vec<SampleRow>, StoreError> {
        let mut out = Vec::new();
        for (instance, from, to) in windows {
            out.extend(
                self.instance_samples(scope, instance, *from, *to, limit)
                    .await?,
            );
        }
        Ok(in_window_order(out, limit))
    }

    /// Per GPU and hour, the totals of one of the tenant's instances' 5-minute intervals
    /// with buckets in `[from, to)` (whole hours, else `Invalid`), ordered by hour then GPU;
    /// hours without intervals are absent. Exactly [`hourly_usage`] of
    /// [`Store::instance_intervals`] (integers equal, float sums up to rounding), whatever was
    /// redelivered; stores with hourly rollups read them. Unknown or foreign instance:
    /// `NotFound`.
    async fn instance_hourly_usage(
        &self,
        scope: &TenantScope,
        instance: &InstanceId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<GpuHourUsage>, StoreError> {
        check_whole_hours(from, to)?;
        let rows = self.instance_intervals(scope, instance, from, to).await?;
        Ok(hourly_usage(&rows))
    }

    /// 5-minute intervals of all the tenant's instances (those given up included: the tenant
    /// used them) with buckets starting in `[from, to)`, by instance, bucket, GPU.
    async fn tenant_intervals(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<IntervalRow>, StoreError>;

    /// Deletes the restatement records of intervals whose bucket starts before `before` (their
    /// history beyond the retention); the intervals keep their restated intensity, so no total
    /// changes. Returns how many were due (ClickHouse deletes them in the background).
    async fn prune_restatements(&self, before: UnixMillis) -> Result<u64, StoreError>;

    /// Facility energy of every tenant per region and hour, over the intervals of `regions`
    /// whose buckets start in `[from, to)`, by region then hour (hours without energy left
    /// out). An operator-level read for market-based emissions: the answer names no tenant.
    async fn region_hourly_facility_energy(
        &self,
        regions: &[RegionId],
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionHourEnergy>, StoreError>;

    /// Creates a workload. Every instance must belong to the tenant (`NotFound` otherwise).
    async fn create_workload(
        &self,
        scope: &TenantScope,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError>;

    /// The tenant's usage per instance and in total over the intervals whose bucket starts in
    /// `[from, to)`. Counts every interval stored for the tenant exactly once, whatever was
    /// redelivered; never another tenant's.
    async fn tenant_summary(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TenantSummary, StoreError>;

    /// Brings precomputed hourly rollups up to date for the whole hours inside `[from, to)`
    /// (call it with `to` at the end of the last closed hour). Only makes reads faster: reads
    /// are exact whether or not it ran, and running it again is harmless. Stores without
    /// rollups do nothing.
    async fn refresh_rollups(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<RollupRefresh, StoreError> {
        let _ = (from, to);
        Ok(RollupRefresh::default())
    }

    /// Adds intensity points to the ledger (idempotent; a revised value replaces the earlier
    /// fetch). Points must have passed [`IntensityPoint::validate`]; invalid ones are refused.
    async fn write_intensity(&self, points: &[IntensityPoint]) -> Result<LedgerWrite, StoreError>;

    /// Ledger points, ordered by region, period start, signal, kind, issue time, provider.
    async fn intensity_points(
        &self,
        query: &LedgerQuery,
    ) -> Result<Vec<IntensityPoint>, StoreError>;

    /// Restates the intervals of `region` with buckets in `[from, to)` for which `join` now has
    /// better intensity ([`IntensityJoin::restatement`]): their intensity is replaced (so every
    /// read, rollups included, uses the new value) and a [`Restatement`] is kept for each.
    /// Running it again restates nothing more.
    async fn restate(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
        join: &IntensityJoin,
    ) -> Result<RestateOutcome, StoreError>;

    /// The tenant's restated intervals with buckets in `[from, to)`, by bucket, instance, GPU,
    /// then restatement time.
    async fn restatements(
        &self,
        scope: &TenantScope,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Restatement>, StoreError>;

    /// Per region, how the GPU-intervals with buckets in `[from, to)` were joined (operators).
    async fn intensity_coverage(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<RegionCoverage>, StoreError>;

    /// The tenant's workloads, newest first.
    async fn list_workloads(&self, scope: &TenantScope) -> Result<Vec<Workload>, StoreError>;

    /// One of the tenant's workloads; `None` if absent or another tenant's.
    async fn get_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
    ) -> Result<Option<Workload>, StoreError>;

    /// Applies `update` to one of the tenant's workloads and returns it as stored;
    /// [`StoreError::NotFound`] if absent or another tenant's.
    async fn update_workload(
        &self,
        scope: &TenantScope,
        id: &WorkloadId,
        update: &WorkloadUpdate,
    ) -> Result<Workload, StoreError>;
}
