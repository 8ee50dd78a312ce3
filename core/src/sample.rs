//! Self-contained energy samples and their validation.
//!
//! A sample covers `[start, end]` of one GPU and carries the energy-counter delta over that span,
//! computed on the agent. Ingest therefore needs no per-GPU state, and a redelivered sample is
//! recognised by `(gpu, seq)`.

use crate::ids::{GpuUuid, HostId, InstanceId};
use crate::time::UnixMillis;
use crate::units::{Millijoules, Milliwatts};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a sample's energy was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// Delta of NVML's total-energy counter (ground truth).
    Counter,
    /// Integrated from power readings (GPUs without the counter): an estimate.
    PowerIntegration,
    /// Delta of NVML's total-energy counter over a gap the agent did not sample (a restart, a
    /// stall, a wall-clock step): exact energy, but power and utilisation over the gap are
    /// unknown. Measured, not estimated; flagged so reports can say the span was bridged.
    CounterBridged,
}

impl EnergySource {
    /// Stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            EnergySource::Counter => "counter",
            EnergySource::PowerIntegration => "power_integration",
            EnergySource::CounterBridged => "counter_bridged",
        }
    }

    /// Parses [`EnergySource::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "counter" => Some(EnergySource::Counter),
            "power_integration" => Some(EnergySource::PowerIntegration),
            "counter_bridged" => Some(EnergySource::CounterBridged),
            _ => None,
        }
    }
}

/// How a sample's energy was attributed to its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// The whole GPU belongs to the instance.
    Exclusive,
    /// A share of a MIG-partitioned GPU.
    ApportionedMig,
    /// A share of a vGPU host's GPU.
    ApportionedVgpu,
    /// The whole GPU, reported by the instance's own agent (`in_guest`, PCI passthrough): the
    /// tenant's word rather than the provider's host. Set by the gateway for every sample of a
    /// credential bound to one instance, whatever the agent sent.
    GuestReported,
}

impl Attribution {
    /// Stable name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Attribution::Exclusive => "exclusive",
            Attribution::ApportionedMig => "apportioned_mig",
            Attribution::ApportionedVgpu => "apportioned_vgpu",
            Attribution::GuestReported => "guest_reported",
        }
    }

    /// Parses [`Attribution::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exclusive" => Some(Attribution::Exclusive),
            "apportioned_mig" => Some(Attribution::ApportionedMig),
            "apportioned_vgpu" => Some(Attribution::ApportionedVgpu),
            "guest_reported" => Some(Attribution::GuestReported),
            _ => None,
        }
    }
}

/// One GPU's energy over `[start, end]`, as the agent sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergySample {
    /// Host that read the GPU.
    pub host: HostId,
    /// The GPU.
    pub gpu: GpuUuid,
    /// Instance the agent attributed the GPU to.
    pub instance: InstanceId,
    /// Per-GPU sequence number, strictly increasing across agent restarts.
    pub seq: u64,
    /// Time of the previous counter reading.
    pub start: UnixMillis,
    /// Time of this counter reading.
    pub end: UnixMillis,
    /// Counter delta over `[start, end]`.
    pub energy: Millijoules,
    /// Power at `end` (for charts; energy never comes from it when the counter exists).
    pub power: Milliwatts,
    /// Highest power read over the span (the agent reads power every gauge interval, 100 ms
    /// by default, between energy reads).
    pub power_max: Milliwatts,
    /// GPU utilisation, mean of the span's gauge reads, percent.
    pub util_gpu_pct: u32,
    /// Device memory in use at `end`, bytes.
    pub mem_used_bytes: u64,
    /// GPU temperature, highest of the span's gauge reads, °C.
    pub temp_c: u32,
    /// SM clock, mean of the span's gauge reads, MHz.
    pub sm_clock_mhz: u32,
    /// True when this sample starts a new counter chain (agent start, counter reset, GPU back on
    /// the bus): the time before `start` is a coverage gap, not zero energy.
    pub chain_start: bool,
    /// How the energy was measured.
    pub energy_source: EnergySource,
    /// How the energy was attributed.
    pub attribution: Attribution,
}

impl EnergySample {
    /// Length of the span in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.end.since(self.start)
    }
}

