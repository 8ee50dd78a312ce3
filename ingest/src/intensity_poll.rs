//! Keeps the intensity ledger and the join current: polls providers on a schedule (and on
//! demand for backfill), writes what they return to the store's ledger, records it in the
//! shared join, and restates the intervals the new data improves.
//!
//! A provider failing never stops the others nor the process: the error is logged with the
//! provider and region, counted in the report, and a rate-limited source waits out the
//! provider's `Retry-After` before its next request. Nothing is ever invented for a gap.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use wattprint_core::intensity::{IntensityPoint, PointKind, SharedJoin, Signal};
use wattprint_core::{RegionId, UnixMillis};
use wattprint_intensity::{FetchRequest, Provider, ProviderError};
use wattprint_store::{LedgerQuery, Store, StoreError};

/// One thing to poll: a provider's series for a Wattprint region.
#[derive(Clone)]
pub struct PolledSource {
    /// Wattprint region.
    pub region: RegionId,
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// The provider's name for the region (WattTime region, Electricity Maps zone).
    pub provider_region: String,
    /// Marginal or average.
    pub signal: Signal,
    /// Also fetch forecasts.
    pub forecasts: bool,
}

impl std::fmt::Debug for PolledSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolledSource")
            .field("region", &self.region)
            .field("provider", &self.provider.name())
            .field("provider_region", &self.provider_region)
            .field("signal", &self.signal)
            .field("forecasts", &self.forecasts)
            .finish()
    }
}

/// How far back each poll looks and restates; `[intensity.poll]` sets it.
pub use wattprint_intensity::config::PollWindows;

/// What one poll or backfill did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollReport {
    /// Points the ledger did not have.
    pub new_points: u64,
    /// Points revised by the provider.
    pub revised_points: u64,
    /// Points refused (by the provider client or the join), each with its reason.
    pub rejected: Vec<String>,
    /// Periods the providers did not cover, per region (never filled in).
    pub gaps: Vec<(RegionId, UnixMillis, UnixMillis)>,
    /// Fetches that failed, with the error.
    pub errors: Vec<String>,
    /// Sources skipped because their provider asked to wait.
    pub waiting: u64,
    /// Intervals restated.
    pub restated_intervals: u64,
}

/// Polls providers into the ledger and the join, and restates.
pub struct IntensityPoller {
    store: Arc<dyn Store>,
    join: SharedJoin,
    sources: Vec<PolledSource>,
    windows: PollWindows,
    /// Per source index: no request before this instant (a provider's `Retry-After`).
    not_before: Mutex<HashMap<usize, Instant>>,
}

/// Errors that stop a poll as a whole (the store failing; providers failing are reported).
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The store refused or failed.
    #[error("intensity ledger: {0}")]
    Store(#[from] StoreError),
    /// The region is not configured.
    #[error("region {0} has no polled intensity source")]
    UnknownRegion(RegionId),
}

impl IntensityPoller {
    /// A poller feeding `join` and the ledger of `store` from `sources`.
    pub fn new(
        store: Arc<dyn Store>,
        join: SharedJoin,
        sources: Vec<PolledSource>,
        windows: PollWindows,
    ) -> Self {
        Self {
            store,
            join,
            sources,
            windows,
            not_before: Mutex::new(HashMap::new()),
        }
    }

    /// The sources polled.
    pub fn sources(&self) -> &[PolledSource] {
        &self.sources
    }

