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
use crate::clock::{ChainOutcome, ClockedChain};
use crate::clock_state::StateWriter;
use crate::metrics::AGENT;
use crate::sensor::{Gauges, GpuInfo, GpuSensor, Reading};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use wattprint_core::accounting::CounterSpan;
use wattprint_core::sample::{seq_of, Attribution, EnergySample, EnergySource};
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
    /// A gap bridged with the counter delta: one [`EnergySource::CounterBridged`] sample
    /// per piece (see [`crate::clock`]).
    Bridged(Vec<EnergySample>),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanStep {
    /// Energy over a span since the previous reading.
    Span {
        /// The span and its energy.
        span: CounterSpan,
        /// How the energy was measured.
        source: EnergySource,
        /// The host's wall clock stepped by this much (negative: back) since the previous
        /// reading (see [`crate::clock`]).
        clock_step_ms: Option<i64>,
    },
    /// A gap longer than the chain's limit (a stall, a restart), bridged with the counter
    /// delta: contiguous spans of [`EnergySource::CounterBridged`] energy.
    Bridged {
        /// The pieces, in time order.
        spans: Vec<CounterSpan>,
        /// The gap's length.
        gap_ms: i64,
        /// The wall-clock step seen at this reading, if any.
        clock_step_ms: Option<i64>,
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

impl SpanStep {
    /// The step's spans with their energy source (none for steps without energy).
    pub fn spans(&self) -> Vec<(CounterSpan, EnergySource)> {
        match self {
            SpanStep::Span { span, source, .. } => vec![(*span, *source)],
            SpanStep::Bridged { spans, .. } => spans
                .iter()
                .map(|s| (*s, EnergySource::CounterBridged))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Turns one GPU's readings into energy spans: counter deltas through [`ClockedChain`], or
/// power integrated when the GPU has no counter.
#[derive(Debug, Clone)]
pub struct SpanMaker {
    max_gap_ms: i64,
    chain: ClockedChain,
    integrator: Integrator,
}

impl SpanMaker {
    /// A span maker bridging gaps longer than `max_gap_ms` with the counter delta.
    pub fn new(max_gap_ms: i64) -> Self {
        Self {
            max_gap_ms,
            chain: ClockedChain::new(max_gap_ms),
            integrator: Integrator {
                next_is_chain_start: true,
                ..Integrator::default()
            },
        }
    }

    /// Resumes the counter chain from where a previous run left it (see
    /// [`ClockedChain::resume`]).
    pub fn resume(&mut self, end: UnixMillis, counter: Millijoules) {
        self.chain.resume(end, counter);
    }

    /// The counter chain's end and counter there (`None` before a counter reading).
    pub fn position(&self) -> Option<(UnixMillis, Millijoules)> {
        self.chain.position()
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
                match self.chain.observe(reading.at, reading.mono_ms, counter) {
                    ChainOutcome::Span { span, step_ms } => SpanStep::Span {
                        span,
                        source: EnergySource::Counter,
                        clock_step_ms: step_ms,
                    },
                    ChainOutcome::Bridged {
                        spans,
                        gap_ms,
                        step_ms,
                    } => SpanStep::Bridged {
                        spans,
                        gap_ms,
                        clock_step_ms: step_ms,
                    },
                    ChainOutcome::Started => SpanStep::Started,
                    ChainOutcome::CounterReset { previous, current } => {
                        SpanStep::CounterReset { previous, current }
                    }
                    ChainOutcome::Gap { gap_ms } => SpanStep::Gap { gap_ms },
                    ChainOutcome::Stale => SpanStep::Stale,
                }
            }
            None => {
                // A later counter reading must not span the time integrated here.
                self.chain = ClockedChain::new(self.max_gap_ms);
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
            clock_step_ms: None,
        }
    }
}

/// Builds one whole GPU's samples from its readings, all attributed to one instance.
#[derive(Debug, Clone)]
pub struct GpuSampler {
    host: HostId,
    gpu: GpuUuid,
    instance: InstanceId,
    run_epoch_secs: u64,
    emitted: u64,
    spans: SpanMaker,
}

impl GpuSampler {
    /// A sampler for `gpu`, attributed to `instance`. Sequence numbers are
    /// [`seq_of`]`(run_epoch_secs, n)` with `n` counting from 1, so they keep increasing
    /// across agent restarts (at least a second apart). Gaps longer than `max_gap_ms` restart the chain.
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
            run_epoch_secs,
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
            SpanStep::Span { span, source, .. } => {
                SampleEvent::Sample(self.sample(span, reading, source))
            }
            SpanStep::Bridged { spans, .. } => SampleEvent::Bridged(
                spans
                    .into_iter()
                    .map(|span| self.sample(span, reading, EnergySource::CounterBridged))
                    .collect(),
            ),
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
            seq: seq_of(self.run_epoch_secs, self.emitted),
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

/// A GPU's gauge reads since its previous energy read, folded into the reading that closes
/// the span: the sample then carries the span's highest power and temperature and its mean
/// utilisation and SM clock, not the values of its last instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GaugeWindow {
    reads: u32,
    power_max: u32,
    temp_max: u32,
    util_sum: u64,
    clock_sum: u64,
}

impl GaugeWindow {
    /// Adds one gauge read.
    pub fn add(&mut self, g: &Gauges) {
        self.reads += 1;
        self.power_max = self.power_max.max(g.power.0);
        self.temp_max = self.temp_max.max(g.temp_c);
        self.util_sum += u64::from(g.util_gpu_pct);
        self.clock_sum += u64::from(g.sm_clock_mhz);
    }

    /// Folds the window and the energy reading that ends it (itself one more gauge read) into
    /// that reading, and empties the window. Mean utilisation and clock round to nearest.
    pub fn close(&mut self, reading: &mut Reading) {
        self.add(&Gauges {
            at: reading.at,
            power: reading.power,
            util_gpu_pct: reading.util_gpu_pct,
            temp_c: reading.temp_c,
            sm_clock_mhz: reading.sm_clock_mhz,
        });
        let n = u64::from(self.reads);
        let mean = |sum: u64| u32::try_from((sum + n / 2) / n).unwrap_or(u32::MAX);
        reading.power_max = Milliwatts(reading.power_max.0.max(self.power_max));
        reading.temp_c = self.temp_max;
        reading.util_gpu_pct = mean(self.util_sum);
        reading.sm_clock_mhz = mean(self.clock_sum);
        *self = GaugeWindow::default();
    }
}

/// How often the sampling loop reads: the energy counter every `energy` (samples are made
/// there), and the gauges every `gauges` in between (`None`: only at energy reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cadence {
    pub(crate) energy: Duration,
    pub(crate) gauges: Option<Duration>,
}

/// Counters the sampling loop keeps for the report.
#[derive(Debug, Default)]
pub(crate) struct SamplerStats {
    pub(crate) gauge_reads: AtomicU64,
    pub(crate) counter_resets: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) bridges: AtomicU64,
    pub(crate) bridged_mj: AtomicU64,
    pub(crate) clock_steps: AtomicU64,
    pub(crate) unattributed_mj: AtomicU64,
}

/// One GPU the loop reads: its index in the sensor, its attributed sampler and its gauge
/// reads since the last energy read.
pub(crate) struct SampledGpu {
    pub(crate) index: usize,
    pub(crate) sampler: AttributedGpu,
    pub(crate) gauges: GaugeWindow,
}

/// Reads every GPU's energy once per `cadence.energy` and its gauges once per
/// `cadence.gauges` in between (unpaced sensors: energy back to back, no gauge reads) until
/// every GPU is exhausted, `stop` fires or is dropped, or the sample receiver is gone.
/// Blocking: run it on a blocking thread. Sending blocks while the channel is full
/// (backpressure). With `state`, each GPU's chain position is recorded once its samples are
/// handed over, written after every round and fsynced at the end (see [`crate::clock_state`]).
pub(crate) fn sampling_loop(
    sensor: Box<dyn crate::sensor::GpuSensor>,
    gpus: Vec<SampledGpu>,
    cadence: Cadence,
    samples: mpsc::Sender<EnergySample>,
    stop: std_mpsc::Receiver<()>,
    stats: Arc<SamplerStats>,
    mut state: Option<StateWriter>,
) {
    sampling_rounds(sensor, gpus, cadence, samples, stop, stats, &mut state);
    if let Some(w) = state.as_mut() {
        w.flush(true);
    }
}

/// [`sampling_loop`]'s rounds; `state` gets each GPU's position once its samples are sent.
fn sampling_rounds(
    mut sensor: Box<dyn crate::sensor::GpuSensor>,
    mut gpus: Vec<SampledGpu>,
    cadence: Cadence,
    samples: mpsc::Sender<EnergySample>,
    stop: std_mpsc::Receiver<()>,
    stats: Arc<SamplerStats>,
    state: &mut Option<StateWriter>,
) {
    let unpaced = sensor.unpaced();
    let gauge_every = cadence.gauges.filter(|g| !unpaced && *g < cadence.energy);
    let mut errors = vec![0u64; gpus.len()];
    // Last reason each GPU had energy left unattributed (logged when it changes).
    let mut unattributed_why: Vec<Option<String>> = vec![None; gpus.len()];
    let start = Instant::now();
    let mut next_energy = start;
    let mut next_gauges = gauge_every.map(|g| start + g);
    'outer: loop {
        if !matches!(stop.try_recv(), Err(std_mpsc::TryRecvError::Empty)) {
            tracing::debug!("sampling stopped");
            break;
        }
        if !unpaced && Instant::now() < next_energy {
            // A gauge tick (the only other reason to wake before the energy tick).
            read_gauges(sensor.as_mut(), &mut gpus, &errors, &stats);
            if let (Some(every), Some(next)) = (gauge_every, next_gauges.as_mut()) {
                *next = next_tick(*next, every);
            }
            if !wait_until(&stop, next_energy, next_gauges) {
                break;
            }
            continue;
        }
        let mut exhausted = Vec::new();
        for (slot, gpu) in gpus.iter_mut().enumerate() {
            let read_started = Instant::now();
            let read = sensor.read(gpu.index);
            AGENT.sensor_read("energy", read_started.elapsed());
            match read {
                Ok(Some(mut reading)) => {
                    gpu.gauges.close(&mut reading);
                    if errors[slot] > 0 {
                        tracing::info!(gpu = %gpu.sampler.gpu(), failed_reads = errors[slot], "GPU readable again");
                        errors[slot] = 0;
                    }
                    let layout = read_layout(sensor.as_mut(), gpu);
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
                    // Everything up to the chain's end is with the sender now.
                    if let (Some(w), Some((end, counter))) =
                        (state.as_mut(), gpu.sampler.position())
                    {
                        w.set(gpu.sampler.gpu(), end, counter);
                    }
                    log_span_step(gpu, out.step, &reading, &stats);
                }
                Ok(None) => {
                    tracing::info!(gpu = %gpu.sampler.gpu(), "sensor exhausted for GPU");
                    exhausted.push(slot);
                }
                Err(e) => {
                    AGENT.sensor_failed(&e);
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
        if let Some(w) = state.as_mut() {
            w.flush(false);
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
            next_energy = next_tick(next_energy, cadence.energy);
            if let (Some(every), Some(next)) = (gauge_every, next_gauges.as_mut()) {
                // The energy read was a gauge read too: the next one is a gauge period on.
                *next = next_tick(Instant::now(), every);
            }
            if !wait_until(&stop, next_energy, next_gauges) {
                break;
            }
        }
    }
}

/// A gauge tick: reads every GPU's gauges into its accumulator.
fn read_gauges(
    sensor: &mut dyn GpuSensor,
    gpus: &mut [SampledGpu],
    errors: &[u64],
    stats: &SamplerStats,
) {
    for (slot, gpu) in gpus.iter_mut().enumerate() {
        let read_started = Instant::now();
        let read = sensor.read_gauges(gpu.index);
        if !matches!(read, Ok(None)) {
            AGENT.sensor_read("gauges", read_started.elapsed());
        }
        match read {
            Ok(Some(g)) => {
                gpu.gauges.add(&g);
                stats.gauge_reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => {}
            // Not counted: the energy read's failures are (and warned about); a gauge
            // read failing while energy reads work is only worth a debug line.
            Err(e) if errors[slot] == 0 => {
                tracing::debug!(gpu = %gpu.sampler.gpu(), error = %e, "gauge read failed");
            }
            Err(_) => {}
        }
    }
}

/// The GPU's current MIG or vGPU layout when its rule needs one (`None` if reading it fails).
fn read_layout(sensor: &mut dyn GpuSensor, gpu: &SampledGpu) -> Option<crate::sensor::GpuLayout> {
    if gpu.sampler.rule().needs_layout() {
        match sensor.layout(gpu.index) {
            Ok(layout) => Some(layout),
            Err(e) => {
                tracing::warn!(gpu = %gpu.sampler.gpu(), error = %e, "reading the GPU's partitions failed");
                None
            }
        }
    } else {
        None
    }
}

/// Counts and logs a counter reset or a gap; other steps need nothing.
fn log_span_step(gpu: &SampledGpu, step: SpanStep, reading: &Reading, stats: &SamplerStats) {
    match step {
        SpanStep::CounterReset { previous, current } => {
            stats.counter_resets.fetch_add(1, Ordering::Relaxed);
            AGENT.counter_reset();
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
                "readings more than a day apart; chain restarts and the gap is left uncovered"
            );
        }
        SpanStep::Bridged {
            spans,
            gap_ms,
            clock_step_ms,
        } => {
            let energy: u64 = spans.iter().map(|s| s.energy.0).sum();
            stats.bridges.fetch_add(1, Ordering::Relaxed);
            stats.bridged_mj.fetch_add(energy, Ordering::Relaxed);
            tracing::warn!(
                gpu = %gpu.sampler.gpu(),
                gap_ms,
                energy_mj = energy,
                pieces = spans.len(),
                at = %reading.at,
                "readings were far apart (stalled sender, restart); the gap is bridged with \
                 the counter delta, flagged counter_bridged"
            );
            log_clock_step(gpu, clock_step_ms, reading, stats);
        }
        SpanStep::Span { clock_step_ms, .. } => log_clock_step(gpu, clock_step_ms, reading, stats),
        SpanStep::Started | SpanStep::Stale => {}
    }
}

/// Counts and logs a step of the host's wall clock.
fn log_clock_step(gpu: &SampledGpu, step_ms: Option<i64>, reading: &Reading, stats: &SamplerStats) {
    if let Some(step_ms) = step_ms {
        stats.clock_steps.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            gpu = %gpu.sampler.gpu(),
            step_ms,
            at = %reading.at,
            "the host's wall clock stepped; spans keep the monotonic length, a new chain starts \
             and no energy is lost (a step back is slewed out at 10%)"
        );
    }
}

/// The tick after `tick`, `every` later; when that has passed already (slow reads), `every`
/// from now: the loop skips ahead instead of bursting.
fn next_tick(tick: Instant, every: Duration) -> Instant {
    let next = tick + every;
    let now = Instant::now();
    if next <= now {
        now + every
    } else {
        next
    }
}

/// Sleeps until the earlier of the two ticks; false when `stop` fired (or was dropped) first.
fn wait_until(
    stop: &std_mpsc::Receiver<()>,
    next_energy: Instant,
    next_gauges: Option<Instant>,
) -> bool {
    let wake = next_gauges.map_or(next_energy, |g| g.min(next_energy));
    match stop.recv_timeout(wake.saturating_duration_since(Instant::now())) {
        Err(std_mpsc::RecvTimeoutError::Timeout) => true,
        _ => {
            tracing::debug!("sampling stopped");
            false
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
                    gauges: GaugeWindow::default(),
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
            mono_ms: at,
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
        assert_eq!(a.seq, (7 << 29) + 1);
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
        assert_eq!(x.seq, (1 << 29) + 1);
    }

    /// A GPU whose gauges change on every read, recording what each read returned so the
    /// samples can be checked against exactly the reads of their span.
    struct ScriptedSensor {
        gpus: Vec<GpuInfo>,
        t: i64,
        counter: u64,
        /// Every read in order: `(is_energy_read, power mW, util %)`.
        log: Arc<std::sync::Mutex<Vec<(bool, u32, u32)>>>,
    }

    impl ScriptedSensor {
        fn next(&mut self, energy: bool) -> (i64, u32, u32) {
            let mut log = self.log.lock().expect("log");
            let n = log.len() as u32;
            self.t += 7;
            // A saw-tooth, so the peak is sometimes between energy reads and sometimes at one.
            let power = 100_000 + (n * 37_000) % 250_000;
            let util = (n * 13) % 101;
            log.push((energy, power, util));
            (self.t, power, util)
        }
    }

    impl GpuSensor for ScriptedSensor {
        fn gpus(&self) -> &[GpuInfo] {
            &self.gpus
        }

        fn read(&mut self, _: usize) -> Result<Option<Reading>, crate::sensor::SensorError> {
            let (t, power, util) = self.next(true);
            self.counter += 1_000;
            let mut r = reading(t, power);
            r.energy_counter = Some(Millijoules(self.counter));
            r.util_gpu_pct = util;
            r.temp_c = util;
            r.sm_clock_mhz = 2 * util;
            Ok(Some(r))
        }

        fn read_gauges(&mut self, _: usize) -> Result<Option<Gauges>, crate::sensor::SensorError> {
            let (t, power, util) = self.next(false);
            Ok(Some(Gauges {
                at: UnixMillis(t),
                power: Milliwatts(power),
                util_gpu_pct: util,
                temp_c: util,
                sm_clock_mhz: 2 * util,
            }))
        }
    }

    #[test]
    fn gauge_reads_between_energy_reads_fill_each_samples_peak_and_means() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut gpu = info();
        gpu.energy_counter = true;
        let sensor = ScriptedSensor {
            gpus: vec![gpu.clone()],
            t: 1_000,
            counter: 0,
            log: Arc::clone(&log),
        };
        let rule = crate::attribution::GpuRule::Exclusive {
            instance: InstanceId::from("i"),
            origin: "test".into(),
        };
        let gpus = vec![SampledGpu {
            index: 0,
            sampler: AttributedGpu::new(HostId::from("h"), &gpu, rule, 1, 60_000),
            gauges: GaugeWindow::default(),
        }];
        let cadence = Cadence {
            energy: Duration::from_millis(200),
            gauges: Some(Duration::from_millis(20)),
        };
        let (tx, mut rx) = mpsc::channel(1024);
        let (stop_tx, stop_rx) = std_mpsc::channel();
        let stats = Arc::new(SamplerStats::default());
        let loop_stats = Arc::clone(&stats);
        let sampler = std::thread::spawn(move || {
            sampling_loop(
                Box::new(sensor),
                gpus,
                cadence,
                tx,
                stop_rx,
                loop_stats,
                None,
            )
        });
        std::thread::sleep(Duration::from_millis(1_100));
        drop(stop_tx);
        sampler.join().expect("sampler");
        let mut samples = Vec::new();
        while let Ok(s) = rx.try_recv() {
            samples.push(s);
        }
        let log = log.lock().expect("log").clone();
        // Split the reads into spans: each energy read closes the gauge reads before it.
        let mut spans: Vec<Vec<(u32, u32)>> = vec![Vec::new()];
        for &(energy, power, util) in &log {
            spans.last_mut().expect("span").push((power, util));
            if energy {
                spans.push(Vec::new());
            }
        }
        spans.pop(); // gauge reads after the last energy read belong to no sample
                     // The first energy read starts the chain; every later one makes one sample.
        assert_eq!(samples.len() + 1, spans.len(), "reads: {log:?}");
        assert!(samples.len() >= 3, "only {} samples", samples.len());
        let gauge_reads = log.iter().filter(|r| !r.0).count() as u64;
        assert_eq!(stats.gauge_reads.load(Ordering::Relaxed), gauge_reads);
        for (sample, span) in samples.iter().zip(&spans[1..]) {
            assert!(
                span.len() >= 2,
                "no gauge read between energy reads: {span:?}"
            );
            let peak = span.iter().map(|r| r.0).max().expect("reads");
            let n = span.len() as u32;
            let mean_util = (span.iter().map(|r| r.1).sum::<u32>() + n / 2) / n;
            let max_util = span.iter().map(|r| r.1).max().expect("reads");
            assert_eq!(sample.power_max, Milliwatts(peak), "span {span:?}");
            assert_eq!(sample.power, Milliwatts(span[span.len() - 1].0));
            assert_eq!(sample.util_gpu_pct, mean_util, "span {span:?}");
            assert_eq!(sample.temp_c, max_util);
            // The clock is 2 × utilisation on every read: its mean is exactly twice the sum's.
            assert_eq!(
                sample.sm_clock_mhz,
                (2 * span.iter().map(|r| r.1).sum::<u32>() + n / 2) / n
            );
            // Gauges never touch energy: one counter step of 1 J per energy read.
            assert_eq!(sample.energy, Millijoules(1_000));
        }
    }

    #[test]
    fn an_empty_gauge_window_leaves_the_reading_as_it_is() {
        let mut r = reading(5, 120_000);
        r.power_max = Milliwatts(150_000);
        let before = r;
        GaugeWindow::default().close(&mut r);
        assert_eq!(r, before);
    }
}
