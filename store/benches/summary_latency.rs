//! Latency of a tenant's month summary on ClickHouse with `WPBENCH_GPUS` GPUs (default 1000,
//! 4 per instance) × `WPBENCH_DAYS` days (30) of 5-minute intervals: about 8.6 M interval rows
//! for the tenant, plus a small second tenant so tenant filtering has something to skip.
//!
//! Rows are generated on the server (`INSERT … SELECT FROM numbers(…)`, the efficient way to
//! load millions of rows): each interval is one share of one 300 s sample, its energy the mean
//! power of a phase of the real H100 trace (idle, training, GEMM burn, data-loader bound,
//! inference bursts, paused; one phase per GPU-hour, drawn by hash with a realistic mix) times
//! a ±5% jitter, its intensity the real WattTime CAISO_NORTH marginal value of that 5 minutes
//! (`common/fleet.rs`, shared with the query API's `api_latency` bench).
//! (At the agent's 1 s interval an interval holds about 300 shares: the 5-minute data read by
//! the raw path would be that much larger, the rollups not at all.)
//!
//! Measured, p50/p99 over repeated queries: the summary from 5-minute data only
//! (`SummaryPath::Raw`), the summary before any rollup exists, the refresh that builds the
//! rollups, and the summary with rollups, for an aligned month and a ragged one (edges read
//! from 5-minute data). The numbers of every path are checked equal.
//!
//! Run: `cargo bench -p wattprint-store --bench summary_latency` with the servers up
//! (`WPTEST_CLICKHOUSE_URL`). Knobs: `WPBENCH_GPUS`, `WPBENCH_DAYS`, `WPBENCH_REPEATS` (30),
//! `WPBENCH_RAW_REPEATS` (5), `WPBENCH_KEEP=1` keeps the database, `WPBENCH_REUSE=<database>`
//! runs on a kept one (no load, no "before any rollup" line; the refresh finds only what is
//! stale).

#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::fleet::{Fleet, FleetModel, HOUR, START};
use common::*;
use std::time::{Duration, Instant};
use wattprint_core::{TenantId, UnixMillis};
use wattprint_store::clickhouse::SummaryPath;
use wattprint_store::{ClickHouseStore, Store, TenantSummary};

struct Timed {
    summary: TenantSummary,
    times: Vec<Duration>,
}

async fn time_summary(
    store: &ClickHouseStore,
    from: i64,
    to: i64,
    path: SummaryPath,
    repeats: usize,
) -> Timed {
    let mut times = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let t0 = Instant::now();
        let rows = store
            .tenant_summary_by(
                &TenantId::from("acme"),
                UnixMillis(from),
                UnixMillis(to),
                path,
            )
            .await
            .unwrap();
        times.push(t0.elapsed());
        let hours = rows.iter().map(|(_, h)| h).sum();
        last = Some(TenantSummary::of(
            rows.into_iter().map(|(s, _)| s).collect(),
            hours,
        ));
    }
    times.sort();
    Timed {
        summary: last.unwrap(),
        times,
    }
}

fn print(what: &str, t: &Timed) {
    println!(
        "{what:<44} p50 {:>9.1} ms  p99 {:>9.1} ms  (n = {:>2}; {} instances, {:.1} MWh, {:.2} t CO2e, {} instance-hours from rollups)",
        percentile(&t.times, 50.0).as_secs_f64() * 1e3,
        percentile(&t.times, 99.0).as_secs_f64() * 1e3,
        t.times.len(),
        t.summary.instances.len(),
        t.summary.totals.energy.to_kwh().0 / 1000.0,
        t.summary.totals.it_co2e.0 / 1e6,
        t.summary.rollup_instance_hours,
    );
}

