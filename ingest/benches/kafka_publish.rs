//! Gateway → Kafka throughput: samples per second through `Gateway::handle` (validation,
//! protobuf encoding, idempotent produce with `acks=all`, waiting for every broker ack).
//!
//! The broker: when `WPTEST_TANSU_BIN` is set, a tansu broker on memory storage is started on
//! a free port for the run (and stopped after); otherwise `WPTEST_KAFKA_BROKERS` is used;
//! with neither, the bench says so and does nothing.
//!
//! `cargo bench -p wattprint-ingest --bench kafka_publish` measures; the same target run by
//! `cargo test --benches` does a short smoke run. Knobs (env): `BENCH_AGENTS` (concurrent
//! streams, default 16), `BENCH_GPUS` (GPUs per host, 8), `BENCH_SAMPLES` (samples per GPU per
//! batch, 50), `BENCH_SECONDS` (measured time, 10).

#![allow(missing_docs)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wattprint_bus::kafka::create_topics;
use wattprint_bus::{KafkaBusConfig, KafkaProducer};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::UnixMillis as Ms;
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId};
use wattprint_ingest::{Gateway, GatewayLimits, InventoryIndex};
use wattprint_proto::v1::SampleBatch;
use wattprint_store::{GpuRecord, InstanceRecord};

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_tansu(bin: &str) -> Result<(Broker, String), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let broker = Broker(child);
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Ok((broker, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("tansu did not listen on {addr}").into())
}

fn inventory(hosts: usize, gpus: usize) -> Vec<InstanceRecord> {
    (0..hosts)
        .map(|h| InstanceRecord {
            tenant: TenantId::from("t"),
            instance: InstanceId::new(format!("i-{h}")),
            region: RegionId::from("R"),
            zip_code: None,
            gpus: (0..gpus)
                .map(|g| GpuRecord {
                    uuid: GpuUuid::new(format!("GPU-{h}-{g}")),
                    model: "H100".into(),
                    power_limit: Milliwatts(700_000),
                    host: HostId::new(format!("host-{h}")),
                })
                .collect(),
        })
        .collect()
}

/// Batch `n` of host `h`: every GPU's `per_gpu` next samples, 100 ms apart.
fn batch(h: usize, gpus: usize, per_gpu: usize, n: u64, base: i64) -> SampleBatch {
    let mut samples = Vec::with_capacity(gpus * per_gpu);
    for i in 0..per_gpu as u64 {
        let seq = n * per_gpu as u64 + i;
        // Wraps within the hour before `base`, so samples stay inside the accepted window.
        let start = base - 3_600_000 + (seq as i64 * 100) % 3_500_000;
        for g in 0..gpus {
            samples.push(wattprint_proto::sample_to_wire(&EnergySample {
                host: HostId::new(format!("host-{h}")),
                gpu: GpuUuid::new(format!("GPU-{h}-{g}")),
                instance: InstanceId::new(format!("i-{h}")),
                seq,
                start: Ms(start),
                end: Ms(start + 100),
                energy: Millijoules(30_000),
                power: Milliwatts(300_000),
                power_max: Milliwatts(310_000),
                util_gpu_pct: 90,
                mem_used_bytes: 40 << 30,
                temp_c: 60,
                sm_clock_mhz: 1980,
                chain_start: seq == 0,
                energy_source: EnergySource::Counter,
                attribution: Attribution::Exclusive,
            }));
        }
    }
    SampleBatch {
        host_id: format!("host-{h}"),
        batch_seq: n,
        samples,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (broker, brokers) = match (
        std::env::var("WPTEST_TANSU_BIN"),
        std::env::var("WPTEST_KAFKA_BROKERS"),
    ) {
        (Ok(bin), _) if !bin.is_empty() => {
            let (b, addr) = start_tansu(&bin)?;
            (Some(b), addr)
        }
        (_, Ok(brokers)) if !brokers.is_empty() => (None, brokers),
        _ => {
            println!("kafka_publish: NOT RUN (set WPTEST_TANSU_BIN or WPTEST_KAFKA_BROKERS)");
            return Ok(());
        }
    };
    let agents = env_usize("BENCH_AGENTS", 16);
    let gpus = env_usize("BENCH_GPUS", 8);
    let per_gpu = env_usize("BENCH_SAMPLES", 50);
    let seconds = if measuring {
        env_usize("BENCH_SECONDS", 10) as u64
    } else {
        1
    };
    let run = format!(
        "bench-{}-{}.",
        std::process::id(),
        wattprint_core::UnixMillis::now().0
    );
    let config = KafkaBusConfig::new(brokers.clone()).with_topic_prefix(&run);
    create_topics(&config, 8, 1).await?;
    let gateway = Gateway::new(
        Arc::new(KafkaProducer::new(&config)?),
        Arc::new(InventoryIndex::new(&inventory(agents, gpus))),
        GatewayLimits::default(),
    );
    let base = wattprint_core::UnixMillis::now().0;

    // Warm-up: connections, metadata, producer ids.
    for h in 0..agents {
        gateway
            .handle(batch(h, gpus, per_gpu, 0, base))
            .await
            .map_err(|s| format!("warm-up batch refused: {s}"))?;
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for h in 0..agents {
        let gateway = gateway.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut samples = 0u64;
            let mut n = 1;
            while Instant::now() < deadline {
                let b = batch(h, gpus, per_gpu, n, base);
                let t = Instant::now();
                let ack = gateway.handle(b).await?;
                latencies.push(t.elapsed());
                samples += u64::from(ack.accepted);
                if !ack.rejected.is_empty() {
                    return Err(tonic::Status::internal(format!(
                        "rejected: {:?}",
                        ack.rejected[0]
                    )));
                }
                n += 1;
            }
            Ok::<_, tonic::Status>((samples, latencies))
        }));
    }
    let mut samples = 0u64;
    let mut latencies = Vec::new();
    for t in tasks {
        let (s, l) = t.await??;
        samples += s;
        latencies.extend(l);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "kafka_publish: {agents} streams x {gpus} GPUs x {per_gpu} samples/GPU/batch ({} samples/batch), broker {brokers}{}",
        gpus * per_gpu,
        if broker.is_some() { " (tansu, memory storage)" } else { "" },
    );
    println!(
        "kafka_publish: {samples} samples in {elapsed:.2} s = {:.0} samples/s, {} batches, batch latency p50 {:?} p99 {:?}",
        samples as f64 / elapsed,
        latencies.len(),
        pct(0.5),
        pct(0.99),
    );
    if samples == 0 {
        return Err("no sample was published".into());
    }
    Ok(())
}
