//! [`Metered`]: a [`BusProducer`] that records the bus publish metrics of `docs/metrics.md`
//! (latency and failures by topic, publishes in flight) around any producer, in-process or
//! Kafka, and delegates.

use crate::{BusError, BusMessage, BusProducer, Persisting};
use async_trait::async_trait;
use std::sync::LazyLock;
use std::time::Instant;
use wattprint_runtime::metrics::{self, Counter, Gauge, Histogram, KeyValue, UpDownCounter};

struct BusMetrics {
    duration: Histogram<f64>,
    in_flight: UpDownCounter<i64>,
    in_flight_limit: Gauge<u64>,
    errors: Counter<u64>,
}

static METRICS: LazyLock<BusMetrics> = LazyLock::new(|| BusMetrics {
    duration: metrics::seconds_histogram(
        "wattprint.bus.publish_duration",
        "Produce call to broker ack (acks=all).",
    ),
    in_flight: metrics::meter()
        .i64_up_down_counter("wattprint.bus.publish_in_flight")
        .with_description("Publishes waiting for the broker.")
        .build(),
    in_flight_limit: metrics::meter()
        .u64_gauge("wattprint.bus.publish_in_flight_limit")
        .with_description("bus.max_in_flight; streams wait at this level.")
        .build(),
    errors: metrics::counter(
        "wattprint.bus.publish_errors",
        "Publishes that failed after the producer's retries.",
    ),
});

/// A producer whose every publish is timed and counted. Construct with [`Metered::new`].
pub struct Metered<P> {
    inner: P,
}

impl<P: BusProducer> Metered<P> {
    /// Wraps `inner`; `in_flight_limit` is `bus.max_in_flight` (Kafka), `None` in-process.
    pub fn new(inner: P, in_flight_limit: Option<usize>) -> Self {
        if let Some(limit) = in_flight_limit {
            METRICS.in_flight_limit.record(limit as u64, &[]);
        }
        Self { inner }
    }
}

#[async_trait]
impl<P: BusProducer> BusProducer for Metered<P> {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        self.enqueue(message).await?.await
    }

    /// Timed from the hand-over to durability, whichever way the inner producer takes.
    async fn enqueue(&self, message: BusMessage) -> Result<Persisting, BusError> {
        let topic = match &message {
            BusMessage::Samples(_) => "samples",
            BusMessage::DeadLetters(_) => "dead_letter",
        };
        let m = &*METRICS;
        let in_flight = InFlight::start();
        let start = Instant::now();
        let record = move |result: &Result<(), BusError>| {
            let labels = [KeyValue::new("topic", topic)];
            m.duration.record(start.elapsed().as_secs_f64(), &labels);
            if result.is_err() {
                m.errors.add(1, &labels);
            }
        };
        match self.inner.enqueue(message).await {
            Ok(persisting) => Ok(Box::pin(async move {
                let result = persisting.await;
                record(&result);
                drop(in_flight);
                result
            })),
            Err(e) => {
                record(&Err(e.clone()));
                Err(e)
            }
        }
    }
}

/// One publish counted in flight until it is settled or given up (dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        METRICS.in_flight.add(1, &[]);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.add(-1, &[]);
    }
}
