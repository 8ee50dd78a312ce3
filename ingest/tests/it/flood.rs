//! A flood of samples for 10,000 unknown GPUs against the real gateway (gRPC on a TCP port),
//! concurrent with an honest agent streaming the real H100 trace's counter energy for two
//! tenants' GPUs: on the in-process bus with SQLite, and on Kafka with ClickHouse
//! (`WPTEST_KAFKA_BROKERS`, `WPTEST_CLICKHOUSE_URL`; without them that test says so and passes,
//! unless `CI` or `WPTEST_REQUIRE_SERVERS` is set).
//!
//! Every hostile sample is refused in its ack (not attached) and held in the quarantine, none is
//! stored; each tenant's samples, 5-minute intervals and summary hold exactly the honest
//! trace energy, to the millijoule; the honest stream's ack latency stays bounded. The measured
//! honest lag (p50/p99) is printed; `cargo bench -p wattprint-ingest --bench flood` prints the
//! same figures outside the test.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wattprint_bus::testing::fresh_topics;
use wattprint_bus::{memory_bus, BusProducer, KafkaConsumer, KafkaProducer};
use wattprint_core::intensity::IntensityJoin;
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{
    GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, TenantId, TenantScope, UnixMillis,
};
use wattprint_ingest::{Enricher, Gateway, GatewayLimits, InventoryIndex};
use wattprint_proto::v1::ingest_client::IngestClient;
use wattprint_proto::v1::{BatchAck, SampleBatch};
use wattprint_store::{ClickHouseStore, InstanceRecord, SqliteStore, Store};

/// Unknown GPUs the hostile host reports.
pub const HOSTILE_GPUS: usize = 10_000;
/// Samples per unknown GPU at least (the flood lasts as long as the honest stream).
const HOSTILE_ROUNDS: u64 = 3;
/// Samples per hostile batch.
const HOSTILE_BATCH: usize = 1_000;
/// The honest agent's host and its two GPUs, one per tenant.
const HONEST_HOST: &str = "host-honest";
const GPUS: [(&str, &str, &str); 2] = [("GPU-a", "i-a", "acme"), ("GPU-g", "i-g", "globex")];

fn inventory() -> Vec<InstanceRecord> {
    GPUS.iter()
        .map(|&(gpu, instance, tenant)| {
            common::instance(tenant, instance, "R", &[(gpu, HONEST_HOST)])
        })
        .collect()
}

/// The real H100 trace as (ms since its first row, energy counter mJ), read by hand.
fn trace() -> Vec<(i64, u64)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/h100-trace/h100_power_trace_50ms.csv"
    );
    let rows: Vec<(f64, u64)> = csv::Reader::from_path(path)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].parse().unwrap(), r[5].parse().unwrap())
        })
        .collect();
    let t0 = rows[0].0;
    rows.iter()
        .map(|&(t, mj)| (((t - t0) * 1000.0).round() as i64, mj))
        .collect()
}

/// The honest agent's samples: per GPU, 1-second spans (every 20th 50 ms row) carrying the
/// counter's difference; GPU `g` reads the trace from row `g × 7` so the two differ. Returns
/// the samples in sending order (both GPUs per second) and each GPU's exact energy.
pub fn honest_samples(base: i64) -> (Vec<EnergySample>, [u64; 2]) {
    let rows = trace();
    let mut per_gpu = [Vec::new(), Vec::new()];
    let mut totals = [0u64; 2];
    for (g, &(gpu, instance, _)) in GPUS.iter().enumerate() {
        let picked: Vec<(i64, u64)> = rows.iter().skip(g * 7).step_by(20).copied().collect();
        let t0 = picked[0].0;
        for (seq, w) in picked.windows(2).enumerate() {
            let energy = w[1].1 - w[0].1;
            totals[g] += energy;
            per_gpu[g].push(EnergySample {
                host: HostId::from(HONEST_HOST),
                gpu: GpuUuid::from(gpu),
                instance: InstanceId::from(instance),
                seq: seq as u64 + 1,
                start: UnixMillis(base + w[0].0 - t0),
                end: UnixMillis(base + w[1].0 - t0),
                energy: Millijoules(energy),
                power: Milliwatts(300_000),
                power_max: Milliwatts(400_000),
                util_gpu_pct: 90,
                mem_used_bytes: 0,
                temp_c: 60,
                sm_clock_mhz: 1980,
                chain_start: seq == 0,
                energy_source: EnergySource::Counter,
                attribution: Attribution::Exclusive,
            });
        }
        assert_eq!(totals[g], picked.last().unwrap().1 - picked[0].1);
    }
    let [a, g] = per_gpu;
    let samples = a.into_iter().zip(g).flat_map(|(x, y)| [x, y]).collect();
    (samples, totals)
}

