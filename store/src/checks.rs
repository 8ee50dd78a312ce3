//! Input checks shared by the stores: the same limits and messages everywhere, so a batch one
//! store accepts, the other accepts too.

use crate::{
    EnrichedSample, InstanceRecord, NewWorkload, StoreError, Workload, WorkloadUpdate,
    MAX_WORKLOAD_LABELS,
};
use std::collections::{BTreeMap, HashSet};
use wattprint_core::sample::check_storable;
use wattprint_core::UnixMillis;

/// Longest accepted workload label or functional unit, in characters.
const MAX_LABEL_CHARS: usize = 200;

/// Longest accepted label key or value, in characters.
const MAX_LABEL_KEY_CHARS: usize = 63;

/// Refuses a batch that names an instance twice or puts one GPU on two instances.
pub(crate) fn check_inventory(instances: &[InstanceRecord]) -> Result<(), StoreError> {
    let mut seen_instances = HashSet::new();
    let mut seen_gpus = HashSet::new();
    for rec in instances {
        if !seen_instances.insert(&rec.instance) {
            return Err(StoreError::Invalid(format!(
                "instance {} appears twice in the inventory update",
                rec.instance
            )));
        }
        for gpu in &rec.gpus {
            if !seen_gpus.insert(&gpu.uuid) {
                return Err(StoreError::Invalid(format!(
                    "GPU {} appears twice in the inventory update",
                    gpu.uuid
                )));
            }
        }
    }
    Ok(())
}

/// Validates what every store can hold ([`check_storable`], the gateway's own predicate), that
/// the shares add up to the energy, PUE and intensity values.
pub(crate) fn check_enriched(s: &EnrichedSample) -> Result<(), StoreError> {
    let sample = &s.sample;
    let who = || format!("GPU {} seq {}", sample.gpu, sample.seq);
    check_storable(sample).map_err(|e| StoreError::Invalid(format!("{}: {e}", who())))?;
    let shares: u128 = s.shares.iter().map(|sh| u128::from(sh.energy.0)).sum();
    if shares != u128::from(sample.energy.0) {
        return Err(StoreError::Invalid(format!(
            "{}: bucket shares sum to {shares} mJ, the sample carries {} mJ",
            who(),
            sample.energy.0
        )));
    }
    if !s.pue.is_finite() || s.pue <= 0.0 {
        return Err(StoreError::Invalid(format!(
            "{}: PUE {} is not a positive number",
            who(),
            s.pue
        )));
    }
    let mut buckets = HashSet::new();
    for share in &s.shares {
        if !buckets.insert(share.bucket) {
            return Err(StoreError::Invalid(format!(
                "{}: bucket {} appears twice in its shares",
                who(),
                share.bucket.start()
            )));
        }
        if let Some(i) = &share.intensity {
            if !i.value.0.is_finite() || i.value.0 < 0.0 {
                return Err(StoreError::Invalid(format!(
                    "{}: intensity {} for bucket {} is not a finite non-negative number",
                    who(),
                    i.value.0,
                    share.bucket.start()
                )));
            }
        }
    }
    Ok(())
}

fn check_text(what: &str, s: &str) -> Result<(), StoreError> {
    if s.trim().is_empty() {
        return Err(StoreError::Invalid(format!(
            "workload {what} must not be empty"
        )));
    }
    let n = s.chars().count();
    if n > MAX_LABEL_CHARS {
        return Err(StoreError::Invalid(format!(
            "workload {what} is {n} characters long; the limit is {MAX_LABEL_CHARS}"
        )));
    }
    Ok(())
}

/// Validates a workload definition.
pub(crate) fn check_workload(w: &NewWorkload) -> Result<(), StoreError> {
    check_text("label", &w.label)?;
    check_text("functional unit", &w.functional_unit)?;
    if w.instances.is_empty() {
        return Err(StoreError::Invalid(
            "a workload needs at least one instance".into(),
        ));
    }
    let mut seen = HashSet::new();
    for i in &w.instances {
        if !seen.insert(i) {
            return Err(StoreError::Invalid(format!("instance {i} is listed twice")));
        }
    }
    if let Some(to) = w.to {
        check_end(w.from, to)?;
    }
    check_labels(&w.labels)?;
    if !w.functional_units.is_finite() || w.functional_units <= 0.0 {
        return Err(StoreError::Invalid(format!(
            "functional units must be a positive number, got {}",
            w.functional_units
        )));
    }
    Ok(())
}

fn check_end(from: UnixMillis, to: UnixMillis) -> Result<(), StoreError> {
    if from >= to {
        return Err(StoreError::Invalid(format!(
            "workload range is empty: from {from} is not before to {to}"
        )));
    }
    Ok(())
}

/// Label keys are 1–63 characters of `[A-Za-z0-9._/-]` starting with a letter or digit (as
/// Kubernetes label names); values are up to 200 characters of any text.
fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), StoreError> {
    if labels.len() > MAX_WORKLOAD_LABELS {
        return Err(StoreError::Invalid(format!(
            "a workload carries at most {MAX_WORKLOAD_LABELS} labels, got {}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        let well_formed = key.chars().count() <= MAX_LABEL_KEY_CHARS
            && key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
        if !well_formed {
            return Err(StoreError::Invalid(format!(
                "label key {key:?} must be 1 to {MAX_LABEL_KEY_CHARS} characters of letters, \
                 digits, '.', '_', '/' or '-', starting with a letter or digit"
            )));
        }
        let n = value.chars().count();
        if n > MAX_LABEL_CHARS {
            return Err(StoreError::Invalid(format!(
                "label {key:?} is {n} characters long; the limit is {MAX_LABEL_CHARS}"
            )));
        }
    }
    Ok(())
}

/// The workload `current` becomes under `update`, or why it cannot; both stores apply updates
/// through this one rule.
pub(crate) fn apply_workload_update(
    current: &Workload,
    update: &WorkloadUpdate,
) -> Result<Workload, StoreError> {
    let mut next = current.clone();
    match update {
        WorkloadUpdate::Labels(labels) => {
            check_labels(labels)?;
            next.spec.labels = labels.clone();
        }
        WorkloadUpdate::Close(end) => {
            check_end(current.spec.from, *end)?;
            match current.spec.to {
                None => next.spec.to = Some(*end),
                Some(to) if to == *end => {}
                Some(to) => {
                    return Err(StoreError::Conflict(format!(
                        "workload {} is already closed at {to}; it cannot be closed at {end}",
                        current.id
                    )))
                }
            }
        }
    }
    Ok(next)
}
