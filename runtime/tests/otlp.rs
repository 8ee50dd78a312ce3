//! End to end: spans reach a real OTLP/gRPC receiver. Its own test binary because it installs
//! the process-global tracing subscriber.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use std::sync::{Arc, Mutex};
use wattprint_runtime::telemetry::{init_telemetry, LogFormat, TelemetryConfig};

/// Records every export request it receives.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.requests
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// `(service.name, span name)` for every span received.
fn received_spans(requests: &[ExportTraceServiceRequest]) -> Vec<(String, String)> {
    let mut spans = Vec::new();
    for request in requests {
        for resource_spans in &request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    spans.push((service.clone(), span.name.clone()));
                }
            }
        }
    }
    spans
}

#[test]
fn spans_are_exported_to_the_configured_otlp_endpoint() {
    // The receiver runs on a runtime of its own, like a separate collector process would.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("server runtime");
    let receiver = Receiver::default();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    server_rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let config = TelemetryConfig {
        default_filter: "info".to_owned(),
        format: LogFormat::Text,
        otlp_endpoint: Some(format!("http://{addr}")),
        service_name: "wattprint-otlp-test".to_owned(),
    };
    // Like a `#[tokio::main(flavor = "current_thread")]` service: init, work, and drop the guard
    // inside the app's async context. Dropping must neither panic nor deadlock the single thread.
    let app_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("app runtime");
    app_rt.block_on(async {
        let guard = init_telemetry(&config).expect("init telemetry");
        assert!(guard.is_exporting());
        {
            let span = tracing::info_span!("wattprint_test_span", answer = 42);
            let _entered = span.enter();
            tracing::info!("inside the test span");
        }
        // No waiting for the batch interval: dropping the guard must flush.
        drop(guard);
    });

    let spans = received_spans(&receiver.requests.lock().expect("lock"));
    assert!(
        spans.contains(&(
            "wattprint-otlp-test".to_owned(),
            "wattprint_test_span".to_owned()
        )),
        "receiver got {spans:?}"
    );
    // The exporter's own gRPC client spans must not be exported (they would feed back).
    assert!(
        spans.iter().all(|(_, name)| name == "wattprint_test_span"),
        "unexpected spans: {spans:?}"
    );

    // A second install in the same process is refused, not a panic.
    let again = init_telemetry(&TelemetryConfig::default());
    assert!(matches!(
        again,
        Err(wattprint_runtime::telemetry::TelemetryError::AlreadyInitialized(_))
    ));
}
