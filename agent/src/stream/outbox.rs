//! The outbox: batches being built and waiting for acks, and the streaming counts.
//!
//! Pure bookkeeping, no I/O, so that batching, resending and ack accounting can be tested
//! without a gateway. Invariant: a batch stays in the outbox until its ack arrives (or the
//! spool forgets it).
//!
//! Samples the gateway refused for *time* reasons (ending too far in its future, or older than
//! its lateness limit: a skewed host or gateway clock) are not lost: they wait, at most
//! [`MAX_TIME_REFUSED`] of them (oldest dropped beyond, counted), and are sealed again into
//! new batches by [`Outbox::requeue_time_refused`] when the retry is due, with their
//! `(gpu, seq)` unchanged so a copy the gateway did take is recognised. Other refusals
//! (malformed, not attached, absurd) are final: logged and counted.

use crate::metrics::AGENT;
use crate::AgentReport;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use wattprint_core::sample::EnergySample;
use wattprint_core::HostId;
use wattprint_proto::v1::{BatchAck, SampleBatch};

/// Most time-refused samples kept for retry; beyond it the oldest are dropped (counted in
/// [`AgentReport::samples_dropped`]).
pub const MAX_TIME_REFUSED: usize = 100_000;

/// Whether a refusal's reason (the gateway's [`SampleRejection`] message) is about time: the
/// sample ends too far after the gateway's clock, or is older than its lateness limit. Those
/// are retried; the reason text is what the ack carries.
///
/// [`SampleRejection`]: wattprint_core::sample::SampleRejection
pub fn is_time_refusal(reason: &str) -> bool {
    reason.contains("after the gateway's clock") || reason.contains("lateness limit")
}

/// A sealed batch, whether it has been sent at least once, and whether it is in the spool.
#[derive(Debug, Clone)]
struct Pending {
    batch: SampleBatch,
    sent: bool,
    on_disk: bool,
    /// Sealed again from time-refused samples: already counted as sent.
    retry: bool,
}

/// The batches being built and waiting for acks: pure bookkeeping, no I/O.
#[derive(Debug)]
pub struct Outbox {
    host_id: String,
    max_samples: usize,
    current: Vec<wattprint_proto::v1::Sample>,
    current_since: Option<Instant>,
    pending: VecDeque<Pending>,
    next_batch_seq: u64,
    /// Time-refused samples waiting for their retry, oldest first.
    time_refused: VecDeque<wattprint_proto::v1::Sample>,
    /// Spooled batches whose spool ack waits until their time-refused samples are spooled
    /// again in a retry batch.
    deferred_spool_acks: Vec<u64>,
    /// Encoded bytes of `pending`, for the spool gauge.
    pending_bytes: u64,
    pub(super) report: AgentReport,
}

impl Outbox {
    /// An empty outbox sealing batches of at most `max_samples` samples.
    pub fn new(host_id: &HostId, max_samples: usize) -> Self {
        Self {
            host_id: host_id.0.clone(),
            max_samples: max_samples.max(1),
            current: Vec::new(),
            current_since: None,
            pending: VecDeque::new(),
            next_batch_seq: 1,
            time_refused: VecDeque::new(),
            deferred_spool_acks: Vec::new(),
            pending_bytes: 0,
            report: AgentReport::default(),
        }
    }

    /// Adds a sample to the open batch; seals it when full and returns the sealed batch's
    /// `batch_seq`.
    pub fn push(&mut self, sample: &EnergySample) -> Option<u64> {
        if self.current.is_empty() {
            self.current_since = Some(Instant::now());
        }
        self.current.push(wattprint_proto::sample_to_wire(sample));
        (self.current.len() >= self.max_samples)
            .then(|| self.seal())
            .flatten()
    }

    /// Seals the open batch (if it has samples) into the unacked queue; returns its `batch_seq`.
    pub fn seal(&mut self) -> Option<u64> {
        if self.current.is_empty() {
            return None;
        }
        let batch_seq = self.next_batch_seq;
        self.next_batch_seq += 1;
        self.current_since = None;
        self.pending.push_back(Pending {
            batch: SampleBatch {
                host_id: self.host_id.clone(),
                batch_seq,
                samples: std::mem::take(&mut self.current),
            },
            sent: false,
            on_disk: false,
            retry: false,
        });
        self.pending_changed();
        Some(batch_seq)
    }

