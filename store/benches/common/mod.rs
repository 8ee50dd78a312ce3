//! What the store and query-API benches share: the server from `WPTEST_CLICKHOUSE_URL`, CPU
//! accounting of this process and of the server, the real data (H100 trace, CAISO_NORTH
//! marginal series) and the synthetic fleet built from it ([`fleet`]). The query API's benches
//! include this folder with `#[path]`.
#![allow(dead_code)]

pub mod fleet;
pub mod raw;

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ClickHouse HTTP URL; exits with a message when the variable is not set.
pub fn clickhouse_url() -> String {
    match std::env::var("WPTEST_CLICKHOUSE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            eprintln!(
                "WPTEST_CLICKHOUSE_URL is not set: start the servers first \
                 (export WPTEST_SERVERS_DIR=/tmp/wpsrv && source scripts/servers.sh start)"
            );
            std::process::exit(2);
        }
    }
}

/// The HTTP port of a URL like `http://127.0.0.1:18123`.
pub fn http_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(8123)
}

/// Env var `name` parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The repository's `data/` folder.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// `utime + stime` (and children's, for `cutime + cstime`) of a process, from `/proc`.
fn proc_cpu(pid: &str, children: bool) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime is field 14 (index 11 here).
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11)? + f.get(12)? + if children { f.get(13)? + f.get(14)? } else { 0 };
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of this process and of the children it has waited for.
pub fn own_cpu() -> Duration {
    proc_cpu("self", true).unwrap_or_default()
}

/// The pid of the ClickHouse server listening on HTTP `port` (from its command line).
pub fn server_pid(port: u16) -> Option<String> {
    pid_of("clickhouse", &format!("--http_port={port}"))
}

/// The pid of the tansu broker listening on `port` (from its command line).
pub fn broker_pid(port: u16) -> Option<String> {
    pid_of("tansu", &format!("127.0.0.1:{port}"))
}

/// The first process whose command line holds both `program` and `needle`.
fn pid_of(program: &str, needle: &str) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_string_lossy().into_owned();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains(program) && cmd.contains(needle)).then_some(pid)
    })
}

/// CPU time the server has used so far (zero when it cannot be found).
pub fn server_cpu(pid: Option<&str>) -> Duration {
    pid.and_then(|p| proc_cpu(p, false)).unwrap_or_default()
}

/// The server's CPU time once its background work (merges of the parts just inserted) has
/// settled: polled every 500 ms until it used under 10 ms in one interval, for at most 60 s.
pub async fn settled_server_cpu(pid: Option<&str>) -> Duration {
    let mut last = server_cpu(pid);
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = server_cpu(pid);
        if now - last < Duration::from_millis(10) {
            return now;
        }
        last = now;
    }
    last
}

/// Energy-counter deltas of the real H100 trace at 1 s (every 20th 50 ms reading), with the
/// power and utilisation at the end of each second, in trace order.
pub fn h100_seconds() -> Vec<(u64, u32, u32)> {
    let path = data_dir().join("h100-trace/h100_power_trace_50ms.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut rows: Vec<(u64, u32, u32)> = Vec::new();
    for line in text.lines().skip(1).step_by(20) {
        let cols: Vec<&str> = line.split(',').collect();
        let power: u32 = cols[2].parse().unwrap_or(0);
        let counter: u64 = cols[5].parse().unwrap_or(0);
        let util: u32 = cols[6].parse().unwrap_or(0);
        rows.push((counter, power, util));
    }
    rows.windows(2)
        .map(|w| (w[1].0.saturating_sub(w[0].0), w[1].1, w[1].2))
        .collect()
}

/// Means of one phase of the H100 trace.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseMeans {
    /// Phase name as the trace labels it (`idle`, `train_transformer`, …).
    pub name: String,
    /// Mean power, mW.
    pub power_mw: f64,
    /// Mean GPU utilisation, %.
    pub util_pct: f64,
    /// Mean temperature, °C.
    pub temp_c: f64,
    /// Mean SM clock, MHz.
    pub sm_clock_mhz: f64,
    /// Mean memory used, bytes.
    pub mem_used_bytes: f64,
}

/// Means of each phase of the H100 trace, in trace order: idle, training, paused, GEMM burn,
/// data-loader bound, inference bursts, idle after.
pub fn h100_phases() -> Vec<PhaseMeans> {
    let path = data_dir().join("h100-trace/h100_power_trace_50ms.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // Per phase: name, sums of power, util, temp, clock, memory, and the row count.
    let mut out: Vec<(String, [f64; 5], u64)> = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let num = |i: usize| -> f64 { cols.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
        let row = [num(2), num(6), num(9), num(8), num(10)];
        match out.last_mut() {
            Some((p, sums, n)) if p == cols[1] => {
                sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                *n += 1;
            }
            _ => out.push((cols[1].to_owned(), row, 1)),
        }
    }
    out.into_iter()
        .filter(|(p, _, n)| *n > 50 && p != "end")
        .map(|(name, s, n)| {
            let n = n as f64;
            PhaseMeans {
                name,
                power_mw: s[0] / n,
                util_pct: s[1] / n,
                temp_c: s[2] / n,
                sm_clock_mhz: s[3] / n,
                mem_used_bytes: s[4] / n,
            }
        })
        .collect()
}

/// The WattTime CAISO_NORTH 5-minute marginal series (g/kWh), 2023-06-08 onwards.
pub fn caiso_north() -> Vec<f64> {
    let path = data_dir().join("moer/watttime2023_caiso-north_actual.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.parse().ok())
        .collect()
}

/// `p`-th percentile (0–100) of sorted durations, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A fresh database name for a bench.
pub fn fresh_db(what: &str) -> String {
    format!("wp_bench_{what}_{:08x}", rand::random::<u32>())
}

/// A raw client for setup and checks.
pub fn raw_client(url: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url)
        .with_compression(clickhouse::Compression::None)
        .with_validation(false)
}

/// Totals of a database as the store reads them: rows and energy of `shares FINAL`.
pub async fn totals(url: &str, db: &str) -> (u64, u64) {
    raw_client(url)
        .with_database(db)
        .query("SELECT count(), sum(energy_mj) FROM shares FINAL")
        .fetch_one()
        .await
        .unwrap()
}

/// Drops a bench's database.
pub async fn drop_db(url: &str, db: &str) {
    raw_client(url)
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .unwrap();
}
