//! Inventory views: the tenant's instances and their GPUs, and the health body.

use serde::{Deserialize, Serialize};

/// Body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves (a silent main loop is a 503 problem instead).
    pub status: String,
}

/// Body of `GET /v1/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceList {
    /// The caller's instances, by id.
    pub instances: Vec<InstanceView>,
    /// Cursor of the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

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
