//! Tracing setup, with OpenTelemetry (OTLP/gRPC) span export when an endpoint is configured.
//!
//! [`init_telemetry`] installs the global subscriber: an [`EnvFilter`] (`RUST_LOG` wins over the
//! configured default), a `fmt` layer on stderr and, only when
//! [`TelemetryConfig::otlp_endpoint`] is set, a `tracing-opentelemetry` layer whose spans go to
//! an OTLP collector through a batch exporter. Keep the returned [`TelemetryGuard`] alive for the
//! life of the process: dropping it flushes the spans still queued and shuts the exporter down.
//!
//! The exporter runs its gRPC connection on a small runtime of its own, so it works whatever
//! runtime (or none) the caller uses, and dropping the guard inside an async context neither
//! panics nor waits on the caller's runtime.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use thiserror::Error;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, EnvFilter, Layer as _};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// What [`init_telemetry`] installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Filter used when `RUST_LOG` is unset, e.g. `"info,h2=warn"`. Applies to every output.
    pub default_filter: String,
    /// Format of the stderr log lines.
    pub format: LogFormat,
    /// OTLP/gRPC collector to export spans to, e.g. `http://127.0.0.1:4317`. `None` disables
    /// export. Only `http://` is supported (no TLS support is compiled in).
    pub otlp_endpoint: Option<String>,
    /// Reported as the `service.name` resource attribute of exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            default_filter: "info".to_owned(),
            format: LogFormat::Text,
            otlp_endpoint: None,
            service_name: "wattprint".to_owned(),
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, Error)]
pub enum TelemetryError {
    /// The OTLP endpoint is not an absolute `http://host:port` URL.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OTLP exporter rejected its configuration.
    #[error("cannot build OTLP exporter for {endpoint:?}: {source}")]
    Exporter {
        /// The endpoint as configured.
        endpoint: String,
        /// Cause.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The exporter's background runtime could not be started.
    #[error("cannot start the OTLP exporter runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// A global tracing subscriber is already installed in this process.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInitialized(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps span export running; dropping it flushes queued spans and shuts the exporter down.
///
/// Without an OTLP endpoint it holds nothing and dropping it does nothing.
#[must_use = "dropping the guard shuts down span export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    otlp: Option<OtlpPipeline>,
}

#[derive(Debug)]
struct OtlpPipeline {
    provider: SdkTracerProvider,
    /// Drives the exporter's gRPC channel. Dropped after the provider is shut down.
    runtime: tokio::runtime::Runtime,
}

impl TelemetryGuard {
    /// Whether spans are being exported over OTLP.
    pub fn is_exporting(&self) -> bool {
        self.otlp.is_some()
    }

    /// Flushes queued spans and shuts the exporter down, reporting a failed flush (which drop
    /// only logs). Blocks until the export finishes or times out.
    pub fn shutdown(mut self) -> Result<(), opentelemetry_sdk::error::OTelSdkError> {
        match self.otlp.take() {
            Some(otlp) => otlp.shutdown(),
            None => Ok(()),
        }
    }
}

impl OtlpPipeline {
    fn shutdown(self) -> Result<(), opentelemetry_sdk::error::OTelSdkError> {
        // The batch processor exports on its own thread; the gRPC channel it uses is driven by
        // `runtime`, which is still running here, so this cannot deadlock on the caller's runtime.
        let result = self.provider.shutdown();
        // `shutdown_background` never blocks, so it is allowed inside an async context.
        self.runtime.shutdown_background();
        result
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(otlp) = self.otlp.take() {
            if let Err(error) = otlp.shutdown() {
                tracing::warn!(%error, "OTLP span exporter did not shut down cleanly");
            }
        }
    }
}

/// Installs the global tracing subscriber described by `config` and, when
/// [`TelemetryConfig::otlp_endpoint`] is set, OTLP span export. Keep the returned guard alive
/// until exit.
///
/// The endpoint is checked and the exporter built before anything global is touched, so an
/// error leaves the process as it was. Fails with [`TelemetryError::AlreadyInitialized`] when a
/// global subscriber is already installed.
pub fn init_telemetry(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let otlp = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| build_otlp(endpoint, &config.service_name))
        .transpose()?;

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.default_filter));
    let (text, json) = match config.format {
        LogFormat::Text => (Some(fmt::layer().with_writer(std::io::stderr)), None),
        LogFormat::Json => (None, Some(fmt::layer().json().with_writer(std::io::stderr))),
    };
    let otel = otlp.as_ref().map(|otlp| {
        tracing_opentelemetry::layer()
            .with_tracer(otlp.provider.tracer("wattprint"))
            // Spans of the export path itself (gRPC/HTTP2 client, the SDK) would otherwise be
            // exported too, each export producing more spans to export.
            .with_filter(filter_fn(|meta| !is_export_path(meta.target())))
    });

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    if let Err(error) = installed {
        if let Some(otlp) = otlp {
            // Nothing was exported through it; just stop its threads.
            let _ = otlp.shutdown();
        }
        return Err(TelemetryError::AlreadyInitialized(error));
    }
    Ok(TelemetryGuard { otlp })
}

