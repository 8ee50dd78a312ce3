//! Which instance a GPU's energy belongs to, and how it is split when several share one GPU.
//!
//! NVML measures energy per physical GPU. The agent turns each energy span of a GPU (a counter
//! delta, see [`crate::sampler`]) into one sample per instance holding (part of) it; every
//! sample says how it was attributed ([`Attribution`](wattprint_core::sample::Attribution) on
//! the wire). Shares come from [`wattprint_core::apportion`] and always sum back to the span's
//! energy exactly, to the millijoule; energy no instance can be named for (a MIG device missing
//! from the mapping, a vGPU host GPU with no VM) is not sent and is counted in
//! [`crate::AgentReport::energy_unattributed_mj`].
//!
//! # Modes ([`AttributionMode`])
//!
//! - **mapping** (default): whole GPUs → instances by a mapping file (uuid or PCI bus id, see
//!   [`crate::resolver`]) or, for the replay demo, by the inventory. Samples name the GPU's uuid
//!   and are flagged *exclusive*. A **MIG-enabled** GPU that is not itself mapped is split
//!   between its MIG devices, each mapped by its `MIG-…` uuid: by compute slices held
//!   ([`MigRule::BySliceSize`], default: a `3g` instance carries 3/7 of a full H100), or by
//!   slices × the instance's utilisation in the span ([`MigRule::ByUtilisation`]; slice size
//!   when no instance was busy, or when NVML does not report per-instance utilisation). Samples
//!   name the MIG device's uuid and are flagged *apportioned-mig*.
//! - **libvirt**: whole GPUs passed through to VMs, read from libvirt domain XML
//!   ([`libvirt`]): the `<hostdev type='pci'>` source address is the GPU's PCI bus id, the
//!   domain's instance id its `<uuid>` (or a Wattprint `<metadata>` element). For hosts where
//!   the agent can still read the GPU; a GPU bound to vfio is invisible to host NVML, and then
//!   the agent runs in the guest (in-guest mode). Flagged *exclusive*.
//! - **vgpu**: a vGPU host's GPU is split between the VMs holding its active vGPUs. The idle
//!   floor (idle power × span) is shared by [`IdlePolicy`] (equally, or by vGPU framebuffer
//!   size) and the energy above it by each vGPU's utilisation in the span; with no vGPU busy,
//!   or no per-vGPU utilisation from NVML, all of it is shared by the idle policy. The idle
//!   power is configured, or else the lowest power the agent has seen the GPU draw since it
//!   started. The instance id is the VM id NVML reports (the libvirt domain uuid on KVM, which
//!   is also the instance id OpenStack uses). Samples name the vGPU's uuid and are flagged
//!   *apportioned-vgpu*.
//! - **in_guest**: the agent runs inside a VM that owns its GPUs by PCI passthrough (the host
//!   cannot see them). Every GPU the guest sees belongs to one instance id, from the config or
//!   from the cloud's metadata endpoint ([`crate::metadata`]). Flagged *exclusive*.
//!
//! Power, highest power and utilisation on a share sample are the share's: power is split by
//! the same rule as energy (as if over one second), utilisation is the part's own (the whole
//! GPU's where NVML does not report the part's).

mod attributed;
mod check;
pub mod libvirt;

pub use attributed::{Attributed, AttributedGpu};
pub use check::{check, CheckReport, GpuCheck, PartCheck};

use crate::resolver::InstanceResolver;
use crate::sensor::{GpuInfo, MigMode, Virtualization};
use libvirt::LibvirtHost;
use std::fmt;
use std::sync::Arc;
pub use wattprint_core::apportion::{IdlePolicy, MigRule};
use wattprint_core::{InstanceId, Milliwatts};

/// How the agent attributes GPUs to instances (see the module docs).
#[derive(Debug, Clone)]
pub enum AttributionMode {
    /// Whole GPUs by a resolver (mapping file, inventory); MIG-enabled GPUs that are not
    /// mapped whole are split between their MIG devices, mapped by uuid.
    Mapping {
        /// GPU / MIG device → instance.
        resolver: Arc<InstanceResolver>,
        /// Where the mappings came from, for messages (`mapping file /etc/…`).
        source: String,
        /// How MIG GPUs are split.
        mig_rule: MigRule,
    },
    /// Whole GPUs by libvirt domain XML (PCI passthrough).
    Libvirt(Arc<LibvirtHost>),
    /// vGPU host: each GPU split between the VMs holding its vGPUs.
    Vgpu {
        /// How the idle floor is shared.
        idle_policy: IdlePolicy,
        /// Idle power of a GPU; `None`: the lowest power seen since the agent started.
        idle_power: Option<Milliwatts>,
    },
    /// Inside a VM: every GPU belongs to this instance.
    InGuest {
        /// This VM's instance id.
        instance: InstanceId,
        /// Where it came from, for messages (`config`, `AWS instance metadata`).
        source: String,
    },
}

