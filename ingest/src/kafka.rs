//! The Kafka bus of the distributed deployment: [`KafkaProducer`] (gateways) and
//! [`KafkaConsumer`] (enrichers, one consumer group) implement the bus traits over any
//! Kafka-protocol broker.
//!
//! # Topics and records
//! - `wattprint.samples.v1`: validated samples. A [`BusMessage::Samples`] is split per GPU; each
//!   GPU's samples become one record (or several, in order, past
//!   [`KafkaBusConfig::max_samples_per_record`]) keyed by the GPU uuid, so one GPU's samples
//!   stay ordered on one partition. The value is a protobuf `wattprint.v1.SampleBatch`
//!   (`host_id` from the samples, `batch_seq` 0).
//! - `wattprint.dead-letter.v1`: refused samples, one JSON record per [`QuarantineRecord`]
//!   (`received_at`, `host`, `gpu`, `seq`, `reason`, `payload`) keyed by the GPU uuid, or the
//!   host when the GPU could not be read.
//!
//! # Delivery guarantees
//! The producer is idempotent with `acks=all`; [`KafkaProducer::publish`] returns `Ok` only
//! when the broker acknowledged every record of the message, so the gateway acks the agent only
//! for data the broker holds. Any failure is a [`BusError`]: the gateway refuses the ack, the
//! agent resends, and the redelivery is harmless because the store dedups samples by
//! `(gpu, seq)`.
//!
//! The consumer commits offsets itself (`enable.auto.commit=false`), and only up to the first
//! record not yet committed by the enricher, per partition: an offset is never committed past a
//! record that is still being processed or failed. Commits run on a background task, one at a
//! time (so a later commit can never be overtaken by an earlier one), coalescing what was
//! settled meanwhile. [`Delivery::fail`] seeks the record's partition back to the record: it
//! and every later record of that partition are delivered again (duplicates downstream are
//! harmless for the same reason as above).
//!
//! # Rebalances
//! When partitions are revoked, what was settled on them is committed synchronously in the
//! rebalance callback, then their bookkeeping is dropped. Deliveries still in hand for a
//! revoked partition settle into nothing: their commit is ignored (logged at debug) rather than
//! committed into another member's partition, and their records are redelivered to the new
//! owner from the last committed offset.

use crate::bus::{BusConsumer, BusError, BusMessage, BusProducer, Delivery};
use async_trait::async_trait;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};
use wattprint_core::sample::EnergySample;
use wattprint_core::{GpuUuid, HostId};
use wattprint_proto::v1::SampleBatch;
use wattprint_store::QuarantineRecord;

/// Default topic of validated samples (protobuf `SampleBatch` records keyed by GPU uuid).
pub const SAMPLES_TOPIC: &str = "wattprint.samples.v1";
/// Default topic of refused samples (JSON quarantine records).
pub const DEAD_LETTER_TOPIC: &str = "wattprint.dead-letter.v1";
/// Default consumer group of the enrichers.
pub const ENRICHER_GROUP: &str = "wattprint-enricher";

/// Largest part of an undecodable record's value kept (hex) in its quarantine record.
const MAX_QUARANTINED_BYTES: usize = 16 * 1024;

/// Settings of the Kafka bus, shared by producers and consumers.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaBusConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic of validated samples.
    pub samples_topic: String,
    /// Topic of refused samples.
    pub dead_letter_topic: String,
    /// Consumer group of the enrichers.
    pub group_id: String,
    /// Most publishes in flight per producer; further publishes wait (backpressure on the
    /// gateway's streams, nothing is dropped).
    pub max_in_flight: usize,
    /// Most samples in one record; a GPU with more in one message gets several records, in order.
    /// Keeps records under the brokers' message size limit (1 MB by default; a sample is ~70 B).
    pub max_samples_per_record: usize,
    /// How long the producer keeps retrying a record before the publish fails.
    pub delivery_timeout: Duration,
    /// Consumer group session timeout: how long a silent enricher keeps its partitions.
    pub session_timeout: Duration,
    /// Extra librdkafka properties (e.g. `security.protocol`, `sasl.*`, `linger.ms`), applied
    /// last to producers, consumers and admin clients alike.
    pub client_properties: BTreeMap<String, String>,
}

