//! Exact energy accounting: splitting a sample's counter delta across 5-minute buckets.
//!
//! A sample's energy is spread in proportion to time with the cumulative function
//! `cum(t) = ⌊E · (t − start) / (end − start)⌋`. A piece `[a, b]` of the span gets
//! `cum(b) − cum(a)`: never negative (cum is monotonic), and the pieces telescope, so any
//! partition of the span sums back to `E` exactly, in integer millijoules.

use crate::ids::{GpuUuid, InstanceId};
use crate::sample::EnergySample;
use crate::time::{Bucket, UnixMillis};
use crate::units::{Millijoules, Milliwatts};
use std::collections::BTreeMap;

/// The part of one sample that falls in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketShare {
    /// The bucket.
    pub bucket: Bucket,
    /// Energy attributed to it.
    pub energy: Millijoules,
    /// Milliseconds of the bucket the sample covers.
    pub covered_ms: i64,
}

/// Energy of `[start, end]` carrying `energy` that falls inside `[from, to]`.
/// Consistent with [`split_into_buckets`]: clipping at bucket edges gives the same numbers.
pub fn clip_energy(
    start: UnixMillis,
    end: UnixMillis,
    energy: Millijoules,
    from: UnixMillis,
    to: UnixMillis,
) -> Millijoules {
    let a = from.max(start);
    let b = to.min(end);
    if b <= a {
        return Millijoules(0);
    }
    Millijoules(cumulative(start, end, energy, b) - cumulative(start, end, energy, a))
}

/// `⌊E · (t − start) / (end − start)⌋` for `t` in `[start, end]`; `E` at `end`.
fn cumulative(start: UnixMillis, end: UnixMillis, energy: Millijoules, t: UnixMillis) -> u64 {
    let span = end.since(start);
    if span <= 0 {
        return energy.0;
    }
    let elapsed = t.since(start).clamp(0, span);
    // u128: 2^64 mJ × 2^63 ms cannot overflow.
    (u128::from(energy.0) * elapsed as u128 / span as u128) as u64
}

/// Splits a span's energy across the 5-minute buckets it touches, in time order.
/// The shares sum to `energy` exactly. An empty span puts all energy in its bucket.
pub fn split_into_buckets(
    start: UnixMillis,
    end: UnixMillis,
    energy: Millijoules,
) -> Vec<BucketShare> {
    if end <= start {
        return vec![BucketShare {
            bucket: Bucket::containing(start),
            energy,
            covered_ms: 0,
        }];
    }
    let mut shares = Vec::with_capacity(2);
    let mut bucket = Bucket::containing(start);
    // A span ending exactly on an edge does not touch the next bucket.
    while bucket.start() < end {
        let a = start.max(bucket.start());
        let b = end.min(bucket.end());
        shares.push(BucketShare {
            bucket,
            energy: Millijoules(
                cumulative(start, end, energy, b) - cumulative(start, end, energy, a),
            ),
            covered_ms: b.since(a),
        });
        bucket = bucket.next();
    }
    shares
}

/// Energy of one GPU of one instance in one bucket, accumulated from samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BucketEnergy {
    /// Sum of the samples' shares.
    pub energy: Millijoules,
    /// Milliseconds of the bucket covered by samples (coverage; gaps are reported, never filled).
    pub covered_ms: i64,
    /// Samples that contributed.
    pub samples: u32,
    /// Highest power reading among them.
    pub power_max: Milliwatts,
}

/// Key of an energy interval: one GPU of one instance in one bucket.
pub type IntervalKey = (InstanceId, GpuUuid, Bucket);

/// Accumulates samples into per-(instance, GPU, bucket) energy. Addition is commutative, so
/// the result does not depend on the order samples arrive in.
#[derive(Debug, Default, Clone)]
pub struct IntervalAccumulator {
    intervals: BTreeMap<IntervalKey, BucketEnergy>,
}

impl IntervalAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample's shares.
    pub fn add(&mut self, sample: &EnergySample) {
        for share in split_into_buckets(sample.start, sample.end, sample.energy) {
            let key = (sample.instance.clone(), sample.gpu.clone(), share.bucket);
            let entry = self.intervals.entry(key).or_default();
            entry.energy += share.energy;
            entry.covered_ms += share.covered_ms;
            entry.samples += 1;
            entry.power_max = entry.power_max.max(sample.power_max.max(sample.power));
        }
    }

    /// The accumulated intervals, ordered by key.
    pub fn intervals(&self) -> &BTreeMap<IntervalKey, BucketEnergy> {
        &self.intervals
    }

    /// Total energy across all intervals.
    pub fn total(&self) -> Millijoules {
        self.intervals.values().map(|i| i.energy).sum()
    }
}

