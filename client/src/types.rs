//! Request and response bodies of the query API. Field names are the server's JSON names
//! exactly; these are the client's own copies so the client does not depend on the server
//! crates. Unknown fields are ignored, so a newer server does not break an older client.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// A point in time as the API takes it: RFC 3339 text or Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timestamp {
    /// Unix milliseconds.
    UnixMillis(i64),
    /// RFC 3339 (e.g. `2026-11-23T00:00:00Z`).
    Rfc3339(String),
}

impl Timestamp {
    /// The current wall-clock time, to the millisecond.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp::UnixMillis(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    /// The form sent in a query string.
    pub fn to_query(&self) -> String {
        match self {
            Timestamp::UnixMillis(ms) => ms.to_string(),
            Timestamp::Rfc3339(s) => s.clone(),
        }
    }
}

impl std::str::FromStr for Timestamp {
    type Err = std::convert::Infallible;

    /// Digits (with an optional leading `-`) are Unix milliseconds; anything else is sent as
    /// RFC 3339 text for the server to check.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let digits = s.strip_prefix('-').unwrap_or(s);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(ms) = s.parse::<i64>() {
                return Ok(Timestamp::UnixMillis(ms));
            }
        }
        Ok(Timestamp::Rfc3339(s.to_owned()))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_query())
    }
}

impl From<i64> for Timestamp {
    fn from(ms: i64) -> Self {
        Timestamp::UnixMillis(ms)
    }
}

impl From<&str> for Timestamp {
    fn from(s: &str) -> Self {
        Timestamp::Rfc3339(s.to_owned())
    }
}

