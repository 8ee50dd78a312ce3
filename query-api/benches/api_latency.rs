//! Latency of the query API over real HTTP, on SQLite and on ClickHouse, with `WPBENCH_GPUS`
//! GPUs (default 1000, 4 per instance) × `WPBENCH_DAYS` days (30) of 5-minute data: about
//! 8.6 M GPU-intervals of tenant `acme`, plus 40 GPUs of `globex` that tenant filtering skips.
//!
//! The data is the store benches' fleet (`store/benches/common/fleet.rs`): one 300 s sample
//! per GPU and interval, energies from the phases of the real H100 trace, intensity from the
//! real WattTime CAISO_NORTH series. SQLite gets it through `Store::write_samples` (the public
//! write path, an hour of the fleet per call; about 8.6 M samples and intervals), ClickHouse
//! through server-side `INSERT … SELECT` of the same rows (shares, samples, `(gpu, seq)` keys,
//! rollup marks), then `refresh_rollups` as the enrichers run it.
//!
//! The real server (`wattprint_query_api::serve`, axum) listens on 127.0.0.1 over each store;
//! a `reqwest` client measures, after `WPBENCH_WARMUP` (3) warm-ups, `WPBENCH_REPEATS` (50)
//! requests one at a time, then the same number spread over `WPBENCH_CLIENTS` (8) concurrent
//! clients (throughput and latency under contention) of:
//! - `GET /v1/workloads/{id}`: a workload of one 4-GPU instance × the whole range (30 days);
//! - the same for 25 instances (100 GPUs) × 7 days, with bucket-aligned edges, and with ragged
//!   ones (from +7 min, to −13 min: edge buckets are re-read from raw samples);
//! - `GET /v1/summary` over the whole range (every GPU of the tenant);
//! - `GET /v1/instances/{id}/series?step=5m` over the whole range (8,640 points), and at
//!   `step=1h` (720 points) and `step=1d` (30), summed from hourly totals;
//! - a workload of two instances (8 GPUs) × the whole range with ragged edges (from +7 min,
//!   to −13 min);
//! - and, in the process rather than over HTTP, the preliminary monthly statement of the
//!   calendar month the data starts in (`statements::compute`: every interval of the month).
//!
//! A measurement stops early, after at least 5 requests, once it has run `WPBENCH_MAX_SECS`
//! (300): `n` in the table says how many were timed. Timing covers send → last body byte.
//! Every response is checked afterwards (not timed): status 200, and its energy, interval
//! count and emissions equal the store-level figures (`Store::tenant_summary`, the sum of
//! `Store::instance_intervals`), which are themselves checked against the generator's own
//! totals (energy to the millijoule, emissions to 1e-9). These are sanity checks: nothing
//! asserts on time.
//!
//! Run, with the test servers up for ClickHouse (`WPTEST_CLICKHOUSE_URL`):
//! `cargo bench -p wattprint-query-api --bench api_latency`. Knobs: `WPBENCH_STORES`
//! (`sqlite,clickhouse`), `WPBENCH_GPUS`, `WPBENCH_DAYS`, `WPBENCH_REPEATS`, `WPBENCH_WARMUP`,
//! `WPBENCH_CLIENTS`, `WPBENCH_MAX_SECS`; `WPBENCH_KEEP=1` keeps the SQLite file
//! (`WPBENCH_DIR`, default `target/wpbench`) and the ClickHouse database under names made of
//! the fleet's size and the generator's version, and reuses them on the next run (loading
//! SQLite through the write path takes minutes).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../../store/benches/common/mod.rs"]
mod common;

use common::fleet::{Expected, Fleet, FleetModel, BUCKET, DAY, GENERATOR_VERSION, START};
use common::{clickhouse_url, env_or, fresh_db, percentile, raw_client};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wattprint_core::accounting::clip_energy;
use wattprint_core::intensity::{
    IntensityJoin, IntensityPoint, PointKind, RegionIntensity, Signal,
};
use wattprint_core::sci::HardwareCatalog;
use wattprint_core::RegionId;
use wattprint_core::{GramsPerKwh, InstanceId, Millijoules, TenantId, TenantScope, UnixMillis};
use wattprint_query_api::average::hour_averages;
use wattprint_query_api::service::{aggregate_intervals, instance_series, SeriesRequest};
use wattprint_query_api::{mint_token, ApiLimits, ApiState, AuthConfig};
use wattprint_store::{ClickHouseStore, SqliteStore, Store};

/// Knobs, from the environment.
struct Config {
    stores: Vec<String>,
    gpus: u64,
    days: u64,
    repeats: usize,
    warmup: usize,
    clients: usize,
    max_secs: f64,
    keep: bool,
    dir: PathBuf,
}

