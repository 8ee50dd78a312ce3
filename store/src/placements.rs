//! The inventory in time: where each GPU was, from when.
//!
//! Every inventory upsert appends a [`PlacementVersion`] for each GPU whose placement (host,
//! instance, owner, region, power limit) it changes, valid from the upsert's time, and a
//! detachment for each GPU it takes off an instance. Ingest attributes a sample to the placement
//! valid at the sample's time, so a late sample is billed to whoever held the GPU then, never to
//! whoever holds it when the sample arrives. Invariant: per GPU, versions are ordered by
//! `valid_from` and a GPU's first ever placement is valid [`SINCE_ALWAYS`] (a GPU added late
//! to the inventory has no earlier owner to protect, so samples held before it was added can
//! still be replayed).

use crate::InstanceRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};

/// `valid_from` of a GPU's first placement: before any sample.
pub const SINCE_ALWAYS: UnixMillis = UnixMillis(i64::MIN);

/// Where a GPU is: what ingest needs to admit and attribute its samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// A GPU's placement from `valid_from` on, until its next version; `None` is a detachment
/// (the GPU is on no instance: its samples are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementVersion {
    /// The GPU.
    pub gpu: GpuUuid,
    /// First millisecond the placement holds.
    pub valid_from: UnixMillis,
    /// The placement, or `None` once detached.
    pub placement: Option<GpuPlacement>,
}

/// Current placements of every GPU in `records`.
pub fn placements_of(records: &[InstanceRecord]) -> HashMap<GpuUuid, GpuPlacement> {
    records
        .iter()
        .flat_map(|r| {
            r.gpus.iter().map(|g| {
                (
                    g.uuid.clone(),
                    GpuPlacement {
                        host: g.host.clone(),
                        instance: r.instance.clone(),
                        tenant: r.tenant.clone(),
                        region: r.region.clone(),
                        power_limit: g.power_limit,
                    },
                )
            })
        })
        .collect()
}

/// The versions an upsert of `update` at `at` appends, given the latest version of each GPU
/// (`latest`, detachments included): a new or changed placement, and a detachment for a GPU
/// that one of the re-declared instances held and no longer lists. A GPU never placed before
/// gets [`SINCE_ALWAYS`]. Sorted by GPU.
pub fn placement_changes(
    latest: &HashMap<GpuUuid, Option<GpuPlacement>>,
    update: &[InstanceRecord],
    at: UnixMillis,
) -> Vec<PlacementVersion> {
    let now = placements_of(update);
    let redeclared: std::collections::HashSet<&InstanceId> =
        update.iter().map(|r| &r.instance).collect();
    let mut out: Vec<PlacementVersion> = now
        .iter()
        .filter_map(|(gpu, p)| {
            let valid_from = match latest.get(gpu) {
                None => SINCE_ALWAYS,
                Some(Some(prev)) if prev == p => return None,
                Some(_) => at,
            };
            Some(PlacementVersion {
                gpu: gpu.clone(),
                valid_from,
                placement: Some(p.clone()),
            })
        })
        .collect();
    out.extend(
        latest
            .iter()
            .filter(|(g, p)| {
                !now.contains_key(*g)
                    && p.as_ref().is_some_and(|p| redeclared.contains(&p.instance))
            })
            .map(|(g, _)| PlacementVersion {
                gpu: g.clone(),
                valid_from: at,
                placement: None,
            }),
    );
    out.sort_by(|a, b| a.gpu.cmp(&b.gpu));
    out
}

/// The newest version of each GPU in `history`.
pub fn latest_versions(history: &[PlacementVersion]) -> HashMap<GpuUuid, Option<GpuPlacement>> {
    let mut latest: HashMap<GpuUuid, &PlacementVersion> = HashMap::new();
    for v in history {
        match latest.get(&v.gpu) {
            Some(prev) if prev.valid_from > v.valid_from => {}
            _ => {
                latest.insert(v.gpu.clone(), v);
            }
        }
    }
    latest
        .into_iter()
        .map(|(g, v)| (g, v.placement.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GpuRecord;

    fn instance(tenant: &str, id: &str, gpus: &[(&str, &str)]) -> InstanceRecord {
        InstanceRecord {
            tenant: TenantId(tenant.into()),
            instance: InstanceId(id.into()),
            region: RegionId("CAISO_NORTH".into()),
            zip_code: None,
            gpus: gpus
                .iter()
                .map(|(uuid, host)| GpuRecord {
                    uuid: GpuUuid((*uuid).into()),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    power_limit: Milliwatts(700_000),
                    host: HostId((*host).into()),
                })
                .collect(),
        }
    }

    #[test]
    fn first_placement_is_since_always_and_a_repeat_adds_nothing() {
        let first = [instance("acme", "i-1", &[("GPU-a", "h1")])];
        let v = placement_changes(&HashMap::new(), &first, UnixMillis(5_000));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].valid_from, SINCE_ALWAYS);
        let latest = latest_versions(&v);
        let again = placement_changes(&latest, &first, UnixMillis(9_000));
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_move_and_a_detachment_are_versions_at_the_upsert_time() {
        let first = [
            instance("acme", "i-1", &[("GPU-a", "h1"), ("GPU-b", "h1")]),
            instance("globex", "i-2", &[]),
        ];
        let v1 = placement_changes(&HashMap::new(), &first, UnixMillis(1));
        // GPU-a moves to globex's instance on another host; GPU-b leaves i-1.
        let second = [
            instance("acme", "i-1", &[]),
            instance("globex", "i-2", &[("GPU-a", "h2")]),
        ];
        let at = UnixMillis(7_000);
        let v2 = placement_changes(&latest_versions(&v1), &second, at);
        assert_eq!(v2.len(), 2, "{v2:?}");
        assert_eq!(v2[0].gpu.as_str(), "GPU-a");
        assert_eq!(v2[0].valid_from, at);
        let moved = v2[0].placement.as_ref().expect("placed");
        assert_eq!(
            (moved.tenant.as_str(), moved.host.as_str()),
            ("globex", "h2")
        );
        assert_eq!(v2[1].gpu.as_str(), "GPU-b");
        assert_eq!((v2[1].valid_from, &v2[1].placement), (at, &None));
        // Detached already: no second tombstone.
        let history: Vec<_> = v1.into_iter().chain(v2).collect();
        let v3 = placement_changes(&latest_versions(&history), &second, UnixMillis(8_000));
        assert!(v3.is_empty(), "{v3:?}");
    }

    #[test]
    fn a_reattached_gpu_is_placed_from_the_upsert_time_not_since_always() {
        let on = [instance("acme", "i-1", &[("GPU-a", "h1")])];
        let off = [instance("acme", "i-1", &[])];
        let v1 = placement_changes(&HashMap::new(), &on, UnixMillis(1));
        let v2 = placement_changes(&latest_versions(&v1), &off, UnixMillis(2));
        let history: Vec<_> = v1.into_iter().chain(v2).collect();
        let v3 = placement_changes(&latest_versions(&history), &on, UnixMillis(3));
        assert_eq!(v3.len(), 1);
        assert_eq!(v3[0].valid_from, UnixMillis(3));
    }
}
