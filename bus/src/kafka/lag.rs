//! The enricher's partitions as metrics (`docs/metrics.md`, "Enricher"):
//! `wattprint_enricher_assigned_partitions{topic}` from the group's rebalances and
//! `wattprint_enricher_lag_records{topic, partition}` — high watermark minus committed offset —
//! from librdkafka's statistics (`statistics.interval.ms`, [`STATS_INTERVAL`]). Both are
//! observed at collection, so a partition revoked from this member leaves the series.
//! `topic` is `samples` or `dead_letter`, whatever the configured topic names.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;
use wattprint_runtime::metrics::{self, KeyValue, ObservableGauge};

/// How often librdkafka reports the watermarks the lag is computed from.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// Assigned partitions by (topic label, partition), with their lag once known.
static PARTITIONS: Mutex<BTreeMap<(&'static str, i32), Option<i64>>> = Mutex::new(BTreeMap::new());

fn partitions() -> std::sync::MutexGuard<'static, BTreeMap<(&'static str, i32), Option<i64>>> {
    PARTITIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

static GAUGES: LazyLock<(ObservableGauge<u64>, ObservableGauge<i64>)> = LazyLock::new(|| {
    let meter = metrics::meter();
    let assigned = meter
        .u64_observable_gauge("wattprint.enricher.assigned_partitions")
        .with_description("Partitions this member holds.")
        .with_callback(|observer| {
            let mut by_topic: BTreeMap<&'static str, u64> =
                [("samples", 0), ("dead_letter", 0)].into_iter().collect();
            for (topic, _) in partitions().keys() {
                *by_topic.entry(topic).or_default() += 1;
            }
            for (topic, n) in by_topic {
                observer.observe(n, &[KeyValue::new("topic", topic)]);
            }
        })
        .build();
    let lag = meter
        .i64_observable_gauge("wattprint.enricher.lag_records")
        .with_description("High watermark minus committed offset, per assigned partition.")
        .with_callback(|observer| {
            for ((topic, partition), lag) in partitions().iter() {
                if let Some(lag) = lag {
                    observer.observe(
                        *lag,
                        &[
                            KeyValue::new("topic", *topic),
                            KeyValue::new("partition", i64::from(*partition)),
                        ],
                    );
                }
            }
        })
        .build();
    (assigned, lag)
});

/// Registers the gauges (once per process).
pub(crate) fn register() {
    LazyLock::force(&GAUGES);
}

/// Partitions assigned to this member.
pub(crate) fn assigned(tps: impl IntoIterator<Item = (&'static str, i32)>) {
    let mut p = partitions();
    for tp in tps {
        p.entry(tp).or_insert(None);
    }
}

/// Partitions revoked from this member (or the consumer closed).
pub(crate) fn revoked(tps: impl IntoIterator<Item = (&'static str, i32)>) {
    let mut p = partitions();
    for tp in tps {
        p.remove(&tp);
    }
}

/// Records a partition's lag from librdkafka's statistics, if it is assigned here: the high
/// watermark minus the committed offset, or minus the low watermark while nothing was
/// committed (everything retained is still to read).
pub(crate) fn observed(tp: (&'static str, i32), hi: i64, lo: i64, committed: i64) {
    if hi < 0 {
        return;
    }
    let behind = if committed >= 0 {
        hi - committed
    } else {
        hi - lo.max(0)
    };
    if let Some(slot) = partitions().get_mut(&tp) {
        *slot = Some(behind.max(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_kept_for_assigned_partitions_only() {
        assigned([("samples", 90), ("samples", 91)]);
        observed(("samples", 90), 120, 0, 100);
        observed(("samples", 91), 7, 2, -1);
        observed(("samples", 92), 50, 0, 10);
        assert_eq!(partitions().get(&("samples", 90)), Some(&Some(20)));
        assert_eq!(partitions().get(&("samples", 91)), Some(&Some(5)));
        assert_eq!(
            partitions().get(&("samples", 92)),
            None,
            "not assigned here"
        );
        revoked([("samples", 90), ("samples", 91)]);
        assert!(partitions().get(&("samples", 90)).is_none());
    }
}
