//! Replaying held samples. Once the cause of a refusal is fixed (a GPU added to the inventory
//! late, a host's clock corrected), `wattprint quarantine replay` puts the samples held in the
//! quarantine back through the gateway's rule ([`crate::gateway::admit`]) and the enricher
//! into the store.
//!
//! Replay never counts twice: a sample already stored is a duplicate, one overlapping stored
//! energy of its GPU is refused again, and replaying the same records again changes nothing.
//! Records stay in the quarantine as the audit trail of what was refused and why.

use crate::enricher::{Enricher, EnricherReport};
use crate::gateway::admit;
use crate::inventory::InventoryIndex;
use std::collections::{BTreeMap, HashSet};
use wattprint_bus::{BusMessage, DeadLetter};
use wattprint_core::sample::{EnergySample, SampleLimits};
use wattprint_core::UnixMillis;
use wattprint_store::{QuarantineRecord, StoreError};

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Records read.
    pub records: usize,
    /// Records holding no sample (a whole refused message, an undecodable payload).
    pub without_sample: usize,
    /// Samples stored for the first time.
    pub stored: u64,
    /// Samples already stored (replayed before, or redelivered meanwhile).
    pub duplicates: u64,
    /// Samples the store refused again (overlapping stored energy, unstorable), held again.
    pub refused_by_store: u64,
    /// Samples the gateway's rule still refuses, by reason.
    pub still_refused: BTreeMap<String, usize>,
}

/// The quarantine row of a dead letter from the bus: the same fields, the payload as text
/// (undecodable bytes as hex, see [`DeadLetterPayload::to_text`](wattprint_bus::DeadLetterPayload::to_text)).
pub fn dead_letter_row(letter: &DeadLetter) -> QuarantineRecord {
    QuarantineRecord {
        received_at: letter.received_at,
        host: letter.host.clone(),
        gpu: letter.gpu.clone(),
        seq: letter.seq,
        reason: letter.reason.clone(),
        payload: letter.payload.to_text(),
    }
}

/// The sample a quarantine record holds, if its payload is one: the enricher keeps the sample
/// itself, the gateway the wire fields it received.
pub fn held_sample(record: &QuarantineRecord) -> Option<EnergySample> {
    if let Ok(s) = serde_json::from_str::<EnergySample>(&record.payload) {
        return Some(s);
    }
    let wire = wattprint_proto::sample_from_json(&record.payload)?;
    wattprint_proto::sample_from_wire(&record.host, &wire).ok()
}

/// Replays `records` at `now`: what the gateway's rule admits today is enriched and written
/// (in one store batch); what it still refuses is counted by reason and left held.
pub async fn replay(
    enricher: &Enricher,
    inventory: &InventoryIndex,
    limits: &SampleLimits,
    now: UnixMillis,
    records: &[QuarantineRecord],
) -> Result<ReplayReport, StoreError> {
    let mut report = ReplayReport {
        records: records.len(),
        ..ReplayReport::default()
    };
    let mut admitted: Vec<EnergySample> = Vec::new();
    let mut seen = HashSet::new();
    for record in records {
        let Some(sample) = held_sample(record) else {
            report.without_sample += 1;
            continue;
        };
        if !seen.insert((sample.gpu.clone(), sample.seq)) {
            // Held twice (by the gateway and by the enricher): replayed once.
            continue;
        }
        match admit(inventory, limits, now, &sample) {
            Ok(()) => admitted.push(sample),
            Err(reason) => {
                *report.still_refused.entry(reason.to_string()).or_default() += 1;
            }
        }
    }
    if !admitted.is_empty() {
        let mut written = EnricherReport::default();
        enricher
            .process(&BusMessage::Samples(admitted), &mut written)
            .await?;
        report.stored = written.inserted;
        report.duplicates = written.duplicates;
        report.refused_by_store = written.quarantined;
    }
    Ok(report)
}

/// How often [`keep_counted`] reads the quarantine's size when nothing was written to it (the
/// pruning loop and other processes change it too).
pub const COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Keeps `wattprint_quarantine_records{reason}` current until `shutdown`: reads the store's
/// count by refusal kind every `every`, and soon after this process writes to the quarantine
/// (at most once a second). A failed read keeps the last values and is retried next round.
pub async fn keep_counted(
    store: std::sync::Arc<dyn wattprint_store::Store>,
    every: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use crate::metrics::{ENRICHER, QUARANTINE_WRITTEN};
    const MIN_GAP: std::time::Duration = std::time::Duration::from_secs(1);
    tokio::pin!(shutdown);
    loop {
        match store.quarantine_counts().await {
            Ok(counts) => ENRICHER.quarantine_held(&counts),
            Err(error) => tracing::warn!(%error, "counting the quarantine failed"),
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = tokio::time::sleep(MIN_GAP) => {}
        }
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = QUARANTINE_WRITTEN.notified() => {}
            () = tokio::time::sleep(every.saturating_sub(MIN_GAP)) => {}
        }
    }
}
