//! The summary service: a tenant's usage over whole 5-minute buckets, per instance and in
//! total, as the store sums it.
//!
//! This is the billing path, so it never trusts a precomputed figure blindly: SQLite sums the
//! interval rows themselves (a restatement rewrites them in one transaction), and ClickHouse
//! checks every hourly rollup's stamp against the hour's write count before using it, reading
//! stale hours from the 5-minute data (see the store's `clickhouse/rollups.rs`). Either way
//! the answer equals the sum of the stored intervals after any failed write or restatement
//! (`query-api/tests/it/summary_faults.rs`).

use wattprint_core::{TenantScope, UnixMillis, BUCKET_MS};
use wattprint_store::{Store, UsageTotals};

use super::*;
use crate::error::ApiError;
use crate::time::{ceil_to, floor_to};
use crate::ApiLimits;

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

/// The API's view of usage totals.
pub fn usage_view(t: &UsageTotals) -> UsageView {
    UsageView {
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
        totals: usage_view(&summary.totals),
        instances: summary
            .instances
            .iter()
            .map(|i| InstanceUsageView {
                instance_id: i.instance.to_string(),
                gpus: i.gpus,
                usage: usage_view(&i.totals),
            })
            .collect(),
    })
}
