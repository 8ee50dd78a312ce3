//! Monthly carbon statements, filed like invoices: computed from the 5-minute ledger
//! ([`compute`]), preliminary while the month runs, issued once after it ends and never changed
//! ([`issue`]), rendered as JSON, CSV ([`csv`]), Parquet ([`parquet`]) and PDF ([`pdf`]) and
//! served over REST ([`http`]); operators export every tenant's month at once ([`export`]).
//! Methodology and billing rules: `docs/statements.md`.

pub mod compute;
pub mod csv;
pub mod export;
pub mod http;
pub mod issue;
pub mod market;
pub mod parquet;
pub mod pdf;
mod period;
pub mod potential;
pub mod table;

pub use compute::{compute, statement_id, Sources};
pub use issue::{issue, issue_due, statement, tenants, IssueReport, Served, StatementPolicy};
pub use market::{InstrumentsError, MarketInstruments, RegionInstruments};
pub use period::Period;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use wattprint_core::intensity::SharedJoin;
use wattprint_core::sci::HardwareCatalog;
use wattprint_core::UnixMillis;
use wattprint_store::Store;

/// What the issuer task computes statements from ([`crate::ApiState::statement_inputs`]).
#[derive(Clone)]
pub struct StatementInputs {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Embodied emissions per GPU model.
    pub catalog: Arc<HardwareCatalog>,
    /// Average intensities for location-based emissions.
    pub join: Option<SharedJoin>,
    /// When months are issued.
    pub policy: StatementPolicy,
    /// Contractual instruments for market-based emissions.
    pub market: Option<Arc<MarketInstruments>>,
}

/// Issues due months every `every` until `stop` (every query API replica runs it; the store
/// keeps the first issue of each month). Failures are logged and retried next round.
pub async fn keep_issuing(
    inputs: StatementInputs,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let snapshot = inputs.join.as_ref().map(SharedJoin::snapshot);
        let src = Sources {
            store: inputs.store.as_ref(),
            catalog: &inputs.catalog,
            join: snapshot.as_deref(),
            market: inputs.market.as_deref(),
        };
        match issue_due(src, UnixMillis::now(), inputs.policy).await {
            Ok(r) => {
                crate::metrics::statement_last_issued(r.latest_issued.map_or(0, |p| p.end().0));
                for (tenant, period) in &r.issued {
                    tracing::info!(%tenant, %period, "statement issued");
                }
                for e in &r.errors {
                    tracing::warn!(error = %e, "issuing a statement failed; retrying next round");
                }
            }
            Err(e) => tracing::warn!(error = %e, "issuing statements failed; retrying next round"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