impl Config {
    fn from_env() -> Self {
        let stores: String = env_or("WPBENCH_STORES", "sqlite,clickhouse".to_owned());
        let dir = std::env::var_os("WPBENCH_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wpbench"),
            PathBuf::from,
        );
        Self {
            stores: stores.split(',').map(|s| s.trim().to_lowercase()).collect(),
            gpus: env_or("WPBENCH_GPUS", 1000),
            days: env_or("WPBENCH_DAYS", 30).clamp(1, 31),
            repeats: env_or("WPBENCH_REPEATS", 50usize).max(1),
            warmup: env_or("WPBENCH_WARMUP", 3),
            clients: env_or("WPBENCH_CLIENTS", 8usize).max(1),
            max_secs: env_or("WPBENCH_MAX_SECS", 300.0),
            keep: std::env::var_os("WPBENCH_KEEP").is_some(),
            dir,
        }
    }

    /// Name of the kept database of this fleet size and generator version.
    fn kept_name(&self) -> String {
        format!(
            "api_latency_{}g_{}d_v{GENERATOR_VERSION}",
            self.gpus, self.days
        )
    }
}

/// The fleets: the measured tenant's and a small other one.
fn fleets(cfg: &Config) -> [Fleet; 2] {
    [
        Fleet::new("acme", "vm", cfg.gpus, cfg.days),
        Fleet::new("globex", "gx", 40, cfg.days),
    ]
}

fn auth() -> AuthConfig {
    AuthConfig::new(
        "an-hs256-secret-for-the-benchmark",
        "wattprint-bench",
        "wattprint-query-api",
    )
}

