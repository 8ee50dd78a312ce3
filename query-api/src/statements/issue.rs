//! Billing semantics: the current month is preliminary and recomputed on every read; a month is
//! issued once it has ended and the grace for late samples and late actual intensity has
//! passed, exactly once whatever the number of replicas (the store keeps the first issue), and
//! is never changed after. Energy that arrives later, and restatements of an issued month's
//! intensity, appear as dated adjustment lines on a later statement: an issued month plus the
//! adjustments later statements carry for it equals a recompute of that month today.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use wattprint_api_types::{StatementAdjustment, StatementView};
use wattprint_core::{TenantId, TenantScope, UnixMillis};
use wattprint_store::IssuedStatement;

use super::compute::{compute, compute_with, Sources};
use super::Period;
use crate::error::ApiError;

/// When months are issued and how far back adjustments look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementPolicy {
    /// Wait after a month's end before issuing it (default 6 h: late samples and the actual
    /// marginal intensity come in; statements come out on day 1).
    pub grace_ms: i64,
    /// Issued months, before the one shown, whose corrections a statement carries (default 3).
    pub adjustment_months: u32,
}

impl Default for StatementPolicy {
    fn default() -> Self {
        Self {
            grace_ms: 6 * 3_600_000,
            adjustment_months: 3,
        }
    }
}

impl StatementPolicy {
    /// When `period` is issued.
    pub fn issue_at(&self, period: Period) -> UnixMillis {
        UnixMillis(period.end().0.saturating_add(self.grace_ms))
    }
}

/// A statement as served: the JSON body (an issued one byte for byte as stored) and its
/// parsed form.
#[derive(Debug, Clone)]
pub struct Served {
    /// The statement.
    pub view: StatementView,
    /// Its JSON.
    pub body: String,
}

/// The tenant's statement of `period` at `now`: the issued one if issued, else a preliminary
/// one computed now with its adjustments. A month that has not begun is not found.
pub async fn statement(
    src: Sources<'_>,
    scope: &TenantScope,
    period: Period,
    now: UnixMillis,
    policy: StatementPolicy,
) -> Result<Served, ApiError> {
    let issued = src
        .store
        .issued_statement(scope, &period.to_string())
        .await
        .map_err(|e| ApiError::from_store(e, || "no statement".into()))?;
    if let Some(stored) = issued {
        return served(stored);
    }
    if period.start() > now {
        return Err(ApiError::NotFound(format!(
            "no statement for {period}: the month has not begun"
        )));
    }
    let mut view = compute(src, scope, period, now).await?;
    view.adjustments = adjustments(src, scope, period, now, policy).await?;
    let body = to_json(&view)?;
    Ok(Served { view, body })
}

/// Issues `period` for the tenant (due or not: the caller decides) and returns what the store
/// keeps — this issue, or an earlier one of another replica.
pub async fn issue(
    src: Sources<'_>,
    scope: &TenantScope,
    period: Period,
    now: UnixMillis,
    policy: StatementPolicy,
) -> Result<Served, ApiError> {
    let mut view = compute(src, scope, period, now).await?;
    view.adjustments = adjustments(src, scope, period, now, policy).await?;
    view.status = "issued".into();
    view.issued_at = Some(policy.issue_at(period).to_rfc3339());
    let hash = content_sha256(&view)?;
    view.content_sha256 = Some(hash.clone());
    let stored = src
        .store
        .issue_statement(&IssuedStatement {
            tenant: scope.tenant().clone(),
            period: period.to_string(),
            issued_at: policy.issue_at(period),
            computed_at: now,
            content_sha256: hash,
            body: to_json(&view)?,
        })
        .await
        .map_err(|e| ApiError::from_store(e, || "no statement".into()))?;
    served(stored)
}

/// The SHA-256 (hex) of `view` with `content_sha256` null: what an issued statement carries,
/// so anyone holding its JSON can check it.
pub fn content_sha256(view: &StatementView) -> Result<String, ApiError> {
    let mut unsigned = view.clone();
    unsigned.content_sha256 = None;
    json_sha256(&unsigned)
}

/// The SHA-256 (hex) of `value`'s JSON: how documents (statements, evidence) carry their hash.
pub fn json_sha256<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    let json = serde_json::to_string(value)
        .map_err(|e| ApiError::Internal(format!("rendering a document to hash: {e}")))?;
    let digest = Sha256::digest(json.as_bytes());
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn to_json(view: &StatementView) -> Result<String, ApiError> {
    serde_json::to_string(view)
        .map_err(|e| ApiError::Internal(format!("rendering a statement: {e}")))
}

fn served(stored: IssuedStatement) -> Result<Served, ApiError> {
    let view = serde_json::from_str(&stored.body).map_err(|e| {
        ApiError::Internal(format!(
            "issued statement {} of {} cannot be read: {e}",
            stored.period, stored.tenant
        ))
    })?;
    Ok(Served {
        view,
        body: stored.body,
    })
}

