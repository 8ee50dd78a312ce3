//! Helpers for the end-to-end tests: reading the shipped data independently of the code under
//! test, so expectations are computed from the source files, not from Wattprint.

use std::path::{Path, PathBuf};

/// The repository's shipped `data/` directory.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// One row of the H100 trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// Row time, ms (as the replay rounds it).
    pub t_ms: i64,
    /// Phase label.
    pub phase: String,
    /// NVML energy counter, mJ.
    pub counter_mj: u64,
}

/// Reads the shipped H100 trace.
pub fn read_trace() -> Vec<TraceRow> {
    let path = data_dir().join("h100-trace/h100_power_trace_50ms.csv");
    let mut r = csv::Reader::from_path(&path).expect("trace");
    let h = r.headers().expect("headers").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect("column");
    let (t, p, e) = (col("unix_s"), col("phase"), col("energy_counter_mJ"));
    r.records()
        .map(|rec| {
            let rec = rec.expect("row");
            TraceRow {
                t_ms: (rec[t].parse::<f64>().expect("time") * 1000.0).round() as i64,
                phase: rec[p].to_owned(),
                counter_mj: rec[e].parse().expect("counter"),
            }
        })
        .collect()
}

/// Reads an SGIP marginal file as (unix ms, g/kWh) pairs, by hand: kg/kWh × 1000.
pub fn read_sgip(file: &str) -> Vec<(i64, f64)> {
    let f = std::fs::File::open(data_dir().join("moer").join(file)).expect("sgip");
    let mut r = csv::Reader::from_reader(flate2::read::GzDecoder::new(f));
    r.records()
        .map(|rec| {
            let rec = rec.expect("row");
            let ts = &rec[0]; // "2020-07-31 00:00:00+00:00"
            let date: Vec<i64> = ts[0..10]
                .split('-')
                .map(|x| x.parse().expect("date"))
                .collect();
            let time: Vec<i64> = ts[11..19]
                .split(':')
                .map(|x| x.parse().expect("time"))
                .collect();
            let days = days_from_civil(date[0], date[1], date[2]);
            let ms = ((days * 24 + time[0]) * 60 + time[1]) * 60_000 + time[2] * 1000;
            (ms, rec[1].parse::<f64>().expect("moer") * 1000.0)
        })
        .collect()
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Days from 1970-01-01, counted plainly (no shared code with the crate under test).
    let mut days = 0;
    for year in 1970..y {
        days += if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days + month_days[..(m - 1) as usize].iter().sum::<i64>() + d - 1
}

pub mod api;
pub mod cluster;
pub mod process;
pub mod servers;

/// Length of an interval bucket, ms.
pub const BUCKET_MS: i64 = 300_000;
/// mJ in one kWh.
pub const MJ_PER_KWH: f64 = 3.6e9;

/// Indexes of the first row of each phase of the trace, and the last row.
pub fn phase_starts(rows: &[TraceRow]) -> Vec<usize> {
    let mut starts = vec![0];
    for i in 1..rows.len() {
        if rows[i].phase != rows[i - 1].phase {
            starts.push(i);
        }
    }
    starts.push(rows.len() - 1);
    starts
}

/// Virtual time of row `i` when the trace is replayed from `start_at`.
pub fn virtual_time(rows: &[TraceRow], i: usize, start_at: i64) -> i64 {
    start_at + rows[i].t_ms - rows[0].t_ms
}

/// Intensity the replay must use for a bucket, computed by hand from the SGIP file: the series
/// loops over its own span, and kg/kWh × 1000 = g/kWh.
pub fn replayed_intensity(series: &[(i64, f64)], bucket_start: i64) -> f64 {
    let first = series[0].0;
    let span = series.len() as i64 * BUCKET_MS; // the month file is contiguous
    assert_eq!(
        series.last().expect("series").0,
        first + span - BUCKET_MS,
        "series has gaps"
    );
    let t = first + (bucket_start - first).rem_euclid(span);
    series
        .iter()
        .find(|(ts, _)| *ts == t)
        .expect("bucket in series")
        .1
}

/// Wall-clock now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Whether integration tests must fail rather than skip when a server is missing (CI).
pub fn servers_required() -> bool {
    std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some()
}

/// The ClickHouse URL and Kafka brokers the test servers listen on, or `None` (the test
/// skips) when they are not configured and not required.
pub fn test_servers() -> Option<(String, String)> {
    match (
        std::env::var("WPTEST_CLICKHOUSE_URL"),
        std::env::var("WPTEST_KAFKA_BROKERS"),
    ) {
        (Ok(ch), Ok(kafka)) => Some((ch, kafka)),
        _ if servers_required() => panic!(
            "WPTEST_REQUIRE_SERVERS is set but WPTEST_CLICKHOUSE_URL / WPTEST_KAFKA_BROKERS are not: \
             run `source scripts/servers.sh start`"
        ),
        _ => {
            eprintln!("skipped: no test servers (source scripts/servers.sh start)");
            None
        }
    }
}

/// A wire sample of `gpu` on `instance`: 1 s ending at `end` (Unix ms) with `energy_mj`.
pub fn wire_sample(
    gpu: &wattprint_core::GpuUuid,
    instance: &str,
    seq: u64,
    end: i64,
    energy_mj: u64,
) -> wattprint_proto::v1::Sample {
    use wattprint_proto::v1::{Attribution, EnergySource, Sample};
    Sample {
        gpu_uuid: gpu.0.clone(),
        instance_id: instance.into(),
        seq,
        start_unix_ms: end - 1000,
        end_unix_ms: end,
        energy_mj,
        power_mw: 300_000,
        power_max_mw: 310_000,
        util_gpu_pct: 80,
        mem_used_bytes: 1 << 30,
        temp_c: 50,
        sm_clock_mhz: 1980,
        chain_start: seq == 1,
        energy_source: EnergySource::Counter as i32,
        attribution: Attribution::Exclusive as i32,
    }
}

/// Energy of a trace replayed from `start_at` on each side of the bucket edge `edge`, by hand:
/// whole steps on their side, the straddling step split in proportion to time (floor before).
pub fn split_at_edge(rows: &[TraceRow], start_at: i64, edge: i64) -> (u64, u64) {
    let (mut before, mut after) = (0u64, 0u64);
    for i in 0..rows.len() - 1 {
        let (t0, t1) = (
            virtual_time(rows, i, start_at),
            virtual_time(rows, i + 1, start_at),
        );
        let e = rows[i + 1].counter_mj - rows[i].counter_mj;
        if t1 <= edge {
            before += e;
        } else if t0 >= edge {
            after += e;
        } else {
            let part = (e as u128 * (edge - t0) as u128 / (t1 - t0) as u128) as u64;
            before += part;
            after += e - part;
        }
    }
    (before, after)
}