impl From<String> for Timestamp {
    fn from(s: String) -> Self {
        Timestamp::Rfc3339(s)
    }
}

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` while the server serves.
    pub status: String,
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// A GPU of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// NVML uuid.
    pub uuid: String,
    /// Model name.
    pub model: String,
    /// Enforced power limit, watts.
    pub power_limit_w: f64,
}

/// One of the tenant's instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance id.
    pub instance_id: String,
    /// Grid region.
    pub region: String,
    /// Datacenter zip code, if known.
    pub zip_code: Option<String>,
    /// Attached GPUs.
    pub gpus: Vec<Gpu>,
}

/// One page of `GET /v1/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceList {
    /// The caller's instances on this page.
    pub instances: Vec<Instance>,
    /// Cursor of the next page; `None` on the last (and on servers that do not paginate).
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Paging of a listing: at most `limit` items after `cursor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Most items on the page (the server's default when `None`).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Series

/// Resolution of a series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The stored samples.
    #[serde(rename = "raw")]
    Raw,
    /// 5-minute buckets (the default).
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    /// UTC hours.
    #[serde(rename = "1h")]
    Hour,
    /// UTC days.
    #[serde(rename = "1d")]
    Day,
}

impl Step {
    /// The name the API uses (`raw`, `5m`, `1h`, `1d`).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Raw => "raw",
            Step::FiveMinutes => "5m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }
}

/// Query of `GET /v1/instances/{id}/series`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Start (server default: `to` − 1 h).
    pub from: Option<Timestamp>,
    /// End, exclusive (server default: now).
    pub to: Option<Timestamp>,
    /// Resolution (server default: 5m).
    pub step: Option<Step>,
}

/// Counts of GPU-intervals by intensity provenance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntensityKinds {
    /// Joined with an actual marginal value.
    pub actual: u64,
    /// Joined with a forecast.
    pub forecast: u64,
    /// Joined with the region's average (flagged fallback).
    pub fallback_average: u64,
    /// No intensity at all.
    pub missing: u64,
    /// Of those with an intensity, how many used a historical series replayed on a shifted
    /// clock.
    pub replayed: u64,
}

/// One step of an aggregated series, all GPUs of the instance summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatePoint {
    /// Start of the step (RFC 3339).
    pub start: String,
    /// End of the step (exclusive).
    pub end: String,
    /// Energy, exact.
    pub energy_mj: u64,
    /// Energy, kWh.
    pub energy_kwh: f64,
    /// Part of `energy_mj` estimated by power integration.
    pub estimated_energy_mj: u64,
    /// Mean power while measured, watts; `None` when nothing was measured.
    pub power_mean_w: Option<f64>,
    /// Highest single-GPU power, watts; `None` when nothing was measured.
    pub power_max_w: Option<f64>,
    /// Covered GPU-time ÷ (step × GPUs), 0 to 1.
    pub coverage: f64,
    /// Energy-weighted mean marginal intensity; `None` if no interval had one.
    pub intensity_g_per_kwh: Option<f64>,
    /// How many GPU-intervals used which kind of intensity.
    pub intensity_kinds: IntensityKinds,
    /// IT emissions on marginal intensity, Σ E_i × I_i.
    pub co2e_g: f64,
    /// Facility emissions on marginal intensity, Σ E_i × PUE_i × I_i.
    pub facility_co2e_g: f64,
    /// Energy of intervals without intensity.
    pub co2e_missing_energy_mj: u64,
    /// Energy-weighted mean of the region's average (location-based) intensity, g/kWh;
    /// `None` when none applies or the server has no intensity sources.
    #[serde(default)]
    pub average_intensity_g_per_kwh: Option<f64>,
    /// IT emissions on average intensity, Σ E_i × A_i.
    #[serde(default)]
    pub average_co2e_g: Option<f64>,
    /// Facility emissions on average intensity, Σ E_i × PUE_i × A_i.
    #[serde(default)]
    pub average_facility_co2e_g: Option<f64>,
}

/// One stored sample of one GPU (`step=raw`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Highest power over the span, watts.
    pub power_max_w: f64,
    /// GPU utilisation at `end`, percent.
    pub util_gpu_pct: u32,
    /// Temperature at `end`, °C.
    pub temp_c: u32,
    /// First span of a counter chain.
    pub chain_start: bool,
    /// `counter` or `power_integration`.
    pub energy_source: String,
    /// `exclusive`, `apportioned_mig` or `apportioned_vgpu`.
    pub attribution: String,
}

/// Points of a series, by step.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

    /// Σ energy of the points, exact.
    pub fn energy_mj(&self) -> u64 {
        match self {
            SeriesPoints::Raw(p) => p.iter().map(|x| x.energy_mj).sum(),
            SeriesPoints::Aggregated(p) => p.iter().map(|x| x.energy_mj).sum(),
        }
    }
}

/// Body of `GET /v1/instances/{id}/series`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Instance.
    pub instance_id: String,
    /// Resolution.
    pub step: Step,
    /// Start of the range the points cover.
    pub from: String,
    /// End of the range (exclusive).
    pub to: String,
    /// Points in time order; raw samples or aggregated steps, as `step` says.
    pub points: SeriesPoints,
}

impl<'de> Deserialize<'de> for Series {
    /// Reads `points` by `step`, so an empty raw series is still a raw one.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            instance_id: String,
            step: Step,
            from: String,
            to: String,
            points: serde_json::Value,
        }
        let w = Wire::deserialize(d)?;
        let points = match w.step {
            Step::Raw => SeriesPoints::Raw(
                serde_json::from_value(w.points).map_err(serde::de::Error::custom)?,
            ),
            _ => SeriesPoints::Aggregated(
                serde_json::from_value(w.points).map_err(serde::de::Error::custom)?,
            ),
        };
        Ok(Series {
            instance_id: w.instance_id,
            step: w.step,
            from: w.from,
            to: w.to,
            points,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Summary

/// Where a footprint's or usage's numbers came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Share of energy read from the counter (1.0 = all measured).
    pub energy_measured_share: f64,
    /// Intervals joined with an actual marginal value.
    pub intervals_actual: u64,
    /// Intervals joined with a forecast.
    pub intervals_forecast: u64,
    /// Intervals joined with the region's average (flagged fallback).
    pub intervals_fallback: u64,
    /// Intervals with no intensity at all.
    pub intervals_missing_intensity: u64,
    /// Energy in those intervals.
    pub energy_without_intensity_mj: u64,
    /// Intervals whose intensity was a historical series replayed on a shifted clock.
    pub intervals_replayed_intensity: u64,
}

/// Energy, emissions and provenance of a set of GPU-intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// IT energy, exact.
    pub it_energy_mj: u64,
    /// IT energy, kWh.
    pub it_energy_kwh: f64,
    /// Part of `it_energy_mj` estimated by power integration.
    pub estimated_energy_mj: u64,
    /// Facility energy (IT × PUE), kWh.
    pub facility_energy_kwh: f64,
    /// IT emissions on marginal intensity.
    pub operational_it_co2e_g: f64,
    /// Facility emissions on marginal intensity.
    pub operational_co2e_g: f64,
    /// 5-minute GPU-intervals counted.
    pub gpu_intervals: u64,
    /// GPU-milliseconds covered by samples.
    pub covered_gpu_ms: i64,
    /// Highest single-GPU power, watts.
    pub power_max_w: Option<f64>,
    /// Where the numbers came from.
    pub provenance: Provenance,
}

/// One instance of a tenant summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceUsage {
    /// Instance id.
    pub instance_id: String,
    /// GPUs with data in the range.
    pub gpus: u32,
    /// Its usage.
    #[serde(flatten)]
    pub usage: Usage,
}

/// Body of `GET /v1/summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantSummary {
    /// Start of the range counted (rounded down to 5 minutes).
    pub from: String,
    /// End of the range counted (rounded up to 5 minutes).
    pub to: String,
    /// The tenant's total.
    pub totals: Usage,
    /// Per instance with data in the range.
    pub instances: Vec<InstanceUsage>,
}

// ---------------------------------------------------------------------------------------------
// Workloads

/// Body of `POST /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewWorkload {
    /// Human label.
    pub label: String,
    /// Instances it ran on.
    pub instance_ids: Vec<String>,
    /// Start.
    pub from: Timestamp,
    /// End (exclusive); `None` opens the workload: it runs until closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    /// What R counts (e.g. `training run`).
    pub functional_unit: String,
    /// R: how many functional units the workload produced.
    pub functional_units: f64,
    /// Key/value labels (team, project, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
    /// Instances.
    pub instance_ids: Vec<String>,
    /// Start (RFC 3339).
    pub from: String,
    /// End, exclusive (RFC 3339); `None` while the workload is open.
    pub to: Option<String>,
    /// What R counts.
    pub functional_unit: String,
    /// R.
    pub functional_units: f64,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// `open` (no end yet) or `closed`.
    pub status: String,
    /// Key/value labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Which workloads a listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadStatus {
    /// Still open.
    Open,
    /// Closed.
    Closed,
    /// Both.
    All,
}

