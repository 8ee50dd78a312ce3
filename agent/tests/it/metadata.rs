//! In-guest instance ids from cloud metadata services, against a local server speaking the
//! AWS IMDSv2, GCP and Azure IMDS protocols (the real endpoints are unreachable here): the
//! happy paths, protocol checks, error statuses, timeouts and unreachable services.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use crate::common;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::Router;
use common::{Behaviour, Gateway, TRACE};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wattprint_agent::attribution::AttributionMode;
use wattprint_agent::metadata::{fetch_instance_id, MetadataError, MetadataProvider};
use wattprint_agent::replay::{Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::{run, AgentConfig};
use wattprint_core::{HostId, InstanceId, Milliwatts, UnixMillis};

const AWS_TOKEN: &str = "AQAEAFk3HH0gVYdk-3Vq0EXAMPLETOKEN==";

/// A local metadata server: AWS, GCP and Azure paths, checking each protocol's headers the
/// way the real services do. `delay` holds every answer back (timeouts).
#[derive(Clone, Default)]
struct Imds {
    delay: Option<Duration>,
    /// Answer GCP without the `Metadata-Flavor` header (something else on that address).
    gcp_without_flavor: bool,
    /// Requests seen, `METHOD path`.
    seen: Arc<Mutex<Vec<String>>>,
}

async fn serve(imds: Imds) -> SocketAddr {
    let aws_token = {
        let imds = imds.clone();
        move |headers: HeaderMap| async move {
            imds.seen.lock().unwrap().push("PUT token".into());
            if let Some(d) = imds.delay {
                tokio::time::sleep(d).await;
            }
            // IMDSv2 refuses a token request without a TTL (400) and GETs without a token (401).
            match headers
                .get("X-aws-ec2-metadata-token-ttl-seconds")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
            {
                Some(ttl) if (1..=21_600).contains(&ttl) => AWS_TOKEN.into_response(),
                _ => (StatusCode::BAD_REQUEST, "").into_response(),
            }
        }
    };
    let aws_id = {
        let imds = imds.clone();
        move |headers: HeaderMap| async move {
            imds.seen.lock().unwrap().push("GET instance-id".into());
            if headers
                .get("X-aws-ec2-metadata-token")
                .map(|v| v.as_bytes())
                == Some(AWS_TOKEN.as_bytes())
            {
                "i-0f3c2b1a09d8e7f65".into_response()
            } else {
                (StatusCode::UNAUTHORIZED, "").into_response()
            }
        }
    };
    let gcp_id = {
        let imds = imds.clone();
        move |headers: HeaderMap| async move {
            imds.seen.lock().unwrap().push("GET gcp id".into());
            if headers.get("Metadata-Flavor").map(|v| v.as_bytes()) != Some(b"Google") {
                return (
                    StatusCode::FORBIDDEN,
                    "Missing required header: Metadata-Flavor",
                )
                    .into_response();
            }
            if imds.gcp_without_flavor {
                "4598210472938104857".into_response()
            } else {
                ([("Metadata-Flavor", "Google")], "4598210472938104857").into_response()
            }
        }
    };
    let azure_id = {
        let imds = imds.clone();
        move |headers: HeaderMap, query: axum::extract::RawQuery| async move {
            imds.seen.lock().unwrap().push("GET azure vmId".into());
            let q = query.0.unwrap_or_default();
            if headers.get("Metadata").map(|v| v.as_bytes()) != Some(b"true") {
                return (
                    StatusCode::BAD_REQUEST,
                    "{\"error\":\"Bad request. Required metadata header not specified\"}",
                )
                    .into_response();
            }
            if !q.contains("api-version=") {
                return (
                    StatusCode::BAD_REQUEST,
                    "{\"error\":\"Bad request. api-version was not specified in the request\"}",
                )
                    .into_response();
            }
            "02aab8a4-74ef-476e-8182-f6d2ba4166a6".into_response()
        }
    };
    let app = Router::new()
        .route("/latest/api/token", put(aws_token))
        .route("/latest/meta-data/instance-id", get(aws_id))
        .route("/computeMetadata/v1/instance/id", get(gcp_id))
        .route("/metadata/instance/compute/vmId", get(azure_id));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn each_cloud_protocol_yields_the_instance_id() {
    let imds = Imds::default();
    let addr = serve(imds.clone()).await;
    let base = format!("http://{addr}");
    let timeout = Duration::from_secs(5);
    let aws = fetch_instance_id(MetadataProvider::Aws, Some(&base), timeout)
        .await
        .unwrap();
    assert_eq!(aws, InstanceId::from("i-0f3c2b1a09d8e7f65"));
    let gcp = fetch_instance_id(MetadataProvider::Gcp, Some(&base), timeout)
        .await
        .unwrap();
    assert_eq!(gcp, InstanceId::from("4598210472938104857"));
    let azure = fetch_instance_id(MetadataProvider::Azure, Some(&base), timeout)
        .await
        .unwrap();
    assert_eq!(
        azure,
        InstanceId::from("02aab8a4-74ef-476e-8182-f6d2ba4166a6")
    );
    assert_eq!(
        *imds.seen.lock().unwrap(),
        [
            "PUT token",
            "GET instance-id",
            "GET gcp id",
            "GET azure vmId"
        ]
    );
}

#[tokio::test]
async fn errors_say_which_service_which_url_and_what_went_wrong() {
    let timeout = Duration::from_secs(5);
    // Something that is not the GCP metadata server answers on its address.
    let addr = serve(Imds {
        gcp_without_flavor: true,
        ..Imds::default()
    })
    .await;
    let err = fetch_instance_id(
        MetadataProvider::Gcp,
        Some(&format!("http://{addr}")),
        timeout,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MetadataError::Invalid { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("lacks the `Metadata-Flavor: Google` header"),
        "{err}"
    );
    // A path the server does not have: HTTP status and body.
    let err = fetch_instance_id(
        MetadataProvider::Aws,
        Some(&format!("http://{addr}/prefix")),
        timeout,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, MetadataError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "AWS instance metadata (IMDSv2) at http://{addr}/prefix/latest/api/token answered HTTP 404"
        )),
        "{err}"
    );
    // Nothing listens: unreachable, with the hint to configure the id instead.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = fetch_instance_id(
        MetadataProvider::Azure,
        Some(&format!("http://{closed}")),
        timeout,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MetadataError::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("set agent.attribution.instance_id"),
        "{err}"
    );
    // Not http.
    let err = fetch_instance_id(
        MetadataProvider::Aws,
        Some("https://169.254.169.254"),
        timeout,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MetadataError::BadUrl(_)), "{err:?}");
}

