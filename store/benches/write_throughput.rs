//! Write throughput of `ClickHouseStore::write_samples` beside a raw `clickhouse-client`
//! `INSERT … FORMAT RowBinary` of the same rows, in the same run.
//!
//! Samples are what the agent sends at its default 1 s interval: the real H100 trace's energy
//! counter deltas, replayed by `WPBENCH_GPUS` GPUs (4 per instance) from staggered offsets;
//! shares joined with the real CAISO_NORTH marginal series. The store path writes them in
//! batches of each size in `WPBENCH_BATCHES` (the enricher writes up to 256 bus messages per
//! batch), sequentially as one enricher partition does, into a fresh database each. The raw
//! path bulk-inserts the rows the store wrote (spans, shares, samples, `(gpu, seq)` keys; the
//! same views fill the frontier and the rollup marks), one `clickhouse-client` per table: the server's ingest ceiling for those rows,
//! without the exactly-once lookups.
//!
//! "Per core" divides by CPU seconds actually used, of this process and its children plus the
//! ClickHouse server's (found by its `--http_port`), so it does not depend on how many cores
//! the machine has.
//!
//! Then the embedded store: the same samples into an SQLite file, batches of 256, with
//! `synchronous` FULL (the default) and NORMAL (`store.sqlite_synchronous`).
//!
//! Run: `cargo bench -p wattprint-store --bench write_throughput` with the servers up
//! (`WPTEST_CLICKHOUSE_URL`). Knobs: `WPBENCH_SAMPLES` (default 200000), `WPBENCH_GPUS` (64),
//! `WPBENCH_BATCHES` (256,1024,4096), `WPBENCH_CLICKHOUSE_NATIVE_PORT` (HTTP port + 1000).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::fleet::START;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{IntensityKind, JoinedIntensity};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    UnixMillis, BUCKET_MS,
};
use wattprint_store::{
    ClickHouseStore, EnrichedSample, EnrichedShare, GpuRecord, InstanceRecord, SqliteStore,
    SqliteSync, Store,
};

