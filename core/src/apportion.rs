//! Splitting one GPU's measured energy between the instances that share it, exactly: the
//! shares of a span always sum to the span's energy, to the millijoule.
//!
//! NVML reports energy per physical GPU, not per MIG slice or per vGPU, so a shared GPU's
//! energy is apportioned by a documented rule and every share is flagged as apportioned:
//!
//! - **MIG** ([`MigRule`]): by slice size (the compute slices each GPU instance holds, e.g. 3
//!   for a `3g.40gb` profile), or by each instance's utilisation in the span (falling back to
//!   slice size when none was busy).
//! - **vGPU** ([`vgpu_shares`]): the GPU's idle floor (idle power × span) is shared by
//!   [`IdlePolicy`] — equally, or by profile size (framebuffer) — and the energy above it by
//!   each VM's utilisation in the span; with no VM busy, everything is idle.
//!
//! Integer shares come from [`split_exact`], the largest-remainder method: each share is the
//! floor of its exact proportion, and the millijoules left over go one each to the largest
//! remainders (ties to the earlier entry), so the split is deterministic and sums exactly.

use crate::units::{Millijoules, Milliwatts};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a split cannot be made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApportionError {
    /// Nothing to split between.
    #[error("no instances share this GPU: there is nothing to split the energy between")]
    NoShares,
    /// A MIG instance holds no compute slice.
    #[error("MIG instance {0} holds 0 compute slices; every GPU instance holds at least 1")]
    EmptySlice(usize),
    /// A utilisation above 100 %.
    #[error("utilisation {value} % of share {index} is above 100")]
    BadUtilisation {
        /// Position of the share.
        index: usize,
        /// The value.
        value: u8,
    },
}

/// Splits `total` in proportion to `weights`, exactly: the result sums to `total`. All-zero
/// weights split equally. Shares are floors of the exact proportions plus at most 1 mJ each.
pub fn split_exact(
    total: Millijoules,
    weights: &[u64],
) -> Result<Vec<Millijoules>, ApportionError> {
    if weights.is_empty() {
        return Err(ApportionError::NoShares);
    }
    let equal = vec![1u64; weights.len()];
    let weights = if weights.iter().all(|&w| w == 0) {
        &equal[..]
    } else {
        weights
    };
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let total_wide = u128::from(total.0);
    let mut shares = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let exact = total_wide * u128::from(w);
        let floor = exact / sum;
        given += floor;
        shares.push(floor);
        remainders.push((exact % sum, i));
    }
    // Largest remainder first; on ties the earlier entry.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = total_wide - given; // < number of shares
    for &(_, i) in remainders.iter().take(left as usize) {
        shares[i] += 1;
    }
    // Each share ≤ total, so it fits in u64.
    Ok(shares
        .into_iter()
        .map(|s| Millijoules(u64::try_from(s).unwrap_or(u64::MAX)))
        .collect())
}

/// How a MIG-partitioned GPU's energy is split between its GPU instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MigRule {
    /// In proportion to compute slices held (a `3g` instance gets 3/7 of a full H100).
    #[default]
    BySliceSize,
    /// In proportion to slices × utilisation in the span; by slice size when none was busy.
    ByUtilisation,
}

/// One GPU instance of a MIG-partitioned GPU during a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigShare {
    /// Compute slices it holds (1..=7 on an H100).
    pub compute_slices: u8,
    /// Its utilisation in the span, percent.
    pub util_pct: u8,
}

/// Splits a MIG GPU's span energy between its GPU instances by `rule`; sums to `total`.
pub fn mig_shares(
    total: Millijoules,
    instances: &[MigShare],
    rule: MigRule,
) -> Result<Vec<Millijoules>, ApportionError> {
    for (i, s) in instances.iter().enumerate() {
        if s.compute_slices == 0 {
            return Err(ApportionError::EmptySlice(i));
        }
        check_util(i, s.util_pct)?;
    }
    let weights: Vec<u64> = match rule {
        MigRule::BySliceSize => instances
            .iter()
            .map(|s| u64::from(s.compute_slices))
            .collect(),
        MigRule::ByUtilisation => {
            let busy: Vec<u64> = instances
                .iter()
                .map(|s| u64::from(s.compute_slices) * u64::from(s.util_pct))
                .collect();
            if busy.iter().all(|&w| w == 0) {
                instances
                    .iter()
                    .map(|s| u64::from(s.compute_slices))
                    .collect()
            } else {
                busy
            }
        }
    };
    split_exact(total, &weights)
}

