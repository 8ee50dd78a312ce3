//! Carbon-aware counterfactuals from Dodge et al. (FAccT 2022): what a workload would have
//! emitted had it started later (**Flexible Start**) or paused in high-intensity periods
//! (**Pause and Resume**).
//!
//! Everything works on 5-minute slots. A workload is its energy *profile*: the energy of each
//! consecutive slot of the actual run, slot 0 being the run's first bucket. An intensity series
//! gives one value per consecutive slot starting at that same bucket (index `i` is the bucket
//! `i × 5 min` after the run's first), and extends past the run far enough for the window asked.
//! [`slot_start`] turns a slot index back into a time.
//!
//! The functions do not care where the intensities come from: pass actual marginal values for a
//! retrospective report, or a forecast to plan a run before it starts — same API, same numbers;
//! the caller labels which it used.
//!
//! Emissions are Σ E_slot × I_slot, summed in mJ·g/kWh and converted to grams once at the end.

use crate::time::{Bucket, UnixMillis, BUCKET_MS};
use crate::units::{GramsCo2e, GramsPerKwh, Millijoules, MJ_PER_KWH};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a counterfactual cannot be computed.
#[derive(Debug, Error, PartialEq)]
pub enum WhatIfError {
    /// The energy profile has no slots.
    #[error("the energy profile is empty: a counterfactual needs at least one 5-minute slot")]
    EmptyProfile,
    /// The intensity series does not cover the run plus the window asked for.
    #[error(
        "the intensity series has {got} 5-minute slots, but a {profile}-slot profile needs \
         {needed} for this window"
    )]
    IntensityTooShort {
        /// Slots in the profile.
        profile: usize,
        /// Slots of intensity needed (saturates at `usize::MAX` for absurd windows).
        needed: usize,
        /// Slots of intensity given.
        got: usize,
    },
    /// An intensity the computation would use is NaN, infinite or negative.
    #[error("intensity at slot {slot} is {value} gCO2e/kWh; it must be finite and not negative")]
    BadIntensity {
        /// Slot index in the series.
        slot: usize,
        /// Offending value.
        value: f64,
    },
    /// The Pause and Resume deadline factor is not a finite number ≥ 1.
    #[error("the pause-and-resume factor must be a finite number >= 1, got {0}")]
    BadFactor(f64),
}

/// Start time of slot `slot` of a series whose slot 0 is `first`.
pub fn slot_start(first: Bucket, slot: usize) -> UnixMillis {
    let offset = i64::try_from(slot)
        .unwrap_or(i64::MAX)
        .saturating_mul(BUCKET_MS);
    UnixMillis(first.start().0.saturating_add(offset))
}

/// Result of [`flexible_start`]. Offsets are in 5-minute slots after the actual start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlexibleStartResult {
    /// Slots in the profile (the run's duration).
    pub profile_slots: usize,
    /// Latest start considered, in slots after the actual start.
    pub window_slots: usize,
    /// Emissions of the run as it happened (offset 0).
    pub actual: GramsCo2e,
    /// Offset with the lowest emissions (the earliest one on ties).
    pub best_offset: usize,
    /// Emissions when started at `best_offset`.
    pub best: GramsCo2e,
    /// Offset with the highest emissions (the earliest one on ties).
    pub worst_offset: usize,
    /// Emissions when started at `worst_offset`.
    pub worst: GramsCo2e,
    /// `actual − best` (never negative: offset 0 is a candidate).
    pub saving: GramsCo2e,
    /// `saving / actual × 100`; 0 when `actual` is 0.
    pub saving_pct: f64,
}

/// Result of [`pause_and_resume`]. Slot indices count from the run's actual first slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PauseResumeResult {
    /// Slots of work in the profile (n).
    pub profile_slots: usize,
    /// The run must finish within this many slots of its start (m = ⌈factor × n⌉).
    pub deadline_slots: usize,
    /// Slot in which each work slot runs: strictly increasing, all `< deadline_slots`;
    /// `schedule[j]` runs the profile's slot `j`.
    pub schedule: Vec<usize>,
    /// Emissions of the run straight through (slots `0..n`), as it happened.
    pub actual: GramsCo2e,
    /// Emissions of the optimal schedule.
    pub emissions: GramsCo2e,
    /// `actual − emissions` (never negative: running straight through is a candidate).
    pub saving: GramsCo2e,
    /// `saving / actual × 100`; 0 when `actual` is 0.
    pub saving_pct: f64,
    /// Idle slots before the run finishes (a delayed start counts too):
    /// `schedule[n−1] + 1 − n`.
    pub paused_slots: usize,
}