fn assert_same(a: &TenantSummary, b: &TenantSummary, what: &str) {
    let t = |s: &TenantSummary| {
        (
            s.instances.len(),
            s.totals.energy,
            s.totals.gpu_intervals,
            s.totals.covered_ms,
        )
    };
    assert_eq!(t(a), t(b), "{what}");
    let (x, y) = (a.totals.it_co2e.0, b.totals.it_co2e.0);
    assert!(
        (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        "{what}: {x} != {y}"
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = clickhouse_url();
    let gpus: u64 = env_or("WPBENCH_GPUS", 1000);
    let days: i64 = env_or("WPBENCH_DAYS", 30);
    let repeats: usize = env_or("WPBENCH_REPEATS", 30);
    let raw_repeats: usize = env_or("WPBENCH_RAW_REPEATS", 5);
    // `WPBENCH_REUSE=<database>`: a database a `WPBENCH_KEEP=1` run left, loaded already.
    let reuse = std::env::var("WPBENCH_REUSE").ok();
    let db = reuse.clone().unwrap_or_else(|| fresh_db("summary"));
    let store = ClickHouseStore::connect(&url, &db).await.unwrap();
    println!(
        "ClickHouse {} at {url}, database {db}, {} CPUs",
        store.server_version(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let model = FleetModel::real();
    let fleets = [
        Fleet::new("acme", "vm", gpus, days as u64),
        Fleet::new("globex", "gx", 40, days as u64),
    ];
    let t0 = Instant::now();
    if reuse.is_none() {
        let inv: Vec<_> = fleets.iter().flat_map(Fleet::inventory).collect();
        store.upsert_inventory(&inv).await.unwrap();
        for fleet in &fleets {
            fleet.load_clickhouse(&model, &url, &db, false).await;
        }
    }
    let loaded = t0.elapsed();
    let client = raw_client(&url).with_database(&db);
    let (rows, parts): (u64, u64) = client
        .query(
            // Scalar subqueries are Nullable on modern servers: the row would misread.
            "SELECT toUInt64(ifNull((SELECT count() FROM shares), 0)), \
             toUInt64(ifNull((SELECT count() FROM system.parts WHERE database = currentDatabase() \
              AND table = 'shares' AND active), 0))",
        )
        .fetch_one()
        .await
        .unwrap();
    println!(
        "loaded {rows} interval rows ({gpus} + 40 GPUs × {days} days × 288) in {:.1} s \
         ({:.0} rows/s, server-side), {parts} active parts",
        loaded.as_secs_f64(),
        rows as f64 / loaded.as_secs_f64()
    );

    let (from, to) = (START, START + days * 24 * HOUR);
    let ragged = (from + 7 * 60_000, to - 13 * 60_000);
    let raw = time_summary(&store, from, to, SummaryPath::Raw, raw_repeats).await;
    print("month, 5-minute data only (no rollups)", &raw);
    if reuse.is_none() {
        let before = time_summary(&store, from, to, SummaryPath::Auto, raw_repeats).await;
        print("month, Auto before any rollup (all stale)", &before);
        assert_same(&before.summary, &raw.summary, "auto before rollups");
    }

    let t0 = Instant::now();
    let refreshed = store
        .refresh_rollups(UnixMillis(from), UnixMillis(to))
        .await
        .unwrap();
    let refresh = t0.elapsed();
    let rolled: u64 = client
        .query("SELECT count() FROM rollup_hourly")
        .fetch_one()
        .await
        .unwrap();
    println!(
        "refresh_rollups over the month: {:.1} s, {} (tenant, instance, hour)s recomputed, \
         {rolled} rollup rows",
        refresh.as_secs_f64(),
        refreshed.recomputed
    );

    let auto = time_summary(&store, from, to, SummaryPath::Auto, repeats).await;
    print("month, with rollups", &auto);
    assert_same(&auto.summary, &raw.summary, "rollups");
    let ragged_auto = time_summary(&store, ragged.0, ragged.1, SummaryPath::Auto, repeats).await;
    print("ragged month (edges from 5-minute data)", &ragged_auto);
    let ragged_raw = time_summary(&store, ragged.0, ragged.1, SummaryPath::Raw, raw_repeats).await;
    print("ragged month, 5-minute data only", &ragged_raw);
    assert_same(&ragged_auto.summary, &ragged_raw.summary, "ragged");
    // Through the Store trait, as the API calls it.
    let t0 = Instant::now();
    let via_trait = store
        .tenant_summary(
            &wattprint_core::TenantScope::from_verified(TenantId::from("acme")),
            UnixMillis(from),
            UnixMillis(to),
        )
        .await
        .unwrap();
    println!(
        "Store::tenant_summary (one call): {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_same(&via_trait, &raw.summary, "trait");
    println!(
        "speed-up with rollups: p50 {:.1}×, p99 {:.1}×",
        percentile(&raw.times, 50.0).as_secs_f64() / percentile(&auto.times, 50.0).as_secs_f64(),
        percentile(&raw.times, 99.0).as_secs_f64() / percentile(&auto.times, 99.0).as_secs_f64(),
    );

    if std::env::var_os("WPBENCH_KEEP").is_none() && reuse.is_none() {
        raw_client(&url)
            .query(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute()
            .await
            .unwrap();
    }
}
