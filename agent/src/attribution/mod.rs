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

pub mod libvirt;

use crate::resolver::InstanceResolver;
use crate::sampler::{SpanMaker, SpanStep};
use crate::sensor::{
    GpuInfo, GpuLayout, GpuSensor, MigInstance, MigMode, Reading, VgpuInstance, Virtualization,
};
use libvirt::LibvirtHost;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use wattprint_core::accounting::CounterSpan;
use wattprint_core::apportion::{mig_shares, vgpu_shares, MigShare, VgpuShare};
pub use wattprint_core::apportion::{IdlePolicy, MigRule};
use wattprint_core::sample::{seq_of, Attribution, EnergySample, EnergySource};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

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

/// Energy an instance holds a share of, per target sample stream.
#[derive(Debug, Clone, Default)]
struct Target {
    emitted: u64,
    last_end: Option<UnixMillis>,
}

/// What one reading of an attributed GPU led to.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed {
    /// The GPU-level step (span, chain start, reset, gap, stale).
    pub step: SpanStep,
    /// Samples to send: one per instance holding a share of the span.
    pub samples: Vec<EnergySample>,
    /// Energy of the span no instance could be named for (not sent).
    pub unattributed: Millijoules,
    /// Why some or all of the span was unattributed, when it was.
    pub unattributed_reason: Option<String>,
}

/// One GPU's sampler with its attribution: readings in, attributed samples out.
#[derive(Debug, Clone)]
pub struct AttributedGpu {
    host: HostId,
    gpu: GpuUuid,
    rule: GpuRule,
    spans: SpanMaker,
    run_epoch_secs: u64,
    targets: HashMap<GpuUuid, Target>,
    lowest_power: Option<Milliwatts>,
}

/// One part's share of a span.
struct Share {
    gpu: GpuUuid,
    instance: InstanceId,
    energy: Millijoules,
    power: Milliwatts,
    power_max: Milliwatts,
    util_pct: u32,
    mem_used_bytes: u64,
}

impl AttributedGpu {
    /// A sampler for `gpu` attributed by `rule`. Sequence numbers are per sample stream
    /// (the GPU, or each MIG device / vGPU): [`seq_of`]`(run_epoch_secs, n)`, `n` from 1.
    pub fn new(
        host: HostId,
        gpu: &GpuInfo,
        rule: GpuRule,
        run_epoch_secs: u64,
        max_gap_ms: i64,
    ) -> Self {
        Self {
            host,
            gpu: gpu.uuid.clone(),
            rule,
            spans: SpanMaker::new(max_gap_ms),
            run_epoch_secs,
            targets: HashMap::new(),
            lowest_power: None,
        }
    }

    /// The GPU.
    pub fn gpu(&self) -> &GpuUuid {
        &self.gpu
    }

    /// Its rule.
    pub fn rule(&self) -> &GpuRule {
        &self.rule
    }

    /// Feeds one reading with the GPU's layout at that reading (`None` when it was not read
    /// or could not be: a shared GPU's span is then unattributed).
    pub fn observe(&mut self, reading: &Reading, layout: Option<&GpuLayout>) -> Attributed {
        if reading.power.0 > 0 {
            self.lowest_power = Some(
                self.lowest_power
                    .map_or(reading.power, |p| p.min(reading.power)),
            );
        }
        let step = self.spans.observe(reading);
        let SpanStep::Span { span, source } = &step else {
            return Attributed {
                step,
                samples: Vec::new(),
                unattributed: Millijoules(0),
                unattributed_reason: None,
            };
        };
        let (span, source) = (*span, *source);
        let (shares, flag, mut reason) = self.shares(span, reading, layout);
        let attributed: u64 = shares.iter().map(|s| s.energy.0).sum();
        let unattributed = Millijoules(span.energy.0 - attributed.min(span.energy.0));
        if unattributed.0 == 0 {
            reason = None;
        }
        let samples = shares
            .into_iter()
            .map(|share| self.sample(span, source, flag, reading, share))
            .collect();
        Attributed {
            step,
            samples,
            unattributed,
            unattributed_reason: reason,
        }
    }