impl WorkloadStatus {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadStatus::Open => "open",
            WorkloadStatus::Closed => "closed",
            WorkloadStatus::All => "all",
        }
    }
}

/// One page of `GET /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadList {
    /// The caller's workloads on this page, newest first.
    pub workloads: Vec<Workload>,
    /// Cursor of the next page; `None` on the last.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Body of `PUT /v1/workloads/{id}/labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelsRequest {
    /// The labels, replacing the workload's.
    pub labels: BTreeMap<String, String>,
}

/// Body of `POST /v1/workloads/{id}/close`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseRequest {
    /// When it ended (server default: now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<Timestamp>,
}

/// GPU-time a footprint expected and found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// (to − from) × GPUs of the workload's instances.
    pub expected_gpu_ms: i64,
    /// GPU-time inside `[from, to)` covered by samples.
    pub covered_gpu_ms: i64,
}

/// Embodied emissions inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embodied {
    /// GPUs whose embodied share was considered.
    pub gpus: usize,
    /// GPU models absent from the hardware catalog (counted as 0).
    pub unknown_models: Vec<String>,
}

/// A workload's energy, emissions and SCI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// IT energy, exact.
    pub it_energy_mj: u64,
    /// IT energy, kWh.
    pub it_energy_kwh: f64,
    /// Facility energy (IT × PUE), kWh.
    pub facility_energy_kwh: f64,
    /// IT emissions on marginal intensity, Σ E_i × I_i.
    pub operational_it_co2e_g: f64,
    /// Facility emissions on marginal intensity, Σ E_i × PUE_i × I_i (what SCI uses).
    pub operational_co2e_g: f64,
    /// Embodied share M.
    pub embodied_co2e_g: f64,
    /// Operational + embodied.
    pub total_co2e_g: f64,
    /// R.
    pub functional_units: f64,
    /// SCI = (E·I + M) / R, gCO2e per functional unit.
    pub sci_g_per_unit: f64,
    /// Where the numbers came from.
    pub provenance: Provenance,
    /// What R counts.
    pub functional_unit: String,
    /// GPU-time coverage.
    pub coverage: Coverage,
    /// Embodied inputs.
    pub embodied: Embodied,
    /// Instances no longer in the tenant's inventory (nothing of theirs counted).
    pub missing_instances: Vec<String>,
    /// The same footprint on the grid's average intensity (the marginal figures above are
    /// the primary ones); `None` when the server has no intensity sources.
    #[serde(default)]
    pub average: Option<AverageEmissions>,
}

