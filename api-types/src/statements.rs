//! Monthly carbon statements: a tenant's month like an invoice — per instance, per workload and
//! in total, marginal and location-based emissions side by side, preliminary until the month is
//! issued, then never changed (later corrections are dated adjustment lines on a later month).

use serde::{Deserialize, Serialize};
use wattprint_core::sci::FootprintProvenance;

/// The format version of a statement's content; part of what an issued statement's hash
/// covers.
pub const STATEMENT_MODEL_VERSION: &str = "wattprint-statement/1";

/// Energy and emissions of one line of a statement (an instance, a workload, the total).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementAmounts {
    /// IT (GPU) energy, exact, millijoules.
    pub it_energy_mj: u64,
    /// IT energy, kWh.
    pub it_energy_kwh: f64,
    /// Part of `it_energy_mj` estimated by power integration rather than counted.
    pub estimated_energy_mj: u64,
    /// Facility energy: Σ IT energy × PUE, kWh.
    pub facility_energy_kwh: f64,
    /// Marginal emissions on IT energy: Σ E_i × I_i over 5-minute GPU-intervals, grams.
    pub marginal_it_co2e_g: f64,
    /// Marginal emissions on facility energy: Σ E_i × PUE_i × I_i, grams.
    pub marginal_co2e_g: f64,
    /// Location-based emissions on the grid's average intensity, facility energy, grams;
    /// null where no interval of the line had an average.
    pub location_co2e_g: Option<f64>,
    /// Energy (mJ) of intervals without an average intensity (not in `location_co2e_g`).
    pub location_missing_energy_mj: u64,
    /// Embodied emissions of the GPUs over the time they were used, grams.
    pub embodied_co2e_g: f64,
    /// 5-minute GPU-intervals counted.
    pub gpu_intervals: u64,
    /// GPU-milliseconds covered by samples.
    pub covered_gpu_ms: i64,
    /// Where energy and intensity came from.
    #[schema(value_type = crate::schema::FootprintProvenanceSchema)]
    pub provenance: FootprintProvenance,
}

/// One instance of the tenant with usage in the month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementInstance {
    /// Instance id.
    pub instance_id: String,
    /// GPUs with usage in the month.
    pub gpus: u32,
    /// Its amounts.
    #[serde(flatten)]
    pub amounts: StatementAmounts,
}

/// One workload overlapping the month, counted over its part inside the month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementWorkload {
    /// Workload id.
    pub workload_id: String,
    /// Its label (human name).
    pub label: String,
    /// What R counts.
    pub functional_unit: String,
    /// R for the whole workload.
    pub functional_units: f64,
    /// Start of its part inside the month (RFC 3339).
    pub from: String,
    /// End of its part inside the month (exclusive).
    pub to: String,
    /// Software Carbon Intensity of that part: (marginal facility + embodied) / R, grams per
    /// functional unit.
    pub sci_g_per_unit: f64,
    /// Its amounts.
    #[serde(flatten)]
    pub amounts: StatementAmounts,
}

/// One UTC day of the month: what the statement's chart draws.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementDay {
    /// The day (`YYYY-MM-DD`, UTC).
    pub day: String,
    /// IT energy, exact, millijoules.
    pub it_energy_mj: u64,
    /// Marginal facility emissions, grams.
    pub marginal_co2e_g: f64,
}

/// A correction to an earlier issued month, found after it was issued: late samples or a
/// restatement of its intensity. Issued month + its adjustments = a recompute of it today.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementAdjustment {
    /// The month corrected (`YYYY-MM`).
    pub period: String,
    /// When the correction was found (RFC 3339).
    pub dated: String,
    /// Why (e.g. `late samples or intensity restated after issue`).
    pub reason: String,
    /// Energy added (negative: removed), millijoules.
    pub it_energy_mj: i64,
    /// Change of marginal facility emissions, grams.
    pub marginal_co2e_g: f64,
    /// Change of location-based emissions, grams.
    pub location_co2e_g: f64,
}

/// Market-based emissions (GHG Protocol scope 2): shown only where the provider configured its
/// contractual instruments; otherwise the status says so and no number is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MarketBased {
    /// `configured` (every region used has instruments), `partial` (some have none: no total
    /// is given, the regions that have them are listed) or `not_configured` (none has).
    pub status: String,
    /// Market-based emissions on facility energy, grams: given only when every region used
    /// has instruments and every unmatched kWh a residual factor.
    pub co2e_g: Option<f64>,
    /// Per region used, how its energy was matched hour by hour. Absent from statements
    /// issued before it existed (and empty when no instruments are configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<MarketRegion>,
}