    fn shares(
        &self,
        span: CounterSpan,
        reading: &Reading,
        layout: Option<&GpuLayout>,
    ) -> (Vec<Share>, Attribution, Option<String>) {
        match &self.rule {
            GpuRule::Exclusive { instance, .. } => (
                vec![Share {
                    gpu: self.gpu.clone(),
                    instance: instance.clone(),
                    energy: span.energy,
                    power: reading.power,
                    power_max: reading.power_max,
                    util_pct: reading.util_gpu_pct,
                    mem_used_bytes: reading.mem_used_bytes,
                }],
                Attribution::Exclusive,
                None,
            ),
            GpuRule::Mig { rule, resolver } => match layout {
                Some(GpuLayout::Mig(parts)) if !parts.is_empty() => {
                    let (shares, reason) = mig_split(span, reading, parts, *rule, resolver);
                    (shares, Attribution::ApportionedMig, reason)
                }
                Some(GpuLayout::Mig(_)) => (
                    Vec::new(),
                    Attribution::ApportionedMig,
                    Some("MIG is on but no GPU instance exists".to_owned()),
                ),
                _ => (
                    Vec::new(),
                    Attribution::ApportionedMig,
                    Some("the GPU's MIG layout could not be read".to_owned()),
                ),
            },
            GpuRule::Vgpu {
                idle_policy,
                idle_power,
            } => match layout {
                Some(GpuLayout::Vgpu(parts)) if !parts.is_empty() => {
                    let idle = idle_power.or(self.lowest_power).unwrap_or(Milliwatts(0));
                    let (shares, reason) = vgpu_split(span, reading, parts, *idle_policy, idle);
                    (shares, Attribution::ApportionedVgpu, reason)
                }
                Some(GpuLayout::Vgpu(_)) => (
                    Vec::new(),
                    Attribution::ApportionedVgpu,
                    Some("no VM holds a vGPU on this GPU".to_owned()),
                ),
                _ => (
                    Vec::new(),
                    Attribution::ApportionedVgpu,
                    Some("the GPU's vGPU layout could not be read".to_owned()),
                ),
            },
        }
    }

    fn sample(
        &mut self,
        span: CounterSpan,
        source: EnergySource,
        flag: Attribution,
        reading: &Reading,
        share: Share,
    ) -> EnergySample {
        let target = self.targets.entry(share.gpu.clone()).or_default();
        target.emitted += 1;
        let chain_start = span.chain_start || target.last_end != Some(span.start);
        target.last_end = Some(span.end);
        EnergySample {
            host: self.host.clone(),
            gpu: share.gpu,
            instance: share.instance,
            seq: seq_of(self.run_epoch_secs, target.emitted),
            start: span.start,
            end: span.end,
            energy: share.energy,
            power: share.power,
            power_max: share.power_max.max(share.power),
            util_gpu_pct: share.util_pct,
            mem_used_bytes: share.mem_used_bytes,
            temp_c: reading.temp_c,
            sm_clock_mhz: reading.sm_clock_mhz,
            chain_start,
            energy_source: source,
            attribution: flag,
        }
    }
}

fn to_mw(m: Millijoules) -> Milliwatts {
    Milliwatts(u32::try_from(m.0).unwrap_or(u32::MAX))
}

fn mig_split(
    span: CounterSpan,
    reading: &Reading,
    parts: &[MigInstance],
    rule: MigRule,
    resolver: &InstanceResolver,
) -> (Vec<Share>, Option<String>) {
    // Without every instance's utilisation, "by utilisation" cannot be applied fairly.
    let rule = if parts.iter().all(|p| p.util_pct.is_some()) {
        rule
    } else {
        MigRule::BySliceSize
    };
    let weights: Vec<MigShare> = parts
        .iter()
        .map(|p| MigShare {
            compute_slices: p.compute_slices,
            util_pct: p.util_pct.unwrap_or(0).min(100),
        })
        .collect();
    let split = |total: u64| mig_shares(Millijoules(total), &weights, rule);
    let (energy, power, power_max) = match (
        split(span.energy.0),
        split(u64::from(reading.power.0)),
        split(u64::from(reading.power_max.0)),
    ) {
        (Ok(e), Ok(p), Ok(m)) => (e, p, m),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return (Vec::new(), Some(format!("MIG split refused: {e}")))
        }
    };
    let mut shares = Vec::with_capacity(parts.len());
    let mut unmapped = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        match resolver.resolve_uuid(&part.uuid) {
            Some(instance) => shares.push(Share {
                gpu: part.uuid.clone(),
                instance,
                energy: energy[i],
                power: to_mw(power[i]),
                power_max: to_mw(power_max[i]),
                util_pct: part.util_pct.map_or(reading.util_gpu_pct, u32::from),
                mem_used_bytes: part.mem_used_bytes.unwrap_or(0),
            }),
            None => unmapped.push(part.uuid.to_string()),
        }
    }
    let reason = (!unmapped.is_empty())
        .then(|| format!("MIG device(s) {} are not mapped", unmapped.join(", ")));
    (shares, reason)
}