/// The Pause and Resume deadline in slots for an `n`-slot run: m = ⌈factor × n⌉, where a product
/// within 1e-9 (relative) of an integer counts as that integer, so float noise such as
/// 1.1 × 10 = 11.000000000000002 does not add a slot. Saturates at `usize::MAX`.
pub fn deadline_slots(n: usize, factor: f64) -> Result<usize, WhatIfError> {
    if !factor.is_finite() || factor < 1.0 {
        return Err(WhatIfError::BadFactor(factor));
    }
    let x = factor * n as f64;
    let r = x.round();
    let m = if (x - r).abs() <= 1e-9 * x.max(1.0) {
        r
    } else {
        x.ceil()
    };
    // `as` saturates for floats too large for usize; m ≥ n because factor ≥ 1.
    Ok((m as usize).max(n))
}

/// Flexible Start: the same profile started at every offset `d` in `0..=window_slots`, with
/// emissions(d) = Σ_j E_j × I_{d+j}. `intensity` needs `profile.len() + window_slots` slots;
/// only those are read (and checked finite and not negative). A 6-hour window is 72 slots,
/// 24 hours 288.
///
/// Complexity: O(n·(w+1)) multiply-adds for n profile slots and w window slots, in a tight
/// 8-lane loop with no allocation inside (a 30-day profile over a 30-day window, ≈ 75M
/// multiply-adds, takes tens of milliseconds); O(n + w) memory.
pub fn flexible_start(
    profile: &[Millijoules],
    intensity: &[GramsPerKwh],
    window_slots: usize,
) -> Result<FlexibleStartResult, WhatIfError> {
    let n = profile.len();
    if n == 0 {
        return Err(WhatIfError::EmptyProfile);
    }
    let series = checked_intensity(intensity, n, n.saturating_add(window_slots))?;
    let energy = energies(profile);

    let mut actual = 0.0;
    let (mut best, mut best_offset) = (f64::INFINITY, 0);
    let (mut worst, mut worst_offset) = (f64::NEG_INFINITY, 0);
    for (d, window) in series.windows(n).enumerate() {
        let e = dot(&energy, window);
        if d == 0 {
            actual = e;
        }
        if e < best {
            (best, best_offset) = (e, d);
        }
        if e > worst {
            (worst, worst_offset) = (e, d);
        }
    }
    let (actual, best, worst) = (grams(actual), grams(best), grams(worst));
    let saving = GramsCo2e(actual.0 - best.0);
    Ok(FlexibleStartResult {
        profile_slots: n,
        window_slots,
        actual,
        best_offset,
        best,
        worst_offset,
        worst,
        saving,
        saving_pct: percent(saving, actual),
    })
}

