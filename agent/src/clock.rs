//! The agent's clocks: counter spans measured on the monotonic clock and stamped with the
//! wall clock, and the energy the counter measured across gaps the agent did not sample.
//!
//! A span's length is the sensor's monotonic time between two counter readings
//! ([`crate::sensor::Reading::mono_ms`]); its stamps continue the previous span's end, so a
//! GPU's spans are contiguous and never overlap what was already sent. Each reading compares
//! the wall clock with where the monotonic clock says the span ends (`natural`):
//! - within [`STEP_TOLERANCE_MS`]: the span ends at the wall clock's time (NTP slewing is
//!   followed);
//! - more than that **ahead** (a step forward): the span is placed on the new wall time,
//!   `[wall − elapsed, wall]`, with all the counter's energy, and flagged `chain_start`: the
//!   wall time skipped over never happened and is left uncovered;
//! - **behind** (a step back): the time since the previous span was already used, so the
//!   span stays on the previous timeline and *slews* back to the wall clock: each span is at
//!   most 1/[`SLEW_DIVISOR`] shorter than its monotonic length (implied power at most
//!   ×1.11, far from the gateway's 2× absurdity bound) until it meets the wall clock again.
//!   The span where the step is seen is flagged `chain_start` to mark the clock discontinuity.
//!
//! Either way no energy is lost or doubled and no span overlaps another. A monotonic gap
//! longer than the chain's `max_gap_ms` (a stalled sender blocking the sampler, a suspended
//! host) is *bridged*: the counter delta across it is sent as `EnergySource::CounterBridged`
//! spans of at most [`BRIDGE_PIECE_MS`] (stores and gateways refuse spans over 15 min),
//! energy split in proportion to time, exactly. A gap longer than [`MAX_BRIDGE_MS`], or a
//! counter that went backwards (driver reload), restarts the chain without energy; after a
//! reload the new chain starts at the reading's own wall time (a replay of the same past run
//! twice is then refused by the store as overlapping, not shifted).
//!
//! After an agent restart the chain resumes from the persisted end and counter
//! ([`crate::clock_state`]) without a monotonic time: the first reading after it bridges the
//! downtime by the wall clock.

use wattprint_core::accounting::CounterSpan;
use wattprint_core::{Millijoules, UnixMillis};

/// How far the wall clock may disagree with the monotonic clock over one span before the
/// disagreement counts as a step.
pub const STEP_TOLERANCE_MS: i64 = 1_000;

/// After a step back, a span is at most `1 / SLEW_DIVISOR` shorter than its monotonic length.
pub const SLEW_DIVISOR: i64 = 10;

/// Longest piece of a bridged gap: 5 minutes (one emissions bucket), well under the 15-minute
/// span limit of the gateway and the stores.
pub const BRIDGE_PIECE_MS: i64 = 5 * 60 * 1000;

/// Longest gap the counter bridges (a day); beyond it the chain restarts without energy, as a
/// counter that reset and climbed back above its old value could not be told apart.
pub const MAX_BRIDGE_MS: i64 = 24 * 3600 * 1000;

/// What one counter reading led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    /// One span of the chain. `step_ms`: the wall clock stepped by this much (negative: back)
    /// since the previous reading; the span is flagged `chain_start`.
    Span {
        /// The span.
        span: CounterSpan,
        /// The wall-clock step seen at this reading, if any.
        step_ms: Option<i64>,
    },
    /// A gap longer than the chain's limit, bridged with the counter delta: contiguous spans
    /// of `EnergySource::CounterBridged` energy.
    Bridged {
        /// The pieces, in time order.
        spans: Vec<CounterSpan>,
        /// The gap's monotonic length (wall length after a restart).
        gap_ms: i64,
        /// The wall-clock step seen at this reading, if any.
        step_ms: Option<i64>,
    },
    /// First reading: nothing to send yet.
    Started,
    /// The counter went backwards; the chain restarts at this reading.
    CounterReset {
        /// Counter before.
        previous: Millijoules,
        /// Counter now.
        current: Millijoules,
    },
    /// A gap too long to bridge; the chain restarts at this reading.
    Gap {
        /// Its length.
        gap_ms: i64,
    },
    /// The reading is not after the previous one: ignored.
    Stale,
}

