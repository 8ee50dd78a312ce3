//! What a what-if request may cost: a per-request compute budget checked before any search
//! runs, and a cap on the searches one tenant may have running at once.
//!
//! The cost model counts the inner-loop steps of the two searches in
//! [`wattprint_core::whatif`] for a run of `n` 5-minute slots:
//!
//! - Pause and Resume with deadline `m` slots: a dynamic programme of `n × (m − n + 1)` cells,
//!   one dependent compare-and-add each;
//! - Flexible Start over a window of `w` slots: `n × (w + 1)` multiply-adds in an 8-lane loop,
//!   measured about eight times cheaper per step than a DP cell
//!   (`cargo bench -p wattprint-core --bench whatif -- 30d`: ≈ 0.34 ns per multiply-add,
//!   ≈ 2.4 ns per DP cell on the 2-core build machine), so it counts `n × (w + 1) / 8`.
//!
//! The sum is in **DP cells**. The default budget, [`DEFAULT_WHATIF_BUDGET_CELLS`], lets the
//! paper's defaults (four windows of 6–24 h, factors 1.25–2) run on the longest workload a
//! request may read (31 days, ≈ 200 M cells, ≈ 0.5 s of one core) and refuses, say, eight
//! factor-4 searches over 30 days (≈ 1.9 G cells, several seconds).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wattprint_core::TenantId;

use crate::error::ApiError;

/// Default per-request budget, DP cells (≈ 0.6 s of one core at the measured rate).
pub const DEFAULT_WHATIF_BUDGET_CELLS: u64 = 250_000_000;

/// Default cap on what-if requests one tenant may have computing at once.
pub const DEFAULT_WHATIF_PER_TENANT: u32 = 2;

/// Flexible Start multiply-adds per DP cell of cost (the searches' measured speed ratio).
const FLEXIBLE_STEPS_PER_CELL: u64 = 8;

/// The cost of a set of searches on an `n`-slot run, in DP cells: `windows` are Flexible
/// Start windows in slots, `deadlines` Pause and Resume deadlines in slots (each ≥ `n`).
/// Saturates rather than overflows.
pub fn whatif_cost_cells(n: usize, windows: &[usize], deadlines: &[usize]) -> u64 {
    let n = n as u64;
    let flexible: u64 = windows
        .iter()
        .map(|&w| n.saturating_mul((w as u64).saturating_add(1)))
        .fold(0, u64::saturating_add);
    let pause: u64 = deadlines
        .iter()
        .map(|&m| n.saturating_mul((m as u64).saturating_sub(n).saturating_add(1)))
        .fold(0, u64::saturating_add);
    pause.saturating_add(flexible.div_ceil(FLEXIBLE_STEPS_PER_CELL))
}

/// Refuses (422, before any work) a request costing more than `budget` cells, saying how much
/// it asked and what the limit is.
pub fn check_budget(cost: u64, budget: u64, slots: usize) -> Result<(), ApiError> {
    if cost <= budget {
        return Ok(());
    }
    tracing::debug!(cost, budget, "what-if request over budget");
    Err(ApiError::OverBudget(format!(
        "these what-ifs of a {slots}-slot run would cost {cost} search cells; this server \
         allows at most {budget} per request: ask for fewer or shorter windows, smaller \
         factors, or split the request"
    )))
}

/// The number of what-if requests each tenant has computing; one per tenant above the cap is
/// answered 429. Cheap: one small map behind a mutex, entries removed when they reach zero.
#[derive(Debug)]
pub struct TenantSearches {
    cap: u32,
    running: Mutex<HashMap<TenantId, u32>>,
}

/// A tenant's slot among its running searches, given back on drop.
#[derive(Debug)]
pub struct SearchSlot {
    searches: Arc<TenantSearches>,
    tenant: TenantId,
}

impl TenantSearches {
    /// At most `cap` (≥ 1) running what-if requests per tenant.
    pub fn new(cap: u32) -> Self {
        Self {
            cap: cap.max(1),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The configured cap.
    pub fn cap(&self) -> u32 {
        self.cap
    }

    /// Takes one of `tenant`'s slots, or 429 (`Retry-After: 1`) when all are in use.
    pub fn enter(self: &Arc<Self>, tenant: &TenantId) -> Result<SearchSlot, ApiError> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let count = running.entry(tenant.clone()).or_insert(0);
        if *count >= self.cap {
            tracing::debug!(cap = self.cap, "tenant's what-if searches all in use");
            return Err(ApiError::TooManyRequests { retry_after_s: 1 });
        }
        *count += 1;
        Ok(SearchSlot {
            searches: Arc::clone(self),
            tenant: tenant.clone(),
        })
    }
}

impl Drop for SearchSlot {
    fn drop(&mut self) {
        let mut running = self
            .searches
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = running.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paper_defaults_on_a_31_day_run_fit_and_eight_factor_4_searches_do_not() {
        let n = 31 * 288 + 1;
        let windows: Vec<usize> = [72, 144, 216, 288].to_vec();
        let deadlines: Vec<usize> = [1.25, 1.5, 1.75, 2.0]
            .iter()
            .map(|&f| wattprint_core::whatif::deadline_slots(n, f).unwrap())
            .collect();
        let paper = whatif_cost_cells(n, &windows, &deadlines);
        assert!(paper <= DEFAULT_WHATIF_BUDGET_CELLS, "{paper}");
        assert!(paper > 190_000_000, "{paper}");
        let flood = whatif_cost_cells(n, &[720 * 12; 8], &[4 * n; 8]);
        assert!(flood > 7 * DEFAULT_WHATIF_BUDGET_CELLS, "{flood}");
        assert!(check_budget(flood, DEFAULT_WHATIF_BUDGET_CELLS, n).is_err());
    }

    #[test]
    fn cost_counts_cells_exactly_and_saturates() {
        // 10 × (4 + 1) / 8 rounded up, plus 10 × (15 − 10 + 1).
        assert_eq!(whatif_cost_cells(10, &[4], &[15]), 7 + 60);
        assert_eq!(
            whatif_cost_cells(usize::MAX, &[usize::MAX], &[usize::MAX]),
            u64::MAX
        );
    }

    #[test]
    fn a_tenant_gets_its_cap_and_slots_come_back() {
        let s = Arc::new(TenantSearches::new(2));
        let (a, b) = (TenantId::new("a"), TenantId::new("b"));
        let one = s.enter(&a).unwrap();
        let _two = s.enter(&a).unwrap();
        assert!(s.enter(&a).is_err());
        let _other = s.enter(&b).unwrap();
        drop(one);
        assert!(s.enter(&a).is_ok());
    }
}