impl KafkaBusConfig {
    /// Defaults for `brokers`: the versioned topic names, group [`ENRICHER_GROUP`], 64 publishes
    /// in flight, 1000 samples per record, 30 s delivery timeout, 10 s session timeout.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            samples_topic: SAMPLES_TOPIC.to_owned(),
            dead_letter_topic: DEAD_LETTER_TOPIC.to_owned(),
            group_id: ENRICHER_GROUP.to_owned(),
            max_in_flight: 64,
            max_samples_per_record: 1000,
            delivery_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(10),
            client_properties: BTreeMap::new(),
        }
    }

    /// Prefixes both topic names (`{prefix}wattprint.samples.v1`, …): separate environments
    /// or tests on one cluster.
    pub fn with_topic_prefix(mut self, prefix: &str) -> Self {
        self.samples_topic = format!("{prefix}{SAMPLES_TOPIC}");
        self.dead_letter_topic = format!("{prefix}{DEAD_LETTER_TOPIC}");
        self
    }

    /// Sets the consumer group.
    pub fn with_group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = group_id.into();
        self
    }

    /// Checks the settings that librdkafka would not reject by itself.
    pub fn validate(&self) -> Result<(), KafkaBusError> {
        let problem = if self.brokers.trim().is_empty() {
            Some("brokers is empty".to_owned())
        } else if self.samples_topic.is_empty() || self.dead_letter_topic.is_empty() {
            Some("topic names must not be empty".to_owned())
        } else if self.samples_topic == self.dead_letter_topic {
            Some(format!(
                "samples and dead letters need two topics, both are {}",
                self.samples_topic
            ))
        } else if self.group_id.is_empty() {
            Some("group_id is empty".to_owned())
        } else if self.max_in_flight == 0 {
            Some("max_in_flight must be at least 1".to_owned())
        } else if self.max_samples_per_record == 0 {
            Some("max_samples_per_record must be at least 1".to_owned())
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(KafkaBusError::Config(p)))
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c
    }

    fn with_overrides(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.client_properties {
            c.set(k, v);
        }
        c
    }
}

/// Failures setting up the Kafka bus.
#[derive(Debug, Error)]
pub enum KafkaBusError {
    /// The configuration is invalid.
    #[error("invalid kafka bus configuration: {0}")]
    Config(String),
    /// A Kafka client operation failed.
    #[error("{op}: {source}")]
    Client {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// The broker refused to create a topic.
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
    },
}

fn client_err(op: &'static str) -> impl FnOnce(KafkaError) -> KafkaBusError {
    move |source| KafkaBusError::Client { op, source }
}

/// Creates the samples and dead-letter topics with `partitions` partitions each; topics that
/// already exist are left as they are.
pub async fn create_topics(
    config: &KafkaBusConfig,
    partitions: i32,
    replication: i32,
) -> Result<(), KafkaBusError> {
    config.validate()?;
    let admin: AdminClient<DefaultClientContext> = config
        .with_overrides(config.client_config())
        .create()
        .map_err(client_err("creating the kafka admin client"))?;
    let topics = [
        NewTopic::new(
            &config.samples_topic,
            partitions,
            TopicReplication::Fixed(replication),
        ),
        NewTopic::new(
            &config.dead_letter_topic,
            partitions,
            TopicReplication::Fixed(replication),
        ),
    ];
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(client_err("creating kafka topics"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions, "kafka topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "kafka topic already exists");
            }
            Err((topic, code)) => return Err(KafkaBusError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Forwards librdkafka's logs and errors to `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingContext;

fn log_to_tracing(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility = fac, "librdkafka: {message}");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "kafka client error: {reason}");
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// One record to produce: its key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    /// Partitioning key (GPU uuid, or host).
    pub key: String,
    /// Value bytes.
    pub value: Vec<u8>,
}

/// Splits samples per GPU (in order of first appearance, each GPU's samples in their order)
/// into `SampleBatch` records keyed by GPU uuid, at most `max_per_record` samples each.
pub fn encode_samples(samples: &[EnergySample], max_per_record: usize) -> Vec<EncodedRecord> {
    let mut groups: Vec<(&HostId, &GpuUuid, Vec<&EnergySample>)> = Vec::new();
    let mut index: HashMap<(&HostId, &GpuUuid), usize> = HashMap::new();
    for s in samples {
        let i = *index.entry((&s.host, &s.gpu)).or_insert_with(|| {
            groups.push((&s.host, &s.gpu, Vec::new()));
            groups.len() - 1
        });
        groups[i].2.push(s);
    }
    let mut records = Vec::with_capacity(groups.len());
    for (host, gpu, samples) in groups {
        for chunk in samples.chunks(max_per_record.max(1)) {
            let batch = SampleBatch {
                host_id: host.as_str().to_owned(),
                batch_seq: 0,
                samples: chunk
                    .iter()
                    .map(|s| wattprint_proto::sample_to_wire(s))
                    .collect(),
            };
            records.push(EncodedRecord {
                key: gpu.as_str().to_owned(),
                value: batch.encode_to_vec(),
            });
        }
    }
    records
}

/// One JSON record per quarantine record, keyed by GPU uuid (or host when there is none).
pub fn encode_dead_letters(
    records: &[QuarantineRecord],
) -> Result<Vec<EncodedRecord>, serde_json::Error> {
    records
        .iter()
        .map(|r| {
            Ok(EncodedRecord {
                key: r
                    .gpu
                    .as_ref()
                    .map_or_else(|| r.host.as_str().to_owned(), |g| g.as_str().to_owned()),
                value: serde_json::to_vec(r)?,
            })
        })
        .collect()
}

/// Where a record came from, for quarantine reasons and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOrigin {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, if any and UTF-8.
    pub key: Option<String>,
}

