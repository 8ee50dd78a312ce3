//! The replay sensor against the real H100 trace, read independently: energy exact to the
//! millijoule, determinism, real-time pacing and clear errors for bad traces.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;

use common::{read_trace, write_trace, TRACE};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::sampler::{GpuSampler, SampleEvent};
use wattprint_agent::sensor::{GpuSensor, Reading, SensorError};
use wattprint_core::sample::{EnergySample, EnergySource};
use wattprint_core::{HostId, InstanceId, Millijoules, UnixMillis};

const START: UnixMillis = UnixMillis(1_800_000_000_000);

fn config(path: &Path, gpus: u32, seed: u64, loops: Option<u32>) -> ReplayConfig {
    ReplayConfig {
        trace_path: path.to_owned(),
        gpus,
        seed,
        start_at: START,
        pacing: Pacing::AsFastAsPossible,
        loops,
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: wattprint_core::Milliwatts(700_000),
    }
}

/// Every reading of one GPU until the sensor is exhausted (bounded, in case it never is).
fn all_readings(sensor: &mut ReplaySensor, gpu: usize) -> Vec<Reading> {
    let mut out = Vec::new();
    while let Some(r) = sensor.read(gpu).unwrap() {
        out.push(r);
        assert!(out.len() < 1_000_000, "replay never ends");
    }
    out
}

/// Samples of one GPU built by the agent's own sampler.
fn samples(sensor: &mut ReplaySensor, gpu: usize) -> Vec<EnergySample> {
    let info = sensor.gpus()[gpu].clone();
    let mut sampler = GpuSampler::new(HostId::from("h"), &info, InstanceId::from("i"), 1, 5_000);
    let mut out = Vec::new();
    for r in all_readings(sensor, gpu) {
        match sampler.observe(&r) {
            SampleEvent::Sample(s) => out.push(s),
            SampleEvent::Started => assert!(out.is_empty()),
            other => panic!("unexpected {other:?} in the real trace"),
        }
    }
    out
}

#[test]
fn one_loop_replays_the_counter_exactly_overall_and_per_phase() {
    let rows = read_trace(Path::new(TRACE));
    let n = rows.len();
    let mut sensor = ReplaySensor::new(config(Path::new(TRACE), 1, 42, Some(1))).unwrap();
    assert_eq!(sensor.trace_rows(), n);
    let s = samples(&mut sensor, 0);
    assert_eq!(s.len(), n - 1, "one sample per step between rows");
    let total: Millijoules = s.iter().map(|s| s.energy).sum();
    assert_eq!(total.0, rows[n - 1].counter_mj - rows[0].counter_mj);
    assert!(total.0 > 70_000_000, "the trace holds ~74 kJ");

    // Samples are contiguous spans at the trace's own times.
    for (i, x) in s.iter().enumerate() {
        assert_eq!(x.start, UnixMillis(START.0 + rows[i].t_ms - rows[0].t_ms));
        assert_eq!(x.end, UnixMillis(START.0 + rows[i + 1].t_ms - rows[0].t_ms));
        assert_eq!(x.energy.0, rows[i + 1].counter_mj - rows[i].counter_mj);
        assert_eq!(x.power.0, rows[i + 1].power_mw);
        assert_eq!(x.chain_start, i == 0);
        assert_eq!(x.energy_source, EnergySource::Counter);
        assert_eq!(x.seq, (1 << 29) + (i as u64 + 1));
    }

    // Per phase: the sample ending at row r belongs to row r's phase; the expected energy is
    // the counter difference between the phase's last row and the previous phase's last row.
    let mut by_phase: BTreeMap<String, u64> = BTreeMap::new();
    for (i, x) in s.iter().enumerate() {
        *by_phase.entry(rows[i + 1].phase.clone()).or_default() += x.energy.0;
    }
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut boundary = 0usize;
    for r in 1..n {
        if r == n - 1 || rows[r + 1].phase != rows[r].phase {
            *expected.entry(rows[r].phase.clone()).or_default() +=
                rows[r].counter_mj - rows[boundary].counter_mj;
            boundary = r;
        }
    }
    assert!(expected.len() >= 7, "phases: {:?}", expected.keys());
    assert_eq!(by_phase, expected);
    // The GEMM burn draws far more than idle: the phases are really told apart.
    assert!(expected["gemm_bf16_burn"] > 3 * expected["idle"]);
}

