//! The enricher: takes validated samples from the bus, splits them into 5-minute shares,
//! joins each share with its region's intensity, and writes them to the store. A message is
//! committed on the bus only after the store accepted it.

use crate::bus::{BusConsumer, BusMessage, Delivery};
use crate::inventory::InventoryIndex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{IntensityJoin, JoinedIntensity};
use wattprint_core::sample::EnergySample;
use wattprint_core::{Bucket, RegionId};
use wattprint_store::{EnrichedSample, EnrichedShare, QuarantineRecord, Store, StoreError};

/// Counters of what the enricher did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnricherReport {
    /// Messages committed.
    pub messages: u64,
    /// Samples stored for the first time.
    pub inserted: u64,
    /// Redelivered samples ignored.
    pub duplicates: u64,
    /// Samples quarantined (conflicting redelivery, instance gone).
    pub quarantined: u64,
    /// Messages failed back to the bus (store errors).
    pub failed: u64,
}

/// Joins samples with inventory and intensity, and stores them.
#[derive(Clone)]
pub struct Enricher {
    store: Arc<dyn Store>,
    join: Arc<IntensityJoin>,
    inventory: Arc<InventoryIndex>,
    pue: Arc<HashMap<RegionId, f64>>,
}

impl Enricher {
    /// An enricher writing to `store`. `pue` gives per-region facility overhead (1.0 if absent).
    pub fn new(
        store: Arc<dyn Store>,
        join: Arc<IntensityJoin>,
        inventory: Arc<InventoryIndex>,
        pue: HashMap<RegionId, f64>,
    ) -> Self {
        Self {
            store,
            join,
            inventory,
            pue: Arc::new(pue),
        }
    }

    /// Enriches samples; those whose GPU left the inventory since the gateway checked them are
    /// returned as quarantine records instead.
    pub fn enrich(&self, samples: &[EnergySample]) -> (Vec<EnrichedSample>, Vec<QuarantineRecord>) {
        let mut cache: HashMap<(RegionId, Bucket), Option<JoinedIntensity>> = HashMap::new();
        let mut enriched = Vec::with_capacity(samples.len());
        let mut quarantined = Vec::new();
        for s in samples {
            let Some(place) = self.inventory.gpu(&s.gpu) else {
                quarantined.push(QuarantineRecord {
                    received_at: crate::gateway::now(),
                    host: s.host.clone(),
                    gpu: Some(s.gpu.clone()),
                    seq: Some(s.seq),
                    reason: format!("GPU {} is no longer in the inventory", s.gpu),
                    payload: format!("{s:?}"),
                });
                continue;
            };
            let shares = split_into_buckets(s.start, s.end, s.energy)
                .into_iter()
                .map(|share| {
                    let intensity = cache
                        .entry((place.region.clone(), share.bucket))
                        .or_insert_with(|| self.join.lookup(&place.region, share.bucket))
                        .clone();
                    EnrichedShare {
                        bucket: share.bucket,
                        energy: share.energy,
                        covered_ms: share.covered_ms,
                        intensity,
                    }
                })
                .collect();
            enriched.push(EnrichedSample {
                sample: s.clone(),
                tenant: place.tenant.clone(),
                region: place.region.clone(),
                pue: self.pue.get(&place.region).copied().unwrap_or(1.0),
                shares,
            });
        }
        (enriched, quarantined)
    }

    /// Processes one bus message into the store.
    #[tracing::instrument(skip_all)]
    pub async fn process(
        &self,
        message: &BusMessage,
        report: &mut EnricherReport,
    ) -> Result<(), StoreError> {
        match message {
            BusMessage::Samples(samples) => {
                let (enriched, mut quarantine) = self.enrich(samples);
                let outcome = self.store.write_samples(&enriched).await?;
                for (gpu, seq) in &outcome.conflicts {
                    tracing::warn!(%gpu, seq, "conflicting redelivery quarantined");
                    quarantine.push(QuarantineRecord {
                        received_at: crate::gateway::now(),
                        host: samples.first().map(|s| s.host.clone()).unwrap_or_else(|| "unknown".into()),
                        gpu: Some(gpu.clone()),
                        seq: Some(*seq),
                        reason: format!(
                            "sample {seq} of GPU {gpu} was already stored with different content; kept the first"
                        ),
                        payload: samples
                            .iter()
                            .find(|s| &s.gpu == gpu && s.seq == *seq)
                            .map(|s| format!("{s:?}"))
                            .unwrap_or_default(),
                    });
                }
                if !quarantine.is_empty() {
                    self.store.write_quarantine(&quarantine).await?;
                }
                report.inserted += u64::from(outcome.inserted);
                report.duplicates += u64::from(outcome.duplicates);
                report.quarantined += quarantine.len() as u64;
                tracing::debug!(
                    inserted = outcome.inserted,
                    duplicates = outcome.duplicates,
                    "samples stored"
                );
            }
            BusMessage::DeadLetters(records) => {
                self.store.write_quarantine(records).await?;
                report.quarantined += records.len() as u64;
            }
        }
        Ok(())
    }

    async fn settle(&self, delivery: Delivery, report: &mut EnricherReport) {
        match self.process(&delivery.message, report).await {
            Ok(()) => {
                report.messages += 1;
                delivery.commit();
            }
            Err(e) => {
                report.failed += 1;
                tracing::error!(error = %e, "store write failed; message returned to the bus");
                delivery.fail(e.to_string());
            }
        }
    }

    /// Consumes until the bus closes or `shutdown` resolves. The message in hand is always
    /// finished and settled before returning.
    pub async fn run(
        self,
        mut consumer: impl BusConsumer,
        shutdown: impl Future<Output = ()> + Send,
    ) -> EnricherReport {
        let mut report = EnricherReport::default();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                delivery = consumer.next() => match delivery {
                    Some(d) => self.settle(d, &mut report).await,
                    None => break,
                },
            }
        }
        tracing::info!(?report, "enricher stopped");
        report
    }
}
