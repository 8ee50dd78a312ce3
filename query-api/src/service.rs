//! The API's logic over the [`Store`]: inventory views, series aggregation and workload
//! footprints. Handlers in [`crate::routes`] only parse and render; a gRPC adapter can call
//! these functions unchanged. Pure helpers ([`aggregate_intervals`], [`validate_workload`])
//! are tested without I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use wattprint_core::accounting::clip_energy;
use wattprint_core::intensity::{IntensityJoin, IntensityKind};
use wattprint_core::sample::EnergySource;
use wattprint_core::sci::{
    footprint, Footprint, FootprintProvenance, FootprintSlice, HardwareCatalog,
};
use wattprint_core::units::MJ_PER_KWH;
use wattprint_core::{
    Bucket, GpuUuid, GramsCo2e, InstanceId, Millijoules, RegionId, TenantScope, UnixMillis,
    WorkloadId, BUCKET_MS,
};
use wattprint_store::{
    InstanceRecord, IntervalRow, NewWorkload, SampleRow, Store, UsageTotals, Workload,
};

use crate::average::{AverageEmissionsView, AverageTotals};
use crate::error::ApiError;
use crate::time::{ceil_to, floor_to, InstantInput, Step};
use crate::ApiLimits;

/// Longest id accepted in a path or body.
pub const MAX_ID_LEN: usize = 256;
/// Longest label or functional-unit name.
pub const MAX_TEXT_LEN: usize = 200;
/// Most instances one workload may name.
pub const MAX_WORKLOAD_INSTANCES: usize = 100;
/// Most samples read for one edge bucket of a workload (a 5-minute window); reaching it means
/// the stored data is not what any agent sends.
const MAX_EDGE_SAMPLES: u32 = 5_000_000;

fn not_found_instance(id: &InstanceId) -> ApiError {
    ApiError::NotFound(format!("instance {id} not found"))
}

/// Checks `from < to` and `to − from` within [`ApiLimits::max_range_ms`] (400 saying which
/// otherwise): the range rule of every ranged request.
pub fn check_range(from: UnixMillis, to: UnixMillis, limits: &ApiLimits) -> Result<(), ApiError> {
    if to <= from {
        return Err(ApiError::BadRequest(format!(
            "to ({}) must be after from ({})",
            to.to_rfc3339(),
            from.to_rfc3339()
        )));
    }
    let range = to.since(from);
    if range > limits.max_range_ms {
        return Err(ApiError::BadRequest(format!(
            "range of {range} ms exceeds the limit of {} ms; ask for a shorter range",
            limits.max_range_ms
        )));
    }
    Ok(())
}

/// Refuses ids that are empty, too long or carry control characters (400).
pub fn check_id(kind: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{kind} id must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// A GPU as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GpuView {
    /// NVML uuid.
    pub uuid: String,
    /// Model name.
    pub model: String,
    /// Enforced power limit, watts.
    pub power_limit_w: f64,
}

/// An instance as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceView {
    /// Instance id.
    pub instance_id: String,
    /// Grid region.
    pub region: String,
    /// Datacenter zip code, if known.
    pub zip_code: Option<String>,
    /// Attached GPUs.
    pub gpus: Vec<GpuView>,
}

impl From<&InstanceRecord> for InstanceView {
    fn from(r: &InstanceRecord) -> Self {
        Self {
            instance_id: r.instance.to_string(),
            region: r.region.to_string(),
            zip_code: r.zip_code.clone(),
            gpus: r
                .gpus
                .iter()
                .map(|g| GpuView {
                    uuid: g.uuid.to_string(),
                    model: g.model.clone(),
                    power_limit_w: g.power_limit.to_watts(),
                })
                .collect(),
        }
    }
}

/// The tenant's instances.
pub async fn list_instances(
    store: &dyn Store,
    scope: &TenantScope,
) -> Result<Vec<InstanceView>, ApiError> {
    let records = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no instances".into()))?;
    Ok(records.iter().map(InstanceView::from).collect())
}

// ---------------------------------------------------------------------------------------------
// Series

/// Counts of GPU-intervals by intensity provenance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntensityKinds {
    /// Joined with an actual marginal value.
    pub actual: u64,
    /// Joined with a forecast.
    pub forecast: u64,
    /// Joined with the region's average (flagged fallback).
    pub fallback_average: u64,
    /// No intensity at all (their energy is in `co2e_missing_energy_mj`).
    pub missing: u64,
    /// Of those with an intensity, how many used a historical series replayed on a shifted
    /// clock (the embedded demo): real data, but not the grid's at that time.
    pub replayed: u64,
}

