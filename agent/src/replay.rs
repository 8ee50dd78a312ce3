//! A sensor that replays a recorded NVML trace (`data/h100-trace/`) as any number of GPUs.
//!
//! The replay is exact: every reading carries a virtual energy counter built from the trace's
//! own counter deltas, so energy computed from replayed readings can be checked against the
//! trace to the millijoule.
//!
//! # Semantics
//!
//! Let the trace have rows `0..n`. The trace is looped: loop 0 plays rows `0..n`, loop `k > 0`
//! plays rows `1..n` (its first row coincides with the last row of loop `k − 1`, so the wrap
//! invents no energy and no time). Positions on this looped timeline are numbered `g = 0, 1, …`.
//!
//! GPU `i` starts at position `offset_i` (0 for GPU 0, seeded-random for the others) and plays
//! `loops × (n − 1)` steps after it, i.e. `loops × (n − 1) + 1` readings. Its virtual time at
//! position `g` is `start_at + T(g) − T(offset_i)`, where
//! `T(g) = t[row(g)] − t[0] + loop(g) × (t[n−1] − t[0])` and `t` is the CSV time in ms
//! (`(unix_s × 1000).round()`). Its virtual counter starts at a large seeded base (as if the
//! driver had been loaded long ago) and adds the trace's counter delta of every step. A step
//! where the trace's counter goes backwards is replayed as a driver reload: the virtual counter
//! drops to the trace's value.
//!
//! With [`Pacing::AsFastAsPossible`] each read returns the next position. With
//! [`Pacing::RealTime`] (or [`Pacing::Accelerated`], the same with virtual time running a whole
//! number of times faster) `start_at` is tied to the wall clock at construction, the first read
//! returns the start position, and every later read
//! returns the latest position whose virtual time has passed (sleeping until the next one is
//! due if none has passed since the previous read), so no virtual time is returned twice.

use crate::sensor::{GpuInfo, GpuSensor, Reading, SensorError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wattprint_core::{GpuUuid, Millijoules, Milliwatts, UnixMillis};

/// How fast the replay produces readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Virtual time follows the wall clock from construction on.
    RealTime,
    /// Virtual time runs this many times faster than the wall clock from construction on
    /// (replays of the past at a controlled rate: demos, load and fault tests). 1 is
    /// [`Pacing::RealTime`].
    Accelerated(u32),
    /// One reading per trace row per read, no sleeping.
    AsFastAsPossible,
}

/// What to replay and as how many GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayConfig {
    /// The trace CSV (columns as in `data/h100-trace/README.md`).
    pub trace_path: PathBuf,
    /// Number of GPUs to simulate.
    pub gpus: u32,
    /// Seed for uuids, start offsets and counter bases.
    pub seed: u64,
    /// Virtual time of the first reading of every GPU.
    pub start_at: UnixMillis,
    /// How fast readings come.
    pub pacing: Pacing,
    /// Passes over the trace per GPU; `None` replays forever.
    pub loops: Option<u32>,
    /// Model name reported for every GPU.
    pub model: String,
    /// Power limit reported for every GPU.
    pub power_limit: Milliwatts,
}

impl ReplayConfig {
    /// One H100 (700 W) replaying `trace_path` once, as fast as possible, starting now, seed 0.
    pub fn new(trace_path: impl Into<PathBuf>) -> Self {
        Self {
            trace_path: trace_path.into(),
            gpus: 1,
            seed: 0,
            start_at: now_millis(),
            pacing: Pacing::AsFastAsPossible,
            loops: Some(1),
            model: "NVIDIA H100 80GB HBM3".to_owned(),
            power_limit: Milliwatts(700_000),
        }
    }
}

/// The wall clock in Unix milliseconds.
pub(crate) fn now_millis() -> UnixMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// What the seeded generator is drawn for; each purpose has its own ChaCha stream per GPU.
#[derive(Clone, Copy)]
enum Purpose {
    Uuid = 0,
    Offset = 1,
    Base = 2,
}