/// How a vGPU host's idle energy is shared between its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IdlePolicy {
    /// Every active vGPU carries the same part of the idle floor.
    #[default]
    Equal,
    /// In proportion to each vGPU's profile size (framebuffer MiB).
    ByProfileSize,
}

/// One active vGPU during a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgpuShare {
    /// Its utilisation in the span, percent (NVML's per-vGPU SM utilisation).
    pub util_pct: u8,
    /// Its profile's framebuffer, MiB.
    pub profile_fb_mib: u32,
}

/// Splits a vGPU host GPU's span energy between active vGPUs: the idle floor
/// `min(total, idle_power × span_ms)` by `policy`, the rest by utilisation (all of it idle
/// when no vGPU was busy). Sums to `total`.
pub fn vgpu_shares(
    total: Millijoules,
    span_ms: i64,
    idle_power: Milliwatts,
    vgpus: &[VgpuShare],
    policy: IdlePolicy,
) -> Result<Vec<Millijoules>, ApportionError> {
    for (i, v) in vgpus.iter().enumerate() {
        check_util(i, v.util_pct)?;
    }
    // mW × ms = µJ.
    let floor_mj = u64::from(idle_power.0).saturating_mul(span_ms.max(0) as u64) / 1000;
    let util: Vec<u64> = vgpus.iter().map(|v| u64::from(v.util_pct)).collect();
    let idle = if util.iter().all(|&u| u == 0) {
        total
    } else {
        Millijoules(floor_mj.min(total.0))
    };
    let idle_weights: Vec<u64> = match policy {
        IdlePolicy::Equal => vec![1; vgpus.len()],
        IdlePolicy::ByProfileSize => vgpus.iter().map(|v| u64::from(v.profile_fb_mib)).collect(),
    };
    let idle_shares = split_exact(idle, &idle_weights)?;
    let active_shares = split_exact(Millijoules(total.0 - idle.0), &util)?;
    Ok(idle_shares
        .into_iter()
        .zip(active_shares)
        .map(|(a, b)| Millijoules(a.0 + b.0))
        .collect())
}