/// One step of an aggregated series, all GPUs of the instance summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AggregatePoint {
    /// Start of the step (RFC 3339, UTC, aligned to the step).
    pub start: String,
    /// End of the step (exclusive).
    pub end: String,
    /// Energy of all GPUs in the step, exact.
    pub energy_mj: u64,
    /// The same in kWh.
    pub energy_kwh: f64,
    /// Part of `energy_mj` estimated by power integration rather than read from the counter.
    pub estimated_energy_mj: u64,
    /// Mean power of the instance while measured: Σ over GPUs of (GPU energy ÷ time that GPU
    /// was covered by samples in the step). Gaps are not averaged in as zero (see
    /// `coverage`); null when nothing was measured.
    pub power_mean_w: Option<f64>,
    /// Highest single-GPU power reading in the step; null when nothing was measured.
    pub power_max_w: Option<f64>,
    /// Covered GPU-time ÷ (step length × GPUs of the instance), 0 to 1.
    pub coverage: f64,
    /// Energy-weighted mean intensity of the GPU-intervals that have one; null if none.
    pub intensity_g_per_kwh: Option<f64>,
    /// How many GPU-intervals used which kind of intensity.
    pub intensity_kinds: IntensityKinds,
    /// IT emissions: Σ over 5-minute GPU-intervals of E_i × I_i (never E × mean I).
    pub co2e_g: f64,
    /// Facility emissions: Σ E_i × PUE_i × I_i.
    pub facility_co2e_g: f64,
    /// Energy of intervals without intensity, whose emissions are not counted.
    pub co2e_missing_energy_mj: u64,
    /// Energy-weighted mean of the region's **average** intensity (published average, else
    /// the static annual rate; see `average`); null when none applies or the server has no
    /// intensity sources.
    pub average_intensity_g_per_kwh: Option<f64>,
    /// IT emissions on average intensity: Σ E_i × A_i; null without intensity sources.
    pub average_co2e_g: Option<f64>,
    /// Facility emissions on average intensity: Σ E_i × PUE_i × A_i; null likewise.
    pub average_facility_co2e_g: Option<f64>,
}

/// One stored sample of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RawPoint {
    /// Previous counter reading (RFC 3339).
    pub start: String,
    /// This counter reading.
    pub end: String,
    /// GPU.
    pub gpu_uuid: String,
    /// Energy over the span, exact.
    pub energy_mj: u64,
    /// Power at `end`, watts.
    pub power_w: f64,
    /// Highest power read over the span (every 100 ms by default), watts.
    pub power_max_w: f64,
    /// GPU utilisation, mean of the span's reads, percent.
    pub util_gpu_pct: u32,
    /// Temperature, highest of the span's reads, °C.
    pub temp_c: u32,
    /// First span of a counter chain (the time before `start` is a gap).
    pub chain_start: bool,
    /// `counter` or `power_integration`.
    pub energy_source: String,
    /// `exclusive`, `apportioned_mig` or `apportioned_vgpu`.
    pub attribution: String,
}

impl From<&SampleRow> for RawPoint {
    fn from(r: &SampleRow) -> Self {
        let s = &r.sample;
        Self {
            start: s.start.to_rfc3339(),
            end: s.end.to_rfc3339(),
            gpu_uuid: s.gpu.to_string(),
            energy_mj: s.energy.0,
            power_w: s.power.to_watts(),
            power_max_w: s.power_max.to_watts(),
            util_gpu_pct: s.util_gpu_pct,
            temp_c: s.temp_c,
            chain_start: s.chain_start,
            energy_source: s.energy_source.as_str().to_owned(),
            attribution: s.attribution.as_str().to_owned(),
        }
    }
}

/// Points of a series: raw samples or aggregated steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SeriesPoints {
    /// `step=raw`.
    Raw(Vec<RawPoint>),
    /// `step=5m|1h|1d`.
    Aggregated(Vec<AggregatePoint>),
}

impl SeriesPoints {
    /// Number of points.
    pub fn len(&self) -> usize {
        match self {
            SeriesPoints::Raw(p) => p.len(),
            SeriesPoints::Aggregated(p) => p.len(),
        }
    }

    /// No points.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A series response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Series {
    /// Instance.
    pub instance_id: String,
    /// `raw`, `5m`, `1h` or `1d`.
    pub step: Step,
    /// Start of the range the points cover: as requested for raw, rounded down to the step
    /// otherwise.
    pub from: String,
    /// End of the range (exclusive): as requested for raw, rounded up to the step otherwise.
    pub to: String,
    /// Points in time order (aggregated: one per step, gaps included with zero coverage).
    #[schema(schema_with = crate::openapi::series_points_schema)]
    pub points: SeriesPoints,
}

/// A validated series request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesRequest {
    /// Start (inclusive).
    pub from: UnixMillis,
    /// End (exclusive).
    pub to: UnixMillis,
    /// Resolution.
    pub step: Step,
}

impl SeriesRequest {
    /// Checks `from < to`, the range limit and, for aggregated steps, the number of points.
    pub fn validate(&self, limits: &ApiLimits) -> Result<(), ApiError> {
        check_range(self.from, self.to, limits)?;
        if let Some(step_ms) = self.step.millis() {
            let points =
                (ceil_to(self.to, step_ms).since(floor_to(self.from, step_ms)) / step_ms) as u64;
            if points > limits.max_points as u64 {
                return Err(too_many_points(points, limits.max_points));
            }
        }
        Ok(())
    }
}

fn too_many_points(points: u64, max: usize) -> ApiError {
    ApiError::BadRequest(format!(
        "the range holds {points} points at this step, more than the limit of {max}; use a coarser step (raw < 5m < 1h < 1d) or a shorter range"
    ))
}

