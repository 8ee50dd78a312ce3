//! One GPU's sampler with its attribution: readings in, one sample per instance holding a
//! share of each span out.
//!
//! Invariant: the shares of a span sum back to its energy exactly, to the millijoule; energy
//! no instance can be named for is reported as unattributed, never sent.

use super::GpuRule;
use crate::metrics::AGENT;
use crate::resolver::InstanceResolver;
use crate::sampler::{SpanMaker, SpanStep};
use crate::sensor::{GpuInfo, GpuLayout, MigInstance, Reading, VgpuInstance};
use std::collections::HashMap;
use wattprint_core::accounting::CounterSpan;
use wattprint_core::apportion::{mig_shares, vgpu_shares, MigShare, VgpuShare};
use wattprint_core::apportion::{IdlePolicy, MigRule};
use wattprint_core::sample::{seq_of, Attribution, EnergySample, EnergySource};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

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
    /// Model name, for the provider-side `hw.*` metrics.
    model: String,
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
            model: gpu.model.clone(),
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
        let gpu_energy: u64 = step.spans().iter().map(|(span, _)| span.energy.0).sum();
        AGENT.gpu(
            self.gpu.as_str(),
            &self.model,
            gpu_energy as f64 / 1000.0,
            f64::from(reading.power.0) / 1000.0,
        );
        let mut samples = Vec::new();
        let mut unattributed = Millijoules(0);
        let mut unattributed_reason = None;
        for (span, source) in step.spans() {
            let (shares, flag, reason) = self.shares(span, reading, layout);
            let attributed: u64 = shares.iter().map(|s| s.energy.0).sum();
            let left = span.energy.0 - attributed.min(span.energy.0);
            if left > 0 {
                unattributed.0 += left;
                unattributed_reason = reason;
            }
            for share in shares {
                AGENT.samples_read(source);
                samples.push(self.sample(span, source, flag, reading, share));
            }
        }
        AGENT.unattributed(unattributed.0);
        Attributed {
            step,
            samples,
            unattributed,
            unattributed_reason,
        }
    }

    /// Resumes the GPU's counter chain where a previous run left it.
    pub fn resume(&mut self, end: UnixMillis, counter: Millijoules) {
        self.spans.resume(end, counter);
    }

    /// The GPU's counter chain position (end, counter), for the state a restart resumes from.
    pub fn position(&self) -> Option<(UnixMillis, Millijoules)> {
        self.spans.position()
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
