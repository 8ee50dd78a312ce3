//! One GPU, one timeline: the ledger never holds two samples of a GPU whose spans overlap,
//! whatever their keys, so no GPU-millisecond is counted twice and coverage never exceeds 1.
//!
//! A sample is identified by `(gpu, seq)`; a redelivery of the same key is a duplicate, not an
//! overlap. A sample under a *new* key whose span overlaps stored energy of the same GPU (a
//! backfill replayed twice, a clock stepped back, a forged stream) is refused whole: energy
//! measured over a span cannot be split exactly, so the first-stored sample stands and the
//! later one is quarantined with [`Overlap`] as its reason.

use crate::ids::GpuUuid;
use crate::sample::MAX_SAMPLE_SPAN_MS;
use crate::time::UnixMillis;
use std::collections::BTreeMap;
use thiserror::Error;

/// The time a stored sample of one GPU covers, `[start, end)`, under its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanKey {
    /// The sample's sequence number.
    pub seq: u64,
    /// Span start.
    pub start: UnixMillis,
    /// Span end.
    pub end: UnixMillis,
}

impl SpanKey {
    /// Whether the two spans share any millisecond (touching ends do not).
    pub fn overlaps(&self, other: &SpanKey) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// A sample refused because its span overlaps stored energy of the same GPU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "span [{start}, {end}) of GPU {gpu} under seq {seq} overlaps stored energy: seq {stored_seq} \
     covers [{stored_start}, {stored_end}); a GPU has one timeline, so it is not counted"
)]
pub struct Overlap {
    /// The GPU.
    pub gpu: GpuUuid,
    /// The refused sample's sequence number.
    pub seq: u64,
    /// Its span start.
    pub start: UnixMillis,
    /// Its span end.
    pub end: UnixMillis,
    /// The stored sample it overlaps.
    pub stored_seq: u64,
    /// Stored span start.
    pub stored_start: UnixMillis,
    /// Stored span end.
    pub stored_end: UnixMillis,
}

/// How a new span stands against a GPU's stored timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// No stored span shares a millisecond with it.
    Free,
    /// The same span is stored under the same seq (an earlier, interrupted write of it).
    Itself,
    /// It overlaps this stored span of another seq, or its own seq with another span.
    Overlaps(SpanKey),
}

/// The stored spans of one GPU near a batch, to place the batch's samples against.
///
/// Tolerates overlapping spans in what it is given (data written before the invariant held):
/// every stored span that overlaps a new one is found, not only the nearest.
#[derive(Debug, Clone, Default)]
pub struct GpuTimeline {
    /// Spans by `(start, seq)`.
    spans: BTreeMap<(UnixMillis, u64), UnixMillis>,
}

impl GpuTimeline {
    /// A timeline of the given stored spans.
    pub fn new(spans: impl IntoIterator<Item = SpanKey>) -> Self {
        let mut t = Self::default();
        for s in spans {
            t.insert(s);
        }
        t
    }

    /// Where `span` would go. Walks back from the last stored span starting before its end
    /// and stops at the first that ends by its start: stored spans do not overlap, so no
    /// earlier one can reach it, and a check costs the spans it overlaps plus one rather than
    /// a scan of the [`MAX_SAMPLE_SPAN_MS`] before it (the bound on how far back it looks).
    pub fn place(&self, span: &SpanKey) -> Placement {
        let from = (
            UnixMillis(span.start.0.saturating_sub(MAX_SAMPLE_SPAN_MS)),
            0,
        );
        let mut itself = false;
        for (&(start, seq), &end) in self.spans.range(from..(span.end, 0)).rev() {
            let stored = SpanKey { seq, start, end };
            if end <= span.start {
                break;
            }
            if stored == *span {
                itself = true;
            } else {
                return Placement::Overlaps(stored);
            }
        }
        if itself {
            Placement::Itself
        } else {
            Placement::Free
        }
    }

    /// Adds a span (after [`GpuTimeline::place`] found it free).
    pub fn insert(&mut self, span: SpanKey) {
        self.spans.insert((span.start, span.seq), span.end);
    }