#[test]
fn two_loops_replay_twice_the_energy_with_no_invented_energy_or_time_at_the_wrap() {
    let rows = read_trace(Path::new(TRACE));
    let n = rows.len();
    let span = rows[n - 1].counter_mj - rows[0].counter_mj;
    let period = rows[n - 1].t_ms - rows[0].t_ms;
    let mut sensor = ReplaySensor::new(config(Path::new(TRACE), 3, 7, Some(2))).unwrap();
    for gpu in 0..3 {
        let s = samples(&mut sensor, gpu);
        assert_eq!(s.len(), 2 * (n - 1), "gpu {gpu}");
        let total: u64 = s.iter().map(|s| s.energy.0).sum();
        assert_eq!(
            total,
            2 * span,
            "gpu {gpu} (start row {:?})",
            sensor.start_row(gpu)
        );
        // Contiguous virtual time covering exactly two trace periods.
        for w in s.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert!(w[1].end > w[1].start);
        }
        assert_eq!(s[0].start, START);
        assert_eq!(s.last().unwrap().end, UnixMillis(START.0 + 2 * period));
    }
    // The wrap of GPU 0: the sample after loop 0's last row is row 0 → row 1 again.
    let mut sensor = ReplaySensor::new(config(Path::new(TRACE), 1, 7, Some(2))).unwrap();
    let s = samples(&mut sensor, 0);
    assert_eq!(s[n - 1].energy.0, rows[1].counter_mj - rows[0].counter_mj);
    assert_eq!(
        s[n - 1].end.since(s[n - 1].start),
        rows[1].t_ms - rows[0].t_ms
    );
}

#[test]
fn the_same_seed_gives_the_same_gpus_offsets_and_samples_and_another_seed_does_not() {
    let path = Path::new(TRACE);
    let mut a = ReplaySensor::new(config(path, 4, 11, Some(1))).unwrap();
    let mut b = ReplaySensor::new(config(path, 4, 11, Some(1))).unwrap();
    let mut c = ReplaySensor::new(config(path, 4, 12, Some(1))).unwrap();
    assert_eq!(a.gpus(), b.gpus());
    assert_ne!(a.gpus()[0].uuid, c.gpus()[0].uuid);
    let offsets = |s: &ReplaySensor| (0..4).map(|i| s.start_row(i).unwrap()).collect::<Vec<_>>();
    assert_eq!(offsets(&a), offsets(&b));
    assert_ne!(offsets(&a), offsets(&c));
    assert_eq!(offsets(&a)[0], 0, "GPU 0 starts at the first row");
    assert!(offsets(&a)[1..].iter().any(|&o| o > 0));
    for gpu in 0..4 {
        let sa = samples(&mut a, gpu);
        assert_eq!(sa, samples(&mut b, gpu), "gpu {gpu}");
        let sc = samples(&mut c, gpu);
        if gpu > 0 {
            assert_ne!(
                sa.iter().map(|s| s.energy).collect::<Vec<_>>(),
                sc.iter().map(|s| s.energy).collect::<Vec<_>>()
            );
        }
    }
    // GPUs of one host are distinct, and the uuids look like NVML's.
    let uuids: std::collections::BTreeSet<_> = a.gpus().iter().map(|g| g.uuid.clone()).collect();
    assert_eq!(uuids.len(), 4);
    for (i, g) in a.gpus().iter().enumerate() {
        assert_eq!(g.uuid, replay_gpu_uuid(11, i as u32));
        let u = g.uuid.as_str();
        let groups: Vec<&str> = u.strip_prefix("GPU-").unwrap().split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12],
            "{u}"
        );
        assert!(groups.iter().all(|g| g
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
        assert_eq!(g.pci_bus_id, format!("00000000:{:02X}:00.0", i + 1));
        assert_eq!(g.model, "NVIDIA H100 80GB HBM3");
    }
}

