//! The consumer's offset bookkeeping: an offset is committed only up to the first record not yet
//! settled, and a failed record rewinds its partition to itself.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

pub(crate) type TopicPartition = (String, i32);

/// One record being delivered: how many of its deliveries are unsettled, and whether one failed.
#[derive(Debug)]
pub(crate) struct InHand {
    /// Which delivery of the record this is (a failed record is delivered again).
    pub(crate) generation: u64,
    pub(crate) unsettled: u32,
    pub(crate) failed: bool,
}

/// Bookkeeping of one assigned partition.
#[derive(Debug)]
pub(crate) struct PartitionTrack {
    /// Changes when the partition is (re)assigned: settlements of older deliveries are ignored.
    pub(crate) epoch: u64,
    /// Records delivered and not yet committed by the application, by offset.
    pub(crate) in_hand: BTreeMap<i64, InHand>,
    /// One past the highest offset delivered.
    pub(crate) next: i64,
    /// The highest offset handed to the committer.
    pub(crate) committed: i64,
}

#[derive(Debug, Default)]
pub(crate) struct CommitState {
    pub(crate) partitions: HashMap<TopicPartition, PartitionTrack>,
    /// Offsets to commit, with the epoch they belong to.
    pub(crate) dirty: HashMap<TopicPartition, (i64, u64)>,
    /// Seeks to do before the next fetch: partition, offset, epoch.
    pub(crate) rewinds: Vec<(TopicPartition, i64, u64)>,
    pub(crate) next_id: u64,
}

impl CommitState {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// State shared by the consumer, its deliveries, its committer task and its rebalance callback.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<CommitState>,
    /// Held while committing: one commit at a time, in order.
    pub(crate) commit_lock: Mutex<()>,
    pub(crate) wake: Notify,
    pub(crate) closing: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Records that a record was delivered in `parts` deliveries; returns (epoch, generation).
    pub(crate) fn delivered(&self, tp: &TopicPartition, offset: i64, parts: u32) -> (u64, u64) {
        let mut st = lock(&self.state);
        let generation = st.new_id();
        let fresh = st.new_id();
        let track = st
            .partitions
            .entry(tp.clone())
            .or_insert_with(|| PartitionTrack {
                epoch: fresh,
                in_hand: BTreeMap::new(),
                next: offset,
                committed: offset,
            });
        track.in_hand.insert(
            offset,
            InHand {
                generation,
                unsettled: parts,
                failed: false,
            },
        );
        track.next = track.next.max(offset + 1);
        (track.epoch, generation)
    }

    pub(crate) fn settle(
        &self,
        tp: &TopicPartition,
        offset: i64,
        epoch: u64,
        generation: u64,
        result: Result<(), String>,
    ) {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let Some(track) = st.partitions.get_mut(tp).filter(|t| t.epoch == epoch) else {
            tracing::debug!(
                topic = %tp.0,
                partition = tp.1,
                offset,
                "record settled after its partition was revoked; ignored (the new owner gets it again)"
            );
            return;
        };
        let Some(entry) = track
            .in_hand
            .get_mut(&offset)
            .filter(|e| e.generation == generation)
        else {
            // An older delivery of a record that was delivered again since.
            return;
        };
        match result {
            Ok(()) => {
                entry.unsettled = entry.unsettled.saturating_sub(1);
                if entry.unsettled == 0 && !entry.failed {
                    track.in_hand.remove(&offset);
                }
            }
            Err(reason) => {
                tracing::warn!(
                    topic = %tp.0,
                    partition = tp.1,
                    offset,
                    %reason,
                    "record failed; its partition is rewound to it"
                );
                if !entry.failed {
                    entry.failed = true;
                    st.rewinds.push((tp.clone(), offset, epoch));
                }
                return;
            }
        }
        let watermark = track.in_hand.keys().next().copied().unwrap_or(track.next);
        if watermark > track.committed {
            track.committed = watermark;
            st.dirty.insert(tp.clone(), (watermark, epoch));
            drop(guard);
            self.wake.notify_one();
        }
    }