/// Turns successive readings of a monotonic energy counter into self-contained spans.
///
/// A reading below the previous one (driver reload) or a gap longer than `max_gap_ms` restarts
/// the chain: no energy is emitted for that step, and the next span is flagged `chain_start`,
/// so the gap is reported as missing coverage rather than invented or made negative.
#[derive(Debug, Clone)]
pub struct CounterChain {
    previous: Option<(UnixMillis, Millijoules)>,
    next_is_chain_start: bool,
    max_gap_ms: i64,
}

/// One span produced by [`CounterChain::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSpan {
    /// Previous reading's time.
    pub start: UnixMillis,
    /// This reading's time.
    pub end: UnixMillis,
    /// Counter delta.
    pub energy: Millijoules,
    /// First span after a (re)start of the chain.
    pub chain_start: bool,
}

/// What a counter reading led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainStep {
    /// A span to send.
    Span(CounterSpan),
    /// First reading: nothing to send yet.
    Started,
    /// The counter went backwards; the chain restarts at this reading.
    CounterReset {
        /// Counter before.
        previous: Millijoules,
        /// Counter now.
        current: Millijoules,
    },
    /// Too long since the last reading; the chain restarts at this reading.
    Gap {
        /// Length of the gap.
        gap_ms: i64,
    },
    /// Time did not advance (same or earlier timestamp): reading ignored.
    Stale,
}

impl CounterChain {
    /// A chain that restarts after gaps longer than `max_gap_ms`.
    pub fn new(max_gap_ms: i64) -> Self {
        Self {
            previous: None,
            next_is_chain_start: true,
            max_gap_ms,
        }
    }

