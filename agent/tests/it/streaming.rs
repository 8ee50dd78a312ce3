//! The whole agent against an in-test gRPC gateway: exactly-once totals, resend after a
//! failed stream or a dead gateway, counter resets and gaps, backpressure, shutdown.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;

use common::{read_trace, write_trace, Behaviour, Gateway, Seen, TRACE};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sensor::GpuSensor;
use wattprint_agent::{run, AgentConfig, AgentError, AgentReport};
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, UnixMillis};
use wattprint_proto::v1::{EnergySource, Sample};

const SEED: u64 = 99;

fn replay(path: &Path, gpus: u32, pacing: Pacing, loops: Option<u32>) -> Box<dyn GpuSensor> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Box::new(
        ReplaySensor::new(ReplayConfig {
            trace_path: path.to_owned(),
            gpus,
            seed: SEED,
            start_at: UnixMillis(now.as_millis() as i64),
            pacing,
            loops,
            model: "NVIDIA H100 80GB HBM3".into(),
            power_limit: Milliwatts(700_000),
        })
        .unwrap(),
    )
}

/// Maps replayed GPU i to instance `i-{i}`.
fn resolver(gpus: u32) -> InstanceResolver {
    InstanceResolver::from_pairs(
        (0..gpus)
            .map(|i| (replay_gpu_uuid(SEED, i), InstanceId::new(format!("i-{i}"))))
            .collect(),
    )
}

fn agent_config(url: String) -> AgentConfig {
    let mut c = AgentConfig::new(HostId::from("host-test"), url);
    c.batch_max_wait = Duration::from_millis(100);
    c.reconnect_backoff_max = Duration::from_millis(400);
    c
}

async fn run_to_end(
    config: AgentConfig,
    sensor: Box<dyn GpuSensor>,
    resolver: InstanceResolver,
) -> AgentReport {
    tokio::time::timeout(
        Duration::from_secs(60),
        run(config, sensor, resolver, std::future::pending::<()>()),
    )
    .await
    .expect("agent finished in time")
    .expect("agent ran")
}