fn rng_for(seed: u64, index: u32, purpose: Purpose) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(index) << 8) | purpose as u64);
    rng
}

/// The uuid replayed GPU `index` gets under `seed`: deterministic and NVML-looking
/// (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase hex).
pub fn replay_gpu_uuid(seed: u64, index: u32) -> GpuUuid {
    let mut bytes = [0u8; 16];
    rng_for(seed, index, Purpose::Uuid).fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    GpuUuid::new(format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// The PCI bus id replayed GPU `index` gets.
pub fn replay_pci_bus_id(index: u32) -> String {
    format!("00000000:{:02X}:00.0", index + 1)
}

/// One parsed trace row.
#[derive(Debug, Clone)]
struct Row {
    t_ms: i64,
    power: u32,
    counter: u64,
    util_gpu_pct: u32,
    sm_clock_mhz: u32,
    temp_c: u32,
    mem_used_bytes: u64,
}

/// Replay state of one GPU.
#[derive(Debug, Clone)]
struct GpuState {
    /// First position.
    offset: u64,
    /// Last position to play (inclusive); `None` = forever.
    end: Option<u64>,
    /// Next position to return.
    next: u64,
    /// Virtual counter at `next − 1` (or at `offset` before the first read).
    counter: u64,
    /// Whether position `offset` has been passed (its counter is `base`).
    started: bool,
}

/// Replays a recorded trace as `gpus` GPUs; see the module docs for the exact semantics.
#[derive(Debug)]
pub struct ReplaySensor {
    config: ReplayConfig,
    rows: Vec<Row>,
    gpus: Vec<GpuInfo>,
    state: Vec<GpuState>,
    /// Wall-clock instant that corresponds to `config.start_at` (real-time pacing).
    anchor: Instant,
}

const REQUIRED_COLUMNS: [&str; 7] = [
    "unix_s",
    "power_mW",
    "energy_counter_mJ",
    "util_gpu_pct",
    "sm_clock_mhz",
    "temp_c",
    "mem_used_bytes",
];

fn parse_trace(path: &Path) -> Result<Vec<Row>, SensorError> {
    let io = |source| SensorError::TraceIo {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let row_err = |line: u64, message: String| SensorError::TraceRow {
        path: path.to_owned(),
        line,
        message,
    };
    let headers = reader
        .headers()
        .map_err(|e| row_err(1, format!("bad header: {e}")))?
        .clone();
    let mut index = [0usize; 7];
    for (slot, name) in index.iter_mut().zip(REQUIRED_COLUMNS) {
        *slot = headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| {
                row_err(
                    1,
                    format!(
                        "header has no `{name}` column (found: {})",
                        headers.iter().collect::<Vec<_>>().join(",")
                    ),
                )
            })?;
    }
    let mut rows: Vec<Row> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            row_err(line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |col: usize| -> Result<&str, SensorError> {
            let name = REQUIRED_COLUMNS[col];
            record
                .get(index[col])
                .map(str::trim)
                .ok_or_else(|| row_err(line, format!("missing column `{name}`")))
        };
        fn int<T: std::str::FromStr>(
            name: &str,
            value: &str,
            line: u64,
            err: &dyn Fn(u64, String) -> SensorError,
        ) -> Result<T, SensorError> {
            value.parse().map_err(|_| {
                err(
                    line,
                    format!("column `{name}`: {value:?} is not a non-negative integer"),
                )
            })
        }
        let unix_s_text = field(0)?;
        let unix_s: f64 = unix_s_text
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                row_err(
                    line,
                    format!("column `unix_s`: {unix_s_text:?} is not a number"),
                )
            })?;
        let row = Row {
            t_ms: (unix_s * 1000.0).round() as i64,
            power: int("power_mW", field(1)?, line, &row_err)?,
            counter: int("energy_counter_mJ", field(2)?, line, &row_err)?,
            util_gpu_pct: int("util_gpu_pct", field(3)?, line, &row_err)?,
            sm_clock_mhz: int("sm_clock_mhz", field(4)?, line, &row_err)?,
            temp_c: int("temp_c", field(5)?, line, &row_err)?,
            mem_used_bytes: int("mem_used_bytes", field(6)?, line, &row_err)?,
        };
        if let Some(prev) = rows.last() {
            if row.t_ms <= prev.t_ms {
                return Err(row_err(
                    line,
                    format!(
                        "time {} ms is not after the previous row's {} ms (rows must be in time order)",
                        row.t_ms, prev.t_ms
                    ),
                ));
            }
        }
        rows.push(row);
    }
    if rows.len() < 2 {
        return Err(SensorError::Trace {
            path: path.to_owned(),
            message: format!("needs at least 2 rows to replay, has {}", rows.len()),
        });
    }
    Ok(rows)
}

