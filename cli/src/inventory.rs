//! `wattprint inventory`: how a GPU's placements in time are shown to operators.

use wattprint_store::placements::SINCE_ALWAYS;
use wattprint_store::PlacementVersion;

/// One line per version: `GPU  from  tenant/instance on host (region, limit)` or `detached`.
pub fn describe_placement(v: &PlacementVersion) -> String {
    let from = if v.valid_from == SINCE_ALWAYS {
        "since always".to_owned()
    } else {
        format!("from {}", v.valid_from.to_rfc3339())
    };
    match &v.placement {
        Some(p) => format!(
            "{}  {from}  {}/{} on host {} (region {}, power limit {} W)",
            v.gpu,
            p.tenant,
            p.instance,
            if p.host.as_str().is_empty() {
                "<none>"
            } else {
                p.host.as_str()
            },
            p.region,
            p.power_limit.0 / 1000
        ),
        None => format!("{}  {from}  detached", v.gpu),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId, UnixMillis};
    use wattprint_store::GpuPlacement;

    #[test]
    fn placements_read_as_owner_host_and_time() {
        let placed = PlacementVersion {
            gpu: GpuUuid("GPU-1".into()),
            valid_from: SINCE_ALWAYS,
            placement: Some(GpuPlacement {
                host: HostId("h1".into()),
                instance: InstanceId("i-a".into()),
                tenant: TenantId("acme".into()),
                region: RegionId("CAISO_NORTH".into()),
                power_limit: Milliwatts(700_000),
            }),
        };
        assert_eq!(
            describe_placement(&placed),
            "GPU-1  since always  acme/i-a on host h1 (region CAISO_NORTH, power limit 700 W)"
        );
        let detached = PlacementVersion {
            valid_from: UnixMillis(1_764_979_200_000),
            placement: None,
            ..placed
        };
        assert_eq!(
            describe_placement(&detached),
            "GPU-1  from 2025-12-06T00:00:00.000Z  detached"
        );
    }
}
