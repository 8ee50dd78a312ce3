//! Turning a GPU's readings into self-contained energy samples, and the blocking loop that
//! reads the sensor.
//!
//! Counter GPUs go through [`CounterChain`]: each span carries the counter delta, so the sum of
//! a GPU's samples equals the counter's increase exactly, and a counter reset or a long gap
//! restarts the chain instead of emitting negative or invented energy. GPUs without a counter
//! integrate power (trapezoid rule, integer µJ carried between samples so no rounding is lost)
//! and flag the samples [`EnergySource::PowerIntegration`].
//!
//! [`SpanMaker`] makes a GPU's energy spans; [`GpuSampler`] turns each into one sample of a
//! whole GPU, and [`crate::attribution::AttributedGpu`] into the samples of the instances
//! sharing it. The sampling loop runs the latter.

use crate::attribution::{AttributedGpu, AttributionMode};
use crate::sensor::{GpuInfo, GpuSensor, Reading};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wattprint_core::accounting::{ChainStep, CounterChain, CounterSpan};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::{GpuUuid, HostId, InstanceId, Millijoules, Milliwatts, UnixMillis};

/// What one reading led to.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleEvent {
    /// A sample to send.
    Sample(EnergySample),
    /// First reading (or first after a restart of the chain): nothing to send yet.
    Started,
    /// The energy counter went backwards (driver reload); the chain restarts here.
    CounterReset {
        /// Counter before.
        previous: Millijoules,
        /// Counter now.
        current: Millijoules,
    },
    /// Too long since the previous reading; the chain restarts here.
    Gap {
        /// Length of the gap.
        gap_ms: i64,
    },
    /// The reading's time did not advance: ignored.
    Stale,
}

/// Power-integration state for a GPU without an energy counter.
#[derive(Debug, Clone, Default)]
struct Integrator {
    previous: Option<(UnixMillis, Milliwatts)>,
    /// Energy below one millijoule not yet emitted, µJ.
    residual_uj: u64,
    next_is_chain_start: bool,
}

/// What one reading means for a GPU's energy, before attribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanStep {
    /// Energy over a span since the previous reading.
    Span {
        /// The span and its energy.
        span: CounterSpan,
        /// How the energy was measured.
        source: EnergySource,
    },
    /// First reading (or first after a restart of the chain): no span yet.
    Started,
    /// The energy counter went backwards (driver reload); the chain restarts here.
    CounterReset {
        /// Counter before.
        previous: Millijoules,
        /// Counter now.
        current: Millijoules,
    },
    /// Too long since the previous reading; the chain restarts here.
    Gap {
        /// Length of the gap.
        gap_ms: i64,
    },
    /// The reading's time did not advance: ignored.
    Stale,
}

/// Turns one GPU's readings into energy spans: counter deltas through [`CounterChain`], or
/// power integrated when the GPU has no counter.
#[derive(Debug, Clone)]
pub struct SpanMaker {
    max_gap_ms: i64,
    chain: CounterChain,
    integrator: Integrator,
}

impl SpanMaker {
    /// A span maker restarting the chain after gaps longer than `max_gap_ms`.
    pub fn new(max_gap_ms: i64) -> Self {
        Self {
            max_gap_ms,
            chain: CounterChain::new(max_gap_ms),
            integrator: Integrator {
                next_is_chain_start: true,
                ..Integrator::default()
            },
        }
    }

    /// Feeds one reading.
    pub fn observe(&mut self, reading: &Reading) -> SpanStep {
        match reading.energy_counter {
            Some(counter) => {
                // Any integration state is stale once the counter is back.
                self.integrator = Integrator {
                    next_is_chain_start: true,
                    ..Integrator::default()
                };
                match self.chain.observe(reading.at, counter) {
                    ChainStep::Span(span) => SpanStep::Span {
                        span,
                        source: EnergySource::Counter,
                    },
                    ChainStep::Started => SpanStep::Started,
                    ChainStep::CounterReset { previous, current } => {
                        SpanStep::CounterReset { previous, current }
                    }
                    ChainStep::Gap { gap_ms } => SpanStep::Gap { gap_ms },
                    ChainStep::Stale => SpanStep::Stale,
                }
            }
            None => {
                // A later counter reading must not span the time integrated here.
                self.chain = CounterChain::new(self.max_gap_ms);
                self.integrate(reading)
            }
        }
    }

