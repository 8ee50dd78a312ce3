//! Fast lookups over the inventory: GPU → host, instance, owner, region and power limit.

use std::collections::HashMap;
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId};
use wattprint_store::InstanceRecord;

/// What ingest needs to know about a GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPlacement {
    /// The host whose agent reads the GPU: the only one whose samples of it are accepted.
    pub host: HostId,
    /// Instance holding the GPU.
    pub instance: InstanceId,
    /// Owner of the instance.
    pub tenant: TenantId,
    /// Region of the instance.
    pub region: RegionId,
    /// GPU's power limit (samples above 2x are absurd).
    pub power_limit: Milliwatts,
}

/// Inventory indexed by GPU.
#[derive(Debug, Clone, Default)]
pub struct InventoryIndex {
    gpus: HashMap<GpuUuid, GpuPlacement>,
}

impl InventoryIndex {
    /// Builds the index from inventory records.
    pub fn new(records: &[InstanceRecord]) -> Self {
        let mut gpus = HashMap::new();
        for r in records {
            for g in &r.gpus {
                gpus.insert(
                    g.uuid.clone(),
                    GpuPlacement {
                        host: g.host.clone(),
                        instance: r.instance.clone(),
                        tenant: r.tenant.clone(),
                        region: r.region.clone(),
                        power_limit: g.power_limit,
                    },
                );
            }
        }
        Self { gpus }
    }

    /// Where a GPU is, if known.
    pub fn gpu(&self, uuid: &GpuUuid) -> Option<&GpuPlacement> {
        self.gpus.get(uuid)
    }

    /// Number of GPUs known.
    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    /// Whether no GPU is known.
    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }
}