/// Why a sample was refused. The message says what and why, so an operator can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SampleRejection {
    /// The span is empty or runs backwards.
    #[error("sample span is not positive: start {start} end {end}")]
    NonPositiveSpan {
        /// Span start.
        start: UnixMillis,
        /// Span end.
        end: UnixMillis,
    },
    /// The span is longer than any agent would send.
    #[error("sample span of {span_ms} ms exceeds the {max_ms} ms limit")]
    SpanTooLong {
        /// Span length.
        span_ms: i64,
        /// Configured limit.
        max_ms: i64,
    },
    /// The sample ends in the future beyond the allowed clock skew.
    #[error("sample ends at {end}, {ahead_ms} ms after the gateway's clock (limit {max_ms} ms)")]
    InFuture {
        /// Span end.
        end: UnixMillis,
        /// How far ahead.
        ahead_ms: i64,
        /// Allowed skew.
        max_ms: i64,
    },
    /// The sample is older than the accepted lateness.
    #[error("sample ends at {end}, older than the {max_age_ms} ms lateness limit")]
    TooOld {
        /// Span end.
        end: UnixMillis,
        /// Allowed lateness.
        max_age_ms: i64,
    },
    /// Average power implied by the energy is physically absurd for this GPU, even allowing
    /// for one tick of the energy counter.
    #[error(
        "implied mean power {implied_mw} mW over {span_ms} ms exceeds 2x the GPU's {limit_mw} mW power limit (one counter tick allowed)"
    )]
    EnergyAbsurd {
        /// Energy ÷ span.
        implied_mw: u64,
        /// Span length.
        span_ms: i64,
        /// GPU power limit.
        limit_mw: u32,
    },
    /// A power reading above twice the GPU's limit.
    #[error("power reading {power_mw} mW exceeds 2x the GPU's {limit_mw} mW power limit")]
    PowerAbsurd {
        /// The reading.
        power_mw: u32,
        /// GPU power limit.
        limit_mw: u32,
    },
    /// Utilisation above 100%.
    #[error("utilisation {0}% is above 100%")]
    UtilisationAbsurd(u32),
    /// The GPU is not attached to the instance the sample names on the host that sent it:
    /// unknown, on another host, or attached to another instance. All read the same, so a
    /// refusal never tells a sender which host, instance or tenant holds a GPU it named.
    #[error("GPU {gpu} is not attached to instance {instance} on host {host} in the inventory")]
    NotAttached {
        /// The GPU named.
        gpu: GpuUuid,
        /// The instance named.
        instance: InstanceId,
        /// The host that sent it.
        host: HostId,
    },
    /// The same `(gpu, seq)` appears twice in one batch.
    #[error("duplicate sequence number {seq} for GPU {gpu} within the batch")]
    DuplicateInBatch {
        /// The GPU.
        gpu: GpuUuid,
        /// The repeated sequence number.
        seq: u64,
    },
    /// A value no store can hold (both keep integers as signed 64-bit).
    #[error("{field} {value} exceeds the storable maximum {max}", max = MAX_STORABLE)]
    Unstorable {
        /// Which field.
        field: &'static str,
        /// The value sent.
        value: u64,
    },
    /// The wire form could not be turned into a sample (bad enum, missing field, NaN).
    #[error("malformed sample: {0}")]
    Malformed(String),
}

/// Longest span any sample may have (15 minutes): the gateway refuses longer ones, and the
/// stores rely on it to read the samples overlapping a range without scanning all before it.
pub const MAX_SAMPLE_SPAN_MS: i64 = 15 * 60 * 1000;

/// Most samples in one agent batch: the gateway refuses bigger ones (by default), and agents
/// never make them.
pub const MAX_BATCH_SAMPLES: usize = 10_000;

/// Largest integer any store keeps: both stores hold counters and ids as signed 64-bit.
pub const MAX_STORABLE: u64 = i64::MAX as u64;

