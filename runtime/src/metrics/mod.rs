//! Metrics: one OpenTelemetry metrics SDK provider per process, read two ways.
//!
//! Every crate instruments through [`meter`] (instruments are made lazily, after [`init`]); a
//! pull reader renders the current values as Prometheus text ([`render`], served at `/metrics`
//! by [`http`]) and, when an OTLP endpoint is configured, a periodic reader pushes the same
//! instruments to the collector. Names follow `docs/metrics.md`: dotted OpenTelemetry names and
//! UCUM units, turned into `wattprint_*_seconds`/`_total` by the Prometheus encoder.

pub mod http;
pub mod liveness;
pub mod parse;
mod prometheus;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::Resource;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

pub use http::{router, routes, serve, Readiness};
pub use liveness::Heartbeat;
/// The instrument types, so instrumented crates need no OpenTelemetry dependency of their own.
pub use opentelemetry::metrics::{Counter, Gauge, Histogram, ObservableGauge, UpDownCounter};
pub use opentelemetry::KeyValue;

/// Default histogram buckets (seconds), as `docs/metrics.md` lists them.
pub const SECONDS_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why metrics could not be set up.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// The OTLP metric exporter could not be built.
    #[error("cannot build the OTLP metric exporter for {endpoint:?}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The exporter's runtime could not start.
    #[error("cannot start the OTLP metric exporter runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The pull side: a [`ManualReader`] shared between the provider and [`render`].
#[derive(Debug, Clone)]
struct PullReader(Arc<ManualReader>);

impl MetricReader for PullReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(t)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

#[derive(Debug)]
struct Registry {
    provider: SdkMeterProvider,
    reader: PullReader,
    /// Keeps the OTLP exporter's tonic channel alive.
    _runtime: Option<tokio::runtime::Runtime>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Installs the process's meter provider: `process` names it (`build_info`), `otlp_endpoint`
/// (an `http://` collector) adds OTLP push every `OTEL_METRIC_EXPORT_INTERVAL` ms (60 s by
/// default). Call once, first thing; a second call (or one after [`meter`]) changes nothing.
pub fn init(process: &str, otlp_endpoint: Option<&str>) -> Result<(), MetricsError> {
    if REGISTRY.get().is_some() {
        return Ok(());
    }
    let registry = build(process, otlp_endpoint)?;
    let _ = REGISTRY.set(registry);
    record_process_info(process);
    Ok(())
}

fn build(process: &str, otlp_endpoint: Option<&str>) -> Result<Registry, MetricsError> {
    let reader = PullReader(Arc::new(ManualReader::builder().build()));
    let mut builder = SdkMeterProvider::builder()
        .with_reader(reader.clone())
        .with_resource(
            Resource::builder()
                .with_service_name(format!("wattprint-{process}"))
                .build(),
        );
    let mut runtime = None;
    if let Some(endpoint) = otlp_endpoint {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wattprint-otlp-metrics")
            .enable_all()
            .build()
            .map_err(MetricsError::Runtime)?;
        let exporter = {
            let _entered = rt.enter();
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|source| MetricsError::Exporter {
                    endpoint: endpoint.to_owned(),
                    source,
                })?
        };
        builder = builder.with_reader(PeriodicReader::builder(exporter).build());
        runtime = Some(rt);
    }
    Ok(Registry {
        provider: builder.build(),
        reader,
        _runtime: runtime,
    })
}

fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| build("wattprint", None).expect("no exporter, cannot fail"))
}

/// A histogram in seconds with the catalogue's default buckets.
pub fn seconds_histogram(name: &'static str, description: &'static str) -> Histogram<f64> {
    meter()
        .f64_histogram(name)
        .with_unit("s")
        .with_description(description)
        .with_boundaries(SECONDS_BUCKETS.to_vec())
        .build()
}

/// A `u64` counter without a unit.
pub fn counter(name: &'static str, description: &'static str) -> Counter<u64> {
    meter()
        .u64_counter(name)
        .with_description(description)
        .build()
}

/// The meter every Wattprint instrument is made from.
pub fn meter() -> Meter {
    registry().provider.meter("wattprint")
}

/// Pushes what is buffered to the OTLP collector now (no-op without one).
pub fn flush() {
    if let Err(error) = registry().provider.force_flush() {
        tracing::warn!(%error, "metrics flush failed");
    }
}

/// The current values of every instrument as Prometheus text (format 0.0.4).
pub fn render() -> String {
    let mut rm = ResourceMetrics::default();
    if let Err(error) = registry().reader.collect(&mut rm) {
        tracing::warn!(%error, "metrics collection failed");
    }
    prometheus::encode(&rm)
}

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn record_process_info(process: &str) {
    let m = meter();
    m.u64_gauge("wattprint.build_info")
        .with_description("Always 1; the running build.")
        .build()
        .record(
            1,
            &[
                KeyValue::new("version", env!("CARGO_PKG_VERSION")),
                KeyValue::new("process", process.to_owned()),
            ],
        );
    m.f64_gauge("wattprint.process.start_time")
        .with_unit("s")
        .with_description("Unix time the process started.")
        .build()
        .record(unix_now(), &[]);
}

/// Parses a `*.metrics_listen` value: unset gives `default`, an empty string turns the
/// listener off (`None`), anything else must be `host:port`.
pub fn parse_listen(
    key: &str,
    value: Option<&str>,
    default: SocketAddr,
) -> Result<Option<SocketAddr>, String> {
    match value.map(str::trim) {
        None => Ok(Some(default)),
        Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|e| format!("{key} = {v:?}: not an address (host:port): {e}")),
    }
}