impl std::fmt::Display for RecordOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let shown = &bytes[..bytes.len().min(MAX_QUARANTINED_BYTES)];
    let mut out = String::with_capacity(shown.len() * 2 + 32);
    for b in shown {
        let _ = write!(out, "{b:02x}");
    }
    if shown.len() < bytes.len() {
        let _ = write!(out, "… ({} bytes in all)", bytes.len());
    }
    out
}

fn undecodable(origin: &RecordOrigin, value: Option<&[u8]>, error: &str) -> QuarantineRecord {
    tracing::error!(
        topic = %origin.topic,
        partition = origin.partition,
        offset = origin.offset,
        %error,
        "undecodable record quarantined"
    );
    QuarantineRecord {
        received_at: crate::gateway::now(),
        host: HostId::new("unknown"),
        gpu: origin
            .key
            .as_ref()
            .filter(|k| !k.is_empty() && k.len() <= wattprint_proto::MAX_ID_LEN)
            .map(|k| GpuUuid::new(k.clone())),
        seq: None,
        reason: format!("undecodable record on {origin}: {error}"),
        payload: value.map(hex).unwrap_or_default(),
    }
}

/// Decodes a samples-topic record into bus messages: the valid samples, and a quarantine
/// message for what could not be decoded (the whole record, or single samples). Never fails.
pub fn decode_samples_record(origin: &RecordOrigin, value: Option<&[u8]>) -> Vec<BusMessage> {
    let Some(bytes) = value else {
        return vec![BusMessage::DeadLetters(vec![undecodable(
            origin,
            None,
            "record has no value",
        )])];
    };
    let batch = match SampleBatch::decode(bytes) {
        Ok(batch) => batch,
        Err(e) => {
            return vec![BusMessage::DeadLetters(vec![undecodable(
                origin,
                Some(bytes),
                &format!("not a wattprint.v1.SampleBatch: {e}"),
            )])]
        }
    };
    if batch.host_id.is_empty() || batch.host_id.len() > wattprint_proto::MAX_ID_LEN {
        return vec![BusMessage::DeadLetters(vec![undecodable(
            origin,
            Some(bytes),
            "SampleBatch host_id must be 1 to 128 bytes",
        )])];
    }
    let host = HostId::new(batch.host_id.clone());
    let mut samples = Vec::with_capacity(batch.samples.len());
    let mut quarantine = Vec::new();
    for wire in &batch.samples {
        match wattprint_proto::sample_from_wire(&host, wire) {
            Ok(s) => samples.push(s),
            Err(reason) => {
                tracing::error!(%origin, gpu = %wire.gpu_uuid, seq = wire.seq, %reason, "undecodable sample quarantined");
                quarantine.push(QuarantineRecord {
                    received_at: crate::gateway::now(),
                    host: host.clone(),
                    gpu: (!wire.gpu_uuid.is_empty()).then(|| GpuUuid::new(wire.gpu_uuid.clone())),
                    seq: Some(wire.seq),
                    reason: format!("undecodable sample in record on {origin}: {reason}"),
                    payload: crate::gateway::payload(wire),
                });
            }
        }
    }
    let mut messages = Vec::with_capacity(2);
    if !samples.is_empty() || quarantine.is_empty() {
        messages.push(BusMessage::Samples(samples));
    }
    if !quarantine.is_empty() {
        messages.push(BusMessage::DeadLetters(quarantine));
    }
    messages
}

