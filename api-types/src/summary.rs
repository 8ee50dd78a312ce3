//! Summary views: a tenant's usage over a range, per instance and in total.

use serde::{Deserialize, Serialize};
use wattprint_core::sci::FootprintProvenance;

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
    #[schema(value_type = crate::schema::FootprintProvenanceSchema)]
    pub provenance: FootprintProvenance,
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
