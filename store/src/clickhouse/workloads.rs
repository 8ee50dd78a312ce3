//! Workloads in ClickHouse: created once, then labelled and closed by inserting versions.
//!
//! A `workloads` row is written once and never replaced. What changes later lives in two
//! tables of its own, so that a label change and a close never overwrite each other:
//!
//! - `workload_labels`: `ReplacingMergeTree(version)`, the labels of the newest write win
//!   (a `PUT` replaces them; last writer wins).
//! - `workload_closures`: `ReplacingMergeTree(rank)` with `rank = u64::MAX − closed_ns`, so
//!   the **earliest** close wins. Two callers closing an open workload at different ends both
//!   insert; each re-reads afterwards and the one whose end did not win gets a conflict.
//!
//! An open workload's `workloads.to_ms` is [`OPEN_TO_MS`]. Migration 4 only creates tables
//! (`IF NOT EXISTS`: ClickHouse 18.16 has no `ADD COLUMN IF NOT EXISTS`, and every migration
//! statement must be safe to re-run).

use super::rows::StoredWorkload;
use super::{ch_err, ClickHouseStore};
use crate::checks::{apply_workload_update, check_workload};
use crate::{NewWorkload, StoreError, Workload, WorkloadUpdate};
use ::clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use wattprint_core::{InstanceId, TenantId, UnixMillis, WorkloadId};

/// `workloads.to_ms` of a workload created open (no end yet).
pub(crate) const OPEN_TO_MS: i64 = i64::MIN;

/// Version 4's tables; `few` is the dialect's type for strings with few values.
pub(crate) fn v4_tables(few: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS workload_labels (
                tenant  {few},
                id      String,
                labels  String,
                version Int64
            ) ENGINE = ReplacingMergeTree(version) ORDER BY (tenant, id)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS workload_closures (
                tenant    {few},
                id        String,
                to_ms     Int64,
                closed_ns Int64,
                rank      UInt64
            ) ENGINE = ReplacingMergeTree(rank) ORDER BY (tenant, id)"
        ),
    ]
}

/// A `workload_labels` row.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct StoredLabels {
    tenant: String,
    id: String,
    labels: String,
    version: i64,
}

/// A `workload_closures` row.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct StoredClosure {
    tenant: String,
    id: String,
    to_ms: i64,
    closed_ns: i64,
    rank: u64,
}

fn labels_json(labels: &BTreeMap<String, String>, op: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(labels).map_err(|e| StoreError::Backend {
        op,
        source: Box::new(e),
    })
}

impl ClickHouseStore {
    /// Creates a workload: its row, and its labels when it has any.
    pub(super) async fn insert_workload(
        &self,
        tenant: &TenantId,
        workload: &NewWorkload,
    ) -> Result<Workload, StoreError> {
        const OP: &str = "creating a workload";
        check_workload(workload)?;
        self.require_instances(tenant, &workload.instances, OP)
            .await?;
        // 64 random bits make a collision practically impossible; checking costs one lookup.
        let id = loop {
            let id = super::new_workload_id();
            let taken: u64 = self
                .client
                .query("SELECT count() FROM workloads WHERE id = ?")
                .bind(id.as_str())
                .fetch_one()
                .await
                .map_err(ch_err(OP))?;
            if taken == 0 {
                break id;
            }
        };
        let created_ns = self.tick();
        let created_at = UnixMillis(created_ns.div_euclid(1_000_000));
        if !workload.labels.is_empty() {
            let labels = StoredLabels {
                tenant: tenant.0.clone(),
                id: id.0.clone(),
                labels: labels_json(&workload.labels, OP)?,
                version: created_ns,
            };
            self.insert("workload_labels", &[labels], OP).await?;
        }
        let row = StoredWorkload {
            tenant: tenant.0.clone(),
            id: id.0.clone(),
            label: workload.label.clone(),
            from_ms: workload.from.0,
            to_ms: workload.to.map_or(OPEN_TO_MS, |t| t.0),
            functional_unit: workload.functional_unit.clone(),
            functional_units: workload.functional_units,
            instances: workload.instances.iter().map(|i| i.0.clone()).collect(),
            created_at_ms: created_at.0,
            created_ns,
        };
        self.insert("workloads", std::slice::from_ref(&row), OP)
            .await?;
        Ok(Workload {
            id,
            tenant: tenant.clone(),
            spec: workload.clone(),
            created_at,
        })
    }