/// Per-GPU samples (deduplicated by seq), checked to be contiguous, and their energy total.
fn per_gpu(seen: &Seen) -> BTreeMap<String, (Vec<Sample>, u64)> {
    let mut out: BTreeMap<String, (Vec<Sample>, u64)> = BTreeMap::new();
    for ((gpu, _), s) in seen.dedup() {
        let e = out.entry(gpu).or_default();
        e.1 += s.energy_mj;
        e.0.push(s);
    }
    for (gpu, (samples, _)) in &out {
        // Ordered by seq (BTreeMap order): 1, 2, 3 … in the low bits; spans chain up.
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(
                wattprint_core::sample::seq_count(s.seq),
                i as u64 + 1,
                "{gpu}"
            );
            assert_eq!(
                wattprint_core::sample::seq_run(s.seq),
                wattprint_core::sample::seq_run(samples[0].seq),
                "{gpu}: one run epoch"
            );
        }
        for w in samples.windows(2) {
            assert_eq!(
                w[0].end_unix_ms, w[1].start_unix_ms,
                "{gpu}: contiguous spans"
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_arrives_exactly_once_with_the_counters_energy() {
    let rows = read_trace(Path::new(TRACE));
    let n = rows.len();
    let span = rows[n - 1].counter_mj - rows[0].counter_mj;
    let gw = Gateway::start(Behaviour::AckAll).await;
    let report = run_to_end(
        agent_config(gw.url()),
        replay(Path::new(TRACE), 2, Pacing::AsFastAsPossible, Some(1)),
        resolver(2),
    )
    .await;
    let seen = gw.seen.lock().unwrap();
    // No faults: nothing was sent twice.
    assert_eq!(seen.samples.len(), 2 * (n - 1));
    assert_eq!(seen.dedup().len(), 2 * (n - 1));
    let gpus = per_gpu(&seen);
    assert_eq!(gpus.len(), 2);
    for i in 0..2 {
        let (samples, total) = &gpus[replay_gpu_uuid(SEED, i).as_str()];
        assert_eq!(samples.len(), n - 1);
        assert_eq!(
            *total, span,
            "GPU {i}: energy equals the counter's increase"
        );
        assert!(samples.iter().all(|s| s.instance_id == format!("i-{i}")));
        assert!(samples[0].chain_start && samples[1..].iter().all(|s| !s.chain_start));
    }
    // GPU 0 starts at the first row: its per-phase energies match the trace's counter.
    let (g0, _) = &gpus[replay_gpu_uuid(SEED, 0).as_str()];
    let mut by_phase: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, s) in g0.iter().enumerate() {
        assert_eq!(s.energy_mj, rows[i + 1].counter_mj - rows[i].counter_mj);
        *by_phase.entry(rows[i + 1].phase.as_str()).or_default() += s.energy_mj;
    }
    let gemm: Vec<usize> = (1..n)
        .filter(|&r| rows[r].phase == "gemm_bf16_burn")
        .collect();
    let (first, last) = (gemm[0], gemm[gemm.len() - 1]);
    assert_eq!(
        by_phase["gemm_bf16_burn"],
        rows[last].counter_mj - rows[first - 1].counter_mj
    );
    assert!(seen.hosts.iter().all(|h| h == "host-test"));
    // Batches are numbered in order on the one stream.
    assert_eq!(seen.batches_per_stream.len(), 1);
    assert!(seen.batches_per_stream[0].windows(2).all(|w| w[0] < w[1]));
    drop(seen);
    let expected = 2 * (n as u64 - 1);
    assert_eq!(
        report,
        AgentReport {
            samples_sent: expected,
            samples_acked: expected,
            ..AgentReport::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_is_reopened_and_unacked_batches_are_resent_in_order() {
    let rows = read_trace(Path::new(TRACE));
    let n = rows.len();
    let span = rows[n - 1].counter_mj - rows[0].counter_mj;
    let gw = Gateway::start(Behaviour::FailFirstStream { receive: 5, ack: 2 }).await;
    let mut config = agent_config(gw.url());
    config.max_unacked_batches = 8;
    config.batch_max_samples = 100;
    let report = run_to_end(
        config,
        replay(Path::new(TRACE), 2, Pacing::AsFastAsPossible, Some(1)),
        resolver(2),
    )
    .await;
    let seen = gw.seen.lock().unwrap();
    assert!(seen.batches_per_stream.len() >= 2, "the agent reconnected");
    let first = &seen.batches_per_stream[0];
    let acked_first = &seen.acked_per_stream[0];
    assert_eq!(first.len(), 5);
    assert_eq!(acked_first.len(), 2);
    // The second stream starts with the first stream's unacked batches, in order.
    let unacked: Vec<u64> = first
        .iter()
        .copied()
        .filter(|b| !acked_first.contains(b))
        .collect();
    let second = &seen.batches_per_stream[1];
    assert_eq!(
        &second[..unacked.len()],
        &unacked[..],
        "resent first, in order"
    );
    for stream in seen.batches_per_stream.iter() {
        assert!(
            stream.windows(2).all(|w| w[0] < w[1]),
            "in order within a stream: {stream:?}"
        );
    }
    assert!(
        seen.samples.len() > 2 * (n - 1),
        "some samples arrived twice"
    );
    let gpus = per_gpu(&seen);
    for i in 0..2 {
        let (samples, total) = &gpus[replay_gpu_uuid(SEED, i).as_str()];
        assert_eq!(samples.len(), n - 1);
        assert_eq!(*total, span, "GPU {i}: exact after dedup by (gpu, seq)");
    }
    drop(seen);
    assert!(
        report.batches_resent >= unacked.len() as u64 && report.batches_resent > 0,
        "{report:?}"
    );
    let expected = 2 * (n as u64 - 1);
    assert_eq!(
        (report.samples_sent, report.samples_acked),
        (expected, expected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_gateway_restarted_on_the_same_port_gets_everything() {
    let dir = tempfile::tempdir().unwrap();
    // 2 000 rows at 100 ms, 150 W: 15 J a step.
    let rows: Vec<(f64, u32, u64)> = (0..2000)
        .map(|i| (i as f64 * 0.1, 150_000, 1_000_000 + 15_000 * i as u64))
        .collect();
    let path = write_trace(dir.path(), "flat.csv", &rows);
    let gw = Gateway::start(Behaviour::SlowAck(Duration::from_millis(5))).await;
    let (addr, seen) = (gw.addr, std::sync::Arc::clone(&gw.seen));
    let mut config = agent_config(gw.url());
    config.batch_max_samples = 50;
    config.max_unacked_batches = 4;
    let agent = tokio::spawn(run(
        config,
        replay(&path, 1, Pacing::AsFastAsPossible, Some(1)),
        resolver(1),
        std::future::pending::<()>(),
    ));
    // Let a few batches through, then kill the gateway while batches are in flight.
    let t0 = Instant::now();
    while seen.lock().unwrap().samples.len() < 300 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no traffic");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.kill().await;
    let at_kill = seen.lock().unwrap().samples.len();
    assert!(at_kill < 1999, "killed before the end");
    // Down for a while: reconnect attempts are refused and back off.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let gw = Gateway::start_on(addr, Behaviour::AckAll, std::sync::Arc::clone(&seen)).await;
    let report = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("agent finished")
        .unwrap()
        .unwrap();
    let seen = gw.seen.lock().unwrap();
    let gpus = per_gpu(&seen);
    let (samples, total) = &gpus[replay_gpu_uuid(SEED, 0).as_str()];
    assert_eq!(samples.len(), 1999);
    assert_eq!(*total, 1999 * 15_000);
    assert!(report.batches_resent > 0, "{report:?}");
    assert_eq!((report.samples_sent, report.samples_acked), (1999, 1999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_reset_emits_no_negative_energy_and_restarts_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    // Counter +100 per step, then the driver reloads at row 6 (counter back near zero).
    let mut rows: Vec<(f64, u32, u64)> = Vec::new();
    for i in 0..6 {
        rows.push((i as f64 * 0.1, 100_000, 9_000_000 + 100 * i as u64));
    }
    for i in 6..12 {
        rows.push((i as f64 * 0.1, 100_000, 40 + 100 * (i as u64 - 6)));
    }
    let path = write_trace(dir.path(), "reset.csv", &rows);
    let gw = Gateway::start(Behaviour::AckAll).await;
    let report = run_to_end(
        agent_config(gw.url()),
        replay(&path, 1, Pacing::AsFastAsPossible, Some(1)),
        resolver(1),
    )
    .await;
    assert_eq!(report.counter_resets, 1);
    assert_eq!(report.gaps, 0);
    let seen = gw.seen.lock().unwrap();
    let mut samples: Vec<Sample> = seen.dedup().into_values().collect();
    samples.sort_by_key(|s| s.start_unix_ms);
    // 11 steps, the reset step emits nothing: 10 samples of exactly 100 mJ each.
    assert_eq!(samples.len(), 10);
    assert!(samples.iter().all(|s| s.energy_mj == 100), "{samples:?}");
    let after = &samples[5];
    assert!(
        after.chain_start,
        "the first span after the reset starts a chain"
    );
    assert_eq!(
        after.start_unix_ms,
        samples[4].end_unix_ms + 100,
        "the reset step is a hole"
    );
    assert_eq!(samples.iter().filter(|s| s.chain_start).count(), 2);
    assert_eq!(report.samples_acked, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_gap_between_readings_is_bridged_with_the_counter_delta() {
    let dir = tempfile::tempdir().unwrap();
    // 100 ms steps, then a 6 s hole (> the 5 s minimum max gap).
    let rows = [
        (0.0, 1, 0),
        (0.1, 1, 10),
        (0.2, 1, 20),
        (6.2, 1, 620),
        (6.3, 1, 630),
    ];
    let path = write_trace(dir.path(), "gap.csv", &rows);
    let gw = Gateway::start(Behaviour::AckAll).await;
    let mut config = agent_config(gw.url());
    config.energy_interval = Duration::from_millis(100);
    let report = run_to_end(
        config,
        replay(&path, 1, Pacing::AsFastAsPossible, Some(1)),
        resolver(1),
    )
    .await;
    assert_eq!(
        (report.gaps, report.gaps_bridged, report.counter_resets),
        (0, 1, 0)
    );
    assert_eq!(report.energy_bridged_mj, 600);
    let samples: Vec<_> = gw.seen.lock().unwrap().dedup().into_values().collect();
    let total: u64 = samples.iter().map(|s| s.energy_mj).sum();
    assert_eq!(total, 630, "the 600 mJ across the gap are kept");
    let bridged: Vec<_> = samples
        .iter()
        .filter(|s| s.energy_source == EnergySource::CounterBridged as i32)
        .collect();
    assert_eq!(bridged.len(), 1);
    assert_eq!(
        (
            bridged[0].energy_mj,
            bridged[0].end_unix_ms - bridged[0].start_unix_ms
        ),
        (600, 6_000)
    );
    for w in samples.windows(2) {
        assert_eq!(
            w[1].start_unix_ms, w[0].end_unix_ms,
            "contiguous, no overlap"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_unacked_queue_holds_sampling_back() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..201)
        .map(|i| (i as f64 * 0.05, 100_000, 5 * i as u64))
        .collect();
    let path = write_trace(dir.path(), "small.csv", &rows);
    let gw = Gateway::start(Behaviour::SlowAck(Duration::from_millis(20))).await;
    let mut config = agent_config(gw.url());
    config.batch_max_samples = 10;
    config.max_unacked_batches = 2;
    let report = run_to_end(
        config,
        replay(&path, 1, Pacing::AsFastAsPossible, Some(1)),
        resolver(1),
    )
    .await;
    let seen = gw.seen.lock().unwrap();
    assert_eq!(seen.samples.len(), 200, "nothing dropped, nothing resent");
    // The gateway saw at most 2 unacked batches at a time, and the limit was reached.
    assert_eq!(seen.max_outstanding, 2);
    assert_eq!(report.samples_acked, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..31)
        .map(|i| (i as f64 * 0.05, 100_000, 5 * i as u64))
        .collect();
    let path = write_trace(dir.path(), "small.csv", &rows);
    let gw = Gateway::start(Behaviour::RejectEvery(3)).await;
    let report = run_to_end(
        agent_config(gw.url()),
        replay(&path, 1, Pacing::AsFastAsPossible, Some(1)),
        resolver(1),
    )
    .await;
    assert_eq!(
        (
            report.samples_sent,
            report.samples_acked,
            report.samples_rejected
        ),
        (30, 20, 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_sampling_flushes_the_partial_batch_and_returns() {
    let gw = Gateway::start(Behaviour::AckAll).await;
    let mut config = agent_config(gw.url());
    config.energy_interval = Duration::from_millis(100);
    config.batch_max_wait = Duration::from_secs(30); // only the shutdown flush sends it
    let began = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        run(
            config,
            replay(Path::new(TRACE), 2, Pacing::RealTime, None),
            resolver(2),
            tokio::time::sleep(Duration::from_millis(1200)),
        ),
    )
    .await
    .expect("shutdown is prompt")
    .unwrap();
    assert!(began.elapsed() < Duration::from_secs(8));
    // ~11 readings per GPU in 1.2 s: ~10 samples each, all in one flushed batch.
    assert!(
        report.samples_sent >= 12 && report.samples_sent <= 30,
        "{report:?}"
    );
    assert_eq!(report.samples_acked, report.samples_sent);
    let seen = gw.seen.lock().unwrap();
    assert_eq!(seen.samples.len() as u64, report.samples_sent);
    assert_eq!(
        seen.batches_per_stream[0].len(),
        1,
        "one partial batch, flushed at shutdown"
    );
    let gpus = per_gpu(&seen);
    assert_eq!(gpus.len(), 2);
    // Real-time replay: spans end near the wall clock, ~100 ms apart.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (samples, _) in gpus.values() {
        for s in samples {
            assert!(s.end_unix_ms <= now_ms && s.end_unix_ms > now_ms - 10_000);
            let d = s.end_unix_ms - s.start_unix_ms;
            assert!((50..=400).contains(&d), "span {d} ms");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_the_gateway_down_gives_up_after_a_few_seconds() {
    // Nothing listens on this port: bind, learn it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = agent_config(format!("http://127.0.0.1:{port}"));
    let began = Instant::now();
    let report = run(
        config,
        replay(Path::new(TRACE), 1, Pacing::AsFastAsPossible, Some(1)),
        resolver(1),
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(12),
        "{took:?}"
    );
    assert_eq!((report.samples_sent, report.samples_acked), (0, 0));
}

#[tokio::test]
async fn configuration_errors_are_reported_before_anything_runs() {
    let sensor = || replay(Path::new(TRACE), 2, Pacing::AsFastAsPossible, Some(1));
    let err = run(
        agent_config("http://127.0.0.1:1".into()),
        sensor(),
        InstanceResolver::empty(),
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AgentError::NoMappedGpus { gpus: 2 }), "{err}");
    assert!(err.to_string().contains("none of the 2 GPU(s) is mapped"));
    let err = run(
        agent_config("not a url".into()),
        sensor(),
        resolver(2),
        async {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AgentError::InvalidGatewayUrl { .. }), "{err}");
    let mut c = agent_config("http://127.0.0.1:1".into());
    c.batch_max_samples = 0;
    assert!(matches!(
        run(c, sensor(), resolver(2), async {}).await,
        Err(AgentError::InvalidConfig(_))
    ));
    // Only mapped GPUs are sampled.
    let gw = Gateway::start(Behaviour::AckAll).await;
    let only_second =
        InstanceResolver::from_pairs(vec![(replay_gpu_uuid(SEED, 1), InstanceId::from("i-1"))]);
    let report = run_to_end(agent_config(gw.url()), sensor(), only_second).await;
    let seen = gw.seen.lock().unwrap();
    assert!(seen
        .samples
        .iter()
        .all(|s| GpuUuid::new(s.gpu_uuid.clone()) == replay_gpu_uuid(SEED, 1)));
    assert_eq!(report.samples_acked, seen.samples.len() as u64);
}