impl From<InstanceResolver> for AttributionMode {
    fn from(resolver: InstanceResolver) -> Self {
        AttributionMode::Mapping {
            resolver: Arc::new(resolver),
            source: "the GPU mapping".to_owned(),
            mig_rule: MigRule::default(),
        }
    }
}

impl fmt::Display for AttributionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributionMode::Mapping {
                resolver,
                source,
                mig_rule,
            } => write!(
                f,
                "mapping: {} entries from {source}; MIG GPUs split {}",
                resolver.len(),
                mig_rule_name(*mig_rule)
            ),
            AttributionMode::Libvirt(host) => write!(
                f,
                "libvirt: {} domain(s) with {} passed-through PCI device(s) in {}",
                host.domains().len(),
                host.assigned_devices(),
                host.dir().display()
            ),
            AttributionMode::Vgpu {
                idle_policy,
                idle_power,
            } => write!(
                f,
                "vgpu: idle floor {} shared {}, the rest by vGPU utilisation",
                idle_power.map_or_else(
                    || "(lowest power seen since start)".to_owned(),
                    |p| format!("{} W", p.0 as f64 / 1000.0)
                ),
                idle_policy_name(*idle_policy)
            ),
            AttributionMode::InGuest { instance, source } => {
                write!(
                    f,
                    "in_guest: every GPU → instance {instance} (from {source})"
                )
            }
        }
    }
}

fn mig_rule_name(rule: MigRule) -> &'static str {
    match rule {
        MigRule::BySliceSize => "by slice size",
        MigRule::ByUtilisation => "by slices × utilisation",
    }
}

fn idle_policy_name(policy: IdlePolicy) -> &'static str {
    match policy {
        IdlePolicy::Equal => "equally",
        IdlePolicy::ByProfileSize => "by vGPU framebuffer size",
    }
}

/// How one GPU's energy is attributed.
#[derive(Debug, Clone)]
pub enum GpuRule {
    /// All of it to one instance.
    Exclusive {
        /// The instance.
        instance: InstanceId,
        /// Where the mapping came from, for messages.
        origin: String,
    },
    /// Split between its MIG devices, each mapped by uuid.
    Mig {
        /// The split rule.
        rule: MigRule,
        /// MIG device uuid → instance.
        resolver: Arc<InstanceResolver>,
    },
    /// Split between the VMs holding its vGPUs.
    Vgpu {
        /// How the idle floor is shared.
        idle_policy: IdlePolicy,
        /// Configured idle power.
        idle_power: Option<Milliwatts>,
    },
}

impl GpuRule {
    /// Whether the agent must read the GPU's layout with every reading.
    pub fn needs_layout(&self) -> bool {
        !matches!(self, GpuRule::Exclusive { .. })
    }
}

impl AttributionMode {
    /// The rule for `gpu`, or why it cannot be attributed.
    pub fn rule_for(&self, gpu: &GpuInfo) -> Result<GpuRule, String> {
        match self {
            AttributionMode::Mapping {
                resolver,
                source,
                mig_rule,
            } => {
                if let Some(instance) = resolver.resolve(gpu) {
                    return Ok(GpuRule::Exclusive {
                        instance,
                        origin: source.clone(),
                    });
                }
                if gpu.mig_mode == MigMode::Enabled {
                    return Ok(GpuRule::Mig {
                        rule: *mig_rule,
                        resolver: Arc::clone(resolver),
                    });
                }
                Err(format!(
                    "GPU {} (PCI {}) is not in {source}: add a [[gpu]] entry with its uuid or \
                     pci_bus_id",
                    gpu.uuid, gpu.pci_bus_id
                ))
            }
            AttributionMode::Libvirt(host) => match host.domain_for_pci(&gpu.pci_bus_id) {
                Some(domain) => Ok(GpuRule::Exclusive {
                    instance: domain.instance.clone(),
                    origin: format!("libvirt domain {} ({})", domain.name, domain.file.display()),
                }),
                None => Err(format!(
                    "GPU {} (PCI {}) is in no <hostdev> of the {} libvirt domain(s) in {}",
                    gpu.uuid,
                    gpu.pci_bus_id,
                    host.domains().len(),
                    host.dir().display()
                )),
            },
            AttributionMode::Vgpu {
                idle_policy,
                idle_power,
            } => {
                if gpu.virtualization == Virtualization::VgpuHost {
                    Ok(GpuRule::Vgpu {
                        idle_policy: *idle_policy,
                        idle_power: *idle_power,
                    })
                } else {
                    Err(format!(
                        "GPU {} is not a vGPU host GPU (NVML virtualization mode: {}); vgpu \
                         attribution needs the NVIDIA vGPU host driver",
                        gpu.uuid,
                        gpu.virtualization.as_str()
                    ))
                }
            }
            AttributionMode::InGuest { instance, source } => Ok(GpuRule::Exclusive {
                instance: instance.clone(),
                origin: format!("in-guest instance id from {source}"),
            }),
        }
    }
}