    /// The tenant's workloads newest first, or only `id` when given, with their current labels
    /// and closure.
    pub(super) async fn load_workloads(
        &self,
        tenant: &TenantId,
        id: Option<&WorkloadId>,
    ) -> Result<Vec<Workload>, StoreError> {
        const OP: &str = "reading workloads";
        let filter = if id.is_some() {
            "WHERE tenant = ? AND id = ?"
        } else {
            "WHERE tenant = ?"
        };
        let bind = |q: ::clickhouse::query::Query| match id {
            Some(id) => q.bind(tenant.as_str()).bind(id.as_str()),
            None => q.bind(tenant.as_str()),
        };
        let rows: Vec<StoredWorkload> = self
            .fetch(
                bind(self.client.query(&format!(
                    "SELECT ?fields FROM workloads FINAL {filter} ORDER BY created_ns DESC, id DESC"
                ))),
                OP,
            )
            .await?;
        let labels: HashMap<String, String> = self
            .fetch::<StoredLabels>(
                bind(self.client.query(&format!(
                    "SELECT ?fields FROM workload_labels FINAL {filter}"
                ))),
                OP,
            )
            .await?
            .into_iter()
            .map(|l| (l.id, l.labels))
            .collect();
        let closures: HashMap<String, i64> = self
            .fetch::<StoredClosure>(
                bind(self.client.query(&format!(
                    "SELECT ?fields FROM workload_closures FINAL {filter}"
                ))),
                OP,
            )
            .await?
            .into_iter()
            .map(|c| (c.id, c.to_ms))
            .collect();
        rows.into_iter()
            .map(|w| {
                if w.instances.is_empty() {
                    return Err(StoreError::Corrupt {
                        table: "workloads",
                        detail: format!("workload {} has no instances", w.id),
                    });
                }
                let labels = match labels.get(&w.id) {
                    Some(json) => serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
                        table: "workload_labels",
                        detail: format!("workload {}: labels {json:?}: {e}", w.id),
                    })?,
                    None => BTreeMap::new(),
                };
                let to = match (w.to_ms, closures.get(&w.id)) {
                    (OPEN_TO_MS, Some(&closed)) => Some(UnixMillis(closed)),
                    (OPEN_TO_MS, None) => None,
                    (to, _) => Some(UnixMillis(to)),
                };
                Ok(Workload {
                    id: WorkloadId(w.id),
                    tenant: TenantId(w.tenant),
                    spec: NewWorkload {
                        label: w.label,
                        instances: w.instances.into_iter().map(InstanceId).collect(),
                        from: UnixMillis(w.from_ms),
                        to,
                        functional_unit: w.functional_unit,
                        functional_units: w.functional_units,
                        labels,
                    },
                    created_at: UnixMillis(w.created_at_ms),
                })
            })
            .collect()
    }

    /// Applies an update by inserting the new labels or closure; see the module docs for how
    /// concurrent updates resolve.
    pub(super) async fn change_workload(
        &self,
        tenant: &TenantId,
        id: &WorkloadId,
        update: &WorkloadUpdate,
    ) -> Result<Workload, StoreError> {
        const OP: &str = "updating a workload";
        let current = self.one_workload(tenant, id).await?;
        let next = apply_workload_update(&current, update)?;
        if next == current {
            return Ok(current);
        }
        let version = self.tick();
        match update {
            WorkloadUpdate::Labels(labels) => {
                let row = StoredLabels {
                    tenant: tenant.0.clone(),
                    id: id.0.clone(),
                    labels: labels_json(labels, OP)?,
                    version,
                };
                self.insert("workload_labels", &[row], OP).await?;
                Ok(next)
            }
            WorkloadUpdate::Close(end) => {
                let row = StoredClosure {
                    tenant: tenant.0.clone(),
                    id: id.0.clone(),
                    to_ms: end.0,
                    closed_ns: version,
                    rank: u64::MAX - u64::try_from(version).unwrap_or(0),
                };
                self.insert("workload_closures", &[row], OP).await?;
                // A racing close at another end may have won: say so rather than claim ours.
                let stored = self.one_workload(tenant, id).await?;
                match stored.spec.to {
                    Some(to) if to == *end => Ok(stored),
                    other => Err(StoreError::Conflict(format!(
                        "workload {id} was closed concurrently at {}",
                        other.map_or_else(|| "an unknown end".to_owned(), |t| t.to_string())
                    ))),
                }
            }
        }
    }

    async fn one_workload(
        &self,
        tenant: &TenantId,
        id: &WorkloadId,
    ) -> Result<Workload, StoreError> {
        self.load_workloads(tenant, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("workload {id} not found")))
    }
}
