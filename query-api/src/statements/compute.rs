//! Computing a tenant's month from the 5-minute ledger: every line is a sum over the month's
//! intervals (`Store::tenant_intervals`), so the totals reconcile to the intervals by
//! construction — to the mJ for energy, and with the same per-interval arithmetic as the
//! stores' summaries for grams. Workloads are views over the same intervals (clipped to their
//! part of the month); the totals are the instances' sums, never instances plus workloads.

use std::collections::{BTreeMap, HashMap};

use wattprint_api_types::{
    StatementAmounts, StatementDay, StatementInstance, StatementView, StatementWorkload,
    STATEMENT_MODEL_VERSION,
};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sci::HardwareCatalog;
use wattprint_core::{GpuUuid, InstanceId, TenantScope, UnixMillis};
use wattprint_store::{IntervalRow, Store, UsageTotals, Workload};

use super::Period;

const DAY_MS: i64 = 86_400_000;
use crate::average::AverageTotals;
use crate::error::ApiError;
use crate::service::footprint::{footprint_of, workload_energy};

/// What a statement is computed from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Embodied emissions per GPU model.
    pub catalog: &'a HardwareCatalog,
    /// Average intensities for location-based emissions (`None`: not available, the column
    /// is null rather than guessed).
    pub join: Option<&'a IntensityJoin>,
    /// The provider's contractual instruments for market-based emissions (`None`: the
    /// column says `not_configured`).
    pub market: Option<&'a super::market::MarketInstruments>,
}

/// Sums of intervals with their average-intensity emissions and embodied share.
#[derive(Debug, Default)]
struct Tally {
    usage: UsageTotals,
    average: AverageTotals,
    embodied_g: f64,
    gpus: std::collections::BTreeSet<GpuUuid>,
}

impl Tally {
    fn add(&mut self, row: &IntervalRow, join: Option<&IntensityJoin>) {
        self.usage.add_interval(row);
        if let Some(join) = join {
            self.average
                .add(join, &row.region, row.bucket, row.energy, row.pue);
        }
        self.gpus.insert(row.gpu.clone());
    }

    fn amounts(&self, with_location: bool) -> StatementAmounts {
        let u = &self.usage;
        StatementAmounts {
            it_energy_mj: u.energy.0,
            it_energy_kwh: u.energy.to_kwh().0,
            estimated_energy_mj: u.estimated.0,
            facility_energy_kwh: u.facility_energy.0,
            marginal_it_co2e_g: u.it_co2e.0,
            marginal_co2e_g: u.facility_co2e.0,
            location_co2e_g: (with_location && self.average.energy_with_intensity > 0)
                .then_some(self.average.facility_co2e_g),
            location_missing_energy_mj: if with_location {
                self.average.energy_without_intensity
            } else {
                u.energy.0
            },
            embodied_co2e_g: self.embodied_g,
            gpu_intervals: u.gpu_intervals,
            covered_gpu_ms: u.covered_ms,
            provenance: u.provenance(),
        }
    }
}

/// The tenant's month as it stands at `now`: a preliminary statement, without adjustments
/// (see [`super::issue`]). The current month counts up to `now`.
pub async fn compute(
    src: Sources<'_>,
    scope: &TenantScope,
    period: Period,
    now: UnixMillis,
) -> Result<StatementView, ApiError> {
    compute_with(src, scope, period, now, true).await
}

