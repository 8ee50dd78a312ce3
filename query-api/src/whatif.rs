//! Carbon-aware what-ifs of a workload (Dodge et al. 2022): what it would have emitted had it
//! started later (Flexible Start) or paused in dirty 5-minute slots (Pause and Resume), on the
//! marginal intensity of its grid region. Two bases:
//!
//! - `actual` (default): the actual marginal intensity — hindsight, as in the paper;
//! - `forecast`: the marginal forecasts known when the workload started (for each slot, the
//!   latest forecast issued at or before `from`) — what a scheduler could have planned. Each
//!   plan is then also judged on the actuals where they cover it (`realized_*`): the saving the
//!   plan would really have made, which can be smaller than forecast, or negative.
//!
//! The algorithms are
//! [`wattprint_core::whatif`]; this module builds their inputs from the store and the intensity
//! join, and renders the results.
//!
//! Inputs: the workload's facility energy per 5-minute slot (IT energy × the bucket's PUE,
//! rounded to the millijoule), slot 0 being the bucket holding `from`; and the region's
//! intensity per slot from the same join the enricher uses. Only points of the basis count
//! (actuals, or forecasts issued by the start): a fallback average, a nearest actual or a gap
//! ends the usable series (a constant would invent a "no saving" answer), and a window that
//! would need slots past it is listed as unavailable with the reason, never computed on
//! made-up values.

pub use wattprint_api_types::{Basis, FlexibleStartView, PauseResumeView, RunView, WhatIfView};
use wattprint_core::intensity::{IntensityJoin, IntensityKind};
use wattprint_core::whatif::{
    deadline_slots, flexible_start, pause_and_resume, plan_emissions, slot_start,
    FlexibleStartResult, PauseResumeResult, WhatIfError,
};
use wattprint_core::{
    Bucket, GramsPerKwh, Millijoules, RegionId, TenantScope, UnixMillis, WorkloadId, BUCKET_MS,
};
use wattprint_store::Store;

use crate::budget::{check_budget, whatif_cost_cells};
use crate::error::ApiError;
use crate::service::workload_energy;
use crate::ApiLimits;

/// Flexible Start windows of the paper, hours.
pub const PAPER_WINDOWS_HOURS: [f64; 4] = [6.0, 12.0, 18.0, 24.0];
/// Pause and Resume deadline factors of the paper.
pub const PAPER_FACTORS: [f64; 4] = [1.25, 1.5, 1.75, 2.0];
/// Longest Flexible Start window accepted: 30 days.
pub const MAX_WINDOW_HOURS: f64 = 720.0;
/// Largest Pause and Resume factor accepted (the paper stops at 2).
pub const MAX_FACTOR: f64 = 4.0;
/// Most windows or factors in one request.
pub const MAX_CHOICES: usize = 8;

const SLOTS_PER_HOUR: f64 = 12.0;

/// Parses a basis, `actual` or `forecast` (400 otherwise).
pub fn parse_basis(s: &str) -> Result<Basis, ApiError> {
    match s {
        "actual" => Ok(Basis::Actual),
        "forecast" => Ok(Basis::Forecast),
        other => Err(ApiError::BadRequest(format!(
            "basis: {other:?} is not one of actual, forecast"
        ))),
    }
}

/// The basis in words, as what-if answers state it.
pub fn describe(basis: Basis) -> &'static str {
    match basis {
        Basis::Actual => "actual marginal intensity (hindsight)",
        Basis::Forecast => "marginal forecast known at the workload's start (planning)",
    }
}

/// Which what-ifs to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfRequest {
    /// Flexible Start windows, hours (multiples of 5 minutes).
    pub windows_hours: Vec<f64>,
    /// Pause and Resume deadline factors.
    pub factors: Vec<f64>,
    /// Intensity the plans are made on.
    pub basis: Basis,
}