    fn integrate(&mut self, reading: &Reading) -> SpanStep {
        let integ = &mut self.integrator;
        let Some((prev_at, prev_power)) = integ.previous else {
            integ.previous = Some((reading.at, reading.power));
            return SpanStep::Started;
        };
        let dt = reading.at.since(prev_at);
        if dt <= 0 {
            return SpanStep::Stale;
        }
        integ.previous = Some((reading.at, reading.power));
        if dt > self.max_gap_ms {
            integ.next_is_chain_start = true;
            integ.residual_uj = 0;
            return SpanStep::Gap { gap_ms: dt };
        }
        // mW × ms = µJ; trapezoid: (p0 + p1) / 2 × dt, kept exact in half-µJ steps.
        let twice_uj = (u64::from(prev_power.0) + u64::from(reading.power.0)) * dt as u64;
        let total_uj = integ.residual_uj + twice_uj / 2;
        integ.residual_uj = total_uj % 1000;
        SpanStep::Span {
            span: CounterSpan {
                start: prev_at,
                end: reading.at,
                energy: Millijoules(total_uj / 1000),
                chain_start: std::mem::take(&mut integ.next_is_chain_start),
            },
            source: EnergySource::PowerIntegration,
        }
    }
}

/// Builds one whole GPU's samples from its readings, all attributed to one instance.
#[derive(Debug, Clone)]
pub struct GpuSampler {
    host: HostId,
    gpu: GpuUuid,
    instance: InstanceId,
    seq_base: u64,
    emitted: u64,
    spans: SpanMaker,
}

impl GpuSampler {
    /// A sampler for `gpu`, attributed to `instance`. Sequence numbers are
    /// `(run_epoch_secs << 32) | n` with `n` counting from 1, so they keep increasing across
    /// agent restarts (at least a second apart). Gaps longer than `max_gap_ms` restart the chain.
    pub fn new(
        host: HostId,
        gpu: &GpuInfo,
        instance: InstanceId,
        run_epoch_secs: u64,
        max_gap_ms: i64,
    ) -> Self {
        Self {
            host,
            gpu: gpu.uuid.clone(),
            instance,
            seq_base: run_epoch_secs << 32,
            emitted: 0,
            spans: SpanMaker::new(max_gap_ms),
        }
    }

    /// The GPU this sampler reads.
    pub fn gpu(&self) -> &GpuUuid {
        &self.gpu
    }

    /// The instance its samples are attributed to.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// Feeds one reading.
    pub fn observe(&mut self, reading: &Reading) -> SampleEvent {
        match self.spans.observe(reading) {
            SpanStep::Span { span, source } => {
                SampleEvent::Sample(self.sample(span, reading, source))
            }
            SpanStep::Started => SampleEvent::Started,
            SpanStep::CounterReset { previous, current } => {
                SampleEvent::CounterReset { previous, current }
            }
            SpanStep::Gap { gap_ms } => SampleEvent::Gap { gap_ms },
            SpanStep::Stale => SampleEvent::Stale,
        }
    }

    fn sample(&mut self, span: CounterSpan, r: &Reading, source: EnergySource) -> EnergySample {
        self.emitted += 1;
        EnergySample {
            host: self.host.clone(),
            gpu: self.gpu.clone(),
            instance: self.instance.clone(),
            seq: self.seq_base | self.emitted,
            start: span.start,
            end: span.end,
            energy: span.energy,
            power: r.power,
            power_max: r.power_max.max(r.power),
            util_gpu_pct: r.util_gpu_pct,
            mem_used_bytes: r.mem_used_bytes,
            temp_c: r.temp_c,
            sm_clock_mhz: r.sm_clock_mhz,
            chain_start: span.chain_start,
            energy_source: source,
            attribution: Attribution::Exclusive,
        }
    }
}

/// Counters the sampling loop keeps for the report.
#[derive(Debug, Default)]
pub(crate) struct SamplerStats {
    pub(crate) counter_resets: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) unattributed_mj: AtomicU64,
}

/// One GPU the loop reads: its index in the sensor and its attributed sampler.
pub(crate) struct SampledGpu {
    pub(crate) index: usize,
    pub(crate) sampler: AttributedGpu,
}