/// One round of the hostile host's batches: a sample for each of `HOSTILE_GPUS` GPUs no
/// inventory knows, claiming the honest tenants' instances.
pub fn hostile_round(base: i64, round: u64) -> Vec<SampleBatch> {
    let start = base + round as i64 * 1000;
    let samples: Vec<_> = (0..HOSTILE_GPUS)
        .map(|k| {
            wattprint_proto::sample_to_wire(&EnergySample {
                host: HostId::from("host-evil"),
                gpu: GpuUuid::new(format!("GPU-evil-{k:05}")),
                instance: InstanceId::from(GPUS[k % 2].1),
                seq: round + 1,
                start: UnixMillis(start),
                end: UnixMillis(start + 1000),
                energy: Millijoules(600_000),
                power: Milliwatts(600_000),
                power_max: Milliwatts(650_000),
                util_gpu_pct: 100,
                mem_used_bytes: 0,
                temp_c: 70,
                sm_clock_mhz: 1980,
                chain_start: round == 0,
                energy_source: EnergySource::Counter,
                attribution: Attribution::Exclusive,
            })
        })
        .collect();
    let per_round = (HOSTILE_GPUS / HOSTILE_BATCH) as u64;
    samples
        .chunks(HOSTILE_BATCH)
        .zip(round * per_round + 1..)
        .map(|(chunk, batch_seq)| SampleBatch {
            host_id: "host-evil".into(),
            batch_seq,
            samples: chunk.to_vec(),
        })
        .collect()
}