impl Default for WhatIfRequest {
    fn default() -> Self {
        Self {
            windows_hours: PAPER_WINDOWS_HOURS.to_vec(),
            factors: PAPER_FACTORS.to_vec(),
            basis: Basis::Actual,
        }
    }
}

fn parse_list(name: &str, raw: &str) -> Result<Vec<f64>, ApiError> {
    raw.split(',')
        .map(|part| {
            part.trim()
                .parse::<f64>()
                .map_err(|_| ApiError::BadRequest(format!("{name}: {part:?} is not a number")))
        })
        .collect()
}

impl WhatIfRequest {
    /// Parses `window_hours` and `factor` (comma-separated lists; the paper's values when
    /// absent), then [`Self::new`].
    pub fn parse(window_hours: Option<&str>, factor: Option<&str>) -> Result<Self, ApiError> {
        let windows = window_hours
            .map(|raw| parse_list("window_hours", raw))
            .transpose()?;
        let factors = factor.map(|raw| parse_list("factor", raw)).transpose()?;
        Self::new(windows, factors)
    }

    /// The same request on another basis.
    pub fn with_basis(mut self, basis: Basis) -> Self {
        self.basis = basis;
        self
    }

    /// Checks the lists (the paper's values for `None` or empty): at most [`MAX_CHOICES`]
    /// each; windows in (0, 720] hours and whole 5-minute slots; factors in [1, 4].
    pub fn new(
        windows_hours: Option<Vec<f64>>,
        factors: Option<Vec<f64>>,
    ) -> Result<Self, ApiError> {
        let mut req = Self::default();
        if let Some(w) = windows_hours.filter(|w| !w.is_empty()) {
            req.windows_hours = w;
        }
        if let Some(f) = factors.filter(|f| !f.is_empty()) {
            req.factors = f;
        }
        for (name, n) in [
            ("window_hours", req.windows_hours.len()),
            ("factor", req.factors.len()),
        ] {
            if n > MAX_CHOICES {
                return Err(ApiError::BadRequest(format!(
                    "{name} takes at most {MAX_CHOICES} values, got {n}"
                )));
            }
        }
        for &h in &req.windows_hours {
            let slots = h * SLOTS_PER_HOUR;
            if !(h > 0.0 && h <= MAX_WINDOW_HOURS) || (slots - slots.round()).abs() > 1e-9 {
                return Err(ApiError::BadRequest(format!(
                    "window_hours {h} must be more than 0 and at most {MAX_WINDOW_HOURS}, in whole 5-minute steps"
                )));
            }
        }
        for &f in &req.factors {
            if !(1.0..=MAX_FACTOR).contains(&f) {
                return Err(ApiError::BadRequest(format!(
                    "factor {f} must be between 1 and {MAX_FACTOR}"
                )));
            }
        }
        Ok(req)
    }

    fn window_slots(hours: f64) -> usize {
        // Validated: positive, at most 720 h, whole slots.
        (hours * SLOTS_PER_HOUR).round() as usize
    }
}

fn rfc3339(t: UnixMillis) -> String {
    t.to_rfc3339()
}

/// Facility energy per slot from `first` for `n` slots: Σ energy × PUE of the slices in each
/// bucket, rounded to the millijoule.
pub fn facility_profile(
    slices: &[wattprint_core::sci::FootprintSlice],
    first: Bucket,
    n: usize,
) -> Vec<Millijoules> {
    let mut per_slot = vec![0.0f64; n];
    for s in slices {
        let slot = s.bucket.start().since(first.start()).div_euclid(BUCKET_MS);
        if let Some(acc) = usize::try_from(slot).ok().and_then(|i| per_slot.get_mut(i)) {
            *acc += s.energy.0 as f64 * s.pue;
        }
    }
    per_slot
        .into_iter()
        .map(|e| Millijoules(e.round() as u64))
        .collect()
}