impl ReplaySensor {
    /// Parses the trace and sets up `config.gpus` GPUs. Errors name the file and line of a bad
    /// row (unparsable values, rows out of time order).
    pub fn new(config: ReplayConfig) -> Result<Self, SensorError> {
        let anchor = Instant::now();
        let trace_err = |message: &str| SensorError::Trace {
            path: config.trace_path.clone(),
            message: message.to_owned(),
        };
        if config.gpus == 0 {
            return Err(trace_err("replay needs at least one GPU (gpus = 0)"));
        }
        if config.loops == Some(0) {
            return Err(trace_err("loops must be at least 1 (or None for forever)"));
        }
        let rows = parse_trace(&config.trace_path)?;
        let n = rows.len() as u64;
        let mut gpus = Vec::with_capacity(config.gpus as usize);
        let mut state = Vec::with_capacity(config.gpus as usize);
        for i in 0..config.gpus {
            gpus.push(GpuInfo {
                uuid: replay_gpu_uuid(config.seed, i),
                pci_bus_id: replay_pci_bus_id(i),
                model: config.model.clone(),
                power_limit: config.power_limit,
            });
            let offset = if i == 0 {
                0
            } else {
                rng_for(config.seed, i, Purpose::Offset).random_range(0..n - 1)
            };
            let jitter: u64 = rng_for(config.seed, i, Purpose::Base).random_range(0..100_000);
            let base = 5_000_000_000 + u64::from(i) * 1_000_000 + jitter;
            state.push(GpuState {
                offset,
                end: config.loops.map(|l| offset + u64::from(l) * (n - 1)),
                next: offset,
                counter: base,
                started: false,
            });
        }
        Ok(Self {
            config,
            rows,
            gpus,
            state,
            anchor,
        })
    }

    /// Number of rows in the trace.
    pub fn trace_rows(&self) -> usize {
        self.rows.len()
    }

    /// Trace row at which GPU `gpu_index` starts (0 for GPU 0, seeded for the others).
    pub fn start_row(&self, gpu_index: usize) -> Option<usize> {
        self.state.get(gpu_index).map(|s| s.offset as usize)
    }

    /// The configuration this sensor replays.
    pub fn config(&self) -> &ReplayConfig {
        &self.config
    }

    fn n(&self) -> u64 {
        self.rows.len() as u64
    }

    /// Trace row of position `g`.
    fn row(&self, g: u64) -> usize {
        if g == 0 {
            0
        } else {
            ((g - 1) % (self.n() - 1) + 1) as usize
        }
    }

    /// `T(g)`: ms from the trace's first row, across loops.
    fn time(&self, g: u64) -> i64 {
        let first = self.rows[0].t_ms;
        let period = self.rows[self.rows.len() - 1].t_ms - first;
        let lap = if g == 0 { 0 } else { (g - 1) / (self.n() - 1) };
        self.rows[self.row(g)].t_ms - first + lap as i64 * period
    }

    fn virtual_time(&self, gpu: usize, g: u64) -> UnixMillis {
        UnixMillis(self.config.start_at.0 + self.time(g) - self.time(self.state[gpu].offset))
    }

