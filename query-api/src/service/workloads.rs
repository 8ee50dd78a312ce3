//! The workload service: validating and creating workloads, and one workload with its
//! footprint. Invariant: a workload names only the tenant's own instances, each once.

use std::collections::BTreeSet;

use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sci::HardwareCatalog;
use wattprint_core::{InstanceId, TenantScope, UnixMillis, WorkloadId};
use wattprint_store::{NewWorkload, Store, Workload};

use super::*;
use crate::error::ApiError;
use crate::ApiLimits;

fn check_text(field: &str, s: &str) -> Result<(), ApiError> {
    if s.trim().is_empty() || s.chars().count() > MAX_TEXT_LEN || s.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field} must be 1 to {MAX_TEXT_LEN} characters, not blank, without control characters"
        )));
    }
    Ok(())
}

/// Validates a workload request into the store's form (400 with the reason otherwise).
pub fn validate_workload(
    req: &WorkloadRequest,
    limits: &ApiLimits,
) -> Result<NewWorkload, ApiError> {
    check_text("label", &req.label)?;
    check_text("functional_unit", &req.functional_unit)?;
    if req.instance_ids.is_empty() || req.instance_ids.len() > MAX_WORKLOAD_INSTANCES {
        return Err(ApiError::BadRequest(format!(
            "instance_ids must name 1 to {MAX_WORKLOAD_INSTANCES} instances"
        )));
    }
    let mut seen = BTreeSet::new();
    for id in &req.instance_ids {
        check_id("instance", id)?;
        if !seen.insert(id.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "instance_ids names {id:?} twice"
            )));
        }
    }
    let from = req.from.parse("from").map_err(ApiError::BadRequest)?;
    let to = match &req.to {
        Some(to) => Some(to.parse("to").map_err(ApiError::BadRequest)?),
        None => None,
    };
    if let Some(to) = to {
        if to <= from {
            return Err(ApiError::BadRequest("to must be after from".into()));
        }
        if to.since(from) > limits.max_range_ms {
            return Err(ApiError::BadRequest(format!(
                "a workload may span at most {} ms",
                limits.max_range_ms
            )));
        }
    }
    if !req.functional_units.is_finite() || req.functional_units <= 0.0 {
        return Err(ApiError::BadRequest(
            "functional_units must be a positive finite number".into(),
        ));
    }
    Ok(NewWorkload {
        label: req.label.clone(),
        instances: req
            .instance_ids
            .iter()
            .map(|s| InstanceId::new(s.clone()))
            .collect(),
        from,
        to,
        functional_unit: req.functional_unit.clone(),
        functional_units: req.functional_units,
        labels: req.labels.clone(),
    })
}

/// The API's view of a stored workload.
pub fn workload_view(w: &Workload) -> WorkloadView {
    WorkloadView {
        id: w.id.to_string(),
        label: w.spec.label.clone(),
        instance_ids: w.spec.instances.iter().map(|i| i.to_string()).collect(),
        from: w.spec.from.to_rfc3339(),
        to: w.spec.to.map(UnixMillis::to_rfc3339),
        status: if w.spec.to.is_some() {
            "closed"
        } else {
            "open"
        }
        .to_owned(),
        labels: w.spec.labels.clone(),
        functional_unit: w.spec.functional_unit.clone(),
        functional_units: w.spec.functional_units,
        created_at: w.created_at.to_rfc3339(),
    }
}