/// [`compute`], with the carbon-aware potential only when `with_potential` (its what-if
/// searches are the costly part; adjustments and issuing checks need only the amounts).
pub(crate) async fn compute_with(
    src: Sources<'_>,
    scope: &TenantScope,
    period: Period,
    now: UnixMillis,
    with_potential: bool,
) -> Result<StatementView, ApiError> {
    let (from, to) = (period.start(), period.end());
    let rows = src
        .store
        .tenant_intervals(scope, from, to)
        .await
        .map_err(|e| ApiError::from_store(e, || "no usage".into()))?;
    let inventory = src
        .store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no instances".into()))?;
    let models: HashMap<&GpuUuid, &str> = inventory
        .iter()
        .flat_map(|i| i.gpus.iter().map(|g| (&g.uuid, g.model.as_str())))
        .collect();

    let mut per_instance: BTreeMap<InstanceId, Tally> = BTreeMap::new();
    let mut per_day: BTreeMap<i64, (u64, f64)> = BTreeMap::new();
    let mut covered_per_gpu: HashMap<(InstanceId, GpuUuid), i64> = HashMap::new();
    for row in &rows {
        per_instance
            .entry(row.instance.clone())
            .or_default()
            .add(row, src.join);
        *covered_per_gpu
            .entry((row.instance.clone(), row.gpu.clone()))
            .or_default() += row.covered_ms;
        let day = per_day
            .entry(row.bucket.start().0.div_euclid(DAY_MS))
            .or_default();
        day.0 = day.0.saturating_add(row.energy.0);
        if let Some(j) = &row.intensity {
            day.1 += j.value.emissions(row.energy).0 * row.pue;
        }
    }
    // Embodied: each GPU's share over the time it was used in the month.
    for ((instance, gpu), covered_ms) in &covered_per_gpu {
        let share = models
            .get(gpu)
            .and_then(|m| src.catalog.embodied_share(m, *covered_ms));
        if let (Some(t), Some(g)) = (per_instance.get_mut(instance), share) {
            t.embodied_g += g.0;
        }
    }
    let with_location = src.join.is_some();
    let mut total = Tally::default();
    let mut instances = Vec::with_capacity(per_instance.len());
    for (instance, tally) in &per_instance {
        total.usage.add(&tally.usage);
        total.average.merge(&tally.average);
        total.embodied_g += tally.embodied_g;
        instances.push(StatementInstance {
            instance_id: instance.to_string(),
            gpus: u32::try_from(tally.gpus.len()).unwrap_or(u32::MAX),
            amounts: tally.amounts(with_location),
        });
    }
    let listed = src
        .store
        .list_workloads(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no workloads".into()))?;
    let workloads = workload_lines(src, scope, &listed, (from, to.min(now.max(from)))).await?;
    let market_based = super::market::market_based(src, &rows, (from, to)).await?;
    let carbon_aware = if with_potential {
        Some(super::potential::potential(src, scope, period, &listed).await?)
    } else {
        None
    };
    Ok(StatementView {
        statement_id: statement_id(scope, period),
        tenant: scope.tenant().to_string(),
        period: period.to_string(),
        from: from.to_rfc3339(),
        to: to.to_rfc3339(),
        status: "preliminary".into(),
        issued_at: None,
        computed_at: now.to_rfc3339(),
        content_sha256: None,
        model_version: STATEMENT_MODEL_VERSION.into(),
        totals: total.amounts(with_location),
        instances,
        workloads,
        adjustments: Vec::new(),
        daily: per_day
            .into_iter()
            .map(|(day, (e, g))| StatementDay {
                day: UnixMillis(day * DAY_MS).to_rfc3339()[..10].to_owned(),
                it_energy_mj: e,
                marginal_co2e_g: g,
            })
            .collect(),
        market_based,
        location_sources: total.average.sources.iter().cloned().collect(),
        carbon_aware,
    })
}

/// Every workload overlapping `[from, to)`, counted over its part inside it, by id.
async fn workload_lines(
    src: Sources<'_>,
    scope: &TenantScope,
    workloads: &[Workload],
    (from, to): (UnixMillis, UnixMillis),
) -> Result<Vec<StatementWorkload>, ApiError> {
    let mut lines = Vec::new();
    for w in workloads {
        let (a, b) = (w.spec.from.max(from), w.spec.to.unwrap_or(to).min(to));
        if a >= b {
            continue;
        }
        lines.push(workload_line(src, scope, w, (a, b)).await?);
    }
    lines.sort_by(|x, y| x.workload_id.cmp(&y.workload_id));
    Ok(lines)
}

async fn workload_line(
    src: Sources<'_>,
    scope: &TenantScope,
    w: &Workload,
    (a, b): (UnixMillis, UnixMillis),
) -> Result<StatementWorkload, ApiError> {
    let energy = workload_energy(src.store, scope, w, (a, b), src.join).await?;
    let view = footprint_of(&energy, src.catalog, w, (a, b), src.join.is_some())?;
    let fp = &view.footprint;
    let (location_co2e_g, location_missing_energy_mj) = energy.location_emissions(&view);
    Ok(StatementWorkload {
        workload_id: w.id.to_string(),
        label: w.spec.label.clone(),
        functional_unit: w.spec.functional_unit.clone(),
        functional_units: w.spec.functional_units,
        from: a.to_rfc3339(),
        to: b.to_rfc3339(),
        sci_g_per_unit: fp.sci_g_per_unit,
        amounts: StatementAmounts {
            it_energy_mj: fp.it_energy_mj,
            it_energy_kwh: fp.it_energy_kwh,
            estimated_energy_mj: energy.estimated_mj(),
            facility_energy_kwh: fp.facility_energy_kwh,
            marginal_it_co2e_g: fp.operational_it_co2e_g,
            marginal_co2e_g: fp.operational_co2e_g,
            location_co2e_g,
            location_missing_energy_mj,
            embodied_co2e_g: fp.embodied_co2e_g,
            gpu_intervals: energy.slices.len() as u64,
            covered_gpu_ms: view.coverage.covered_gpu_ms,
            provenance: fp.provenance.clone(),
        },
    })
}

/// The stable id of a tenant's month: the same while preliminary and once issued.
pub fn statement_id(scope: &TenantScope, period: Period) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{period}", scope.tenant()).as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("st-{period}-{hex}")
}