    /// Places `span` and, when free, inserts it; the error says what it overlaps.
    pub fn claim(&mut self, gpu: &GpuUuid, span: SpanKey) -> Result<Placement, Overlap> {
        match self.place(&span) {
            Placement::Overlaps(stored) => Err(Overlap {
                gpu: gpu.clone(),
                seq: span.seq,
                start: span.start,
                end: span.end,
                stored_seq: stored.seq,
                stored_start: stored.start,
                stored_end: stored.end,
            }),
            p @ Placement::Itself => Ok(p),
            Placement::Free => {
                self.insert(span);
                Ok(Placement::Free)
            }
        }
    }

    /// Milliseconds covered by the timeline within `[from, to)`, counting each millisecond
    /// once even if given overlapping spans.
    pub fn covered_ms(&self, from: UnixMillis, to: UnixMillis) -> i64 {
        let mut covered = 0;
        let mut reach = from;
        for (&(start, _), &end) in &self.spans {
            let lo = start.max(reach);
            let hi = end.min(to);
            if hi > lo {
                covered += hi.since(lo);
                reach = hi;
            }
        }
        covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(seq: u64, start: i64, end: i64) -> SpanKey {
        SpanKey {
            seq,
            start: UnixMillis(start),
            end: UnixMillis(end),
        }
    }

    #[test]
    fn touching_spans_fit_overlapping_ones_do_not() {
        let gpu = GpuUuid::from("GPU-1");
        let mut t = GpuTimeline::new([span(1, 1000, 2000)]);
        assert_eq!(t.claim(&gpu, span(2, 2000, 3000)), Ok(Placement::Free));
        assert_eq!(t.claim(&gpu, span(0, 0, 1000)), Ok(Placement::Free));
        // The same sample again is itself, not an overlap.
        assert_eq!(t.claim(&gpu, span(1, 1000, 2000)), Ok(Placement::Itself));
        // A new seq over the same time, inside, across an edge, or around: refused.
        for (seq, s, e) in [
            (9, 1000, 2000),
            (9, 1200, 1300),
            (9, 1999, 2001),
            (9, 500, 3500),
        ] {
            let err = t.claim(&gpu, span(seq, s, e)).unwrap_err();
            assert!(err.to_string().contains("overlaps stored energy"), "{err}");
        }
        // The same seq with another span is an overlap too, never a second copy.
        assert!(t.claim(&gpu, span(1, 1000, 1500)).is_err());
        assert_eq!(t.covered_ms(UnixMillis(0), UnixMillis(10_000)), 3000);
    }

    #[test]
    fn a_long_stored_span_is_found_from_its_last_millisecond() {
        let t = GpuTimeline::new([span(1, 0, MAX_SAMPLE_SPAN_MS)]);
        assert!(matches!(
            t.place(&span(2, MAX_SAMPLE_SPAN_MS - 1, MAX_SAMPLE_SPAN_MS + 5)),
            Placement::Overlaps(_)
        ));
    }

    proptest! {
        /// Whatever spans are offered, in whatever order, the claimed ones never overlap and
        /// cover exactly the union of what was accepted: coverage never exceeds the time.
        #[test]
        fn claimed_spans_never_overlap(offers in proptest::collection::vec((0i64..20_000, 1i64..3_000, 0u64..50), 1..80)) {
            let gpu = GpuUuid::from("GPU-1");
            let mut t = GpuTimeline::default();
            let mut accepted: Vec<SpanKey> = Vec::new();
            for (start, len, seq) in offers {
                let s = span(seq, start, start + len);
                if let Ok(Placement::Free) = t.claim(&gpu, s) {
                    accepted.push(s);
                }
            }
            for (i, a) in accepted.iter().enumerate() {
                for b in &accepted[i + 1..] {
                    prop_assert!(!a.overlaps(b), "{a:?} and {b:?}");
                }
            }
            let sum: i64 = accepted.iter().map(|s| s.end.since(s.start)).sum();
            prop_assert_eq!(t.covered_ms(UnixMillis(0), UnixMillis(30_000)), sum);
            prop_assert!(sum <= 30_000);
        }
    }
}
