//! The enricher end to end, Kafka → ClickHouse, beside a raw `clickhouse-client` insert of the
//! same rows in the same run (issue 16's "enricher end to end per core vs the same raw insert").
//!
//! The samples are the write bench's (`store/benches/common/raw.rs`: the real H100 trace's 1 s
//! energy, `WPBENCH_GPUS` GPUs, 8 per host), published first as the gateway would (one bus
//! message per host and second), so the topic holds a backlog. Then the real Kafka enricher
//! (`Enricher::run` on a `KafkaConsumer`, batching as `[enricher]` defaults) consumes it into a
//! fresh ClickHouse database, joining the real CAISO_NORTH marginal series, until every
//! sample is stored: the rate a catching-up enricher sustains, and its CPU per sample. "Per
//! core" counts this process (the enricher; the publisher had finished) and the ClickHouse
//! server; the broker's CPU is printed beside, not counted (the raw insert has no broker).
//!
//! Run: `cargo bench -p wattprint-ingest --bench enricher_throughput` with the servers up
//! (`source scripts/servers.sh start`). Knobs: `WPBENCH_SAMPLES` (default 200000),
//! `WPBENCH_GPUS` (1024), `WPBENCH_BATCH` (enricher batch, the `[enricher]` default),
//! `WPBENCH_CLICKHOUSE_NATIVE_PORT` (HTTP port + 1000).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../store/benches/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::START;
use common::raw::{self, report, Run};
use common::*;
use wattprint_bus::testing::fresh_topics;
use wattprint_bus::{BusMessage, BusProducer, KafkaConsumer, KafkaProducer};
use wattprint_core::intensity::{
    IntensityJoin, IntensityPoint, PointKind, RegionIntensity, Signal,
};
use wattprint_core::{GramsPerKwh, RegionId, UnixMillis, BUCKET_MS};
use wattprint_ingest::config::EnricherBatching;
use wattprint_ingest::{Enricher, InventoryIndex};
use wattprint_store::{ClickHouseStore, EnrichedSample, Store};

const REGION: &str = "CAISO_NORTH";

/// The enricher's clock: a day after the samples began, so none is too old or in the future.
fn bench_now() -> UnixMillis {
    UnixMillis(START + 86_400_000)
}

/// The real CAISO_NORTH marginal series from [`START`], as the enricher's intensity join.
fn join(seconds: usize) -> IntensityJoin {
    let mut join = IntensityJoin::new(15 * 60 * 1000);
    join.insert(
        RegionId::from(REGION),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: None,
        },
    );
    let moer = caiso_north();
    let buckets = seconds as i64 * 1000 / BUCKET_MS + 2;
    for b in 0..buckets {
        join.record(&IntensityPoint {
            region: RegionId::from(REGION),
            at: UnixMillis(START + b * BUCKET_MS),
            duration_ms: BUCKET_MS,
            value: GramsPerKwh(moer[b as usize % moer.len()]),
            signal: Signal::Marginal,
            kind: PointKind::Actual,
            issued_at: None,
            provider: "watttime:CAISO_NORTH".into(),
            model_version: None,
            fetched_at: UnixMillis(START),
        })
        .unwrap();
    }
    join
}