#[test]
fn counters_start_at_a_large_base_and_differ_between_gpus() {
    let mut s = ReplaySensor::new(config(Path::new(TRACE), 2, 5, Some(1))).unwrap();
    let a = s.read(0).unwrap().unwrap().energy_counter.unwrap();
    let b = s.read(1).unwrap().unwrap().energy_counter.unwrap();
    assert!(a.0 >= 5_000_000_000 && b.0 >= 5_000_000_000);
    assert_ne!(a, b);
    assert!(matches!(
        s.read(2),
        Err(SensorError::NoSuchGpu { index: 2, count: 2 })
    ));
}

/// A trace of 12 rows every 100 ms whose power (+10 W a row) and counter (+100 mJ a row) rise,
/// so every row is recognisable and power_max over skipped rows is the latest; replayed in
/// real time from virtual time 1,000,000 ms, started now.
fn rising_real_time_replay(dir: &Path) -> (std::path::PathBuf, Instant, ReplaySensor) {
    let rows: Vec<(f64, u32, u64)> = (0..12)
        .map(|i| {
            (
                i as f64 * 0.1,
                100_000 + i * 10_000,
                1_000 + u64::from(i) * 100,
            )
        })
        .collect();
    let path = write_trace(dir, "t.csv", &rows);
    let mut cfg = config(&path, 1, 1, Some(1));
    cfg.pacing = Pacing::RealTime;
    cfg.start_at = UnixMillis(1_000_000);
    let began = Instant::now();
    let sensor = ReplaySensor::new(cfg).unwrap();
    (path, began, sensor)
}

#[test]
fn real_time_pacing_returns_the_latest_row_due_and_never_the_same_time_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (_, began, mut s) = rising_real_time_replay(dir.path());
    assert!(!s.unpaced());
    let first = s.read(0).unwrap().unwrap();
    assert_eq!(first.at, UnixMillis(1_000_000));
    std::thread::sleep(Duration::from_millis(350));
    let second = s.read(0).unwrap().unwrap();
    let elapsed = began.elapsed().as_millis() as i64;
    // Latest row due: 300 ms (or later if this thread was slow), never ahead of the clock.
    assert!(
        second.at.0 >= 1_000_300 && second.at.0 <= 1_000_000 + elapsed,
        "{second:?}"
    );
    let k = (second.at.0 - 1_000_000) / 100;
    assert_eq!(second.power.0, 100_000 + k as u32 * 10_000);
    assert_eq!(
        second.power_max, second.power,
        "power rises, so the max is the latest"
    );
    let delta = second.energy_counter.unwrap().0 - first.energy_counter.unwrap().0;
    assert_eq!(delta, k as u64 * 100, "counter advanced by the rows passed");
    // Read again at once: waits for the next row instead of repeating a time.
    let third = s.read(0).unwrap().unwrap();
    assert_eq!(third.at.0, second.at.0 + 100);
    assert!(began.elapsed().as_millis() as i64 >= third.at.0 - 1_000_000);
    // Runs out after one pass (row 11 at 1.1 s).
    let mut last = third.at;
    while let Some(r) = s.read(0).unwrap() {
        assert!(r.at > last);
        last = r.at;
    }
    assert_eq!(last, UnixMillis(1_001_100));
    assert!(s.read(0).unwrap().is_none());
}

#[test]
fn gauge_reads_return_the_row_due_now_and_leave_the_energy_reads_unmoved() {
    let dir = tempfile::tempdir().unwrap();
    let (path, began, mut s) = rising_real_time_replay(dir.path());
    let first = s.read(0).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(250));
    let gauge = s.read_gauges(0).unwrap().unwrap();
    let elapsed = began.elapsed().as_millis() as i64;
    assert!(
        gauge.at.0 >= 1_000_200 && gauge.at.0 <= 1_000_000 + elapsed,
        "{gauge:?}"
    );
    let k = (gauge.at.0 - 1_000_000) / 100;
    assert_eq!(
        gauge.power.0,
        100_000 + k as u32 * 10_000,
        "the row due now"
    );
    // A second gauge read at once may repeat the row (gauges are not a chain) ...
    assert!(s.read_gauges(0).unwrap().unwrap().at >= gauge.at);
    // ... and the next energy read spans every row since the first, gauge reads or not.
    let second = s.read(0).unwrap().unwrap();
    let passed = (second.at.0 - first.at.0) / 100;
    assert!(second.at >= gauge.at);
    assert_eq!(
        second.energy_counter.unwrap().0 - first.energy_counter.unwrap().0,
        passed as u64 * 100
    );
    // An unpaced replay has no separate gauge reads: every read is one row already.
    let mut unpaced = ReplaySensor::new(config(&path, 1, 1, Some(1))).unwrap();
    assert!(unpaced.read_gauges(0).unwrap().is_none());
}