/// One region's market-based emissions: each hour the provider's instruments for the region
/// cover the tenants' facility energy pro rata (matched share = min(1, instruments ÷ all
/// tenants' energy in that region-hour)); matched energy carries the instruments' factor,
/// the rest the residual mix (or, where none is configured, each interval's grid average).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MarketRegion {
    /// Region id.
    pub region: String,
    /// `configured` or `not_configured` (no instruments for this region: no numbers).
    pub status: String,
    /// The tenant's facility energy in the region over the period, kWh.
    pub facility_energy_kwh: f64,
    /// Of it, covered by contractual instruments, kWh.
    pub matched_kwh: Option<f64>,
    /// Emissions of the matched energy at the instruments' factor, grams.
    pub instrument_co2e_g: Option<f64>,
    /// Emissions of the unmatched energy at the residual factor, grams.
    pub residual_co2e_g: Option<f64>,
    /// Unmatched energy that had no residual factor (no residual mix configured and no grid
    /// average for the interval), kWh; when above zero `co2e_g` is null.
    pub unmatched_without_factor_kwh: Option<f64>,
    /// `instrument_co2e_g + residual_co2e_g`, grams; null when not configured or incomplete.
    pub co2e_g: Option<f64>,
    /// What the residual factor was: `residual_mix:<g/kWh>` or `grid_average`.
    pub residual: Option<String>,
    /// SHA-256 of the instruments file the hours were read from (provenance).
    pub instruments_sha256: Option<String>,
}

/// What shifting one workload in time would have saved, from its what-ifs
/// (`GET /v1/workloads/{id}/whatif`) under the statement's assumptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CarbonAwareWorkload {
    /// Workload id.
    pub workload_id: String,
    /// Its marginal facility emissions as it ran, grams (the what-if's, on 5-minute slots).
    pub actual_co2e_g: Option<f64>,
    /// Flexible Start: the best start within the window, RFC 3339; null when unavailable.
    pub flexible_start_best_start: Option<String>,
    /// Flexible Start: grams saved by starting then; null when unavailable.
    pub flexible_start_saving_co2e_g: Option<f64>,
    /// Pause and Resume: grams saved by the optimal schedule; null when unavailable.
    pub pause_resume_saving_co2e_g: Option<f64>,
    /// Why a what-if could not be computed (e.g. no actual intensity for the window).
    pub unavailable: Vec<String>,
}

/// The month's carbon-aware potential: what Flexible Start and Pause and Resume (Dodge et al.
/// 2022) would have saved for the workloads that ended in the month, each counted once, in the
/// month it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CarbonAwarePotential {
    /// The intensity the plans are made and judged on, in words (hindsight on actuals).
    pub basis: String,
    /// Flexible Start window: how much later the run could have started, hours.
    pub window_hours: f64,
    /// Pause and Resume deadline: the run may take this many times its length.
    pub deadline_factor: f64,
    /// Per workload that ended in the month, by id.
    pub workloads: Vec<CarbonAwareWorkload>,
    /// Σ Flexible Start savings of the workloads where computable, grams.
    pub flexible_start_saving_co2e_g: f64,
    /// Σ Pause and Resume savings of the workloads where computable, grams.
    pub pause_resume_saving_co2e_g: f64,
}

/// A tenant's monthly carbon statement (`GET /v1/statements/{YYYY-MM}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementView {
    /// Stable id of the tenant's month (the same preliminary and issued).
    pub statement_id: String,
    /// The tenant.
    pub tenant: String,
    /// The month (`YYYY-MM`, UTC).
    pub period: String,
    /// First instant of the month (RFC 3339).
    pub from: String,
    /// First instant after it.
    pub to: String,
    /// `preliminary` (recomputed on every read) or `issued` (never changes).
    pub status: String,
    /// When it was issued (null while preliminary).
    pub issued_at: Option<String>,
    /// When its numbers were computed.
    pub computed_at: String,
    /// SHA-256 of the issued content (the statement with this field null), hex; null while
    /// preliminary.
    pub content_sha256: Option<String>,
    /// [`STATEMENT_MODEL_VERSION`].
    pub model_version: String,
    /// The month's totals.
    pub totals: StatementAmounts,
    /// Per instance with usage, by id.
    pub instances: Vec<StatementInstance>,
    /// Per workload overlapping the month, by id.
    pub workloads: Vec<StatementWorkload>,
    /// Corrections to earlier issued months, like credits on an invoice.
    pub adjustments: Vec<StatementAdjustment>,
    /// The month day by day (days with usage), for its chart.
    pub daily: Vec<StatementDay>,
    /// Market-based emissions.
    pub market_based: MarketBased,
    /// Sources of the average intensities used for location-based emissions.
    pub location_sources: Vec<String>,
    /// The month's carbon-aware potential. Absent from statements issued before it existed:
    /// they are served as issued (and hash as issued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carbon_aware: Option<CarbonAwarePotential>,
}

/// One month in `GET /v1/statements`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementSummary {
    /// The month (`YYYY-MM`).
    pub period: String,
    /// `preliminary` or `issued`.
    pub status: String,
    /// When issued.
    pub issued_at: Option<String>,
    /// SHA-256 of the issued content.
    pub content_sha256: Option<String>,
}

/// Body of `GET /v1/statements`: the tenant's issued months, newest first, then the current
/// (preliminary) month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatementList {
    /// The months.
    pub statements: Vec<StatementSummary>,
}
