//! Gateway and enricher metrics (`docs/metrics.md`, "Gateway" and "Enricher"), recorded where
//! the events happen. Labels are closed sets: refusal kinds via
//! [`wattprint_core::sample::refusal_kind`], never a host or a tenant.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::LazyLock;
use tokio::sync::Notify;
use wattprint_core::intensity::IntensityKind;
use wattprint_runtime::metrics::{self, Counter, Gauge, Histogram, KeyValue, UpDownCounter};
use wattprint_store::EnrichedSample;

/// The gateway's instruments.
pub(crate) struct GatewayMetrics {
    pub streams: UpDownCounter<i64>,
    batches: Counter<u64>,
    pub batch_duration: Histogram<f64>,
    pub accepted: Counter<u64>,
    rejected: Counter<u64>,
    auth_refusals: Counter<u64>,
}

pub(crate) static GATEWAY: LazyLock<GatewayMetrics> = LazyLock::new(|| GatewayMetrics {
    streams: metrics::meter()
        .i64_up_down_counter("wattprint.gateway.streams")
        .with_description("Agent streams open.")
        .build(),
    batches: metrics::counter(
        "wattprint.gateway.batches",
        "Batches received: acked, refused whole, or failed (bus error).",
    ),
    batch_duration: metrics::seconds_histogram(
        "wattprint.gateway.batch_duration",
        "Receipt of a batch to its ack (includes the bus publish).",
    ),
    accepted: metrics::counter(
        "wattprint.gateway.samples_accepted",
        "Valid samples published to the samples topic.",
    ),
    rejected: metrics::counter(
        "wattprint.gateway.samples_rejected",
        "Samples refused and sent to the dead-letter topic.",
    ),
    auth_refusals: metrics::counter(
        "wattprint.gateway.auth_refusals",
        "Agent streams refused by the host registry.",
    ),
});

impl GatewayMetrics {
    /// One batch answered: `acked`, `refused` or `failed`.
    pub fn batch(&self, outcome: &'static str) {
        self.batches.add(1, &[KeyValue::new("outcome", outcome)]);
    }

    /// One sample refused for `reason` (the refusal's text).
    pub fn rejected(&self, reason: &str) {
        let kind = wattprint_core::sample::refusal_kind(reason);
        self.rejected.add(1, &[KeyValue::new("reason", kind)]);
    }

    /// One stream refused by the host registry with `message`.
    pub fn auth_refused(&self, message: &str) {
        let reason = if message.contains("unknown host") || message.starts_with("no ") {
            "unknown_host"
        } else if message.contains("sent no host token") {
            "missing_token"
        } else if message.contains("wrong host token") {
            "wrong_token"
        } else if message.contains("names host") {
            "host_mismatch"
        } else {
            "wrong_certificate"
        };
        self.auth_refusals
            .add(1, &[KeyValue::new("reason", reason)]);
    }
}

/// The enricher's instruments.
pub(crate) struct EnricherMetrics {
    records: Counter<u64>,
    pub batch_duration: Histogram<f64>,
    quarantined: Counter<u64>,
    last_commit: Gauge<f64>,
    energy: Counter<f64>,
    emissions: Counter<f64>,
    joins: Counter<u64>,
    last_bucket: Gauge<f64>,
    /// Start (Unix ms) of the newest bucket written by this process: the gauge never goes back
    /// for a late sample of an older bucket.
    newest_bucket_ms: AtomicI64,
    quarantine_records: Gauge<u64>,
}

/// Wakes the quarantine count ([`crate::quarantine::keep_counted`]) after a quarantine write.
pub(crate) static QUARANTINE_WRITTEN: Notify = Notify::const_new();

pub(crate) static ENRICHER: LazyLock<EnricherMetrics> = LazyLock::new(|| EnricherMetrics {
    records: metrics::counter(
        "wattprint.enricher.records",
        "Bus records consumed (records/s: rate()).",
    ),
    batch_duration: metrics::seconds_histogram(
        "wattprint.enricher.batch_duration",
        "One bus batch: decode, enrich, store write, commit.",
    ),
    quarantined: metrics::counter(
        "wattprint.quarantine.added",
        "Samples this process filed in the quarantine.",
    ),
    last_commit: metrics::meter()
        .f64_gauge("wattprint.enricher.last_commit_timestamp")
        .with_unit("s")
        .with_description("Unix time of the last offset commit.")
        .build(),
    energy: metrics::meter()
        .f64_counter("wattprint.enricher.energy")
        .with_unit("J")
        .with_description("IT energy of the intervals written, by region.")
        .build(),
    emissions: metrics::meter()
        .f64_counter("wattprint.enricher.emissions")
        .with_unit("g")
        .with_description("Emissions (gCO2e) of the intervals written, by region and signal.")
        .build(),
    joins: metrics::counter(
        "wattprint.intensity.joins",
        "Intervals joined, by region and the kind of intensity they got.",
    ),
    last_bucket: metrics::meter()
        .f64_gauge("wattprint.rollup.last_bucket_timestamp")
        .with_unit("s")
        .with_description("Start of the newest 5-minute interval bucket written.")
        .build(),
    newest_bucket_ms: AtomicI64::new(i64::MIN),
    quarantine_records: metrics::meter()
        .u64_gauge("wattprint.quarantine.records")
        .with_description("Samples held in the quarantine, by refusal kind.")
        .build(),
});