/// The region's actual intensity per slot from `first`, up to `needed` slots, stopping at the
/// first slot without an actual point. Also returns the first slot's source and replay flag.
fn actual_series(
    join: &IntensityJoin,
    region: &RegionId,
    first: Bucket,
    needed: usize,
) -> (Vec<GramsPerKwh>, Option<(String, bool)>, Option<String>) {
    let mut series = Vec::with_capacity(needed);
    let mut source = None;
    for slot in 0..needed {
        let bucket = Bucket::containing(slot_start(first, slot));
        match join.lookup(region, bucket) {
            Some(j) if j.kind == IntensityKind::Actual => {
                if source.is_none() {
                    source = Some((j.source.clone(), j.replayed));
                }
                series.push(j.value);
            }
            other => {
                let what = match other {
                    Some(j) => format!("only a {} value", j.kind.as_str()),
                    None => "no value".to_owned(),
                };
                return (
                    series,
                    source,
                    Some(format!("{} has {what}", rfc3339(bucket.start()))),
                );
            }
        }
    }
    (series, source, None)
}

/// The region's forecast per slot from `first` as known at `decided_at` (the latest issued at
/// or before it), up to `needed` slots, stopping at the first slot without one.
fn forecast_series(
    join: &IntensityJoin,
    region: &RegionId,
    first: Bucket,
    needed: usize,
    decided_at: UnixMillis,
) -> (Vec<GramsPerKwh>, Option<(String, bool)>, Option<String>) {
    let mut series = Vec::with_capacity(needed);
    let mut source = None;
    for slot in 0..needed {
        let bucket = Bucket::containing(slot_start(first, slot));
        let Some(j) = join.forecast_as_of(region, bucket, decided_at) else {
            return (
                series,
                source,
                Some(format!(
                    "{} has no forecast issued by {}",
                    rfc3339(bucket.start()),
                    rfc3339(decided_at)
                )),
            );
        };
        if source.is_none() {
            source = Some((j.source.clone(), j.replayed));
        }
        series.push(j.value);
    }
    (series, source, None)
}

fn runs(first: Bucket, schedule: &[usize]) -> Vec<RunView> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &s in schedule {
        match out.last_mut() {
            Some((_, end)) if *end == s => *end = s + 1,
            _ => out.push((s, s + 1)),
        }
    }
    out.into_iter()
        .map(|(a, b)| RunView {
            from: rfc3339(slot_start(first, a)),
            to: rfc3339(slot_start(first, b)),
        })
        .collect()
}

fn minutes(slots: usize) -> i64 {
    i64::try_from(slots).unwrap_or(i64::MAX).saturating_mul(5)
}

/// A plan judged on the actuals: (its emissions there, as-run minus those), when the actuals
/// cover both the run as it was and the plan.
fn realized(
    profile: &[Millijoules],
    actuals: Option<&[GramsPerKwh]>,
    slots: &[usize],
) -> (Option<f64>, Option<f64>) {
    let Some(actuals) = actuals else {
        return (None, None);
    };
    let as_run: Vec<usize> = (0..profile.len()).collect();
    match (
        plan_emissions(profile, actuals, slots),
        plan_emissions(profile, actuals, &as_run),
    ) {
        (Some(plan), Some(run)) => (Some(plan.0), Some(run.0 - plan.0)),
        (plan, _) => (plan.map(|p| p.0), None),
    }
}

fn flexible_view(
    first: Bucket,
    hours: f64,
    r: &FlexibleStartResult,
    realized: (Option<f64>, Option<f64>),
) -> FlexibleStartView {
    FlexibleStartView {
        window_hours: hours,
        actual_co2e_g: r.actual.0,
        best_start: rfc3339(slot_start(first, r.best_offset)),
        best_delay_minutes: minutes(r.best_offset),
        best_co2e_g: r.best.0,
        worst_start: rfc3339(slot_start(first, r.worst_offset)),
        worst_co2e_g: r.worst.0,
        saving_co2e_g: r.saving.0,
        saving_pct: r.saving_pct,
        realized_co2e_g: realized.0,
        realized_saving_co2e_g: realized.1,
    }
}

