//! Store write metrics (`docs/metrics.md`, "Store"): recorded by [`crate::Traced`], which sees
//! every operation whichever backend runs underneath.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Instant;
use wattprint_runtime::metrics::{self, Counter, Histogram, KeyValue};

struct StoreMetrics {
    duration: Histogram<f64>,
    rows: Counter<u64>,
    errors: Counter<u64>,
}

static METRICS: LazyLock<StoreMetrics> = LazyLock::new(|| StoreMetrics {
    duration: metrics::seconds_histogram(
        "wattprint.store.write_duration",
        "One store write (a batch of rows).",
    ),
    rows: metrics::counter(
        "wattprint.store.rows_written",
        "Rows written (a redelivered row counts again; storage dedups).",
    ),
    errors: metrics::counter("wattprint.store.write_errors", "Store writes that failed."),
});

/// Times one write of `rows` rows to `table` (`samples`, `intervals`, `quarantine`,
/// `intensity_ledger`, `inventory`), counting the rows when it succeeds.
pub(crate) async fn timed_write<T, E>(
    table: &'static str,
    rows: usize,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let start = Instant::now();
    let result = write.await;
    let m = &*METRICS;
    let labels = [KeyValue::new("table", table)];
    m.duration.record(start.elapsed().as_secs_f64(), &labels);
    match &result {
        Ok(_) => m.rows.add(rows as u64, &labels),
        Err(_) => m.errors.add(1, &labels),
    }
    result
}
