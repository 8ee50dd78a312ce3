//! The enricher: takes samples from the bus, re-validates each, splits them into 5-minute
//! shares, joins each share with its region's intensity, and writes them to the store. A
//! message is committed on the bus only after the store accepted it.
//!
//! The bus is not trusted: anything that can produce to the samples topic could bypass the
//! gateway. Every sample read is checked again with the gateway's own rule
//! ([`crate::gateway::admit`]: the sending host still owns the GPU, and `check_sample`, which
//! includes `check_storable`), and undecodable records arrive as dead letters. What fails is
//! quarantined with its reason and committed: it is never counted and never stalls the
//! partition.

use crate::gateway::admit;
use crate::inventory::InventoryIndex;
use crate::log_throttle::{LogThrottle, LogVerdict};
use crate::metrics::{ENRICHER, QUARANTINE_WRITTEN};
use crate::quarantine::dead_letter_row;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use wattprint_bus::{BusConsumer, BusMessage, Delivery};
use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{JoinedIntensity, SharedJoin};
use wattprint_core::sample::{EnergySample, SampleLimits, SampleRejection};
use wattprint_core::{Bucket, GpuUuid, RegionId, UnixMillis};
use wattprint_runtime::metrics::liveness::{self, Heartbeat};
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

/// How often the consume loop beats its [`Heartbeat`] while it waits for records.
pub const IDLE_BEAT: Duration = Duration::from_secs(5);

/// First wait after a failed store write; doubles on each further failure.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between store write attempts.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A quarantine record holding `s` (as JSON, replayable) with the reason it was not counted.
fn held(s: &EnergySample, reason: String) -> QuarantineRecord {
    QuarantineRecord {
        received_at: UnixMillis::now(),
        host: s.host.clone(),
        gpu: Some(s.gpu.clone()),
        seq: Some(s.seq),
        reason,
        payload: serde_json::to_string(s).unwrap_or_default(),
    }
}

/// How a write that did not succeed ended.
enum Settled {
    /// `shutdown` resolved while a transient failure was being retried.
    Stopped(StoreError),
    /// The store refused the write for a reason retrying cannot change.
    Refused(StoreError),
}

