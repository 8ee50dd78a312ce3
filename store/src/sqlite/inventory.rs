//! Inventory in SQLite: instances and the GPUs attached to them.
//!
//! An upsert is the whole truth about each instance it names, applied in one `IMMEDIATE`
//! transaction: a GPU not listed any more is detached, one listed elsewhere moves.

use super::rows::stored_int;
use super::{db_err, placements};
use crate::placements::{latest_versions, placement_changes};
use crate::{GpuRecord, InstanceRecord, StoreError};
use rusqlite::{params, Connection, TransactionBehavior};
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};

/// Each record is the whole truth about its instance: GPUs it no longer lists are detached, and
/// a GPU listed under a different instance than before moves. The changes are recorded in the
/// inventory's history as of `at`, in the same transaction.
pub(super) fn upsert_inventory(
    conn: &mut Connection,
    instances: &[InstanceRecord],
    at: UnixMillis,
) -> Result<(), StoreError> {
    const OP: &str = "upserting inventory";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err(OP))?;
    {
        let latest = latest_versions(&placements::load_history(&tx)?);
        placements::append(&tx, &placement_changes(&latest, instances, at))?;
        let mut put_instance = tx
            .prepare_cached(
                "INSERT INTO instances (instance_id, tenant, region, zip_code) \
                 VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (instance_id) DO UPDATE SET \
                 tenant = excluded.tenant, region = excluded.region, zip_code = excluded.zip_code",
            )
            .map_err(db_err(OP))?;
        let mut detach = tx
            .prepare_cached("DELETE FROM gpus WHERE instance_id = ?1")
            .map_err(db_err(OP))?;
        let mut put_gpu = tx
            .prepare_cached(
                "INSERT INTO gpus (uuid, instance_id, model, power_limit_mw, host) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (uuid) DO UPDATE SET instance_id = excluded.instance_id, \
                 model = excluded.model, power_limit_mw = excluded.power_limit_mw, \
                 host = excluded.host",
            )
            .map_err(db_err(OP))?;
        for rec in instances {
            put_instance
                .execute(params![
                    rec.instance.as_str(),
                    rec.tenant.as_str(),
                    rec.region.as_str(),
                    rec.zip_code
                ])
                .map_err(db_err(OP))?;
            detach
                .execute([rec.instance.as_str()])
                .map_err(db_err(OP))?;
            for gpu in &rec.gpus {
                put_gpu
                    .execute(params![
                        gpu.uuid.as_str(),
                        rec.instance.as_str(),
                        gpu.model,
                        gpu.power_limit.0,
                        gpu.host.as_str()
                    ])
                    .map_err(db_err(OP))?;
            }
        }
    }
    tx.commit().map_err(db_err(OP))
}

/// Instances with their GPUs, by instance id then GPU uuid; all tenants when `tenant` is None.
pub(super) fn load_instances(
    conn: &mut Connection,
    tenant: Option<&TenantId>,
) -> Result<Vec<InstanceRecord>, StoreError> {
    const OP: &str = "reading instances";
    const T: &str = "gpus";
    let sql =
        format!(
        "SELECT i.instance_id, i.tenant, i.region, i.zip_code, g.uuid, g.model, g.power_limit_mw, \
         g.host \
         FROM instances i LEFT JOIN gpus g ON g.instance_id = i.instance_id \
         {} ORDER BY i.instance_id, g.uuid",
        if tenant.is_some() { "WHERE i.tenant = ?1" } else { "" }
    );
    type RawRow = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err(OP))?;
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
        ))
    };
    let rows = match tenant {
        Some(t) => stmt.query_map([t.as_str()], map),
        None => stmt.query_map([], map),
    }
    .map_err(db_err(OP))?
    .collect::<Result<Vec<_>, _>>()
    .map_err(db_err(OP))?;

    let mut out: Vec<InstanceRecord> = Vec::new();
    for (instance, tenant, region, zip_code, uuid, model, limit, host) in rows {
        if out.last().is_none_or(|last| last.instance.0 != instance) {
            out.push(InstanceRecord {
                tenant: TenantId(tenant),
                instance: InstanceId(instance),
                region: RegionId(region),
                zip_code,
                gpus: Vec::new(),
            });
        }
        let (Some(uuid), Some(model), Some(limit)) = (uuid, model, limit) else {
            continue;
        };
        let gpu = GpuRecord {
            uuid: GpuUuid(uuid),
            model,
            power_limit: Milliwatts(stored_int(T, "power_limit_mw", limit)?),
            host: HostId(host.unwrap_or_default()),
        };
        if let Some(last) = out.last_mut() {
            last.gpus.push(gpu);
        }
    }
    Ok(out)
}

/// `NotFound` unless `instance` exists and belongs to `tenant` (same message either way).
pub(super) fn require_instance(
    conn: &Connection,
    tenant: &TenantId,
    instance: &InstanceId,
    op: &'static str,
) -> Result<(), StoreError> {
    let found = conn
        .prepare_cached("SELECT 1 FROM instances WHERE tenant = ?1 AND instance_id = ?2")
        .map_err(db_err(op))?
        .exists([tenant.as_str(), instance.as_str()])
        .map_err(db_err(op))?;
    if found {
        Ok(())
    } else {
        Err(instance_not_found(instance))
    }
}

/// The one message for an instance that is absent or another tenant's: no existence leak.
fn instance_not_found(instance: &InstanceId) -> StoreError {
    StoreError::NotFound(format!("instance {instance} not found"))
}