/// Reads one instance's series. Unknown or foreign instance: 404.
pub async fn instance_series(
    store: &dyn Store,
    scope: &TenantScope,
    instance: &InstanceId,
    req: SeriesRequest,
    limits: &ApiLimits,
    join: Option<&IntensityJoin>,
) -> Result<Series, ApiError> {
    req.validate(limits)?;
    let instances = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || not_found_instance(instance).to_string()))?;
    let record = instances
        .iter()
        .find(|r| &r.instance == instance)
        .ok_or_else(|| not_found_instance(instance))?;
    let map_nf = |e| ApiError::from_store(e, || format!("instance {instance} not found"));
    match req.step.millis() {
        None => {
            let limit = u32::try_from(limits.max_points.saturating_add(1)).unwrap_or(u32::MAX);
            let rows = store
                .instance_samples(scope, instance, req.from, req.to, limit)
                .await
                .map_err(map_nf)?;
            if rows.len() > limits.max_points {
                return Err(ApiError::BadRequest(format!(
                    "the range holds more than {} raw samples; use a coarser step (5m, 1h, 1d) or a shorter range",
                    limits.max_points
                )));
            }
            Ok(Series {
                instance_id: instance.to_string(),
                step: req.step,
                from: req.from.to_rfc3339(),
                to: req.to.to_rfc3339(),
                points: SeriesPoints::Raw(rows.iter().map(RawPoint::from).collect()),
            })
        }
        Some(step_ms) => {
            let from = floor_to(req.from, step_ms);
            let to = ceil_to(req.to, step_ms);
            let rows = store
                .instance_intervals(scope, instance, from, to)
                .await
                .map_err(map_nf)?;
            let gpus: BTreeSet<&GpuUuid> = record
                .gpus
                .iter()
                .map(|g| &g.uuid)
                .chain(rows.iter().map(|r| &r.gpu))
                .collect();
            let points = aggregate_intervals(&rows, from, to, step_ms, gpus.len(), join);
            Ok(Series {
                instance_id: instance.to_string(),
                step: req.step,
                from: from.to_rfc3339(),
                to: to.to_rfc3339(),
                points: SeriesPoints::Aggregated(points),
            })
        }
    }
}

#[derive(Default)]
struct StepAcc {
    energy: u64,
    estimated: u64,
    covered_ms: i64,
    per_gpu: BTreeMap<GpuUuid, (u64, i64)>,
    power_max_mw: Option<u32>,
    weighted_intensity: f64,
    energy_with_intensity: u64,
    intensity_sum: f64,
    intensity_count: u64,
    kinds: IntensityKinds,
    co2e_g: f64,
    facility_co2e_g: f64,
    missing_energy: u64,
    average: AverageTotals,
}

