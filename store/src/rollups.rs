//! Keeping a store's hourly rollups fresh: the loop a service runs beside its enricher.
//!
//! Rollups only make month-scale reads fast; reads are exact whether or not the loop runs
//! (see [`Store::refresh_rollups`]), so a failed round is logged and retried the next one,
//! never fatal. Stores without rollups make each round a no-op.

use crate::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::UnixMillis;

/// How far back each round refreshes: the hours a late or redelivered sample still touches.
pub const REFRESH_SPAN_MS: i64 = 6 * 3_600_000;

/// Every `every`, refreshes the rollups of the closed hours of the last [`REFRESH_SPAN_MS`],
/// until `shutdown` completes. The first round runs one `every` after the start.
pub async fn keep_fresh(
    store: Arc<dyn Store>,
    every: Duration,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(every) => {}
        }
        let hour = crate::sqlite::now_ms().div_euclid(3_600_000) * 3_600_000;
        let (from, to) = (UnixMillis(hour - REFRESH_SPAN_MS), UnixMillis(hour));
        match store.refresh_rollups(from, to).await {
            Ok(r) => tracing::info!(recomputed = r.recomputed, "rollups refreshed"),
            Err(e) => tracing::warn!(error = %e, "refreshing rollups failed; retrying next round"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    #[tokio::test]
    async fn rounds_run_until_shutdown() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let stop = tokio::time::sleep(Duration::from_millis(30));
        tokio::time::timeout(
            Duration::from_secs(5),
            keep_fresh(store, Duration::from_millis(5), stop),
        )
        .await
        .expect("keep_fresh returns once shutdown completes");
    }
}
