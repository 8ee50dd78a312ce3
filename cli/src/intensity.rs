//! The intensity layer of a process: provider clients built from settings, the task that keeps
//! the join current (polling where an enricher runs, ledger refresh everywhere), and the
//! operator commands `wattprint intensity status|import|backfill`.

use crate::config::{IntensityPolling, ProviderKind, RawProviderAccountSettings, Settings};
use anyhow::Context;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::intensity::{IntensityJoin, IntensityPoint, PointKind, SharedJoin, Signal};
use wattprint_core::{Bucket, RegionId, UnixMillis, BUCKET_MS};
use wattprint_ingest::intensity_poll::{
    keep_current, refresh_from_ledger, IntensityPoller, PolledSource,
};
use wattprint_intensity::electricitymaps::{ElectricityMapsClient, ElectricityMapsConfig};
use wattprint_intensity::files::FileProvider;
use wattprint_intensity::watttime::{WattTimeClient, WattTimeConfig};
use wattprint_intensity::Provider;
use wattprint_store::{LedgerQuery, RegionCoverage, Store};

/// How often a process that does not poll reloads what the poller stored in the ledger.
const LEDGER_REFRESH_EVERY: Duration = Duration::from_secs(60);

fn secret(
    account: &RawProviderAccountSettings,
    index: usize,
    provider: &str,
) -> anyhow::Result<String> {
    let var = account
        .secret_env
        .get(index)
        .with_context(|| format!("intensity.{provider}: no credential variable configured"))?;
    std::env::var(var).with_context(|| {
        format!("intensity.{provider}: environment variable {var} is not set (it holds the credentials)")
    })
}