/// Aggregates 5-minute GPU-intervals into steps of `step_ms` over `[from, to)` (both aligned to
/// the step): one point per step, empty steps included. `gpus` is the instance's GPU count,
/// the denominator of coverage. Rows outside the range are ignored. With `join`, each point
/// also carries its emissions on average intensity.
pub fn aggregate_intervals(
    rows: &[IntervalRow],
    from: UnixMillis,
    to: UnixMillis,
    step_ms: i64,
    gpus: usize,
    join: Option<&IntensityJoin>,
) -> Vec<AggregatePoint> {
    let n = usize::try_from(to.since(from).max(0) / step_ms).unwrap_or(0);
    let mut accs: Vec<StepAcc> = (0..n).map(|_| StepAcc::default()).collect();
    for row in rows {
        let offset = row.bucket.start().since(from);
        if offset < 0 || row.bucket.start() >= to {
            continue;
        }
        let Some(acc) = accs.get_mut((offset / step_ms) as usize) else {
            continue;
        };
        let e = row.energy.0;
        acc.energy = acc.energy.saturating_add(e);
        acc.estimated = acc.estimated.saturating_add(row.estimated.0);
        acc.covered_ms += row.covered_ms;
        let g = acc.per_gpu.entry(row.gpu.clone()).or_default();
        g.0 = g.0.saturating_add(e);
        g.1 += row.covered_ms;
        acc.power_max_mw = Some(acc.power_max_mw.unwrap_or(0).max(row.power_max.0));
        if let Some(join) = join {
            acc.average
                .add(join, &row.region, row.bucket, row.energy, row.pue);
        }
        match &row.intensity {
            Some(j) => {
                let co2e = j.value.emissions(row.energy).0;
                acc.co2e_g += co2e;
                acc.facility_co2e_g += co2e * row.pue;
                acc.weighted_intensity += e as f64 * j.value.0;
                acc.energy_with_intensity = acc.energy_with_intensity.saturating_add(e);
                acc.intensity_sum += j.value.0;
                acc.intensity_count += 1;
                if j.replayed {
                    acc.kinds.replayed += 1;
                }
                match j.kind {
                    IntensityKind::Actual => acc.kinds.actual += 1,
                    IntensityKind::Forecast => acc.kinds.forecast += 1,
                    IntensityKind::FallbackAverage => acc.kinds.fallback_average += 1,
                }
            }
            None => {
                acc.kinds.missing += 1;
                acc.missing_energy = acc.missing_energy.saturating_add(e);
            }
        }
    }
    accs.into_iter()
        .enumerate()
        .map(|(i, acc)| {
            let start = UnixMillis(from.0 + i as i64 * step_ms);
            let end = UnixMillis(start.0 + step_ms);
            let covered: Vec<f64> = acc
                .per_gpu
                .values()
                .filter(|(_, ms)| *ms > 0)
                .map(|(mj, ms)| *mj as f64 / *ms as f64)
                .collect();
            let intensity = if acc.intensity_count == 0 {
                None
            } else if acc.energy_with_intensity == 0 {
                // No energy to weight by: the plain mean of the values.
                Some(acc.intensity_sum / acc.intensity_count as f64)
            } else {
                Some(acc.weighted_intensity / acc.energy_with_intensity as f64)
            };
            let denominator = step_ms as f64 * gpus as f64;
            AggregatePoint {
                start: start.to_rfc3339(),
                end: end.to_rfc3339(),
                energy_mj: acc.energy,
                energy_kwh: acc.energy as f64 / MJ_PER_KWH as f64,
                estimated_energy_mj: acc.estimated,
                power_mean_w: (!covered.is_empty()).then(|| covered.iter().sum()),
                power_max_w: acc.power_max_mw.map(|mw| f64::from(mw) / 1000.0),
                coverage: if denominator > 0.0 {
                    acc.covered_ms as f64 / denominator
                } else {
                    0.0
                },
                intensity_g_per_kwh: intensity,
                intensity_kinds: acc.kinds,
                co2e_g: acc.co2e_g,
                facility_co2e_g: acc.facility_co2e_g,
                co2e_missing_energy_mj: acc.missing_energy,
                average_intensity_g_per_kwh: acc.average.mean_intensity(),
                average_co2e_g: join.map(|_| acc.average.it_co2e_g),
                average_facility_co2e_g: join.map(|_| acc.average.facility_co2e_g),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tenant summary

/// A validated summary request: whole 5-minute buckets overlapping `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SummaryRequest {
    /// Start (inclusive).
    pub from: UnixMillis,
    /// End (exclusive).
    pub to: UnixMillis,
}

impl SummaryRequest {
    /// Checks `from < to` and the range limit (31 days by default: a month fits).
    pub fn validate(&self, limits: &ApiLimits) -> Result<(), ApiError> {
        check_range(self.from, self.to, limits)
    }
}

/// Energy, emissions and provenance of a set of GPU-intervals; field names as in a
/// workload footprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageView {
    /// IT (GPU) energy, exact.
    pub it_energy_mj: u64,
    /// IT energy.
    pub it_energy_kwh: f64,
    /// Part of `it_energy_mj` estimated by power integration.
    pub estimated_energy_mj: u64,
    /// Facility energy: Σ IT energy × PUE.
    pub facility_energy_kwh: f64,
    /// Σ E_i × I_i over 5-minute GPU-intervals, on IT energy.
    pub operational_it_co2e_g: f64,
    /// Σ E_i × PUE_i × I_i: facility emissions.
    pub operational_co2e_g: f64,
    /// 5-minute GPU-intervals counted.
    pub gpu_intervals: u64,
    /// GPU-milliseconds covered by samples.
    pub covered_gpu_ms: i64,
    /// Highest single-GPU power reading, watts; null when nothing was measured.
    pub power_max_w: Option<f64>,
    /// Where the numbers came from.
    #[schema(value_type = crate::openapi::FootprintProvenanceSchema)]
    pub provenance: FootprintProvenance,
}

impl From<&UsageTotals> for UsageView {
    fn from(t: &UsageTotals) -> Self {
        Self {
            it_energy_mj: t.energy.0,
            it_energy_kwh: t.energy.to_kwh().0,
            estimated_energy_mj: t.estimated.0,
            facility_energy_kwh: t.facility_energy.0,
            operational_it_co2e_g: t.it_co2e.0,
            operational_co2e_g: t.facility_co2e.0,
            gpu_intervals: t.gpu_intervals,
            covered_gpu_ms: t.covered_ms,
            power_max_w: t.power_max.map(|p| p.to_watts()),
            provenance: t.provenance(),
        }
    }
}

/// One instance in a tenant summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceUsageView {
    /// Instance id.
    pub instance_id: String,
    /// GPUs with data in the range.
    pub gpus: u32,
    /// Its usage.
    #[serde(flatten)]
    pub usage: UsageView,
}

/// Body of `GET /v1/summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantSummaryView {
    /// Start of the range counted (RFC 3339, rounded down to 5 minutes).
    pub from: String,
    /// End of the range counted (exclusive, rounded up to 5 minutes).
    pub to: String,
    /// The tenant's total.
    pub totals: UsageView,
    /// Per instance with data in the range, by id (instances the tenant has given up
    /// included: it used them).
    pub instances: Vec<InstanceUsageView>,
}

/// The tenant's usage over the 5-minute buckets overlapping `[from, to)`, per instance and in
/// total.
pub async fn tenant_summary(
    store: &dyn Store,
    scope: &TenantScope,
    req: SummaryRequest,
    limits: &ApiLimits,
) -> Result<TenantSummaryView, ApiError> {
    req.validate(limits)?;
    let from = floor_to(req.from, BUCKET_MS);
    let to = ceil_to(req.to, BUCKET_MS);
    let summary = store
        .tenant_summary(scope, from, to)
        .await
        .map_err(|e| ApiError::from_store(e, || "no usage".into()))?;
    Ok(TenantSummaryView {
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        totals: UsageView::from(&summary.totals),
        instances: summary
            .instances
            .iter()
            .map(|i| InstanceUsageView {
                instance_id: i.instance.to_string(),
                gpus: i.gpus,
                usage: UsageView::from(&i.totals),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// Body of `POST /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRequest {
    /// Human label.
    pub label: String,
    /// Instances it ran on.
    pub instance_ids: Vec<String>,
    /// Start: RFC 3339 or Unix ms.
    pub from: InstantInput,
    /// End (exclusive): RFC 3339 or Unix ms. Absent: the workload is open (still running)
    /// until `POST /v1/workloads/{id}/close`.
    #[serde(default)]
    pub to: Option<InstantInput>,
    /// What R counts (e.g. `training run`).
    pub functional_unit: String,
    /// R: how many functional units the workload produced.
    pub functional_units: f64,
    /// Key/value labels (team, project…); see `PUT /v1/workloads/{id}/labels` for the rules.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn check_text(field: &str, s: &str) -> Result<(), ApiError> {
    if s.trim().is_empty() || s.chars().count() > MAX_TEXT_LEN || s.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field} must be 1 to {MAX_TEXT_LEN} characters, not blank, without control characters"
        )));
    }
    Ok(())
}

