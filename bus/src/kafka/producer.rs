//! Publishes bus messages to Kafka (idempotent, `acks=all`).

use super::codec::{encode_dead_letters, encode_samples, EncodedRecord};
use super::{client_err, KafkaBusConfig, KafkaBusError, TracingContext};
use crate::{BusError, BusMessage, BusProducer};
use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use std::time::Duration;
use tokio::sync::Semaphore;

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
                encode_dead_letters(records),
            ),
        };
        let span = tracing::Span::current();
        span.record("kind", topic);
        span.record("records", records.len());
        self.produce(topic, &records).await
    }
}
