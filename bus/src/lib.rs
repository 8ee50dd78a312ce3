//! The bus between gateways and enrichers: the [`BusProducer`] / [`BusConsumer`] traits, the
//! in-process bus of the embedded deployment ([`memory_bus`]) and Kafka ([`kafka`]) for the
//! distributed one, with the wire codec. This is the only crate that links librdkafka.
//!
//! A publish completes only when the message is durably held: for the in-process bus that is
//! when the enricher has committed it to the store, so the gateway's ack to the agent means the
//! data is on disk.

use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use thiserror::Error;
use wattprint_core::sample::EnergySample;

pub mod config;
mod dead_letter;
pub mod kafka;
mod memory;
mod metered;
#[cfg(feature = "testing")]
pub mod testing;

pub use dead_letter::{DeadLetter, DeadLetterPayload};
pub use kafka::{KafkaBusConfig, KafkaBusError, KafkaConsumer, KafkaProducer};
pub use memory::{memory_bus, MemoryConsumer, MemoryProducer};
pub use metered::Metered;

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    /// Validated samples.
    Samples(Vec<EnergySample>),
    /// Refused samples with their reasons (the dead-letter stream).
    DeadLetters(Vec<DeadLetter>),
}

/// Bus failures.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum BusError {
    /// No consumer is running (shut down or crashed).
    #[error("bus closed: no consumer is running")]
    Closed,
    /// The consumer could not make the message durable.
    #[error("consumer failed to persist the message: {0}")]
    NotPersisted(String),
    /// The broker did not acknowledge the message (unreachable, timed out, refused it).
    #[error("the broker did not acknowledge the message: {0}")]
    Broker(String),
}

/// A message handed to the bus ([`BusProducer::enqueue`]): resolves once the bus holds it
/// durably, with what [`BusProducer::publish`] would have returned.
pub type Persisting = Pin<Box<dyn Future<Output = Result<(), BusError>> + Send>>;

/// Sends messages; returns once the bus holds them durably.
#[async_trait]
pub trait BusProducer: Send + Sync {
    /// Publishes one message.
    async fn publish(&self, message: BusMessage) -> Result<(), BusError>;

    /// Hands `message` to the bus behind every message handed to this producer before, and
    /// returns what resolves once it is durable. A caller may hand on the next message
    /// before then: one agent stream can have several batches in flight, still in its order.
    ///
    /// By default the message is published first, so it is durable when this returns.
    async fn enqueue(&self, message: BusMessage) -> Result<Persisting, BusError> {
        let published = self.publish(message).await;
        Ok(Box::pin(std::future::ready(published)))
    }
}

/// Receives messages in order.
#[async_trait]
pub trait BusConsumer: Send {
    /// The next message, or `None` once every producer is gone.
    async fn next(&mut self) -> Option<Delivery>;

    /// Up to `max` messages: waits for the first one, then takes what arrives within `linger`
    /// (with a zero `linger`, only what is already there). Empty once the bus is closed.
    ///
    /// Lets a consumer write one store batch per bus batch; each delivery is still settled on
    /// its own.
    async fn next_batch(&mut self, max: usize, linger: Duration) -> Vec<Delivery> {
        let Some(first) = self.next().await else {
            return Vec::new();
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            // `timeout_at` polls `next` once before looking at the deadline, so a zero linger
            // still takes what is ready.
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(delivery)) => batch.push(delivery),
                Ok(None) | Err(_) => break,
            }
        }
        batch
    }

    /// Stops consuming after the caller settled everything in hand: flushes what the
    /// implementation still holds (offset commits) and leaves (the consumer group). Later
    /// calls to `next` return `None`. The default does nothing.
    async fn close(&mut self) {}
}

/// A received message; the consumer settles it after processing.
pub struct Delivery {
    /// The message.
    pub message: BusMessage,
    settle: Box<dyn FnOnce(Result<(), String>) + Send>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// A delivery settled by `settle`.
    pub fn new(
        message: BusMessage,
        settle: impl FnOnce(Result<(), String>) + Send + 'static,
    ) -> Self {
        Self {
            message,
            settle: Box::new(settle),
        }
    }

    /// Marks the message processed and durable (commit).
    pub fn commit(self) {
        (self.settle)(Ok(()));
    }

    /// Marks the message not processed; it must be delivered again.
    pub fn fail(self, reason: String) {
        (self.settle)(Err(reason));
    }
}
