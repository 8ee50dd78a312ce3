//! Fixtures the ingest tests share: inventory records and plausible samples.

use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId, UnixMillis,
};
use wattprint_store::{GpuRecord, InstanceRecord};

/// Instance `id` of `tenant` in `region`, holding each `(gpu, host)` (H100s, 700 W).
pub fn instance(tenant: &str, id: &str, region: &str, gpus: &[(&str, &str)]) -> InstanceRecord {
    InstanceRecord {
        tenant: TenantId::from(tenant),
        instance: InstanceId::from(id),
        region: RegionId::from(region),
        zip_code: None,
        gpus: gpus
            .iter()
            .map(|(gpu, host)| GpuRecord {
                uuid: GpuUuid::from(*gpu),
                model: "NVIDIA H100 80GB HBM3".into(),
                power_limit: Milliwatts(700_000),
                host: HostId::from(*host),
            })
            .collect(),
    }
}

/// A counter sample of `gpu` on `instance` from `host` over `[start, end)` (Unix ms) with
/// `mj` of energy; the gauges are plausible for an H100 at work.
pub fn sample(
    host: &str,
    gpu: &str,
    instance: &str,
    seq: u64,
    (start, end): (i64, i64),
    mj: u64,
) -> EnergySample {
    EnergySample {
        host: HostId::from(host),
        gpu: GpuUuid::from(gpu),
        instance: InstanceId::from(instance),
        seq,
        start: UnixMillis(start),
        end: UnixMillis(end),
        energy: Millijoules(mj),
        power: Milliwatts(250_000),
        power_max: Milliwatts(260_000),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: false,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    }
}