fn samples(n: usize, gpus: usize) -> (Vec<InstanceRecord>, Vec<EnrichedSample>) {
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
struct Tables {
    gpu_spans: Vec<u8>,
    shares: Vec<u8>,
    samples: Vec<u8>,
    sample_keys: Vec<u8>,
    share_rows: usize,
}

fn encode(batch: &[EnrichedSample]) -> Tables {
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

struct Run {
    wall: Duration,
    cpu: Duration,
    /// Of `cpu`, the ClickHouse server's (zero for SQLite).
    server: Duration,
}

fn report(what: &str, samples: usize, shares: usize, r: &Run) {
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

/// Totals of a database as the store reads them: rows and energy of `shares FINAL`.
async fn totals(url: &str, db: &str) -> (u64, u64) {
    raw_client(url)
        .with_database(db)
        .query("SELECT count(), sum(energy_mj) FROM shares FINAL")
        .fetch_one()
        .await
        .unwrap()
}

async fn drop_db(url: &str, db: &str) {
    raw_client(url)
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = clickhouse_url();
    let n: usize = env_or("WPBENCH_SAMPLES", 200_000);
    let gpus: usize = env_or("WPBENCH_GPUS", 64);
    let batches: Vec<usize> = std::env::var("WPBENCH_BATCHES")
        .unwrap_or_else(|_| "256,1024,4096,16384".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    let native: u16 = env_or("WPBENCH_CLICKHOUSE_NATIVE_PORT", http_port(&url) + 1000);
    let pid = server_pid(http_port(&url));
    let (instances, batch) = samples(n, gpus);
    let share_rows: usize = batch.iter().map(|s| s.shares.len()).sum();
    let version: String = raw_client(&url)
        .query("SELECT version()")
        .fetch_one()
        .await
        .unwrap();
    println!(
        "ClickHouse {version} at {url} (server pid {}), {} CPUs; {n} samples of {gpus} GPUs at 1 s \
         ({share_rows} share rows), real H100 trace energy",
        pid.as_deref().unwrap_or("not found: server CPU not counted"),
        std::thread::available_parallelism().map_or(0, |p| p.get()),
    );

    let mut store_rates = Vec::new();
    for &size in &batches {
        let db = fresh_db("write");
        let store = ClickHouseStore::connect(&url, &db).await.unwrap();
        store.upsert_inventory(&instances).await.unwrap();
        let (cpu0, srv0, t0) = (own_cpu(), server_cpu(pid.as_deref()), Instant::now());
        for chunk in batch.chunks(size) {
            let out = store.write_samples(chunk).await.unwrap();
            assert_eq!(out.inserted as usize, chunk.len());
        }
        let server = server_cpu(pid.as_deref()) - srv0;
        let run = Run {
            wall: t0.elapsed(),
            cpu: (own_cpu() - cpu0) + server,
            server,
        };
        report(
            &format!("write_samples, batches of {size}"),
            n,
            share_rows,
            &run,
        );
        let got = totals(&url, &db).await;
        assert_eq!(
            got,
            (
                share_rows as u64,
                batch.iter().map(|s| s.sample.energy.0).sum::<u64>()
            )
        );
        store_rates.push((size, n as f64 / run.wall.as_secs_f64(), run));
        drop_db(&url, &db).await;
    }

    // Raw: the same rows, bulk-inserted as RowBinary by clickhouse-client.
    let db = fresh_db("raw");
    let store = ClickHouseStore::connect(&url, &db).await.unwrap();
    store.upsert_inventory(&instances).await.unwrap();
    let tables = encode(&batch);
    let (cpu0, srv0, t0) = (own_cpu(), server_cpu(pid.as_deref()), Instant::now());
    for (table, bytes) in [
        ("gpu_spans", &tables.gpu_spans),
        ("shares", &tables.shares),
        ("samples", &tables.samples),
        ("sample_keys", &tables.sample_keys),
    ] {
        let mut child = Command::new("clickhouse-client")
            .args([
                "--port",
                &native.to_string(),
                "--database",
                &db,
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
    let server = server_cpu(pid.as_deref()) - srv0;
    let raw = Run {
        wall: t0.elapsed(),
        cpu: (own_cpu() - cpu0) + server,
        server,
    };
    assert_eq!(tables.share_rows, share_rows);
    report("clickhouse-client RowBinary, bulk", n, share_rows, &raw);
    let stored = totals(&url, &db).await;
    assert_eq!(stored.0, share_rows as u64, "raw insert stored other rows");
    drop_db(&url, &db).await;

    let raw_rate = n as f64 / raw.wall.as_secs_f64();
    let raw_core = n as f64 / raw.cpu.as_secs_f64().max(1e-9);
    for (size, rate, run) in &store_rates {
        let core = n as f64 / run.cpu.as_secs_f64().max(1e-9);
        println!(
            "ratio write_samples({size}) / raw: {:.3} of samples/s, {:.3} of samples/s per core",
            rate / raw_rate,
            core / raw_core
        );
    }

    // The embedded store: the same samples into an SQLite file in the enricher's default
    // batch of 256 bus messages, once per durability (`store.sqlite_synchronous`).
    for sync in [SqliteSync::Full, SqliteSync::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(&dir.path().join("bench.db"), sync).unwrap();
        store.upsert_inventory(&instances).await.unwrap();
        let (cpu0, t0) = (own_cpu(), Instant::now());
        for chunk in batch.chunks(256) {
            let out = store.write_samples(chunk).await.unwrap();
            assert_eq!(out.inserted as usize, chunk.len());
        }
        let run = Run {
            wall: t0.elapsed(),
            cpu: own_cpu() - cpu0,
            server: Duration::ZERO,
        };
        report(
            &format!("sqlite write_samples ({sync:?}), batches of 256"),
            n,
            share_rows,
            &run,
        );
    }
}
