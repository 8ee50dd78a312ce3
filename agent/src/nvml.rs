//! The real sensor: NVML through `nvml-wrapper`.
//!
//! Host NVML sees the GPUs the host owns (bare metal, containers, vGPU hosts, MIG); a GPU passed
//! through to a VM is bound to vfio and invisible here, so on such hosts the agent runs inside
//! the guest or attribution comes from elsewhere.
//!
//! # Partitions ([`GpuSensor::layout`])
//!
//! - **MIG**: MIG devices are found with `mig_device_by_index` over `0..mig_device_count`
//!   (unpopulated indices answer `NotFound`); each reports its uuid, its profile (the suffix of
//!   its name, `… MIG 3g.40gb`), its GPU instance's compute slices and memory
//!   (`attributes()`), and its memory in use. **Per-MIG utilisation is not reported**
//!   (`util_pct: None`): NVML gives it only through GPM samples of a GPU instance id
//!   (`nvmlGpmMigSampleGet`), and nvml-wrapper 0.13 has no call for a MIG device's GPU instance
//!   id (`nvmlDeviceGetGpuInstanceId`); the workspace forbids `unsafe`, so the agent cannot
//!   call it itself. Attribution then splits by slice size.
//! - **vGPU**: `active_vgpus()` gives each vGPU's uuid, VM id, type (name, framebuffer) and
//!   framebuffer in use. **Per-vGPU utilisation is not reported** (`util_pct: None`):
//!   nvml-wrapper 0.13 does not wrap `nvmlDeviceGetVgpuUtilization` /
//!   `nvmlDeviceGetVgpuInstancesUtilizationInfo`. Attribution then shares all energy by the
//!   idle policy.

use crate::replay::now_millis;
use crate::sensor::{
    Gauges, GpuInfo, GpuLayout, GpuSensor, MigInstance, MigMode, Reading, SensorError,
    VgpuInstance, Virtualization,
};
use nvml_wrapper::enum_wrappers::device::{Clock, GpuVirtualizationMode, TemperatureSensor};
use nvml_wrapper::enum_wrappers::vgpu::VmId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use wattprint_core::{GpuUuid, Millijoules, Milliwatts, UnixMillis};