fn pause_view(
    first: Bucket,
    factor: f64,
    r: &PauseResumeResult,
    realized: (Option<f64>, Option<f64>),
) -> PauseResumeView {
    PauseResumeView {
        factor,
        deadline: rfc3339(slot_start(first, r.deadline_slots)),
        actual_co2e_g: r.actual.0,
        co2e_g: r.emissions.0,
        saving_co2e_g: r.saving.0,
        saving_pct: r.saving_pct,
        paused_minutes: minutes(r.paused_slots),
        schedule: runs(first, &r.schedule),
        realized_co2e_g: realized.0,
        realized_saving_co2e_g: realized.1,
    }
}

/// The one grid region of a workload's instances: 422 when none is left in the inventory or
/// they span several (a what-if shifts a run on one region's intensity).
fn single_region(
    id: &WorkloadId,
    regions: &std::collections::BTreeSet<RegionId>,
) -> Result<RegionId, ApiError> {
    let mut iter = regions.iter();
    match (iter.next(), iter.next()) {
        (Some(region), None) => Ok(region.clone()),
        (None, _) => Err(ApiError::Unprocessable(format!(
            "workload {id}: none of its instances is in the inventory any more"
        ))),
        (Some(_), Some(_)) => {
            let names: Vec<&str> = regions.iter().map(RegionId::as_str).collect();
            Err(ApiError::Unprocessable(format!(
                "workload {id} spans grid regions {}: what-ifs shift a run on one region's \
                 intensity; create one workload per region",
                names.join(", ")
            )))
        }
    }
}

/// Slots of intensity each what-if of a run of `n` slots reads: (window, n + window slots)
/// per Flexible Start window, (factor, deadline slots) per Pause and Resume factor, and the
/// most any of them (or the run itself) needs.
#[allow(clippy::type_complexity)]
fn horizons(
    req: &WhatIfRequest,
    n: usize,
) -> Result<(Vec<(f64, usize)>, Vec<(f64, usize)>, usize), ApiError> {
    let windows: Vec<(f64, usize)> = req
        .windows_hours
        .iter()
        .map(|&h| (h, n + WhatIfRequest::window_slots(h)))
        .collect();
    let deadlines = req
        .factors
        .iter()
        .map(|&f| Ok((f, deadline_slots(n, f)?)))
        .collect::<Result<Vec<(f64, usize)>, WhatIfError>>()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let needed = windows
        .iter()
        .chain(&deadlines)
        .map(|&(_, slots)| slots)
        .fold(n, usize::max);
    Ok((windows, deadlines, needed))
}

/// Permits for what-if searches running at once: one per core.
fn compute_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

