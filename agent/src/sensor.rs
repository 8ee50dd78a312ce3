//! The GPU sensor abstraction: what the agent reads from each GPU, whatever backs it
//! (NVML on a real host, the H100 trace replay in tests and demos).

use std::path::PathBuf;
use thiserror::Error;
use wattprint_core::{GpuUuid, Millijoules, Milliwatts, UnixMillis};

/// A GPU the sensor can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// NVML uuid (`GPU-…`).
    pub uuid: GpuUuid,
    /// PCI bus id as NVML reports it (`00000000:00:06.0`).
    pub pci_bus_id: String,
    /// Model name (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// Enforced power limit (0 when the GPU does not report one).
    pub power_limit: Milliwatts,
    /// Whether MIG is enabled (then NVML's energy is the whole GPU's, shared by its GPU
    /// instances).
    pub mig_mode: MigMode,
    /// How the GPU is virtualised, as NVML sees it from where the agent runs.
    pub virtualization: Virtualization,
    /// Whether the GPU has NVML's total-energy counter (Volta and newer); without it the agent
    /// integrates power and flags the energy as estimated.
    pub energy_counter: bool,
}

/// MIG mode of a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigMode {
    /// The GPU cannot do MIG (pre-Ampere, consumer parts) or NVML does not say.
    #[default]
    Unsupported,
    /// MIG-capable, MIG off: the GPU is one device.
    Disabled,
    /// MIG on: the GPU is split into GPU instances ([`GpuLayout::Mig`]).
    Enabled,
}

impl MigMode {
    /// Short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            MigMode::Unsupported => "unsupported",
            MigMode::Disabled => "disabled",
            MigMode::Enabled => "enabled",
        }
    }
}

/// How a GPU is virtualised (NVML's `nvmlGpuVirtualizationMode_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Virtualization {
    /// Bare metal (or NVML does not say).
    #[default]
    None,
    /// Passed through to this VM: the agent runs in the guest that owns the whole GPU.
    Passthrough,
    /// A vGPU inside this VM: the agent runs in a guest that holds a share of a GPU.
    VgpuGuest,
    /// A vGPU host GPU: VMs hold vGPUs on it ([`GpuLayout::Vgpu`]).
    VgpuHost,
    /// A vSGA host GPU (graphics sharing without vGPU instances).
    VsgaHost,
}

impl Virtualization {
    /// Short name for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Virtualization::None => "none (bare metal)",
            Virtualization::Passthrough => "passthrough (guest)",
            Virtualization::VgpuGuest => "vGPU (guest)",
            Virtualization::VgpuHost => "vGPU host",
            Virtualization::VsgaHost => "vSGA host",
        }
    }
}

/// How a GPU is partitioned right now, with each part's utilisation since the previous
/// [`GpuSensor::layout`] call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuLayout {
    /// One device (MIG off, no vGPUs).
    #[default]
    Whole,
    /// MIG GPU instances (an empty list: MIG on, no GPU instance created).
    Mig(Vec<MigInstance>),
    /// Active vGPUs (an empty list: no VM holds a vGPU now).
    Vgpu(Vec<VgpuInstance>),
}

/// One MIG device (a GPU instance with its compute instance) of a MIG-enabled GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigInstance {
    /// The MIG device's uuid (`MIG-…`); samples of its share name it as their GPU.
    pub uuid: GpuUuid,
    /// Profile, e.g. `3g.40gb`.
    pub profile: String,
    /// Compute slices its GPU instance holds (1..=7 on an H100).
    pub compute_slices: u8,
    /// Its memory, MiB.
    pub memory_mib: u64,
    /// Its utilisation since the previous layout read, percent; `None` where NVML does not
    /// report it (see [`crate::nvml`]).
    pub util_pct: Option<u8>,
    /// Its memory in use, bytes, when known.
    pub mem_used_bytes: Option<u64>,
}

/// One active vGPU of a vGPU host GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgpuInstance {
    /// The vGPU's uuid; samples of its share name it as their GPU.
    pub uuid: GpuUuid,
    /// The VM holding it, as the hypervisor names it to NVML (a libvirt domain uuid on KVM).
    pub vm_id: String,
    /// vGPU type, e.g. `NVIDIA H100-20C`.
    pub profile: String,
    /// The type's framebuffer, MiB.
    pub framebuffer_mib: u32,
    /// Its SM utilisation since the previous layout read, percent; `None` where NVML does not
    /// report it (see [`crate::nvml`]).
    pub util_pct: Option<u8>,
    /// Framebuffer in use, bytes, when known.
    pub fb_used_bytes: Option<u64>,
}

/// One reading of one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// When the reading was taken (the energy counter's time), on the host's wall clock.
    pub at: UnixMillis,
    /// The same instant on the sensor's monotonic clock, ms from an arbitrary origin fixed
    /// for the process (NVML: [`monotonic_ms`]; replay: virtual time since the GPU's start).
    /// Span lengths come from it, so a wall-clock step cannot stretch or squeeze a span.
    pub mono_ms: i64,
    /// NVML's total-energy counter (mJ since driver load); `None` when the GPU has no counter
    /// (pre-Volta), in which case the agent integrates power instead.
    pub energy_counter: Option<Millijoules>,
    /// Power at `at`.
    pub power: Milliwatts,
    /// Highest power seen since the previous read of this GPU (at least `power`).
    pub power_max: Milliwatts,
    /// GPU utilisation, percent.
    pub util_gpu_pct: u32,
    /// Device memory in use, bytes.
    pub mem_used_bytes: u64,
    /// GPU temperature, °C.
    pub temp_c: u32,
    /// SM clock, MHz.
    pub sm_clock_mhz: u32,
}

