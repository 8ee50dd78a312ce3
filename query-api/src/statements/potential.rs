//! The carbon-aware potential of a month: what Flexible Start and Pause and Resume would have
//! saved for each workload that ended in the month (counted once, in the month it ended), and
//! their sum. Each workload's figures are its what-ifs ([`crate::whatif::workload_whatif`],
//! the same code as `GET /v1/workloads/{id}/whatif`) under one fixed set of assumptions, stated
//! in the statement: hindsight on the actual marginal intensity, a 24-hour start window and a
//! deadline of twice the run's length (the paper's largest).

use wattprint_api_types::{Basis, CarbonAwarePotential, CarbonAwareWorkload};
use wattprint_core::TenantScope;
use wattprint_store::Workload;

use super::{Period, Sources};
use crate::error::ApiError;
use crate::whatif::{describe, workload_whatif, WhatIfRequest};
use crate::ApiLimits;

/// Flexible Start window of the statement's potential, hours.
pub const WINDOW_HOURS: f64 = 24.0;
/// Pause and Resume deadline factor of the statement's potential.
pub const DEADLINE_FACTOR: f64 = 2.0;

/// The potential of `workloads` (the tenant's) that ended in `period`.
pub async fn potential(
    src: Sources<'_>,
    scope: &TenantScope,
    period: Period,
    workloads: &[Workload],
) -> Result<CarbonAwarePotential, ApiError> {
    let req = WhatIfRequest {
        windows_hours: vec![WINDOW_HOURS],
        factors: vec![DEADLINE_FACTOR],
        basis: Basis::Actual,
    };
    let mut lines = Vec::new();
    let ended = workloads.iter().filter(|w| {
        w.spec
            .to
            .is_some_and(|to| to > period.start() && to <= period.end())
    });
    for w in ended {
        let unavailable = |why: String| CarbonAwareWorkload {
            workload_id: w.id.to_string(),
            actual_co2e_g: None,
            flexible_start_best_start: None,
            flexible_start_saving_co2e_g: None,
            pause_resume_saving_co2e_g: None,
            unavailable: vec![why],
        };
        let Some(join) = src.join else {
            lines.push(unavailable("no intensity sources are configured".into()));
            continue;
        };
        let limits = ApiLimits::default();
        match workload_whatif(src.store, scope, join, &w.id, &req, &limits).await {
            Ok(v) => {
                let flexible = v.flexible_start.first();
                let pause = v.pause_resume.first();
                lines.push(CarbonAwareWorkload {
                    workload_id: w.id.to_string(),
                    actual_co2e_g: flexible
                        .map(|f| f.actual_co2e_g)
                        .or(pause.map(|p| p.actual_co2e_g)),
                    flexible_start_best_start: flexible.map(|f| f.best_start.clone()),
                    flexible_start_saving_co2e_g: flexible.map(|f| f.saving_co2e_g),
                    pause_resume_saving_co2e_g: pause.map(|p| p.saving_co2e_g),
                    unavailable: v.unavailable,
                });
            }
            // No actual intensity for the run or its window, several regions, over budget.
            Err(ApiError::Unprocessable(why)) => lines.push(unavailable(why)),
            Err(e) => return Err(e),
        }
    }
    lines.sort_by(|a, b| a.workload_id.cmp(&b.workload_id));
    Ok(CarbonAwarePotential {
        basis: describe(req.basis).to_owned(),
        window_hours: WINDOW_HOURS,
        deadline_factor: DEADLINE_FACTOR,
        flexible_start_saving_co2e_g: lines
            .iter()
            .filter_map(|l| l.flexible_start_saving_co2e_g)
            .sum(),
        pause_resume_saving_co2e_g: lines
            .iter()
            .filter_map(|l| l.pause_resume_saving_co2e_g)
            .sum(),
        workloads: lines,
    })
}
