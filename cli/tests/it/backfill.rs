//! `wattprint up`'s demo history: a one-day backfill gives the API a day whose energy is the
//! trace counter's delta to the millijoule, and restarts (after it finished, or after it was
//! cut short) leave every total unchanged.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::up::{get, interrupt_and_wait, start_args, Up};
use std::time::Duration;
use wattprint_agent::replay::{Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::sensor::GpuSensor;
use wattprint_core::UnixMillis;

const DAY_MS: i64 = 86_400_000;

fn trace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/h100-trace/h100_power_trace_50ms.csv")
}

/// The trace's length in ms (first to last row), as the replay rounds its times.
fn trace_period_ms() -> i64 {
    let text = std::fs::read_to_string(trace()).unwrap();
    let times: Vec<i64> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let s: f64 = l.split(',').next().unwrap().parse().unwrap();
            (s * 1000.0).round() as i64
        })
        .collect();
    times[times.len() - 1] - times[0]
}

/// Independently of the backfill: GPU `gpu` replayed from far enough back that it reaches
/// its live start position at `to`, read position by position; the counter at `to` minus the
/// counter at the first reading at or after `from`.
fn trace_delta(gpu: usize, gpus: u32, from: i64, to: i64) -> u64 {
    let period = trace_period_ms();
    let laps = (to - from) / period + 2;
    let mut sensor = ReplaySensor::new(ReplayConfig {
        trace_path: trace(),
        gpus,
        seed: 42,
        start_at: UnixMillis(to - laps * period),
        pacing: Pacing::AsFastAsPossible,
        loops: None,
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: wattprint_core::Milliwatts(700_000),
    })
    .unwrap();
    let mut first = None;
    loop {
        let r = sensor.read(gpu).unwrap().unwrap();
        let counter = r.energy_counter.unwrap().0;
        if r.at.0 >= from && first.is_none() {
            first = Some(counter);
        }
        if r.at.0 >= to {
            assert_eq!(
                r.at.0, to,
                "GPU {gpu} is not at a reading at its live start"
            );
            return counter - first.unwrap();
        }
    }
}

/// IT energy of every tenant over `[from, to)`, from the API's summaries.
async fn total_energy(up: &Up, from: i64, to: i64) -> u64 {
    let mut total = 0;
    for (_, token) in &up.tokens {
        let (status, body) =
            get(&format!("{}/v1/summary?from={from}&to={to}", up.api), token).await;
        assert_eq!(status, 200, "{body}");
        total += body["totals"]["it_energy_mj"].as_u64().unwrap();
    }
    total
}

#[tokio::test]
async fn a_one_day_backfill_is_the_traces_energy_and_a_restart_stores_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let now = UnixMillis::now().0;
    // The live start on a 5-minute edge, so the summary's buckets split history from live.
    let live = now.div_euclid(300_000) * 300_000;
    let from = live - DAY_MS;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("up.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\n[agent.replay]\ngpus = 2\ninstances = 2\nstart_at_ms = {live}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let args = ["--backfill-days", "1"];

    let up = start_args(&data, Some(&config), &args);
    up.wait_for_line("backfill done", Duration::from_secs(120));
    let first = total_energy(&up, from, live).await;
    let expected = trace_delta(0, 2, from, live) + trace_delta(1, 2, from, live);
    assert!(expected > 0);
    assert_eq!(
        first, expected,
        "the day's energy is not the trace counter's delta"
    );
    // Nothing after the live start came from the history: the live replay is there too.
    interrupt_and_wait(up);

    // A restart after it finished sends nothing again.
    let up = start_args(&data, Some(&config), &args);
    up.wait_for_line(
        "  history     no backfill: already stored",
        Duration::from_secs(5),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(total_energy(&up, from, live).await, first);
    interrupt_and_wait(up);

    // A restart after a backfill cut short sends the same window again under the same keys:
    // the store keeps one copy.
    let record = data.join("demo-backfill");
    let text = std::fs::read_to_string(&record).unwrap();
    assert!(text.contains("state done"), "{text}");
    std::fs::write(&record, text.replace("state done", "state started")).unwrap();
    let up = start_args(&data, Some(&config), &args);
    up.wait_for_line(
        "  history     resuming: backfilling 1 day ",
        Duration::from_secs(5),
    );
    let done = up.wait_for_line("backfill done", Duration::from_secs(120));
    assert!(done.contains("(0 refused)"), "{done}");
    assert_eq!(total_energy(&up, from, live).await, first);
    interrupt_and_wait(up);
    assert!(std::fs::read_to_string(&record)
        .unwrap()
        .contains("state done"));
}