/// Pause and Resume: the run may pause and resume at 5-minute granularity but must finish
/// within m = [`deadline_slots`]`(n, factor)` slots of its start (the paper uses factors
/// 1.25, 1.5, 1.75 and 2.0). Its work is ordered: work slot `j` (energy E_j) must run after
/// work slot `j−1`. `intensity` needs m slots; only those are read and checked.
///
/// The paper's rule is "run in the lowest-intensity slots"; with unequal energies per work slot
/// that greedy choice is not optimal, so this solves the assignment exactly: choose slots
/// s_0 < … < s_{n−1} < m minimising Σ E_j × I_{s_j}, by dynamic programming over
/// f_j(t) = least emissions placing the first j work slots in the first t slots,
/// f_j(t) = min(f_j(t−1), f_{j−1}(t−1) + E_{j−1} × I_{t−1}). Work slot j can only go to slots
/// j..=j+(m−n), so each row is a band of m−n+1 cells. On equal emissions the earlier slot wins:
/// with a flat intensity the run goes straight through.
///
/// Complexity: O(n·(m−n+1)) time; O(m−n+1) floats for the DP row, plus n·(m−n+1) bits to
/// recover the schedule (≈ 9 MB for a 30-day profile with factor 2).
pub fn pause_and_resume(
    profile: &[Millijoules],
    intensity: &[GramsPerKwh],
    factor: f64,
) -> Result<PauseResumeResult, WhatIfError> {
    let n = profile.len();
    if n == 0 {
        return Err(WhatIfError::EmptyProfile);
    }
    let m = deadline_slots(n, factor)?;
    let series = checked_intensity(intensity, n, m)?;
    let energy = energies(profile);
    let width = m - n + 1;

    // f[s] = f_j(j + s); f_0 ≡ 0. `took` holds, per (j, s), whether f_j(j + s) places work
    // slot j−1 in slot j+s−1.
    let mut f = vec![0.0f64; width];
    let mut took = vec![0u64; (n * width).div_ceil(64)];
    for (j, &e) in energy.iter().enumerate() {
        // Work slot j may use slots j..j+width: series[j + s] for band cell s.
        let slots = &series[j..j + width];
        let row = j * width;
        let mut left = f64::INFINITY; // f_{j+1}(j + s), the "skip slot" candidate
        for (s, (cell, &i)) in f.iter_mut().zip(slots).enumerate() {
            let take = *cell + e * i;
            if take < left {
                left = take;
                let bit = row + s;
                took[bit >> 6] |= 1 << (bit & 63);
            }
            *cell = left;
        }
    }
    let emissions = grams(f[width - 1]);

    let mut schedule = vec![0usize; n];
    let (mut j, mut s) = (n, width - 1);
    while j > 0 {
        let bit = (j - 1) * width + s;
        if took[bit >> 6] & (1 << (bit & 63)) != 0 {
            schedule[j - 1] = j - 1 + s;
            j -= 1;
        } else {
            // Cell 0 of every row always takes (skipping there has no candidate), so s > 0.
            s -= 1;
        }
    }

    let actual = grams(dot(&energy, &series[..n]));
    let saving = GramsCo2e(actual.0 - emissions.0);
    Ok(PauseResumeResult {
        profile_slots: n,
        deadline_slots: m,
        paused_slots: schedule[n - 1] + 1 - n,
        schedule,
        actual,
        emissions,
        saving,
        saving_pct: percent(saving, actual),
    })
}

/// The first `needed` intensities as plain floats, each checked finite and not negative.
fn checked_intensity(
    intensity: &[GramsPerKwh],
    profile: usize,
    needed: usize,
) -> Result<Vec<f64>, WhatIfError> {
    let Some(used) = intensity.get(..needed) else {
        return Err(WhatIfError::IntensityTooShort {
            profile,
            needed,
            got: intensity.len(),
        });
    };
    used.iter()
        .enumerate()
        .map(|(slot, v)| {
            if v.0.is_finite() && v.0 >= 0.0 {
                Ok(v.0)
            } else {
                Err(WhatIfError::BadIntensity { slot, value: v.0 })
            }
        })
        .collect()
}

/// Emissions of `profile` run with work slot `j` in slot `slots[j]` of `intensity`:
/// Σ E_j × I_{slots[j]} (with the searches' dot product, so a Flexible Start plan evaluated on
/// the series it was found on gives the search's figure exactly). Used to judge a plan made
/// on one series (a forecast) on another (the actuals). `None` when `slots` and `profile`
/// differ in length or a slot lies beyond `intensity`.
pub fn plan_emissions(
    profile: &[Millijoules],
    intensity: &[GramsPerKwh],
    slots: &[usize],
) -> Option<GramsCo2e> {
    if slots.len() != profile.len() {
        return None;
    }
    let values = slots
        .iter()
        .map(|&s| intensity.get(s).map(|i| i.0))
        .collect::<Option<Vec<f64>>>()?;
    Some(grams(dot(&energies(profile), &values)))
}

fn energies(profile: &[Millijoules]) -> Vec<f64> {
    profile.iter().map(|e| e.0 as f64).collect()
}

/// mJ·g/kWh to grams.
fn grams(mj_g_per_kwh: f64) -> GramsCo2e {
    GramsCo2e(mj_g_per_kwh / MJ_PER_KWH as f64)
}

fn percent(saving: GramsCo2e, actual: GramsCo2e) -> f64 {
    if actual.0 > 0.0 {
        saving.0 / actual.0 * 100.0
    } else {
        0.0
    }
}