/// Runs `attempt` until it succeeds, retrying backend failures with doubling backoff, and adds
/// the successful attempt's counts to `report`.
async fn retrying<S, F, Fut>(
    report: &mut EnricherReport,
    mut shutdown: std::pin::Pin<&mut S>,
    messages: usize,
    mut attempt: F,
) -> Result<(), Settled>
where
    S: Future<Output = ()>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<EnricherReport, StoreError>>,
{
    let mut backoff = RETRY_BACKOFF_MIN;
    loop {
        match attempt().await {
            Ok(done) => {
                report.inserted += done.inserted;
                report.duplicates += done.duplicates;
                report.quarantined += done.quarantined;
                return Ok(());
            }
            Err(e @ StoreError::Backend { .. }) => {
                report.retries += 1;
                tracing::warn!(error = %e, messages, retry_in = ?backoff, "store write failed; retrying the batch");
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Err(Settled::Stopped(e)),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
            Err(e) => return Err(Settled::Refused(e)),
        }
    }
}

/// Fails deliveries back to the bus uncommitted (shutdown while retrying).
fn fail_back(batch: Vec<Delivery>, e: &StoreError, report: &mut EnricherReport) {
    report.failed += batch.len() as u64;
    tracing::error!(error = %e, messages = batch.len(), "store write failed; messages returned to the bus");
    for delivery in batch {
        delivery.fail(e.to_string());
    }
}

/// Quarantine records for a whole message the store refused: each sample held with the
/// reason, or the dead letters themselves with it appended.
fn refused_message(message: &BusMessage, e: &StoreError) -> Vec<QuarantineRecord> {
    let reason = |what: &str| format!("the store refused the message holding this {what}: {e}");
    match message {
        BusMessage::Samples(samples) => samples.iter().map(|s| held(s, reason("sample"))).collect(),
        BusMessage::DeadLetters(letters) => letters
            .iter()
            .map(|d| {
                let row = dead_letter_row(d);
                QuarantineRecord {
                    reason: format!("{}; {}", row.reason, reason("record")),
                    ..row
                }
            })
            .collect(),
    }
}

/// Joins samples with inventory and intensity, and stores them.
#[derive(Clone)]
pub struct Enricher {
    store: Arc<dyn Store>,
    join: SharedJoin,
    inventory: Arc<InventoryIndex>,
    pue: Arc<HashMap<RegionId, f64>>,
    batch_max: usize,
    batch_linger: Duration,
    limits: SampleLimits,
    clock: fn() -> UnixMillis,
    rejection_log: Arc<LogThrottle>,
    /// The consume loop's liveness, set by [`Enricher::run`].
    heartbeat: Option<Heartbeat>,
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
            limits: SampleLimits::default(),
            clock: UnixMillis::now,
            rejection_log: Arc::new(LogThrottle::default()),
            heartbeat: None,
        }
    }

    /// Re-validates samples with `limits` (default: [`SampleLimits::default`], the gateway's
    /// default). Must be the gateway's limits, or the enricher refuses what it accepted.
    pub fn with_limits(mut self, limits: SampleLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Replaces the clock samples are re-validated at (tests; must match the gateway's).
    pub fn with_clock(mut self, clock: fn() -> UnixMillis) -> Self {
        self.clock = clock;
        self
    }

    /// The consume loop turned (no-op outside [`Enricher::run`]).
    fn beat(&self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
    }

    /// Checks a sample read from the bus with the gateway's rule; the reason when it fails.
    fn revalidate(&self, s: &EnergySample, now: UnixMillis) -> Option<String> {
        let rejection: SampleRejection = admit(&self.inventory, &self.limits, now, s).err()?;
        match self.rejection_log.admit(&s.host, now) {
            LogVerdict::Suppress => {}
            LogVerdict::LogAfterSuppressed(n) => {
                tracing::warn!(host = %s.host, not_logged = n, "re-validation refusals of this host over its log budget were counted, not logged");
                tracing::warn!(host = %s.host, gpu = %s.gpu, seq = s.seq, reason = %rejection, "sample from the bus refused on re-validation");
            }
            LogVerdict::Log => {
                tracing::warn!(host = %s.host, gpu = %s.gpu, seq = s.seq, reason = %rejection, "sample from the bus refused on re-validation");
            }
        }
        Some(format!(
            "refused on re-validation by the enricher: {rejection}"
        ))
    }

    /// Sets how many bus messages go into one store write (at least 1), and how long to wait
    /// for more once the first arrived. Defaults: 256 messages, no waiting (what is ready).
    /// A longer linger means fewer, larger writes but later acks to the agents.
    pub fn with_batching(mut self, max_messages: usize, linger: Duration) -> Self {
        self.batch_max = max_messages.max(1);
        self.batch_linger = linger;
        self
    }

    /// Enriches samples, each attributed to the placement of its GPU over its span (the
    /// inventory in time: a late sample goes to whoever held the GPU then); those that fail
    /// re-validation (see the module docs; e.g. a GPU that was not on their instance and host
    /// over the span, or a record the gateway never saw) are returned as quarantine records.
    pub fn enrich<'s>(
        &self,
        samples: impl IntoIterator<Item = &'s EnergySample>,
    ) -> (Vec<EnrichedSample>, Vec<QuarantineRecord>) {
        let join = self.join.snapshot();
        let now = (self.clock)();
        // Per region, then bucket: a share's lookup borrows its region instead of cloning it.
        let mut cache: HashMap<RegionId, HashMap<Bucket, Option<JoinedIntensity>>> = HashMap::new();
        let samples = samples.into_iter();
        let mut enriched = Vec::with_capacity(samples.size_hint().0);
        let mut quarantined = Vec::new();
        for s in samples {
            if let Some(reason) = self.revalidate(s, now) {
                quarantined.push(held(s, reason));
                continue;
            }
            let Some(place) = self.inventory.gpu_over(&s.gpu, s.start, s.end) else {
                continue; // Checked by `revalidate`.
            };
            let region_cache = match cache.get_mut(&place.region) {
                Some(c) => c,
                None => cache.entry(place.region.clone()).or_default(),
            };
            let shares = split_into_buckets(s.start, s.end, s.energy)
                .into_iter()
                .map(|share| {
                    let intensity = region_cache
                        .entry(share.bucket)
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
        let started = std::time::Instant::now();
        let mut samples: Vec<&EnergySample> = Vec::new();
        let mut quarantine: Vec<QuarantineRecord> = Vec::new();
        for message in messages {
            match message {
                BusMessage::Samples(s) => samples.extend(s),
                BusMessage::DeadLetters(d) => quarantine.extend(d.iter().map(dead_letter_row)),
            }
            let topic = match message {
                BusMessage::Samples(_) => "samples",
                BusMessage::DeadLetters(_) => "dead_letter",
            };
            ENRICHER.records(topic, 1);
        }
        let dead_letters = quarantine.len() as u64;
        let mut inserted = 0;
        let mut duplicates = 0;
        if !samples.is_empty() {
            let (enriched, gone) = self.enrich(samples.iter().copied());
            quarantine.extend(gone);
            let outcome = self.store.write_samples(&enriched).await?;
            let hold = |gpu: &GpuUuid, seq: u64, reason: String| match samples
                .iter()
                .find(|s| &s.gpu == gpu && s.seq == seq)
            {
                Some(s) => held(s, reason),
                None => QuarantineRecord {
                    received_at: UnixMillis::now(),
                    host: "unknown".into(),
                    gpu: Some(gpu.clone()),
                    seq: Some(seq),
                    reason,
                    payload: String::new(),
                },
            };
            for (gpu, seq) in &outcome.conflicts {
                tracing::warn!(%gpu, seq, "conflicting redelivery quarantined");
                quarantine.push(hold(
                    gpu,
                    *seq,
                    format!(
                        "sample {seq} of GPU {gpu} was already stored with different content; kept the first"
                    ),
                ));
            }
            for r in &outcome.refused {
                tracing::warn!(gpu = %r.gpu, seq = r.seq, kind = ?r.kind, "sample refused by the store; quarantined");
                quarantine.push(hold(&r.gpu, r.seq, r.reason.clone()));
            }
            // What the store applied (a redelivered sample counts again, as stored rows do).
            let not_applied: std::collections::HashSet<(&GpuUuid, u64)> = outcome
                .conflicts
                .iter()
                .map(|(gpu, seq)| (gpu, *seq))
                .chain(outcome.refused.iter().map(|r| (&r.gpu, r.seq)))
                .collect();
            ENRICHER.written(
                enriched
                    .iter()
                    .filter(|e| !not_applied.contains(&(&e.sample.gpu, e.sample.seq))),
            );
            inserted = u64::from(outcome.inserted);
            duplicates = u64::from(outcome.duplicates);
            tracing::debug!(inserted, duplicates, "samples stored");
        }
        if !quarantine.is_empty() {
            self.store.write_quarantine(&quarantine).await?;
            quarantine
                .iter()
                .for_each(|q| ENRICHER.quarantined(&q.reason));
            QUARANTINE_WRITTEN.notify_one();
        }
        ENRICHER
            .batch_duration
            .record(started.elapsed().as_secs_f64(), &[]);
        report.inserted += inserted;
        report.duplicates += duplicates;
        report.quarantined += quarantine.len() as u64;
        tracing::debug!(dead_letters, "batch stored");
        Ok(())
    }

    /// Writes a batch of deliveries, then commits them all. A transient store failure (the
    /// database is down or overloaded) is retried in place with backoff until the store takes
    /// the batch or `shutdown` resolves. A batch the store refuses for any other reason is
    /// split: each message is written alone, and a message still refused is quarantined with
    /// the reason and committed, so one record never stalls a partition nor loops on it.
    /// Only a shutdown while retrying fails deliveries back to the bus uncommitted (they are
    /// delivered again; re-writes collapse by (GPU, seq)). Returns `false` when it stopped
    /// for `shutdown`.
    async fn settle<S: Future<Output = ()>>(
        &self,
        batch: Vec<Delivery>,
        report: &mut EnricherReport,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> bool {
        let messages: Vec<&BusMessage> = batch.iter().map(|d| &d.message).collect();
        match self
            .write_retrying(&messages, report, shutdown.as_mut())
            .await
        {
            Ok(()) => {
                report.messages += batch.len() as u64;
                batch.into_iter().for_each(Delivery::commit);
                ENRICHER.committed();
                return true;
            }
            Err(Settled::Stopped(e)) => {
                fail_back(batch, &e, report);
                return false;
            }
            Err(Settled::Refused(e)) if batch.len() > 1 => {
                tracing::warn!(error = %e, messages = batch.len(), "store refused the batch; writing its messages one by one");
            }
            Err(Settled::Refused(_)) => {}
        }
        let mut rest = batch.into_iter();
        while let Some(delivery) = rest.next() {
            let result = match self
                .write_retrying(&[&delivery.message], report, shutdown.as_mut())
                .await
            {
                Err(Settled::Refused(e)) => {
                    let records = refused_message(&delivery.message, &e);
                    self.write_retrying_quarantine(&records, report, shutdown.as_mut())
                        .await
                }
                other => other,
            };
            match result {
                Ok(()) => {
                    report.messages += 1;
                    delivery.commit();
                }
                Err(Settled::Refused(e)) => {
                    // Not even its quarantine record can be stored: logged whole, skipped.
                    tracing::error!(error = %e, message = ?delivery.message, "record refused by the store and by the quarantine; skipped");
                    report.failed += 1;
                    delivery.commit();
                }
                Err(Settled::Stopped(e)) => {
                    let remaining: Vec<Delivery> = std::iter::once(delivery).chain(rest).collect();
                    fail_back(remaining, &e, report);
                    return false;
                }
            }
        }
        true
    }

    /// Writes `messages`, retrying transient failures with backoff until `shutdown`.
    async fn write_retrying<S: Future<Output = ()>>(
        &self,
        messages: &[&BusMessage],
        report: &mut EnricherReport,
        shutdown: std::pin::Pin<&mut S>,
    ) -> Result<(), Settled> {
        retrying(report, shutdown, messages.len(), || {
            self.beat();
            let mut batch_report = EnricherReport::default();
            async move {
                let r = self.process_batch(messages, &mut batch_report).await;
                r.map(|()| batch_report)
            }
        })
        .await
    }

    /// Writes quarantine records, retrying transient failures with backoff until `shutdown`.
    async fn write_retrying_quarantine<S: Future<Output = ()>>(
        &self,
        records: &[QuarantineRecord],
        report: &mut EnricherReport,
        shutdown: std::pin::Pin<&mut S>,
    ) -> Result<(), Settled> {
        retrying(report, shutdown, 1, || async move {
            self.beat();
            self.store.write_quarantine(records).await?;
            QUARANTINE_WRITTEN.notify_one();
            Ok(EnricherReport {
                quarantined: records.len() as u64,
                ..EnricherReport::default()
            })
        })
        .await
    }

    /// Consumes until the bus closes or `shutdown` resolves, one store batch per bus batch
    /// (see [`Enricher::with_batching`]). The batch in hand is always finished and settled,
    /// and the consumer closed (offsets committed, group left), before returning.
    ///
    /// The loop is watched by `/healthz` ([`Heartbeat`], named `enricher`): it beats while it
    /// waits for records (every [`IDLE_BEAT`]) and on every store write attempt, so only a
    /// loop stuck for [`liveness::DEFAULT_MAX_SILENCE`] fails liveness.
    pub async fn run(
        mut self,
        mut consumer: impl BusConsumer,
        shutdown: impl Future<Output = ()> + Send,
    ) -> EnricherReport {
        self.heartbeat = Some(Heartbeat::new("enricher", liveness::DEFAULT_MAX_SILENCE));
        let mut report = EnricherReport::default();
        tokio::pin!(shutdown);
        let mut idle = tokio::time::interval(IDLE_BEAT);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'consume: loop {
            self.beat();
            let batch = {
                // Beating while waiting never cancels the batch being gathered.
                let next = consumer.next_batch(self.batch_max, self.batch_linger);
                tokio::pin!(next);
                loop {
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break 'consume,
                        batch = &mut next => break batch,
                        _ = idle.tick() => self.beat(),
                    }
                }
            };
            if batch.is_empty() {
                break;
            }
            if !self.settle(batch, &mut report, shutdown.as_mut()).await {
                break;
            }
        }
        consumer.close().await;
        tracing::info!(?report, "enricher stopped");
        report
    }
}
