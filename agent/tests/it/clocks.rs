//! The agent's clocks against the real gateway: outages, restarts and wall-clock steps lose
//! no energy the counter measured, and samples refused for their time are retried.
//!
//! Every test replays the real H100 trace and checks the delivered energy against the
//! trace's own counter, read without the agent: the sum of the delivered spans equals the
//! counter's increase between the first span's start and the last span's end, to the mJ, and
//! the spans are contiguous (no gap, no overlap).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common::{read_trace, TraceRow, TRACE};
use crate::gateway_tls::{GatewayOptions, RealGateway, Security};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use wattprint_agent::replay::{replay_gpu_uuid, ClockStep, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::{run, AgentConfig, AgentReport};
use wattprint_core::sample::{EnergySample, EnergySource};
use wattprint_core::{HostId, InstanceId, UnixMillis};

const HOST: &str = "host-clocks";

/// The replay's counter at every position it can reach in `loops` loops, by virtual ms since
/// its start: the trace's deltas summed (GPU 0 starts at row 0).
fn counter_by_time(rows: &[TraceRow], loops: usize) -> HashMap<i64, u64> {
    let mut out = HashMap::from([(0, 0)]);
    let period = rows[rows.len() - 1].t_ms - rows[0].t_ms;
    let mut total = 0u64;
    for lap in 0..loops {
        for r in 1..rows.len() {
            total += rows[r].counter_mj - rows[r - 1].counter_mj;
            out.insert(rows[r].t_ms - rows[0].t_ms + lap as i64 * period, total);
        }
    }
    out
}

fn sensor(seed: u64, start_at: UnixMillis, pacing: Pacing, loops: Option<u32>) -> ReplaySensor {
    ReplaySensor::new(ReplayConfig {
        seed,
        start_at,
        pacing,
        loops,
        ..ReplayConfig::new(TRACE)
    })
    .unwrap()
}

fn resolver(seed: u64) -> InstanceResolver {
    InstanceResolver::from_pairs(vec![(replay_gpu_uuid(seed, 0), InstanceId::from("i-0"))])
}

fn minutes_ago(m: i64) -> UnixMillis {
    UnixMillis(UnixMillis::now().0 - m * 60_000)
}

/// What the gateway delivered for GPU 0 of `seed`, by seq; checks that the gateway refused
/// none for good and that the spans are contiguous in seq order. Returns the samples.
fn delivered(gw: &RealGateway, seed: u64) -> Vec<EnergySample> {
    let d = gw.delivered.lock().unwrap();
    let samples = d.dedup(&replay_gpu_uuid(seed, 0));
    for w in samples.windows(2) {
        assert_eq!(
            w[1].start,
            w[0].end,
            "spans must be contiguous: {:?} then {:?}",
            (w[0].seq, w[0].start, w[0].end),
            (w[1].seq, w[1].start, w[1].end)
        );
    }
    samples
}

fn total(samples: &[EnergySample]) -> u64 {
    samples.iter().map(|s| s.energy.0).sum()
}

fn bridged(samples: &[EnergySample]) -> Vec<&EnergySample> {
    samples
        .iter()
        .filter(|s| s.energy_source == EnergySource::CounterBridged)
        .collect()
}

/// The counter's increase over the delivered spans, from the trace: virtual time `t` of the
/// replay started at `start_at` is position time `t − start_at`.
fn counter_delta(
    counter: &HashMap<i64, u64>,
    start_at: UnixMillis,
    samples: &[EnergySample],
) -> u64 {
    let at = |t: UnixMillis| {
        *counter
            .get(&t.since(start_at))
            .unwrap_or_else(|| panic!("{t} is not a trace position"))
    };
    at(samples[samples.len() - 1].end) - at(samples[0].start)
}

/// An agent reading an accelerated replay (100×: 20 minutes of sensor time in 12 s) while
/// the gateway is unreachable for 12 s, then reachable; stopped 4 s later.
async fn outage(seed: u64, spool: Option<&Path>) -> (Vec<EnergySample>, AgentReport, u64) {
    let rows = read_trace(Path::new(TRACE));
    let counter = counter_by_time(&rows, 12);
    // Virtual time runs 100× faster: start it an hour back so it never reaches the future.
    let start_at = minutes_ago(60);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = AgentConfig::new(HostId::from(HOST), format!("http://{addr}"));
    config.energy_interval = Duration::from_millis(50);
    config.gauge_interval = None;
    config.batch_max_samples = 4;
    config.batch_max_wait = Duration::from_millis(50);
    config.max_unacked_batches = 2;
    config.reconnect_backoff_max = Duration::from_millis(200);
    config.spool_dir = spool.map(Path::to_owned);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(run(
        config,
        Box::new(sensor(seed, start_at, Pacing::Accelerated(100), None)),
        resolver(seed),
        async {
            let _ = stop_rx.await;
        },
    ));
    tokio::time::sleep(Duration::from_secs(12)).await;
    let gw = RealGateway::start_with(
        &[(seed, HOST)],
        Security::PLAINTEXT,
        usize::MAX,
        GatewayOptions {
            addr: Some(addr),
            clock: None,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = stop_tx.send(());
    let report = agent.await.unwrap().unwrap();
    let samples = delivered(&gw, seed);
    assert!(gw.delivered.lock().unwrap().dead_letters.is_empty());
    let expected = counter_delta(&counter, start_at, &samples);
    gw.stop().await;
    (samples, report, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_minute_outage_without_a_spool_is_bridged_by_the_counter() {
    let (samples, report, expected) = outage(9101, None).await;
    let bridged = bridged(&samples);
    let bridged_ms: i64 = bridged.iter().map(|s| s.duration_ms()).sum();
    let covered = samples[samples.len() - 1].end.since(samples[0].start);
    eprintln!(
        "{} samples over {covered} ms, {} bridged over {bridged_ms} ms ({} mJ of {expected} mJ)",
        samples.len(),
        bridged.len(),
        total(&bridged.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
    );
    assert_eq!(total(&samples), expected, "every mJ the counter measured");
    assert!(covered >= 20 * 60_000, "covered only {covered} ms");
    // The sampler was blocked for most of the outage: bridged, in ≤ 5-minute pieces.
    assert!(report.gaps_bridged >= 1, "{report:?}");
    assert!(bridged_ms >= 15 * 60_000, "bridged only {bridged_ms} ms");
    assert!(bridged.iter().all(|s| s.duration_ms() <= 5 * 60_000));
    assert_eq!(
        bridged.iter().map(|s| s.energy.0).sum::<u64>(),
        report.energy_bridged_mj
    );
    assert_eq!((report.samples_rejected, report.gaps), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_minute_outage_with_a_spool_keeps_every_sample() {
    let spool = tempfile::tempdir().unwrap();
    let (samples, report, expected) = outage(9102, Some(spool.path())).await;
    let covered = samples[samples.len() - 1].end.since(samples[0].start);
    eprintln!("{} samples over {covered} ms: {report:?}", samples.len());
    assert_eq!(total(&samples), expected, "every mJ the counter measured");
    assert!(covered >= 20 * 60_000, "covered only {covered} ms");
    // Sampling never waited: nothing needed bridging.
    assert!(bridged(&samples).is_empty());
    assert_eq!((report.gaps_bridged, report.samples_dropped), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_bridges_its_downtime_with_the_counter() {
    const SEED: u64 = 9103;
    let rows = read_trace(Path::new(TRACE));
    let counter = counter_by_time(&rows, 2);
    let spool = tempfile::tempdir().unwrap();
    let start_at = minutes_ago(60);
    let gw = RealGateway::start(&[(SEED, HOST)], Security::PLAINTEXT, usize::MAX).await;
    let mut config = AgentConfig::new(HostId::from(HOST), gw.url(false));
    config.spool_dir = Some(spool.path().to_owned());
    // Run 1 reads positions 0..=1000, then stops.
    let mut first = sensor(SEED, start_at, Pacing::AsFastAsPossible, Some(2));
    first.stop_after(0, 1000);
    let r1 = run(
        config.clone(),
        Box::new(first),
        resolver(SEED),
        std::future::pending(),
    )
    .await
    .unwrap();
    // The agent is down while the GPU runs 6,500 positions (over 5 minutes of trace).
    let mut second = sensor(SEED, start_at, Pacing::AsFastAsPossible, Some(2));
    second.skip(0, 7_500).unwrap();
    let r2 = run(
        config,
        Box::new(second),
        resolver(SEED),
        std::future::pending(),
    )
    .await
    .unwrap();
    let samples = delivered(&gw, SEED);
    let expected = counter_delta(&counter, start_at, &samples);
    let bridged = bridged(&samples);
    eprintln!("run 1: {r1:?}\nrun 2: {r2:?}\nbridge: {bridged:?}");
    assert_eq!(samples[0].start, start_at);
    assert_eq!(total(&samples), expected, "every mJ the counter measured");
    assert_eq!(
        expected,
        2 * (rows[rows.len() - 1].counter_mj - rows[0].counter_mj),
        "two whole loops of the trace"
    );
    // The bridge starts where run 1 ended, spans the downtime and is flagged.
    assert_eq!(r2.gaps_bridged, 1);
    assert!(
        bridged.len() >= 2,
        "over 5 minutes: pieces {}",
        bridged.len()
    );
    assert!(bridged[0].chain_start);
    assert_eq!(
        bridged[0].start.since(start_at),
        rows[1000].t_ms - rows[0].t_ms
    );
    assert_eq!(
        bridged.iter().map(|s| s.energy.0).sum::<u64>(),
        r2.energy_bridged_mj
    );
    // Run 2's sequence numbers continue above run 1's.
    assert!(samples.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(r1.samples_acked + r2.samples_acked, samples.len() as u64);
    gw.stop().await;
}

/// Replays the trace twice with the host's wall clock stepped by `step_ms` after a minute;
/// returns the delivered samples and the report.
async fn stepped(seed: u64, step_ms: i64) -> (Vec<EnergySample>, AgentReport, Vec<TraceRow>) {
    let rows = read_trace(Path::new(TRACE));
    let gw = RealGateway::start(&[(seed, HOST)], Security::PLAINTEXT, usize::MAX).await;
    let config = AgentConfig::new(HostId::from(HOST), gw.url(false));
    let s =
        sensor(seed, minutes_ago(60), Pacing::AsFastAsPossible, Some(2)).with_clock_steps(vec![
            ClockStep {
                after_ms: 60_000,
                step_ms,
            },
        ]);
    let report = run(config, Box::new(s), resolver(seed), std::future::pending())
        .await
        .unwrap();
    // The real gateway checked every span (absurd energy, time) and refused none.
    assert!(gw.delivered.lock().unwrap().dead_letters.is_empty());
    let samples = gw
        .delivered
        .lock()
        .unwrap()
        .dedup(&replay_gpu_uuid(seed, 0));
    gw.stop().await;
    (samples, report, rows)
}

fn no_overlap(samples: &[EnergySample]) {
    for w in samples.windows(2) {
        assert!(
            w[1].start >= w[0].end,
            "overlap: {:?}",
            (w[0].end, w[1].start)
        );
        assert!(w[1].end > w[1].start);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_second_wall_clock_step_back_loses_and_doubles_nothing() {
    let (samples, report, rows) = stepped(9104, -20_000).await;
    no_overlap(&samples);
    assert_eq!(
        total(&samples),
        2 * (rows[rows.len() - 1].counter_mj - rows[0].counter_mj),
        "the trace's energy to the mJ"
    );
    assert_eq!((report.clock_steps, report.samples_rejected), (1, 0));
    // A new chain starts at the step; spans stay contiguous (slewed back to the wall clock).
    assert_eq!(samples.iter().filter(|s| s.chain_start).count(), 2);
    for w in samples.windows(2) {
        assert_eq!(w[1].start, w[0].end);
    }
    let first = samples[0].start;
    let last = samples[samples.len() - 1].end;
    assert_eq!(
        last.since(first),
        2 * (rows[rows.len() - 1].t_ms - rows[0].t_ms) - 20_000,
        "back on the wall clock by the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_second_wall_clock_step_forward_loses_and_doubles_nothing() {
    let (samples, report, rows) = stepped(9105, 20_000).await;
    no_overlap(&samples);
    assert_eq!(
        total(&samples),
        2 * (rows[rows.len() - 1].counter_mj - rows[0].counter_mj),
        "the trace's energy to the mJ"
    );
    assert_eq!((report.clock_steps, report.samples_rejected), (1, 0));
    let starts: Vec<_> = samples.iter().filter(|s| s.chain_start).collect();
    assert_eq!(starts.len(), 2);
    // The one hole is the 20 s the wall clock skipped; the span across it keeps its length.
    let holes: Vec<i64> = samples
        .windows(2)
        .map(|w| w[1].start.since(w[0].end))
        .filter(|&h| h != 0)
        .collect();
    assert_eq!(holes.len(), 1);
    assert!((19_000..=20_000).contains(&holes[0]), "hole {holes:?}");
    assert!(starts[1].duration_ms() <= 100);
}

/// The gateway's clock for the retry test: the system clock plus this offset.
static GATEWAY_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

fn offset_clock() -> UnixMillis {
    UnixMillis(UnixMillis::now().0 + GATEWAY_OFFSET_MS.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_refused_for_their_time_are_retried_until_accepted_once() {
    const SEED: u64 = 9106;
    let rows = read_trace(Path::new(TRACE));
    let counter = counter_by_time(&rows, 1);
    // The gateway's clock is 10 minutes slow: samples of now are 10 minutes in its future.
    GATEWAY_OFFSET_MS.store(-10 * 60_000, Ordering::SeqCst);
    let gw = RealGateway::start_with(
        &[(SEED, HOST)],
        Security::PLAINTEXT,
        usize::MAX,
        GatewayOptions {
            addr: None,
            clock: Some(offset_clock),
        },
    )
    .await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(HostId::from(HOST), gw.url(false));
    config.spool_dir = Some(spool.path().to_owned());
    config.batch_max_samples = 50;
    config.time_refusal_retry = Duration::from_millis(300);
    let start_at = minutes_ago(1);
    let mut s = sensor(SEED, start_at, Pacing::AsFastAsPossible, Some(1));
    s.stop_after(0, 400);
    let agent = tokio::spawn(run(
        config,
        Box::new(s),
        resolver(SEED),
        std::future::pending(),
    ));
    // Let a few retries be refused, then fix the gateway's clock.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let refused_meanwhile = gw.delivered.lock().unwrap().dead_letters.len();
    assert!(gw.delivered.lock().unwrap().samples.is_empty());
    GATEWAY_OFFSET_MS.store(0, Ordering::SeqCst);
    let report = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("the agent delivers everything once the gateway accepts")
        .unwrap()
        .unwrap();
    let samples = delivered(&gw, SEED);
    let d = std::mem::take(&mut *gw.delivered.lock().unwrap());
    let copies = d
        .samples
        .iter()
        .filter(|s| s.gpu == replay_gpu_uuid(SEED, 0))
        .count();
    eprintln!(
        "{refused_meanwhile} refusals before the fix, {} in all; {report:?}",
        d.dead_letters.len()
    );
    assert!(refused_meanwhile >= 400, "{refused_meanwhile}");
    assert!(d
        .dead_letters
        .iter()
        .all(|l| l.reason.contains("after the gateway's clock")));
    assert_eq!(samples.len(), 400, "every sample delivered");
    assert_eq!(copies, 400, "each accepted exactly once");
    assert_eq!(
        total(&samples),
        counter_delta(&counter, start_at, &samples),
        "every mJ the counter measured"
    );
    assert_eq!((report.samples_sent, report.samples_rejected), (400, 0));
    assert!(report.samples_time_refused >= 400);
    assert!(report.time_retry_batches >= 8);
    gw.stop().await;
}