/// Validates a workload request into the store's form (400 with the reason otherwise).
pub fn validate_workload(
    req: &WorkloadRequest,
    limits: &ApiLimits,
) -> Result<NewWorkload, ApiError> {
    check_text("label", &req.label)?;
    check_text("functional_unit", &req.functional_unit)?;
    if req.instance_ids.is_empty() || req.instance_ids.len() > MAX_WORKLOAD_INSTANCES {
        return Err(ApiError::BadRequest(format!(
            "instance_ids must name 1 to {MAX_WORKLOAD_INSTANCES} instances"
        )));
    }
    let mut seen = BTreeSet::new();
    for id in &req.instance_ids {
        check_id("instance", id)?;
        if !seen.insert(id.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "instance_ids names {id:?} twice"
            )));
        }
    }
    let from = req.from.parse("from").map_err(ApiError::BadRequest)?;
    let to = match &req.to {
        Some(to) => Some(to.parse("to").map_err(ApiError::BadRequest)?),
        None => None,
    };
    if let Some(to) = to {
        if to <= from {
            return Err(ApiError::BadRequest("to must be after from".into()));
        }
        if to.since(from) > limits.max_range_ms {
            return Err(ApiError::BadRequest(format!(
                "a workload may span at most {} ms",
                limits.max_range_ms
            )));
        }
    }
    if !req.functional_units.is_finite() || req.functional_units <= 0.0 {
        return Err(ApiError::BadRequest(
            "functional_units must be a positive finite number".into(),
        ));
    }
    Ok(NewWorkload {
        label: req.label.clone(),
        instances: req
            .instance_ids
            .iter()
            .map(|s| InstanceId::new(s.clone()))
            .collect(),
        from,
        to,
        functional_unit: req.functional_unit.clone(),
        functional_units: req.functional_units,
        labels: req.labels.clone(),
    })
}

/// A workload as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadView {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Instances.
    pub instance_ids: Vec<String>,
    /// Start (RFC 3339).
    pub from: String,
    /// End, exclusive (RFC 3339); null while the workload is open.
    pub to: Option<String>,
    /// `open` (no end yet) or `closed`.
    pub status: String,
    /// Key/value labels.
    pub labels: BTreeMap<String, String>,
    /// What R counts.
    pub functional_unit: String,
    /// R.
    pub functional_units: f64,
    /// Creation time (RFC 3339).
    pub created_at: String,
}

impl From<&Workload> for WorkloadView {
    fn from(w: &Workload) -> Self {
        Self {
            id: w.id.to_string(),
            label: w.spec.label.clone(),
            instance_ids: w.spec.instances.iter().map(|i| i.to_string()).collect(),
            from: w.spec.from.to_rfc3339(),
            to: w.spec.to.map(UnixMillis::to_rfc3339),
            status: if w.spec.to.is_some() {
                "closed"
            } else {
                "open"
            }
            .to_owned(),
            labels: w.spec.labels.clone(),
            functional_unit: w.spec.functional_unit.clone(),
            functional_units: w.spec.functional_units,
            created_at: w.created_at.to_rfc3339(),
        }
    }
}

/// Creates a workload; every instance must be the tenant's (404 naming the first that is not).
pub async fn create_workload(
    store: &dyn Store,
    scope: &TenantScope,
    req: &WorkloadRequest,
    limits: &ApiLimits,
) -> Result<WorkloadView, ApiError> {
    let new = validate_workload(req, limits)?;
    let owned = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    if let Some(missing) = new
        .instances
        .iter()
        .find(|id| !owned.iter().any(|r| &r.instance == *id))
    {
        return Err(not_found_instance(missing));
    }
    let w = store
        .create_workload(scope, &new)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    Ok(WorkloadView::from(&w))
}

/// GPU-time the footprint expected and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CoverageView {
    /// (to − from) × GPUs of the workload's instances.
    pub expected_gpu_ms: i64,
    /// GPU-time inside [from, to) covered by samples.
    pub covered_gpu_ms: i64,
}

/// Embodied emissions inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbodiedView {
    /// GPUs whose embodied share was considered.
    pub gpus: usize,
    /// GPU models absent from the hardware catalog (counted as 0).
    pub unknown_models: Vec<String>,
}