fn vgpu_split(
    span: CounterSpan,
    reading: &Reading,
    parts: &[VgpuInstance],
    policy: IdlePolicy,
    idle: Milliwatts,
) -> (Vec<Share>, Option<String>) {
    let weights: Vec<VgpuShare> = parts
        .iter()
        .map(|p| VgpuShare {
            util_pct: p.util_pct.unwrap_or(0).min(100),
            profile_fb_mib: p.framebuffer_mib,
        })
        .collect();
    let span_ms = span.end.since(span.start);
    let energy = vgpu_shares(span.energy, span_ms, idle, &weights, policy);
    // Power is split by the same rule over one second: the idle floor is then the idle power.
    let power = vgpu_shares(
        Millijoules(u64::from(reading.power.0)),
        1000,
        idle,
        &weights,
        policy,
    );
    let power_max = vgpu_shares(
        Millijoules(u64::from(reading.power_max.0)),
        1000,
        idle,
        &weights,
        policy,
    );
    let (energy, power, power_max) = match (energy, power, power_max) {
        (Ok(e), Ok(p), Ok(m)) => (e, p, m),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return (Vec::new(), Some(format!("vGPU split refused: {e}")))
        }
    };
    let shares = parts
        .iter()
        .enumerate()
        .map(|(i, part)| Share {
            gpu: part.uuid.clone(),
            instance: InstanceId::new(part.vm_id.clone()),
            energy: energy[i],
            power: to_mw(power[i]),
            power_max: to_mw(power_max[i]),
            util_pct: part.util_pct.map_or(reading.util_gpu_pct, u32::from),
            mem_used_bytes: part.fb_used_bytes.unwrap_or(0),
        })
        .collect();
    (shares, None)
}

/// What `--check` found for one part (MIG device or vGPU) of a shared GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartCheck {
    /// Its uuid.
    pub uuid: GpuUuid,
    /// `3g.40gb (3 slices, 40960 MiB)`, `NVIDIA H100-20C (20480 MiB), VM …`.
    pub description: String,
    /// The instance its share goes to, or why none.
    pub target: Result<InstanceId, String>,
}

/// What `--check` found for one GPU.
#[derive(Debug, Clone)]
pub struct GpuCheck {
    /// The GPU as the sensor reports it.
    pub info: GpuInfo,
    /// How it will be attributed, or why it cannot be.
    pub rule: Result<GpuRule, String>,
    /// Its parts, for MIG and vGPU GPUs.
    pub parts: Vec<PartCheck>,
    /// Problems that make the check fail.
    pub problems: Vec<String>,
}

/// What `wattprint agent --check` prints: every GPU, how and to whom it will be attributed.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The mode, described.
    pub mode: String,
    /// Every GPU the sensor has.
    pub gpus: Vec<GpuCheck>,
}

impl CheckReport {
    /// Every problem found, one line each; empty when every GPU (and MIG device) resolves.
    pub fn problems(&self) -> Vec<String> {
        self.gpus.iter().flat_map(|g| g.problems.clone()).collect()
    }

    /// Whether every GPU will be attributed.
    pub fn is_ok(&self) -> bool {
        !self.gpus.is_empty() && self.gpus.iter().all(|g| g.problems.is_empty())
    }
}

/// Discovers how every GPU of `sensor` will be attributed under `mode` (reading MIG and vGPU
/// layouts once). Problems — an unmapped GPU or MIG device, a GPU in the wrong mode, a layout
/// that cannot be read — are listed, not returned as errors, so all of them show at once.
pub fn check(sensor: &mut dyn GpuSensor, mode: &AttributionMode) -> CheckReport {
    let infos = sensor.gpus().to_vec();
    let mut gpus = Vec::with_capacity(infos.len());
    for (index, info) in infos.into_iter().enumerate() {
        let rule = mode.rule_for(&info);
        let mut problems = Vec::new();
        let mut parts = Vec::new();
        match &rule {
            Err(why) => problems.push(why.clone()),
            Ok(GpuRule::Exclusive { .. }) => {}
            Ok(rule @ (GpuRule::Mig { .. } | GpuRule::Vgpu { .. })) => match sensor.layout(index) {
                Err(e) => problems.push(format!(
                    "GPU {}: cannot read its partitions: {e}",
                    info.uuid
                )),
                Ok(layout) => {
                    parts = check_parts(&info, rule, &layout, &mut problems);
                }
            },
        }
        gpus.push(GpuCheck {
            info,
            rule,
            parts,
            problems,
        });
    }
    CheckReport {
        mode: mode.to_string(),
        gpus,
    }
}