/// Publishes the samples as the gateway would: one message per host and second.
async fn publish(producer: &KafkaProducer, batch: &[EnrichedSample]) {
    let mut messages: BTreeMap<(i64, &str), Vec<_>> = BTreeMap::new();
    for es in batch {
        messages
            .entry((es.sample.start.0, es.sample.host.as_str()))
            .or_default()
            .push(es.sample.clone());
    }
    let messages: Vec<_> = messages.into_values().collect();
    for chunk in messages.chunks(512) {
        let sends = chunk
            .iter()
            .map(|m| producer.publish(BusMessage::Samples(m.clone())));
        for r in futures::future::join_all(sends).await {
            r.unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Rows of `samples` (no `FINAL` needed: first deliveries only).
async fn stored(url: &str, db: &str) -> u64 {
    raw_client(url)
        .with_database(db)
        .query("SELECT count() FROM samples")
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = clickhouse_url();
    let Some(config) = fresh_topics(4).await else {
        println!("enricher_throughput: NOT RUN (set WPTEST_KAFKA_BROKERS)");
        return;
    };
    let n: usize = env_or("WPBENCH_SAMPLES", 200_000);
    let gpus: usize = env_or("WPBENCH_GPUS", 1024);
    let batch_max: usize = env_or("WPBENCH_BATCH", EnricherBatching::default().max_records);
    let native: u16 = env_or("WPBENCH_CLICKHOUSE_NATIVE_PORT", http_port(&url) + 1000);
    let pid = server_pid(http_port(&url));
    let broker_port: u16 = config
        .brokers
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let broker = broker_pid(broker_port);
    let (instances, batch) = raw::samples(n, gpus);
    let share_rows: usize = batch.iter().map(|s| s.shares.len()).sum();
    let energy: u64 = batch.iter().map(|s| s.sample.energy.0).sum();
    println!(
        "ClickHouse at {url} (server pid {}), broker {} (pid {}), {} CPUs; {n} samples of {gpus} \
         GPUs at 1 s ({share_rows} share rows), real H100 trace energy",
        pid.as_deref()
            .unwrap_or("not found: server CPU not counted"),
        config.brokers,
        broker.as_deref().unwrap_or("not found"),
        std::thread::available_parallelism().map_or(0, |p| p.get()),
    );

    let t0 = Instant::now();
    publish(&KafkaProducer::new(&config).unwrap(), &batch).await;
    println!(
        "published {n} samples in {:.2} s (not measured below)",
        t0.elapsed().as_secs_f64()
    );

    // The enricher, catching up with the whole backlog.
    let db = fresh_db("e2e");
    let store = Arc::new(ClickHouseStore::connect(&url, &db).await.unwrap());
    store.upsert_inventory(&instances).await.unwrap();
    let enricher = Enricher::new(
        store.clone(),
        Arc::new(join(n.div_ceil(gpus))),
        Arc::new(InventoryIndex::new(&instances)),
        HashMap::from([(RegionId::from(REGION), 1.2)]),
    )
    .with_batching(batch_max, Duration::from_secs(1))
    .with_clock(bench_now);
    let consumer = KafkaConsumer::new(&config).unwrap();
    let rss_before = reset_peak_rss();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (cpu0, srv0, brk0, t0) = (
        own_cpu(),
        server_cpu(pid.as_deref()),
        server_cpu(broker.as_deref()),
        Instant::now(),
    );
    let task = tokio::spawn(enricher.run(consumer, async move {
        let _ = stopped.await;
    }));
    let deadline = t0 + Duration::from_secs(600);
    while stored(&url, &db).await < n as u64 {
        assert!(Instant::now() < deadline, "the enricher stored too little");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let server = server_cpu(pid.as_deref()) - srv0;
    let e2e = Run {
        wall: t0.elapsed(),
        cpu: (own_cpu() - cpu0) + server,
        server,
    };
    let broker_cpu = server_cpu(broker.as_deref()) - brk0;
    let rss_peak = status_kb("VmHWM");
    let _ = stop.send(());
    let enriched = task.await.unwrap();
    let e2e_settled = settled(&e2e, srv0, pid.as_deref()).await;
    report(
        &format!("enricher e2e, batches of {batch_max}"),
        n,
        share_rows,
        &e2e,
    );
    println!(
        "  broker CPU {:>8.2} s (not counted); enricher report {enriched:?}",
        broker_cpu.as_secs_f64()
    );
    println!(
        "  client RSS {:.0} MB before the enricher started, peak {:.0} MB while it ran \
         (the bench's own copy of the samples included)",
        rss_before / 1024.0,
        rss_peak / 1024.0
    );
    assert_eq!(totals(&url, &db).await, (share_rows as u64, energy));
    drop_db(&url, &db).await;

    // Raw: the same rows, bulk-inserted as RowBinary by clickhouse-client.
    let db = fresh_db("e2e_raw");
    let (bulk, srv0) =
        raw::timed_raw_insert(&url, native, pid.as_deref(), &db, (&instances, &batch)).await;
    let bulk_settled = settled(&bulk, srv0, pid.as_deref()).await;
    report("clickhouse-client RowBinary, bulk", n, share_rows, &bulk);
    assert_eq!(totals(&url, &db).await, (share_rows as u64, energy));
    drop_db(&url, &db).await;

    let per_core = |r: &Run| n as f64 / r.cpu.as_secs_f64().max(1e-9);
    println!(
        "ratio enricher e2e / raw: {:.3} of samples/s, {:.3} of samples/s per core",
        bulk.wall.as_secs_f64() / e2e.wall.as_secs_f64(),
        per_core(&e2e) / per_core(&bulk)
    );
    println!(
        "with ClickHouse's merges settled: e2e {:.0} samples/s per core (server {:.2} s), raw {:.0} \
         (server {:.2} s); ratio {:.3} per core",
        per_core(&e2e_settled),
        e2e_settled.server.as_secs_f64(),
        per_core(&bulk_settled),
        bulk_settled.server.as_secs_f64(),
        per_core(&e2e_settled) / per_core(&bulk_settled)
    );
}

/// `run` with the server's CPU counted until its merges settled (`srv0`: its CPU at the start).
async fn settled(run: &Run, srv0: Duration, pid: Option<&str>) -> Run {
    let server = settled_server_cpu(pid).await - srv0;
    Run {
        wall: run.wall,
        cpu: run.cpu - run.server + server,
        server,
    }
}

/// A `kB` field of `/proc/self/status` (0 where there is none).
fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// Resets the peak RSS (`VmHWM`) to the current one (Linux `clear_refs` 5) and returns it.
fn reset_peak_rss() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kb("VmRSS")
}