/// Energy (mJ) and emissions (g) of one region's intervals in a batch.
#[derive(Default)]
struct RegionTotals {
    energy_mj: u64,
    marginal_g: f64,
    average_g: f64,
    joins: BTreeMap<&'static str, u64>,
}

impl EnricherMetrics {
    /// `n` records consumed from `topic` (`samples`, `dead_letter`).
    pub fn records(&self, topic: &'static str, n: usize) {
        self.records.add(n as u64, &[KeyValue::new("topic", topic)]);
    }

    /// A batch's offsets were committed now.
    pub fn committed(&self) {
        self.last_commit.record(metrics::unix_now(), &[]);
    }

    /// One sample filed in the quarantine for `reason` (the refusal's text).
    pub fn quarantined(&self, reason: &str) {
        let kind = wattprint_core::sample::refusal_kind(reason);
        self.quarantined.add(1, &[KeyValue::new("reason", kind)]);
    }

    /// `samples` were written to the store (those it applied): their IT energy and emissions
    /// by region, their intervals' joins by intensity kind, and the newest bucket.
    pub fn written<'a>(&self, samples: impl Iterator<Item = &'a EnrichedSample>) {
        let mut regions: BTreeMap<&str, RegionTotals> = BTreeMap::new();
        let mut newest = i64::MIN;
        for s in samples {
            let totals = regions.entry(s.region.as_str()).or_default();
            for share in &s.shares {
                newest = newest.max(share.bucket.start().0);
                totals.energy_mj += share.energy.0;
                let kind = match &share.intensity {
                    None => "missing",
                    Some(i) => {
                        let grams = i.value.emissions(share.energy).0;
                        match i.kind {
                            IntensityKind::FallbackAverage => totals.average_g += grams,
                            IntensityKind::Actual | IntensityKind::Forecast => {
                                totals.marginal_g += grams;
                            }
                        }
                        i.kind.as_str()
                    }
                };
                *totals.joins.entry(kind).or_default() += 1;
            }
        }
        for (region, totals) in regions {
            let r = KeyValue::new("region", region.to_owned());
            self.energy
                .add(totals.energy_mj as f64 / 1000.0, std::slice::from_ref(&r));
            for (signal, grams) in [
                ("marginal", totals.marginal_g),
                ("average", totals.average_g),
            ] {
                if grams > 0.0 {
                    self.emissions
                        .add(grams, &[r.clone(), KeyValue::new("signal", signal)]);
                }
            }
            for (kind, n) in totals.joins {
                self.joins.add(n, &[r.clone(), KeyValue::new("kind", kind)]);
            }
        }
        if newest > i64::MIN {
            let newest = self
                .newest_bucket_ms
                .fetch_max(newest, Ordering::Relaxed)
                .max(newest);
            self.last_bucket.record(newest as f64 / 1000.0, &[]);
        }
    }

    /// The quarantine holds `counts` records by refusal kind (a kind absent holds none).
    pub fn quarantine_held(&self, counts: &BTreeMap<String, u64>) {
        let kinds = wattprint_core::sample::REFUSAL_KINDS
            .iter()
            .map(|(_, kind)| *kind)
            .chain(["other"]);
        for kind in kinds {
            let n = counts.get(kind).copied().unwrap_or(0);
            self.quarantine_records
                .record(n, &[KeyValue::new("reason", kind)]);
        }
    }
}

/// The intensity poller's instruments.
pub(crate) struct IntensityMetrics {
    duration: Histogram<f64>,
    errors: Counter<u64>,
    last_success: Gauge<f64>,
}

pub(crate) static INTENSITY: LazyLock<IntensityMetrics> = LazyLock::new(|| IntensityMetrics {
    duration: metrics::seconds_histogram(
        "wattprint.intensity.poll_duration",
        "One poll of one provider.",
    ),
    errors: metrics::counter("wattprint.intensity.poll_errors", "Polls that failed."),
    last_success: metrics::meter()
        .f64_gauge("wattprint.intensity.last_poll_success_timestamp")
        .with_unit("s")
        .with_description("Unix time of the last successful poll.")
        .build(),
});

impl IntensityMetrics {
    /// One fetch from `provider` (`watttime`, `electricitymaps`, `file`) that started at
    /// `started`, failed with `error` or not.
    pub fn polled(
        &self,
        provider: &str,
        started: std::time::Instant,
        error: Option<&wattprint_intensity::ProviderError>,
    ) {
        use wattprint_intensity::ProviderError as E;
        let p = KeyValue::new("provider", provider.to_owned());
        self.duration
            .record(started.elapsed().as_secs_f64(), std::slice::from_ref(&p));
        let kind = match error {
            None => {
                self.last_success.record(metrics::unix_now(), &[p]);
                return;
            }
            Some(E::Auth { .. }) => "auth",
            Some(E::RateLimited { .. }) => "rate_limited",
            Some(E::Malformed { .. }) => "malformed",
            Some(E::Unavailable { .. }) => "unavailable",
            Some(_) => "other",
        };
        self.errors.add(1, &[p, KeyValue::new("kind", kind)]);
    }
}
