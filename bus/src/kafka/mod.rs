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
//! - `wattprint.dead-letter.v2`: refused samples and messages, one protobuf
//!   `wattprint.v1.DeadLetter` per [`DeadLetter`](crate::DeadLetter) keyed by the GPU uuid, or
//!   the host when the GPU could not be read; undecodable bytes travel as received. (v1 carried
//!   JSON quarantine rows: the topic name changed with the format.)
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

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;

/// Default topic of validated samples (protobuf `SampleBatch` records keyed by GPU uuid).
pub const SAMPLES_TOPIC: &str = "wattprint.samples.v1";
/// Default topic of refused samples (protobuf `DeadLetter` records). v2: v1 carried JSON.
pub const DEAD_LETTER_TOPIC: &str = "wattprint.dead-letter.v2";
/// Default consumer group of the enrichers.
pub const ENRICHER_GROUP: &str = "wattprint-enricher";

/// Settings of the Kafka bus, shared by producers and consumers. `Debug` redacts credentials.
#[derive(Clone, PartialEq)]
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
    /// TLS and SASL of every client (plaintext by default).
    pub security: KafkaSecurity,
    /// Extra librdkafka properties (e.g. `linger.ms`), applied last to producers, consumers and
    /// admin clients alike.
    pub client_properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .client_properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaBusConfig")
            .field("brokers", &self.brokers)
            .field("samples_topic", &self.samples_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("group_id", &self.group_id)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_samples_per_record", &self.max_samples_per_record)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("session_timeout", &self.session_timeout)
            .field("security", &self.security)
            .field("client_properties", &properties)
            .finish()
    }
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
            security: KafkaSecurity::default(),
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
            self.security.check().err()
        };
        problem.map_or(Ok(()), |p| Err(KafkaBusError::Config(p)))
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut c);
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
    /// The brokers could not be reached, or refused this client (authentication, TLS).
    #[error("{op}: {source}; the client's last error: {reason}")]
    Unreachable {
        /// What was being done.
        op: &'static str,
        /// The client's error.
        #[source]
        source: KafkaError,
        /// The last connection error librdkafka reported (e.g. `SASL authentication error:
        /// …`, `SSL handshake failed: … certificate verify failed`), or `none reported`.
        reason: String,
    },
    /// A bus topic does not exist (or the client may not see it).
    #[error("kafka topic {0} does not exist or is not visible to this client")]
    MissingTopic(String),
    /// The topics are less durable than `bus.min_replication` / `bus.min_insync_replicas`.
    #[error("kafka topics are less durable than configured: {0} (set bus.durability_check = \"warn\" to start anyway)")]
    WeakDurability(String),
    /// The broker refused to delete a topic.
    #[error("deleting topic {topic}: {code}")]
    DeleteTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        code: RDKafkaErrorCode,
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

pub(crate) fn client_err(op: &'static str) -> impl FnOnce(KafkaError) -> KafkaBusError {
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
    // Fails fast, with librdkafka's reason, when the brokers refuse this client; the admin
    // client would only time out.
    durability::topic_replication(config, &[]).await?;
    let (admin, context) = admin_client(config)?;
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
    let results = admin
        .create_topics(&topics, &admin_options())
        .await
        .map_err(context.unreachable("creating kafka topics"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, partitions, "kafka topic created"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(%topic, "kafka topic already exists");
            }
            Err((topic, code)) => {
                return Err(match context.last_error() {
                    Some(reason) if code == RDKafkaErrorCode::OperationTimedOut => {
                        KafkaBusError::Unreachable {
                            op: "creating kafka topics",
                            source: KafkaError::AdminOp(code),
                            reason,
                        }
                    }
                    _ => KafkaBusError::CreateTopic { topic, code },
                })
            }
        }
    }
    Ok(())
}

/// An admin client with the config's connection settings, and the capture of its errors.
fn admin_client(
    config: &KafkaBusConfig,
) -> Result<(AdminClient<ErrorCapture>, ErrorCapture), KafkaBusError> {
    let context = ErrorCapture::default();
    let admin = config
        .with_overrides(config.client_config())
        .create_with_context(context.clone())
        .map_err(client_err("creating the kafka admin client"))?;
    Ok((admin, context))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// Deletes the samples and dead-letter topics (a load test's own, at its end); topics that do
/// not exist are not an error.
pub async fn delete_topics(config: &KafkaBusConfig) -> Result<(), KafkaBusError> {
    config.validate()?;
    let (admin, context) = admin_client(config)?;
    let topics = [
        config.samples_topic.as_str(),
        config.dead_letter_topic.as_str(),
    ];
    let results = admin
        .delete_topics(&topics, &admin_options())
        .await
        .map_err(context.unreachable("deleting kafka topics"))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "kafka topic deleted"),
            Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(KafkaBusError::DeleteTopic { topic, code }),
        }
    }
    Ok(())
}

/// Forwards librdkafka's logs and errors to `tracing`, and keeps the first few distinct
/// errors, so a failed call can say why the brokers did not answer (a refused password, an
/// unknown CA) rather than only that all of them are down.
#[derive(Debug, Default, Clone)]
pub(crate) struct ErrorCapture {
    seen: Arc<Mutex<Vec<String>>>,
}

/// Most distinct errors an [`ErrorCapture`] keeps.
const CAPTURED_ERRORS: usize = 4;

impl ErrorCapture {
    /// The errors librdkafka reported, first first, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        let seen = self.seen.lock().ok()?;
        (!seen.is_empty()).then(|| seen.join("; "))
    }

    fn keep(&self, message: String) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() < CAPTURED_ERRORS && !seen.contains(&message) {
                seen.push(message);
            }
        }
    }

    /// Maps a failed call to [`KafkaBusError::Unreachable`] with the last reported error.
    pub(crate) fn unreachable(&self, op: &'static str) -> impl FnOnce(KafkaError) -> KafkaBusError {
        let capture = self.clone();
        move |source| KafkaBusError::Unreachable {
            op,
            source,
            reason: capture
                .last_error()
                .unwrap_or_else(|| "none reported".to_owned()),
        }
    }
}

impl ClientContext for ErrorCapture {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_to_tracing(level, fac, log_message);
        // Connection failures (authentication, TLS) arrive as logs before any error event.
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.keep(log_message.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "kafka client error: {reason}");
        self.keep(format!("{error} ({reason})"));
    }
}

impl rdkafka::producer::ProducerContext for ErrorCapture {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, (): ()) {}
}

/// Forwards librdkafka's logs and errors to `tracing`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingContext;

pub(crate) fn log_to_tracing(level: RDKafkaLogLevel, fac: &str, message: &str) {
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

mod codec;
mod consumer;
pub(crate) mod durability;
mod lag;
mod offsets;
mod producer;
mod security;

pub use codec::{
    decode_dead_letter_record, decode_samples_record, encode_dead_letters, encode_samples,
    EncodedRecord, RecordOrigin,
};
pub use consumer::{BusConsumerContext, ConsumedRecord, KafkaConsumer};
pub use durability::{check_durability, DurabilityPolicy, OnWeakDurability, TopicDurability};
pub use producer::KafkaProducer;
use security::is_secret_property;
pub use security::{KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let c = KafkaBusConfig::new("127.0.0.1:9092").with_topic_prefix("test-1.");
        assert_eq!(c.samples_topic, "test-1.wattprint.samples.v1");
        assert_eq!(c.dead_letter_topic, "test-1.wattprint.dead-letter.v2");
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