/// A workload's emissions on the grid's average (location-based) intensity: the region's
/// published average covering each 5-minute interval, else its static annual rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AverageEmissions {
    /// IT emissions, Σ E_i × A_i.
    pub operational_it_co2e_g: f64,
    /// Facility emissions, Σ E_i × PUE_i × A_i.
    pub operational_co2e_g: f64,
    /// Facility emissions plus the embodied share.
    pub total_co2e_g: f64,
    /// SCI on average intensity: (facility + embodied) ÷ R.
    pub sci_g_per_unit: f64,
    /// Energy-weighted mean average intensity, g/kWh; `None` when none applied.
    pub intensity_g_per_kwh: Option<f64>,
    /// Energy of intervals whose region has no average intensity (not counted above).
    pub energy_without_intensity_mj: u64,
    /// Where the averages came from (e.g. `egrid2023:CAMX`).
    pub intensity_sources: Vec<String>,
}

/// Body of `GET /v1/workloads/{id}`: the workload with its footprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadDetail {
    /// The workload.
    #[serde(flatten)]
    pub workload: Workload,
    /// Its footprint.
    pub footprint: Footprint,
}

// ---------------------------------------------------------------------------------------------
// What-ifs

/// Which intensity the what-ifs rest on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhatIfBasis {
    /// Actual marginal values, in hindsight.
    Actual,
    /// Forecasts.
    Forecast,
}

impl WhatIfBasis {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            WhatIfBasis::Actual => "actual",
            WhatIfBasis::Forecast => "forecast",
        }
    }
}

/// Query of `GET /v1/workloads/{id}/whatif`; empty lists take the paper's values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WhatIfQuery {
    /// Flexible Start windows, hours (server default 6, 12, 18, 24).
    pub window_hours: Vec<f64>,
    /// Pause and Resume deadline factors (server default 1.25, 1.5, 1.75, 2).
    pub factors: Vec<f64>,
    /// Intensity basis (server default: actual); on servers that support it.
    pub basis: Option<WhatIfBasis>,
}