fn check_parts(
    info: &GpuInfo,
    rule: &GpuRule,
    layout: &GpuLayout,
    problems: &mut Vec<String>,
) -> Vec<PartCheck> {
    match (rule, layout) {
        (GpuRule::Mig { resolver, .. }, GpuLayout::Mig(parts)) => {
            if parts.is_empty() {
                problems.push(format!(
                    "GPU {}: MIG is on but no GPU instance exists; its energy cannot be attributed",
                    info.uuid
                ));
            }
            parts
                .iter()
                .map(|p| {
                    let target = resolver.resolve_uuid(&p.uuid).ok_or_else(|| {
                        let why = format!(
                            "MIG device {} ({}) of GPU {} is not mapped: add a [[gpu]] entry \
                             with uuid = \"{}\"",
                            p.uuid, p.profile, info.uuid, p.uuid
                        );
                        problems.push(why.clone());
                        why
                    });
                    PartCheck {
                        uuid: p.uuid.clone(),
                        description: format!(
                            "{} ({} slice{}, {} MiB){}",
                            p.profile,
                            p.compute_slices,
                            if p.compute_slices == 1 { "" } else { "s" },
                            p.memory_mib,
                            if p.util_pct.is_some() {
                                ""
                            } else {
                                ", utilisation not reported"
                            }
                        ),
                        target,
                    }
                })
                .collect()
        }
        (GpuRule::Vgpu { .. }, GpuLayout::Vgpu(parts)) => parts
            .iter()
            .map(|p| PartCheck {
                uuid: p.uuid.clone(),
                description: format!(
                    "{} ({} MiB) in VM {}{}",
                    p.profile,
                    p.framebuffer_mib,
                    p.vm_id,
                    if p.util_pct.is_some() {
                        ""
                    } else {
                        ", utilisation not reported"
                    }
                ),
                target: Ok(InstanceId::new(p.vm_id.clone())),
            })
            .collect(),
        (_, other) => {
            problems.push(format!(
                "GPU {}: expected a {} layout, the sensor reports {}",
                info.uuid,
                if matches!(rule, GpuRule::Mig { .. }) {
                    "MIG"
                } else {
                    "vGPU"
                },
                match other {
                    GpuLayout::Whole => "a whole GPU",
                    GpuLayout::Mig(_) => "MIG instances",
                    GpuLayout::Vgpu(_) => "vGPUs",
                }
            ));
            Vec::new()
        }
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "attribution: {}", self.mode)?;
        writeln!(f, "{} GPU(s) discovered", self.gpus.len())?;
        for (i, g) in self.gpus.iter().enumerate() {
            let info = &g.info;
            writeln!(
                f,
                "GPU {i}: {}  PCI {}  {}  power limit {} W",
                info.uuid,
                info.pci_bus_id,
                info.model,
                info.power_limit.0 as f64 / 1000.0
            )?;
            writeln!(
                f,
                "  MIG {}, virtualization {}, energy {}",
                info.mig_mode.as_str(),
                info.virtualization.as_str(),
                if info.energy_counter {
                    "from the counter (exact)"
                } else {
                    "integrated from power (no counter: estimated)"
                }
            )?;
            let mut line = String::new();
            match &g.rule {
                Ok(GpuRule::Exclusive { instance, origin }) => {
                    let _ = write!(line, "exclusive → instance {instance} ({origin})");
                }
                Ok(GpuRule::Mig { rule, .. }) => {
                    let _ = write!(
                        line,
                        "apportioned-mig {} between {} MIG device(s):",
                        mig_rule_name(*rule),
                        g.parts.len()
                    );
                }
                Ok(GpuRule::Vgpu {
                    idle_policy,
                    idle_power,
                }) => {
                    let _ = write!(
                        line,
                        "apportioned-vgpu between {} vGPU(s): idle floor {} shared {}, the rest \
                         by utilisation:",
                        g.parts.len(),
                        idle_power.map_or_else(
                            || "(lowest power seen)".to_owned(),
                            |p| format!("{} W", p.0 as f64 / 1000.0)
                        ),
                        idle_policy_name(*idle_policy)
                    );
                }
                Err(why) => {
                    let _ = write!(line, "NOT ATTRIBUTED: {why}");
                }
            }
            writeln!(f, "  → {line}")?;
            for p in &g.parts {
                match &p.target {
                    Ok(instance) => {
                        writeln!(f, "    {} {} → instance {instance}", p.uuid, p.description)?
                    }
                    Err(_) => writeln!(f, "    {} {} → NOT MAPPED", p.uuid, p.description)?,
                }
            }
        }
        let problems = self.problems();
        if self.gpus.is_empty() {
            writeln!(f, "check failed: the sensor has no GPU")?;
        } else if problems.is_empty() {
            writeln!(f, "check passed: every GPU is attributed")?;
        } else {
            writeln!(f, "check failed: {} problem(s)", problems.len())?;
            for p in problems {
                writeln!(f, "  - {p}")?;
            }
        }
        Ok(())
    }
}
