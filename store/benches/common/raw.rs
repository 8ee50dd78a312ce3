//! The rows the write benches use: the agent's 1 s samples of the real H100 trace, replayed by
//! many GPUs and joined with the real CAISO_NORTH marginal series ([`samples`]), and the same
//! rows as `write_samples` would insert them, RowBinary-encoded ([`encode`]) for the raw
//! `clickhouse-client` insert ([`insert`]) every write figure is compared with.

use super::fleet::START;
use super::{caiso_north, h100_seconds};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    UnixMillis, BUCKET_MS,
};
use wattprint_store::{
    ClickHouseStore, EnrichedSample, EnrichedShare, GpuRecord, InstanceRecord, Store,
};

/// `n` samples of `gpus` GPUs (4 per instance, 8 per host, 8 tenants), second by second from
/// [`START`], with their shares joined as the enricher would.
pub fn samples(n: usize, gpus: usize) -> (Vec<InstanceRecord>, Vec<EnrichedSample>) {
    let trace = h100_seconds();
    let moer = caiso_north();
    let instances: Vec<InstanceRecord> = (0..gpus.div_ceil(4))
        .map(|i| InstanceRecord {
            tenant: TenantId::new(format!("tenant-{}", i % 8)),
            instance: InstanceId::new(format!("vm-{i:04}")),
            region: RegionId::from("CAISO_NORTH"),
            zip_code: Some("95814".into()),
            gpus: (0..4)
                .filter(|g| i * 4 + g < gpus)
                .map(|g| GpuRecord {
                    uuid: GpuUuid::new(format!("GPU-{:08x}-{:04}", i * 4 + g, i)),
                    model: "NVIDIA H100 80GB HBM3".into(),
                    power_limit: Milliwatts(700_000),
                    host: HostId::new(format!("host-{:03}", i / 2)),
                })
                .collect(),
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let seconds = n.div_ceil(gpus);
    'outer: for k in 0..seconds {
        for (i, inst) in instances.iter().enumerate() {
            for (g, gpu) in inst.gpus.iter().enumerate() {
                if out.len() == n {
                    break 'outer;
                }
                let (energy, power, util) = trace[(k + (i * 4 + g) * 7) % trace.len()];
                let start = START + k as i64 * 1000;
                let sample = EnergySample {
                    host: HostId::new(format!("host-{:03}", i / 2)),
                    gpu: gpu.uuid.clone(),
                    instance: inst.instance.clone(),
                    seq: k as u64,
                    start: UnixMillis(start),
                    end: UnixMillis(start + 1000),
                    energy: Millijoules(energy),
                    power: Milliwatts(power),
                    power_max: Milliwatts(power + 5_000),
                    util_gpu_pct: util,
                    mem_used_bytes: 40 << 30,
                    temp_c: 55,
                    sm_clock_mhz: 1980,
                    chain_start: k == 0,
                    energy_source: EnergySource::Counter,
                    attribution: Attribution::Exclusive,
                };
                let shares = split_into_buckets(sample.start, sample.end, sample.energy)
                    .into_iter()
                    .map(|s| {
                        let idx = ((s.bucket.start().0 - START) / BUCKET_MS) as usize;
                        EnrichedShare {
                            bucket: s.bucket,
                            energy: s.energy,
                            covered_ms: s.covered_ms,
                            intensity: Some(JoinedIntensity {
                                value: GramsPerKwh(moer[idx % moer.len()]),
                                kind: IntensityKind::Actual,
                                source: "watttime:CAISO_NORTH".into(),
                                point_at: s.bucket.start(),
                                replayed: false,
                            }),
                        }
                    })
                    .collect();
                out.push(EnrichedSample {
                    sample,
                    tenant: inst.tenant.clone(),
                    region: inst.region.clone(),
                    pue: 1.2,
                    shares,
                });
            }
        }
    }
    (instances, out)
}

// RowBinary encoding of the store's tables, column by column in table order.
fn string(buf: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            break;
        }
        buf.push(byte | 0x80);
    }
    buf.extend_from_slice(s.as_bytes());
}

/// The rows `write_samples` inserts (the views on `gpu_spans` and `shares` add the frontier
/// and the rollup marks in both runs).
pub struct Tables {
    pub gpu_spans: Vec<u8>,
    pub shares: Vec<u8>,
    pub samples: Vec<u8>,
    pub sample_keys: Vec<u8>,
    pub share_rows: usize,
}

