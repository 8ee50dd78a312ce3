//! Consumes the samples and dead-letter topics in the enrichers' consumer group.

use super::codec::{decode_dead_letter_record, decode_samples_record, undecodable, RecordOrigin};
use super::offsets::{lock, Shared};
use super::{client_err, log_to_tracing, KafkaBusConfig, KafkaBusError};
use crate::{BusConsumer, BusMessage, Delivery};
use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::Offset;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The consumer's context: logs to tracing, commits revoked partitions' progress, and keeps
/// the assigned partitions and their lag as metrics ([`super::lag`]).
#[derive(Debug)]
pub struct BusConsumerContext {
    shared: Arc<Shared>,
    samples_topic: String,
    dead_letter_topic: String,
}

impl BusConsumerContext {
    /// The metric label of a topic: `samples`, `dead_letter`, or `None` for another.
    fn topic_label(&self, topic: &str) -> Option<&'static str> {
        if topic == self.samples_topic {
            Some("samples")
        } else if topic == self.dead_letter_topic {
            Some("dead_letter")
        } else {
            None
        }
    }

    fn labelled<'a>(
        &'a self,
        tpl: &'a rdkafka::TopicPartitionList,
    ) -> impl Iterator<Item = (&'static str, i32)> + 'a {
        tpl.elements()
            .into_iter()
            .filter_map(|e| Some((self.topic_label(e.topic())?, e.partition())))
    }
}

