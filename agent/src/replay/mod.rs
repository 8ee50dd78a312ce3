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
//!
//! # Partitions
//!
//! [`ReplaySensor::with_layout`] makes every replayed GPU MIG-enabled with the given GPU
//! instances, or a vGPU host with the given active vGPUs ([`ReplayLayout`]). The GPU's energy is
//! still the trace's; each part replays the trace's utilisation (and memory) column from its own
//! seeded offset (part 0 in step with the GPU), so the parts' loads differ the way separate
//! workloads do. Part uuids and VM ids are seeded ([`replay_part_uuid`], [`replay_vm_uuid`]).

use crate::sensor::{
    Gauges, GpuInfo, GpuLayout, GpuSensor, MigInstance, MigMode, Reading, SensorError,
    VgpuInstance, Virtualization,
};
mod history;
mod trace;

pub use history::HistorySpan;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trace::{parse_trace, Row};
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

/// A MIG GPU instance profile (`3g.40gb`): compute slices and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigProfile {
    /// Name as NVML writes it, e.g. `3g.40gb`.
    pub name: String,
    /// Compute slices (the number before `g`).
    pub compute_slices: u8,
    /// Memory, MiB (the number before `gb`, × 1024).
    pub memory_mib: u64,
}

/// Compute slices of a full H100 (and A100): MIG profiles of one GPU hold at most this many.
pub const MIG_COMPUTE_SLICES: u8 = 7;

impl MigProfile {
    /// Parses `3g.40gb` (also `1g.10gb+me`): `<slices>g.<memory>gb`.
    pub fn parse(name: &str) -> Result<Self, String> {
        let bad = || format!("MIG profile {name:?} is not like \"3g.40gb\" (slices g . memory gb)");
        let (slices, rest) = name.trim().split_once("g.").ok_or_else(bad)?;
        let compute_slices: u8 = slices.parse().map_err(|_| bad())?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || !rest[digits.len()..].starts_with("gb") {
            return Err(bad());
        }
        let memory_gb: u64 = digits.parse().map_err(|_| bad())?;
        if !(1..=MIG_COMPUTE_SLICES).contains(&compute_slices) || memory_gb == 0 {
            return Err(format!(
                "MIG profile {name:?}: slices must be 1..={MIG_COMPUTE_SLICES} and memory positive"
            ));
        }
        Ok(Self {
            name: name.trim().to_owned(),
            compute_slices,
            memory_mib: memory_gb * 1024,
        })
    }
}

/// A vGPU type (`H100-20C`): its framebuffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgpuProfile {
    /// Name as NVML writes it, e.g. `NVIDIA H100-20C`.
    pub name: String,
    /// Framebuffer, MiB (the number after the last `-`, in GB, × 1024).
    pub framebuffer_mib: u32,
}

impl VgpuProfile {
    /// Parses `H100-20C` or `NVIDIA H100-20C`: framebuffer GB after the last `-`, then the
    /// series letter (A, B, C or Q).
    pub fn parse(name: &str) -> Result<Self, String> {
        let bad = || format!("vGPU type {name:?} is not like \"H100-20C\" (model-<GB><series>)");
        let (_, size) = name.trim().rsplit_once('-').ok_or_else(bad)?;
        let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
        let series = &size[digits.len()..];
        if digits.is_empty() || !matches!(series, "A" | "B" | "C" | "Q") {
            return Err(bad());
        }
        let gb: u32 = digits.parse().map_err(|_| bad())?;
        if gb == 0 || gb > 1024 {
            return Err(format!(
                "vGPU type {name:?}: framebuffer must be 1..=1024 GB"
            ));
        }
        Ok(Self {
            name: name.trim().to_owned(),
            framebuffer_mib: gb * 1024,
        })
    }
}

/// How every replayed GPU is partitioned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReplayLayout {
    /// Whole GPUs (the default).
    #[default]
    Whole,
    /// MIG on, with these GPU instances (at most 7 compute slices in all).
    Mig(Vec<MigProfile>),
    /// vGPU host, with these active vGPUs (one VM each; at most the GPU's 80 GB in all).
    Vgpu(Vec<VgpuProfile>),
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
    PartOffset = 3,
    PartUuid = 4,
    VmUuid = 5,
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