    /// Commits what is dirty, synchronously; on failure the offsets go back to be retried.
    pub(crate) fn commit_dirty<C: ConsumerContext>(
        &self,
        consumer: &impl Consumer<C>,
    ) -> KafkaResultUnit {
        let _one_at_a_time = lock(&self.commit_lock);
        let dirty: Vec<_> = lock(&self.state).dirty.drain().collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), (offset, _)) in &dirty {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| e.to_string())?;
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(partitions = dirty.len(), "offsets committed");
                Ok(())
            }
            Err(e) => {
                let mut st = lock(&self.state);
                for (tp, (offset, epoch)) in dirty {
                    let current = st.partitions.get(&tp).is_some_and(|t| t.epoch == epoch);
                    let newer = st.dirty.get(&tp).is_some_and(|(o, _)| *o >= offset);
                    if current && !newer {
                        st.dirty.insert(tp, (offset, epoch));
                    }
                }
                Err(format!("committing offsets: {e}"))
            }
        }
    }

    /// Commits what was settled on `revoked` partitions, then forgets them.
    pub(crate) fn revoke<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        revoked: &TopicPartitionList,
    ) {
        let revoked: Vec<TopicPartition> = revoked
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let _one_at_a_time = lock(&self.commit_lock);
        let mut tpl = TopicPartitionList::new();
        {
            let mut st = lock(&self.state);
            for tp in &revoked {
                if let Some((offset, _)) = st.dirty.remove(tp) {
                    if let Err(e) = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(offset)) {
                        tracing::warn!(error = %e, "cannot list an offset to commit");
                    }
                }
                st.partitions.remove(tp);
                st.rewinds.retain(|(t, _, _)| t != tp);
            }
        }
        if tpl.count() > 0 && !consumer.assignment_lost() {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing revoked partitions failed; their records will be delivered again");
            }
        }
        tracing::info!(partitions = revoked.len(), "kafka partitions revoked");
    }

    /// Forgets stale bookkeeping of newly assigned partitions.
    pub(crate) fn assign(&self, assigned: &TopicPartitionList) {
        let mut st = lock(&self.state);
        for e in assigned.elements() {
            let tp = (e.topic().to_owned(), e.partition());
            st.partitions.remove(&tp);
            st.dirty.remove(&tp);
        }
        tracing::info!(partitions = assigned.count(), "kafka partitions assigned");
    }
}

type KafkaResultUnit = Result<(), String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_committed_only_up_to_the_first_unsettled_record() {
        let shared = Shared::default();
        let tp: TopicPartition = ("t".into(), 0);
        let (e, g5) = shared.delivered(&tp, 5, 1);
        let (_, g6) = shared.delivered(&tp, 6, 2);
        let (_, g7) = shared.delivered(&tp, 7, 1);
        let dirty = |s: &Shared| lock(&s.state).dirty.get(&tp).map(|d| d.0);
        shared.settle(&tp, 7, e, g7, Ok(()));
        assert_eq!(dirty(&shared), None, "7 done but 5 and 6 are not");
        shared.settle(&tp, 5, e, g5, Ok(()));
        assert_eq!(dirty(&shared), Some(6));
        shared.settle(&tp, 6, e, g6, Ok(()));
        assert_eq!(dirty(&shared), Some(6), "6 has a second part unsettled");
        shared.settle(&tp, 6, e, g6, Ok(()));
        assert_eq!(dirty(&shared), Some(8));
    }

    #[test]
    fn a_failed_record_holds_the_offset_and_asks_for_a_rewind_until_redelivered() {
        let shared = Shared::default();
        let tp: TopicPartition = ("t".into(), 0);
        let (e, g1) = shared.delivered(&tp, 1, 1);
        let (_, g2) = shared.delivered(&tp, 2, 1);
        shared.settle(&tp, 1, e, g1, Err("disk full".into()));
        shared.settle(&tp, 2, e, g2, Ok(()));
        {
            let st = lock(&shared.state);
            assert!(st.dirty.is_empty(), "{st:?}");
            assert_eq!(st.rewinds, vec![(tp.clone(), 1, e)]);
        }
        // Redelivered after the seek; the stale generation settles into nothing.
        let (e2, g1b) = shared.delivered(&tp, 1, 1);
        assert_eq!(e2, e);
        shared.settle(&tp, 1, e, g1, Ok(()));
        assert!(lock(&shared.state).dirty.is_empty());
        shared.settle(&tp, 1, e, g1b, Ok(()));
        let (_, g2b) = shared.delivered(&tp, 2, 1);
        shared.settle(&tp, 2, e, g2b, Ok(()));
        assert_eq!(lock(&shared.state).dirty.get(&tp), Some(&(3, e)));
    }

    #[test]
    fn settling_after_a_revocation_commits_nothing() {
        let shared = Shared::default();
        let tp: TopicPartition = ("t".into(), 0);
        let (e, g) = shared.delivered(&tp, 1, 1);
        let mut assigned = TopicPartitionList::new();
        assigned.add_partition("t", 0);
        shared.assign(&assigned); // reassigned: a new epoch starts at the next delivery
        shared.settle(&tp, 1, e, g, Ok(()));
        assert!(lock(&shared.state).dirty.is_empty());
    }
}