    /// Moves GPU `gpu` to position `target` (≥ its next position), updating the virtual counter,
    /// and returns the reading there with `power_max` over the positions passed.
    fn advance_to(&mut self, gpu: usize, target: u64) -> Reading {
        let mut power_max = 0u32;
        let mut g = self.state[gpu].next;
        while g <= target {
            let r = self.row(g);
            if self.state[gpu].started {
                // Step into position g: trace delta of row r against its predecessor (row 0
                // of a later loop coincides with row n−1 of the one before).
                let (prev, cur) = (self.rows[r - 1].counter, self.rows[r].counter);
                let st = &mut self.state[gpu];
                st.counter = if cur >= prev {
                    st.counter + (cur - prev)
                } else {
                    cur
                };
            } else {
                self.state[gpu].started = true;
            }
            power_max = power_max.max(self.rows[r].power);
            g += 1;
        }
        self.state[gpu].next = target + 1;
        let row = &self.rows[self.row(target)];
        Reading {
            at: self.virtual_time(gpu, target),
            energy_counter: Some(Millijoules(self.state[gpu].counter)),
            power: Milliwatts(row.power),
            power_max: Milliwatts(power_max.max(row.power)),
            util_gpu_pct: row.util_gpu_pct,
            mem_used_bytes: row.mem_used_bytes,
            temp_c: row.temp_c,
            sm_clock_mhz: row.sm_clock_mhz,
        }
    }

    /// Virtual ms per wall-clock ms.
    fn speed(&self) -> u32 {
        match self.config.pacing {
            Pacing::Accelerated(x) => x.max(1),
            Pacing::RealTime | Pacing::AsFastAsPossible => 1,
        }
    }

    fn virtual_now(&self) -> UnixMillis {
        let elapsed = i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX / 2);
        UnixMillis(self.config.start_at.0 + elapsed.saturating_mul(i64::from(self.speed())))
    }
}

impl GpuSensor for ReplaySensor {
    fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn read(&mut self, gpu_index: usize) -> Result<Option<Reading>, SensorError> {
        let Some(st) = self.state.get(gpu_index) else {
            return Err(SensorError::NoSuchGpu {
                index: gpu_index,
                count: self.state.len(),
            });
        };
        let (next, end) = (st.next, st.end);
        if end.is_some_and(|end| next > end) {
            return Ok(None);
        }
        let target = match self.config.pacing {
            Pacing::AsFastAsPossible => next,
            // The first reading is the start itself, however late it is taken: the replayed
            // GPU's counter is read at `start_at`, so no energy after it goes unreported.
            Pacing::RealTime | Pacing::Accelerated(_) if !self.state[gpu_index].started => next,
            Pacing::RealTime | Pacing::Accelerated(_) => {
                let due = self.virtual_time(gpu_index, next);
                let now = self.virtual_now();
                if due > now {
                    // Nothing new since the previous read: wait for the next row.
                    let wait_ms = due.since(now) as u64 / u64::from(self.speed());
                    std::thread::sleep(Duration::from_millis(wait_ms.max(1)));
                    next
                } else {
                    // Latest position whose time has passed: gallop, then bisect. Invariant:
                    // `lo` has passed; `hi` has not, or lies beyond the last position.
                    let mut lo = next;
                    let mut step = 1u64;
                    let mut hi = loop {
                        let candidate = lo + step;
                        if let Some(end) = end.filter(|&end| candidate > end) {
                            break end + 1;
                        }
                        if self.virtual_time(gpu_index, candidate) > now {
                            break candidate;
                        }
                        lo = candidate;
                        step *= 2;
                    };
                    while hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        if self.virtual_time(gpu_index, mid) <= now {
                            lo = mid;
                        } else {
                            hi = mid;
                        }
                    }
                    lo
                }
            }
        };
        Ok(Some(self.advance_to(gpu_index, target)))
    }

    fn unpaced(&self) -> bool {
        self.config.pacing == Pacing::AsFastAsPossible
    }

    fn time_scale(&self) -> u32 {
        self.speed()
    }
}