impl ClientContext for BusConsumerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(level, fac, log_message);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for (name, topic) in &statistics.topics {
            let Some(label) = self.topic_label(name) else {
                continue;
            };
            for (id, p) in &topic.partitions {
                if *id >= 0 {
                    super::lag::observed(
                        (label, *id),
                        p.hi_offset,
                        p.lo_offset,
                        p.committed_offset,
                    );
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for BusConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                super::lag::revoked(self.labelled(tpl));
                self.shared.revoke(consumer, tpl);
            }
            Rebalance::Assign(tpl) => {
                super::lag::assigned(self.labelled(tpl));
                self.shared.assign(tpl);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }
}

type Inner = StreamConsumer<BusConsumerContext>;

/// A record received from Kafka, with where it came from.
#[derive(Debug)]
pub struct ConsumedRecord {
    /// Topic, partition, offset and key of the record.
    pub origin: RecordOrigin,
    /// The decoded message, to settle.
    pub delivery: Delivery,
}

/// Consumes the samples and dead-letter topics in a consumer group (see the module docs for
/// what commit and fail do).
pub struct KafkaConsumer {
    consumer: Option<Arc<Inner>>,
    shared: Arc<Shared>,
    committer: Option<tokio::task::JoinHandle<()>>,
    samples_topic: String,
    dead_letter_topic: String,
    ready: VecDeque<ConsumedRecord>,
}

impl std::fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("samples_topic", &self.samples_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaConsumer {
    /// Joins `config.group_id` and subscribes to both topics, from the committed offsets (or
    /// the earliest records when the group has none). Must be called within a tokio runtime.
    pub fn new(config: &KafkaBusConfig) -> Result<Self, KafkaBusError> {
        config.validate()?;
        let shared = Arc::new(Shared::default());
        let mut c = config.client_config();
        c.set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "statistics.interval.ms",
                super::lag::STATS_INTERVAL.as_millis().to_string(),
            );
        super::lag::register();
        let consumer: Inner = config
            .with_overrides(c)
            .create_with_context(BusConsumerContext {
                shared: shared.clone(),
                samples_topic: config.samples_topic.clone(),
                dead_letter_topic: config.dead_letter_topic.clone(),
            })
            .map_err(client_err("creating the kafka consumer"))?;
        consumer
            .subscribe(&[&config.samples_topic, &config.dead_letter_topic])
            .map_err(client_err("subscribing to the bus topics"))?;
        let consumer = Arc::new(consumer);
        let committer = tokio::spawn(run_committer(shared.clone(), Arc::downgrade(&consumer)));
        Ok(Self {
            consumer: Some(consumer),
            shared,
            committer: Some(committer),
            samples_topic: config.samples_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            ready: VecDeque::new(),
        })
    }

    fn apply_rewinds(&mut self, consumer: &Inner) {
        let rewinds = std::mem::take(&mut lock(&self.shared.state).rewinds);
        for ((topic, partition), offset, epoch) in rewinds {
            let current = lock(&self.shared.state)
                .partitions
                .get(&(topic.clone(), partition))
                .is_some_and(|t| t.epoch == epoch);
            if !current {
                continue;
            }
            // What is queued here for the partition will come again after the seek.
            self.ready
                .retain(|r| !(r.origin.topic == topic && r.origin.partition == partition));
            // A zero timeout seeks asynchronously; librdkafka drops what it had fetched past it.
            match consumer.seek(&topic, partition, Offset::Offset(offset), Duration::ZERO) {
                Ok(()) => {
                    tracing::info!(%topic, partition, offset, "partition rewound to a failed record");
                }
                Err(e) => {
                    tracing::warn!(%topic, partition, offset, error = %e, "seeking back to a failed record failed; retrying");
                    lock(&self.shared.state)
                        .rewinds
                        .push(((topic, partition), offset, epoch));
                }
            }
        }
    }

    /// The next record with its origin, or `None` once closed. Cancel-safe.
    pub async fn next_record(&mut self) -> Option<ConsumedRecord> {
        loop {
            let consumer = self.consumer.clone()?;
            self.apply_rewinds(&consumer);
            if let Some(record) = self.ready.pop_front() {
                return Some(record);
            }
            // The borrowed message must not live across an await (it is not `Send`).
            let received = match consumer.recv().await {
                Ok(msg) => {
                    let origin = RecordOrigin {
                        topic: msg.topic().to_owned(),
                        partition: msg.partition(),
                        offset: msg.offset(),
                        key: msg
                            .key()
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .map(str::to_owned),
                    };
                    let messages = if origin.topic == self.samples_topic {
                        decode_samples_record(&origin, msg.payload())
                    } else if origin.topic == self.dead_letter_topic {
                        vec![decode_dead_letter_record(&origin, msg.payload())]
                    } else {
                        vec![BusMessage::DeadLetters(vec![undecodable(
                            &origin,
                            msg.payload(),
                            "record from a topic this consumer did not subscribe to",
                        )])]
                    };
                    Ok((origin, messages))
                }
                Err(e) => Err(e),
            };
            match received {
                Ok((origin, messages)) => self.enqueue(origin, messages),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consume error; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn enqueue(&mut self, origin: RecordOrigin, messages: Vec<BusMessage>) {
        let tp = (origin.topic.clone(), origin.partition);
        let parts = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        let (epoch, generation) = self.shared.delivered(&tp, origin.offset, parts);
        for message in messages {
            let shared = self.shared.clone();
            let tp = tp.clone();
            let offset = origin.offset;
            let delivery = Delivery::new(message, move |result| {
                shared.settle(&tp, offset, epoch, generation, result);
            });
            self.ready.push_back(ConsumedRecord {
                origin: origin.clone(),
                delivery,
            });
        }
    }

    /// Commits what was settled, leaves the group and stops: later calls return `None`.
    /// Records still in hand are not committed (they are delivered again to the group).
    pub async fn shutdown(&mut self) {
        self.ready.clear();
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(committer) = self.committer.take() {
            if let Err(e) = committer.await {
                tracing::warn!(error = %e, "kafka offset committer task failed");
            }
        }
        if let Some(consumer) = self.consumer.take() {
            // Dropping the last handle closes the consumer: revocation (committing what the
            // committer may have missed) and leaving the group. That blocks, so off the runtime.
            let closed = tokio::task::spawn_blocking(move || drop(consumer)).await;
            if let Err(e) = closed {
                tracing::warn!(error = %e, "closing the kafka consumer failed");
            }
        }
        tracing::info!("kafka consumer closed");
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // The consumer handle drops with `self`, which commits what was settled (revocation)
        // and leaves the group; the committer then finds it gone and stops.
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }
}

/// Commits settled offsets one commit at a time until the consumer closes.
async fn run_committer(shared: Arc<Shared>, consumer: Weak<Inner>) {
    let mut failures = 0u32;
    loop {
        let closing = shared.closing.load(Ordering::SeqCst);
        if !closing && failures == 0 {
            shared.wake.notified().await;
        }
        let Some(handle) = consumer.upgrade() else {
            return;
        };
        let task_shared = shared.clone();
        let committed =
            tokio::task::spawn_blocking(move || task_shared.commit_dirty(handle.as_ref())).await;
        match committed {
            Ok(Ok(())) => failures = 0,
            Ok(Err(e)) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "kafka offset commit failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "kafka offset commit task failed");
                failures += 1;
            }
        }
        let closing = shared.closing.load(Ordering::SeqCst);
        if closing && (failures == 0 || failures >= 5) {
            if failures >= 5 {
                tracing::warn!("giving up committing offsets at shutdown; their records will be delivered again");
            }
            return;
        }
        if failures >= 5 {
            // Keep trying, but slowly; later settlements wake us too.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[async_trait]
impl BusConsumer for KafkaConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        self.next_record().await.map(|r| r.delivery)
    }

    async fn close(&mut self) {
        self.shutdown().await;
    }
}
