//! The spool side of streaming: sealed batches are made durable before they are sent, and
//! spooled batches beyond the in-memory window wait on disk (the backlog).
//!
//! Invariant: the backlog is oldest first and newer than every spooled batch in memory, so
//! batches are sent in `batch_seq` order.

use super::{send, Outbox, Sender};
use crate::spool::{BatchMeta, Dropped, Recovery, SharedSpool, Spool};
use std::collections::VecDeque;

/// A batch was just sealed: without a spool it is sent at once. With one, it is made durable
/// first, and sent only if it does not have to queue behind the backlog or the window is full
/// (then it stays on disk until acks make room).
pub(super) async fn sealed_batch(
    tx: Option<Sender>,
    outbox: &mut Outbox,
    spooler: Option<&mut Spooler>,
    batch_seq: u64,
    window: usize,
) {
    if let Some(sp) = spooler {
        if let Some(batch) = outbox.batch(batch_seq).cloned() {
            let samples = batch.samples.len() as u64;
            match sp.spool.call(move |s| s.append(&batch)).await {
                Ok(dropped) => {
                    outbox.mark_on_disk(batch_seq);
                    sp.apply_dropped(outbox, &dropped);
                    if !sp.backlog.is_empty() || outbox.on_disk_in_memory() > window {
                        outbox.forget(&[batch_seq]);
                        sp.backlog.push_back(Backlogged {
                            batch_seq,
                            samples,
                            replayed: false,
                        });
                        sp.refill(outbox, tx, window).await;
                        return;
                    }
                }
                Err(e) => tracing::error!(
                    error = %e,
                    batch_seq,
                    "cannot spool a batch; it is kept in memory only"
                ),
            }
        }
    }
    send(tx.as_ref(), outbox, batch_seq);
}

/// Spooled batches read back per blocking call when refilling the window.
const REFILL_CHUNK: usize = 64;

/// A spooled batch that is on disk only.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backlogged {
    batch_seq: u64,
    samples: u64,
    /// Left unacked by a previous run.
    replayed: bool,
}

/// The spool side of streaming: the spool, and the spooled batches not held in memory.
pub(super) struct Spooler {
    pub(super) spool: SharedSpool,
    /// Oldest first; all newer than every spooled batch in memory.
    pub(super) backlog: VecDeque<Backlogged>,
}

impl Spooler {
    /// Takes over an opened spool: new batches continue its numbering, and every batch it
    /// holds unacked is queued to be resent first.
    pub(super) fn start(spool: Spool, recovery: &Recovery, outbox: &mut Outbox) -> Self {
        outbox.set_next_batch_seq(spool.next_batch_seq());
        let unacked: Vec<BatchMeta> = spool.unacked();
        let backlog: VecDeque<Backlogged> = unacked
            .iter()
            .map(|m| Backlogged {
                batch_seq: m.batch_seq,
                samples: m.samples,
                replayed: true,
            })
            .collect();
        outbox.report.batches_replayed = backlog.len() as u64;
        outbox.report.spool_damaged_records = recovery.damaged_records();
        if let (Some(first), Some(last)) = (unacked.first(), unacked.last()) {
            tracing::info!(
                batches = unacked.len(),
                samples = unacked.iter().map(|m| m.samples).sum::<u64>(),
                first_batch_seq = first.batch_seq,
                last_batch_seq = last.batch_seq,
                "resending the batches a previous run left unacked, before new ones"
            );
        }
        Self {
            spool: SharedSpool::new(spool),
            backlog,
        }
    }

    /// Records an ack in the spool (a failure only means a resend after a restart).
    pub(super) async fn acked(&mut self, batch_seq: u64) {
        if let Err(e) = self.spool.call(move |s| s.ack(batch_seq)).await {
            tracing::warn!(
                error = %e,
                batch_seq,
                "cannot record an ack in the spool; the batch will be resent after a restart"
            );
        }
    }

    /// Forgets batches the spool dropped (drop-oldest), wherever they were queued.
    fn apply_dropped(&mut self, outbox: &mut Outbox, dropped: &Dropped) {
        if dropped.is_empty() {
            return;
        }
        outbox.forget(&dropped.batch_seqs);
        self.backlog
            .retain(|b| dropped.batch_seqs.binary_search(&b.batch_seq).is_err());
        outbox.report.samples_dropped += dropped.samples;
    }

    /// Reads backlogged batches back into memory, oldest first, while the window has room,
    /// and sends them if a stream is open.
    pub(super) async fn refill(&mut self, outbox: &mut Outbox, tx: Option<Sender>, window: usize) {
        while !self.backlog.is_empty() && outbox.on_disk_in_memory() < window {
            let n = (window - outbox.on_disk_in_memory())
                .min(self.backlog.len())
                .min(REFILL_CHUNK);
            let wanted: Vec<Backlogged> = self.backlog.drain(..n).collect();
            let seqs: Vec<u64> = wanted.iter().map(|b| b.batch_seq).collect();
            let read = self
                .spool
                .call(move |s| Ok(seqs.iter().map(|&q| s.read(q)).collect::<Vec<_>>()))
                .await;
            let results = match read {
                Ok(results) => results,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read spooled batches back; retrying after the next ack");
                    for b in wanted.into_iter().rev() {
                        self.backlog.push_front(b);
                    }
                    return;
                }
            };
            let mut unreadable = Vec::new();
            for (b, result) in wanted.iter().zip(results) {
                match result {
                    Ok(batch) => {
                        outbox.push_loaded(batch, b.replayed);
                        send(tx.as_ref(), outbox, b.batch_seq);
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            batch_seq = b.batch_seq,
                            samples = b.samples,
                            "cannot read a spooled batch back; dropping it"
                        );
                        outbox.report.samples_dropped += b.samples;
                        unreadable.push(b.batch_seq);
                    }
                }
            }
            if !unreadable.is_empty() {
                let forgotten = self
                    .spool
                    .call(move |s| unreadable.iter().try_for_each(|&q| s.ack(q).map(drop)))
                    .await;
                if let Err(e) = forgotten {
                    tracing::warn!(error = %e, "cannot mark unreadable batches as gone");
                }
            }
        }
    }
}
