//! The real sensor: NVML through `nvml-wrapper`.
//!
//! Host NVML sees the GPUs the host owns (bare metal, containers, vGPU hosts, MIG); a GPU passed
//! through to a VM is bound to vfio and invisible here, so on such hosts the agent runs inside
//! the guest or attribution comes from elsewhere.

use crate::replay::now_millis;
use crate::sensor::{GpuInfo, GpuSensor, Reading, SensorError};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use wattprint_core::{GpuUuid, Millijoules, Milliwatts, UnixMillis};

/// Reads every GPU NVML can see.
pub struct NvmlSensor {
    nvml: Nvml,
    /// NVML device index of each entry of `gpus`.
    indices: Vec<u32>,
    gpus: Vec<GpuInfo>,
    /// Whether each GPU has the total-energy counter (Volta and newer).
    has_counter: Vec<bool>,
}

impl std::fmt::Debug for NvmlSensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSensor")
            .field("gpus", &self.gpus)
            .finish_non_exhaustive()
    }
}

/// `NotSupported` becomes `None`; other errors are reported with the call's name.
fn optional<T>(
    gpu_index: usize,
    call: &'static str,
    r: Result<T, NvmlError>,
) -> Result<Option<T>, SensorError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(NvmlError::NotSupported) => Ok(None),
        Err(e) => Err(SensorError::Nvml {
            gpu_index,
            call,
            message: e.to_string(),
        }),
    }
}

fn required<T>(
    gpu_index: usize,
    call: &'static str,
    r: Result<T, NvmlError>,
) -> Result<T, SensorError> {
    r.map_err(|e| SensorError::Nvml {
        gpu_index,
        call,
        message: e.to_string(),
    })
}

impl NvmlSensor {
    /// Loads NVML (`libnvidia-ml.so.1`) and lists its GPUs. Fails with
    /// [`SensorError::NvmlUnavailable`] when there is no driver or library, and with
    /// [`SensorError::Nvml`] when a GPU cannot be described.
    pub fn init() -> Result<Self, SensorError> {
        let nvml = Nvml::init().map_err(|e| {
            SensorError::NvmlUnavailable(format!(
                "cannot initialise NVML ({e}); is the NVIDIA driver loaded and libnvidia-ml.so.1 \
                 installed? Use the replay sensor on machines without an NVIDIA GPU"
            ))
        })?;
        let count = nvml
            .device_count()
            .map_err(|e| SensorError::NvmlUnavailable(format!("cannot count GPUs: {e}")))?;
        let mut indices = Vec::new();
        let mut gpus = Vec::new();
        let mut has_counter = Vec::new();
        for index in 0..count {
            let slot = index as usize;
            let device = required(slot, "device_by_index", nvml.device_by_index(index))?;
            let uuid = required(slot, "uuid", device.uuid())?;
            let pci_bus_id = required(slot, "pci_info", device.pci_info())?.bus_id;
            let model = required(slot, "name", device.name())?;
            let power_limit =
                optional(slot, "enforced_power_limit", device.enforced_power_limit())?.unwrap_or(0);
            let counter = optional(
                slot,
                "total_energy_consumption",
                device.total_energy_consumption(),
            )?
            .is_some();
            if !counter {
                tracing::warn!(
                    gpu = %uuid,
                    "GPU has no energy counter (pre-Volta): energy will be integrated from power \
                     and flagged as estimated"
                );
            }
            indices.push(index);
            gpus.push(GpuInfo {
                uuid: GpuUuid::new(uuid),
                pci_bus_id,
                model,
                power_limit: Milliwatts(power_limit),
            });
            has_counter.push(counter);
        }
        Ok(Self {
            nvml,
            indices,
            gpus,
            has_counter,
        })
    }

    fn device(&self, gpu_index: usize) -> Result<Device<'_>, SensorError> {
        let index = *self.indices.get(gpu_index).ok_or(SensorError::NoSuchGpu {
            index: gpu_index,
            count: self.indices.len(),
        })?;
        required(
            gpu_index,
            "device_by_index",
            self.nvml.device_by_index(index),
        )
    }
}

impl GpuSensor for NvmlSensor {
    fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn read(&mut self, gpu_index: usize) -> Result<Option<Reading>, SensorError> {
        let device = self.device(gpu_index)?;
        let i = gpu_index;
        // The energy read is the slow call (ms); time-stamp it at its midpoint.
        let before = now_millis();
        let energy_counter = if self.has_counter[i] {
            Some(Millijoules(required(
                i,
                "total_energy_consumption",
                device.total_energy_consumption(),
            )?))
        } else {
            None
        };
        let after = now_millis();
        let at = UnixMillis(before.0 + after.since(before) / 2);
        let power = Milliwatts(required(i, "power_usage", device.power_usage())?);
        let util = optional(i, "utilization_rates", device.utilization_rates())?;
        let memory = optional(i, "memory_info", device.memory_info())?;
        let temp = optional(i, "temperature", device.temperature(TemperatureSensor::Gpu))?;
        let sm_clock = optional(i, "clock_info", device.clock_info(Clock::SM))?;
        Ok(Some(Reading {
            at,
            energy_counter,
            power,
            // Power is read once per reading; NVML's own average is not a maximum.
            power_max: power,
            util_gpu_pct: util.map_or(0, |u| u.gpu),
            mem_used_bytes: memory.map_or(0, |m| m.used),
            temp_c: temp.unwrap_or(0),
            sm_clock_mhz: sm_clock.unwrap_or(0),
        }))
    }
}