/// The corrections a statement of `period` carries: for each issued month in the policy's
/// horizon before it, the difference between a recompute today and what was issued plus the
/// adjustments statements issued in between already carried.
async fn adjustments(
    src: Sources<'_>,
    scope: &TenantScope,
    period: Period,
    now: UnixMillis,
    policy: StatementPolicy,
) -> Result<Vec<StatementAdjustment>, ApiError> {
    let issued: BTreeMap<Period, StatementView> = src
        .store
        .issued_statements(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no statement".into()))?
        .into_iter()
        .filter_map(|s| Some((Period::parse(&s.period).ok()?, served(s).ok()?.view)))
        .collect();
    let mut out = Vec::new();
    let mut earlier = period;
    for _ in 0..policy.adjustment_months {
        earlier = earlier.prev();
        let Some(was) = issued.get(&earlier) else {
            continue;
        };
        let carried: Vec<&StatementAdjustment> = issued
            .range(earlier.next()..period)
            .flat_map(|(_, v)| v.adjustments.iter())
            .filter(|a| a.period == earlier.to_string())
            .collect();
        let now_is = compute_with(src, scope, earlier, now, false).await?.totals;
        let energy = i128::from(now_is.it_energy_mj)
            - i128::from(was.totals.it_energy_mj)
            - carried
                .iter()
                .map(|a| i128::from(a.it_energy_mj))
                .sum::<i128>();
        let marginal = now_is.marginal_co2e_g
            - was.totals.marginal_co2e_g
            - carried.iter().map(|a| a.marginal_co2e_g).sum::<f64>();
        let location = now_is.location_co2e_g.unwrap_or(0.0)
            - was.totals.location_co2e_g.unwrap_or(0.0)
            - carried.iter().map(|a| a.location_co2e_g).sum::<f64>();
        let negligible = |delta: f64, of: f64| delta.abs() <= 1e-9 * of.abs().max(1.0);
        if energy == 0
            && negligible(marginal, now_is.marginal_co2e_g)
            && negligible(location, now_is.location_co2e_g.unwrap_or(0.0))
        {
            continue;
        }
        out.push(StatementAdjustment {
            period: earlier.to_string(),
            dated: now.to_rfc3339(),
            reason: "late samples or intensity restated after the month was issued".into(),
            it_energy_mj: i64::try_from(energy).unwrap_or(if energy < 0 {
                i64::MIN
            } else {
                i64::MAX
            }),
            marginal_co2e_g: marginal,
            location_co2e_g: location,
        });
    }
    out.sort_by(|a, b| a.period.cmp(&b.period));
    Ok(out)
}

/// What one round of [`issue_due`] did.
#[derive(Debug, Default, PartialEq)]
pub struct IssueReport {
    /// `(tenant, period)` issued by this round (or found issued by another replica).
    pub issued: Vec<(TenantId, String)>,
    /// Failures, each with its tenant and period; retried next round.
    pub errors: Vec<String>,
    /// The newest month issued for any tenant, as stored after this round.
    pub latest_issued: Option<Period>,
}

/// Every tenant of the inventory: whose months are issued, and exported to operators.
pub async fn tenants(src: Sources<'_>) -> Result<BTreeSet<TenantId>, ApiError> {
    Ok(src
        .store
        .inventory()
        .await
        .map_err(|e| ApiError::from_store(e, || "no inventory".into()))?
        .into_iter()
        .map(|i| i.tenant)
        .collect())
}

/// Issues every month that is due at `now` for every tenant of the inventory: the months
/// within the adjustment horizon that have ended, whose grace has passed and that are not
/// issued yet — a month without usage only once the tenant has an issued statement before it.
pub async fn issue_due(
    src: Sources<'_>,
    now: UnixMillis,
    policy: StatementPolicy,
) -> Result<IssueReport, ApiError> {
    let tenants = tenants(src).await?;
    let mut report = IssueReport::default();
    for tenant in tenants {
        let scope = TenantScope::from_verified(tenant.clone());
        if let Err(e) = issue_tenant(src, &scope, now, policy, &mut report).await {
            report.errors.push(format!("tenant {tenant}: {e}"));
        }
    }
    Ok(report)
}

async fn issue_tenant(
    src: Sources<'_>,
    scope: &TenantScope,
    now: UnixMillis,
    policy: StatementPolicy,
    report: &mut IssueReport,
) -> Result<(), ApiError> {
    let issued: BTreeSet<String> = src
        .store
        .issued_statements(scope)
        .await
        .map_err(|e| ApiError::from_store(e, || "no statement".into()))?
        .into_iter()
        .map(|s| s.period)
        .collect();
    let newest = issued.iter().filter_map(|p| Period::parse(p).ok()).max();
    report.latest_issued = report.latest_issued.max(newest);
    let mut due = Vec::new();
    let mut p = Period::containing(now);
    for _ in 0..=policy.adjustment_months {
        p = p.prev();
        if now >= policy.issue_at(p) && !issued.contains(&p.to_string()) {
            due.push(p);
        }
    }
    // Oldest first, so a later month's adjustments see the earlier one issued.
    for p in due.into_iter().rev() {
        let has_earlier = issued.iter().any(|q| q.as_str() < p.to_string().as_str());
        let preliminary = compute_with(src, scope, p, now, false).await?;
        if preliminary.totals.gpu_intervals == 0 && !has_earlier {
            continue;
        }
        let served = issue(src, scope, p, now, policy).await?;
        report.latest_issued = report.latest_issued.max(Some(p));
        report
            .issued
            .push((scope.tenant().clone(), served.view.period));
    }
    Ok(())
}