    /// One round: every source's recent actuals (and forecasts), then a restatement sweep of
    /// every region over the restatement window.
    #[tracing::instrument(skip_all)]
    pub async fn poll_once(&self, now: UnixMillis) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        let from = UnixMillis(now.0 - millis(self.windows.actuals));
        for (index, source) in self.sources.iter().enumerate() {
            if self.waiting(index) {
                report.waiting += 1;
                continue;
            }
            self.fetch_into(index, source, PointKind::Actual, from, now, &mut report)
                .await?;
            if source.forecasts {
                // Forecasts issued over the same trailing window: one missed poll loses none,
                // and the ledger counts the repeats as unchanged.
                self.fetch_into(index, source, PointKind::Forecast, from, now, &mut report)
                    .await?;
            }
        }
        let regions: BTreeSet<RegionId> = self.sources.iter().map(|s| s.region.clone()).collect();
        let restate_from = UnixMillis(now.0 - millis(self.windows.restate));
        for region in regions {
            report.restated_intervals += self.restate(&region, restate_from, now).await?;
        }
        Ok(report)
    }

    /// Fetches `region`'s actuals over `[from, to)` from its sources (and forecasts issued in
    /// it), then restates the region's intervals in the range.
    #[tracing::instrument(skip_all, fields(region = %region))]
    pub async fn backfill(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        let mut any = false;
        for (index, source) in self.sources.iter().enumerate() {
            if &source.region != region {
                continue;
            }
            any = true;
            self.fetch_into(index, source, PointKind::Actual, from, to, &mut report)
                .await?;
            if source.forecasts {
                self.fetch_into(index, source, PointKind::Forecast, from, to, &mut report)
                    .await?;
            }
        }
        if !any {
            return Err(PollError::UnknownRegion(region.clone()));
        }
        report.restated_intervals += self.restate(region, from, to).await?;
        Ok(report)
    }

    /// Adds points from any source (a file import) to the ledger and the join, then restates
    /// every region they touch over the periods they cover.
    pub async fn import(&self, points: &[IntensityPoint]) -> Result<PollReport, PollError> {
        let mut report = PollReport::default();
        self.accept(points, &mut report).await?;
        let mut spans: HashMap<&RegionId, (UnixMillis, UnixMillis)> = HashMap::new();
        for p in points {
            let span = spans.entry(&p.region).or_insert((p.at, p.end()));
            span.0 = UnixMillis(span.0 .0.min(p.at.0));
            span.1 = UnixMillis(span.1 .0.max(p.end().0));
        }
        for (region, (from, to)) in spans {
            report.restated_intervals += self.restate(region, from, to).await?;
        }
        Ok(report)
    }

    fn waiting(&self, index: usize) -> bool {
        let map = self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(&index).is_some_and(|t| Instant::now() < *t)
    }

    async fn fetch_into(
        &self,
        index: usize,
        source: &PolledSource,
        kind: PointKind,
        from: UnixMillis,
        to: UnixMillis,
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        let req = FetchRequest {
            region: source.region.clone(),
            provider_region: source.provider_region.clone(),
            signal: source.signal,
            kind,
            from,
            to,
        };
        let started = std::time::Instant::now();
        let fetched = source.provider.fetch(&req).await;
        crate::metrics::INTENSITY.polled(source.provider.name(), started, fetched.as_ref().err());
        match fetched {
            Ok(fetched) => {
                report.rejected.extend(fetched.rejected);
                report.gaps.extend(
                    fetched
                        .gaps
                        .into_iter()
                        .map(|(a, b)| (source.region.clone(), a, b)),
                );
                self.accept(&fetched.points, report).await?;
            }
            Err(e) => {
                if let ProviderError::RateLimited { retry_after, .. } = &e {
                    self.not_before
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(index, Instant::now() + *retry_after);
                }
                tracing::warn!(
                    region = %source.region,
                    provider = source.provider.name(),
                    kind = kind.as_str(),
                    error = %e,
                    "intensity fetch failed; the join keeps what it has"
                );
                report
                    .errors
                    .push(format!("{} {}: {e}", source.region, kind.as_str()));
            }
        }
        Ok(())
    }

    /// Ledger first (durable), then the join; points the join refuses (an unconfigured region)
    /// are reported.
    async fn accept(
        &self,
        points: &[IntensityPoint],
        report: &mut PollReport,
    ) -> Result<(), PollError> {
        if points.is_empty() {
            return Ok(());
        }
        let written = self.store.write_intensity(points).await?;
        report.new_points += u64::from(written.new);
        report.revised_points += u64::from(written.revised);
        let recorded = self.join.record_all(points);
        report
            .rejected
            .extend(recorded.rejected.iter().map(ToString::to_string));
        Ok(())
    }

    async fn restate(
        &self,
        region: &RegionId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<u64, PollError> {
        let join = self.join.snapshot();
        let outcome = self.store.restate(region, from, to, &join).await?;
        if outcome.intervals > 0 {
            tracing::info!(
                region = %region,
                intervals = outcome.intervals,
                it_co2e_delta_g = outcome.it_co2e_delta.0,
                "restated intervals with better intensity"
            );
        }
        Ok(outcome.intervals)
    }
}

/// Loads the ledger points fetched at or after `since` into `join` (at start-up: everything;
/// then incrementally), so processes that do not poll (query API, extra enrichers) see what the
/// poller stored. Returns the latest fetch time seen (the next `since`), and how many points the
/// join refused (regions this process does not know).
pub async fn refresh_from_ledger(
    store: &dyn Store,
    join: &SharedJoin,
    since: Option<UnixMillis>,
) -> Result<(Option<UnixMillis>, usize), StoreError> {
    let points = store
        .intensity_points(&LedgerQuery {
            region: None,
            signal: None,
            from: UnixMillis(i64::MIN),
            to: UnixMillis(i64::MAX),
            fetched_since: since,
        })
        .await?;
    let latest = points.iter().map(|p| p.fetched_at).max().or(since);
    let report = join.record_all(&points);
    Ok((latest, report.rejected.len()))
}

/// Keeps `join` current until `stop`: with a `poller`, polls on its schedule; always reloads
/// what this or other processes stored in the ledger since `since` (the latest point already
/// loaded), every `every`. The first round runs at once. Failures are logged and retried next
/// round; nothing here ends the process.
pub async fn keep_current(
    store: Arc<dyn Store>,
    join: SharedJoin,
    poller: Option<IntensityPoller>,
    mut since: Option<UnixMillis>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
        }
        first = false;
        if let Some(p) = &poller {
            match p.poll_once(UnixMillis::now()).await {
                Ok(r) => tracing::info!(
                    new = r.new_points,
                    revised = r.revised_points,
                    rejected = r.rejected.len(),
                    gaps = r.gaps.len(),
                    errors = r.errors.len(),
                    restated = r.restated_intervals,
                    "intensity poll"
                ),
                Err(e) => tracing::warn!(error = %e, "intensity poll failed; retrying next round"),
            }
        }
        match refresh_from_ledger(store.as_ref(), &join, since).await {
            Ok((latest, _)) => since = latest,
            Err(e) => tracing::warn!(error = %e, "reloading the intensity ledger failed"),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