/// One fast reading of a GPU's gauges, without the energy counter: what the agent reads
/// between energy reads (every [`crate::AgentConfig::gauge_interval`], 100 ms by default, as
/// H100 power changes every 100 ms) so that each energy sample's highest power, mean
/// utilisation and clock, and highest temperature cover the whole span, not one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    /// When the gauges were read.
    pub at: UnixMillis,
    /// Power draw.
    pub power: Milliwatts,
    /// GPU utilisation, percent.
    pub util_gpu_pct: u32,
    /// GPU temperature, °C.
    pub temp_c: u32,
    /// SM clock, MHz.
    pub sm_clock_mhz: u32,
}

/// Milliseconds on the process's monotonic clock (from its first call): the time base of
/// [`Reading::mono_ms`] for sensors reading real hardware.
pub fn monotonic_ms() -> i64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Why a sensor could not be opened or read.
#[derive(Debug, Error)]
pub enum SensorError {
    /// NVML could not be loaded or initialised (no driver, no GPU, no permission).
    #[error("NVML is unavailable: {0}")]
    NvmlUnavailable(String),
    /// An NVML call failed for one GPU.
    #[error("NVML {call} failed for GPU {gpu_index}: {message}")]
    Nvml {
        /// Index of the GPU.
        gpu_index: usize,
        /// The NVML call, e.g. `total_energy_consumption`.
        call: &'static str,
        /// NVML's message.
        message: String,
    },
    /// The trace file could not be opened or read.
    #[error("cannot read trace {}: {source}", path.display())]
    TraceIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A row of the trace is malformed or out of order.
    #[error("trace {}, line {line}: {message}", path.display())]
    TraceRow {
        /// The file.
        path: PathBuf,
        /// 1-based line number in the file (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// The trace as a whole cannot be replayed (too few rows, bad configuration).
    #[error("trace {}: {message}", path.display())]
    Trace {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The GPU index is not one of [`GpuSensor::gpus`].
    #[error("no GPU with index {index} (the sensor has {count})")]
    NoSuchGpu {
        /// Requested index.
        index: usize,
        /// Number of GPUs.
        count: usize,
    },
}

/// A source of GPU readings. Reads block (an NVML energy read costs ~2.7 ms median, 15 ms
/// p99), so the agent calls them from a blocking thread, never on the async runtime.
pub trait GpuSensor: Send {
    /// The GPUs this sensor reads, indexed by position.
    fn gpus(&self) -> &[GpuInfo];

    /// Reads GPU `gpu_index`. `Ok(None)` means the sensor has nothing more for this GPU
    /// (a finite replay is exhausted); a real GPU never returns it.
    fn read(&mut self, gpu_index: usize) -> Result<Option<Reading>, SensorError>;

    /// Reads GPU `gpu_index`'s gauges only (power, utilisation, temperature, clock), which is
    /// cheap next to [`GpuSensor::read`]'s energy counter. `Ok(None)`: nothing to read (the
    /// sensor has no separate gauge read, or a finite replay is exhausted).
    fn read_gauges(&mut self, gpu_index: usize) -> Result<Option<Gauges>, SensorError> {
        let _ = gpu_index;
        Ok(None)
    }

    /// True when readings carry virtual time and are produced as fast as they are asked for
    /// (replay with [`crate::replay::Pacing::AsFastAsPossible`]): the agent then reads back to
    /// back and ignores its energy interval. False for real sensors.
    fn unpaced(&self) -> bool {
        false
    }

    /// How many ms of reading time pass per ms of wall clock: 1 for real sensors, the speed of
    /// an accelerated replay. Time-based limits (the longest gap between two readings) scale
    /// with it.
    fn time_scale(&self) -> u32 {
        1
    }

    /// GPU `gpu_index`'s partitioning now (MIG GPU instances, active vGPUs) with utilisation
    /// since the previous call. The agent calls it right after [`GpuSensor::read`] for GPUs
    /// whose energy it splits. Sensors without partitions keep the default, [`GpuLayout::Whole`].
    fn layout(&mut self, gpu_index: usize) -> Result<GpuLayout, SensorError> {
        let _ = gpu_index;
        Ok(GpuLayout::Whole)
    }
}

impl<S: GpuSensor + ?Sized> GpuSensor for Box<S> {
    fn gpus(&self) -> &[GpuInfo] {
        (**self).gpus()
    }

    fn read(&mut self, gpu_index: usize) -> Result<Option<Reading>, SensorError> {
        (**self).read(gpu_index)
    }

    fn read_gauges(&mut self, gpu_index: usize) -> Result<Option<Gauges>, SensorError> {
        (**self).read_gauges(gpu_index)
    }

    fn unpaced(&self) -> bool {
        (**self).unpaced()
    }

    fn time_scale(&self) -> u32 {
        (**self).time_scale()
    }

    fn layout(&mut self, gpu_index: usize) -> Result<GpuLayout, SensorError> {
        (**self).layout(gpu_index)
    }
}