/// Reads every GPU once per `interval` (back to back for unpaced sensors) until every GPU is
/// exhausted, `stop` fires or is dropped, or the sample receiver is gone. Blocking: run it on
/// a blocking thread. Sending blocks while the channel is full (backpressure).
pub(crate) fn sampling_loop(
    mut sensor: Box<dyn crate::sensor::GpuSensor>,
    mut gpus: Vec<SampledGpu>,
    interval: Duration,
    samples: mpsc::Sender<EnergySample>,
    stop: std_mpsc::Receiver<()>,
    stats: Arc<SamplerStats>,
) {
    let unpaced = sensor.unpaced();
    let mut errors = vec![0u64; gpus.len()];
    // Last reason each GPU had energy left unattributed (logged when it changes).
    let mut unattributed_why: Vec<Option<String>> = vec![None; gpus.len()];
    let mut next_tick = Instant::now();
    'outer: loop {
        if !matches!(stop.try_recv(), Err(std_mpsc::TryRecvError::Empty)) {
            tracing::debug!("sampling stopped");
            break;
        }
        let mut exhausted = Vec::new();
        for (slot, gpu) in gpus.iter_mut().enumerate() {
            match sensor.read(gpu.index) {
                Ok(Some(reading)) => {
                    if errors[slot] > 0 {
                        tracing::info!(gpu = %gpu.sampler.gpu(), failed_reads = errors[slot], "GPU readable again");
                        errors[slot] = 0;
                    }
                    let layout = if gpu.sampler.rule().needs_layout() {
                        match sensor.layout(gpu.index) {
                            Ok(layout) => Some(layout),
                            Err(e) => {
                                tracing::warn!(gpu = %gpu.sampler.gpu(), error = %e, "reading the GPU's partitions failed");
                                None
                            }
                        }
                    } else {
                        None
                    };
                    let out = gpu.sampler.observe(&reading, layout.as_ref());
                    if out.unattributed.0 > 0 {
                        stats
                            .unattributed_mj
                            .fetch_add(out.unattributed.0, Ordering::Relaxed);
                    }
                    if out.unattributed_reason != unattributed_why[slot] {
                        if let Some(why) = &out.unattributed_reason {
                            tracing::warn!(gpu = %gpu.sampler.gpu(), reason = %why, "energy left unattributed");
                        }
                        unattributed_why[slot] = out.unattributed_reason;
                    }
                    for sample in out.samples {
                        if samples.blocking_send(sample).is_err() {
                            tracing::debug!("sample receiver gone; sampling ends");
                            break 'outer;
                        }
                    }
                    match out.step {
                        SpanStep::CounterReset { previous, current } => {
                            stats.counter_resets.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                gpu = %gpu.sampler.gpu(),
                                previous_mj = previous.0,
                                current_mj = current.0,
                                at = %reading.at,
                                "energy counter went backwards (driver reload?); chain restarts, \
                                 no energy emitted for this step"
                            );
                        }
                        SpanStep::Gap { gap_ms } => {
                            stats.gaps.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                gpu = %gpu.sampler.gpu(),
                                gap_ms,
                                at = %reading.at,
                                "readings too far apart; chain restarts and the gap is left uncovered"
                            );
                        }
                        SpanStep::Span { .. } | SpanStep::Started | SpanStep::Stale => {}
                    }
                }
                Ok(None) => {
                    tracing::info!(gpu = %gpu.sampler.gpu(), "sensor exhausted for GPU");
                    exhausted.push(slot);
                }
                Err(e) => {
                    errors[slot] += 1;
                    if errors[slot] == 1 || errors[slot].is_multiple_of(60) {
                        tracing::warn!(
                            gpu = %gpu.sampler.gpu(),
                            consecutive_failures = errors[slot],
                            error = %e,
                            "GPU read failed"
                        );
                    }
                }
            }
        }
        for slot in exhausted.into_iter().rev() {
            gpus.remove(slot);
            errors.remove(slot);
            unattributed_why.remove(slot);
        }
        if gpus.is_empty() {
            tracing::info!("every GPU's sensor is exhausted; sampling ends");
            break;
        }
        if !unpaced {
            next_tick += interval;
            let now = Instant::now();
            if next_tick <= now {
                // Fell behind (slow reads): skip ahead instead of bursting.
                next_tick = now + interval;
            }
            match stop.recv_timeout(next_tick - now) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                _ => {
                    tracing::debug!("sampling stopped");
                    break;
                }
            }
        }
    }
}