/// One Flexible Start result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlexibleStart {
    /// Latest start considered, hours after the actual start.
    pub window_hours: f64,
    /// Emissions as run.
    pub actual_co2e_g: f64,
    /// Best start (RFC 3339).
    pub best_start: String,
    /// Delay of the best start, minutes.
    pub best_delay_minutes: i64,
    /// Emissions when started at the best start.
    pub best_co2e_g: f64,
    /// Worst start (RFC 3339).
    pub worst_start: String,
    /// Emissions when started at the worst start.
    pub worst_co2e_g: f64,
    /// `actual − best`.
    pub saving_co2e_g: f64,
    /// Saving as a percentage of actual.
    pub saving_pct: f64,
    /// Basis `forecast`: emissions of the best start on the actual intensity; `None` for
    /// basis `actual` or where actuals do not cover it.
    #[serde(default)]
    pub realized_co2e_g: Option<f64>,
    /// Basis `forecast`: emissions as run minus `realized_co2e_g`, both on actuals (the
    /// saving the plan would really have made; may be negative).
    #[serde(default)]
    pub realized_saving_co2e_g: Option<f64>,
}

/// A stretch in which the paused-and-resumed run works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRun {
    /// Start (RFC 3339).
    pub from: String,
    /// End, exclusive (RFC 3339).
    pub to: String,
}

/// One Pause and Resume result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseResume {
    /// The run must end within `factor ×` its duration.
    pub factor: f64,
    /// That deadline (RFC 3339).
    pub deadline: String,
    /// Emissions as run.
    pub actual_co2e_g: f64,
    /// Emissions of the best schedule.
    pub co2e_g: f64,
    /// `actual − co2e_g`.
    pub saving_co2e_g: f64,
    /// Saving as a percentage of actual.
    pub saving_pct: f64,
    /// Time paused before the run ends, minutes.
    pub paused_minutes: i64,
    /// When the run works, in order.
    pub schedule: Vec<ScheduleRun>,
    /// Basis `forecast`: emissions of this schedule on the actual intensity; `None` for basis
    /// `actual` or where actuals do not cover it.
    #[serde(default)]
    pub realized_co2e_g: Option<f64>,
    /// Basis `forecast`: emissions as run minus `realized_co2e_g`, both on actuals.
    #[serde(default)]
    pub realized_saving_co2e_g: Option<f64>,
}

/// Body of `GET /v1/workloads/{id}/whatif`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    /// The workload.
    pub workload_id: String,
    /// Grid region of its instances.
    pub region: String,
    /// What intensity the results rest on, in words.
    pub basis: String,
    /// The basis asked for (`actual` or `forecast`).
    pub basis_kind: WhatIfBasis,
    /// Source of the intensity series.
    pub intensity_source: String,
    /// Whether that series is historical data replayed on a shifted clock.
    pub intensity_replayed: bool,
    /// Start of the run's first 5-minute slot.
    pub first_slot: String,
    /// 5-minute slots the run spans.
    pub profile_slots: usize,
    /// Facility energy of the run, kWh.
    pub energy_kwh: f64,
    /// End of the last slot read with an actual intensity.
    pub intensity_known_until: String,
    /// Flexible Start, per window asked.
    pub flexible_start: Vec<FlexibleStart>,
    /// Pause and Resume, per factor asked.
    pub pause_resume: Vec<PauseResume>,
    /// What was asked but cannot be computed, and why.
    pub unavailable: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Operator

/// A tenant as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTenant {
    /// Tenant id.
    pub tenant: String,
    /// Instances it has in the inventory.
    pub instances: usize,
    /// GPUs attached to them.
    pub gpus: usize,
}

/// Body of `GET /v1/operator/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorTenantList {
    /// Every tenant of the inventory, by id.
    pub tenants: Vec<OperatorTenant>,
}

// ---------------------------------------------------------------------------------------------
// Restatements

/// An intensity value an interval was joined with, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntensityValue {
    /// gCO2e per kWh.
    pub value_g_per_kwh: f64,
    /// `actual`, `forecast` or `fallback_average`.
    pub kind: String,
    /// Data source.
    pub source: String,
    /// Time of the point used (RFC 3339).
    pub point_at: String,
    /// Whether it came from a replayed historical series.
    pub replayed: bool,
}

