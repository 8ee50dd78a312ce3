//! A workload's energy evidence: the JSON a model provider attaches to its model documentation
//! (the EU AI Act asks general-purpose model providers for the energy used to train a model) —
//! what was measured and what estimated, facility energy, emissions on marginal and average
//! intensity, where every number came from, and a hash that lets anyone check the document.

use serde::{Deserialize, Serialize};
use wattprint_core::sci::FootprintProvenance;

use crate::workloads::{CoverageView, WorkloadView};

/// The format version of the evidence document.
pub const EVIDENCE_MODEL_VERSION: &str = "wattprint-evidence/1";

/// One instance the workload ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceInstance {
    /// Instance id.
    pub instance_id: String,
    /// Grid region (where its energy's emissions are counted).
    pub region: String,
    /// GPU models, one entry per GPU.
    pub gpu_models: Vec<String>,
}

/// The workload's energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceEnergy {
    /// IT (GPU) energy, exact, millijoules.
    pub it_energy_mj: u64,
    /// IT energy, kWh.
    pub it_energy_kwh: f64,
    /// Part of it read from the GPUs' energy counters, millijoules.
    pub measured_energy_mj: u64,
    /// Part of it integrated from power readings (GPUs without a counter), millijoules.
    pub estimated_energy_mj: u64,
    /// Facility energy: Σ IT energy × PUE per 5-minute interval, kWh.
    pub facility_energy_kwh: f64,
    /// Facility ÷ IT energy (energy-weighted PUE); null without energy.
    pub mean_pue: Option<f64>,
    /// GPU-time expected and covered by samples.
    pub coverage: CoverageView,
}

/// The workload's emissions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceEmissions {
    /// Marginal emissions of the facility energy (Σ E × PUE × I per 5-minute interval), grams.
    pub marginal_co2e_g: f64,
    /// Marginal emissions of the IT energy alone, grams.
    pub marginal_it_co2e_g: f64,
    /// Location-based emissions on the grid's average intensity (facility energy), grams; null
    /// where no average applies (never guessed).
    pub location_co2e_g: Option<f64>,
    /// Energy without an average intensity (not in `location_co2e_g`), millijoules.
    pub location_missing_energy_mj: u64,
    /// Embodied emissions of the GPUs over the workload's span, grams.
    pub embodied_co2e_g: f64,
    /// What R counts.
    pub functional_unit: String,
    /// R.
    pub functional_units: f64,
    /// SCI: (marginal facility + embodied) ÷ R, grams per functional unit.
    pub sci_g_per_unit: f64,
}

/// Where the intensities came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EvidenceSources {
    /// Marginal intensity sources joined to the workload's intervals.
    pub marginal_sources: Vec<String>,
    /// Average intensity sources (location-based emissions).
    pub location_sources: Vec<String>,
    /// Intensity model versions the providers gave for the span (`provider model`), from the
    /// intensity ledger.
    pub model_versions: Vec<String>,
    /// Measured share and how each interval was joined (actual, forecast, fallback, none).
    #[schema(value_type = crate::schema::FootprintProvenanceSchema)]
    pub provenance: FootprintProvenance,
}

/// `GET /v1/workloads/{id}/evidence`: a workload's energy evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadEvidence {
    /// [`EVIDENCE_MODEL_VERSION`].
    pub evidence_version: String,
    /// When this document was generated (RFC 3339); not covered by `content_sha256`.
    pub generated_at: String,
    /// The tenant.
    pub tenant: String,
    /// The workload (its span: `from` to `to`; an open workload is counted up to
    /// `counted_to`).
    pub workload: WorkloadView,
    /// End of the span counted (the workload's end, or now while open).
    pub counted_to: String,
    /// GPUs of the workload's instances.
    pub gpus: u32,
    /// The instances.
    pub instances: Vec<EvidenceInstance>,
    /// Instances of the workload no longer in the inventory: nothing of theirs is counted.
    pub missing_instances: Vec<String>,
    /// Energy.
    pub energy: EvidenceEnergy,
    /// Emissions.
    pub emissions: EvidenceEmissions,
    /// Intensity sources, model versions and provenance.
    pub sources: EvidenceSources,
    /// How the numbers were computed.
    pub method: Vec<String>,
    /// SHA-256 (lowercase hex) of this JSON, compact as served, with `generated_at` set to
    /// `""` and this field null: it covers the content, not when it was generated.
    pub content_sha256: Option<String>,
}