/// The what-ifs of one of the tenant's workloads (404 if absent or another tenant's; 422 when
/// its instances span several regions, its run lacks actual intensity, or the searches would
/// cost more than `limits.whatif_budget_cells`, checked before any energy is read).
pub async fn workload_whatif(
    store: &dyn Store,
    scope: &TenantScope,
    join: &IntensityJoin,
    id: &WorkloadId,
    req: &WhatIfRequest,
    limits: &ApiLimits,
) -> Result<WhatIfView, ApiError> {
    let w = crate::service::tenant_workload(store, scope, id).await?;
    let range = crate::workloads::workload_span(&w, limits)?;
    let first = Bucket::containing(w.spec.from);
    // Slots from the bucket holding `from` through the one holding the last millisecond.
    let span = range.1.since(first.start()).max(1);
    let n = usize::try_from((span + BUCKET_MS - 1).div_euclid(BUCKET_MS)).unwrap_or(1);
    // Slots of intensity each what-if reads: n + window, and the deadline m. What the
    // searches will cost is known from these alone: refused before reading any energy.
    let (windows, deadlines, needed) = horizons(req, n)?;
    let window_slots: Vec<usize> = windows.iter().map(|&(_, slots)| slots - n).collect();
    let deadline_slots: Vec<usize> = deadlines.iter().map(|&(_, m)| m).collect();
    let cost = whatif_cost_cells(n, &window_slots, &deadline_slots);
    check_budget(cost, limits.whatif_budget_cells, n)?;
    let energy = workload_energy(store, scope, &w, range, None).await?;
    let region = single_region(id, &energy.regions)?;
    let profile = facility_profile(&energy.slices, first, n);
    let actuals = actual_series(join, &region, first, needed);
    let (series, source, stop, realized_on) = match req.basis {
        Basis::Actual => (actuals.0, actuals.1, actuals.2, None),
        Basis::Forecast => {
            let (series, source, stop) = forecast_series(join, &region, first, needed, w.spec.from);
            (series, source, stop, Some(actuals.0))
        }
    };
    let what = match req.basis {
        Basis::Actual => "an actual marginal intensity",
        Basis::Forecast => "a marginal forecast issued by its start",
    };
    if series.len() < n {
        return Err(ApiError::Unprocessable(format!(
            "workload {id}: region {region} lacks {what} during the run ({})",
            stop.unwrap_or_default()
        )));
    }
    let known_until = slot_start(first, series.len());
    let energy_kwh =
        profile.iter().map(|e| e.0 as f64).sum::<f64>() / wattprint_core::units::MJ_PER_KWH as f64;
    let profile_slots = n;
    // The searches are CPU work of up to a few hundred thousand slots each: they run on the
    // blocking pool, at most one per core at a time, never on the async workers.
    let _permit = compute_permits()
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("what-if permits: {e}")))?;
    let (workload, region_name) = (id.to_string(), region.to_string());
    let (flexible, pause, unavailable) = tokio::task::spawn_blocking(move || {
        let why_short = |needed_slots: usize| {
            format!(
                "needs {what} until {}; region {region_name} has it until {} ({})",
                rfc3339(slot_start(first, needed_slots)),
                rfc3339(known_until),
                stop.clone().unwrap_or_default()
            )
        };
        let mut unavailable = Vec::new();
        let mut flexible = Vec::new();
        for &(h, slots) in &windows {
            if series.len() < slots {
                unavailable.push(format!("flexible start {h} h: {}", why_short(slots)));
                continue;
            }
            let r = flexible_start(&profile, &series, slots - n)
                .map_err(|e| ApiError::Internal(format!("flexible start of {workload}: {e}")))?;
            let plan: Vec<usize> = (r.best_offset..r.best_offset + n).collect();
            let judged = realized(&profile, realized_on.as_deref(), &plan);
            flexible.push(flexible_view(first, h, &r, judged));
        }
        let mut pause = Vec::new();
        for &(f, m) in &deadlines {
            if series.len() < m {
                unavailable.push(format!("pause and resume ×{f}: {}", why_short(m)));
                continue;
            }
            let r = pause_and_resume(&profile, &series, f)
                .map_err(|e| ApiError::Internal(format!("pause and resume of {workload}: {e}")))?;
            let judged = realized(&profile, realized_on.as_deref(), &r.schedule);
            pause.push(pause_view(first, f, &r, judged));
        }
        Ok::<_, ApiError>((flexible, pause, unavailable))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("what-if search of {id}: {e}")))??;
    let (intensity_source, intensity_replayed) = source.unwrap_or_default();
    Ok(WhatIfView {
        workload_id: id.to_string(),
        region: region.to_string(),
        basis: describe(req.basis).to_owned(),
        basis_kind: req.basis,
        intensity_source,
        intensity_replayed,
        first_slot: rfc3339(first.start()),
        profile_slots,
        energy_kwh,
        intensity_known_until: rfc3339(known_until),
        flexible_start: flexible,
        pause_resume: pause,
        unavailable,
    })
}