/// Decodes a dead-letter-topic record; an undecodable one becomes a quarantine record about it.
pub fn decode_dead_letter_record(origin: &RecordOrigin, value: Option<&[u8]>) -> BusMessage {
    let record = match value {
        None => undecodable(origin, None, "record has no value"),
        Some(bytes) => match serde_json::from_slice::<QuarantineRecord>(bytes) {
            Ok(record) => record,
            Err(e) => undecodable(
                origin,
                Some(bytes),
                &format!("not a JSON quarantine record: {e}"),
            ),
        },
    };
    BusMessage::DeadLetters(vec![record])
}

// ---------------------------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------------------------

/// Publishes bus messages to Kafka (idempotent, `acks=all`).
pub struct KafkaProducer {
    producer: FutureProducer<TracingContext>,
    samples_topic: String,
    dead_letter_topic: String,
    in_flight: Semaphore,
    max_samples_per_record: usize,
    delivery_timeout: Duration,
}

impl std::fmt::Debug for KafkaProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProducer")
            .field("samples_topic", &self.samples_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

impl KafkaProducer {
    /// A producer for `config`'s topics. Connects lazily: an unreachable broker shows as
    /// failing publishes, not here.
    pub fn new(config: &KafkaBusConfig) -> Result<Self, KafkaBusError> {
        config.validate()?;
        let mut c = config.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            // The Java client's partitioner: the same key lands on the same partition whatever
            // the client.
            .set("partitioner", "murmur2_random");
        let producer = config
            .with_overrides(c)
            .create_with_context(TracingContext)
            .map_err(client_err("creating the kafka producer"))?;
        Ok(Self {
            producer,
            samples_topic: config.samples_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            in_flight: Semaphore::new(config.max_in_flight),
            max_samples_per_record: config.max_samples_per_record,
            delivery_timeout: config.delivery_timeout,
        })
    }

    /// Produces `records` to `topic` and waits until the broker acknowledged all of them.
    async fn produce(&self, topic: &str, records: &[EncodedRecord]) -> Result<(), BusError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| BusError::Closed)?;
        let mut acks = Vec::with_capacity(records.len());
        for r in records {
            let mut record = FutureRecord::to(topic)
                .key(r.key.as_str())
                .payload(r.value.as_slice());
            let deadline = tokio::time::Instant::now() + self.delivery_timeout;
            loop {
                match self.producer.send_result(record) {
                    Ok(ack) => {
                        acks.push(ack);
                        break;
                    }
                    // The local queue is full: wait for it to drain (backpressure).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                        if tokio::time::Instant::now() < deadline =>
                    {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        return Err(BusError::Broker(format!("producing to {topic}: {e}")));
                    }
                }
            }
        }
        for ack in acks {
            match ack.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(BusError::Broker(format!("producing to {topic}: {e}")));
                }
                Err(_) => return Err(BusError::Closed),
            }
        }
        Ok(())
    }

    /// Waits until everything queued was delivered or `timeout` passed (before shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer
            .flush(timeout)
            .map_err(|e| BusError::Broker(format!("flushing the producer: {e}")))
    }
}