/// The hostile host: rounds of [`hostile_round`] on one stream, each batch after the previous
/// ack, until `honest_done` and at least `HOSTILE_ROUNDS` rounds; returns the acks and rounds.
async fn hostile_stream(
    addr: SocketAddr,
    base: i64,
    honest_done: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<BatchAck>, u64) {
    use std::sync::atomic::Ordering;
    let mut client = IngestClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<SampleBatch>(1);
    let mut acks = client
        .stream_samples(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut round = 0;
    while round < HOSTILE_ROUNDS || !honest_done.load(Ordering::Acquire) {
        for batch in hostile_round(base, round) {
            tx.send(batch).await.unwrap();
            got.push(acks.message().await.unwrap().unwrap());
        }
        round += 1;
    }
    (got, round)
}

/// Sends `batches` on one stream, one at a time, each after the previous ack; returns the acks
/// and each batch's ack latency.
pub async fn stream_one_by_one(
    addr: SocketAddr,
    batches: Vec<SampleBatch>,
) -> (Vec<BatchAck>, Vec<Duration>) {
    let mut client = IngestClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<SampleBatch>(1);
    let mut acks = client
        .stream_samples(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (mut got, mut lag) = (Vec::new(), Vec::new());
    for batch in batches {
        let sent = Instant::now();
        tx.send(batch).await.unwrap();
        got.push(acks.message().await.unwrap().unwrap());
        lag.push(sent.elapsed());
    }
    (got, lag)
}

/// The p-th percentile (0–100) of `lag`, nearest rank.
pub fn percentile(lag: &[Duration], p: f64) -> Duration {
    let mut sorted = lag.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What one flood run measured.
pub struct FloodRun {
    /// Honest batches' ack latency.
    pub honest_lag: Vec<Duration>,
    /// Hostile samples sent (all refused).
    pub hostile_samples: usize,
    /// The hostile stream's wall time.
    pub hostile_wall: Duration,
}

/// Runs the flood against a gateway on `addr` whose bus feeds an enricher writing `store`,
/// and checks everything the module promises.
pub async fn flood(store: Arc<dyn Store>, addr: SocketAddr, label: &str) -> FloodRun {
    honest_run(store, addr, label, true).await
}

/// The honest agent's run, beside the flood when `hostile` (without it: the baseline lag).
pub async fn honest_run(
    store: Arc<dyn Store>,
    addr: SocketAddr,
    label: &str,
    hostile: bool,
) -> FloodRun {
    let base = UnixMillis::now().0 - 3_600_000;
    let (honest, totals) = honest_samples(base);
    // The flood goes on for as long as the honest agent streams.
    let honest_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = honest_done.clone();
    let hostile_task = tokio::spawn(async move {
        let started = Instant::now();
        if !hostile {
            return (Vec::new(), 0, Duration::ZERO);
        }
        let (acks, rounds) = hostile_stream(addr, base, done).await;
        (acks, rounds, started.elapsed())
    });
    // One honest sample pair per batch, as an agent sends every second (unpaced here).
    let honest_batches: Vec<SampleBatch> = honest
        .chunks(2)
        .zip(1..)
        .map(|(pair, batch_seq)| SampleBatch {
            host_id: HONEST_HOST.into(),
            batch_seq,
            samples: pair.iter().map(wattprint_proto::sample_to_wire).collect(),
        })
        .collect();
    let (honest_acks, honest_lag) = stream_one_by_one(addr, honest_batches).await;
    honest_done.store(true, std::sync::atomic::Ordering::Release);
    let (hostile_acks, rounds, hostile_wall) = hostile_task.await.unwrap();
    let want_held = HOSTILE_GPUS * rounds as usize;

    for ack in &honest_acks {
        assert_eq!((ack.accepted, ack.rejected.len()), (2, 0), "{ack:?}");
    }
    let refused: usize = hostile_acks.iter().map(|a| a.rejected.len()).sum();
    assert_eq!(refused, want_held);
    for ack in &hostile_acks {
        assert_eq!(ack.accepted, 0, "{ack:?}");
        assert!(ack
            .rejected
            .iter()
            .all(|r| r.gpu_uuid.starts_with("GPU-evil-")
                && r.reason.contains("is not attached to instance")));
    }

    // Every refusal reaches the quarantine (the dead letters are behind the honest samples
    // on no partition of theirs), and nothing else.
    let deadline = Instant::now() + Duration::from_secs(180);
    let held = loop {
        let held = store.quarantine(2 * want_held as u32).await.unwrap();
        if held.len() >= want_held || Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(held.len(), want_held, "{label}: quarantine");
    assert!(held
        .iter()
        .all(|q| q.host.as_str() == "host-evil" && q.reason.contains("is not attached")));

    let (from, to) = (UnixMillis(base - 3_600_000), UnixMillis(base + 3_600_000));
    for (g, &(gpu, instance, tenant)) in GPUS.iter().enumerate() {
        let scope = TenantScope::from_verified(TenantId::from(tenant));
        let instance = InstanceId::from(instance);
        let deadline = Instant::now() + Duration::from_secs(120);
        let samples = loop {
            let s = store
                .instance_samples(&scope, &instance, from, to, 100_000)
                .await
                .unwrap();
            if s.len() >= honest.len() / 2 || Instant::now() > deadline {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            samples.len(),
            honest.len() / 2,
            "{label}: {tenant}'s samples"
        );
        assert!(samples.iter().all(|r| r.sample.gpu.as_str() == gpu));
        let raw: u64 = samples.iter().map(|r| r.sample.energy.0).sum();
        let intervals: u64 = store
            .instance_intervals(&scope, &instance, from, to)
            .await
            .unwrap()
            .iter()
            .map(|i| i.energy.0)
            .sum();
        let summary = store.tenant_summary(&scope, from, to).await.unwrap();
        assert_eq!(
            (raw, intervals, summary.totals.energy.0),
            (totals[g], totals[g], totals[g]),
            "{label}: {tenant}'s energy to the mJ (samples, intervals, summary)"
        );
        assert_eq!(summary.instances.len(), 1, "{label}: {tenant}");
    }
    let run = FloodRun {
        honest_lag,
        hostile_samples: want_held,
        hostile_wall,
    };
    eprintln!(
        "flood[{label}]: {} hostile samples ({HOSTILE_GPUS} unknown GPUs) refused in {:?}; \
         honest ack lag over {} batches: p50 {:?}, p99 {:?}, max {:?}",
        run.hostile_samples,
        run.hostile_wall,
        run.honest_lag.len(),
        percentile(&run.honest_lag, 50.0),
        percentile(&run.honest_lag, 99.0),
        percentile(&run.honest_lag, 100.0),
    );
    // Generous: the honest stream is never starved behind the flood.
    assert!(
        percentile(&run.honest_lag, 99.0) < Duration::from_secs(10),
        "{label}: honest acks stalled"
    );
    run
}

/// A gateway serving on 127.0.0.1:0 over `producer`; stops when the sender is dropped or used.
pub async fn start_gateway(
    producer: Arc<dyn BusProducer>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let gateway = Gateway::new(
        producer,
        Arc::new(InventoryIndex::new(&inventory())),
        GatewayLimits::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(wattprint_ingest::gateway::serve(
        listener,
        gateway,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

fn enricher(store: Arc<dyn Store>) -> Enricher {
    Enricher::new(
        store,
        Arc::new(IntensityJoin::new(15 * 60 * 1000)),
        Arc::new(InventoryIndex::new(&inventory())),
        HashMap::new(),
    )
    .with_batching(256, Duration::from_millis(20))
}

/// The memory bus and SQLite: gateway, enricher and store in this process.
pub async fn memory_sqlite() -> (Arc<dyn Store>, SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    store.upsert_inventory(&inventory()).await.unwrap();
    let (producer, consumer) = memory_bus(64);
    tokio::spawn(enricher(store.clone()).run(consumer, std::future::pending::<()>()));
    let (addr, stop) = start_gateway(Arc::new(producer)).await;
    (store, addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_gpus_changes_no_total_on_memory_and_sqlite() {
    let (store, addr, stop) = memory_sqlite().await;
    flood(store, addr, "memory+sqlite").await;
    let _ = stop.send(());
}

/// The ClickHouse server of the tests, or None (after saying so) when the test should not run.
pub fn clickhouse_url(test: &str) -> Option<String> {
    match std::env::var("WPTEST_CLICKHOUSE_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some();
            assert!(!required, "WPTEST_CLICKHOUSE_URL is not set");
            eprintln!("{test} was NOT run: WPTEST_CLICKHOUSE_URL is not set");
            None
        }
    }
}

/// Drops a test database over ClickHouse's HTTP interface (best effort).
pub async fn drop_database(url: &str, db: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let Ok(mut conn) = tokio::net::TcpStream::connect(host).await else {
        return;
    };
    let body = format!("DROP DATABASE IF EXISTS {db}");
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if conn.write_all(req.as_bytes()).await.is_ok() {
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink).await;
    }
}

/// Kafka and ClickHouse: a fresh topic set and a fresh database; `None` without the servers.
pub async fn kafka_clickhouse(
    test: &str,
) -> Option<(
    Arc<dyn Store>,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    (String, String),
)> {
    let url = clickhouse_url(test)?;
    let config = fresh_topics(4).await?;
    let db = format!("wp_test_{:016x}", rand_u64());
    let store: Arc<dyn Store> = Arc::new(ClickHouseStore::connect(&url, &db).await.unwrap());
    store.upsert_inventory(&inventory()).await.unwrap();
    tokio::spawn(enricher(store.clone()).run(
        KafkaConsumer::new(&config).unwrap(),
        std::future::pending::<()>(),
    ));
    let (addr, stop) = start_gateway(Arc::new(KafkaProducer::new(&config).unwrap())).await;
    Some((store, addr, stop, (url, db)))
}

/// A random-enough u64 for names (no `rand` here): time and address entropy.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_gpus_changes_no_total_on_kafka_and_clickhouse() {
    let test = "flood::a_flood_of_unknown_gpus_changes_no_total_on_kafka_and_clickhouse";
    let Some((store, addr, stop, (url, db))) = kafka_clickhouse(test).await else {
        return;
    };
    let outcome = tokio::spawn(async move { flood(store, addr, "kafka+clickhouse").await }).await;
    let _ = stop.send(());
    drop_database(&url, &db).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
