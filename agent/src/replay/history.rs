//! A replayed GPU's past, computed rather than read: the spans a replay that had been running
//! since `from` would have reported, at a coarse span (a minute, say) instead of the live
//! agent's second, so that days of demo history are thousands of samples rather than millions.
//!
//! GPU `i` is at its start position `offset_i` at the live start `to` (see the module docs of
//! [`super`]); its history is the looped trace played up to that position: position
//! `Q = offset_i + k·(n − 1)` (the same trace row, `k` laps later) is placed at `to`, and
//! position `q ≤ Q` at `to − (T(Q) − T(q))`. Each span runs between two trace positions, so its
//! energy is the trace counter's exact delta between them (the sum of the trace's step deltas,
//! the same integers the live replay adds to its virtual counter); the spans are contiguous,
//! the first starts at the first position at or after `from`, and the last ends exactly at
//! `to`, where the live replay's first span starts.

use super::ReplaySensor;
use crate::sensor::SensorError;
use wattprint_core::{Millijoules, Milliwatts, UnixMillis};

/// One span of a replayed GPU's history: what a sample over it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySpan {
    /// Time of the reading the span starts at.
    pub start: UnixMillis,
    /// Time of the reading the span ends at.
    pub end: UnixMillis,
    /// The trace counter's delta over the span.
    pub energy: Millijoules,
    /// Power at `end`.
    pub power: Milliwatts,
    /// Highest power of the trace rows in the span.
    pub power_max: Milliwatts,
    /// Mean utilisation of the trace rows in the span, percent.
    pub util_gpu_pct: u32,
    /// Memory in use at `end`, bytes.
    pub mem_used_bytes: u64,
    /// Highest temperature of the trace rows in the span, °C.
    pub temp_c: u32,
    /// Mean SM clock of the trace rows in the span, MHz.
    pub sm_clock_mhz: u32,
}

impl ReplaySensor {
    /// GPU `gpu_index`'s history over `[from, to]` when its live replay starts at `to`: spans of
    /// at most `span_ms` (and at least one trace step), contiguous, the last ending at `to`.
    /// Pure and deterministic: the same arguments give the same spans. Empty when `from` is not
    /// before `to`. A step where the trace's counter goes backwards (the shipped trace has
    /// none) adds no energy.
    pub fn history(
        &self,
        gpu_index: usize,
        from: UnixMillis,
        to: UnixMillis,
        span_ms: i64,
    ) -> Result<Vec<HistorySpan>, SensorError> {
        let Some(st) = self.state.get(gpu_index) else {
            return Err(SensorError::NoSuchGpu {
                index: gpu_index,
                count: self.state.len(),
            });
        };
        let n = self.n();
        let steps_per_lap = n - 1;
        let first = self.rows[0].t_ms;
        let period = self.rows[self.rows.len() - 1].t_ms - first;
        if from >= to || period <= 0 {
            return Ok(Vec::new());
        }
        // Laps before the start position so that the history reaches back to `from`.
        let laps = (to.since(from) / period + 2) as u64;
        let end_pos = st.offset + laps * steps_per_lap;
        let t_end = self.time(end_pos);
        let at = |q: u64| UnixMillis(to.0 - (t_end - self.time(q)));
        // Cumulative energy of the looped trace from position 0.
        let mut cum = Vec::with_capacity(self.rows.len());
        let mut sum = 0u64;
        cum.push(0u64);
        for w in self.rows.windows(2) {
            sum += w[1].counter.saturating_sub(w[0].counter);
            cum.push(sum);
        }
        let lap_energy = sum;
        let energy_at = |q: u64| -> u64 {
            if q == 0 {
                0
            } else {
                let lap = (q - 1) / steps_per_lap;
                lap * lap_energy + cum[self.row(q)]
            }
        };
        // The latest position whose time is at or before `t` (history time, ms).
        let pos_at_or_before = |t: i64| -> u64 {
            let tau = t - (to.0 - t_end);
            let lap = tau.div_euclid(period);
            let rem = tau - lap * period;
            let r = self.rows.partition_point(|row| row.t_ms - first <= rem) - 1;
            let lap = lap.max(0) as u64;
            match (lap, r) {
                (0, r) => r as u64,
                (lap, 0) => lap * steps_per_lap,
                (lap, r) => lap * steps_per_lap + r as u64,
            }
        };
        let mut q = pos_at_or_before(from.0);
        if at(q) < from {
            q += 1;
        }
        let mut spans = Vec::new();
        while q < end_pos {
            let next = pos_at_or_before(at(q).0 + span_ms.max(1))
                .max(q + 1)
                .min(end_pos);
            let (mut power_max, mut temp, mut util, mut clock) = (0u32, 0u32, 0u64, 0u64);
            for p in q + 1..=next {
                let row = &self.rows[self.row(p)];
                power_max = power_max.max(row.power);
                temp = temp.max(row.temp_c);
                util += u64::from(row.util_gpu_pct);
                clock += u64::from(row.sm_clock_mhz);
            }
            let count = next - q;
            let last = &self.rows[self.row(next)];
            spans.push(HistorySpan {
                start: at(q),
                end: at(next),
                energy: Millijoules(energy_at(next) - energy_at(q)),
                power: Milliwatts(last.power),
                power_max: Milliwatts(power_max),
                util_gpu_pct: (util / count) as u32,
                mem_used_bytes: last.mem_used_bytes,
                temp_c: temp,
                sm_clock_mhz: (clock / count) as u32,
            });
            q = next;
        }
        Ok(spans)
    }
}