/// A workload's footprint: core's [`Footprint`] fields plus what R counts, coverage and the
/// embodied inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FootprintView {
    /// Energy, emissions, SCI and provenance (core's field names).
    #[serde(flatten)]
    #[schema(value_type = crate::openapi::FootprintSchema)]
    pub footprint: Footprint,
    /// What R counts.
    pub functional_unit: String,
    /// GPU-time coverage.
    pub coverage: CoverageView,
    /// Embodied inputs.
    pub embodied: EmbodiedView,
    /// Instances of the workload no longer in the tenant's inventory: nothing of theirs is
    /// counted.
    pub missing_instances: Vec<String>,
    /// The same footprint on the grid's average intensity (the marginal figures above are
    /// the primary ones); null when the server has no intensity sources.
    pub average: Option<AverageEmissionsView>,
}

/// A workload with its footprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadDetail {
    /// The workload.
    #[serde(flatten)]
    pub workload: WorkloadView,
    /// Its footprint.
    pub footprint: FootprintView,
}

/// One of the tenant's workloads with its footprint; 404 if absent or another tenant's.
pub async fn workload_detail(
    store: &dyn Store,
    scope: &TenantScope,
    catalog: &HardwareCatalog,
    id: &WorkloadId,
    limits: &ApiLimits,
    join: Option<&IntensityJoin>,
) -> Result<WorkloadDetail, ApiError> {
    let not_found = || format!("workload {id} not found");
    let w = store
        .get_workload(scope, id)
        .await
        .map_err(|e| ApiError::from_store(e, not_found))?
        .ok_or_else(|| ApiError::NotFound(not_found()))?;
    let span = crate::workloads::workload_span(&w, limits)?;
    let footprint = workload_footprint(store, scope, catalog, &w, span, join).await?;
    Ok(WorkloadDetail {
        workload: WorkloadView::from(&w),
        footprint,
    })
}

/// A workload's energy, slice by slice, before any emissions arithmetic.
#[derive(Debug, Clone, Default)]
pub struct WorkloadEnergy {
    /// One slice per (GPU, bucket) with energy inside `[from, to)`.
    pub slices: Vec<FootprintSlice>,
    /// GPU-time inside `[from, to)` covered by samples.
    pub covered_gpu_ms: i64,
    /// Model of every GPU of the workload's instances (one entry per GPU).
    pub gpu_models: Vec<String>,
    /// Grid regions of the workload's instances.
    pub regions: BTreeSet<RegionId>,
    /// Instances of the workload no longer in the tenant's inventory.
    pub missing_instances: Vec<String>,
    /// Emissions of the slices on average intensity (only when a join was given).
    pub average: AverageTotals,
}

/// Collects a workload's energy over `span` (its range; for an open workload, so far) exactly.
///
/// Per instance: the 5-minute intervals with buckets starting in `[floor5(from), to)`. A bucket
/// wholly inside `[from, to)` counts its stored energy. An edge bucket re-reads the raw samples
/// overlapping `[max(from, start), min(to, end))` and clips each with
/// [`clip_energy`] — the same arithmetic that split it into buckets — so a range that is exactly
/// the span of some samples gets exactly their energy, to the millijoule. Each (GPU, bucket)
/// slice keeps its bucket's intensity and PUE.
pub async fn workload_energy(
    store: &dyn Store,
    scope: &TenantScope,
    w: &Workload,
    (from, to): (UnixMillis, UnixMillis),
    join: Option<&IntensityJoin>,
) -> Result<WorkloadEnergy, ApiError> {
    let inventory = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    let mut out = WorkloadEnergy::default();
    for instance in &w.spec.instances {
        let Some(record) = inventory.iter().find(|r| &r.instance == instance) else {
            out.missing_instances.push(instance.to_string());
            continue;
        };
        out.regions.insert(record.region.clone());
        out.gpu_models
            .extend(record.gpus.iter().map(|g| g.model.clone()));
        let rows = match store
            .instance_intervals(scope, instance, Bucket::containing(from).start(), to)
            .await
        {
            Ok(rows) => rows,
            Err(wattprint_store::StoreError::NotFound(_)) => {
                out.missing_instances.push(instance.to_string());
                continue;
            }
            Err(e) => return Err(ApiError::from_store(e, || "instance not found".into())),
        };
        // Group by bucket (rows come by bucket then GPU; grouping does not rely on it).
        let mut by_bucket: BTreeMap<Bucket, Vec<&IntervalRow>> = BTreeMap::new();
        for row in &rows {
            by_bucket.entry(row.bucket).or_default().push(row);
        }
        let first_slice = out.slices.len();
        for (bucket, rows) in by_bucket {
            if bucket.start() >= from && bucket.end() <= to {
                for row in rows {
                    out.covered_gpu_ms += row.covered_ms;
                    out.slices.push(slice_of(row, row.energy, row.estimated));
                }
                continue;
            }
            let (a, b) = (from.max(bucket.start()), to.min(bucket.end()));
            if b <= a {
                continue;
            }
            let samples = store
                .instance_samples(scope, instance, a, b, MAX_EDGE_SAMPLES)
                .await
                .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
            if samples.len() >= MAX_EDGE_SAMPLES as usize {
                return Err(ApiError::Internal(format!(
                    "more than {MAX_EDGE_SAMPLES} samples in one 5-minute window of instance {instance}"
                )));
            }
            let clipped = clip_window(&samples, a, b);
            let row_of: HashMap<&GpuUuid, &IntervalRow> =
                rows.iter().map(|r| (&r.gpu, *r)).collect();
            for (gpu, part) in clipped {
                out.covered_gpu_ms += part.covered_ms;
                match row_of.get(&gpu) {
                    Some(row) => out.slices.push(slice_of(row, part.energy, part.estimated)),
                    // A sample with no interval row: count its energy, with no intensity.
                    None => out.slices.push(FootprintSlice {
                        bucket,
                        energy: part.energy,
                        estimated: part.estimated,
                        intensity: None,
                        intensity_replayed: false,
                        pue: 1.0,
                    }),
                }
            }
        }
        if let Some(join) = join {
            for s in &out.slices[first_slice..] {
                out.average
                    .add(join, &record.region, s.bucket, s.energy, s.pue);
            }
        }
    }
    Ok(out)
}