/// What every store can hold, checked by the gateway before a sample is acked and by both
/// stores before it is written, so that nothing acked is refused later: a span of
/// `1..=`[`MAX_SAMPLE_SPAN_MS`], and sequence number, energy and memory within
/// [`MAX_STORABLE`].
pub fn check_storable(s: &EnergySample) -> Result<(), SampleRejection> {
    let span_ms = s.duration_ms();
    if span_ms <= 0 {
        return Err(SampleRejection::NonPositiveSpan {
            start: s.start,
            end: s.end,
        });
    }
    if span_ms > MAX_SAMPLE_SPAN_MS {
        return Err(SampleRejection::SpanTooLong {
            span_ms,
            max_ms: MAX_SAMPLE_SPAN_MS,
        });
    }
    for (field, value) in [
        ("sequence number", s.seq),
        ("energy (mJ)", s.energy.0),
        ("memory used (bytes)", s.mem_used_bytes),
    ] {
        if value > MAX_STORABLE {
            return Err(SampleRejection::Unstorable { field, value });
        }
    }
    Ok(())
}

/// Bits of an agent's sequence number below its run's start second: see [`seq_of`].
pub const SEQ_RUN_SHIFT: u32 = 29;

/// The `n`-th (from 1) sequence number of a sample stream in an agent run started at
/// `run_epoch_secs`: `(run_epoch_secs << 29) + n`. It stays storable (below 2^63) until the year
/// 2514, and it is above every number of an earlier run: run B starts at least the length of
/// run A after it, and A would need 2^29 samples per second to reach B's first number.
/// (Earlier agents used `secs << 32`, which leaves `i64` on 2038-01-19; their numbers are all
/// above the ones this gives until the year 2400, so the two never collide.)
pub fn seq_of(run_epoch_secs: u64, n: u64) -> u64 {
    (run_epoch_secs << SEQ_RUN_SHIFT).saturating_add(n)
}

/// The run's second of a sequence number made by [`seq_of`] (while `n < 2^29`).
pub fn seq_run(seq: u64) -> u64 {
    seq >> SEQ_RUN_SHIFT
}

/// The count within its run of a sequence number made by [`seq_of`] (while `n < 2^29`).
pub fn seq_count(seq: u64) -> u64 {
    seq & ((1 << SEQ_RUN_SHIFT) - 1)
}

/// Limits a sample must respect, independent of the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleLimits {
    /// Longest accepted span; never more than [`MAX_SAMPLE_SPAN_MS`], whatever is set here.
    pub max_span_ms: i64,
    /// How far past the gateway's clock a sample may end.
    pub max_future_skew_ms: i64,
    /// How old a sample may be (agents resend after outages, so this is generous).
    pub max_age_ms: i64,
    /// Update period of the energy counter. It ticks every 100 ms on an H100, so a span
    /// shorter than that can carry a whole tick's energy: the absurdity bound allows one tick.
    pub counter_tick_ms: i64,
}

impl Default for SampleLimits {
    fn default() -> Self {
        Self {
            max_span_ms: MAX_SAMPLE_SPAN_MS,
            max_future_skew_ms: 5 * 60 * 1000,
            max_age_ms: 30 * 24 * 3600 * 1000,
            counter_tick_ms: 100,
        }
    }
}

/// Checks a sample against physical and time limits. `power_limit` is the GPU's enforced power
/// limit; anything above twice it is absurd.
pub fn check_sample(
    s: &EnergySample,
    power_limit: Milliwatts,
    limits: &SampleLimits,
    now: UnixMillis,
) -> Result<(), SampleRejection> {
    check_storable(s)?;
    let span_ms = s.duration_ms();
    let max_ms = limits.max_span_ms.min(MAX_SAMPLE_SPAN_MS);
    if span_ms > max_ms {
        return Err(SampleRejection::SpanTooLong { span_ms, max_ms });
    }
    let ahead_ms = s.end.since(now);
    if ahead_ms > limits.max_future_skew_ms {
        return Err(SampleRejection::InFuture {
            end: s.end,
            ahead_ms,
            max_ms: limits.max_future_skew_ms,
        });
    }
    if now.since(s.end) > limits.max_age_ms {
        return Err(SampleRejection::TooOld {
            end: s.end,
            max_age_ms: limits.max_age_ms,
        });
    }
    let ceiling = u64::from(power_limit.0) * 2;
    for p in [s.power, s.power_max] {
        if u64::from(p.0) > ceiling {
            return Err(SampleRejection::PowerAbsurd {
                power_mw: p.0,
                limit_mw: power_limit.0,
            });
        }
    }
    // mJ / ms = W; ×1000 → mW. u128 so no product overflows. The counter's tick is added to
    // the span: the energy of a tick that completed inside a short span is real.
    let implied_mw = (u128::from(s.energy.0) * 1000 / span_ms as u128) as u64;
    let slack_span = (span_ms + limits.counter_tick_ms.max(0)) as u128;
    if u128::from(s.energy.0) * 1000 > u128::from(ceiling) * slack_span {
        return Err(SampleRejection::EnergyAbsurd {
            implied_mw,
            span_ms,
            limit_mw: power_limit.0,
        });
    }
    if s.util_gpu_pct > 100 {
        return Err(SampleRejection::UtilisationAbsurd(s.util_gpu_pct));
    }
    Ok(())
}