/// Σ a_i × b_i over equal-length slices, in 8 independent lanes so the compiler vectorises it.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0.0f64; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    /// One kWh: with profiles in kWh, emissions in grams equal Σ kWh × intensity.
    const KWH: u64 = MJ_PER_KWH;

    fn kwh(v: &[u64]) -> Vec<Millijoules> {
        v.iter().map(|&k| Millijoules(k * KWH)).collect()
    }

    fn gkwh(v: &[f64]) -> Vec<GramsPerKwh> {
        v.iter().copied().map(GramsPerKwh).collect()
    }

    fn rel_eq(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * a.abs().max(b.abs()).max(1e-300)
    }

    /// Naive Σ_j E_j × I_{d+j} in grams, summed term by term in f64.
    fn naive_emissions(profile: &[Millijoules], intensity: &[GramsPerKwh], d: usize) -> f64 {
        profile
            .iter()
            .enumerate()
            .map(|(j, e)| intensity[d + j].emissions(*e).0)
            .sum()
    }

    /// Naive Flexible Start: (best offset, best, worst offset, worst), earliest on ties.
    fn naive_flexible(
        profile: &[Millijoules],
        intensity: &[GramsPerKwh],
        w: usize,
    ) -> (usize, f64, usize, f64) {
        let all: Vec<f64> = (0..=w)
            .map(|d| naive_emissions(profile, intensity, d))
            .collect();
        let mut best = 0;
        let mut worst = 0;
        for d in 1..=w {
            if all[d] < all[best] {
                best = d;
            }
            if all[d] > all[worst] {
                worst = d;
            }
        }
        (best, all[best], worst, all[worst])
    }

    fn schedule_emissions(
        profile: &[Millijoules],
        intensity: &[GramsPerKwh],
        schedule: &[usize],
    ) -> f64 {
        profile
            .iter()
            .zip(schedule)
            .map(|(e, &s)| intensity[s].emissions(*e).0)
            .sum()
    }

    /// Exhaustive Pause and Resume: the least emissions over all C(m, n) increasing choices.
    fn brute_pause(profile: &[Millijoules], intensity: &[GramsPerKwh], m: usize) -> f64 {
        fn go(
            profile: &[Millijoules],
            intensity: &[GramsPerKwh],
            m: usize,
            from: usize,
            chosen: &mut Vec<usize>,
            best: &mut f64,
        ) {
            if chosen.len() == profile.len() {
                *best = best.min(schedule_emissions(profile, intensity, chosen));
                return;
            }
            let left = profile.len() - chosen.len();
            for t in from..=(m - left) {
                chosen.push(t);
                go(profile, intensity, m, t + 1, chosen, best);
                chosen.pop();
            }
        }
        let mut best = f64::INFINITY;
        go(profile, intensity, m, 0, &mut Vec::new(), &mut best);
        best
    }

    fn check_schedule(r: &PauseResumeResult, profile: &[Millijoules], intensity: &[GramsPerKwh]) {
        assert_eq!(r.schedule.len(), profile.len());
        assert!(
            r.schedule.windows(2).all(|w| w[0] < w[1]),
            "{:?}",
            r.schedule
        );
        assert!(r.schedule.iter().all(|&s| s < r.deadline_slots));
        let recomputed = schedule_emissions(profile, intensity, &r.schedule);
        assert!(
            rel_eq(recomputed, r.emissions.0, 1e-9),
            "{recomputed} vs {}",
            r.emissions.0
        );
        assert_eq!(
            r.paused_slots,
            r.schedule[profile.len() - 1] + 1 - profile.len()
        );
    }

    fn caiso() -> &'static [GramsPerKwh] {
        static SERIES: std::sync::OnceLock<Vec<GramsPerKwh>> = std::sync::OnceLock::new();
        SERIES.get_or_init(load_caiso)
    }

    fn load_caiso() -> Vec<GramsPerKwh> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/moer/watttime2023_caiso-north_actual.csv"
        );
        let mut reader = csv::Reader::from_path(path).expect("CAISO_NORTH series");
        assert_eq!(
            reader.headers().expect("header"),
            vec!["time", "Caiso_North"]
        );
        let v: Vec<GramsPerKwh> = reader
            .records()
            .map(|r| GramsPerKwh(r.expect("row")[1].parse().expect("value")))
            .collect();
        assert_eq!(v.len(), 8_928);
        v
    }

    #[test]
    fn flexible_start_finds_the_dip_in_a_hand_made_series() {
        // Offsets: d=0 → 5+1, d=1 → 1+1, d=2 → 1+5, d=3 → 5+5.
        let r =
            flexible_start(&kwh(&[1, 1]), &gkwh(&[5.0, 1.0, 1.0, 5.0, 5.0, 9.0]), 3).expect("ok");
        assert_eq!(r.actual, GramsCo2e(6.0));
        assert_eq!((r.best_offset, r.best), (1, GramsCo2e(2.0)));
        assert_eq!((r.worst_offset, r.worst), (3, GramsCo2e(10.0)));
        assert_eq!(r.saving, GramsCo2e(4.0));
        assert!(rel_eq(r.saving_pct, 200.0 / 3.0, 1e-12));
        assert_eq!((r.profile_slots, r.window_slots), (2, 3));
    }

    #[test]
    fn a_plan_is_judged_on_another_series_by_hand() {
        let profile = kwh(&[2, 1]);
        let forecast = gkwh(&[5.0, 1.0, 1.0, 5.0]);
        let actual = gkwh(&[4.0, 3.0, 1.0, 2.0]);
        let planned = flexible_start(&profile, &forecast, 2).expect("ok");
        // Planned on the forecast: start at slot 1 (2×1 + 1×1 = 3 g).
        assert_eq!((planned.best_offset, planned.best), (1, GramsCo2e(3.0)));
        let slots = [1, 2];
        assert_eq!(
            plan_emissions(&profile, &forecast, &slots),
            Some(planned.best)
        );
        // On the actuals the same plan emits 2×3 + 1×1 = 7 g.
        assert_eq!(
            plan_emissions(&profile, &actual, &slots),
            Some(GramsCo2e(7.0))
        );
        assert_eq!(plan_emissions(&profile, &actual, &[2, 4]), None);
        assert_eq!(plan_emissions(&profile, &actual, &[2]), None);
    }

    #[test]
    fn flexible_start_weights_each_slot_by_its_energy() {
        // Profile 10 kWh then 1 kWh: d=0 → 50+1=51, d=1 → 10+9=19, d=2 → 90+0=90. A flat
        // profile (5+1=6, 1+9=10, 9+0=9) would stay at d=0.
        let r = flexible_start(&kwh(&[10, 1]), &gkwh(&[5.0, 1.0, 9.0, 0.0]), 2).expect("ok");
        assert_eq!((r.best_offset, r.best), (1, GramsCo2e(19.0)));
        assert_eq!((r.worst_offset, r.worst), (2, GramsCo2e(90.0)));
        let flat = flexible_start(&kwh(&[1, 1]), &gkwh(&[5.0, 1.0, 9.0, 0.0]), 2).expect("ok");
        assert_eq!(flat.best_offset, 0);
    }

    #[test]
    fn flexible_start_picks_the_earliest_offset_on_ties() {
        let r = flexible_start(&kwh(&[2, 3]), &gkwh(&[4.0; 6]), 4).expect("ok");
        assert_eq!((r.best_offset, r.worst_offset), (0, 0));
        assert_eq!(
            (r.best, r.worst, r.saving),
            (r.actual, r.actual, GramsCo2e(0.0))
        );
    }

    #[test]
    fn flexible_start_with_zero_window_is_the_actual_run() {
        let r = flexible_start(&kwh(&[3, 4]), &gkwh(&[2.0, 7.0]), 0).expect("ok");
        assert_eq!(
            (r.actual, r.best, r.worst),
            (GramsCo2e(34.0), r.actual, r.actual)
        );
        assert_eq!(
            (r.best_offset, r.saving, r.saving_pct),
            (0, GramsCo2e(0.0), 0.0)
        );
    }

    #[test]
    fn pause_and_resume_runs_in_the_low_slots_of_a_hand_made_series() {
        let r =
            pause_and_resume(&kwh(&[1, 1]), &gkwh(&[5.0, 1.0, 1.0, 5.0, 0.0]), 2.0).expect("ok");
        assert_eq!(r.deadline_slots, 4);
        assert_eq!(r.schedule, vec![1, 2]);
        assert_eq!((r.actual, r.emissions), (GramsCo2e(6.0), GramsCo2e(2.0)));
        assert_eq!(r.saving, GramsCo2e(4.0));
        assert_eq!(r.paused_slots, 1);
        // Slot 4 (intensity 0) is past the deadline and must not be used.
        let r =
            pause_and_resume(&kwh(&[1, 1]), &gkwh(&[5.0, 1.0, 3.0, 5.0, 0.0]), 1.5).expect("ok");
        assert_eq!((r.deadline_slots, r.schedule.clone()), (3, vec![1, 2]));
        assert_eq!(r.paused_slots, 1);
    }

    #[test]
    fn pause_and_resume_is_exact_where_lowest_slots_greedy_is_not() {
        // Work 1 kWh then 10 kWh, slots [3, 1, 2]: the two lowest slots {1, 2} give 1 + 20 = 21,
        // worse than running straight through (3 + 10 = 13), which is the optimum.
        let r = pause_and_resume(&kwh(&[1, 10]), &gkwh(&[3.0, 1.0, 2.0]), 1.5).expect("ok");
        assert_eq!(r.schedule, vec![0, 1]);
        assert_eq!(
            (r.emissions, r.saving, r.paused_slots),
            (GramsCo2e(13.0), GramsCo2e(0.0), 0)
        );
        // Add a 0.5 slot: (1, 3) gives 1 + 5 = 6, the best of the six choices.
        let r = pause_and_resume(&kwh(&[1, 10]), &gkwh(&[3.0, 1.0, 2.0, 0.5]), 2.0).expect("ok");
        assert_eq!(r.schedule, vec![1, 3]);
        assert_eq!((r.emissions, r.actual), (GramsCo2e(6.0), GramsCo2e(13.0)));
        assert_eq!(r.paused_slots, 2);
    }

    #[test]
    fn pause_and_resume_runs_straight_through_on_a_flat_series() {
        let profile = kwh(&[4, 1, 7, 2, 9]);
        let r = pause_and_resume(&profile, &gkwh(&[3.0; 10]), 2.0).expect("ok");
        assert_eq!(r.schedule, vec![0, 1, 2, 3, 4]);
        assert_eq!((r.paused_slots, r.saving), (0, GramsCo2e(0.0)));
        // No energy: nothing to save, and no division by zero.
        let r = pause_and_resume(&kwh(&[0, 0]), &gkwh(&[3.0, 1.0, 0.0, 2.0]), 2.0).expect("ok");
        assert_eq!((r.actual, r.saving_pct), (GramsCo2e(0.0), 0.0));
    }

    #[test]
    fn deadline_rounds_up_but_ignores_float_noise() {
        assert_eq!(deadline_slots(10, 1.1), Ok(11));
        assert_eq!(deadline_slots(3, 1.25), Ok(4));
        assert_eq!(deadline_slots(4, 1.25), Ok(5));
        assert_eq!(deadline_slots(7, 1.0), Ok(7));
        assert_eq!(deadline_slots(72, 2.0), Ok(144));
        assert_eq!(deadline_slots(5, 1.7), Ok(9));
        assert_eq!(deadline_slots(1, 1e300), Ok(usize::MAX));
        assert_eq!(deadline_slots(3, 0.99), Err(WhatIfError::BadFactor(0.99)));
        assert!(matches!(
            deadline_slots(3, f64::NAN),
            Err(WhatIfError::BadFactor(_))
        ));
        assert!(deadline_slots(3, f64::INFINITY).is_err());
    }

    #[test]
    fn bad_inputs_are_errors_that_name_the_numbers() {
        let i = gkwh(&[1.0; 5]);
        assert_eq!(flexible_start(&[], &i, 1), Err(WhatIfError::EmptyProfile));
        assert_eq!(
            pause_and_resume(&[], &i, 2.0),
            Err(WhatIfError::EmptyProfile)
        );

        let err = flexible_start(&kwh(&[1, 1, 1]), &i, 3).expect_err("too short");
        assert_eq!(
            err,
            WhatIfError::IntensityTooShort {
                profile: 3,
                needed: 6,
                got: 5
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains(" 5 ") && msg.contains(" 6 ") && msg.contains("3-slot"),
            "{msg}"
        );
        assert_eq!(
            pause_and_resume(&kwh(&[1, 1, 1]), &i, 2.0),
            Err(WhatIfError::IntensityTooShort {
                profile: 3,
                needed: 6,
                got: 5
            })
        );
        assert!(matches!(
            flexible_start(&kwh(&[1]), &i, usize::MAX),
            Err(WhatIfError::IntensityTooShort {
                needed: usize::MAX,
                ..
            })
        ));
        assert!(matches!(
            pause_and_resume(&kwh(&[1]), &i, 1e300),
            Err(WhatIfError::IntensityTooShort { .. })
        ));

        let bad = gkwh(&[1.0, 2.0, -3.5, 1.0, f64::NAN]);
        let err = flexible_start(&kwh(&[1, 1]), &bad, 1).expect_err("negative");
        assert_eq!(
            err,
            WhatIfError::BadIntensity {
                slot: 2,
                value: -3.5
            }
        );
        assert!(err.to_string().contains("slot 2 is -3.5"), "{err}");
        let err = pause_and_resume(&kwh(&[1]), &bad[3..], 2.0).expect_err("NaN");
        assert!(err.to_string().contains("slot 1 is NaN"), "{err}");
        // Values past the window are not read, so they need not be valid.
        assert!(flexible_start(&kwh(&[1, 1]), &bad, 0).is_ok());
        assert!(matches!(
            pause_and_resume(&kwh(&[1]), &i, 0.5),
            Err(WhatIfError::BadFactor(f)) if f == 0.5
        ));
        assert!(WhatIfError::BadFactor(0.5).to_string().contains("0.5"));
    }

    #[test]
    fn slot_start_counts_five_minute_buckets() {
        let first = Bucket::containing(UnixMillis(1_686_182_400_000));
        assert_eq!(slot_start(first, 0), first.start());
        assert_eq!(
            slot_start(first, 12),
            UnixMillis(1_686_182_400_000 + 3_600_000)
        );
        assert_eq!(slot_start(first, usize::MAX), UnixMillis(i64::MAX));
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x5eed_2022),
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn flexible_start_equals_the_naive_evaluation(
            profile in proptest::collection::vec(0u64..2_000_000_000, 1..40),
            window in 0usize..40,
            seed in proptest::collection::vec(0.0f64..1_000.0, 80),
        ) {
            let intensity = gkwh(&seed[..profile.len() + window]);
            let profile: Vec<_> = profile.into_iter().map(Millijoules).collect();
            let r = flexible_start(&profile, &intensity, window).expect("ok");
            let (best_d, best, worst_d, worst) = naive_flexible(&profile, &intensity, window);
            prop_assert_eq!(r.best_offset, best_d);
            prop_assert_eq!(r.worst_offset, worst_d);
            prop_assert!(rel_eq(r.best.0, best, 1e-9), "{} vs {}", r.best.0, best);
            prop_assert!(rel_eq(r.worst.0, worst, 1e-9));
            prop_assert!(rel_eq(r.actual.0, naive_emissions(&profile, &intensity, 0), 1e-9));
            prop_assert!(r.saving.0 >= 0.0);
        }

        #[test]
        fn pause_and_resume_equals_exhaustive_enumeration(
            profile in proptest::collection::vec(0u64..2_000_000_000, 1..=6),
            extra in 0usize..=6,
            seed in proptest::collection::vec(0.0f64..1_000.0, 12),
        ) {
            let n = profile.len();
            let m = n + extra;
            let profile: Vec<_> = profile.into_iter().map(Millijoules).collect();
            let intensity = gkwh(&seed);
            let r = pause_and_resume(&profile, &intensity, m as f64 / n as f64).expect("ok");
            prop_assert_eq!(r.deadline_slots, m);
            let brute = brute_pause(&profile, &intensity, m);
            prop_assert!(rel_eq(r.emissions.0, brute, 1e-9), "{} vs {}", r.emissions.0, brute);
            check_schedule(&r, &profile, &intensity);
            prop_assert!(rel_eq(r.actual.0, naive_emissions(&profile, &intensity, 0), 1e-9));
        }

        #[test]
        fn pause_and_resume_never_loses_to_flexible_start_in_the_same_deadline(
            profile in proptest::collection::vec(0u64..2_000_000_000, 1..30),
            factor in 1.0f64..3.0,
            seed in proptest::collection::vec(0.0f64..1_000.0, 90),
        ) {
            // Any start offset d ≤ m − n is itself a schedule, so P&R ≤ best Flexible Start.
            let profile: Vec<_> = profile.into_iter().map(Millijoules).collect();
            let intensity = gkwh(&seed);
            let r = pause_and_resume(&profile, &intensity, factor).expect("ok");
            let fs = flexible_start(&profile, &intensity, r.deadline_slots - profile.len())
                .expect("ok");
            prop_assert!(r.emissions.0 <= fs.best.0 * (1.0 + 1e-12), "{} > {}", r.emissions.0, fs.best.0);
            check_schedule(&r, &profile, &intensity);
        }

        #[test]
        fn pause_and_resume_on_real_caiso_windows_equals_exhaustive_enumeration(
            start in 0usize..(8_928 - 12),
            profile in proptest::collection::vec(1u64..300_000_000, 1..=6),
            extra in 0usize..=6,
        ) {
            let series = caiso();
            let n = profile.len();
            let m = n + extra;
            let intensity = &series[start..start + 12];
            let profile: Vec<_> = profile.into_iter().map(Millijoules).collect();
            let r = pause_and_resume(&profile, intensity, m as f64 / n as f64).expect("ok");
            let brute = brute_pause(&profile, intensity, m);
            prop_assert!(rel_eq(r.emissions.0, brute, 1e-9), "{} vs {}", r.emissions.0, brute);
            check_schedule(&r, &profile, intensity);
        }
    }

    /// 700 W for 5 minutes, the H100's TDP.
    const SLOT_700W: Millijoules = Millijoules(700 * 300 * 1000);

    #[test]
    fn flexible_start_on_caiso_north_matches_the_naive_reference() {
        let series = caiso();
        let profile = vec![SLOT_700W; 12]; // 1 hour
        for start in [0, 1_000, 4_321, 8_928 - 12 - 288] {
            let intensity = &series[start..];
            let r = flexible_start(&profile, intensity, 288).expect("ok");
            let (best_d, best, worst_d, worst) = naive_flexible(&profile, intensity, 288);
            assert_eq!(
                (r.best_offset, r.worst_offset),
                (best_d, worst_d),
                "start {start}"
            );
            assert!(rel_eq(r.best.0, best, 1e-12), "{} vs {best}", r.best.0);
            assert!(rel_eq(r.worst.0, worst, 1e-12));
            assert!(r.saving.0 > 0.0);
        }
    }

    #[test]
    fn pause_and_resume_on_caiso_north_matches_the_lowest_slots_reference() {
        // With a flat profile every choice of n slots costs E × Σ I over the chosen slots, so
        // the paper's rule (the n lowest-intensity slots) is the exact optimum.
        let series = caiso();
        let profile = vec![SLOT_700W; 72]; // 6 hours
        for start in [0, 2_000, 5_555, 8_928 - 144] {
            let intensity = &series[start..];
            let r = pause_and_resume(&profile, intensity, 2.0).expect("ok");
            assert_eq!(r.deadline_slots, 144);
            let mut lowest: Vec<f64> = intensity[..144].iter().map(|i| i.0).collect();
            lowest.sort_by(f64::total_cmp);
            let reference: f64 = lowest[..72]
                .iter()
                .map(|&i| GramsPerKwh(i).emissions(SLOT_700W).0)
                .sum();
            assert!(
                rel_eq(r.emissions.0, reference, 1e-12),
                "start {start}: {} vs {reference}",
                r.emissions.0
            );
            check_schedule(&r, &profile, intensity);
            assert!(r.saving.0 > 0.0 && r.paused_slots > 0);
        }
    }

    #[test]
    fn on_caiso_north_short_jobs_gain_most_from_flexible_start_and_long_from_pausing() {
        // Dodge et al.: relative Flexible Start savings shrink with job length; long jobs gain
        // more from Pause and Resume. Averaged over a start at midnight UTC of every day that
        // leaves room for a 24 h job plus a 24 h window.
        let series = caiso();
        let hour = vec![SLOT_700W; 12];
        let day = vec![SLOT_700W; 288];
        let starts: Vec<usize> = (0..)
            .map(|d| d * 288)
            .take_while(|s| s + 576 <= 8_928)
            .collect();
        assert_eq!(starts.len(), 30);
        let mean = |f: &dyn Fn(&[GramsPerKwh]) -> f64| {
            starts.iter().map(|&s| f(&series[s..])).sum::<f64>() / starts.len() as f64
        };
        let fs_1h = mean(&|i| flexible_start(&hour, i, 288).expect("ok").saving_pct);
        let fs_24h = mean(&|i| flexible_start(&day, i, 288).expect("ok").saving_pct);
        let pr_24h = mean(&|i| pause_and_resume(&day, i, 2.0).expect("ok").saving_pct);
        eprintln!("mean savings: FS 1h {fs_1h:.2}%, FS 24h {fs_24h:.2}%, P&R 24h x2 {pr_24h:.2}%");
        assert!(fs_1h > 2.0 * fs_24h, "FS 1h {fs_1h}% vs 24h {fs_24h}%");
        assert!(
            pr_24h > 2.0 * fs_24h,
            "P&R 24h {pr_24h}% vs FS 24h {fs_24h}%"
        );
    }
}