#[test]
fn falling_power_shows_up_in_power_max_over_skipped_rows() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(f64, u32, u64)> = (0..6)
        .map(|i| (i as f64 * 0.05, 500_000 - i * 50_000, 1_000 + u64::from(i)))
        .collect();
    let path = write_trace(dir.path(), "t.csv", &rows);
    let mut cfg = config(&path, 1, 1, Some(1));
    cfg.pacing = Pacing::RealTime;
    let mut s = ReplaySensor::new(cfg).unwrap();
    let _ = s.read(0).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(160));
    let r = s.read(0).unwrap().unwrap();
    assert!(r.power < r.power_max, "{r:?}");
    assert_eq!(
        r.power_max.0, 450_000,
        "max of the rows passed since the previous read"
    );
}

#[test]
fn bad_traces_are_refused_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = "unix_s,phase,power_mW,power_avg_field_mW,power_instant_field_mW,energy_counter_mJ,util_gpu_pct,util_mem_pct,sm_clock_mhz,temp_c,mem_used_bytes\n\
                1.0,idle,100,100,100,10,0,0,1980,40,1\n";
    let cases = [
        ("not_a_number.csv", format!("{good}1.1,idle,lots,100,100,20,0,0,1980,40,1\n"), "line 3", "power_mW"),
        ("backwards.csv", format!("{good}1.1,idle,100,100,100,20,0,0,1980,40,1\n1.05,idle,100,100,100,30,0,0,1980,40,1\n"), "line 4", "time order"),
        ("negative.csv", format!("{good}1.1,idle,100,100,100,-5,0,0,1980,40,1\n"), "line 3", "energy_counter_mJ"),
        ("no_column.csv", "unix_s,phase,power_mW\n1.0,idle,100\n".to_owned(), "line 1", "energy_counter_mJ"),
        ("one_row.csv", good.to_owned(), "at least 2 rows", ""),
        ("short_row.csv", format!("{good}1.1,idle,100\n"), "line 3", ""),
    ];
    for (name, text, want_line, want_what) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = ReplaySensor::new(config(&path, 1, 0, Some(1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.contains(want_line), "{name}: {err}");
        assert!(err.contains(want_what), "{name}: {err}");
    }
    let missing = dir.path().join("missing.csv");
    let err = ReplaySensor::new(config(&missing, 1, 0, Some(1))).unwrap_err();
    assert!(matches!(err, SensorError::TraceIo { .. }));
    assert!(err.to_string().contains("missing.csv"));
    let err = ReplaySensor::new(config(Path::new(TRACE), 0, 0, Some(1))).unwrap_err();
    assert!(err.to_string().contains("at least one GPU"));
}

#[test]
fn a_counter_drop_in_a_trace_is_replayed_as_a_driver_reload() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        (0.0, 100_000, 5_000),
        (0.1, 100_000, 5_010),
        (0.2, 100_000, 3),
        (0.3, 100_000, 13),
    ];
    let path = write_trace(dir.path(), "reset.csv", &rows);
    let mut s = ReplaySensor::new(config(&path, 1, 0, Some(1))).unwrap();
    let c: Vec<u64> = all_readings(&mut s, 0)
        .iter()
        .map(|r| r.energy_counter.unwrap().0)
        .collect();
    assert_eq!(c.len(), 4);
    assert_eq!(c[1] - c[0], 10);
    assert_eq!(
        c[2], 3,
        "the virtual counter restarts where the trace's does"
    );
    assert_eq!(c[3], 13);
}