/// Builds the samplers for the GPUs `mode` can attribute, warning once for each other.
pub(crate) fn attributed_gpus(
    sensor: &dyn GpuSensor,
    mode: &AttributionMode,
    host: &HostId,
    run_epoch_secs: u64,
    max_gap_ms: i64,
) -> Vec<SampledGpu> {
    let mut out = Vec::new();
    for (index, info) in sensor.gpus().iter().enumerate() {
        match mode.rule_for(info) {
            Ok(rule) => {
                tracing::info!(gpu = %info.uuid, pci = %info.pci_bus_id, ?rule, "sampling GPU");
                out.push(SampledGpu {
                    index,
                    sampler: AttributedGpu::new(
                        host.clone(),
                        info,
                        rule,
                        run_epoch_secs,
                        max_gap_ms,
                    ),
                });
            }
            Err(why) => tracing::warn!(
                gpu = %info.uuid,
                pci = %info.pci_bus_id,
                reason = %why,
                "GPU cannot be attributed to any instance; it will not be sampled"
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> GpuInfo {
        GpuInfo {
            uuid: GpuUuid::from("GPU-1"),
            pci_bus_id: "00000000:01:00.0".into(),
            model: "old".into(),
            power_limit: Milliwatts(250_000),
            mig_mode: crate::sensor::MigMode::Unsupported,
            virtualization: crate::sensor::Virtualization::None,
            energy_counter: false,
        }
    }

    fn reading(at: i64, power_mw: u32) -> Reading {
        Reading {
            at: UnixMillis(at),
            energy_counter: None,
            power: Milliwatts(power_mw),
            power_max: Milliwatts(power_mw),
            util_gpu_pct: 1,
            mem_used_bytes: 2,
            temp_c: 3,
            sm_clock_mhz: 4,
        }
    }

    #[test]
    fn power_integration_is_a_trapezoid_without_rounding_loss() {
        let mut s = GpuSampler::new(HostId::from("h"), &info(), InstanceId::from("i"), 7, 5_000);
        assert_eq!(s.observe(&reading(0, 100_000)), SampleEvent::Started);
        // 100 W → 200 W over 1 s: 150 J.
        let SampleEvent::Sample(a) = s.observe(&reading(1000, 200_000)) else {
            panic!()
        };
        assert_eq!(a.energy, Millijoules(150_000));
        assert_eq!(a.energy_source, EnergySource::PowerIntegration);
        assert!(a.chain_start);
        assert_eq!(a.seq, (7 << 32) | 1);
        // 1 mW for 1 ms three times: 1 µJ each, emitted once 1000 µJ accumulate.
        let mut s = GpuSampler::new(HostId::from("h"), &info(), InstanceId::from("i"), 7, 5_000);
        s.observe(&reading(0, 1));
        let mut total = 0;
        for t in 1..=2000 {
            let SampleEvent::Sample(x) = s.observe(&reading(t, 1)) else {
                panic!()
            };
            total += x.energy.0;
            assert!(!x.chain_start || t == 1);
        }
        assert_eq!(total, 2);
        // A gap restarts the chain and emits nothing.
        assert_eq!(
            s.observe(&reading(10_000, 1)),
            SampleEvent::Gap { gap_ms: 8_000 }
        );
        let SampleEvent::Sample(x) = s.observe(&reading(11_000, 1)) else {
            panic!()
        };
        assert!(x.chain_start);
        assert_eq!(s.observe(&reading(11_000, 1)), SampleEvent::Stale);
    }

    #[test]
    fn counter_samples_carry_the_delta_and_the_reading() {
        let mut s = GpuSampler::new(HostId::from("h"), &info(), InstanceId::from("i"), 1, 5_000);
        let mut r = reading(0, 100_000);
        r.energy_counter = Some(Millijoules(1_000));
        assert_eq!(s.observe(&r), SampleEvent::Started);
        let mut r = reading(1000, 120_000);
        r.energy_counter = Some(Millijoules(111_000));
        r.power_max = Milliwatts(130_000);
        let SampleEvent::Sample(x) = s.observe(&r) else {
            panic!()
        };
        assert_eq!(
            (x.start, x.end, x.energy),
            (UnixMillis(0), UnixMillis(1000), Millijoules(110_000))
        );
        assert_eq!(
            (x.power, x.power_max, x.energy_source),
            (
                Milliwatts(120_000),
                Milliwatts(130_000),
                EnergySource::Counter
            )
        );
        assert_eq!(
            (x.util_gpu_pct, x.mem_used_bytes, x.temp_c, x.sm_clock_mhz),
            (1, 2, 3, 4)
        );
        assert_eq!(x.seq, (1 << 32) | 1);
    }
}