    /// Makes the next sealed batch `batch_seq` (a spool continues its predecessor's numbers).
    pub fn set_next_batch_seq(&mut self, batch_seq: u64) {
        self.next_batch_seq = batch_seq;
    }

    /// The unacked batch `batch_seq`, if it is in memory.
    pub fn batch(&self, batch_seq: u64) -> Option<&SampleBatch> {
        self.pending
            .iter()
            .find(|p| p.batch.batch_seq == batch_seq)
            .map(|p| &p.batch)
    }

    /// Notes that `batch_seq` is safe in the spool.
    pub fn mark_on_disk(&mut self, batch_seq: u64) {
        if let Some(p) = self
            .pending
            .iter_mut()
            .find(|p| p.batch.batch_seq == batch_seq)
        {
            p.on_disk = true;
        }
    }

    /// Batches in memory that are not in the spool (every batch, without a spool).
    pub fn memory_only(&self) -> usize {
        self.pending.iter().filter(|p| !p.on_disk).count()
    }

    /// Spooled batches also held in memory.
    pub fn on_disk_in_memory(&self) -> usize {
        self.pending.iter().filter(|p| p.on_disk).count()
    }

    /// Removes batches from memory without an ack: spooled batches left to the backlog, or
    /// batches the spool dropped. `batch_seqs` must be ascending. Returns how many were in
    /// memory.
    pub fn forget(&mut self, batch_seqs: &[u64]) -> usize {
        let before = self.pending.len();
        self.pending
            .retain(|p| batch_seqs.binary_search(&p.batch.batch_seq).is_err());
        self.pending_changed();
        before - self.pending.len()
    }

    /// Adds a batch read back from the spool at the end of the queue. `replayed`: left by a
    /// previous run, so it may have been sent before and counts as resent.
    pub fn push_loaded(&mut self, batch: SampleBatch, replayed: bool) {
        self.pending.push_back(Pending {
            batch,
            sent: replayed,
            on_disk: true,
            retry: false,
        });
        self.pending_changed();
    }

    /// When the open batch must be sealed, if it has samples.
    pub fn seal_due(&self, max_wait: Duration) -> Option<Instant> {
        self.current_since.map(|t| t + max_wait)
    }

    /// Updates the spool gauges after `pending` changed: its encoded bytes (re-summed: the
    /// outbox holds a batch or two while the gateway is reachable) and the age of its oldest
    /// batch (by the end of its oldest sample).
    fn pending_changed(&mut self) {
        self.pending_bytes = self
            .pending
            .iter()
            .map(|p| prost::Message::encoded_len(&p.batch) as u64)
            .sum();
        AGENT.spool_bytes.record(self.pending_bytes, &[]);
        let oldest_ms = self
            .pending
            .front()
            .and_then(|p| p.batch.samples.iter().map(|s| s.end_unix_ms).min());
        let age = oldest_ms.map_or(0.0, |ms| {
            (wattprint_core::UnixMillis::now().0 - ms).max(0) as f64 / 1000.0
        });
        AGENT.spool_oldest_age.record(age, &[]);
    }

    /// Batches waiting for acks (sent or not).
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// Samples in the open batch.
    pub fn open_samples(&self) -> usize {
        self.current.len()
    }

    /// Samples waiting for acks.
    pub fn unacked_samples(&self) -> usize {
        self.pending.iter().map(|p| p.batch.samples.len()).sum()
    }

    /// The batch `batch_seq` to send, marking it sent (counting its samples on the first send,
    /// and later sends as resends).
    pub(super) fn take_for_send(&mut self, batch_seq: u64) -> Option<SampleBatch> {
        let p = self
            .pending
            .iter_mut()
            .find(|p| p.batch.batch_seq == batch_seq)?;
        AGENT.sent.add(p.batch.samples.len() as u64, &[]);
        if p.sent {
            self.report.batches_resent += 1;
        } else {
            p.sent = true;
            if !p.retry {
                self.report.samples_sent += p.batch.samples.len() as u64;
            }
        }
        Some(p.batch.clone())
    }

    /// Every unacked batch in order, for a fresh connection; batches sent before count as
    /// resent.
    pub(super) fn all_for_resend(&mut self) -> Vec<SampleBatch> {
        let mut out = Vec::with_capacity(self.pending.len());
        for p in &mut self.pending {
            AGENT.sent.add(p.batch.samples.len() as u64, &[]);
            if p.sent {
                self.report.batches_resent += 1;
            } else {
                p.sent = true;
                if !p.retry {
                    self.report.samples_sent += p.batch.samples.len() as u64;
                }
            }
            out.push(p.batch.clone());
        }
        out
    }

