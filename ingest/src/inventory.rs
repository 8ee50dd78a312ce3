//! Fast lookups over the inventory in time: GPU × instant → host, instance, owner, region and
//! power limit, reloadable while ingest runs.
//!
//! A sample is admitted and attributed by the placement valid over its whole span
//! ([`InventoryIndex::gpu_over`]), so a late sample goes to whoever held the GPU at the sample's
//! time. [`keep_current`] reloads the index from the store's history
//! ([`Store::placement_history`]), so inventory changes take effect without a restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use wattprint_core::{GpuUuid, UnixMillis};
use wattprint_store::placements::SINCE_ALWAYS;
use wattprint_store::{InstanceRecord, PlacementVersion, Store};

pub use wattprint_store::GpuPlacement;

/// One GPU's placements, ordered by `valid_from`; `None` while detached.
type Timeline = Vec<(UnixMillis, Option<Arc<GpuPlacement>>)>;

/// Inventory indexed by GPU and time. Shared behind an `Arc`; [`InventoryIndex::replace`]
/// swaps in a newer inventory for every holder at once.
#[derive(Debug, Default)]
pub struct InventoryIndex {
    gpus: RwLock<Arc<HashMap<GpuUuid, Timeline>>>,
}

impl InventoryIndex {
    /// An index of `records`, every GPU placed since always (tests and tools without history).
    pub fn new(records: &[InstanceRecord]) -> Self {
        let history: Vec<PlacementVersion> = wattprint_store::placements::placements_of(records)
            .into_iter()
            .map(|(gpu, p)| PlacementVersion {
                gpu,
                valid_from: SINCE_ALWAYS,
                placement: Some(p),
            })
            .collect();
        Self::from_history(&history)
    }

    /// An index of a placement history ([`Store::placement_history`]), in any order.
    pub fn from_history(history: &[PlacementVersion]) -> Self {
        Self {
            gpus: RwLock::new(Arc::new(timelines(history))),
        }
    }

    /// Replaces this index's inventory with `newer`'s.
    pub fn replace(&self, newer: InventoryIndex) {
        let gpus = newer.snapshot();
        *self.gpus.write().unwrap_or_else(PoisonError::into_inner) = gpus;
    }