#[tokio::test]
async fn a_service_that_does_not_answer_times_out_clearly() {
    let addr = serve(Imds {
        delay: Some(Duration::from_secs(30)),
        ..Imds::default()
    })
    .await;
    let err = fetch_instance_id(
        MetadataProvider::Aws,
        Some(&format!("http://{addr}")),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "AWS instance metadata (IMDSv2) at http://{addr}/latest/api/token did not answer \
             within 300 ms; is the agent running inside such a VM? Otherwise set \
             agent.attribution.instance_id"
        )
    );
}

/// The whole agent in a guest: the instance id from the (local) AWS service, every GPU the
/// guest sees streamed to it, flagged exclusive, energy exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_guest_agent_streams_every_gpu_as_its_own_instance() {
    let addr = serve(Imds::default()).await;
    let instance = fetch_instance_id(
        MetadataProvider::Aws,
        Some(&format!("http://{addr}")),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let rows = common::read_trace(Path::new(TRACE));
    let sensor = ReplaySensor::new(ReplayConfig {
        trace_path: TRACE.into(),
        gpus: 2,
        seed: 11,
        start_at: UnixMillis(1_800_000_000_000),
        pacing: Pacing::AsFastAsPossible,
        loops: Some(1),
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: Milliwatts(700_000),
    })
    .unwrap();
    let gw = Gateway::start(Behaviour::AckAll).await;
    let mode = AttributionMode::InGuest {
        instance,
        source: "AWS instance metadata".into(),
    };
    let report = run(
        AgentConfig::new(HostId::from("guest"), gw.url()),
        Box::new(sensor),
        mode,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_eq!(report.samples_acked, report.samples_sent);
    assert_eq!(report.energy_unattributed_mj, 0);
    let seen = gw.seen.lock().unwrap().dedup();
    assert_eq!(seen.len(), 2 * (rows.len() - 1));
    assert!(seen
        .values()
        .all(|s| s.instance_id == "i-0f3c2b1a09d8e7f65" && s.attribution == 1));
    // GPU 0 starts at row 0: its samples sum to the trace's counter delta.
    let gpu0 = wattprint_agent::replay::replay_gpu_uuid(11, 0);
    let energy: u64 = seen
        .values()
        .filter(|s| s.gpu_uuid == gpu0.as_str())
        .map(|s| s.energy_mj)
        .sum();
    assert_eq!(energy, rows[rows.len() - 1].counter_mj - rows[0].counter_mj);
}
