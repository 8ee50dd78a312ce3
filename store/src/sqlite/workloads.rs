//! Workloads in SQLite: a tenant's named slices of instances and time.
//!
//! Each write is one `IMMEDIATE` transaction, so a create sees its instances as they are and
//! two updates of one workload serialise; updates go through the shared rule
//! ([`apply_workload_update`]) so both stores accept and refuse the same changes.

use super::inventory::require_instance;
use super::{db_err, now_ms};
use crate::checks::apply_workload_update;
use crate::{NewWorkload, StoreError, Workload, WorkloadUpdate};
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::{BTreeMap, HashMap};
use wattprint_core::{InstanceId, TenantId, UnixMillis, WorkloadId};

/// A fresh id: `wl_` and 16 random hex digits (reveals nothing about other workloads).
fn new_workload_id() -> WorkloadId {
    WorkloadId(format!("wl_{:016x}", rand::random::<u64>()))
}

/// Stores a checked workload under a fresh id, its instances all the tenant's.
pub(super) fn create_workload(
    conn: &mut Connection,
    tenant: TenantId,
    spec: NewWorkload,
) -> Result<Workload, StoreError> {
    const OP: &str = "creating a workload";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    for instance in &spec.instances {
        require_instance(&tx, &tenant, instance, OP)?;
    }
    // 64 random bits make a collision practically impossible; checking costs one lookup.
    let mut id = new_workload_id();
    let mut taken = tx
        .prepare_cached("SELECT 1 FROM workloads WHERE id = ?1")
        .map_err(db_err(OP))?;
    while taken.exists([id.as_str()]).map_err(db_err(OP))? {
        id = new_workload_id();
    }
    drop(taken);
    let created_at = UnixMillis(now_ms());
    tx.execute(
        "INSERT INTO workloads (id, tenant, label, from_ms, to_ms, is_open, labels, \
         functional_unit, functional_units, created_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            id.as_str(),
            tenant.as_str(),
            spec.label,
            spec.from.0,
            spec.to.unwrap_or(spec.from).0,
            spec.to.is_none(),
            labels_json(&spec.labels, OP)?,
            spec.functional_unit,
            spec.functional_units,
            created_at.0
        ],
    )
    .map_err(db_err(OP))?;
    {
        let mut link = tx
            .prepare_cached(
                "INSERT INTO workload_instances (workload_id, position, instance_id) \
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(db_err(OP))?;
        for (pos, instance) in spec.instances.iter().enumerate() {
            let pos = i64::try_from(pos).unwrap_or(i64::MAX);
            link.execute(params![id.as_str(), pos, instance.as_str()])
                .map_err(db_err(OP))?;
        }
    }
    tx.commit().map_err(db_err(OP))?;
    Ok(Workload {
        id,
        tenant,
        spec,
        created_at,
    })
}

/// The tenant's workloads newest first, or only `id` when given (empty if it is not theirs).
pub(super) fn load_workloads(
    conn: &mut Connection,
    tenant: &TenantId,
    id: Option<&WorkloadId>,
) -> Result<Vec<Workload>, StoreError> {
    let tx = conn.transaction().map_err(db_err("reading workloads"))?;
    read_workloads(&tx, tenant, id)
}

/// [`load_workloads`] inside the caller's transaction.
fn read_workloads(
    tx: &Connection,
    tenant: &TenantId,
    id: Option<&WorkloadId>,
) -> Result<Vec<Workload>, StoreError> {
    const OP: &str = "reading workloads";
    let id_filter = if id.is_some() { "AND w.id = ?2" } else { "" };
    let id_param = id.map_or("", WorkloadId::as_str);

    let mut links: HashMap<String, Vec<InstanceId>> = HashMap::new();
    {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT wi.workload_id, wi.instance_id FROM workload_instances wi \
                 JOIN workloads w ON w.id = wi.workload_id \
                 WHERE w.tenant = ?1 {id_filter} ORDER BY wi.workload_id, wi.position"
            ))
            .map_err(db_err(OP))?;
        let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<(String, String)> {
            Ok((r.get(0)?, r.get(1)?))
        };
        let rows = if id.is_some() {
            stmt.query_map([tenant.as_str(), id_param], map)
        } else {
            stmt.query_map([tenant.as_str()], map)
        }
        .map_err(db_err(OP))?;
        for row in rows {
            let (w, i) = row.map_err(db_err(OP))?;
            links.entry(w).or_default().push(InstanceId(i));
        }
    }

    type RawRow = (
        String,
        String,
        String,
        i64,
        i64,
        String,
        f64,
        i64,
        bool,
        String,
    );
    let mut stmt = tx
        .prepare_cached(&format!(
            "SELECT w.id, w.tenant, w.label, w.from_ms, w.to_ms, w.functional_unit, \
             w.functional_units, w.created_at_ms, w.is_open, w.labels FROM workloads w \
             WHERE w.tenant = ?1 {id_filter} ORDER BY w.created_at_ms DESC, w.rowid DESC"
        ))
        .map_err(db_err(OP))?;
    let map = |r: &rusqlite::Row<'_>| -> rusqlite::Result<RawRow> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
            r.get(9)?,
        ))
    };
    let rows = if id.is_some() {
        stmt.query_map([tenant.as_str(), id_param], map)
    } else {
        stmt.query_map([tenant.as_str()], map)
    }
    .map_err(db_err(OP))?
    .collect::<Result<Vec<_>, _>>()
    .map_err(db_err(OP))?;

    rows.into_iter()
        .map(
            |(id, tenant, label, from, to, unit, units, created, open, labels)| {
                let instances = links.remove(&id).unwrap_or_default();
                let labels = serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt {
                    table: "workloads",
                    detail: format!("workload {id}: labels {labels:?}: {e}"),
                })?;
                if instances.is_empty() {
                    return Err(StoreError::Corrupt {
                        table: "workload_instances",
                        detail: format!("workload {id} has no instances"),
                    });
                }
                Ok(Workload {
                    id: WorkloadId(id),
                    tenant: TenantId(tenant),
                    spec: NewWorkload {
                        label,
                        instances,
                        from: UnixMillis(from),
                        to: (!open).then_some(UnixMillis(to)),
                        functional_unit: unit,
                        functional_units: units,
                        labels,
                    },
                    created_at: UnixMillis(created),
                })
            },
        )
        .collect()
}

fn labels_json(labels: &BTreeMap<String, String>, op: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(labels).map_err(|e| StoreError::Backend {
        op,
        source: Box::new(e),
    })
}

/// Reads the workload, applies the update by the shared rule and writes it back, in one
/// `IMMEDIATE` transaction (two concurrent updates serialise; neither is lost).
pub(super) fn update_workload(
    conn: &mut Connection,
    tenant: &TenantId,
    id: &WorkloadId,
    update: &WorkloadUpdate,
) -> Result<Workload, StoreError> {
    const OP: &str = "updating a workload";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    let workload = read_workloads(&tx, tenant, Some(id))?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::NotFound(format!("workload {id} not found")))?;
    let next = apply_workload_update(&workload, update)?;
    tx.execute(
        "UPDATE workloads SET to_ms = ?3, is_open = ?4, labels = ?5 WHERE tenant = ?1 AND id = ?2",
        params![
            tenant.as_str(),
            id.as_str(),
            next.spec.to.unwrap_or(next.spec.from).0,
            next.spec.to.is_none(),
            labels_json(&next.spec.labels, OP)?,
        ],
    )
    .map_err(db_err(OP))?;
    tx.commit().map_err(db_err(OP))?;
    Ok(next)
}