#[async_trait]
impl BusProducer for KafkaProducer {
    #[tracing::instrument(skip_all, fields(kind, records))]
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let (topic, records) = match &message {
            BusMessage::Samples(samples) => (
                self.samples_topic.as_str(),
                encode_samples(samples, self.max_samples_per_record),
            ),
            BusMessage::DeadLetters(records) => (
                self.dead_letter_topic.as_str(),
                encode_dead_letters(records)
                    .map_err(|e| BusError::Broker(format!("encoding dead letters: {e}")))?,
            ),
        };
        let span = tracing::Span::current();
        span.record("kind", topic);
        span.record("records", records.len());
        self.produce(topic, &records).await
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------------------------

type TopicPartition = (String, i32);

/// One record being delivered: how many of its deliveries are unsettled, and whether one failed.
#[derive(Debug)]
struct InHand {
    /// Which delivery of the record this is (a failed record is delivered again).
    generation: u64,
    unsettled: u32,
    failed: bool,
}

/// Bookkeeping of one assigned partition.
#[derive(Debug)]
struct PartitionTrack {
    /// Changes when the partition is (re)assigned: settlements of older deliveries are ignored.
    epoch: u64,
    /// Records delivered and not yet committed by the application, by offset.
    in_hand: BTreeMap<i64, InHand>,
    /// One past the highest offset delivered.
    next: i64,
    /// The highest offset handed to the committer.
    committed: i64,
}

#[derive(Debug, Default)]
struct CommitState {
    partitions: HashMap<TopicPartition, PartitionTrack>,
    /// Offsets to commit, with the epoch they belong to.
    dirty: HashMap<TopicPartition, (i64, u64)>,
    /// Seeks to do before the next fetch: partition, offset, epoch.
    rewinds: Vec<(TopicPartition, i64, u64)>,
    next_id: u64,
}

impl CommitState {
    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// State shared by the consumer, its deliveries, its committer task and its rebalance callback.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<CommitState>,
    /// Held while committing: one commit at a time, in order.
    commit_lock: Mutex<()>,
    wake: Notify,
    closing: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Records that a record was delivered in `parts` deliveries; returns (epoch, generation).
    fn delivered(&self, tp: &TopicPartition, offset: i64, parts: u32) -> (u64, u64) {
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

    fn settle(
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
    fn commit_dirty<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) -> KafkaResultUnit {
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
    fn revoke<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, revoked: &TopicPartitionList) {
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
    fn assign(&self, assigned: &TopicPartitionList) {
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

/// The consumer's context: logs to tracing, commits revoked partitions' progress.
#[derive(Debug)]
pub struct BusConsumerContext {
    shared: Arc<Shared>,
}

impl ClientContext for BusConsumerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for BusConsumerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.shared.revoke(consumer, tpl),
            Rebalance::Assign(tpl) => self.shared.assign(tpl),
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
            );
        let consumer: Inner = config
            .with_overrides(c)
            .create_with_context(BusConsumerContext {
                shared: shared.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use wattprint_core::sample::{Attribution, EnergySource};
    use wattprint_core::{InstanceId, Millijoules, Milliwatts, UnixMillis};

    fn sample(host: &str, gpu: &str, seq: u64) -> EnergySample {
        EnergySample {
            host: HostId::from(host),
            gpu: GpuUuid::from(gpu),
            instance: InstanceId::from("i-1"),
            seq,
            start: UnixMillis(1000 * seq as i64),
            end: UnixMillis(1000 * seq as i64 + 1000),
            energy: Millijoules(300_000 + seq),
            power: Milliwatts(300_000),
            power_max: Milliwatts(310_000),
            util_gpu_pct: 50,
            mem_used_bytes: 1 << 30,
            temp_c: 40,
            sm_clock_mhz: 1980,
            chain_start: seq == 0,
            energy_source: EnergySource::Counter,
            attribution: Attribution::Exclusive,
        }
    }

    fn origin(topic: &str) -> RecordOrigin {
        RecordOrigin {
            topic: topic.into(),
            partition: 2,
            offset: 7,
            key: Some("GPU-A".into()),
        }
    }

    #[test]
    fn samples_are_split_per_gpu_in_order_and_chunked() {
        let samples = vec![
            sample("h", "GPU-A", 1),
            sample("h", "GPU-B", 1),
            sample("h", "GPU-A", 2),
            sample("h", "GPU-A", 3),
            sample("h", "GPU-B", 2),
        ];
        let records = encode_samples(&samples, 2);
        let keys: Vec<_> = records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["GPU-A", "GPU-A", "GPU-B"]);
        let decoded: Vec<Vec<u64>> = records
            .iter()
            .map(|r| {
                let batch = SampleBatch::decode(r.value.as_slice()).unwrap();
                assert_eq!(batch.host_id, "h");
                batch.samples.iter().map(|s| s.seq).collect()
            })
            .collect();
        assert_eq!(decoded, vec![vec![1, 2], vec![3], vec![1, 2]]);
        // Round trip back to the same core samples.
        let back: Vec<EnergySample> = records
            .iter()
            .flat_map(|r| decode_samples_record(&origin(SAMPLES_TOPIC), Some(&r.value)))
            .flat_map(|m| match m {
                BusMessage::Samples(s) => s,
                BusMessage::DeadLetters(d) => panic!("{d:?}"),
            })
            .collect();
        let mut expected = samples.clone();
        expected.sort_by(|a, b| (&a.gpu, a.seq).cmp(&(&b.gpu, b.seq)));
        assert_eq!(back, expected);
    }

    #[test]
    fn garbage_becomes_a_quarantine_record_with_the_decode_error() {
        let o = origin(SAMPLES_TOPIC);
        let got = decode_samples_record(&o, Some(&[0xff, 0xff, 0xff, 0x01]));
        let [BusMessage::DeadLetters(d)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert!(
            d[0].reason.starts_with(
                "undecodable record on wattprint.samples.v1 partition 2 offset 7: not a wattprint.v1.SampleBatch"
            ),
            "{}",
            d[0].reason
        );
        assert_eq!(d[0].payload, "ffffff01");
        assert_eq!(d[0].gpu, Some(GpuUuid::from("GPU-A")));
        let got = decode_samples_record(&o, None);
        assert!(
            matches!(&got[..], [BusMessage::DeadLetters(d)] if d[0].reason.ends_with("record has no value"))
        );
        let got = decode_dead_letter_record(&origin(DEAD_LETTER_TOPIC), Some(b"{not json"));
        let BusMessage::DeadLetters(d) = got else {
            panic!()
        };
        assert!(
            d[0].reason.contains("not a JSON quarantine record"),
            "{}",
            d[0].reason
        );
    }

    #[test]
    fn a_bad_sample_in_a_good_record_is_quarantined_alone() {
        let mut batch = SampleBatch {
            host_id: "h".into(),
            batch_seq: 0,
            samples: vec![
                wattprint_proto::sample_to_wire(&sample("h", "GPU-A", 1)),
                wattprint_proto::sample_to_wire(&sample("h", "GPU-A", 2)),
            ],
        };
        batch.samples[1].energy_source = 99;
        let got = decode_samples_record(&origin(SAMPLES_TOPIC), Some(&batch.encode_to_vec()));
        let [BusMessage::Samples(s), BusMessage::DeadLetters(d)] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert_eq!(s, &vec![sample("h", "GPU-A", 1)]);
        assert_eq!(d[0].seq, Some(2));
        assert!(d[0].reason.contains("energy_source 99"), "{}", d[0].reason);
    }

    #[test]
    fn dead_letters_round_trip_as_json_keyed_by_gpu_or_host() {
        let records = vec![
            QuarantineRecord {
                received_at: UnixMillis(5),
                host: HostId::from("h"),
                gpu: Some(GpuUuid::from("GPU-A")),
                seq: Some(3),
                reason: "why".into(),
                payload: "{}".into(),
            },
            QuarantineRecord {
                received_at: UnixMillis(6),
                host: HostId::from("h"),
                gpu: None,
                seq: None,
                reason: "no gpu".into(),
                payload: String::new(),
            },
        ];
        let encoded = encode_dead_letters(&records).unwrap();
        assert_eq!(encoded[0].key, "GPU-A");
        assert_eq!(encoded[1].key, "h");
        let json: serde_json::Value = serde_json::from_slice(&encoded[0].value).unwrap();
        for field in ["received_at", "host", "gpu", "seq", "reason", "payload"] {
            assert!(json.get(field).is_some(), "{field} missing in {json}");
        }
        for (e, r) in encoded.iter().zip(&records) {
            assert_eq!(
                decode_dead_letter_record(&origin(DEAD_LETTER_TOPIC), Some(&e.value)),
                BusMessage::DeadLetters(vec![r.clone()])
            );
        }
    }

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

    #[test]
    fn config_is_validated() {
        let c = KafkaBusConfig::new("127.0.0.1:9092").with_topic_prefix("test-1.");
        assert_eq!(c.samples_topic, "test-1.wattprint.samples.v1");
        assert_eq!(c.dead_letter_topic, "test-1.wattprint.dead-letter.v1");
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.max_in_flight = 0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_in_flight"));
        let mut bad = c;
        bad.dead_letter_topic = bad.samples_topic.clone();
        assert!(bad.validate().is_err());
    }
}