/// One restatement of one GPU-interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restatement {
    /// Instance.
    pub instance: String,
    /// GPU.
    pub gpu: String,
    /// Start of the interval's 5-minute bucket.
    pub bucket_start: String,
    /// Grid region.
    pub region: String,
    /// The interval's IT energy, exact.
    pub energy_mj: u64,
    /// Its PUE.
    pub pue: f64,
    /// Intensity before; `None` when the interval had none.
    pub previous: Option<IntensityValue>,
    /// Intensity after.
    pub current: IntensityValue,
    /// Why it changed.
    pub reason: String,
    /// When it was restated.
    pub restated_at: String,
    /// Change of IT emissions.
    pub it_co2e_delta_g: f64,
    /// Change of facility emissions.
    pub facility_co2e_delta_g: f64,
}

/// Sums over the restatements listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RestatementTotals {
    /// Distinct GPU-intervals restated.
    pub intervals: u64,
    /// Σ `it_co2e_delta_g`.
    pub it_co2e_delta_g: f64,
    /// Σ `facility_co2e_delta_g`.
    pub facility_co2e_delta_g: f64,
}

/// Body of `GET /v1/restatements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restatements {
    /// Start of the buckets covered.
    pub from: String,
    /// End of the buckets covered (exclusive).
    pub to: String,
    /// The restatements, by bucket, instance, GPU, then time.
    pub restatements: Vec<Restatement>,
    /// Their sums.
    pub totals: RestatementTotals,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_empty_raw_series_stays_raw_and_aggregates_decode_by_step() {
        let s: Series = serde_json::from_str(
            r#"{"instance_id":"i","step":"raw","from":"a","to":"b","points":[]}"#,
        )
        .unwrap();
        assert_eq!(s.points, SeriesPoints::Raw(vec![]));
        let s: Series = serde_json::from_str(
            r#"{"instance_id":"i","step":"1h","from":"a","to":"b","points":[{"start":"a","end":"b",
            "energy_mj":7,"energy_kwh":1e-9,"estimated_energy_mj":0,"power_mean_w":null,
            "power_max_w":null,"coverage":0.5,"intensity_g_per_kwh":null,"intensity_kinds":
            {"actual":0,"forecast":0,"fallback_average":0,"missing":1,"replayed":0},"co2e_g":0.0,
            "facility_co2e_g":0.0,"co2e_missing_energy_mj":7}]}"#,
        )
        .unwrap();
        assert_eq!(
            (s.step, s.points.len(), s.points.energy_mj()),
            (Step::Hour, 1, 7)
        );
    }

    #[test]
    fn timestamps_serialize_as_the_api_takes_them() {
        let w = NewWorkload {
            label: "l".into(),
            instance_ids: vec!["i".into()],
            from: 1_700_000_000_000.into(),
            to: Some("2026-11-23T01:00:00Z".into()),
            functional_unit: "run".into(),
            functional_units: 1.0,
            labels: BTreeMap::new(),
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["from"], 1_700_000_000_000i64);
        assert_eq!(v["to"], "2026-11-23T01:00:00Z");
        assert!(v.get("labels").is_none(), "{v}");
        let open = NewWorkload { to: None, ..w };
        assert!(serde_json::to_value(&open).unwrap().get("to").is_none());
        assert_eq!(
            "1700000000000".parse(),
            Ok(Timestamp::UnixMillis(1_700_000_000_000))
        );
        assert_eq!(
            " 2026-11-23T00:00:00Z".parse(),
            Ok(Timestamp::Rfc3339("2026-11-23T00:00:00Z".into()))
        );
        assert_eq!(
            serde_json::to_string(&CloseRequest { end: None }).unwrap(),
            "{}"
        );
    }
}