/// The poller for the configured regions, or `None` when nothing is polled. Credentials are
/// read from the environment variables the config names.
pub fn build_poller(
    polling: &IntensityPolling,
    store: Arc<dyn Store>,
    join: SharedJoin,
) -> anyhow::Result<Option<IntensityPoller>> {
    if polling.regions.is_empty() {
        return Ok(None);
    }
    let mut watttime: Option<Arc<dyn Provider>> = None;
    let mut electricitymaps: Option<Arc<dyn Provider>> = None;
    if let Some(account) = &polling.watttime {
        let mut config = WattTimeConfig::new(
            secret(account, 0, "watttime")?,
            secret(account, 1, "watttime")?,
        );
        if let Some(url) = &account.base_url {
            config.base_url.clone_from(url);
        }
        watttime = Some(Arc::new(WattTimeClient::new(config)?));
    }
    if let Some(account) = &polling.electricitymaps {
        let mut config = ElectricityMapsConfig::new(secret(account, 0, "electricitymaps")?);
        if let Some(url) = &account.base_url {
            config.base_url.clone_from(url);
        }
        electricitymaps = Some(Arc::new(ElectricityMapsClient::new(config)?));
    }
    let sources = polling
        .regions
        .iter()
        .map(|r| {
            let (provider, signal, forecasts) = match r.provider {
                ProviderKind::WattTime => (watttime.clone(), Signal::Marginal, true),
                ProviderKind::ElectricityMaps => (electricitymaps.clone(), Signal::Average, false),
            };
            Ok(PolledSource {
                region: r.region.clone(),
                provider: provider.context("a polled region's provider has no account")?,
                provider_region: r.provider_region.clone(),
                signal,
                forecasts,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(IntensityPoller::new(
        store,
        join,
        sources,
        polling.windows,
    )))
}

/// Loads the ledger into the join, then keeps it current until `stop`: with a poller, polls on
/// its schedule; always reloads what other processes stored. Failures are logged, retried.
pub async fn start_keeping_current(
    settings: &Settings,
    store: Arc<dyn Store>,
    poll: bool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let join = settings.intensity.clone();
    let (since, refused) = refresh_from_ledger(store.as_ref(), &join, None)
        .await
        .context("loading the intensity ledger")?;
    if refused > 0 {
        tracing::warn!(
            refused,
            "ledger points for regions this config does not have"
        );
    }
    let poller = if poll {
        build_poller(&settings.polling, store.clone(), join.clone())?
    } else {
        None
    };
    let every = if poller.is_some() {
        settings.polling.interval
    } else {
        LEDGER_REFRESH_EVERY
    };
    Ok(tokio::spawn(keep_current(
        store, join, poller, since, every, stop,
    )))
}

/// File formats `wattprint intensity import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// The ledger's CSV (`region,at,duration_s,value,unit,signal,kind,issued_at,provider,model_version`).
    LedgerCsv,
    /// The ledger's JSON (an array of the same fields).
    LedgerJson,
}

/// Imports a file into the ledger and the join, and restates what it improves.
pub async fn import(
    settings: &Settings,
    store: Arc<dyn Store>,
    path: &Path,
    format: ImportFormat,
) -> anyhow::Result<String> {
    let mut files = FileProvider::new("file");
    let imported = match format {
        ImportFormat::LedgerCsv => files.import_ledger_csv(path),
        ImportFormat::LedgerJson => files.import_ledger_json(path),
    }
    .with_context(|| format!("importing {}", path.display()))?;
    let join = settings.intensity.clone();
    refresh_from_ledger(store.as_ref(), &join, None).await?;
    let poller = IntensityPoller::new(store, join, vec![], settings.polling.windows);
    let points: Vec<IntensityPoint> = files.points().to_vec();
    let report = poller.import(&points).await?;
    Ok(format!(
        "{}: {imported:?}\nledger: {} new, {} revised; {} refused{}\nrestated {} intervals",
        path.display(),
        report.new_points,
        report.revised_points,
        report.rejected.len(),
        report
            .rejected
            .iter()
            .map(|r| format!("\n  refused: {r}"))
            .collect::<String>(),
        report.restated_intervals
    ))
}

/// Fetches a region's history over a range from its configured providers and restates.
pub async fn backfill(
    settings: &Settings,
    store: Arc<dyn Store>,
    region: &RegionId,
    from: UnixMillis,
    to: UnixMillis,
) -> anyhow::Result<String> {
    let join = settings.intensity.clone();
    refresh_from_ledger(store.as_ref(), &join, None).await?;
    let poller = build_poller(&settings.polling, store, join)?
        .context("no region is polled: set watttime_region or electricitymaps_zone")?;
    let report = poller.backfill(region, from, to).await?;
    let mut out = format!(
        "{region}: {} new points, {} revised, {} refused, {} gaps, {} errors; restated {} intervals",
        report.new_points,
        report.revised_points,
        report.rejected.len(),
        report.gaps.len(),
        report.errors.len(),
        report.restated_intervals
    );
    for e in &report.errors {
        out.push_str(&format!("\n  error: {e}"));
    }
    for (r, a, b) in &report.gaps {
        out.push_str(&format!(
            "\n  gap: {r} {} .. {}",
            a.to_rfc3339(),
            b.to_rfc3339()
        ));
    }
    Ok(out)
}

/// Per region: the latest ledger point of each signal and kind, gaps in the marginal actuals the
/// join has (ledger and configured files) over the last `days`, and how the last day's
/// intervals were joined.
pub async fn status(settings: &Settings, store: &dyn Store, days: u32) -> anyhow::Result<String> {
    let now = UnixMillis::now();
    let day_ago = UnixMillis(now.0 - 86_400_000);
    let since = UnixMillis(now.0 - i64::from(days) * 86_400_000);
    let points = store
        .intensity_points(&LedgerQuery {
            region: None,
            signal: None,
            from: UnixMillis(i64::MIN),
            to: UnixMillis(i64::MAX),
            fetched_since: None,
        })
        .await?;
    let coverage: BTreeMap<RegionId, RegionCoverage> = store
        .intensity_coverage(day_ago, now)
        .await?
        .into_iter()
        .map(|c| (c.region.clone(), c))
        .collect();
    let join = settings.intensity.snapshot();
    let mut regions: Vec<RegionId> = join.regions().cloned().collect();
    regions.sort();
    let mut out = String::new();
    for region in regions {
        let mine: Vec<&IntensityPoint> = points.iter().filter(|p| p.region == region).collect();
        let replayed = if join.is_replayed(&region) {
            " (historical series replayed on a shifted clock)"
        } else {
            ""
        };
        out.push_str(&format!("{region}{replayed}\n"));
        for (signal, kind) in [
            (Signal::Marginal, PointKind::Actual),
            (Signal::Marginal, PointKind::Forecast),
            (Signal::Average, PointKind::Actual),
        ] {
            let latest = mine
                .iter()
                .filter(|p| p.signal == signal && p.kind == kind)
                .max_by_key(|p| p.at);
            out.push_str(&match latest {
                Some(p) => format!(
                    "  latest {} {}: {} = {:.1} g/kWh ({}, fetched {})\n",
                    signal.as_str(),
                    kind.as_str(),
                    p.at.to_rfc3339(),
                    p.value.0,
                    p.source(),
                    p.fetched_at.to_rfc3339()
                ),
                None => format!(
                    "  latest {} {}: none in the ledger\n",
                    signal.as_str(),
                    kind.as_str()
                ),
            });
        }
        let gaps = marginal_gaps(&join, &region, since, now);
        if gaps.is_empty() {
            out.push_str(&format!(
                "  marginal actuals: no gaps in the last {days} d\n"
            ));
        } else {
            let missing: i64 = gaps.iter().map(|(a, b)| (b.0 - a.0) / BUCKET_MS).sum();
            out.push_str(&format!(
                "  marginal actuals: {} gaps in the last {days} d, {missing} buckets missing\n",
                gaps.len()
            ));
            for (a, b) in gaps.iter().rev().take(5) {
                out.push_str(&format!("    {} .. {}\n", a.to_rfc3339(), b.to_rfc3339()));
            }
        }
        match coverage.get(&region) {
            Some(c) => out.push_str(&format!(
                "  last 24 h GPU-intervals: {} actual, {} nearest actual, {} forecast, {} fallback average, {} without intensity{}\n",
                c.actual,
                c.nearest_actual,
                c.forecast,
                c.fallback,
                c.missing,
                if c.replayed > 0 { format!(" ({} replayed)", c.replayed) } else { String::new() }
            )),
            None => out.push_str("  last 24 h GPU-intervals: none\n"),
        }
    }
    Ok(out)
}

/// Runs of 5-minute buckets in `[from, to)` for which `join` has no marginal actual of
/// `region` (what the enricher would join with a forecast, a nearest actual or the average).
pub fn marginal_gaps(
    join: &IntensityJoin,
    region: &RegionId,
    from: UnixMillis,
    to: UnixMillis,
) -> Vec<(UnixMillis, UnixMillis)> {
    let mut gaps = Vec::new();
    let mut t = from.0.div_euclid(BUCKET_MS) * BUCKET_MS;
    let mut open: Option<i64> = None;
    while t + BUCKET_MS <= to.0 {
        let covered = Bucket::aligned(UnixMillis(t)).is_some_and(|b| join.has_actual(region, b));
        match (covered, open) {
            (false, None) => open = Some(t),
            (true, Some(start)) => {
                gaps.push((UnixMillis(start), UnixMillis(t)));
                open = None;
            }
            _ => {}
        }
        t += BUCKET_MS;
    }
    if let Some(start) = open {
        gaps.push((UnixMillis(start), UnixMillis(t)));
    }
    gaps
}
