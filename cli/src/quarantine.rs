//! The operator commands `wattprint quarantine list|replay`: what ingest refused and why, and
//! putting held samples back through validation once the cause is fixed.

use crate::config::Settings;
use std::fmt::Write as _;
use std::sync::Arc;
use wattprint_core::sample::SampleLimits;
use wattprint_core::UnixMillis;
use wattprint_ingest::enricher::Enricher;
use wattprint_ingest::inventory::InventoryIndex;
use wattprint_ingest::quarantine::{held_sample, replay, ReplayReport};
use wattprint_store::Store;

/// The newest `limit` held records, newest first, one a line, after a count per reason.
pub async fn list(store: &dyn Store, limit: u32) -> anyhow::Result<String> {
    let records = store.quarantine(limit).await?;
    let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &records {
        *by_reason.entry(reason_kind(&r.reason)).or_default() += 1;
    }
    let mut out = format!("{} held record(s)", records.len());
    for (kind, n) in &by_reason {
        let _ = write!(out, "; {kind}: {n}");
    }
    out.push('\n');
    for r in &records {
        let _ = writeln!(
            out,
            "{}  host={} gpu={} seq={} sample={}  {}",
            r.received_at,
            r.host,
            r.gpu.as_ref().map_or("-", |g| g.as_str()),
            r.seq.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            if held_sample(r).is_some() {
                "yes"
            } else {
                "no"
            },
            r.reason
        );
    }
    Ok(out)
}

/// Replays the newest `limit` held records against the inventory and intensity configured
/// now (see [`wattprint_ingest::quarantine`]).
pub async fn replay_held(
    settings: &Settings,
    store: Arc<dyn Store>,
    limit: u32,
) -> anyhow::Result<ReplayReport> {
    let records = store.quarantine(limit).await?;
    let inventory = Arc::new(InventoryIndex::from_history(
        &store.placement_history().await?,
    ));
    let enricher = Enricher::new(
        store,
        settings.intensity.clone(),
        inventory.clone(),
        settings.pue.clone(),
    );
    Ok(replay(
        &enricher,
        &inventory,
        &SampleLimits::default(),
        UnixMillis::now(),
        &records,
    )
    .await?)
}

/// A replay report for people.
pub fn describe(r: &ReplayReport) -> String {
    let mut out = format!(
        "replayed {} record(s): {} stored, {} already stored, {} refused by the store \
         (held again), {} without a sample",
        r.records, r.stored, r.duplicates, r.refused_by_store, r.without_sample
    );
    for (reason, n) in &r.still_refused {
        let _ = write!(out, "\nstill refused ({n}): {reason}");
    }
    out
}

/// A short name for what kind of refusal a reason describes, for counts (reasons carry values,
/// so they are not grouped as they are).
pub fn reason_kind(reason: &str) -> &'static str {
    wattprint_core::sample::refusal_kind(reason)
}
