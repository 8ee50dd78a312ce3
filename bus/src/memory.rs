//! The in-process bus of the embedded deployment: a bounded channel whose publish completes when
//! the consumer settles the message, so an ack means the enricher committed it to the store.

use crate::{BusConsumer, BusError, BusMessage, BusProducer, Delivery, Persisting};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

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
        self.enqueue(message).await?.await
    }

    /// Queued in the channel (in order); durable once the consumer settles it.
    async fn enqueue(&self, message: BusMessage) -> Result<Persisting, BusError> {
        let (done, settled) = oneshot::channel();
        self.tx
            .send((message, done))
            .await
            .map_err(|_| BusError::Closed)?;
        Ok(Box::pin(async move {
            match settled.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(reason)) => Err(BusError::NotPersisted(reason)),
                // The consumer dropped the delivery without settling it (shutdown mid-batch).
                Err(_) => Err(BusError::Closed),
            }
        }))
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
    use std::time::Duration;

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
