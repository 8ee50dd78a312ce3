//! The inventory in time in ClickHouse (`gpu_placements`, see [`crate::placements`]): a
//! `ReplacingMergeTree(version)` keyed by GPU and time, appended by every inventory upsert
//! before the current-inventory rows, so the history never lags what ingest can read.

use super::{ch_err, ClickHouseStore};
use crate::placements::{GpuPlacement, PlacementVersion};
use crate::StoreError;
use ::clickhouse::Row;
use serde::{Deserialize, Serialize};
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};

/// A `gpu_placements` row; `attached = 0` is a detachment (the other columns empty).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub(crate) struct StoredPlacement {
    pub gpu_uuid: String,
    pub valid_from_ms: i64,
    pub attached: u8,
    pub host: String,
    pub instance_id: String,
    pub tenant: String,
    pub region: String,
    pub power_limit_mw: u32,
    pub version: u64,
}

impl StoredPlacement {
    fn encode(v: &PlacementVersion, version: u64) -> Self {
        let p = v.placement.as_ref();
        let text = |f: fn(&GpuPlacement) -> &str| p.map(f).unwrap_or_default().to_owned();
        Self {
            gpu_uuid: v.gpu.0.clone(),
            valid_from_ms: v.valid_from.0,
            attached: u8::from(p.is_some()),
            host: text(|p| p.host.as_str()),
            instance_id: text(|p| p.instance.as_str()),
            tenant: text(|p| p.tenant.as_str()),
            region: text(|p| p.region.as_str()),
            power_limit_mw: p.map_or(0, |p| p.power_limit.0),
            version,
        }
    }

    fn decode(self) -> PlacementVersion {
        PlacementVersion {
            gpu: GpuUuid(self.gpu_uuid),
            valid_from: UnixMillis(self.valid_from_ms),
            placement: (self.attached == 1).then_some(GpuPlacement {
                host: HostId(self.host),
                instance: InstanceId(self.instance_id),
                tenant: TenantId(self.tenant),
                region: RegionId(self.region),
                power_limit: Milliwatts(self.power_limit_mw),
            }),
        }
    }
}

impl ClickHouseStore {
    /// Every version (newest row per GPU and time), by GPU then time.
    pub(super) async fn load_placements(&self) -> Result<Vec<PlacementVersion>, StoreError> {
        const OP: &str = "reading the inventory's history";
        let rows: Vec<StoredPlacement> = self
            .client
            .query("SELECT ?fields FROM gpu_placements FINAL ORDER BY gpu_uuid, valid_from_ms")
            .fetch_all()
            .await
            .map_err(ch_err(OP))?;
        Ok(rows.into_iter().map(StoredPlacement::decode).collect())
    }

    /// Appends `versions` under row version `version`.
    pub(super) async fn append_placements(
        &self,
        versions: &[PlacementVersion],
        version: u64,
    ) -> Result<(), StoreError> {
        let rows: Vec<StoredPlacement> = versions
            .iter()
            .map(|v| StoredPlacement::encode(v, version))
            .collect();
        self.insert("gpu_placements", &rows, "recording the inventory's history")
            .await
    }
}