/// The previous reading the next span starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Previous {
    /// Where the chain's timeline is (the previous span's end).
    end: UnixMillis,
    /// Its monotonic time; `None` after a restart (another process's clock).
    mono: Option<i64>,
    counter: Millijoules,
}

/// One GPU's energy counter readings turned into contiguous spans; see the module docs.
#[derive(Debug, Clone)]
pub struct ClockedChain {
    previous: Option<Previous>,
    next_is_chain_start: bool,
    max_gap_ms: i64,
    /// The timeline is ahead of the wall clock after a step back.
    slewing: bool,
}

impl ClockedChain {
    /// A chain bridging gaps longer than `max_gap_ms` with the counter delta.
    pub fn new(max_gap_ms: i64) -> Self {
        Self {
            previous: None,
            next_is_chain_start: true,
            max_gap_ms,
            slewing: false,
        }
    }

    /// Resumes after a restart from the last span a previous run sent (its end and the counter
    /// there): the first reading bridges the downtime.
    pub fn resume(&mut self, end: UnixMillis, counter: Millijoules) {
        self.previous = Some(Previous {
            end,
            mono: None,
            counter,
        });
        self.next_is_chain_start = true;
        self.slewing = false;
    }

    /// The chain's end and counter there, what a restart resumes from (`None` before the
    /// first reading).
    pub fn position(&self) -> Option<(UnixMillis, Millijoules)> {
        self.previous.map(|p| (p.end, p.counter))
    }

    /// Feeds one counter reading: wall time `at`, monotonic time `mono_ms`, counter `counter`.
    pub fn observe(&mut self, at: UnixMillis, mono_ms: i64, counter: Millijoules) -> ChainOutcome {
        let Some(prev) = self.previous else {
            self.restart_at(at, mono_ms, counter);
            return ChainOutcome::Started;
        };
        let elapsed = match prev.mono {
            Some(mono) => mono_ms - mono,
            None => at.since(prev.end),
        };
        // After a restart a lower counter is a driver reload whatever the clocks say.
        if elapsed <= 0 && prev.mono.is_some() {
            return ChainOutcome::Stale;
        }
        if counter < prev.counter {
            // A new chain on this reading's own time, as before the reload: if it overlaps
            // what was sent, the store refuses the overlap rather than this agent moving
            // real time.
            self.restart_at(at, mono_ms, counter);
            return ChainOutcome::CounterReset {
                previous: prev.counter,
                current: counter,
            };
        }
        if elapsed <= 0 {
            return ChainOutcome::Stale;
        }
        if elapsed > MAX_BRIDGE_MS {
            self.restart_at(UnixMillis(at.0.max(prev.end.0)), mono_ms, counter);
            return ChainOutcome::Gap { gap_ms: elapsed };
        }
        let (start, end, step_ms) = self.place(prev.end, elapsed, at);
        self.previous = Some(Previous {
            end,
            mono: Some(mono_ms),
            counter,
        });
        let chain_start = std::mem::take(&mut self.next_is_chain_start) || step_ms.is_some();
        let energy = Millijoules(counter.0 - prev.counter.0);
        if elapsed > self.max_gap_ms || prev.mono.is_none() {
            ChainOutcome::Bridged {
                spans: split_bridge(start, end, energy, chain_start),
                gap_ms: elapsed,
                step_ms,
            }
        } else {
            ChainOutcome::Span {
                span: CounterSpan {
                    start,
                    end,
                    energy,
                    chain_start,
                },
                step_ms,
            }
        }
    }

    fn restart_at(&mut self, end: UnixMillis, mono: i64, counter: Millijoules) {
        self.previous = Some(Previous {
            end,
            mono: Some(mono),
            counter,
        });
        self.next_is_chain_start = true;
        self.slewing = false;
    }

