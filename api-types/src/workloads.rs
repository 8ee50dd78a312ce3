//! Workload requests and views: creation, listing, labels, closing, footprints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wattprint_core::sci::Footprint;

use crate::time::InstantInput;

/// Body of `POST /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRequest {
    /// Human label: 1 to 200 characters, not blank, no control characters.
    #[schema(schema_with = crate::schema::text_schema)]
    pub label: String,
    /// Instances it ran on: 1 to 100 of the tenant's instance ids, each once.
    #[schema(schema_with = crate::schema::instance_ids_schema)]
    pub instance_ids: Vec<String>,
    /// Start: RFC 3339 or Unix ms.
    pub from: InstantInput,
    /// End (exclusive): RFC 3339 or Unix ms. Absent: the workload is open (still running)
    /// until `POST /v1/workloads/{id}/close`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<InstantInput>,
    /// What R counts (e.g. `training run`): 1 to 200 characters, not blank, no control
    /// characters.
    #[schema(schema_with = crate::schema::text_schema)]
    pub functional_unit: String,
    /// R: how many functional units the workload produced, a positive finite number.
    #[schema(exclusive_minimum = 0.0)]
    pub functional_units: f64,
    /// Key/value labels (team, project…); see `PUT /v1/workloads/{id}/labels` for the rules.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(schema_with = crate::schema::labels_schema)]
    pub labels: BTreeMap<String, String>,
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
    // Absent from older servers' answers: read as none. Always sent, so required.
    #[serde(default)]
    #[schema(required = true)]
    pub labels: BTreeMap<String, String>,
    /// What R counts.
    pub functional_unit: String,
    /// R.
    pub functional_units: f64,
    /// Creation time (RFC 3339).
    pub created_at: String,
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
    #[schema(value_type = crate::schema::FootprintSchema)]
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

/// A workload's emissions on average intensity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AverageEmissionsView {
    /// IT emissions: Σ over GPU-intervals of E_i × A_i.
    pub operational_it_co2e_g: f64,
    /// Facility emissions: Σ E_i × PUE_i × A_i.
    pub operational_co2e_g: f64,
    /// Facility emissions plus the embodied share.
    pub total_co2e_g: f64,
    /// SCI on average intensity: (facility + embodied) ÷ R.
    pub sci_g_per_unit: f64,
    /// Energy-weighted mean average intensity, g/kWh; null when none applied.
    pub intensity_g_per_kwh: Option<f64>,
    /// Energy of intervals whose region has no average intensity (not counted above).
    pub energy_without_intensity_mj: u64,
    /// Where the averages came from.
    pub intensity_sources: Vec<String>,
}

/// `open`, `closed` or `all` workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Workloads without an end yet.
    Open,
    /// Workloads with an end.
    Closed,
    /// Both (default).
    #[default]
    All,
}

/// Body of `GET /v1/workloads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadList {
    /// The caller's workloads, newest first.
    pub workloads: Vec<WorkloadView>,
    /// Cursor of the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Body of `PUT /v1/workloads/{id}/labels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    /// The new labels, replacing all old ones (`{}` removes every label). Keys: 1 to 63 of
    /// letters, digits, `.`, `_`, `/`, `-`, starting with a letter or digit; values up to 200
    /// characters; at most 64 labels.
    #[schema(schema_with = crate::schema::labels_schema)]
    pub labels: BTreeMap<String, String>,
}

/// Body of `POST /v1/workloads/{id}/close`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// End (exclusive): RFC 3339 or Unix ms; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<InstantInput>,
}

impl std::ops::Deref for FootprintView {
    type Target = Footprint;

    /// Core's fields read as the view's own (`view.sci_g_per_unit`), as they are on the wire.
    fn deref(&self) -> &Footprint {
        &self.footprint
    }
}

impl StatusFilter {
    /// The name the API uses (`open`, `closed`, `all`).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusFilter::Open => "open",
            StatusFilter::Closed => "closed",
            StatusFilter::All => "all",
        }
    }
}
