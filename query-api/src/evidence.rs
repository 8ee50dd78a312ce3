//! A workload's energy evidence (`GET /v1/workloads/{id}/evidence`): the JSON a model provider
//! attaches to its model documentation. Every number is the workload footprint's own
//! ([`workload_energy`], [`footprint_of`]) — the evidence adds where each came
//! from and a content hash; it never computes energy or emissions a second way. The hash
//! covers everything but `generated_at` (blanked to `""` while hashing), so the same data
//! always gives the same hash.
//! Tenant-scoped like every route: another tenant's workload is not found.

use std::collections::BTreeSet;

use wattprint_api_types::{
    EvidenceEmissions, EvidenceEnergy, EvidenceInstance, EvidenceSources, WorkloadEvidence,
    EVIDENCE_MODEL_VERSION,
};
use wattprint_core::{Bucket, TenantScope, UnixMillis, WorkloadId};
use wattprint_store::{LedgerQuery, Store};

use crate::error::ApiError;
use crate::service;
use crate::service::footprint::{footprint_of, workload_energy};
use crate::ApiState;

/// How the numbers are computed: printed in every evidence document.
const METHOD: [&str; 6] = [
    "IT energy is the GPUs' energy counter deltas (NVML total energy), split at 5-minute interval \
     edges in proportion to time and clipped exactly to the workload's span; GPUs without a \
     counter are integrated from power readings (estimated_energy_mj).",
    "Facility energy is each 5-minute interval's IT energy times the PUE configured for its \
     instance, summed.",
    "Marginal emissions are summed per 5-minute GPU-interval: energy x PUE x the marginal \
     intensity joined to that interval (actual where available, else forecast or fallback, as \
     counted in provenance); never total energy x a mean intensity.",
    "Location-based emissions use the grid's average intensity for each interval (a published \
     average, else the eGRID annual rate); intervals without one are left out and counted in \
     location_missing_energy_mj, never guessed.",
    "Embodied emissions are each GPU's manufacturing emissions amortised linearly over its \
     lifetime, for the workload's span.",
    "content_sha256 is the SHA-256 (lowercase hex) of this JSON serialised compactly as \
     served, with generated_at set to the empty string and content_sha256 null: it covers the \
     content, not the moment it was generated, so every request for the same data gives the \
     same hash.",
];

/// The tenant's workload `id` as energy evidence now, from `state`'s store, hardware catalog,
/// limits and intensity (REST and gRPC both call this): 400 for a malformed id, 404 if absent
/// or another tenant's.
#[tracing::instrument(skip_all, fields(workload = tracing::field::Empty))]
pub async fn workload_evidence(
    state: &ApiState,
    scope: &TenantScope,
    id: &str,
) -> Result<WorkloadEvidence, ApiError> {
    service::check_id("workload", id)?;
    tracing::Span::current().record("workload", id);
    let store = state.store.as_ref();
    let join = state.intensity_join().ok();
    let join = join.as_deref();
    let w = service::tenant_workload(store, scope, &WorkloadId::new(id)).await?;
    let span = crate::workloads::workload_span(&w, &state.limits)?;
    let energy = workload_energy(store, scope, &w, span, join).await?;
    let view = footprint_of(&energy, &state.catalog, &w, span, join.is_some())?;
    let inventory = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no instances".into()))?;
    let instances: Vec<EvidenceInstance> = inventory
        .iter()
        .filter(|r| w.spec.instances.contains(&r.instance))
        .map(|r| EvidenceInstance {
            instance_id: r.instance.to_string(),
            region: r.region.to_string(),
            gpu_models: r.gpus.iter().map(|g| g.model.clone()).collect(),
        })
        .collect();
    let model_versions =
        model_versions(store, &energy.regions, span, &energy.marginal_sources).await?;
    let fp = &view.footprint;
    let estimated = energy.estimated_mj();
    let (location_co2e_g, location_missing_energy_mj) = energy.location_emissions(&view);
    let mut evidence = WorkloadEvidence {
        evidence_version: EVIDENCE_MODEL_VERSION.into(),
        // Set after hashing: the hash covers the content, not the time of this request.
        generated_at: String::new(),
        tenant: scope.tenant().to_string(),
        workload: service::workload_view(&w),
        counted_to: span.1.to_rfc3339(),
        gpus: u32::try_from(view.embodied.gpus).unwrap_or(u32::MAX),
        instances,
        missing_instances: view.missing_instances.clone(),
        energy: EvidenceEnergy {
            it_energy_mj: fp.it_energy_mj,
            it_energy_kwh: fp.it_energy_kwh,
            measured_energy_mj: fp.it_energy_mj.saturating_sub(estimated),
            estimated_energy_mj: estimated,
            facility_energy_kwh: fp.facility_energy_kwh,
            mean_pue: (fp.it_energy_kwh > 0.0).then(|| fp.facility_energy_kwh / fp.it_energy_kwh),
            coverage: view.coverage,
        },
        emissions: EvidenceEmissions {
            marginal_co2e_g: fp.operational_co2e_g,
            marginal_it_co2e_g: fp.operational_it_co2e_g,
            location_co2e_g,
            location_missing_energy_mj,
            embodied_co2e_g: fp.embodied_co2e_g,
            functional_unit: view.functional_unit.clone(),
            functional_units: fp.functional_units,
            sci_g_per_unit: fp.sci_g_per_unit,
        },
        sources: EvidenceSources {
            marginal_sources: energy.marginal_sources.iter().cloned().collect(),
            location_sources: energy.average.sources.iter().cloned().collect(),
            model_versions,
            provenance: fp.provenance.clone(),
        },
        method: METHOD.iter().map(|m| (*m).to_owned()).collect(),
        content_sha256: None,
    };
    evidence.content_sha256 = Some(crate::statements::issue::json_sha256(&evidence)?);
    evidence.generated_at = UnixMillis::now().to_rfc3339();
    Ok(evidence)
}

/// The model versions the intensity ledger holds for the workload's regions and span, from the
/// sources joined to its intervals, as `provider model`.
async fn model_versions(
    store: &dyn Store,
    regions: &BTreeSet<wattprint_core::RegionId>,
    (from, to): (UnixMillis, UnixMillis),
    sources: &BTreeSet<String>,
) -> Result<Vec<String>, ApiError> {
    let mut out = BTreeSet::new();
    for region in regions {
        let points = store
            .intensity_points(&LedgerQuery {
                region: Some(region.clone()),
                signal: None,
                from: Bucket::containing(from).start(),
                to,
                fetched_since: None,
            })
            .await
            .map_err(|e| ApiError::from_store(e, || "no intensity".into()))?;
        out.extend(points.into_iter().filter_map(|p| {
            let version = p.model_version?;
            sources
                .contains(&p.provider)
                .then(|| format!("{} {version}", p.provider))
        }));
    }
    Ok(out.into_iter().collect())
}