/// Installs the global tracing subscriber without span export. `RUST_LOG` wins over
/// `default_filter`. Safe to call more than once (later calls are no-ops), so tests can call it
/// freely.
pub fn init(default_filter: &str, format: LogFormat) {
    let config = TelemetryConfig {
        default_filter: default_filter.to_owned(),
        format,
        ..TelemetryConfig::default()
    };
    // Without an endpoint the only possible error is "already installed", which is the
    // documented no-op; the guard holds nothing.
    let _ = init_telemetry(&config);
}

/// Whether `target` belongs to a crate on the span export path.
fn is_export_path(target: &str) -> bool {
    const CRATES: [&str; 8] = [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "opentelemetry",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
    ];
    let krate = target.split("::").next().unwrap_or(target);
    CRATES.contains(&krate)
}

/// Checks that `endpoint` is an absolute `http://host[:port]` URL.
fn validate_endpoint(endpoint: &str) -> Result<(), TelemetryError> {
    let invalid = |reason: String| TelemetryError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: http::Uri = endpoint.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "https is not supported (no TLS support is built in); use http://".to_owned(),
            ))
        }
        Some(other) => {
            return Err(invalid(format!(
                "unsupported scheme {other:?}, expected http"
            )))
        }
        None => {
            return Err(invalid(
                "missing scheme, expected http://host:port".to_owned(),
            ))
        }
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(invalid("missing host".to_owned())),
    }
}

fn build_otlp(endpoint: &str, service_name: &str) -> Result<OtlpPipeline, TelemetryError> {
    validate_endpoint(endpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("wattprint-otlp")
        .enable_all()
        .build()
        .map_err(TelemetryError::Runtime)?;
    // tonic's lazily connected channel spawns its worker on the current runtime: ours.
    let exporter = {
        let _entered = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|source| TelemetryError::Exporter {
                endpoint: endpoint.to_owned(),
                source,
            })?
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    Ok(OtlpPipeline { provider, runtime })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(endpoint.to_owned()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn malformed_endpoint_is_a_clear_error() {
        for endpoint in [
            "not a url",
            "127.0.0.1:4317",
            "ftp://collector:4317",
            "https://collector:4317",
            "http://",
            "",
        ] {
            let error = init_telemetry(&config(endpoint)).expect_err(endpoint);
            assert!(
                matches!(&error, TelemetryError::InvalidEndpoint { endpoint: e, .. } if e == endpoint),
                "{endpoint:?}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&format!("{endpoint:?}")),
                "message does not name the endpoint: {message}"
            );
        }
    }

    #[test]
    fn valid_endpoint_passes_validation() {
        validate_endpoint("http://127.0.0.1:4317").expect("valid");
        validate_endpoint("http://collector.internal:4317/").expect("valid");
    }

    #[test]
    fn export_path_targets_are_recognised() {
        for target in [
            "h2",
            "h2::codec",
            "hyper_util::client",
            "tonic::transport",
            "opentelemetry_sdk",
        ] {
            assert!(is_export_path(target), "{target}");
        }
        // tower-http's request spans belong to the service, not to the exporter.
        for target in [
            "wattprint_runtime",
            "tower_http::trace::make_span",
            "towers",
        ] {
            assert!(!is_export_path(target), "{target}");
        }
    }
}
