//! The gRPC `TenantQuery` service on the real server, next to REST on the same TCP port:
//! authentication from the `authorization` metadata only, tenant isolation, footprints equal
//! to the REST numbers bit for bit, and errors mapped to the matching gRPC codes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request};
use wattprint_core::TenantId;
use wattprint_proto::v1::tenant_query_client::TenantQueryClient;
use wattprint_proto::v1::{
    GetWorkloadFootprintRequest, ListInstancesRequest, ListInstancesResponse, WorkloadFootprint,
};
use wattprint_query_api::{mint_token_at, AuthConfig};

fn with_auth<T>(msg: T, authorization: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(value) = authorization {
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    req
}

fn bearer<T>(msg: T, tenant: &str) -> Request<T> {
    with_auth(msg, Some(&format!("Bearer {}", token(tenant))))
}

fn footprint_req(id: &str) -> GetWorkloadFootprintRequest {
    GetWorkloadFootprintRequest {
        workload_id: id.into(),
    }
}

async fn list(
    client: &mut TenantQueryClient<Channel>,
    authorization: Option<&str>,
) -> Result<ListInstancesResponse, tonic::Status> {
    client
        .list_instances(with_auth(ListInstancesRequest::default(), authorization))
        .await
        .map(tonic::Response::into_inner)
}

async fn rest_get(server: &Server, path: &str, tenant: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn requests_without_a_valid_token_are_unauthenticated() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;

    let missing = list(&mut client, None).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert_eq!(missing.message(), "missing bearer token");

    let expired = mint_token_at(
        &auth(),
        &TenantId::from("acme"),
        SystemTime::now() - Duration::from_secs(3600),
        Duration::from_secs(60),
    )
    .unwrap();
    let not_yet = mint_token_at(
        &auth(),
        &TenantId::from("acme"),
        SystemTime::now() + Duration::from_secs(3600),
        Duration::from_secs(600),
    )
    .unwrap();
    let mut wrong_audience = auth();
    wrong_audience.audience = "someone-else".into();
    let mut wrong_issuer = auth();
    wrong_issuer.issuer = "someone-else".into();
    let wrong_secret = AuthConfig::new(
        "another-secret-of-decent-length",
        auth().issuer,
        auth().audience,
    );
    let foreign = |c: &AuthConfig| {
        wattprint_query_api::mint_token(c, &TenantId::from("acme"), Duration::from_secs(600))
            .unwrap()
    };
    let cases = [
        (format!("Bearer {expired}"), "token expired"),
        (format!("Bearer {not_yet}"), "token not yet valid"),
        (
            format!("Bearer {}", foreign(&wrong_audience)),
            "invalid token",
        ),
        (
            format!("Bearer {}", foreign(&wrong_issuer)),
            "invalid token",
        ),
        (
            format!("Bearer {}", foreign(&wrong_secret)),
            "invalid token",
        ),
        ("Bearer not.a.jwt".to_owned(), "invalid token"),
        (
            format!("Basic {}", token("acme")),
            "authorization header is not a single bearer token",
        ),
        (
            "Bearer ".to_owned(),
            "authorization header is not a single bearer token",
        ),
    ];
    for (value, message) in &cases {
        let status = list(&mut client, Some(value)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{value}");
        assert_eq!(status.message(), *message, "{value}");
        let status = client
            .get_workload_footprint(with_auth(footprint_req("w"), Some(value)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{value}");
    }
    // Two authorization values are refused, as over REST.
    let mut twice = bearer(ListInstancesRequest::default(), "acme");
    twice.metadata_mut().append(
        "authorization",
        format!("Bearer {}", token("globex")).parse().unwrap(),
    );
    let status = client.list_instances(twice).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn each_tenant_lists_only_its_own_instances() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;

    let acme = client
        .list_instances(bearer(ListInstancesRequest::default(), "acme"))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = acme
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["i-a1", "i-a2"]);
    assert_eq!(acme.instances[0].region, "R1");
    assert_eq!(acme.instances[0].zip_code, "94105");
    assert_eq!(acme.instances[0].gpu_uuids, ["GPU-a1"]);
    assert_eq!(acme.instances[1].region, "R2");
    assert_eq!(acme.instances[1].zip_code, "");
    assert_eq!(acme.instances[1].gpu_uuids, ["GPU-a2", "GPU-a3"]);

    let globex = client
        .list_instances(bearer(ListInstancesRequest::default(), "globex"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(globex.instances.len(), 1);
    assert_eq!(globex.instances[0].instance_id, "i-b1");
    assert_eq!(globex.instances[0].gpu_uuids, ["GPU-b1"]);

    // The same list as REST on the same port.
    let (status, rest) = rest_get(&server, "/v1/instances", "acme").await;
    assert_eq!(status, 200);
    let rest_ids: Vec<&str> = rest["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(rest_ids, ids);

    drop(client);
    server.stop().await;
}

/// Asserts a REST JSON number is exactly `want` (same bits).
fn assert_same(rest: &Value, want: f64, field: &str) {
    let got = rest
        .as_f64()
        .unwrap_or_else(|| panic!("{field}: {rest} is not a number"));
    assert_eq!(
        got.to_bits(),
        want.to_bits(),
        "{field}: REST {got}, gRPC {want}"
    );
}

#[tokio::test]
async fn footprints_over_grpc_equal_the_rest_numbers_exactly() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    // Edges mid-bucket and mid-sample, both instances (one with an uncatalogued GPU), R = 3.
    let id = create_workload(
        &h.app,
        "acme",
        &["i-a1", "i-a2"],
        T0 + 150_000,
        T0 + 510_000,
        3.0,
    )
    .await;

    let g: WorkloadFootprint = client
        .get_workload_footprint(bearer(footprint_req(&id), "acme"))
        .await
        .unwrap()
        .into_inner();
    let (status, rest) = rest_get(&server, &format!("/v1/workloads/{id}"), "acme").await;
    assert_eq!(status, 200, "{rest}");
    let f = &rest["footprint"];

    assert_eq!(g.workload_id, id);
    assert_eq!(rest["id"], id.as_str());
    assert_eq!(f["it_energy_mj"].as_u64().unwrap(), g.it_energy_mj);
    assert!(g.it_energy_mj > 0);
    for (field, value) in [
        ("it_energy_kwh", g.it_energy_kwh),
        ("facility_energy_kwh", g.facility_energy_kwh),
        ("operational_co2e_g", g.operational_co2e_g),
        ("embodied_co2e_g", g.embodied_co2e_g),
        ("sci_g_per_unit", g.sci_g_per_unit),
        ("functional_units", g.functional_units),
    ] {
        assert_same(&f[field], value, field);
        assert!(value > 0.0, "{field} is {value}");
    }
    assert_eq!(g.functional_units, 3.0);
    assert_eq!(f["functional_unit"], g.functional_unit.as_str());
    assert_eq!(g.functional_unit, "training run");

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn foreign_and_unknown_workloads_are_not_found_like_over_rest() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    let id = create_workload(&h.app, "acme", &["i-a1"], T0, T0 + 600_000, 1.0).await;

    // globex asks for acme's workload: the same NotFound as an id that does not exist, with
    // the REST problem's detail as message.
    let foreign = client
        .get_workload_footprint(bearer(footprint_req(&id), "globex"))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::NotFound);
    assert_eq!(foreign.message(), format!("workload {id} not found"));
    let (status, rest) = rest_get(&server, &format!("/v1/workloads/{id}"), "globex").await;
    assert_eq!(status, 404);
    assert_eq!(rest["detail"], foreign.message());

    let unknown = client
        .get_workload_footprint(bearer(footprint_req("w-does-not-exist"), "acme"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(unknown.message(), "workload w-does-not-exist not found");
    let (status, rest) = rest_get(&server, "/v1/workloads/w-does-not-exist", "acme").await;
    assert_eq!(status, 404);
    assert_eq!(rest["detail"], unknown.message());

    // Invalid ids are InvalidArgument (REST: 400), with the same message.
    for bad in [String::new(), "x".repeat(300), "a\u{7}b".to_owned()] {
        let status = client
            .get_workload_footprint(bearer(footprint_req(&bad), "acme"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            status.message().starts_with("workload id must be"),
            "{status:?}"
        );
    }

    // acme still gets it.
    let own = client
        .get_workload_footprint(bearer(footprint_req(&id), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.workload_id, id);

    drop(client);
    server.stop().await;
}

/// A unary call to any path with the `TenantQuery` message types.
async fn raw_call(server: &Server, path: &'static str) -> tonic::Status {
    let channel = Channel::from_shared(server.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec: tonic_prost::ProstCodec<ListInstancesRequest, ListInstancesResponse> =
        tonic_prost::ProstCodec::default();
    grpc.unary(
        bearer(ListInstancesRequest::default(), "acme"),
        axum::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn rest_and_grpc_share_the_port() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let http = reqwest::Client::new();

    // REST over HTTP/1.1 on the port gRPC uses.
    let health: Value = http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let (status, body) = rest_get(&server, "/v1/instances", "globex").await;
    assert_eq!(status, 200);
    assert_eq!(body["instances"][0]["instance_id"], "i-b1");
    let r = http.get(server.url("/v1/instances")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Unknown REST paths still get the problem+json 404, including ones that look like gRPC.
    for path in [
        "/v1/nope",
        "/wattprint.v1.TenantQueryX/ListInstances",
        "/wattprint.v1.TenantQuery",
    ] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["detail"], "no such route", "{path}");
    }

    // gRPC (HTTP/2 with prior knowledge) on the same port.
    let mut client = server.client().await;
    let acme = client
        .list_instances(bearer(ListInstancesRequest::default(), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acme.instances.len(), 2);

    // An unknown method of the service is answered by tonic, not swallowed by the REST
    // fallback; a gRPC call to an unknown service gets a gRPC UNIMPLEMENTED from the fallback
    // (a non-gRPC request to the same path gets the problem+json 404 above).
    let status = raw_call(&server, "/wattprint.v1.TenantQuery/DropTables").await;
    assert_eq!(status.code(), Code::Unimplemented);
    let status = raw_call(&server, "/wattprint.v1.Elsewhere/ListInstances").await;
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(
        status.message(),
        "no gRPC method /wattprint.v1.Elsewhere/ListInstances"
    );

    // Interleaved: REST after gRPC still answers.
    let (status, _) = rest_get(&server, "/v1/workloads", "acme").await;
    assert_eq!(status, 200);

    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn oversized_grpc_requests_are_refused() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    let huge = "w".repeat(wattprint_query_api::grpc::MAX_GRPC_REQUEST_BYTES + 1);
    let status = client
        .get_workload_footprint(bearer(footprint_req(&huge), "acme"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    drop(client);
    server.stop().await;
}
