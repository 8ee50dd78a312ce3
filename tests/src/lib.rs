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
