//! The outbox: batches being built and waiting for acks, and the streaming counts.
//!
//! Pure bookkeeping, no I/O, so that batching, resending and ack accounting can be tested
//! without a gateway. Invariant: a batch stays in the outbox until its ack arrives (or the
//! spool forgets it).

use crate::AgentReport;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use wattprint_core::sample::EnergySample;
use wattprint_core::HostId;
use wattprint_proto::v1::{BatchAck, SampleBatch};

/// A sealed batch, whether it has been sent at least once, and whether it is in the spool.
#[derive(Debug, Clone)]
struct Pending {
    batch: SampleBatch,
    sent: bool,
    on_disk: bool,
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
        });
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
        before - self.pending.len()
    }

    /// Adds a batch read back from the spool at the end of the queue. `replayed`: left by a
    /// previous run, so it may have been sent before and counts as resent.
    pub fn push_loaded(&mut self, batch: SampleBatch, replayed: bool) {
        self.pending.push_back(Pending {
            batch,
            sent: replayed,
            on_disk: true,
        });
    }

    /// When the open batch must be sealed, if it has samples.
    pub fn seal_due(&self, max_wait: Duration) -> Option<Instant> {
        self.current_since.map(|t| t + max_wait)
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
        if p.sent {
            self.report.batches_resent += 1;
        } else {
            p.sent = true;
            self.report.samples_sent += p.batch.samples.len() as u64;
        }
        Some(p.batch.clone())
    }

    /// Every unacked batch in order, for a fresh connection; batches sent before count as
    /// resent.
    pub(super) fn all_for_resend(&mut self) -> Vec<SampleBatch> {
        let mut out = Vec::with_capacity(self.pending.len());
        for p in &mut self.pending {
            if p.sent {
                self.report.batches_resent += 1;
            } else {
                p.sent = true;
                self.report.samples_sent += p.batch.samples.len() as u64;
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
        let acked = self.pending.remove(pos);
        self.report.samples_acked += u64::from(ack.accepted);
        self.report.samples_rejected += ack.rejected.len() as u64;
        for r in &ack.rejected {
            tracing::warn!(
                batch_seq = ack.batch_seq,
                gpu = %r.gpu_uuid,
                seq = r.seq,
                reason = %r.reason,
                "gateway rejected a sample"
            );
        }
        let answered = u64::from(ack.accepted) + ack.rejected.len() as u64;
        if let Some(p) = acked {
            if answered != p.batch.samples.len() as u64 {
                tracing::debug!(
                    batch_seq = ack.batch_seq,
                    samples = p.batch.samples.len(),
                    answered,
                    "ack covers a different number of samples than the batch had"
                );
            }
        }
        true
    }

    /// The counts so far (`counter_resets` and `gaps` stay 0: the sampler counts those).
    pub fn report(&self) -> &AgentReport {
        &self.report
    }
}
