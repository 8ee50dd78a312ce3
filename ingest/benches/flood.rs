//! The honest agent's ack lag under a flood of samples for 10,000 unknown GPUs, through the
//! real gateway (gRPC over TCP), enricher and store: the same run as the `flood` integration
//! tests (`ingest/tests/it/flood.rs`, included here), with every check of theirs, printing the
//! figures. Memory bus + SQLite always; Kafka + ClickHouse when `WPTEST_KAFKA_BROKERS` and
//! `WPTEST_CLICKHOUSE_URL` are set (`source scripts/servers.sh start`).
//!
//! `cargo bench -p wattprint-ingest --bench flood`. `BENCH_RUNS` (default 3) runs per bus,
//! each with the flood and without it (the baseline lag of the same honest stream).

#![allow(missing_docs)]

#[path = "../tests/it/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../tests/it/flood.rs"]
#[allow(dead_code)]
mod flood;

use std::time::Duration;

fn report(label: &str, lags: &[Duration], hostile: usize, wall: Duration) {
    let rate = if wall.is_zero() {
        0.0
    } else {
        hostile as f64 / wall.as_secs_f64()
    };
    println!(
        "{label:<18} honest ack lag over {} batches: p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms; \
         {hostile} hostile samples refused in {:.2} s ({:.0}/s)",
        lags.len(),
        flood::percentile(lags, 50.0).as_secs_f64() * 1e3,
        flood::percentile(lags, 99.0).as_secs_f64() * 1e3,
        flood::percentile(lags, 100.0).as_secs_f64() * 1e3,
        wall.as_secs_f64(),
        rate,
    );
}

fn main() {
    // `cargo test --benches` passes `--bench`-less args: run once as a smoke test then too.
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for (label, kafka, hostile) in [
            ("memory+sqlite", false, true),
            ("memory+sqlite, no flood", false, false),
            ("kafka+clickhouse", true, true),
            ("kafka+clickhouse, no flood", true, false),
        ] {
            let (mut lags, mut refused, mut wall) = (Vec::new(), 0, Duration::ZERO);
            for _ in 0..runs {
                let run = if kafka {
                    let Some((store, addr, stop, (url, db))) =
                        flood::kafka_clickhouse("bench flood kafka+clickhouse").await
                    else {
                        break;
                    };
                    let run = flood::honest_run(store, addr, label, hostile).await;
                    let _ = stop.send(());
                    flood::drop_database(&url, &db).await;
                    run
                } else {
                    let (store, addr, stop) = flood::memory_sqlite().await;
                    let run = flood::honest_run(store, addr, label, hostile).await;
                    let _ = stop.send(());
                    run
                };
                lags.extend(run.honest_lag);
                refused += run.hostile_samples;
                wall += run.hostile_wall;
            }
            if !lags.is_empty() {
                report(label, &lags, refused, wall);
            }
        }
    });
}