/// Computes a workload's footprint from [`workload_energy`]: emissions summed per slice by
/// [`footprint`]. Embodied M: every GPU of the instances, `catalog.embodied_share(model, to −
/// from)`; unknown models count 0 and are listed.
pub async fn workload_footprint(
    store: &dyn Store,
    scope: &TenantScope,
    catalog: &HardwareCatalog,
    w: &Workload,
    (from, to): (UnixMillis, UnixMillis),
    join: Option<&IntensityJoin>,
) -> Result<FootprintView, ApiError> {
    let energy = workload_energy(store, scope, w, (from, to), join).await?;
    let mut embodied = 0.0;
    let mut unknown_models = BTreeSet::new();
    for model in &energy.gpu_models {
        match catalog.embodied_share(model, to.since(from)) {
            Some(m) => embodied += m.0,
            None => {
                unknown_models.insert(model.clone());
            }
        }
    }
    let gpus = energy.gpu_models.len();
    let fp = footprint(&energy.slices, GramsCo2e(embodied), w.spec.functional_units)
        .map_err(|e| ApiError::Internal(format!("stored workload {}: {e}", w.id)))?;
    Ok(FootprintView {
        footprint: fp,
        functional_unit: w.spec.functional_unit.clone(),
        coverage: CoverageView {
            expected_gpu_ms: to.since(from).saturating_mul(gpus as i64),
            covered_gpu_ms: energy.covered_gpu_ms,
        },
        embodied: EmbodiedView {
            gpus,
            unknown_models: unknown_models.into_iter().collect(),
        },
        missing_instances: energy.missing_instances,
        average: join
            .map(|_| AverageEmissionsView::of(&energy.average, embodied, w.spec.functional_units)),
    })
}

fn slice_of(row: &IntervalRow, energy: Millijoules, estimated: Millijoules) -> FootprintSlice {
    FootprintSlice {
        bucket: row.bucket,
        energy,
        estimated,
        intensity: row.intensity.as_ref().map(|j| (j.value, j.kind)),
        intensity_replayed: row.intensity.as_ref().is_some_and(|j| j.replayed),
        pue: row.pue,
    }
}

/// Energy of one GPU inside a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClippedEnergy {
    /// Energy inside the window.
    pub energy: Millijoules,
    /// Part of it from power integration.
    pub estimated: Millijoules,
    /// Milliseconds of the window covered by samples.
    pub covered_ms: i64,
}

