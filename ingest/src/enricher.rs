//! The enricher: takes validated samples from the bus, splits them into 5-minute shares,
//! joins each share with its region's intensity, and writes them to the store. A message is
//! committed on the bus only after the store accepted it.

use crate::bus::{BusConsumer, BusMessage, Delivery};
use crate::inventory::InventoryIndex;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{JoinedIntensity, SharedJoin};
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
    /// Store writes retried after a transient failure.
    pub retries: u64,
}

/// First wait after a failed store write; doubles on each further failure.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between store write attempts.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Joins samples with inventory and intensity, and stores them.
#[derive(Clone)]
pub struct Enricher {
    store: Arc<dyn Store>,
    join: SharedJoin,
    inventory: Arc<InventoryIndex>,
    pue: Arc<HashMap<RegionId, f64>>,
    batch_max: usize,
    batch_linger: Duration,
}

impl Enricher {
    /// An enricher writing to `store`. `pue` gives per-region facility overhead (1.0 if absent).
    pub fn new(
        store: Arc<dyn Store>,
        join: impl Into<SharedJoin>,
        inventory: Arc<InventoryIndex>,
        pue: HashMap<RegionId, f64>,
    ) -> Self {
        Self {
            store,
            join: join.into(),
            inventory,
            pue: Arc::new(pue),
            batch_max: 256,
            batch_linger: Duration::ZERO,
        }
    }

    /// Sets how many bus messages go into one store write (at least 1), and how long to wait
    /// for more once the first arrived. Defaults: 256 messages, no waiting (what is ready).
    /// A longer linger means fewer, larger writes but later acks to the agents.
    pub fn with_batching(mut self, max_messages: usize, linger: Duration) -> Self {
        self.batch_max = max_messages.max(1);
        self.batch_linger = linger;
        self
    }

    /// Enriches samples; those whose GPU left the inventory since the gateway checked them are
    /// returned as quarantine records instead.
    pub fn enrich(&self, samples: &[EnergySample]) -> (Vec<EnrichedSample>, Vec<QuarantineRecord>) {
        let join = self.join.snapshot();
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
                        .or_insert_with(|| join.lookup(&place.region, share.bucket))
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
    pub async fn process(
        &self,
        message: &BusMessage,
        report: &mut EnricherReport,
    ) -> Result<(), StoreError> {
        self.process_batch(&[message], report).await
    }

    /// Processes bus messages into the store as one batch: one sample write and at most one
    /// quarantine write, whatever the number of messages.
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    pub async fn process_batch(
        &self,
        messages: &[&BusMessage],
        report: &mut EnricherReport,
    ) -> Result<(), StoreError> {
        let mut samples: Vec<EnergySample> = Vec::new();
        let mut quarantine: Vec<QuarantineRecord> = Vec::new();
        for message in messages {
            match message {
                BusMessage::Samples(s) => samples.extend_from_slice(s),
                BusMessage::DeadLetters(d) => quarantine.extend_from_slice(d),
            }
        }
        let dead_letters = quarantine.len() as u64;
        let mut inserted = 0;
        let mut duplicates = 0;
        if !samples.is_empty() {
            let (enriched, gone) = self.enrich(&samples);
            quarantine.extend(gone);
            let outcome = self.store.write_samples(&enriched).await?;
            for (gpu, seq) in &outcome.conflicts {
                tracing::warn!(%gpu, seq, "conflicting redelivery quarantined");
                let sample = samples.iter().find(|s| &s.gpu == gpu && s.seq == *seq);
                quarantine.push(QuarantineRecord {
                    received_at: crate::gateway::now(),
                    host: sample
                        .map(|s| s.host.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    gpu: Some(gpu.clone()),
                    seq: Some(*seq),
                    reason: format!(
                        "sample {seq} of GPU {gpu} was already stored with different content; kept the first"
                    ),
                    payload: sample.map(|s| format!("{s:?}")).unwrap_or_default(),
                });
            }
            inserted = u64::from(outcome.inserted);
            duplicates = u64::from(outcome.duplicates);
            tracing::debug!(inserted, duplicates, "samples stored");
        }
        if !quarantine.is_empty() {
            self.store.write_quarantine(&quarantine).await?;
        }
        report.inserted += inserted;
        report.duplicates += duplicates;
        report.quarantined += quarantine.len() as u64;
        tracing::debug!(dead_letters, "batch stored");
        Ok(())
    }

    /// Writes a batch of deliveries, then commits them all. A transient store failure (the
    /// database is down or overloaded) is retried in place with backoff until the store takes
    /// the batch or `shutdown` resolves; anything else, or a shutdown while retrying, fails the
    /// batch back to the bus uncommitted, so it is delivered again (re-writes collapse by
    /// (GPU, seq), nothing is counted twice). Returns `false` when it stopped for `shutdown`.
    async fn settle<S: Future<Output = ()>>(
        &self,
        batch: Vec<Delivery>,
        report: &mut EnricherReport,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> bool {
        let messages: Vec<&BusMessage> = batch.iter().map(|d| &d.message).collect();
        let mut backoff = RETRY_BACKOFF_MIN;
        let failure = loop {
            match self.process_batch(&messages, report).await {
                Ok(()) => {
                    report.messages += batch.len() as u64;
                    for delivery in batch {
                        delivery.commit();
                    }
                    return true;
                }
                Err(e @ StoreError::Backend { .. }) => {
                    report.retries += 1;
                    tracing::warn!(error = %e, messages = batch.len(), retry_in = ?backoff, "store write failed; retrying the batch");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break (e, false),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                Err(e) => break (e, true),
            }
        };
        let (e, go_on) = failure;
        report.failed += batch.len() as u64;
        tracing::error!(error = %e, messages = batch.len(), "store write failed; messages returned to the bus");
        for delivery in batch {
            delivery.fail(e.to_string());
        }
        go_on
    }

    /// Consumes until the bus closes or `shutdown` resolves, one store batch per bus batch
    /// (see [`Enricher::with_batching`]). The batch in hand is always finished and settled,
    /// and the consumer closed (offsets committed, group left), before returning.
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
                batch = consumer.next_batch(self.batch_max, self.batch_linger) => {
                    if batch.is_empty() {
                        break;
                    }
                    if !self.settle(batch, &mut report, shutdown.as_mut()).await {
                        break;
                    }
                }
            }
        }
        consumer.close().await;
        tracing::info!(?report, "enricher stopped");
        report
    }
}
