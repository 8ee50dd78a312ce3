//! The API's logic over the [`Store`](wattprint_store::Store), one module per service: [`inventory`], [`series`],
//! [`summary`], [`workloads`] and their [`footprint`]s. Handlers in [`crate::routes`] only
//! parse and render; the gRPC adapter calls these functions unchanged. Pure helpers
//! ([`aggregate_intervals`], [`validate_workload`]) are tested without I/O. The views they
//! return are `wattprint-api-types`' (re-exported here); this module keeps the checks every
//! service shares.

use wattprint_core::{InstanceId, UnixMillis};

pub use wattprint_api_types::{
    AggregatePoint, CoverageView, EmbodiedView, FootprintView, GpuView, InstanceUsageView,
    InstanceView, IntensityKinds, RawPoint, Series, SeriesPoints, TenantSummaryView, UsageView,
    WorkloadDetail, WorkloadRequest, WorkloadView,
};

use crate::error::ApiError;
use crate::ApiLimits;

/// Longest id accepted in a path or body, in characters (as the OpenAPI document states).
pub const MAX_ID_LEN: usize = wattprint_api_types::schema::MAX_ID_CHARS;
/// Longest label or functional-unit name.
pub const MAX_TEXT_LEN: usize = wattprint_api_types::schema::MAX_TEXT_CHARS;
/// Most instances one workload may name.
pub const MAX_WORKLOAD_INSTANCES: usize = 100;

pub(crate) fn not_found_instance(id: &InstanceId) -> ApiError {
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
    if id.is_empty() || id.chars().count() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{kind} id must be 1 to {MAX_ID_LEN} characters without control characters"
        )));
    }
    Ok(())
}

pub mod footprint;
pub mod inventory;
pub mod series;
pub mod summary;
pub mod workloads;

pub use footprint::{
    clip_window, workload_energy, workload_footprint, ClippedEnergy, WorkloadEnergy,
};
pub use inventory::{instance_view, list_instances};
pub use series::{aggregate_hours, aggregate_intervals, instance_series, raw_point, SeriesRequest};
pub use summary::{tenant_summary, usage_view, SummaryRequest};
pub use workloads::{
    create_workload, tenant_workload, validate_workload, workload_detail, workload_view,
};