    fn snapshot(&self) -> Arc<HashMap<GpuUuid, Timeline>> {
        self.gpus
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where a GPU was at `at`, if it was placed then.
    pub fn gpu_at(&self, uuid: &GpuUuid, at: UnixMillis) -> Option<Arc<GpuPlacement>> {
        let gpus = self.snapshot();
        let timeline = gpus.get(uuid)?;
        let i = timeline.partition_point(|(from, _)| *from <= at);
        timeline.get(i.checked_sub(1)?)?.1.clone()
    }

    /// Where a GPU was over the whole span `[start, end)`: `None` if it was not placed at
    /// `start` or its placement changed within the span (such a sample cannot be attributed to
    /// one owner).
    pub fn gpu_over(
        &self,
        uuid: &GpuUuid,
        start: UnixMillis,
        end: UnixMillis,
    ) -> Option<Arc<GpuPlacement>> {
        let gpus = self.snapshot();
        let timeline = gpus.get(uuid)?;
        let i = timeline.partition_point(|(from, _)| *from <= start);
        let placement = timeline.get(i.checked_sub(1)?)?.1.clone()?;
        match timeline.get(i) {
            Some((next, _)) if *next < end => None,
            _ => Some(placement),
        }
    }

    /// Number of GPUs placed now.
    pub fn len(&self) -> usize {
        self.snapshot()
            .values()
            .filter(|t| t.last().is_some_and(|(_, p)| p.is_some()))
            .count()
    }

    /// Whether no GPU is placed now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn timelines(history: &[PlacementVersion]) -> HashMap<GpuUuid, Timeline> {
    let mut gpus: HashMap<GpuUuid, Timeline> = HashMap::new();
    for v in history {
        gpus.entry(v.gpu.clone())
            .or_default()
            .push((v.valid_from, v.placement.clone().map(Arc::new)));
    }
    for timeline in gpus.values_mut() {
        timeline.sort_by_key(|(from, _)| *from);
    }
    gpus
}

/// Reloads `index` from `store`'s placement history every `every` until `stop`, so inventory
/// changes made by an operator (`wattprint inventory apply`) reach a running gateway and
/// enricher. A failed read keeps the previous inventory and is retried next round.
pub async fn keep_current(
    store: Arc<dyn Store>,
    index: Arc<InventoryIndex>,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        match store.placement_history().await {
            Ok(history) => {
                let newer = InventoryIndex::from_history(&history);
                let (before, after) = (index.len(), newer.len());
                index.replace(newer);
                if before != after {
                    tracing::info!(before, after, "inventory reloaded: GPUs placed now");
                }
            }
            Err(e) => tracing::warn!(
                error = %e,
                "reloading the inventory failed; keeping the previous one, retrying next round"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::{HostId, InstanceId, Milliwatts, RegionId, TenantId};

    fn placed(tenant: &str, host: &str) -> Option<GpuPlacement> {
        Some(GpuPlacement {
            host: HostId(host.into()),
            instance: InstanceId(format!("i-{tenant}")),
            tenant: TenantId(tenant.into()),
            region: RegionId("CAISO_NORTH".into()),
            power_limit: Milliwatts(700_000),
        })
    }

    fn version(from: UnixMillis, placement: Option<GpuPlacement>) -> PlacementVersion {
        PlacementVersion {
            gpu: GpuUuid("GPU-1".into()),
            valid_from: from,
            placement,
        }
    }

    fn tenant_at(index: &InventoryIndex, at: i64) -> Option<String> {
        let gpu = GpuUuid("GPU-1".into());
        index
            .gpu_at(&gpu, UnixMillis(at))
            .map(|p| p.tenant.0.clone())
    }

    #[test]
    fn a_gpu_is_found_where_it_was_at_each_instant() {
        // Given out of order: acme since always, globex from 1000, detached from 2000.
        let index = InventoryIndex::from_history(&[
            version(UnixMillis(2_000), None),
            version(SINCE_ALWAYS, placed("acme", "h1")),
            version(UnixMillis(1_000), placed("globex", "h2")),
        ]);
        assert_eq!(tenant_at(&index, i64::MIN).as_deref(), Some("acme"));
        assert_eq!(tenant_at(&index, 999).as_deref(), Some("acme"));
        assert_eq!(tenant_at(&index, 1_000).as_deref(), Some("globex"));
        assert_eq!(tenant_at(&index, 1_999).as_deref(), Some("globex"));
        assert_eq!(tenant_at(&index, 2_000), None);
        assert_eq!(index.len(), 0, "detached now");
        let gpu = GpuUuid("GPU-1".into());
        assert!(index
            .gpu_at(&GpuUuid("GPU-2".into()), UnixMillis(0))
            .is_none());
        // A span ending exactly at a change belongs to one owner; one across it to none.
        let over = |s, e| index.gpu_over(&gpu, UnixMillis(s), UnixMillis(e));
        assert_eq!(over(0, 1_000).unwrap().tenant.as_str(), "acme");
        assert!(over(999, 1_001).is_none());
        assert_eq!(over(1_000, 2_000).unwrap().tenant.as_str(), "globex");
        assert!(over(2_000, 3_000).is_none());
    }

    #[test]
    fn replace_reaches_every_holder() {
        let index = Arc::new(InventoryIndex::from_history(&[]));
        let holder = index.clone();
        assert!(holder.is_empty());
        index.replace(InventoryIndex::from_history(&[version(
            SINCE_ALWAYS,
            placed("acme", "h1"),
        )]));
        assert_eq!(holder.len(), 1);
        assert_eq!(tenant_at(&holder, 5).as_deref(), Some("acme"));
    }
}
