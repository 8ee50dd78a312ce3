//! The inventory in time in SQLite (`gpu_placements`, see [`crate::placements`]): appended in
//! the inventory upsert's transaction, so the history and the current inventory never disagree.

use super::db_err;
use crate::placements::{GpuPlacement, PlacementVersion};
use crate::StoreError;
use rusqlite::{params, Connection};
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};

/// Every version, by GPU then time.
pub(super) fn load_history(conn: &Connection) -> Result<Vec<PlacementVersion>, StoreError> {
    const OP: &str = "reading the inventory's history";
    let mut stmt = conn
        .prepare_cached(
            "SELECT gpu_uuid, valid_from_ms, attached, host, instance_id, tenant, region, \
             power_limit_mw FROM gpu_placements ORDER BY gpu_uuid, valid_from_ms",
        )
        .map_err(db_err(OP))?;
    let rows = stmt
        .query_map([], |r| {
            let attached: i64 = r.get(2)?;
            let limit: i64 = r.get(7)?;
            Ok(PlacementVersion {
                gpu: GpuUuid(r.get(0)?),
                valid_from: UnixMillis(r.get(1)?),
                placement: (attached == 1)
                    .then(|| -> rusqlite::Result<GpuPlacement> {
                        Ok(GpuPlacement {
                            host: HostId(r.get(3)?),
                            instance: InstanceId(r.get(4)?),
                            tenant: TenantId(r.get(5)?),
                            region: RegionId(r.get(6)?),
                            power_limit: Milliwatts(u32::try_from(limit).unwrap_or(u32::MAX)),
                        })
                    })
                    .transpose()?,
            })
        })
        .map_err(db_err(OP))?;
    rows.collect::<Result<_, _>>().map_err(db_err(OP))
}

/// Appends `versions` (a version at the same GPU and millisecond as a stored one replaces it:
/// the later upsert of that millisecond wins).
pub(super) fn append(conn: &Connection, versions: &[PlacementVersion]) -> Result<(), StoreError> {
    const OP: &str = "recording the inventory's history";
    let mut put = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO gpu_placements (gpu_uuid, valid_from_ms, attached, host, \
             instance_id, tenant, region, power_limit_mw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(db_err(OP))?;
    for v in versions {
        let (attached, host, instance, tenant, region, limit) = match &v.placement {
            Some(p) => (
                1,
                p.host.as_str(),
                p.instance.as_str(),
                p.tenant.as_str(),
                p.region.as_str(),
                p.power_limit.0,
            ),
            None => (0, "", "", "", "", 0),
        };
        put.execute(params![
            v.gpu.as_str(),
            v.valid_from.0,
            attached,
            host,
            instance,
            tenant,
            region,
            limit
        ])
        .map_err(db_err(OP))?;
    }
    Ok(())
}