fn catalog() -> HardwareCatalog {
    let path = common::data_dir().join("hardware-catalog.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Loading

/// The SQLite store, loaded through `write_samples` (or reused with `WPBENCH_KEEP`); the file
/// to delete afterwards when not kept.
async fn sqlite_store(cfg: &Config, model: &FleetModel) -> (Arc<dyn Store>, Option<PathBuf>) {
    std::fs::create_dir_all(&cfg.dir).unwrap();
    let name = if cfg.keep {
        cfg.kept_name()
    } else {
        format!("api_latency_{}", std::process::id())
    };
    let path = cfg.dir.join(format!("{name}.sqlite"));
    let loaded_marker = cfg.dir.join(format!("{name}.loaded"));
    if cfg.keep && path.exists() && loaded_marker.exists() {
        println!("SQLite: reusing {}", path.display());
        let t0 = Instant::now();
        let store = SqliteStore::open(&path).unwrap();
        println!(
            "SQLite: opened (pending schema migrations applied) in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        return (Arc::new(store), None);
    }
    remove_sqlite(&path);
    let store = SqliteStore::open(&path).unwrap();
    let fleets = fleets(cfg);
    let inventory: Vec<_> = fleets.iter().flat_map(Fleet::inventory).collect();
    store.upsert_inventory(&inventory).await.unwrap();
    let t0 = Instant::now();
    let mut written = 0u64;
    for fleet in &fleets {
        let mut last_day = 0;
        fleet
            .load_through_store(model, &store, |buckets| {
                let day = buckets / 288;
                if day != last_day {
                    last_day = day;
                    let done = written + buckets * fleet.gpus;
                    println!(
                        "  {}: day {day}/{} loaded, {done} samples in {:.0} s ({:.0}/s)",
                        fleet.tenant,
                        cfg.days,
                        t0.elapsed().as_secs_f64(),
                        done as f64 / t0.elapsed().as_secs_f64()
                    );
                }
            })
            .await;
        written += fleet.gpus * fleet.buckets;
    }
    println!(
        "SQLite: {written} samples written through Store::write_samples in {:.0} s ({:.0}/s), \
         file {:.2} GB",
        t0.elapsed().as_secs_f64(),
        written as f64 / t0.elapsed().as_secs_f64(),
        file_size(&path) as f64 / 1e9
    );
    if cfg.keep {
        std::fs::write(&loaded_marker, format!("{written} samples\n")).unwrap();
        (Arc::new(store), None)
    } else {
        (Arc::new(store), Some(path))
    }
}

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn file_size(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| {
            let mut p = path.as_os_str().to_owned();
            p.push(s);
            std::fs::metadata(PathBuf::from(p)).ok()
        })
        .map(|m| m.len())
        .sum()
}

/// The ClickHouse store, loaded server-side (or reused with `WPBENCH_KEEP` when complete);
/// the database to drop afterwards when not kept.
async fn clickhouse_store(cfg: &Config, model: &FleetModel) -> (ClickHouseStore, Option<String>) {
    let url = clickhouse_url();
    let db = if cfg.keep {
        format!("wp_bench_{}", cfg.kept_name())
    } else {
        fresh_db("api")
    };
    let fleets = fleets(cfg);
    let rows: u64 = fleets.iter().map(|f| f.gpus * f.buckets).sum();
    let admin = raw_client(&url);
    if cfg.keep {
        let counts: Result<(u64, u64, u64), _> = admin
            .clone()
            .with_database(&db)
            .query(
                // Scalar subqueries are Nullable on modern servers: the rows would misread.
                "SELECT toUInt64(ifNull((SELECT count() FROM shares), 0)), \
                 toUInt64(ifNull((SELECT count() FROM samples), 0)), \
                 toUInt64(ifNull((SELECT count() FROM rollup_hourly), 0))",
            )
            .fetch_one()
            .await;
        match counts {
            Ok((shares, samples, rollups)) if shares == rows && samples == rows && rollups > 0 => {
                println!("ClickHouse: reusing database {db}");
                let store = ClickHouseStore::connect(&url, &db).await.unwrap();
                // A database kept from an older schema may lack rollups a newer one reads
                // (daily rollups came with version 11): bring them up to date, as the
                // enrichers' loop would; nothing is recomputed when they are fresh.
                let t0 = Instant::now();
                let refreshed = store
                    .refresh_rollups(UnixMillis(START), UnixMillis(START + cfg.days as i64 * DAY))
                    .await
                    .unwrap();
                println!(
                    "ClickHouse: refresh_rollups on reuse {:.1} s ({} instance-hours)",
                    t0.elapsed().as_secs_f64(),
                    refreshed.recomputed
                );
                return (store, None);
            }
            _ => {
                admin
                    .query(&format!("DROP DATABASE IF EXISTS {db}"))
                    .execute()
                    .await
                    .unwrap();
            }
        }
    }
    let store = ClickHouseStore::connect(&url, &db).await.unwrap();
    println!(
        "ClickHouse {} at {url}, database {db}",
        store.server_version()
    );
    let inventory: Vec<_> = fleets.iter().flat_map(Fleet::inventory).collect();
    store.upsert_inventory(&inventory).await.unwrap();
    let t0 = Instant::now();
    for fleet in &fleets {
        fleet.load_clickhouse(model, &url, &db, true).await;
    }
    let loaded = t0.elapsed();
    let t1 = Instant::now();
    let refreshed = store
        .refresh_rollups(UnixMillis(START), UnixMillis(START + cfg.days as i64 * DAY))
        .await
        .unwrap();
    println!(
        "ClickHouse: {rows} shares and samples generated server-side in {:.0} s; \
         refresh_rollups {:.0} s ({} instance-hours)",
        loaded.as_secs_f64(),
        t1.elapsed().as_secs_f64(),
        refreshed.recomputed
    );
    let drop = (!cfg.keep).then_some(db);
    (store, drop)
}

// ---------------------------------------------------------------------------------------------
// What each request must return

/// The figures a response is checked against.
#[derive(Debug, Clone, Copy)]
struct Figures {
    intervals: u64,
    energy_mj: u64,
    it_co2e_g: f64,
}

impl From<Expected> for Figures {
    fn from(e: Expected) -> Self {
        Self {
            intervals: e.intervals,
            energy_mj: e.energy_mj,
            it_co2e_g: e.it_co2e_g,
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Panics unless the store's figures are the generator's.
fn assert_figures(what: &str, store: Figures, generated: Figures) {
    assert!(
        store.intervals == generated.intervals
            && store.energy_mj == generated.energy_mj
            && close(store.it_co2e_g, generated.it_co2e_g),
        "{what}: the store holds {store:?}, the generator made {generated:?}"
    );
}

/// What a request is and how to check its response.
#[derive(Debug, Clone)]
enum Query {
    Workload { figures: Figures },
    Summary { instances: usize, figures: Figures },
    Series { points: usize, figures: Figures },
}

fn num(v: &Value, path: &[&str]) -> Result<f64, String> {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_f64()
        .ok_or_else(|| format!("{} is not a number", path.join(".")))
}

fn int(v: &Value, path: &[&str]) -> Result<u64, String> {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_u64()
        .ok_or_else(|| format!("{} is not an unsigned integer", path.join(".")))
}

fn same(what: &str, got: Figures, want: Figures) -> Result<(), String> {
    if got.intervals == want.intervals
        && got.energy_mj == want.energy_mj
        && close(got.it_co2e_g, want.it_co2e_g)
    {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, the store says {want:?}"))
    }
}

impl Query {
    /// Checks a response body against the store-level figures.
    fn check(&self, body: &[u8]) -> Result<(), String> {
        let v: Value = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
        match self {
            Query::Workload { figures, .. } => {
                let fp = &v["footprint"];
                let got = Figures {
                    intervals: int(fp, &["provenance", "intervals_actual"])?,
                    energy_mj: int(fp, &["it_energy_mj"])?,
                    it_co2e_g: num(fp, &["operational_it_co2e_g"])?,
                };
                same("workload footprint", got, *figures)
            }
            Query::Summary { instances, figures } => {
                let got = Figures {
                    intervals: int(&v, &["totals", "gpu_intervals"])?,
                    energy_mj: int(&v, &["totals", "it_energy_mj"])?,
                    it_co2e_g: num(&v, &["totals", "operational_it_co2e_g"])?,
                };
                let n = v["instances"].as_array().map_or(0, Vec::len);
                if n != *instances {
                    return Err(format!("summary: {n} instances, the store has {instances}"));
                }
                same("summary totals", got, *figures)
            }
            Query::Series { points, figures } => {
                let pts = v["points"].as_array().ok_or("series: no points")?;
                if pts.len() != *points {
                    return Err(format!("series: {} points, want {points}", pts.len()));
                }
                let mut got = Figures {
                    intervals: 0,
                    energy_mj: 0,
                    it_co2e_g: 0.0,
                };
                for p in pts {
                    got.intervals += int(p, &["intensity_kinds", "actual"])?;
                    got.energy_mj += int(p, &["energy_mj"])?;
                    got.it_co2e_g += num(p, &["co2e_g"])?;
                }
                same("series sums", got, *figures)
            }
        }
    }
}

/// The store's figures for the intervals of `instances` with buckets in `[from, to)` (a
/// bucket-aligned range).
async fn store_intervals(
    store: &dyn Store,
    scope: &TenantScope,
    instances: &[InstanceId],
    from: i64,
    to: i64,
) -> Figures {
    let mut f = Figures {
        intervals: 0,
        energy_mj: 0,
        it_co2e_g: 0.0,
    };
    for i in instances {
        let rows = store
            .instance_intervals(scope, i, UnixMillis(from), UnixMillis(to))
            .await
            .unwrap();
        for r in rows {
            f.intervals += 1;
            f.energy_mj += r.energy.0;
            if let Some(j) = &r.intensity {
                f.it_co2e_g += j.value.emissions(r.energy).0;
            }
        }
    }
    f
}

/// The generator's figures for a ragged workload: whole buckets inside `[from, to)` plus the
/// edge buckets' samples clipped with core's `clip_energy` (as the API does).
fn ragged_expected(
    fleet: &Fleet,
    model: &FleetModel,
    instances: &[u64],
    from: i64,
    to: i64,
) -> Figures {
    let first_whole = (from - START + BUCKET - 1) / BUCKET;
    let end_whole = (to - START) / BUCKET;
    let mut f: Figures = fleet
        .expected(model, instances, first_whole as u64..end_whole as u64)
        .into();
    for b in [first_whole - 1, end_whole] {
        let start = START + b * BUCKET;
        let (a, z) = (from.max(start), to.min(start + BUCKET));
        for &i in instances {
            for gpu in (i * 4..i * 4 + 4).filter(|g| *g < fleet.gpus) {
                let e = clip_energy(
                    UnixMillis(start),
                    UnixMillis(start + BUCKET),
                    Millijoules(model.energy_mj(gpu, b as u64)),
                    UnixMillis(a),
                    UnixMillis(z),
                );
                f.intervals += 1;
                f.energy_mj += e.0;
                f.it_co2e_g += GramsPerKwh(model.intensity(b as u64)).emissions(e).0;
            }
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// Timing

/// One timed request's outcome.
struct Reply {
    took: Duration,
    status: u16,
    body: axum::body::Bytes,
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Reply {
    let t0 = Instant::now();
    let resp = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    Reply {
        took: t0.elapsed(),
        status,
        body,
    }
}

/// Timings of one measurement.
struct Measured {
    times: Vec<Duration>,
    wall: Duration,
    body_bytes: usize,
}

/// Checks every reply (after timing) and returns the sorted times.
fn verify(what: &str, q: &Query, replies: Vec<Reply>, wall: Duration) -> Measured {
    let body_bytes = replies.first().map_or(0, |r| r.body.len());
    let mut times = Vec::with_capacity(replies.len());
    for r in replies {
        assert_eq!(
            r.status,
            200,
            "{what}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
        );
        if let Err(e) = q.check(&r.body) {
            panic!("{what}: {e}");
        }
        times.push(r.took);
    }
    times.sort();
    Measured {
        times,
        wall,
        body_bytes,
    }
}

/// `repeats` requests one after another (after the warm-ups), or fewer past the time budget.
async fn sequential(cfg: &Config, what: &str, url: &str, token: &str, q: &Query) -> Measured {
    let client = reqwest::Client::new();
    let mut warm = Vec::new();
    for _ in 0..cfg.warmup {
        warm.push(get(&client, url, token).await);
    }
    verify(what, q, warm, Duration::ZERO);
    let t0 = Instant::now();
    let mut replies = Vec::with_capacity(cfg.repeats);
    while replies.len() < cfg.repeats
        && (replies.len() < 5 || t0.elapsed().as_secs_f64() < cfg.max_secs)
    {
        replies.push(get(&client, url, token).await);
    }
    verify(what, q, replies, t0.elapsed())
}

/// `repeats` requests shared by `clients` concurrent clients (each with its own connection).
async fn concurrent(cfg: &Config, what: &str, url: &str, token: &str, q: &Query) -> Measured {
    let issued = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..cfg.clients)
        .map(|_| {
            let (issued, url, token) = (issued.clone(), url.to_owned(), token.to_owned());
            let (repeats, max_secs) = (cfg.repeats, cfg.max_secs);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut out = Vec::new();
                loop {
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    if n >= repeats || (n >= 5 && t0.elapsed().as_secs_f64() >= max_secs) {
                        return out;
                    }
                    out.push(get(&client, &url, &token).await);
                }
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.extend(t.await.unwrap());
    }
    verify(what, q, replies, t0.elapsed())
}

/// One row of the results table.
struct Row {
    store: String,
    query: String,
    clients: usize,
    m: Measured,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| store | request | clients | n | p50 ms | p99 ms | mean ms | min ms | max ms | req/s | response |"
    );
    println!("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for r in rows {
        let t = &r.m.times;
        let mean = t.iter().sum::<Duration>() / t.len().max(1) as u32;
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} kB |",
            r.store,
            r.query,
            r.clients,
            t.len(),
            ms(percentile(t, 50.0)),
            ms(percentile(t, 99.0)),
            ms(mean),
            ms(t.first().copied().unwrap_or_default()),
            ms(t.last().copied().unwrap_or_default()),
            t.len() as f64 / r.m.wall.as_secs_f64().max(1e-9),
            r.m.body_bytes as f64 / 1e3,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Machine load (the figures mean little on a busy machine)

fn load_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let rustc = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "rustc")
                })
                .count()
        })
        .unwrap_or(0);
    format!(
        "load average {}, {rustc} rustc processes",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A join with Electricity Maps' hourly averages (lifecycle) of US-CAL-CISO for June 2023 (the
/// repository's file; the fleet's July days have none, and count as without an average) for
/// the fleet's region, as a server configured for average-intensity figures has.
fn average_join() -> IntensityJoin {
    let path =
        common::data_dir().join("grid-average/electricitymaps_US-CAL-CISO_2023-06_hourly.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut join = IntensityJoin::new(0);
    join.insert(
        RegionId::from(common::fleet::REGION),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: None,
        },
    );
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let at = chrono::NaiveDateTime::parse_from_str(f[0], "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("{}: {e}: {line}", path.display()))
            .and_utc()
            .timestamp_millis();
        join.record(&IntensityPoint {
            region: RegionId::from(common::fleet::REGION),
            at: UnixMillis(at),
            duration_ms: common::fleet::HOUR,
            value: GramsPerKwh(f[5].parse().unwrap()),
            signal: Signal::Average,
            kind: PointKind::Actual,
            issued_at: None,
            provider: "electricitymaps:US-CAL-CISO".into(),
            model_version: None,
            fetched_at: UnixMillis(at),
        })
        .unwrap();
    }
    join
}

/// Where a 30-day series' time goes, in the process (median of 5): the store's 5-minute read,
/// the aggregation into points, JSON of the points; and the hourly read 1 h / 1 d steps use.
/// With a `cold` store, also its first 5-minute read (nothing cached). Then the 1 h series
/// with figures on average intensity (a join of hourly averages), and which data it was
/// summed from.
async fn series_profile(
    label: &str,
    store: &dyn Store,
    cold: Option<ColdStore<'_>>,
    scope: &TenantScope,
    instance: &InstanceId,
    (from, to): (i64, i64),
) {
    let (from, to) = (UnixMillis(from), UnixMillis(to));
    let mut parts: [Vec<Duration>; 4] = Default::default();
    let mut body = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let rows = store
            .instance_intervals(scope, instance, from, to)
            .await
            .unwrap();
        parts[0].push(t.elapsed());
        let t = Instant::now();
        let points = aggregate_intervals(&rows, from, to, BUCKET, 4, None);
        parts[1].push(t.elapsed());
        let t = Instant::now();
        body = serde_json::to_vec(&points).unwrap().len();
        parts[2].push(t.elapsed());
        let t = Instant::now();
        store
            .instance_hourly_usage(scope, instance, from, to)
            .await
            .unwrap();
        parts[3].push(t.elapsed());
    }
    for p in &mut parts {
        p.sort();
    }
    let med = |i: usize| ms(percentile(&parts[i], 50.0));
    println!(
        "{label} | series 5m profile (median of 5, in the process): store read {:.1} ms, \
         aggregation {:.1} ms, JSON {:.1} ms ({} kB) | hourly read for 1h/1d: {:.1} ms | {}",
        med(0),
        med(1),
        med(2),
        body / 1000,
        med(3),
        load_line()
    );
    if let Some(cold) = cold {
        let mut reads = Vec::new();
        for _ in 0..5 {
            let fresh = cold();
            let t = Instant::now();
            let rows = fresh
                .instance_intervals(scope, instance, from, to)
                .await
                .unwrap();
            reads.push(t.elapsed());
            assert_eq!(
                rows,
                store
                    .instance_intervals(scope, instance, from, to)
                    .await
                    .unwrap(),
                "a first read differs from a cached one"
            );
        }
        reads.sort();
        println!(
            "{label} | series 5m first read (no cached days, median of 5, in the process): \
             store read {:.1} ms | {}",
            ms(percentile(&reads, 50.0)),
            load_line()
        );
    }
    let join = average_join();
    let hours = store
        .instance_hourly_usage(scope, instance, from, to)
        .await
        .unwrap();
    let from_hours = hour_averages(&join, &hours).is_some();
    let req = SeriesRequest {
        from,
        to,
        step: wattprint_api_types::time::Step::Hour,
    };
    let mut with_average = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        instance_series(
            store,
            scope,
            instance,
            req,
            &ApiLimits::default(),
            Some(&join),
        )
        .await
        .unwrap();
        with_average.push(t.elapsed());
    }
    with_average.sort();
    println!(
        "{label} | series 1h with average intensity (Electricity Maps hourly join, median of 5, \
         in the process): {:.1} ms, summed from {} | {}",
        ms(percentile(&with_average, 50.0)),
        if from_hours {
            "hourly totals"
        } else {
            "5-minute intervals (hourly rows without a region)"
        },
        load_line()
    );
}

// ---------------------------------------------------------------------------------------------
// One store

/// Serves the API over `store`, creates the workloads, measures every request.
/// A store like the one benched but as a freshly started process has it (no cached days).
type ColdStore<'a> = &'a (dyn Fn() -> Arc<dyn Store> + Sync);

async fn bench_store(
    cfg: &Config,
    model: &FleetModel,
    label: &str,
    store: Arc<dyn Store>,
    cold: Option<ColdStore<'_>>,
) -> Vec<Row> {
    let fleet = &fleets(cfg)[0];
    let scope = TenantScope::from_verified(TenantId::from(fleet.tenant.as_str()));
    let state = ApiState::new(store.clone(), auth(), catalog(), ApiLimits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(wattprint_query_api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let token = mint_token(
        &auth(),
        &TenantId::from(fleet.tenant.as_str()),
        Duration::from_secs(24 * 3600),
    )
    .unwrap();
    let client = reqwest::Client::new();

    // The workloads, created through the API.
    let days = cfg.days as i64;
    let (month_from, month_to) = (START, START + days * DAY);
    let week = days.min(7);
    let week_from = START + (days - week) / 2 * DAY;
    let week_to = week_from + week * DAY;
    let step = (fleet.instances() / 25).max(1);
    let spread: Vec<u64> = (0..fleet.instances())
        .step_by(step as usize)
        .take(25)
        .collect();
    let ids = |idx: &[u64]| -> Vec<InstanceId> { idx.iter().map(|i| fleet.instance(*i)).collect() };
    // A kept database already holds the workloads of earlier runs: reuse them, so the
    // statement below covers the same workloads run after run.
    let earlier = store.list_workloads(&scope).await.unwrap();
    let create = |instances: Vec<InstanceId>, from: i64, to: i64| {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        let same = earlier
            .iter()
            .find(|w| {
                w.spec.label == "benchmark run"
                    && w.spec.instances == instances
                    && w.spec.from == UnixMillis(from)
                    && w.spec.to == Some(UnixMillis(to))
            })
            .map(|w| w.id.to_string());
        async move {
            if let Some(id) = same {
                return id;
            }
            let resp = client
                .post(format!("{base}/v1/workloads"))
                .bearer_auth(&token)
                .json(&serde_json::json!({
                    "label": "benchmark run",
                    "instance_ids": instances,
                    "from": from,
                    "to": to,
                    "functional_unit": "training run",
                    "functional_units": 1.0,
                }))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status.as_u16(), 201, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let (ragged_from, ragged_to) = (week_from + 7 * 60_000, week_to - 13 * 60_000);
    let w1 = create(ids(&[1]), month_from, month_to).await;
    let w25 = create(ids(&spread), week_from, week_to).await;
    let w25r = create(ids(&spread), ragged_from, ragged_to).await;
    // Two instances (8 GPUs) over the whole range, ragged at both ends.
    let eight = [2, 3];
    let (month_ragged_from, month_ragged_to) = (month_from + 7 * 60_000, month_to - 13 * 60_000);
    let w8r = create(ids(&eight), month_ragged_from, month_ragged_to).await;

    // Store-level figures, checked against the generator's.
    let b = |t: i64| ((t - START) / BUCKET) as u64;
    let t0 = Instant::now();
    let w1_store = store_intervals(store.as_ref(), &scope, &ids(&[1]), month_from, month_to).await;
    assert_figures(
        "one instance, whole range",
        w1_store,
        fleet
            .expected(model, &[1], b(month_from)..b(month_to))
            .into(),
    );
    let w25_store =
        store_intervals(store.as_ref(), &scope, &ids(&spread), week_from, week_to).await;
    assert_figures(
        "25 instances, 7 days",
        w25_store,
        fleet
            .expected(model, &spread, b(week_from)..b(week_to))
            .into(),
    );
    let summary = store
        .tenant_summary(&scope, UnixMillis(month_from), UnixMillis(month_to))
        .await
        .unwrap();
    let summary_store = Figures {
        intervals: summary.totals.gpu_intervals,
        energy_mj: summary.totals.energy.0,
        it_co2e_g: summary.totals.it_co2e.0,
    };
    let all: Vec<u64> = (0..fleet.instances()).collect();
    assert_figures(
        "tenant summary",
        summary_store,
        fleet
            .expected(model, &all, b(month_from)..b(month_to))
            .into(),
    );
    let ragged = ragged_expected(fleet, model, &spread, ragged_from, ragged_to);
    let ragged8 = ragged_expected(fleet, model, &eight, month_ragged_from, month_ragged_to);
    println!(
        "{label}: store-level figures equal the generator's ({:.1} s to read them); \
         month: {} GPU-intervals, {:.3} MWh, {:.3} t CO2e (IT)",
        t0.elapsed().as_secs_f64(),
        summary_store.intervals,
        summary_store.energy_mj as f64 / 3.6e12,
        summary_store.it_co2e_g / 1e6
    );

    series_profile(
        label,
        store.as_ref(),
        cold,
        &scope,
        &fleet.instance(1),
        (month_from, month_to),
    )
    .await;

    // The calendar month the fleet's data starts in (the statement's period; the fleet's 30
    // days from 2023-06-08 leave 23 days of it).
    let month = wattprint_query_api::statements::Period::containing(UnixMillis(month_from));
    let period = month.to_string();
    let (cal_from, cal_to) = (month.start().0, month.end().0);
    let cal = store
        .tenant_summary(&scope, UnixMillis(cal_from), UnixMillis(cal_to))
        .await
        .unwrap();
    let statement_store = Figures {
        intervals: cal.totals.gpu_intervals,
        energy_mj: cal.totals.energy.0,
        it_co2e_g: cal.totals.it_co2e.0,
    };
    // Statement generation, timed in the process (over HTTP it outlasts the 30 s request
    // timeout at this size: it sums every interval of the month in the query API).
    let catalog = wattprint_core::sci::HardwareCatalog::default();
    let src = wattprint_query_api::statements::Sources {
        store: store.as_ref(),
        catalog: &catalog,
        join: None,
        market: None,
    };
    let t0 = Instant::now();
    let statement = wattprint_query_api::statements::compute(src, &scope, month, UnixMillis::now())
        .await
        .unwrap();
    let took = t0.elapsed();
    let computed = Figures {
        intervals: statement.totals.gpu_intervals,
        energy_mj: statement.totals.it_energy_mj,
        it_co2e_g: statement.totals.marginal_it_co2e_g,
    };
    same("statement totals", computed, statement_store).unwrap();
    println!(
        "{label} | statement {period}: {} GPUs, {} GPU-intervals | computed in {:.1} s \
         (Statements::compute, one run) | {}",
        fleet.gpus,
        statement_store.intervals,
        took.as_secs_f64(),
        load_line()
    );
    let range = format!("from={month_from}&to={month_to}");
    let queries: Vec<(String, String, Query)> = vec![
        (
            format!("workload: 1 instance (4 GPUs) × {days} d"),
            format!("{base}/v1/workloads/{w1}"),
            Query::Workload { figures: w1_store },
        ),
        (
            format!(
                "workload: {} instances ({} GPUs) × {week} d",
                spread.len(),
                spread.len() * 4
            ),
            format!("{base}/v1/workloads/{w25}"),
            Query::Workload { figures: w25_store },
        ),
        (
            format!(
                "workload: {} instances × {week} d, ragged edges",
                spread.len()
            ),
            format!("{base}/v1/workloads/{w25r}"),
            Query::Workload { figures: ragged },
        ),
        (
            format!("summary: {} GPUs × {days} d", fleet.gpus),
            format!("{base}/v1/summary?{range}"),
            Query::Summary {
                instances: summary.instances.len(),
                figures: summary_store,
            },
        ),
        (
            format!("series: 1 instance × {days} d, 5m"),
            format!(
                "{base}/v1/instances/{}/series?{range}&step=5m",
                fleet.instance(1)
            ),
            Query::Series {
                points: (days * 288) as usize,
                figures: w1_store,
            },
        ),
        (
            format!("series: 1 instance × {days} d, 1h"),
            format!(
                "{base}/v1/instances/{}/series?{range}&step=1h",
                fleet.instance(1)
            ),
            Query::Series {
                points: (days * 24) as usize,
                figures: w1_store,
            },
        ),
        (
            format!("series: 1 instance × {days} d, 1d"),
            format!(
                "{base}/v1/instances/{}/series?{range}&step=1d",
                fleet.instance(1)
            ),
            Query::Series {
                points: days as usize,
                figures: w1_store,
            },
        ),
        (
            format!(
                "workload: {} instances ({} GPUs) × {days} d, ragged edges",
                eight.len(),
                eight.len() * 4
            ),
            format!("{base}/v1/workloads/{w8r}"),
            Query::Workload { figures: ragged8 },
        ),
    ];

    let mut rows = Vec::new();
    for (name, url, q) in &queries {
        let m = sequential(cfg, name, url, &token, q).await;
        println!(
            "{label} | {name} | 1 client: p50 {:.1} ms, p99 {:.1} ms (n = {}) | {}",
            ms(percentile(&m.times, 50.0)),
            ms(percentile(&m.times, 99.0)),
            m.times.len(),
            load_line()
        );
        rows.push(Row {
            store: label.to_owned(),
            query: name.clone(),
            clients: 1,
            m,
        });
        let m = concurrent(cfg, name, url, &token, q).await;
        println!(
            "{label} | {name} | {} clients: p50 {:.1} ms, p99 {:.1} ms, {:.1} req/s (n = {})",
            cfg.clients,
            ms(percentile(&m.times, 50.0)),
            ms(percentile(&m.times, 99.0)),
            m.times.len() as f64 / m.wall.as_secs_f64(),
            m.times.len(),
        );
        rows.push(Row {
            store: label.to_owned(),
            query: name.clone(),
            clients: cfg.clients,
            m,
        });
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    rows
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let cfg = Config::from_env();
    let model = FleetModel::real();
    println!(
        "api_latency: {} GPUs × {} days, {} requests (+{} warm-ups) per measurement, {} \
         concurrent clients, {} CPUs; {}",
        cfg.gpus,
        cfg.days,
        cfg.repeats,
        cfg.warmup,
        cfg.clients,
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        load_line()
    );
    let mut rows = Vec::new();
    for kind in cfg.stores.clone() {
        match kind.as_str() {
            "sqlite" => {
                let (store, delete) = sqlite_store(&cfg, &model).await;
                rows.extend(bench_store(&cfg, &model, "SQLite", store, None).await);
                if let Some(path) = delete {
                    remove_sqlite(&path);
                }
            }
            "clickhouse" => {
                let (store, drop) = clickhouse_store(&cfg, &model).await;
                let cold = store.clone();
                let cold = move || Arc::new(cold.with_empty_day_cache()) as Arc<dyn Store>;
                let store = Arc::new(store);
                rows.extend(bench_store(&cfg, &model, "ClickHouse", store, Some(&cold)).await);
                if let Some(db) = drop {
                    raw_client(&clickhouse_url())
                        .query(&format!("DROP DATABASE IF EXISTS {db}"))
                        .execute()
                        .await
                        .unwrap();
                }
            }
            other => panic!("WPBENCH_STORES: unknown store {other:?} (sqlite, clickhouse)"),
        }
    }
    print_table(&rows);
    println!("\nat the end: {}", load_line());
}