pub fn encode(batch: &[EnrichedSample]) -> Tables {
    let (mut spans, mut shares, mut samples, mut keys) = (vec![], vec![], vec![], vec![]);
    let mut share_rows = 0;
    for es in batch {
        let s = &es.sample;
        for sh in &es.shares {
            share_rows += 1;
            let i = sh.intensity.as_ref().unwrap();
            let b = &mut shares;
            string(b, es.tenant.as_str());
            string(b, s.instance.as_str());
            b.extend(sh.bucket.start().0.to_le_bytes());
            string(b, s.gpu.as_str());
            b.extend(s.seq.to_le_bytes());
            b.extend(sh.energy.0.to_le_bytes());
            b.extend(0u64.to_le_bytes());
            b.extend(sh.covered_ms.to_le_bytes());
            b.extend(s.power_max.max(s.power).0.to_le_bytes());
            string(b, es.region.as_str());
            b.push(1);
            b.extend(i.value.0.to_le_bytes());
            string(b, i.kind.as_str());
            string(b, &i.source);
            b.extend(i.point_at.0.to_le_bytes());
            b.push(u8::from(i.replayed));
            b.extend(es.pue.to_le_bytes());
        }
        string(&mut spans, s.gpu.as_str());
        spans.extend(s.start.0.to_le_bytes());
        spans.extend(s.end.0.to_le_bytes());
        spans.extend(s.seq.to_le_bytes());
        let b = &mut samples;
        string(b, es.tenant.as_str());
        string(b, s.instance.as_str());
        string(b, s.gpu.as_str());
        b.extend(s.seq.to_le_bytes());
        string(b, s.host.as_str());
        b.extend(s.start.0.to_le_bytes());
        b.extend(s.end.0.to_le_bytes());
        b.extend(s.energy.0.to_le_bytes());
        b.extend(s.power.0.to_le_bytes());
        b.extend(s.power_max.0.to_le_bytes());
        b.extend(s.util_gpu_pct.to_le_bytes());
        b.extend(s.mem_used_bytes.to_le_bytes());
        b.extend(s.temp_c.to_le_bytes());
        b.extend(s.sm_clock_mhz.to_le_bytes());
        b.push(u8::from(s.chain_start));
        string(b, s.energy_source.as_str());
        string(b, s.attribution.as_str());
        string(&mut keys, s.gpu.as_str());
        keys.extend(s.seq.to_le_bytes());
        string(&mut keys, s.instance.as_str());
    }
    Tables {
        gpu_spans: spans,
        shares,
        samples,
        sample_keys: keys,
        share_rows,
    }
}

/// Bulk-inserts `tables` into `db` with one `clickhouse-client` per table (native `port`).
pub fn insert(port: u16, db: &str, tables: &Tables) {
    for (table, bytes) in [
        ("gpu_spans", &tables.gpu_spans),
        ("shares", &tables.shares),
        ("samples", &tables.samples),
        ("sample_keys", &tables.sample_keys),
    ] {
        let mut child = Command::new("clickhouse-client")
            .args([
                "--port",
                &port.to_string(),
                "--database",
                db,
                "--query",
                &format!("INSERT INTO {table} FORMAT RowBinary"),
            ])
            .stdin(Stdio::piped())
            .spawn()
            .expect("clickhouse-client on PATH");
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "clickhouse-client failed for {table}");
    }
}

/// One timed run: wall time and CPU (this process and its children, plus the server).
pub struct Run {
    pub wall: Duration,
    pub cpu: Duration,
    /// Of `cpu`, the ClickHouse server's (zero for SQLite).
    pub server: Duration,
}

/// Prints a run's line: wall, CPU, samples/s and samples/s per core.
pub fn report(what: &str, samples: usize, shares: usize, r: &Run) {
    let per_s = samples as f64 / r.wall.as_secs_f64();
    let per_core = samples as f64 / r.cpu.as_secs_f64().max(1e-9);
    println!(
        "{what:<32} {:>8.2} s wall {:>8.2} s CPU   {:>10.0} samples/s ({:>10.0} share rows/s)   {:>10.0} samples/s per core",
        r.wall.as_secs_f64(),
        r.cpu.as_secs_f64(),
        per_s,
        shares as f64 / r.wall.as_secs_f64(),
        per_core,
    );
    if !r.server.is_zero() {
        println!(
            "  of which CPU in ClickHouse {:>8.2} s, in the client {:>8.2} s",
            r.server.as_secs_f64(),
            (r.cpu - r.server).as_secs_f64(),
        );
    }
}

/// The raw side of a write bench: `batch`'s rows bulk-inserted into a fresh database `db`
/// (schema and `instances` first), timed with the server's CPU (`pid`). Returns the run and
/// the server's CPU when it began.
pub async fn timed_raw_insert(
    url: &str,
    native: u16,
    pid: Option<&str>,
    db: &str,
    (instances, batch): (&[InstanceRecord], &[EnrichedSample]),
) -> (Run, Duration) {
    let store = ClickHouseStore::connect(url, db).await.unwrap();
    store.upsert_inventory(instances).await.unwrap();
    let tables = encode(batch);
    let share_rows: usize = batch.iter().map(|s| s.shares.len()).sum();
    assert_eq!(tables.share_rows, share_rows);
    let (cpu0, srv0, t0) = (
        super::own_cpu(),
        super::server_cpu(pid),
        std::time::Instant::now(),
    );
    insert(native, db, &tables);
    let server = super::server_cpu(pid) - srv0;
    let run = Run {
        wall: t0.elapsed(),
        cpu: (super::own_cpu() - cpu0) + server,
        server,
    };
    (run, srv0)
}