/// Per GPU, the energy of `samples` that falls in `[a, b)`, clipped with [`clip_energy`].
pub fn clip_window(
    samples: &[SampleRow],
    a: UnixMillis,
    b: UnixMillis,
) -> BTreeMap<GpuUuid, ClippedEnergy> {
    let mut out: BTreeMap<GpuUuid, ClippedEnergy> = BTreeMap::new();
    for row in samples {
        let s = &row.sample;
        let overlap = b.min(s.end).since(a.max(s.start));
        if overlap <= 0 {
            continue;
        }
        let e = clip_energy(s.start, s.end, s.energy, a, b);
        let acc = out.entry(s.gpu.clone()).or_default();
        acc.energy += e;
        if s.energy_source == EnergySource::PowerIntegration {
            acc.estimated += e;
        }
        acc.covered_ms += overlap;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::intensity::JoinedIntensity;
    use wattprint_core::{GramsPerKwh, Milliwatts, RegionId, BUCKET_MS};

    fn row(
        bucket_i: i64,
        gpu: &str,
        mj: u64,
        covered: i64,
        intensity: Option<(f64, IntensityKind)>,
    ) -> IntervalRow {
        IntervalRow {
            instance: InstanceId::from("i"),
            gpu: GpuUuid::from(gpu),
            bucket: Bucket::containing(UnixMillis(bucket_i * BUCKET_MS)),
            energy: Millijoules(mj),
            estimated: Millijoules(0),
            covered_ms: covered,
            samples: 1,
            power_max: Milliwatts(400_000),
            region: RegionId::from("R"),
            intensity: intensity.map(|(v, kind)| JoinedIntensity {
                value: GramsPerKwh(v),
                kind,
                source: "t".into(),
                point_at: UnixMillis(bucket_i * BUCKET_MS),
                replayed: false,
            }),
            pue: 1.5,
        }
    }

    #[test]
    fn aggregation_sums_per_step_and_weights_intensity_by_energy() {
        let kwh = MJ_PER_KWH;
        let rows = vec![
            row(
                0,
                "g1",
                kwh,
                BUCKET_MS,
                Some((100.0, IntensityKind::Actual)),
            ),
            row(
                0,
                "g2",
                kwh,
                BUCKET_MS / 2,
                Some((100.0, IntensityKind::Actual)),
            ),
            row(
                1,
                "g1",
                3 * kwh,
                BUCKET_MS,
                Some((500.0, IntensityKind::FallbackAverage)),
            ),
            row(2, "g1", 7, BUCKET_MS, None),
        ];
        // One 15-minute step over 3 buckets with 2 GPUs.
        let pts = aggregate_intervals(
            &rows,
            UnixMillis(0),
            UnixMillis(3 * BUCKET_MS),
            3 * BUCKET_MS,
            2,
            None,
        );
        assert_eq!(pts.len(), 1);
        let p = &pts[0];
        assert_eq!(p.energy_mj, 5 * kwh + 7);
        // Per interval: 100 + 100 + 1500 g; never 5 kWh × mean.
        assert!((p.co2e_g - 1700.0).abs() < 1e-9);
        assert!((p.facility_co2e_g - 2550.0).abs() < 1e-9);
        assert!((p.intensity_g_per_kwh.unwrap() - 1700.0 / 5.0).abs() < 1e-9);
        assert_eq!(p.co2e_missing_energy_mj, 7);
        assert_eq!(
            p.intensity_kinds,
            IntensityKinds {
                actual: 2,
                forecast: 0,
                fallback_average: 1,
                missing: 1,
                replayed: 0,
            }
        );
        // Coverage: 3.5 buckets of 6 GPU-buckets.
        assert!((p.coverage - 3.5 / 6.0).abs() < 1e-12);
        // Power while measured: g1 (4 kWh + 7 mJ over 3 buckets) + g2 (1 kWh over half a bucket).
        let g1 = (4 * kwh + 7) as f64 / (3 * BUCKET_MS) as f64;
        let g2 = kwh as f64 / (BUCKET_MS / 2) as f64;
        assert!((p.power_mean_w.unwrap() - (g1 + g2)).abs() < 1e-6);
        assert_eq!(p.power_max_w, Some(400.0));
    }

    #[test]
    fn empty_steps_are_reported_as_gaps() {
        let pts = aggregate_intervals(
            &[],
            UnixMillis(0),
            UnixMillis(2 * BUCKET_MS),
            BUCKET_MS,
            1,
            None,
        );
        assert_eq!(pts.len(), 2);
        assert_eq!(
            (pts[1].energy_mj, pts[1].coverage, pts[1].power_mean_w),
            (0, 0.0, None)
        );
        assert_eq!(pts[1].start, "1970-01-01T00:05:00.000Z");
        assert_eq!(pts[1].intensity_g_per_kwh, None);
    }

    #[test]
    fn zero_energy_intervals_fall_back_to_the_plain_mean_intensity() {
        let rows = vec![
            row(0, "g1", 0, 10, Some((100.0, IntensityKind::Actual))),
            row(0, "g2", 0, 10, Some((300.0, IntensityKind::Forecast))),
        ];
        let pts = aggregate_intervals(
            &rows,
            UnixMillis(0),
            UnixMillis(BUCKET_MS),
            BUCKET_MS,
            2,
            None,
        );
        assert_eq!(pts[0].intensity_g_per_kwh, Some(200.0));
    }

    fn request() -> WorkloadRequest {
        WorkloadRequest {
            label: "run".into(),
            instance_ids: vec!["i-1".into()],
            from: InstantInput::Text("2026-11-23T00:00:00Z".into()),
            to: Some(InstantInput::Millis(1_795_478_400_000)),
            functional_unit: "training run".into(),
            functional_units: 1.0,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn workload_validation_names_the_problem() {
        let l = ApiLimits::default();
        let ok = validate_workload(&request(), &l).unwrap();
        assert_eq!(
            (ok.from, ok.to),
            (
                UnixMillis(1_795_392_000_000),
                Some(UnixMillis(1_795_478_400_000))
            )
        );
        let cases: Vec<(WorkloadRequest, &str)> = vec![
            (
                WorkloadRequest {
                    label: " ".into(),
                    ..request()
                },
                "label",
            ),
            (
                WorkloadRequest {
                    functional_unit: "a\u{0}".into(),
                    ..request()
                },
                "functional_unit",
            ),
            (
                WorkloadRequest {
                    instance_ids: vec![],
                    ..request()
                },
                "instance_ids",
            ),
            (
                WorkloadRequest {
                    instance_ids: vec!["a".into(), "a".into()],
                    ..request()
                },
                "twice",
            ),
            (
                WorkloadRequest {
                    instance_ids: vec!["x".repeat(300)],
                    ..request()
                },
                "instance id",
            ),
            (
                WorkloadRequest {
                    to: Some(InstantInput::Text("2026-11-22T00:00:00Z".into())),
                    ..request()
                },
                "after",
            ),
            (
                WorkloadRequest {
                    to: Some(InstantInput::Text("2027-11-22T00:00:00Z".into())),
                    ..request()
                },
                "at most",
            ),
            (
                WorkloadRequest {
                    from: InstantInput::Text("soon".into()),
                    ..request()
                },
                "from",
            ),
            (
                WorkloadRequest {
                    functional_units: 0.0,
                    ..request()
                },
                "functional_units",
            ),
            (
                WorkloadRequest {
                    functional_units: f64::INFINITY,
                    ..request()
                },
                "functional_units",
            ),
        ];
        for (req, needle) in cases {
            match validate_workload(&req, &l) {
                Err(ApiError::BadRequest(msg)) => {
                    assert!(msg.contains(needle), "{msg} lacks {needle}")
                }
                other => panic!("{req:?} gave {other:?}"),
            }
        }
    }
}