    /// Feeds one counter reading.
    pub fn observe(&mut self, at: UnixMillis, counter: Millijoules) -> ChainStep {
        let Some((prev_at, prev_counter)) = self.previous else {
            self.previous = Some((at, counter));
            return ChainStep::Started;
        };
        if at <= prev_at {
            return ChainStep::Stale;
        }
        self.previous = Some((at, counter));
        if counter < prev_counter {
            self.next_is_chain_start = true;
            return ChainStep::CounterReset {
                previous: prev_counter,
                current: counter,
            };
        }
        let gap_ms = at.since(prev_at);
        if gap_ms > self.max_gap_ms {
            self.next_is_chain_start = true;
            return ChainStep::Gap { gap_ms };
        }
        let chain_start = std::mem::take(&mut self.next_is_chain_start);
        ChainStep::Span(CounterSpan {
            start: prev_at,
            end: at,
            energy: Millijoules(counter.0 - prev_counter.0),
            chain_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::sample;
    use crate::time::BUCKET_MS;
    use proptest::prelude::*;

    #[test]
    fn a_span_inside_one_bucket_keeps_all_its_energy() {
        let shares = split_into_buckets(UnixMillis(1000), UnixMillis(2000), Millijoules(777));
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].energy, Millijoules(777));
        assert_eq!(shares[0].covered_ms, 1000);
    }

    #[test]
    fn a_span_across_an_edge_splits_in_proportion_to_time() {
        // 1 s span, 250 ms before the edge and 750 ms after it.
        let shares = split_into_buckets(
            UnixMillis(BUCKET_MS - 250),
            UnixMillis(BUCKET_MS + 750),
            Millijoules(1000),
        );
        assert_eq!(shares.len(), 2);
        assert_eq!(
            (shares[0].energy, shares[0].covered_ms),
            (Millijoules(250), 250)
        );
        assert_eq!(
            (shares[1].energy, shares[1].covered_ms),
            (Millijoules(750), 750)
        );
    }

    #[test]
    fn a_span_ending_on_an_edge_does_not_touch_the_next_bucket() {
        let shares = split_into_buckets(
            UnixMillis(BUCKET_MS - 10),
            UnixMillis(BUCKET_MS),
            Millijoules(5),
        );
        assert_eq!(shares.len(), 1);
    }

    #[test]
    fn remainders_never_lose_a_millijoule() {
        // 10 mJ over 3 buckets' worth of time: 3.33… each; floor-of-cumulative keeps the sum.
        let shares = split_into_buckets(UnixMillis(0), UnixMillis(3 * BUCKET_MS), Millijoules(10));
        let energies: Vec<u64> = shares.iter().map(|s| s.energy.0).collect();
        assert_eq!(energies, vec![3, 3, 4]);
    }

    #[test]
    fn counter_chain_emits_deltas_and_restarts_on_reset_and_gaps() {
        let mut c = CounterChain::new(10_000);
        assert_eq!(
            c.observe(UnixMillis(0), Millijoules(100)),
            ChainStep::Started
        );
        let ChainStep::Span(s) = c.observe(UnixMillis(1000), Millijoules(400)) else {
            panic!()
        };
        assert_eq!((s.energy, s.chain_start), (Millijoules(300), true));
        let ChainStep::Span(s) = c.observe(UnixMillis(2000), Millijoules(500)) else {
            panic!()
        };
        assert_eq!((s.energy, s.chain_start), (Millijoules(100), false));
        // Driver reload: the counter restarts near zero.
        assert_eq!(
            c.observe(UnixMillis(3000), Millijoules(20)),
            ChainStep::CounterReset {
                previous: Millijoules(500),
                current: Millijoules(20)
            }
        );
        let ChainStep::Span(s) = c.observe(UnixMillis(4000), Millijoules(70)) else {
            panic!()
        };
        assert_eq!(
            (s.start, s.energy, s.chain_start),
            (UnixMillis(3000), Millijoules(50), true)
        );
        assert_eq!(
            c.observe(UnixMillis(4000), Millijoules(90)),
            ChainStep::Stale
        );
        assert_eq!(
            c.observe(UnixMillis(20_000), Millijoules(90)),
            ChainStep::Gap { gap_ms: 16_000 }
        );
        let ChainStep::Span(s) = c.observe(UnixMillis(21_000), Millijoules(95)) else {
            panic!()
        };
        assert!(s.chain_start);
    }

    proptest! {
        #[test]
        fn shares_sum_to_the_energy_and_cover_the_span(
            start in -10_000_000i64..10_000_000_000,
            span in 1i64..3_600_000,
            energy in 0u64..u64::MAX / 2,
        ) {
            let shares = split_into_buckets(UnixMillis(start), UnixMillis(start + span), Millijoules(energy));
            let sum: u128 = shares.iter().map(|s| u128::from(s.energy.0)).sum();
            prop_assert_eq!(sum, u128::from(energy));
            prop_assert_eq!(shares.iter().map(|s| s.covered_ms).sum::<i64>(), span);
            for w in shares.windows(2) {
                prop_assert_eq!(w[0].bucket.next(), w[1].bucket);
            }
        }

        #[test]
        fn clipping_at_any_cut_point_is_additive(
            start in 0i64..1_000_000,
            span in 1i64..1_000_000,
            cut in 0i64..1_000_000,
            energy in 0u64..1_000_000_000_000,
        ) {
            let (s, e, en) = (UnixMillis(start), UnixMillis(start + span), Millijoules(energy));
            let cut = UnixMillis(start + cut % (span + 1));
            let left = clip_energy(s, e, en, UnixMillis(i64::MIN / 2), cut);
            let right = clip_energy(s, e, en, cut, UnixMillis(i64::MAX / 2));
            prop_assert_eq!(left + right, en);
        }

        #[test]
        fn accumulation_is_order_independent_and_conserves_energy(
            spans in proptest::collection::vec((0i64..2_000_000, 1i64..400_000, 0u64..10_000_000), 1..40),
            seed in any::<u64>(),
        ) {
            let samples: Vec<_> = spans.iter().map(|&(s, d, e)| sample(s, s + d, e)).collect();
            let mut forward = IntervalAccumulator::new();
            samples.iter().for_each(|s| forward.add(s));
            let mut shuffled = samples.clone();
            // Deterministic shuffle from the seed.
            let n = shuffled.len();
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut backward = IntervalAccumulator::new();
            shuffled.iter().for_each(|s| backward.add(s));
            prop_assert_eq!(forward.intervals(), backward.intervals());
            let expected: u64 = spans.iter().map(|&(_, _, e)| e).sum();
            prop_assert_eq!(forward.total(), Millijoules(expected));
        }

        #[test]
        fn a_counter_chain_never_emits_negative_or_invented_energy(
            readings in proptest::collection::vec((1i64..5_000, 0u64..1_000_000), 1..100),
        ) {
            // Random time steps and counters that sometimes go backwards.
            let mut chain = CounterChain::new(3_000);
            let mut t = 0;
            let mut emitted = 0u128;
            let mut bound = 0u128; // sum of positive steps between consecutive readings
            let mut prev: Option<u64> = None;
            for &(dt, counter) in &readings {
                t += dt;
                if let ChainStep::Span(s) = chain.observe(UnixMillis(t), Millijoules(counter)) {
                    emitted += u128::from(s.energy.0);
                }
                if let Some(p) = prev { bound += u128::from(counter.saturating_sub(p)); }
                prev = Some(counter);
            }
            prop_assert!(emitted <= bound);
        }
    }
}