fn uuid_from(rng: &mut ChaCha8Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The uuid part `part` of replayed GPU `index` gets under `seed` and `layout`: `MIG-<uuid>`
/// for a MIG GPU instance, a bare uuid for a vGPU (as NVML reports them); `None` for
/// [`ReplayLayout::Whole`].
pub fn replay_part_uuid(
    seed: u64,
    index: u32,
    part: usize,
    layout: &ReplayLayout,
) -> Option<GpuUuid> {
    let mut rng = rng_for(seed, index, Purpose::PartUuid);
    let mut uuid = String::new();
    for _ in 0..=part {
        uuid = uuid_from(&mut rng);
    }
    match layout {
        ReplayLayout::Whole => None,
        ReplayLayout::Mig(_) => Some(GpuUuid::new(format!("MIG-{uuid}"))),
        ReplayLayout::Vgpu(_) => Some(GpuUuid::new(uuid)),
    }
}

/// The VM id (a libvirt domain uuid) holding vGPU `part` of replayed GPU `index` under `seed`.
pub fn replay_vm_uuid(seed: u64, index: u32, part: usize) -> String {
    let mut rng = rng_for(seed, index, Purpose::VmUuid);
    let mut uuid = String::new();
    for _ in 0..=part {
        uuid = uuid_from(&mut rng);
    }
    uuid
}

/// The PCI bus id replayed GPU `index` gets.
pub fn replay_pci_bus_id(index: u32) -> String {
    format!("00000000:{:02X}:00.0", index + 1)
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
    /// Position of the latest reading.
    last: Option<u64>,
}

/// One part (MIG GPU instance or vGPU) of every replayed GPU, per GPU.
#[derive(Debug, Clone)]
struct Part {
    uuid: GpuUuid,
    vm_id: String,
    /// Trace positions the part's utilisation runs ahead of its GPU.
    offset: u64,
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
    layout: ReplayLayout,
    /// Per GPU, its parts (empty for whole GPUs).
    parts: Vec<Vec<Part>>,
    /// Steps of the replayed host's wall clock, by virtual time since the start.
    clock_steps: Vec<ClockStep>,
}

/// A step of the replayed host's wall clock (NTP stepping it, an operator setting it): from
/// `after_ms` of virtual time since the start on, readings are stamped `step_ms` later
/// (negative: earlier) than the trace's time, while their monotonic time runs on unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStep {
    /// Virtual ms since the replay's start at which the wall clock steps.
    pub after_ms: i64,
    /// How far it steps, ms (negative: back).
    pub step_ms: i64,
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
        let gpu_count = config.gpus as usize;
        let n = rows.len() as u64;
        let mut gpus = Vec::with_capacity(config.gpus as usize);
        let mut state = Vec::with_capacity(config.gpus as usize);
        for i in 0..config.gpus {
            gpus.push(GpuInfo {
                uuid: replay_gpu_uuid(config.seed, i),
                pci_bus_id: replay_pci_bus_id(i),
                model: config.model.clone(),
                power_limit: config.power_limit,
                mig_mode: MigMode::Disabled,
                virtualization: Virtualization::None,
                energy_counter: true,
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
                last: None,
            });
        }
        Ok(Self {
            config,
            rows,
            gpus,
            state,
            anchor,
            layout: ReplayLayout::Whole,
            parts: vec![Vec::new(); gpu_count],
            clock_steps: Vec::new(),
        })
    }

    /// Partitions every GPU as `layout` (see the module docs). Errors when the parts do not
    /// fit one H100: more than 7 MIG compute slices, or more than 80 GB of vGPU framebuffer.
    pub fn with_layout(mut self, layout: ReplayLayout) -> Result<Self, SensorError> {
        let err = |message: String| SensorError::Trace {
            path: self.config.trace_path.clone(),
            message,
        };
        let parts = match &layout {
            ReplayLayout::Whole => 0,
            ReplayLayout::Mig(profiles) => {
                let slices: u32 = profiles.iter().map(|p| u32::from(p.compute_slices)).sum();
                if slices > u32::from(MIG_COMPUTE_SLICES) {
                    return Err(err(format!(
                        "MIG layout holds {slices} compute slices; an H100 has {MIG_COMPUTE_SLICES}"
                    )));
                }
                profiles.len()
            }
            ReplayLayout::Vgpu(profiles) => {
                let fb: u64 = profiles.iter().map(|p| u64::from(p.framebuffer_mib)).sum();
                if fb > 80 * 1024 {
                    return Err(err(format!(
                        "vGPU layout holds {fb} MiB of framebuffer; an H100 has 80 GB"
                    )));
                }
                profiles.len()
            }
        };
        let n = self.n();
        let seed = self.config.seed;
        for (i, gpu) in self.gpus.iter_mut().enumerate() {
            let index = i as u32;
            let (mig_mode, virtualization) = match layout {
                ReplayLayout::Whole => (MigMode::Disabled, Virtualization::None),
                ReplayLayout::Mig(_) => (MigMode::Enabled, Virtualization::None),
                ReplayLayout::Vgpu(_) => (MigMode::Disabled, Virtualization::VgpuHost),
            };
            gpu.mig_mode = mig_mode;
            gpu.virtualization = virtualization;
            let mut offsets = rng_for(seed, index, Purpose::PartOffset);
            self.parts[i] = (0..parts)
                .map(|k| Part {
                    uuid: replay_part_uuid(seed, index, k, &layout)
                        .unwrap_or_else(|| gpu.uuid.clone()),
                    vm_id: replay_vm_uuid(seed, index, k),
                    offset: if k == 0 {
                        0
                    } else {
                        offsets.random_range(0..n - 1)
                    },
                })
                .collect();
        }
        self.layout = layout;
        Ok(self)
    }

    /// Steps the replayed host's wall clock as `steps` say (tests of clock steps): readings
    /// then carry a wall time that jumps while their monotonic time does not.
    pub fn with_clock_steps(mut self, steps: Vec<ClockStep>) -> Self {
        self.clock_steps = steps;
        self
    }

    /// Moves GPU `gpu_index` on by `steps` positions without returning a reading, as if the
    /// GPU ran while nobody read it (an agent down, a stalled reader): its counter still
    /// counts every step's energy. Stops at the GPU's last position.
    pub fn skip(&mut self, gpu_index: usize, steps: u64) -> Result<(), SensorError> {
        let Some(st) = self.state.get(gpu_index) else {
            return Err(SensorError::NoSuchGpu {
                index: gpu_index,
                count: self.state.len(),
            });
        };
        if steps == 0 {
            return Ok(());
        }
        let target = st.next + steps - 1;
        let target = st.end.map_or(target, |end| target.min(end));
        if target >= st.next {
            self.advance_to(gpu_index, target);
        }
        Ok(())
    }

    /// Ends GPU `gpu_index`'s replay after `positions` positions from its start (sooner than
    /// its loops would), so that a test can stop an agent at a known reading.
    pub fn stop_after(&mut self, gpu_index: usize, positions: u64) {
        if let Some(st) = self.state.get_mut(gpu_index) {
            let last = st.offset + positions;
            st.end = Some(st.end.map_or(last, |end| end.min(last)));
        }
    }

    /// The layout every GPU has.
    pub fn layout_config(&self) -> &ReplayLayout {
        &self.layout
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

    /// Virtual ms since GPU `gpu`'s start at position `g`: its monotonic time.
    fn mono(&self, gpu: usize, g: u64) -> i64 {
        self.time(g) - self.time(self.state[gpu].offset)
    }

    /// The replayed host's wall clock at position `g`: the virtual time, stepped as
    /// [`ReplaySensor::with_clock_steps`] says.
    fn wall_time(&self, gpu: usize, g: u64) -> UnixMillis {
        let mono = self.mono(gpu, g);
        let step: i64 = self
            .clock_steps
            .iter()
            .filter(|s| s.after_ms <= mono)
            .map(|s| s.step_ms)
            .sum();
        UnixMillis(self.virtual_time(gpu, g).0 + step)
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
        self.state[gpu].last = Some(target);
        let row = &self.rows[self.row(target)];
        Reading {
            at: self.wall_time(gpu, target),
            mono_ms: self.mono(gpu, target),
            energy_counter: Some(Millijoules(self.state[gpu].counter)),
            power: Milliwatts(row.power),
            power_max: Milliwatts(power_max.max(row.power)),
            util_gpu_pct: row.util_gpu_pct,
            mem_used_bytes: row.mem_used_bytes,
            temp_c: row.temp_c,
            sm_clock_mhz: row.sm_clock_mhz,
        }
    }

    /// The latest position at or after `lo` (which has passed) whose virtual time is not after
    /// `now`, no further than `end`: gallop, then bisect.
    fn latest_passed(&self, gpu: usize, lo: u64, end: Option<u64>, now: UnixMillis) -> u64 {
        // Invariant: `lo` has passed; `hi` has not, or lies beyond the last position.
        let mut lo = lo;
        let mut step = 1u64;
        let mut hi = loop {
            let candidate = lo + step;
            if let Some(end) = end.filter(|&end| candidate > end) {
                break end + 1;
            }
            if self.virtual_time(gpu, candidate) > now {
                break candidate;
            }
            lo = candidate;
            step *= 2;
        };
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.virtual_time(gpu, mid) <= now {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
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
                    self.latest_passed(gpu_index, next, end, now)
                }
            }
        };
        Ok(Some(self.advance_to(gpu_index, target)))
    }

    /// The trace row due now, without moving the energy reads on: paced replays only (an
    /// unpaced replay's every read is already one trace row).
    fn read_gauges(&mut self, gpu_index: usize) -> Result<Option<Gauges>, SensorError> {
        let Some(st) = self.state.get(gpu_index) else {
            return Err(SensorError::NoSuchGpu {
                index: gpu_index,
                count: self.state.len(),
            });
        };
        if self.config.pacing == Pacing::AsFastAsPossible || st.end.is_some_and(|e| st.next > e) {
            return Ok(None);
        }
        let from = st.last.unwrap_or(st.offset);
        let g = self.latest_passed(gpu_index, from, st.end, self.virtual_now());
        let row = &self.rows[self.row(g)];
        Ok(Some(Gauges {
            at: self.wall_time(gpu_index, g),
            power: Milliwatts(row.power),
            util_gpu_pct: row.util_gpu_pct,
            temp_c: row.temp_c,
            sm_clock_mhz: row.sm_clock_mhz,
        }))
    }

    fn unpaced(&self) -> bool {
        self.config.pacing == Pacing::AsFastAsPossible
    }

    fn time_scale(&self) -> u32 {
        self.speed()
    }

    fn layout(&mut self, gpu_index: usize) -> Result<GpuLayout, SensorError> {
        let Some(st) = self.state.get(gpu_index) else {
            return Err(SensorError::NoSuchGpu {
                index: gpu_index,
                count: self.state.len(),
            });
        };
        let at = st.last.unwrap_or(st.offset);
        let part_row = |part: &Part| &self.rows[self.row(at + part.offset)];
        let parts = &self.parts[gpu_index];
        Ok(match &self.layout {
            ReplayLayout::Whole => GpuLayout::Whole,
            ReplayLayout::Mig(profiles) => GpuLayout::Mig(
                profiles
                    .iter()
                    .zip(parts)
                    .map(|(p, part)| {
                        let row = part_row(part);
                        MigInstance {
                            uuid: part.uuid.clone(),
                            profile: p.name.clone(),
                            compute_slices: p.compute_slices,
                            memory_mib: p.memory_mib,
                            util_pct: Some(row.util_gpu_pct.min(100) as u8),
                            mem_used_bytes: Some(
                                row.mem_used_bytes * u64::from(p.compute_slices)
                                    / u64::from(MIG_COMPUTE_SLICES),
                            ),
                        }
                    })
                    .collect(),
            ),
            ReplayLayout::Vgpu(profiles) => GpuLayout::Vgpu(
                profiles
                    .iter()
                    .zip(parts)
                    .map(|(p, part)| {
                        let row = part_row(part);
                        VgpuInstance {
                            uuid: part.uuid.clone(),
                            vm_id: part.vm_id.clone(),
                            profile: p.name.clone(),
                            framebuffer_mib: p.framebuffer_mib,
                            util_pct: Some(row.util_gpu_pct.min(100) as u8),
                            fb_used_bytes: Some(
                                row.mem_used_bytes.min(u64::from(p.framebuffer_mib) << 20),
                            ),
                        }
                    })
                    .collect(),
            ),
        })
    }
}