/// A short, closed name for the kind of refusal a reason text describes (`overlap`,
/// `not-attached`, `unstorable`, `conflict`, `future`, `too-old`, `absurd`, `gone`,
/// `malformed`, `other`): reasons carry values, so counts and metric labels use this.
pub fn refusal_kind(reason: &str) -> &'static str {
    REFUSAL_KINDS
        .iter()
        .find(|(needle, _)| reason.contains(needle))
        .map_or("other", |(_, kind)| kind)
}

/// What [`refusal_kind`] looks for, in order: the first needle a reason contains names its
/// kind (`other` when none does). Public so a store can classify reasons in SQL the same way.
pub const REFUSAL_KINDS: [(&str, &str); 10] = [
    ("overlaps stored energy", "overlap"),
    ("not attached to instance", "not-attached"),
    ("storable maximum", "unstorable"),
    ("already stored with different content", "conflict"),
    ("after the gateway's clock", "future"),
    ("older than", "too-old"),
    ("implied mean power", "absurd"),
    ("power reading", "absurd"),
    ("no longer in the inventory", "gone"),
    ("malformed", "malformed"),
];

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(start: i64, end: i64, mj: u64) -> EnergySample {
        EnergySample {
            host: HostId::from("host-a"),
            gpu: GpuUuid::from("GPU-1"),
            instance: InstanceId::from("i-1"),
            seq: 1,
            start: UnixMillis(start),
            end: UnixMillis(end),
            energy: Millijoules(mj),
            power: Milliwatts(300_000),
            power_max: Milliwatts(310_000),
            util_gpu_pct: 90,
            mem_used_bytes: 1 << 30,
            temp_c: 50,
            sm_clock_mhz: 1980,
            chain_start: false,
            energy_source: EnergySource::Counter,
            attribution: Attribution::Exclusive,
        }
    }

    const LIMIT: Milliwatts = Milliwatts(700_000);
    const NOW: UnixMillis = UnixMillis(1_000_000_000);

    #[test]
    fn sequence_numbers_stay_storable_and_increase_across_runs_long_after_2038() {
        let y2038 = 2_147_483_648; // 2038-01-19T03:14:08Z
        let y2500 = 16_725_225_600; // 2500-01-01T00:00:00Z
        for secs in [1_700_000_000, y2038, y2500] {
            assert!(seq_of(secs, 1) <= MAX_STORABLE, "{secs}");
            // A run emitting a sample every millisecond for a day stays below the next run's
            // first number, even when that run starts only a day and a second later.
            let last = seq_of(secs, 86_400_000);
            assert!(last < seq_of(secs + 86_401, 1));
            assert!(seq_of(secs, 1) < seq_of(secs, 2));
            assert_eq!(
                (seq_run(seq_of(secs, 7)), seq_count(seq_of(secs, 7))),
                (secs, 7)
            );
        }
        assert!(seq_of(y2500 + 14 * 365 * 86_400, 1_000_000) <= MAX_STORABLE);
    }

    #[test]
    fn values_no_store_can_hold_are_refused_by_the_shared_predicate() {
        let ok = sample(NOW.0 - 1000, NOW.0, 300_000);
        assert_eq!(check_storable(&ok), Ok(()));
        let at_max = EnergySample {
            seq: MAX_STORABLE,
            mem_used_bytes: MAX_STORABLE,
            ..ok.clone()
        };
        assert_eq!(check_storable(&at_max), Ok(()));
        for (field, s) in [
            (
                "sequence number",
                EnergySample {
                    seq: u64::MAX,
                    ..ok.clone()
                },
            ),
            (
                "memory used (bytes)",
                EnergySample {
                    mem_used_bytes: MAX_STORABLE + 1,
                    ..ok.clone()
                },
            ),
            (
                "energy (mJ)",
                EnergySample {
                    energy: Millijoules(u64::MAX),
                    ..ok.clone()
                },
            ),
        ] {
            let err = check_storable(&s).unwrap_err();
            assert!(
                matches!(err, SampleRejection::Unstorable { field: f, .. } if f == field),
                "{err}"
            );
            // The gateway's full check refuses it for the same reason, never later.
            let err = check_sample(&s, LIMIT, &SampleLimits::default(), NOW).unwrap_err();
            assert!(
                err.to_string().contains("exceeds the storable maximum"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_plausible_sample_passes() {
        let s = sample(NOW.0 - 1000, NOW.0, 300_000);
        assert_eq!(
            check_sample(&s, LIMIT, &SampleLimits::default(), NOW),
            Ok(())
        );
    }

    #[test]
    fn energy_implying_more_than_twice_the_limit_is_rejected() {
        // 1.6 kJ in 1 s = 1.6 kW > 1.4 kW × (1 s + one 100 ms tick) = 1.54 kJ.
        let s = sample(NOW.0 - 1000, NOW.0, 1_600_000);
        let err = check_sample(&s, LIMIT, &SampleLimits::default(), NOW).unwrap_err();
        assert!(matches!(
            err,
            SampleRejection::EnergyAbsurd {
                implied_mw: 1_600_000,
                ..
            }
        ));
        // Exactly the bound is still accepted (boost transients are real).
        let s = sample(NOW.0 - 1000, NOW.0, 1_540_000);
        assert!(check_sample(&s, LIMIT, &SampleLimits::default(), NOW).is_ok());
    }

    #[test]
    fn a_short_span_carrying_a_whole_counter_tick_is_accepted() {
        // Real row of the H100 trace (GEMM burn): 84,633 mJ over a 50 ms span, because the
        // counter ticks every 100 ms. Implied 1.69 kW, but it is one tick of ~846 W.
        let s = sample(NOW.0 - 50, NOW.0, 84_633);
        assert_eq!(
            check_sample(&s, LIMIT, &SampleLimits::default(), NOW),
            Ok(())
        );
        let strict = SampleLimits {
            counter_tick_ms: 0,
            ..SampleLimits::default()
        };
        assert!(check_sample(&s, LIMIT, &strict, NOW).is_err());
    }

    #[test]
    fn time_limits_are_enforced() {
        let l = SampleLimits::default();
        let future = sample(NOW.0, NOW.0 + l.max_future_skew_ms + 1, 1);
        assert!(matches!(
            check_sample(&future, LIMIT, &l, NOW),
            Err(SampleRejection::InFuture { .. })
        ));
        let backwards = sample(NOW.0, NOW.0 - 5, 1);
        assert!(matches!(
            check_sample(&backwards, LIMIT, &l, NOW),
            Err(SampleRejection::NonPositiveSpan { .. })
        ));
        let old = sample(NOW.0 - l.max_age_ms - 2000, NOW.0 - l.max_age_ms - 1000, 1);
        assert!(matches!(
            check_sample(&old, LIMIT, &l, NOW),
            Err(SampleRejection::TooOld { .. })
        ));
        let long = sample(NOW.0 - l.max_span_ms - 1, NOW.0, 1);
        assert!(matches!(
            check_sample(&long, LIMIT, &l, NOW),
            Err(SampleRejection::SpanTooLong { .. })
        ));
    }

    #[test]
    fn absurd_power_and_utilisation_are_rejected_with_the_values() {
        let mut s = sample(NOW.0 - 1000, NOW.0, 1);
        s.power_max = Milliwatts(1_400_001);
        let err = check_sample(&s, LIMIT, &SampleLimits::default(), NOW).unwrap_err();
        assert_eq!(
            err.to_string(),
            "power reading 1400001 mW exceeds 2x the GPU's 700000 mW power limit"
        );
        let mut s = sample(NOW.0 - 1000, NOW.0, 1);
        s.util_gpu_pct = 101;
        assert_eq!(
            check_sample(&s, LIMIT, &SampleLimits::default(), NOW),
            Err(SampleRejection::UtilisationAbsurd(101))
        );
    }
}