    /// Applies an ack: removes its batch and counts accepted and rejected samples. Returns
    /// false for an ack of no unacked batch (a duplicate, or from an older connection).
    pub fn ack(&mut self, ack: &BatchAck) -> bool {
        let Some(pos) = self
            .pending
            .iter()
            .position(|p| p.batch.batch_seq == ack.batch_seq)
        else {
            tracing::debug!(
                batch_seq = ack.batch_seq,
                "ack for no unacked batch; ignored"
            );
            return false;
        };
        let Some(acked) = self.pending.remove(pos) else {
            return false;
        };
        self.pending_changed();
        self.report.samples_acked += u64::from(ack.accepted);
        AGENT.acked.add(u64::from(ack.accepted), &[]);
        let mut time_refused = 0usize;
        for r in &ack.rejected {
            if is_time_refusal(&r.reason) {
                let wire = acked
                    .batch
                    .samples
                    .iter()
                    .find(|s| s.gpu_uuid == r.gpu_uuid && s.seq == r.seq);
                if let Some(wire) = wire {
                    if time_refused == 0 {
                        tracing::warn!(
                            batch_seq = ack.batch_seq,
                            gpu = %r.gpu_uuid,
                            seq = r.seq,
                            reason = %r.reason,
                            "the gateway refused samples for their time (a skewed clock on this \
                             host or the gateway?); they are kept and retried"
                        );
                    }
                    time_refused += 1;
                    self.time_refused.push_back(wire.clone());
                    continue;
                }
            }
            self.report.samples_rejected += 1;
            AGENT.rejected(&r.reason);
            tracing::warn!(
                batch_seq = ack.batch_seq,
                gpu = %r.gpu_uuid,
                seq = r.seq,
                reason = %r.reason,
                "gateway rejected a sample"
            );
        }
        if time_refused > 0 {
            self.report.samples_time_refused += time_refused as u64;
            if acked.on_disk {
                self.deferred_spool_acks.push(ack.batch_seq);
            }
            let excess = self.time_refused.len().saturating_sub(MAX_TIME_REFUSED);
            if excess > 0 {
                self.time_refused.drain(..excess);
                self.report.samples_dropped += excess as u64;
                tracing::error!(
                    dropped = excess,
                    kept = MAX_TIME_REFUSED,
                    "too many time-refused samples wait for a retry; the oldest are dropped"
                );
            }
        }
        let answered = u64::from(ack.accepted) + ack.rejected.len() as u64;
        if answered != acked.batch.samples.len() as u64 {
            tracing::debug!(
                batch_seq = ack.batch_seq,
                samples = acked.batch.samples.len(),
                answered,
                "ack covers a different number of samples than the batch had"
            );
        }
        true
    }

    /// Whether the spool ack of `batch_seq` must wait for its time-refused samples' retry.
    pub fn spool_ack_deferred(&self, batch_seq: u64) -> bool {
        self.deferred_spool_acks.contains(&batch_seq)
    }

    /// Time-refused samples waiting for a retry.
    pub fn time_refused(&self) -> usize {
        self.time_refused.len()
    }

    /// Seals every time-refused sample again into new batches (of at most the batch size),
    /// after the open batch is sealed. Returns the new batches' `batch_seq`s and the spooled
    /// batches whose spool ack waited for this.
    pub fn requeue_time_refused(&mut self) -> (Vec<u64>, Vec<u64>) {
        let mut sealed: Vec<u64> = self.seal().into_iter().collect();
        let before = sealed.len();
        while !self.time_refused.is_empty() {
            let n = self.time_refused.len().min(self.max_samples);
            self.current = self.time_refused.drain(..n).collect();
            self.current_since = Some(Instant::now());
            if let Some(batch_seq) = self.seal() {
                if let Some(p) = self.pending.back_mut() {
                    p.retry = true;
                }
                sealed.push(batch_seq);
            }
        }
        self.report.time_retry_batches += (sealed.len() - before) as u64;
        (sealed, std::mem::take(&mut self.deferred_spool_acks))
    }

    /// The counts so far (`counter_resets` and `gaps` stay 0: the sampler counts those).
    pub fn report(&self) -> &AgentReport {
        &self.report
    }
}