    /// Places a span of `elapsed` monotonic ms after `prev_end`, with the wall clock at `wall`:
    /// `(start, end, wall-clock step seen)`.
    fn place(
        &mut self,
        prev_end: UnixMillis,
        elapsed: i64,
        wall: UnixMillis,
    ) -> (UnixMillis, UnixMillis, Option<i64>) {
        let natural = prev_end.0 + elapsed;
        let drift = wall.0 - natural;
        if drift > STEP_TOLERANCE_MS {
            self.slewing = false;
            return (UnixMillis(wall.0 - elapsed), wall, Some(drift));
        }
        let shortest = natural - elapsed / SLEW_DIVISOR;
        let step = (drift < -STEP_TOLERANCE_MS && !self.slewing).then_some(drift);
        if wall.0 >= shortest.max(prev_end.0 + 1) {
            self.slewing = false;
            (prev_end, wall, step)
        } else {
            self.slewing = true;
            (prev_end, UnixMillis(shortest.max(prev_end.0 + 1)), step)
        }
    }
}

/// Splits a bridged span into contiguous pieces of at most [`BRIDGE_PIECE_MS`], energy in
/// proportion to time (the last piece takes the rounding), so the pieces sum to `energy`.
pub fn split_bridge(
    start: UnixMillis,
    end: UnixMillis,
    energy: Millijoules,
    chain_start: bool,
) -> Vec<CounterSpan> {
    let total = end.since(start).max(1);
    let mut out = Vec::new();
    let mut from = start.0;
    let mut given = 0u64;
    while from < end.0 {
        let to = (from + BRIDGE_PIECE_MS).min(end.0);
        let upto = if to == end.0 {
            energy.0
        } else {
            (u128::from(energy.0) * (to - start.0) as u128 / total as u128) as u64
        };
        out.push(CounterSpan {
            start: UnixMillis(from),
            end: UnixMillis(to),
            energy: Millijoules(upto - given),
            chain_start: chain_start && out.is_empty(),
        });
        given = upto;
        from = to;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(out: &ChainOutcome) -> Vec<CounterSpan> {
        match out {
            ChainOutcome::Span { span, .. } => vec![*span],
            ChainOutcome::Bridged { spans, .. } => spans.clone(),
            _ => Vec::new(),
        }
    }

    /// Feeds readings every second of monotonic time with the wall clock stepped by
    /// `step_ms` at reading `at_reading`; returns every span.
    fn run(step_ms: i64, at_reading: i64) -> (Vec<CounterSpan>, Vec<Option<i64>>) {
        let mut c = ClockedChain::new(10_000);
        let mut out = Vec::new();
        let mut steps = Vec::new();
        for i in 0..400 {
            let mono = i * 1000;
            let wall = 1_000_000 + mono + if i >= at_reading { step_ms } else { 0 };
            let o = c.observe(UnixMillis(wall), mono, Millijoules(5_000 + 700 * i as u64));
            if let ChainOutcome::Span { step_ms, .. } = &o {
                steps.push(*step_ms);
            }
            out.extend(spans(&o));
        }
        (out, steps)
    }

    fn check_timeline(spans: &[CounterSpan]) {
        for w in spans.windows(2) {
            assert!(w[1].start >= w[0].end, "overlap: {w:?}");
            assert!(w[1].end > w[1].start);
        }
        assert_eq!(spans.iter().map(|s| s.energy.0).sum::<u64>(), 700 * 399);
    }

    #[test]
    fn a_step_forward_starts_a_chain_on_the_new_time_with_all_the_energy() {
        let (spans, steps) = run(20_000, 100);
        check_timeline(&spans);
        let stepped = &spans[99];
        assert_eq!(steps[99], Some(20_000));
        assert!(stepped.chain_start);
        assert_eq!(stepped.end.since(stepped.start), 1000);
        assert_eq!(stepped.start, UnixMillis(1_000_000 + 99_000 + 20_000));
        assert_eq!(spans.iter().filter(|s| s.chain_start).count(), 2);
    }

    #[test]
    fn a_step_back_slews_back_to_the_wall_clock_without_overlap() {
        let (spans, steps) = run(-20_000, 100);
        check_timeline(&spans);
        assert_eq!(steps.iter().filter(|s| s.is_some()).count(), 1);
        assert_eq!(steps[99], Some(-20_000));
        assert!(spans[99].chain_start);
        // Spans are contiguous throughout and at least 900 ms long while slewing.
        for w in spans.windows(2) {
            assert_eq!(w[1].start, w[0].end);
        }
        assert!(spans.iter().all(|s| s.end.since(s.start) >= 900));
        // 20 s at 100 ms per span: back on the wall clock after 200 spans.
        let last = spans.last().expect("spans");
        assert_eq!(last.end, UnixMillis(1_000_000 + 399_000 - 20_000));
        assert_eq!(spans[299].end.since(spans[299].start), 1000);
    }

    #[test]
    fn a_long_gap_is_bridged_in_pieces_that_sum_to_the_counter_delta() {
        let mut c = ClockedChain::new(10_000);
        c.observe(UnixMillis(0), 0, Millijoules(1_000));
        let o = c.observe(
            UnixMillis(1_200_000),
            1_200_000,
            Millijoules(1_000 + 840_000_001),
        );
        let ChainOutcome::Bridged {
            spans,
            gap_ms,
            step_ms,
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!((gap_ms, step_ms), (1_200_000, None));
        assert_eq!(spans.len(), 4);
        assert_eq!(spans.iter().map(|s| s.energy.0).sum::<u64>(), 840_000_001);
        assert!(spans
            .iter()
            .all(|s| s.end.since(s.start) == BRIDGE_PIECE_MS));
        assert_eq!(spans[0].energy, Millijoules(210_000_000));
        assert!(spans[0].chain_start && !spans[1].chain_start);
    }

    #[test]
    fn a_resumed_chain_bridges_the_downtime_unless_the_counter_reset() {
        let mut c = ClockedChain::new(10_000);
        c.resume(UnixMillis(50_000), Millijoules(9_000));
        // The wall clock is not past the end yet: wait.
        assert_eq!(
            c.observe(UnixMillis(50_000), 7, Millijoules(9_100)),
            ChainOutcome::Stale
        );
        let o = c.observe(UnixMillis(53_000), 8, Millijoules(9_500));
        let ChainOutcome::Bridged { spans, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(spans.len(), 1);
        assert_eq!(
            (
                spans[0].start,
                spans[0].end,
                spans[0].energy,
                spans[0].chain_start
            ),
            (
                UnixMillis(50_000),
                UnixMillis(53_000),
                Millijoules(500),
                true
            )
        );
        // Later readings are monotonic again.
        let o = c.observe(UnixMillis(54_000), 1_008, Millijoules(9_600));
        assert!(matches!(o, ChainOutcome::Span { span, step_ms: None } if !span.chain_start));
        let mut c = ClockedChain::new(10_000);
        c.resume(UnixMillis(50_000), Millijoules(9_000));
        assert!(matches!(
            c.observe(UnixMillis(60_000), 0, Millijoules(10)),
            ChainOutcome::CounterReset { .. }
        ));
        // A reload is a reload even with the wall clock before the stored end: the new chain
        // starts on the reading's own time.
        let mut c = ClockedChain::new(10_000);
        c.resume(UnixMillis(50_000), Millijoules(9_000));
        assert!(matches!(
            c.observe(UnixMillis(40_000), 0, Millijoules(10)),
            ChainOutcome::CounterReset { .. }
        ));
        let o = c.observe(UnixMillis(41_000), 1_000, Millijoules(20));
        assert!(
            matches!(o, ChainOutcome::Span { span, .. } if span.start == UnixMillis(40_000)),
            "{o:?}"
        );
    }
}