/// Reads every GPU NVML can see.
pub struct NvmlSensor {
    nvml: Nvml,
    /// NVML device index of each entry of `gpus`.
    indices: Vec<u32>,
    gpus: Vec<GpuInfo>,
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
            let mig_mode = match optional(slot, "mig_mode", device.mig_mode())? {
                None => MigMode::Unsupported,
                Some(m) if m.current == 1 => MigMode::Enabled,
                Some(_) => MigMode::Disabled,
            };
            let virtualization =
                match optional(slot, "virtualization_mode", device.virtualization_mode())? {
                    None | Some(GpuVirtualizationMode::Bare) => Virtualization::None,
                    Some(GpuVirtualizationMode::PassThrough) => Virtualization::Passthrough,
                    Some(GpuVirtualizationMode::Vgpu) => Virtualization::VgpuGuest,
                    Some(GpuVirtualizationMode::HostVgpu) => Virtualization::VgpuHost,
                    Some(GpuVirtualizationMode::HostVsga) => Virtualization::VsgaHost,
                };
            indices.push(index);
            gpus.push(GpuInfo {
                uuid: GpuUuid::new(uuid),
                pci_bus_id,
                model,
                power_limit: Milliwatts(power_limit),
                mig_mode,
                virtualization,
                energy_counter: counter,
            });
        }
        Ok(Self {
            nvml,
            indices,
            gpus,
        })
    }

    /// Power, utilisation, temperature and SM clock of one device (power is required; the
    /// others read 0 where the GPU does not report them).
    fn gauges(&self, device: &Device<'_>, i: usize, at: UnixMillis) -> Result<Gauges, SensorError> {
        let power = Milliwatts(required(i, "power_usage", device.power_usage())?);
        let util = optional(i, "utilization_rates", device.utilization_rates())?;
        let temp = optional(i, "temperature", device.temperature(TemperatureSensor::Gpu))?;
        let sm_clock = optional(i, "clock_info", device.clock_info(Clock::SM))?;
        Ok(Gauges {
            at,
            power,
            util_gpu_pct: util.map_or(0, |u| u.gpu),
            temp_c: temp.unwrap_or(0),
            sm_clock_mhz: sm_clock.unwrap_or(0),
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
        let mono_before = crate::sensor::monotonic_ms();
        let energy_counter = if self.gpus[i].energy_counter {
            Some(Millijoules(required(
                i,
                "total_energy_consumption",
                device.total_energy_consumption(),
            )?))
        } else {
            None
        };
        let after = now_millis();
        let mono_after = crate::sensor::monotonic_ms();
        let at = UnixMillis(before.0 + after.since(before) / 2);
        let mono_ms = mono_before + (mono_after - mono_before) / 2;
        let gauges = self.gauges(&device, i, at)?;
        let memory = optional(i, "memory_info", device.memory_info())?;
        Ok(Some(Reading {
            at,
            mono_ms,
            energy_counter,
            power: gauges.power,
            // The sampling loop raises it to the highest of the span's gauge reads.
            power_max: gauges.power,
            util_gpu_pct: gauges.util_gpu_pct,
            mem_used_bytes: memory.map_or(0, |m| m.used),
            temp_c: gauges.temp_c,
            sm_clock_mhz: gauges.sm_clock_mhz,
        }))
    }

    fn read_gauges(&mut self, gpu_index: usize) -> Result<Option<Gauges>, SensorError> {
        let device = self.device(gpu_index)?;
        self.gauges(&device, gpu_index, now_millis()).map(Some)
    }

    fn layout(&mut self, gpu_index: usize) -> Result<GpuLayout, SensorError> {
        let device = self.device(gpu_index)?;
        let i = gpu_index;
        let info = &self.gpus[i];
        if info.mig_mode == MigMode::Enabled {
            let max = required(i, "mig_device_count", device.mig_device_count())?;
            let mut out = Vec::new();
            for slot in 0..max {
                let mig = match device.mig_device_by_index(slot) {
                    Ok(d) => d,
                    Err(NvmlError::NotFound) => continue,
                    Err(e) => {
                        return Err(SensorError::Nvml {
                            gpu_index: i,
                            call: "mig_device_by_index",
                            message: e.to_string(),
                        })
                    }
                };
                let uuid = required(i, "mig uuid", mig.uuid())?;
                let name = required(i, "mig name", mig.name())?;
                let attributes = required(i, "mig attributes", mig.attributes())?;
                let memory = optional(i, "mig memory_info", mig.memory_info())?;
                out.push(MigInstance {
                    uuid: GpuUuid::new(uuid),
                    profile: mig_profile(&name),
                    compute_slices: u8::try_from(attributes.gpu_instance_slice_count)
                        .unwrap_or(u8::MAX),
                    memory_mib: attributes.memory_size_mb,
                    util_pct: None,
                    mem_used_bytes: memory.map(|m| m.used),
                });
            }
            return Ok(GpuLayout::Mig(out));
        }
        if info.virtualization == Virtualization::VgpuHost {
            let vgpus = required(i, "active_vgpus", device.active_vgpus())?;
            let mut out = Vec::with_capacity(vgpus.len());
            for v in vgpus {
                let uuid = required(i, "vgpu uuid", v.uuid())?;
                let vm_id = match required(i, "vgpu vm_id", v.vm_id())? {
                    VmId::Domain(id) | VmId::Uuid(id) => id,
                };
                let kind = required(i, "vgpu instance_type", v.instance_type())?;
                let profile = required(i, "vgpu type name", kind.name())?;
                let fb = required(i, "vgpu framebuffer_size", kind.framebuffer_size())?;
                let used = optional(i, "vgpu fb_usage", v.fb_usage())?;
                out.push(VgpuInstance {
                    uuid: GpuUuid::new(uuid),
                    vm_id,
                    profile,
                    framebuffer_mib: u32::try_from(fb >> 20).unwrap_or(u32::MAX),
                    util_pct: None,
                    fb_used_bytes: used,
                });
            }
            return Ok(GpuLayout::Vgpu(out));
        }
        Ok(GpuLayout::Whole)
    }
}

/// `NVIDIA H100 80GB HBM3 MIG 3g.40gb` → `3g.40gb` (the whole name when it has no ` MIG `).
fn mig_profile(name: &str) -> String {
    name.rsplit_once(" MIG ")
        .map_or(name, |(_, profile)| profile)
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mig_profiles_come_from_the_device_name() {
        assert_eq!(
            super::mig_profile("NVIDIA H100 80GB HBM3 MIG 3g.40gb"),
            "3g.40gb"
        );
        assert_eq!(super::mig_profile("odd"), "odd");
    }
}
