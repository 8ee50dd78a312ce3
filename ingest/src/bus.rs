//! The bus between gateways and enrichers: a trait with an in-process implementation here
//! (Kafka implements the same trait in the distributed deployment).
//!
//! A publish completes only when the message is durably held: for the in-process bus that is
//! when the enricher has committed it to the store, so the gateway's ack to the agent means the
//! data is on disk.

use async_trait::async_trait;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use wattprint_core::sample::EnergySample;
use wattprint_store::QuarantineRecord;

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum BusMessage {
    /// Validated samples.
    Samples(Vec<EnergySample>),
    /// Refused samples with their reasons (the dead-letter stream).
    DeadLetters(Vec<QuarantineRecord>),
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

/// Sends messages; returns once the bus holds them durably.
#[async_trait]
pub trait BusProducer: Send + Sync {
    /// Publishes one message.
    async fn publish(&self, message: BusMessage) -> Result<(), BusError>;
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

type Envelope = (BusMessage, oneshot::Sender<Result<(), String>>);

/// In-process bus producer.
#[derive(Clone, Debug)]
pub struct MemoryProducer {
    tx: mpsc::Sender<Envelope>,
}

/// In-process bus consumer.
#[derive(Debug)]
pub struct MemoryConsumer {
    rx: mpsc::Receiver<Envelope>,
}

/// An in-process bus holding at most `capacity` messages in flight (backpressure beyond).
pub fn memory_bus(capacity: usize) -> (MemoryProducer, MemoryConsumer) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (MemoryProducer { tx }, MemoryConsumer { rx })
}

#[async_trait]
impl BusProducer for MemoryProducer {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        let (done, settled) = oneshot::channel();
        self.tx
            .send((message, done))
            .await
            .map_err(|_| BusError::Closed)?;
        match settled.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(BusError::NotPersisted(reason)),
            // The consumer dropped the delivery without settling it (shutdown mid-batch).
            Err(_) => Err(BusError::Closed),
        }
    }
}

#[async_trait]
impl BusConsumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let (message, done) = self.rx.recv().await?;
        Some(Delivery::new(message, move |r| {
            let _ = done.send(r);
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn publish_returns_only_after_commit_and_reports_failures() {
        let (p, mut c) = memory_bus(4);
        let publisher = tokio::spawn(async move {
            let first = p.publish(BusMessage::Samples(vec![])).await;
            let second = p.publish(BusMessage::DeadLetters(vec![])).await;
            (first, second)
        });
        let d = c.next().await.unwrap();
        assert_eq!(d.message, BusMessage::Samples(vec![]));
        d.commit();
        c.next().await.unwrap().fail("disk full".into());
        let (first, second) = publisher.await.unwrap();
        assert_eq!(first, Ok(()));
        assert_eq!(second, Err(BusError::NotPersisted("disk full".into())));
    }

    #[tokio::test]
    async fn next_batch_takes_what_is_ready_up_to_max_and_is_empty_when_closed() {
        let (p, mut c) = memory_bus(8);
        let publishers: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.publish(BusMessage::Samples(vec![])).await })
            })
            .collect();
        drop(p);
        let first = c.next_batch(2, Duration::from_secs(5)).await;
        assert_eq!(first.len(), 2);
        let second = c.next_batch(2, Duration::ZERO).await;
        assert_eq!(second.len(), 1);
        for d in first.into_iter().chain(second) {
            d.commit();
        }
        for p in publishers {
            assert_eq!(p.await.unwrap(), Ok(()));
        }
        assert!(c.next_batch(2, Duration::ZERO).await.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_delivery_or_consumer_is_an_error_not_an_ack() {
        let (p, mut c) = memory_bus(1);
        let publisher = tokio::spawn(async move { p.publish(BusMessage::Samples(vec![])).await });
        drop(c.next().await.unwrap());
        assert_eq!(publisher.await.unwrap(), Err(BusError::Closed));
        let (p, c) = memory_bus(1);
        drop(c);
        assert_eq!(
            p.publish(BusMessage::Samples(vec![])).await,
            Err(BusError::Closed)
        );
    }
}