/// Creates a workload; every instance must be the tenant's (404 naming the first that is not).
pub async fn create_workload(
    store: &dyn Store,
    scope: &TenantScope,
    req: &WorkloadRequest,
    limits: &ApiLimits,
) -> Result<WorkloadView, ApiError> {
    let new = validate_workload(req, limits)?;
    let owned = store
        .list_instances(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    if let Some(missing) = new
        .instances
        .iter()
        .find(|id| !owned.iter().any(|r| &r.instance == *id))
    {
        return Err(not_found_instance(missing));
    }
    let w = store
        .create_workload(scope, &new)
        .await
        .map_err(|e| ApiError::from_store(e, || "instance not found".into()))?;
    Ok(workload_view(&w))
}

/// One of the tenant's workloads; 404 if absent or another tenant's.
pub async fn tenant_workload(
    store: &dyn Store,
    scope: &TenantScope,
    id: &WorkloadId,
) -> Result<Workload, ApiError> {
    let not_found = || format!("workload {id} not found");
    store
        .get_workload(scope, id)
        .await
        .map_err(|e| ApiError::from_store(e, not_found))?
        .ok_or_else(|| ApiError::NotFound(not_found()))
}

/// One of the tenant's workloads with its footprint; 404 if absent or another tenant's.
pub async fn workload_detail(
    store: &dyn Store,
    scope: &TenantScope,
    catalog: &HardwareCatalog,
    id: &WorkloadId,
    limits: &ApiLimits,
    join: Option<&IntensityJoin>,
) -> Result<WorkloadDetail, ApiError> {
    let w = tenant_workload(store, scope, id).await?;
    let span = crate::workloads::workload_span(&w, limits)?;
    let footprint = workload_footprint(store, scope, catalog, &w, span, join).await?;
    Ok(WorkloadDetail {
        workload: workload_view(&w),
        footprint,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::time::InstantInput;

    fn request() -> WorkloadRequest {
        WorkloadRequest {
            label: "run".into(),
            instance_ids: vec!["i-1".into()],
            from: InstantInput::Rfc3339("2026-11-23T00:00:00Z".into()),
            to: Some(InstantInput::UnixMillis(1_795_478_400_000)),
            functional_unit: "training run".into(),
            functional_units: 1.0,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn workload_validation_names_the_problem() {
        let l = ApiLimits::default();
        let ok = validate_workload(&request(), &l).unwrap();
        assert_eq!(
            (ok.from, ok.to),
            (
                UnixMillis(1_795_392_000_000),
                Some(UnixMillis(1_795_478_400_000))
            )
        );
        let cases: Vec<(WorkloadRequest, &str)> = vec![
            (
                WorkloadRequest {
                    label: " ".into(),
                    ..request()
                },
                "label",
            ),
            (
                WorkloadRequest {
                    functional_unit: "a\u{0}".into(),
                    ..request()
                },
                "functional_unit",
            ),
            (
                WorkloadRequest {
                    instance_ids: vec![],
                    ..request()
                },
                "instance_ids",
            ),
            (
                WorkloadRequest {
                    instance_ids: vec!["a".into(), "a".into()],
                    ..request()
                },
                "twice",
            ),
            (
                WorkloadRequest {
                    instance_ids: vec!["x".repeat(300)],
                    ..request()
                },
                "instance id",
            ),
            (
                WorkloadRequest {
                    to: Some(InstantInput::Rfc3339("2026-11-22T00:00:00Z".into())),
                    ..request()
                },
                "after",
            ),
            (
                WorkloadRequest {
                    to: Some(InstantInput::Rfc3339("2027-11-22T00:00:00Z".into())),
                    ..request()
                },
                "at most",
            ),
            (
                WorkloadRequest {
                    from: InstantInput::Rfc3339("soon".into()),
                    ..request()
                },
                "from",
            ),
            (
                WorkloadRequest {
                    functional_units: 0.0,
                    ..request()
                },
                "functional_units",
            ),
            (
                WorkloadRequest {
                    functional_units: f64::INFINITY,
                    ..request()
                },
                "functional_units",
            ),
        ];
        for (req, needle) in cases {
            match validate_workload(&req, &l) {
                Err(ApiError::BadRequest(msg)) => {
                    assert!(msg.contains(needle), "{msg} lacks {needle}")
                }
                other => panic!("{req:?} gave {other:?}"),
            }
        }
    }
}