#[test]
fn accelerated_pacing_runs_virtual_time_faster_and_never_ahead_of_its_clock() {
    let dir = tempfile::tempdir().unwrap();
    // Rows every 100 ms for 6 s, counter +100 mJ per row.
    let rows: Vec<(f64, u32, u64)> = (0..61u32)
        .map(|i| (f64::from(i) * 0.1, 100_000, 1_000 + u64::from(i) * 100))
        .collect();
    let path = write_trace(dir.path(), "t.csv", &rows);
    let mut cfg = config(&path, 1, 1, Some(1));
    cfg.pacing = Pacing::Accelerated(20);
    cfg.start_at = UnixMillis(1_000_000);
    let began = Instant::now();
    let mut s = ReplaySensor::new(cfg).unwrap();
    assert!(!s.unpaced());
    // A late first read is still the start: nothing before the baseline goes unreported.
    std::thread::sleep(Duration::from_millis(50));
    let first = s.read(0).unwrap().unwrap();
    assert_eq!(first.at, UnixMillis(1_000_000));
    std::thread::sleep(Duration::from_millis(100));
    let second = s.read(0).unwrap().unwrap();
    let elapsed = began.elapsed().as_millis() as i64;
    // 150 ms of wall clock are 3 s of virtual time at 20×; never ahead of 20 × elapsed.
    assert!(
        second.at.0 >= 1_003_000 && second.at.0 <= 1_000_000 + 20 * elapsed,
        "{second:?} after {elapsed} ms"
    );
    let k = (second.at.0 - first.at.0) / 100;
    let delta = second.energy_counter.unwrap().0 - first.energy_counter.unwrap().0;
    assert_eq!(delta, k as u64 * 100, "counter advanced by the rows passed");
    // The whole 6 s pass takes about 300 ms of wall clock, and every row's energy is counted.
    let mut last = second;
    while let Some(r) = s.read(0).unwrap() {
        assert!(r.at > last.at);
        last = r;
    }
    assert_eq!(last.at, UnixMillis(1_006_000));
    assert_eq!(
        last.energy_counter.unwrap().0 - first.energy_counter.unwrap().0,
        6_000
    );
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}

/// A GPU's computed history ([`ReplaySensor::history`]) against the same GPU replayed from
/// far enough back, read position by position: every span's energy is the counter's delta
/// between its ends, the spans are contiguous and at most a minute long, and the last one
/// ends exactly at the live start.
#[test]
fn history_spans_are_the_counters_deltas_and_end_at_the_live_start() {
    let rows = read_trace(Path::new(TRACE));
    let period = rows[rows.len() - 1].t_ms - rows[0].t_ms;
    let to = START;
    let from = UnixMillis(to.0 - 2 * 3_600_000 - 1234);
    let sensor = ReplaySensor::new(config(Path::new(TRACE), 3, 7, None)).unwrap();
    let laps = (to.0 - from.0) / period + 2;
    let mut earlier = ReplaySensor::new(ReplayConfig {
        start_at: UnixMillis(to.0 - laps * period),
        ..config(Path::new(TRACE), 3, 7, None)
    })
    .unwrap();
    for gpu in 0..3 {
        let spans = sensor.history(gpu, from, to, 60_000).unwrap();
        assert_eq!(spans, sensor.history(gpu, from, to, 60_000).unwrap());
        let mut counter_at = BTreeMap::new();
        loop {
            let r = earlier.read(gpu).unwrap().unwrap();
            if r.at >= from {
                counter_at.insert(r.at, r.energy_counter.unwrap().0);
            }
            if r.at >= to {
                break;
            }
        }
        let first = *counter_at.keys().next().unwrap();
        assert_eq!(
            spans[0].start, first,
            "GPU {gpu}: the first reading at or after from"
        );
        assert_eq!(spans.last().unwrap().end, to, "GPU {gpu}");
        for w in spans.windows(2) {
            assert_eq!(w[0].end, w[1].start, "GPU {gpu}: contiguous");
        }
        for s in &spans {
            assert!(s.end > s.start && s.end.since(s.start) <= 60_000, "{s:?}");
            assert_eq!(
                s.energy.0,
                counter_at[&s.end] - counter_at[&s.start],
                "GPU {gpu}: {s:?}"
            );
        }
        let total: u64 = spans.iter().map(|s| s.energy.0).sum();
        assert_eq!(total, counter_at[&to] - counter_at[&first]);
        assert!(spans.len() >= 120, "{}", spans.len());
    }
    assert!(sensor.history(0, to, to, 60_000).unwrap().is_empty());
}