fn check_util(index: usize, value: u8) -> Result<(), ApportionError> {
    if value > 100 {
        return Err(ApportionError::BadUtilisation { index, value });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mj(v: &[u64]) -> Vec<Millijoules> {
        v.iter().copied().map(Millijoules).collect()
    }

    #[test]
    fn largest_remainders_get_the_leftover_millijoules() {
        // 10 × 1/3 = 3.33 each: one mJ left, to the first (tie).
        assert_eq!(
            split_exact(Millijoules(10), &[1, 1, 1]).unwrap(),
            mj(&[4, 3, 3])
        );
        // 3g + 4g of 7: 100 × 3/7 = 42.86, 100 × 4/7 = 57.14 → 43, 57.
        assert_eq!(
            split_exact(Millijoules(100), &[3, 4]).unwrap(),
            mj(&[43, 57])
        );
        assert_eq!(split_exact(Millijoules(7), &[0, 0]).unwrap(), mj(&[4, 3]));
        assert_eq!(split_exact(Millijoules(5), &[0, 2]).unwrap(), mj(&[0, 5]));
        assert_eq!(
            split_exact(Millijoules(5), &[]),
            Err(ApportionError::NoShares)
        );
        assert_eq!(
            split_exact(Millijoules(u64::MAX), &[u64::MAX, u64::MAX]).unwrap(),
            mj(&[u64::MAX / 2 + 1, u64::MAX / 2])
        );
    }

    #[test]
    fn mig_by_slice_size_and_by_utilisation() {
        let parts = [
            MigShare {
                compute_slices: 3,
                util_pct: 0,
            },
            MigShare {
                compute_slices: 4,
                util_pct: 50,
            },
        ];
        assert_eq!(
            mig_shares(Millijoules(700), &parts, MigRule::BySliceSize).unwrap(),
            mj(&[300, 400])
        );
        // Only the 4g instance was busy: it carries everything.
        assert_eq!(
            mig_shares(Millijoules(700), &parts, MigRule::ByUtilisation).unwrap(),
            mj(&[0, 700])
        );
        let idle = [
            MigShare {
                compute_slices: 3,
                util_pct: 0,
            },
            MigShare {
                compute_slices: 4,
                util_pct: 0,
            },
        ];
        assert_eq!(
            mig_shares(Millijoules(700), &idle, MigRule::ByUtilisation).unwrap(),
            mj(&[300, 400])
        );
        let empty = [MigShare {
            compute_slices: 0,
            util_pct: 0,
        }];
        assert_eq!(
            mig_shares(Millijoules(1), &empty, MigRule::BySliceSize),
            Err(ApportionError::EmptySlice(0))
        );
    }

    #[test]
    fn vgpu_idle_floor_then_utilisation() {
        // 1 s at 100 W idle floor = 100 J; 300 J measured; utilisations 20 % and 60 %.
        let vms = [
            VgpuShare {
                util_pct: 20,
                profile_fb_mib: 8_192,
            },
            VgpuShare {
                util_pct: 60,
                profile_fb_mib: 24_576,
            },
        ];
        let idle = Milliwatts(100_000);
        assert_eq!(
            vgpu_shares(Millijoules(300_000), 1_000, idle, &vms, IdlePolicy::Equal).unwrap(),
            mj(&[50_000 + 50_000, 50_000 + 150_000])
        );
        assert_eq!(
            vgpu_shares(
                Millijoules(300_000),
                1_000,
                idle,
                &vms,
                IdlePolicy::ByProfileSize
            )
            .unwrap(),
            mj(&[25_000 + 50_000, 75_000 + 150_000])
        );
        // Below the floor, or nobody busy: all of it is idle energy.
        let quiet = [
            VgpuShare {
                util_pct: 0,
                profile_fb_mib: 8_192,
            },
            VgpuShare {
                util_pct: 0,
                profile_fb_mib: 8_192,
            },
        ];
        assert_eq!(
            vgpu_shares(Millijoules(300_001), 1_000, idle, &quiet, IdlePolicy::Equal).unwrap(),
            mj(&[150_001, 150_000])
        );
        assert_eq!(
            vgpu_shares(Millijoules(40_000), 1_000, idle, &vms, IdlePolicy::Equal).unwrap(),
            mj(&[20_000, 20_000])
        );
        let bad = [VgpuShare {
            util_pct: 101,
            profile_fb_mib: 1,
        }];
        assert_eq!(
            vgpu_shares(Millijoules(1), 1, idle, &bad, IdlePolicy::Equal),
            Err(ApportionError::BadUtilisation {
                index: 0,
                value: 101
            })
        );
    }

    proptest! {
        #[test]
        fn shares_always_sum_back_exactly(
            total in any::<u64>(),
            weights in prop::collection::vec(any::<u64>(), 1..12),
        ) {
            let shares = split_exact(Millijoules(total), &weights).unwrap();
            let sum: u128 = shares.iter().map(|s| u128::from(s.0)).sum();
            prop_assert_eq!(sum, u128::from(total));
            // Each share is within 1 mJ above the floor of its exact proportion.
            let wsum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            for (s, &w) in shares.iter().zip(&weights) {
                // All-zero weights (wsum 0) split equally instead.
                if let Some(floor) = (u128::from(total) * u128::from(w)).checked_div(wsum) {
                    prop_assert!(u128::from(s.0) == floor || u128::from(s.0) == floor + 1);
                }
            }
        }

        #[test]
        fn mig_and_vgpu_sum_back_exactly(
            total in 0u64..10_000_000_000,
            span_ms in 0i64..600_000,
            idle_mw in 0u32..200_000,
            parts in prop::collection::vec((1u8..=7, 0u8..=100, 1u32..=80_000), 1..8),
        ) {
            let mig: Vec<MigShare> = parts
                .iter()
                .map(|&(c, u, _)| MigShare { compute_slices: c, util_pct: u })
                .collect();
            let vgpu: Vec<VgpuShare> = parts
                .iter()
                .map(|&(_, u, fb)| VgpuShare { util_pct: u, profile_fb_mib: fb })
                .collect();
            for rule in [MigRule::BySliceSize, MigRule::ByUtilisation] {
                let s = mig_shares(Millijoules(total), &mig, rule).unwrap();
                prop_assert_eq!(s.iter().map(|m| m.0).sum::<u64>(), total);
            }
            for policy in [IdlePolicy::Equal, IdlePolicy::ByProfileSize] {
                let s = vgpu_shares(Millijoules(total), span_ms, Milliwatts(idle_mw), &vgpu, policy)
                    .unwrap();
                prop_assert_eq!(s.iter().map(|m| m.0).sum::<u64>(), total);
            }
        }
    }
}
