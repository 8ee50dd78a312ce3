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
//! (`WPTEST_CLICKHOUSE_URL`). Knobs: `WPBENCH_STORES` (`clickhouse,sqlite`; the SQLite lines
//! alone need no server), `WPBENCH_SAMPLES` (default 200000), `WPBENCH_GPUS` (64),
//! `WPBENCH_BATCHES` (256,1024,4096), `WPBENCH_CLICKHOUSE_NATIVE_PORT` (HTTP port + 1000).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::raw::{report, Run};
use common::*;
use std::time::{Duration, Instant};
use wattprint_store::{
    ClickHouseStore, EnrichedSample, InstanceRecord, SqliteStore, SqliteSync, Store,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stores: String = env_or("WPBENCH_STORES", "clickhouse,sqlite".to_owned());
    let n: usize = env_or("WPBENCH_SAMPLES", 200_000);
    let gpus: usize = env_or("WPBENCH_GPUS", 64);
    let (instances, batch) = raw::samples(n, gpus);
    let share_rows: usize = batch.iter().map(|s| s.shares.len()).sum();
    if stores.split(',').any(|s| s.trim() == "clickhouse") {
        clickhouse(n, gpus, (&instances, &batch), share_rows).await;
    }
    if stores.split(',').any(|s| s.trim() == "sqlite") {
        sqlite(n, (&instances, &batch), share_rows).await;
    }
}

/// The ClickHouse write path at each batch size, then the raw insert of the same rows.
async fn clickhouse(
    n: usize,
    gpus: usize,
    (instances, batch): (&[InstanceRecord], &[EnrichedSample]),
    share_rows: usize,
) {
    let url = clickhouse_url();
    let batches: Vec<usize> = std::env::var("WPBENCH_BATCHES")
        .unwrap_or_else(|_| "256,1024,4096,16384".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    let native: u16 = env_or("WPBENCH_CLICKHOUSE_NATIVE_PORT", http_port(&url) + 1000);
    let pid = server_pid(http_port(&url));
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
        store.upsert_inventory(instances).await.unwrap();
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
    let (raw, _) =
        raw::timed_raw_insert(&url, native, pid.as_deref(), &db, (instances, batch)).await;
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
}

/// The embedded store: the same samples into an SQLite file in the enricher's default batch
/// of 256 bus messages, once per durability (`store.sqlite_synchronous`).
async fn sqlite(
    n: usize,
    (instances, batch): (&[InstanceRecord], &[EnrichedSample]),
    share_rows: usize,
) {
    for sync in [SqliteSync::Full, SqliteSync::Normal] {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(&dir.path().join("bench.db"), sync).unwrap();
        store.upsert_inventory(instances).await.unwrap();
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
