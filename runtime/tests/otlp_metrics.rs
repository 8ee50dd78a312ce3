//! End to end: metrics reach a local OTLP/gRPC `MetricsService` stub, and the same instruments
//! render as Prometheus text. Its own test binary because the meter provider is process-global.

use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use std::sync::{Arc, Mutex};
use wattprint_runtime::metrics;

#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.requests
            .lock()
            .expect("lock")
            .push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The latest value of the integer sum `name` with attribute `reason=<reason>`.
fn counter_value(
    requests: &[ExportMetricsServiceRequest],
    name: &str,
    reason: &str,
) -> Option<i64> {
    let mut found = None;
    for rm in requests.iter().flat_map(|r| &r.resource_metrics) {
        for metric in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let Some(Data::Sum(sum)) = &metric.data else {
                continue;
            };
            if metric.name != name || !sum.is_monotonic {
                continue;
            }
            for point in &sum.data_points {
                let matches = point.attributes.iter().any(|kv| {
                    kv.key == "reason"
                        && format!("{:?}", kv.value).contains(&format!("\"{reason}\""))
                });
                if let (true, Some(Value::AsInt(v))) = (matches, point.value) {
                    found = Some(v);
                }
            }
        }
    }
    found
}

#[test]
fn counters_reach_an_otlp_metrics_collector_and_prometheus_text() {
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
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    metrics::init("test", Some(&format!("http://{addr}"))).expect("init metrics");
    let counter = metrics::meter()
        .u64_counter("wattprint.test.rejected")
        .with_description("test counter")
        .build();
    counter.add(3, &[KeyValue::new("reason", "future")]);
    counter.add(4, &[KeyValue::new("reason", "future")]);
    counter.add(1, &[KeyValue::new("reason", "gone")]);
    let hist = metrics::meter()
        .f64_histogram("wattprint.test.duration")
        .with_unit("s")
        .with_boundaries(metrics::SECONDS_BUCKETS.to_vec())
        .build();
    hist.record(0.02, &[]);

    metrics::flush();
    let requests = receiver.requests.lock().expect("lock").clone();
    assert_eq!(
        counter_value(&requests, "wattprint.test.rejected", "future"),
        Some(7),
        "OTLP export: {requests:?}"
    );
    assert_eq!(
        counter_value(&requests, "wattprint.test.rejected", "gone"),
        Some(1)
    );

    let text = metrics::render();
    assert!(
        text.contains("wattprint_test_rejected_total{reason=\"future\"} 7\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE wattprint_test_rejected_total counter"),
        "{text}"
    );
    assert!(
        text.contains("wattprint_test_duration_seconds_bucket{le=\"0.025\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("wattprint_test_duration_seconds_count 1\n"),
        "{text}"
    );
    assert!(
        text.contains("wattprint_build_info{process=\"test\",version="),
        "{text}"
    );
}
