//! The gRPC `TenantQuery` service on the real server, next to REST on the same TCP port:
//! authentication from the `authorization` metadata only, tenant isolation, footprints,
//! series and summaries carrying numbers worked out by hand, and errors mapped to the
//! matching gRPC codes.
//!
//! The numeric RPCs run on a real server holding a replay of the shipped H100 trace on a
//! CAISO_NORTH instance, joined with WattTime's real marginal series, Electricity Maps' real
//! hourly averages and eGRID's CAMX rate. Their answers (and the REST twins' bodies) are
//! checked against sums the test does itself from the samples it wrote and the shipped
//! series: energy in mJ summed, emissions = kWh × g/kWh, facility = × PUE, embodied = kg over
//! the lifetime × reserved time. The other RPCs are checked field by field against REST's
//! bodies (their conversion is gRPC's own code); readers are refused the mutating RPCs, other
//! tenants see nothing, and bad arguments get `INVALID_ARGUMENT` with the REST problem's
//! detail.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::{Code, Request};
use wattprint_core::intensity::{
    IntensityJoin, IntensityPoint, JoinedIntensity, MarginalSeries, PointKind, RegionIntensity,
    Signal,
};
use wattprint_core::{Bucket, GramsPerKwh, RegionId, TenantId, TenantScope, UnixMillis};
use wattprint_proto::v1 as pb;
use wattprint_proto::v1::tenant_query_client::TenantQueryClient;
use wattprint_proto::v1::{
    GetWorkloadFootprintRequest, ListInstancesRequest, ListInstancesResponse, WorkloadFootprint,
};
use wattprint_query_api::time::parse_instant;
use wattprint_query_api::{
    mint_token_at, ApiLimits, ApiState, AuthConfig, RateLimit, RateLimiter, Role,
};
use wattprint_store::{EnrichedSample, Store};

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
    let (status, _, body) = rest_bytes(server, path, &token(tenant)).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// A REST GET with `token`: status, content type and body bytes.
async fn rest_bytes(server: &Server, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, r.bytes().await.unwrap().to_vec())
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

#[tokio::test]
async fn statements_over_grpc_are_the_rest_documents() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    // The harness's data is in the month of T0: a preliminary statement, computed on read.
    let month = UnixMillis(T0).to_rfc3339()[..7].to_owned();
    let list = client
        .list_statements(bearer(pb::ListStatementsRequest {}, "acme"))
        .await
        .unwrap()
        .into_inner();
    let (_, rest_list) = rest_get(&server, "/v1/statements", "acme").await;
    let periods: Vec<&str> = list.statements.iter().map(|s| s.period.as_str()).collect();
    let rest_periods: Vec<&str> = rest_list["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["period"].as_str().unwrap())
        .collect();
    assert_eq!(periods, rest_periods);

    let get = |format: &str, tenant: &str| {
        bearer(
            pb::GetStatementRequest {
                period: month.clone(),
                format: format.to_owned(),
            },
            tenant,
        )
    };
    let json_doc = client
        .get_statement(get("", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json_doc.content_type, "application/json");
    assert_eq!(json_doc.status, "preliminary");
    let st: Value = serde_json::from_slice(&json_doc.body).unwrap();
    let (_, rest) = rest_get(&server, &format!("/v1/statements/{month}"), "acme").await;
    assert_eq!(st["totals"], rest["totals"]);
    assert_eq!(st["instances"], rest["instances"]);
    let energy: u64 = h
        .store
        .tenant_intervals(
            &TenantScope::from_verified(TenantId::from("acme")),
            UnixMillis(0),
            UnixMillis(i64::MAX),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.energy.0)
        .sum();
    assert_eq!(st["totals"]["it_energy_mj"].as_u64(), Some(energy));
    let pdf = client
        .get_statement(get("pdf", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pdf.content_type, "application/pdf");
    assert!(pdf.body.starts_with(b"%PDF-"));
    let csv = client
        .get_statement(get("csv", "acme"))
        .await
        .unwrap()
        .into_inner();
    assert!(String::from_utf8(csv.body)
        .unwrap()
        .contains(&format!(",total,,,{energy},")));
    // globex's month holds none of acme's instances; a bad period or format is refused.
    let theirs = client
        .get_statement(get("", "globex"))
        .await
        .unwrap()
        .into_inner();
    let theirs: Value = serde_json::from_slice(&theirs.body).unwrap();
    assert!(!theirs.to_string().contains("i-a1"), "{theirs}");
    for (period, format) in [("2023-13", ""), (month.as_str(), "xlsx")] {
        let status = client
            .get_statement(bearer(
                pb::GetStatementRequest {
                    period: period.to_owned(),
                    format: format.to_owned(),
                },
                "acme",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn evidence_over_grpc_is_the_rest_document() {
    let h = harness().await;
    let id = create_workload(&h.app, "acme", &["i-a1", "i-a2"], T0, T0 + 2 * B, 3.0).await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    let ask = |id: &str, tenant: &str| {
        bearer(
            pb::GetWorkloadEvidenceRequest {
                workload_id: id.to_owned(),
            },
            tenant,
        )
    };
    let doc = client
        .get_workload_evidence(ask(&id, "acme"))
        .await
        .unwrap()
        .into_inner();
    let (status, content_type, rest) = rest_bytes(
        &server,
        &format!("/v1/workloads/{id}/evidence"),
        &token("acme"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc.content_type, content_type);
    assert_eq!(doc.workload_id, id);
    // The same bytes but for the moment each was generated; the same content hash, which the
    // documented recomputation from either body gives.
    let grpc_body = String::from_utf8(doc.body).unwrap();
    let rest_body = String::from_utf8(rest).unwrap();
    assert_ne!(grpc_body, rest_body, "generated_at should differ");
    assert_eq!(
        evidence_hash_input(&grpc_body),
        evidence_hash_input(&rest_body)
    );
    assert_eq!(
        sha256_hex(evidence_hash_input(&grpc_body).as_bytes()),
        doc.content_sha256
    );
    let served: Value = serde_json::from_str(&grpc_body).unwrap();
    assert_eq!(served["content_sha256"], doc.content_sha256.as_str());
    // Energy to the mJ: every interval of i-a1 and i-a2 in [T0, T0 + 2B), summed here.
    let energy: u64 = h
        .store
        .tenant_intervals(
            &TenantScope::from_verified(TenantId::from("acme")),
            UnixMillis(T0),
            UnixMillis(T0 + 2 * B),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.energy.0)
        .sum();
    assert!(energy > 0);
    assert_eq!(served["energy"]["it_energy_mj"].as_u64(), Some(energy));

    // Another tenant's workload is not found, with REST's message; bad ids as over REST.
    let theirs = client
        .get_workload_evidence(ask(&id, "globex"))
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    let (status, rest) = rest_get(&server, &format!("/v1/workloads/{id}/evidence"), "globex").await;
    assert_eq!(status, 404);
    assert_eq!(theirs.message(), rest["detail"]);
    assert!(!theirs.message().contains("i-a1"));
    for bad in ["", "bad\u{7}id"] {
        let status = client
            .get_workload_evidence(ask(bad, "acme"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(status.message().contains("workload"), "{status:?}");
    }
    let missing = client
        .get_workload_evidence(ask("no-such-workload", "acme"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn operator_export_over_grpc_is_the_rest_file() {
    use wattprint_proto::v1::operator_query_client::OperatorQueryClient;
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = OperatorQueryClient::connect(server.url("")).await.unwrap();
    let op = role_token("billing@provider", Role::Operator);
    let ask = |period: &str, format: &str, token: &str| {
        with_auth(
            pb::ExportStatementsRequest {
                period: period.to_owned(),
                format: format.to_owned(),
            },
            Some(&format!("Bearer {token}")),
        )
    };
    let month = UnixMillis(T0).to_rfc3339()[..7].to_owned();
    for format in ["csv", "parquet"] {
        let export = client
            .export_statements(ask(&month, format, &op))
            .await
            .unwrap()
            .into_inner();
        let (status, content_type, rest) = rest_bytes(
            &server,
            &format!("/v1/operator/statements/{month}.{format}"),
            &op,
        )
        .await;
        assert_eq!(status, 200, "{format}");
        assert_eq!(export.content_type, content_type, "{format}");
        assert_eq!(export.period, month);
        assert_eq!(
            export.filename,
            format!("wattprint-statements-{month}.{format}")
        );
        assert_eq!(export.body, rest, "{format}: not REST's bytes");
        if format == "csv" {
            // Both tenants' lines, each tenant's total its own intervals' energy to the mJ.
            let csv = String::from_utf8(export.body).unwrap();
            for tenant in ["acme", "globex"] {
                let energy: u64 = h
                    .store
                    .tenant_intervals(
                        &TenantScope::from_verified(TenantId::from(tenant)),
                        UnixMillis(0),
                        UnixMillis(i64::MAX),
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.energy.0)
                    .sum();
                assert!(
                    csv.lines().any(|l| l.contains(&format!(",{tenant},"))
                        && l.contains(&format!(",total,,,{energy},"))),
                    "{tenant} {energy}: {csv}"
                );
            }
        } else {
            assert!(export.body.starts_with(b"PAR1"));
        }
    }

    // Tenant tokens are refused whatever their role, with nothing of any tenant's data.
    for role in [Role::Reader, Role::Admin] {
        let status = client
            .export_statements(ask(&month, "csv", &role_token("acme", role)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role:?}");
        assert_eq!(status.message(), "this route needs the operator role");
    }
    let status = client
        .export_statements(with_auth(
            pb::ExportStatementsRequest {
                period: month.clone(),
                format: "csv".into(),
            },
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    // And the tenant service refuses the operator's token.
    let mut tenant_client = server.client().await;
    let status = tenant_client
        .get_statement(with_auth(
            pb::GetStatementRequest {
                period: month.clone(),
                format: "csv".into(),
            },
            Some(&format!("Bearer {op}")),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Bad months and formats: INVALID_ARGUMENT saying what is wrong.
    for (period, format, says) in [
        (
            "2026-13",
            "csv",
            "period \"2026-13\" is not a month written YYYY-MM",
        ),
        ("", "csv", "period \"\" is not a month written YYYY-MM"),
        (
            month.as_str(),
            "xlsx",
            "export format \"xlsx\" is not csv or parquet",
        ),
        (
            month.as_str(),
            "",
            "export format \"\" is not csv or parquet",
        ),
    ] {
        let status = client
            .export_statements(ask(period, format, &op))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    drop(client);
    drop(tenant_client);
    server.stop().await;
}

/// Asserts `got` is `want` to a relative 1e-12 (the server sums in another order).
fn assert_near(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

/// Grams per year of reservation of one catalogued H100 (the SCI year is 365.25 days).
fn h100_g_per_ms() -> f64 {
    H100_KG * 1_000.0 / (H100_YEARS * 365.25 * 86_400_000.0)
}

#[tokio::test]
async fn footprints_over_grpc_carry_the_numbers_worked_by_hand() {
    let h = harness().await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    // i-a2 over its two buckets, R = 3: GPU-a2 30 000 000 mJ at 200 g/kWh (actual) and
    // 30 000 001 mJ at 300 (forecast); GPU-a3's 60 000 003 mJ over [100 s, 400 s] splits 2:1,
    // 40 000 002 mJ at 200 and 20 000 001 mJ at 300. PUE 1. Embodied: GPU-a2's H100 for
    // 600 s; GPU-a3's model is not catalogued.
    let id = create_workload(&h.app, "acme", &["i-a2"], T0, T0 + 2 * B, 3.0).await;
    let energy_mj: u64 = 30_000_000 + 30_000_001 + 60_000_003;
    let co2e = ((30_000_000.0 + 40_000_002.0) * 200.0 + (30_000_001.0 + 20_000_001.0) * 300.0)
        / MJ_PER_KWH;
    let embodied = h100_g_per_ms() * (2 * B) as f64;

    let g: WorkloadFootprint = client
        .get_workload_footprint(bearer(footprint_req(&id), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.workload_id, id);
    assert_eq!(g.it_energy_mj, 120_000_004);
    assert_eq!(g.it_energy_mj, energy_mj);
    for (field, got, want) in [
        (
            "it_energy_kwh",
            g.it_energy_kwh,
            energy_mj as f64 / MJ_PER_KWH,
        ),
        (
            "facility_energy_kwh",
            g.facility_energy_kwh,
            energy_mj as f64 / MJ_PER_KWH,
        ),
        ("operational_it_co2e_g", g.operational_it_co2e_g, co2e),
        ("operational_co2e_g", g.operational_co2e_g, co2e),
        ("embodied_co2e_g", g.embodied_co2e_g, embodied),
        ("total_co2e_g", g.total_co2e_g, co2e + embodied),
        ("sci_g_per_unit", g.sci_g_per_unit, (co2e + embodied) / 3.0),
    ] {
        assert_near(got, want, field);
    }
    assert_eq!(g.functional_units, 3.0);
    assert_eq!(g.functional_unit, "training run");
    let embodied_of = g.embodied.as_ref().unwrap();
    assert_eq!(
        (embodied_of.gpus, embodied_of.unknown_models.as_slice()),
        (2, [MYSTERY.to_owned()].as_slice())
    );
    let coverage = g.coverage.as_ref().unwrap();
    assert_eq!(
        (coverage.expected_gpu_ms, coverage.covered_gpu_ms),
        (2 * 2 * B, 2 * B + 300_000)
    );
    let prov = g.provenance.as_ref().unwrap();
    assert_eq!(prov.energy_without_intensity_mj, 0);

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

// ---------------------------------------------------------------------------------------------
// Real data: every RPC with a REST twin answers what REST answers.

const REGION: &str = "CAISO_NORTH";
const PUE_CA: f64 = 1.3;
/// The replayed run: two hours from 2023-06-30T23:02:10Z. Its first hour is inside Electricity
/// Maps' published hourly averages (the shipped file ends with June), the second falls back to
/// eGRID's annual CAMX rate; WattTime's actual marginal series covers both.
const RUN_FROM: &str = "2023-06-30T23:02:10Z";
const RUN_MS: i64 = 2 * 3_600_000;

/// `YYYY-MM-DD hh:mm:ss` (UTC) of the shipped CSVs, in ms.
fn csv_time(t: &str) -> i64 {
    parse_instant("t", &format!("{}Z", t.replace(' ', "T")))
        .unwrap()
        .0
}

/// WattTime's CAISO_NORTH actual MOER, (ms, g/kWh).
fn read_moer() -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(data("moer/watttime2023_caiso-north_actual.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let (t, v) = line.split_once(',').unwrap();
            (csv_time(t), v.parse().unwrap())
        })
        .collect()
}

/// Electricity Maps' hourly US-CAL-CISO averages (direct emissions) as ledger points.
fn read_grid_average() -> Vec<IntensityPoint> {
    let text = std::fs::read_to_string(data(
        "grid-average/electricitymaps_US-CAL-CISO_2023-06_hourly.csv",
    ))
    .unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let at = csv_time(f[0]);
            IntensityPoint {
                region: RegionId::from(REGION),
                at: UnixMillis(at),
                duration_ms: 3_600_000,
                value: GramsPerKwh(f[4].parse().unwrap()),
                signal: Signal::Average,
                kind: PointKind::Actual,
                issued_at: None,
                provider: "electricitymaps:US-CAL-CISO".into(),
                model_version: None,
                fetched_at: UnixMillis(at),
            }
        })
        .collect()
}

/// eGRID 2023's CAMX output rate, read from the shipped file.
fn camx() -> (GramsPerKwh, String) {
    let text = std::fs::read_to_string(data("locations/epa_egrid2023_subregion_output_rates.csv"))
        .unwrap();
    let row = text.lines().find(|l| l.starts_with("CAMX,")).unwrap();
    let lb_per_mwh: f64 = row.split(',').nth(4).unwrap().parse().unwrap();
    (
        GramsPerKwh::from_lb_per_mwh(lb_per_mwh),
        "egrid2023:CAMX".into(),
    )
}

/// One GPU of `i-ca`: the trace's phases looped over `[from, to)`, enriched by `intensity`.
fn replay(
    gpu: &str,
    from: i64,
    to: i64,
    skip: usize,
    intensity: impl Fn(Bucket) -> Option<JoinedIntensity>,
) -> Vec<EnrichedSample> {
    let mut out = Vec::new();
    let mut t = from;
    for (seq, &(ms, mj)) in trace_phases().iter().cycle().skip(skip).enumerate() {
        if t + ms > to {
            break;
        }
        out.push(enriched(
            "acme",
            "i-ca",
            gpu,
            REGION,
            PUE_CA,
            seq as u64,
            t,
            t + ms,
            mj,
            &intensity,
        ));
        t += ms;
    }
    out
}

struct RealData {
    h: Harness,
    server: Server,
    /// The replayed run.
    from: i64,
    to: i64,
    /// Energy of every `i-ca` sample (all inside the run).
    ca_mj: u64,
    /// The samples written: what the expected numbers are worked out from.
    samples: Vec<EnrichedSample>,
}

/// The replayed run's numbers, worked out from the written samples and the shipped series.
struct Expected {
    /// Energy of the samples with no intensity (all of GPU-c2's).
    missing_mj: u64,
    /// Σ share energy (kWh) × its joined marginal intensity.
    marginal_g: f64,
    /// Σ share energy (kWh) × the region's average intensity: Electricity Maps' hour holding the
    /// share's bucket, else eGRID's CAMX rate.
    average_g: f64,
}

impl RealData {
    fn expected(&self) -> Expected {
        let hours = read_grid_average();
        let camx = camx().0 .0;
        let mut e = Expected {
            missing_mj: 0,
            marginal_g: 0.0,
            average_g: 0.0,
        };
        for share in self.samples.iter().flat_map(|s| &s.shares) {
            let kwh = share.energy.0 as f64 / MJ_PER_KWH;
            match &share.intensity {
                Some(i) => e.marginal_g += kwh * i.value.0,
                None => e.missing_mj += share.energy.0,
            }
            let at = share.bucket.start().0;
            let average = hours
                .iter()
                .find(|p| p.at.0 <= at && at < p.at.0 + p.duration_ms)
                .map_or(camx, |p| p.value.0);
            e.average_g += kwh * average;
        }
        e
    }
}

/// The common harness's tenants, plus acme's `i-ca` (CAISO_NORTH, two H100s) replaying the
/// trace for [`RUN_MS`]: GPU-c1 enriched with WattTime's actual MOER, GPU-c2 with no intensity
/// (as if the series had been down). The server's join has the MOER, Electricity Maps' hourly
/// averages and eGRID's CAMX rate.
async fn real_data() -> RealData {
    real_data_with(|s| s).await
}

async fn real_data_with(configure: impl FnOnce(ApiState) -> ApiState) -> RealData {
    let h = harness().await;
    h.store
        .upsert_inventory(&[instance(
            "acme",
            "i-ca",
            REGION,
            Some("95112"),
            vec![gpu("GPU-c1", H100), gpu("GPU-c2", H100)],
        )])
        .await
        .unwrap();
    let series = MarginalSeries::new(
        "watttime:CAISO_NORTH",
        read_moer()
            .into_iter()
            .map(|(t, v)| (UnixMillis(t), GramsPerKwh(v)))
            .collect(),
    )
    .unwrap();
    let region = RegionId::from(REGION);
    let mut join = IntensityJoin::new(15 * 60_000);
    join.insert(
        region.clone(),
        RegionIntensity {
            marginal: Some(series),
            replay: false,
            average: Some(camx()),
        },
    );
    for point in read_grid_average() {
        join.record(&point).unwrap();
    }
    let from = parse_instant("from", RUN_FROM).unwrap().0;
    let to = from + RUN_MS;
    let mut samples = replay("GPU-c1", from, to, 0, |b| join.lookup(&region, b));
    samples.extend(replay("GPU-c2", from + 7_000, to, 1, |_| None));
    let outcome = h.store.write_samples(&samples).await.unwrap();
    assert_eq!(outcome.inserted as usize, samples.len());
    let store: std::sync::Arc<dyn Store> = h.store.clone();
    let state = configure(
        ApiState::new(store, auth(), catalog(), ApiLimits::default()).with_intensity(join),
    );
    RealData {
        server: Server::start_state(state).await,
        h,
        from,
        to,
        ca_mj: samples.iter().map(|s| s.sample.energy.0).sum(),
        samples,
    }
}

fn rfc3339(ms: i64) -> String {
    UnixMillis(ms).to_rfc3339()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn reader<T>(msg: T, tenant: &str) -> Request<T> {
    with_auth(
        msg,
        Some(&format!("Bearer {}", role_token(tenant, Role::Reader))),
    )
}

/// A REST call with `tenant`'s admin token: (status, body).
async fn rest_call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    bearer: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, server.url(path))
        .bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Asserts the gRPC answer (in REST's JSON shape) is the REST body: the same fields, the same
/// strings and integers, floats with the same bits.
fn assert_same_json(grpc: &Value, rest: &Value, at: &str) {
    match (grpc, rest) {
        (Value::Object(g), Value::Object(r)) => {
            let gk: BTreeSet<&String> = g.keys().collect();
            let rk: BTreeSet<&String> = r.keys().collect();
            assert_eq!(gk, rk, "{at}: fields differ");
            for (k, v) in g {
                assert_same_json(v, &r[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(r)) => {
            assert_eq!(g.len(), r.len(), "{at}: lengths differ");
            for (i, (a, b)) in g.iter().zip(r).enumerate() {
                assert_same_json(a, b, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(g), Value::Number(r)) if g.is_f64() || r.is_f64() => {
            assert!(g.is_f64() && r.is_f64(), "{at}: gRPC {g}, REST {r}");
            assert_eq!(
                g.as_f64().unwrap().to_bits(),
                r.as_f64().unwrap().to_bits(),
                "{at}: gRPC {g}, REST {r}"
            );
        }
        _ => assert_eq!(grpc, rest, "{at}"),
    }
}

/// Asserts a gRPC error is the REST problem: `code` for HTTP `http`, the detail as message.
/// `POST /v1/workloads/{id}/close` over REST.
async fn rest_close(server: &Server, bearer: &str, id: &str, body: Option<&Value>) -> (u16, Value) {
    let path = format!("/v1/workloads/{id}/close");
    rest_call(server, reqwest::Method::POST, &path, bearer, body).await
}

/// `PUT /v1/workloads/{id}/labels` over REST.
async fn rest_labels(server: &Server, bearer: &str, id: &str, body: &Value) -> (u16, Value) {
    let path = format!("/v1/workloads/{id}/labels");
    rest_call(server, reqwest::Method::PUT, &path, bearer, Some(body)).await
}

fn assert_same_error(grpc: &tonic::Status, code: Code, rest: &(u16, Value), http: u16) {
    assert_eq!(rest.0, http, "REST: {}", rest.1);
    assert_eq!(grpc.code(), code, "{grpc:?}");
    assert_eq!(
        grpc.message(),
        rest.1["detail"].as_str().unwrap(),
        "{grpc:?}"
    );
}

fn opt(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!(x))
}

// REST's JSON shape of each gRPC message.

fn provenance_json(p: &pb::FootprintProvenance) -> Value {
    json!({
        "energy_measured_share": p.energy_measured_share,
        "intervals_actual": p.intervals_actual,
        "intervals_forecast": p.intervals_forecast,
        "intervals_fallback": p.intervals_fallback,
        "intervals_missing_intensity": p.intervals_missing_intensity,
        "energy_without_intensity_mj": p.energy_without_intensity_mj,
        "intervals_replayed_intensity": p.intervals_replayed_intensity,
    })
}

fn instance_json(i: &pb::Instance) -> Value {
    let uuids: Vec<&str> = i.gpus.iter().map(|g| g.uuid.as_str()).collect();
    assert_eq!(i.gpu_uuids, uuids, "gpu_uuids are the gpus' uuids");
    json!({
        "instance_id": i.instance_id,
        "region": i.region,
        "zip_code": if i.zip_code.is_empty() { Value::Null } else { json!(i.zip_code) },
        "gpus": i.gpus.iter().map(|g| json!({
            "uuid": g.uuid,
            "model": g.model,
            "power_limit_w": g.power_limit_w,
        })).collect::<Vec<_>>(),
    })
}

fn workload_json(w: &pb::Workload) -> Value {
    json!({
        "id": w.id,
        "label": w.label,
        "instance_ids": w.instance_ids,
        "from": w.from,
        "to": w.to,
        "status": w.status,
        "labels": w.labels,
        "functional_unit": w.functional_unit,
        "functional_units": w.functional_units,
        "created_at": w.created_at,
    })
}

fn footprint_json(f: &WorkloadFootprint) -> Value {
    let w = f.workload.as_ref().unwrap();
    assert_eq!(f.workload_id, w.id);
    let coverage = f.coverage.as_ref().unwrap();
    let embodied = f.embodied.as_ref().unwrap();
    let mut v = workload_json(w);
    v["footprint"] = json!({
        "it_energy_mj": f.it_energy_mj,
        "it_energy_kwh": f.it_energy_kwh,
        "facility_energy_kwh": f.facility_energy_kwh,
        "operational_it_co2e_g": f.operational_it_co2e_g,
        "operational_co2e_g": f.operational_co2e_g,
        "embodied_co2e_g": f.embodied_co2e_g,
        "total_co2e_g": f.total_co2e_g,
        "functional_units": f.functional_units,
        "sci_g_per_unit": f.sci_g_per_unit,
        "provenance": provenance_json(f.provenance.as_ref().unwrap()),
        "functional_unit": f.functional_unit,
        "coverage": {
            "expected_gpu_ms": coverage.expected_gpu_ms,
            "covered_gpu_ms": coverage.covered_gpu_ms,
        },
        "embodied": { "gpus": embodied.gpus, "unknown_models": embodied.unknown_models },
        "missing_instances": f.missing_instances,
        "average": f.average.as_ref().map_or(Value::Null, |a| json!({
            "operational_it_co2e_g": a.operational_it_co2e_g,
            "operational_co2e_g": a.operational_co2e_g,
            "total_co2e_g": a.total_co2e_g,
            "sci_g_per_unit": a.sci_g_per_unit,
            "intensity_g_per_kwh": opt(a.intensity_g_per_kwh),
            "energy_without_intensity_mj": a.energy_without_intensity_mj,
            "intensity_sources": a.intensity_sources,
        })),
    });
    v
}

fn series_json(s: &pb::InstanceSeries) -> Value {
    let points: Vec<Value> = if s.step == "raw" {
        assert!(s.points.is_empty());
        s.raw_points
            .iter()
            .map(|p| {
                json!({
                    "start": p.start,
                    "end": p.end,
                    "gpu_uuid": p.gpu_uuid,
                    "energy_mj": p.energy_mj,
                    "power_w": p.power_w,
                    "power_max_w": p.power_max_w,
                    "util_gpu_pct": p.util_gpu_pct,
                    "temp_c": p.temp_c,
                    "chain_start": p.chain_start,
                    "energy_source": p.energy_source,
                    "attribution": p.attribution,
                })
            })
            .collect()
    } else {
        assert!(s.raw_points.is_empty());
        s.points
            .iter()
            .map(|p| {
                let k = p.intensity_kinds.as_ref().unwrap();
                json!({
                    "start": p.start,
                    "end": p.end,
                    "energy_mj": p.energy_mj,
                    "energy_kwh": p.energy_kwh,
                    "estimated_energy_mj": p.estimated_energy_mj,
                    "power_mean_w": opt(p.power_mean_w),
                    "power_max_w": opt(p.power_max_w),
                    "coverage": p.coverage,
                    "intensity_g_per_kwh": opt(p.intensity_g_per_kwh),
                    "intensity_kinds": {
                        "actual": k.actual,
                        "forecast": k.forecast,
                        "fallback_average": k.fallback_average,
                        "missing": k.missing,
                        "replayed": k.replayed,
                    },
                    "co2e_g": p.co2e_g,
                    "facility_co2e_g": p.facility_co2e_g,
                    "co2e_missing_energy_mj": p.co2e_missing_energy_mj,
                    "average_intensity_g_per_kwh": opt(p.average_intensity_g_per_kwh),
                    "average_co2e_g": opt(p.average_co2e_g),
                    "average_facility_co2e_g": opt(p.average_facility_co2e_g),
                })
            })
            .collect()
    };
    json!({
        "instance_id": s.instance_id,
        "step": s.step,
        "from": s.from,
        "to": s.to,
        "points": points,
    })
}

fn usage_json(u: &pb::Usage) -> Value {
    json!({
        "it_energy_mj": u.it_energy_mj,
        "it_energy_kwh": u.it_energy_kwh,
        "estimated_energy_mj": u.estimated_energy_mj,
        "facility_energy_kwh": u.facility_energy_kwh,
        "operational_it_co2e_g": u.operational_it_co2e_g,
        "operational_co2e_g": u.operational_co2e_g,
        "gpu_intervals": u.gpu_intervals,
        "covered_gpu_ms": u.covered_gpu_ms,
        "power_max_w": opt(u.power_max_w),
        "provenance": provenance_json(u.provenance.as_ref().unwrap()),
    })
}

fn summary_json(s: &pb::TenantSummary) -> Value {
    json!({
        "from": s.from,
        "to": s.to,
        "totals": usage_json(s.totals.as_ref().unwrap()),
        "instances": s.instances.iter().map(|i| {
            let mut v = usage_json(i.usage.as_ref().unwrap());
            v["instance_id"] = json!(i.instance_id);
            v["gpus"] = json!(i.gpus);
            v
        }).collect::<Vec<_>>(),
    })
}

fn sum_f64(points: &[Value], field: &str) -> f64 {
    points.iter().map(|p| p[field].as_f64().unwrap()).sum()
}

fn sum_u64(points: &[Value], field: &str) -> u64 {
    points.iter().map(|p| p[field].as_u64().unwrap()).sum()
}

/// Asserts a series body (REST's JSON shape) over the whole replayed run holds every sample's
/// energy, and, aggregated, the marginal, facility (PUE 1.3) and average emissions and the
/// energy without intensity worked out in [`RealData::expected`].
fn assert_series_numbers(fx: &RealData, e: &Expected, v: &Value, at: &str) {
    let near = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= 1e-9 * want.abs(),
            "{at} {what}: got {got}, want {want}"
        );
    };
    let points = v["points"].as_array().unwrap();
    assert_eq!(sum_u64(points, "energy_mj"), fx.ca_mj, "{at}");
    if v["step"] == "raw" {
        assert_eq!(points.len(), fx.samples.len(), "{at}");
        let first = &fx.samples[0].sample;
        assert_eq!(points[0]["start"], rfc3339(first.start.0), "{at}");
        assert_eq!(points[0]["energy_mj"], first.energy.0, "{at}");
        return;
    }
    near(
        sum_f64(points, "energy_kwh"),
        fx.ca_mj as f64 / MJ_PER_KWH,
        "energy_kwh",
    );
    near(sum_f64(points, "co2e_g"), e.marginal_g, "co2e_g");
    near(
        sum_f64(points, "facility_co2e_g"),
        e.marginal_g * PUE_CA,
        "facility_co2e_g",
    );
    near(
        sum_f64(points, "average_co2e_g"),
        e.average_g,
        "average_co2e_g",
    );
    near(
        sum_f64(points, "average_facility_co2e_g"),
        e.average_g * PUE_CA,
        "average_facility_co2e_g",
    );
    assert_eq!(
        sum_u64(points, "co2e_missing_energy_mj"),
        e.missing_mj,
        "{at}"
    );
}

fn series_req(instance: &str, from: &str, to: &str, step: &str) -> pb::GetInstanceSeriesRequest {
    pb::GetInstanceSeriesRequest {
        instance_id: instance.into(),
        from: from.into(),
        to: to.into(),
        step: step.into(),
    }
}

/// The REST path of the same series request (empty fields left out, as gRPC reads them).
fn series_path(r: &pb::GetInstanceSeriesRequest) -> String {
    let query: Vec<String> = [("from", &r.from), ("to", &r.to), ("step", &r.step)]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("/v1/instances/{}/series?{}", r.instance_id, query.join("&"))
}

async fn series_both(
    fx: &RealData,
    client: &mut TenantQueryClient<Channel>,
    tenant: &str,
    req: pb::GetInstanceSeriesRequest,
) -> (Result<pb::InstanceSeries, tonic::Status>, (u16, Value)) {
    let rest = rest_get(&fx.server, &series_path(&req), tenant).await;
    let grpc = client
        .get_instance_series(bearer(req, tenant))
        .await
        .map(tonic::Response::into_inner);
    (grpc, rest)
}

#[tokio::test]
async fn series_over_grpc_carry_the_replayed_trace_at_every_step() {
    let fx = real_data().await;
    let e = fx.expected();
    assert!(e.missing_mj > 0 && e.marginal_g > 0.0 && e.average_g > e.marginal_g * 0.1);
    let mut client = fx.server.client().await;
    // gRPC and REST given the range as RFC 3339 and as Unix ms.
    for (from, to) in [
        (rfc3339(fx.from), rfc3339(fx.to)),
        (fx.from.to_string(), fx.to.to_string()),
    ] {
        for step in ["raw", "5m", "1h", "1d"] {
            let (grpc, rest) = series_both(
                &fx,
                &mut client,
                "acme",
                series_req("i-ca", &from, &to, step),
            )
            .await;
            assert_eq!(rest.0, 200, "{}", rest.1);
            let g = grpc.unwrap();
            assert_eq!((g.instance_id.as_str(), g.step.as_str()), ("i-ca", step));
            // The gRPC answer and the REST body each carry the numbers worked out by hand.
            for (at, v) in [("gRPC", series_json(&g)), ("REST", rest.1)] {
                assert_series_numbers(&fx, &e, &v, &format!("{at} {step}"));
            }
        }
    }

    // REST's defaults: step 5m; from = to − 1 h (rounded to whole steps).
    let to = rfc3339(fx.to);
    let (grpc, rest) = series_both(&fx, &mut client, "acme", series_req("i-ca", "", &to, "")).await;
    let g = grpc.unwrap();
    assert_eq!(rest.0, 200, "{}", rest.1);
    assert_eq!(g.step, "5m");
    assert_eq!(
        (rest.1["step"].as_str(), rest.1["from"].as_str()),
        (Some("5m"), Some(g.from.as_str()))
    );
    assert_eq!(g.from, rfc3339(fx.to - 3_600_000 - 130_000));
    assert_eq!(g.to, rfc3339(fx.to + 170_000));
    // ... and `to` = now.
    let before = now_ms();
    let g = client
        .get_instance_series(bearer(
            series_req("i-ca", &rfc3339(before - 7_200_000), "", "1h"),
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    let after = now_ms();
    let got_to = parse_instant("to", &g.to).unwrap().0;
    let ceil_h = |t: i64| (t + 3_599_999).div_euclid(3_600_000) * 3_600_000;
    assert!(
        ceil_h(before) <= got_to && got_to <= ceil_h(after),
        "{}",
        g.to
    );

    // Another tenant's instance does not exist for the caller.
    let (from, to) = (rfc3339(fx.from), rfc3339(fx.to));
    for (tenant, instance) in [("globex", "i-ca"), ("acme", "i-b1"), ("acme", "i-none")] {
        let (grpc, rest) = series_both(
            &fx,
            &mut client,
            tenant,
            series_req(instance, &from, &to, "5m"),
        )
        .await;
        assert_same_error(&grpc.unwrap_err(), Code::NotFound, &rest, 404);
    }

    // Bad arguments: INVALID_ARGUMENT with the REST problem's detail.
    let long_ago = rfc3339(fx.to - 32 * 86_400_000);
    for req in [
        series_req("i-ca", &from, &to, "7m"),
        series_req("i-ca", "yesterday", &to, "5m"),
        series_req("i-ca", &to, &from, "5m"),
        series_req("i-ca", &long_ago, &to, "1d"),
        series_req(&"x".repeat(300), &from, &to, "5m"),
    ] {
        let what = series_path(&req);
        let (grpc, rest) = series_both(&fx, &mut client, "acme", req).await;
        let Err(status) = grpc else {
            panic!("{what} was answered")
        };
        assert_same_error(&status, Code::InvalidArgument, &rest, 400);
    }
    drop(client);
    fx.server.stop().await;
}

fn create_req(
    instances: &[&str],
    from: String,
    to: Option<String>,
    labels: &[(&str, &str)],
) -> pb::CreateWorkloadRequest {
    pb::CreateWorkloadRequest {
        label: "replayed run".into(),
        instance_ids: instances.iter().map(|s| s.to_string()).collect(),
        from,
        to,
        functional_unit: "training run".into(),
        functional_units: 3.0,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The REST body of the same create request.
fn create_body(r: &pb::CreateWorkloadRequest) -> Value {
    let mut body = json!({
        "label": r.label,
        "instance_ids": r.instance_ids,
        "from": r.from,
        "functional_unit": r.functional_unit,
        "functional_units": r.functional_units,
        "labels": r.labels,
    });
    if let Some(to) = &r.to {
        body["to"] = json!(to);
    }
    body
}

async fn footprint_both(
    fx: &RealData,
    client: &mut TenantQueryClient<Channel>,
    tenant: &str,
    id: &str,
) -> (Result<WorkloadFootprint, tonic::Status>, (u16, Value)) {
    let rest = rest_get(&fx.server, &format!("/v1/workloads/{id}"), tenant).await;
    let grpc = client
        .get_workload_footprint(bearer(footprint_req(id), tenant))
        .await
        .map(tonic::Response::into_inner);
    (grpc, rest)
}

#[tokio::test]
async fn workload_footprints_over_grpc_carry_the_replayed_run() {
    let fx = real_data().await;
    let e = fx.expected();
    let mut client = fx.server.client().await;
    let post = |body: Value| {
        let server = &fx.server;
        async move {
            rest_call(
                server,
                reqwest::Method::POST,
                "/v1/workloads",
                &token("acme"),
                Some(&body),
            )
            .await
        }
    };

    // The whole run on i-ca: every sample's energy; then edges mid-sample over i-ca and i-a2
    // (an uncatalogued GPU; no data in 2023), labelled.
    let whole = create_req(
        &["i-ca"],
        rfc3339(fx.from),
        Some(rfc3339(fx.to)),
        &[("team", "vision")],
    );
    let edges = create_req(
        &["i-ca", "i-a2"],
        (fx.from + 95_000).to_string(),
        Some((fx.to - 1_234_567).to_string()),
        &[("team", "vision"), ("run", "42")],
    );
    let edges_ms = (fx.to - 1_234_567) - (fx.from + 95_000);
    for (req, whole_run) in [(whole, true), (edges, false)] {
        let (status, created) = post(create_body(&req)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        let (grpc, rest) = footprint_both(&fx, &mut client, "acme", id).await;
        assert_eq!(rest.0, 200, "{}", rest.1);
        let g = grpc.unwrap();
        assert_eq!(g.workload.as_ref().unwrap().status, "closed");
        // The gRPC answer and the REST body each carry the numbers worked out by hand.
        for (at, v) in [("gRPC", footprint_json(&g)), ("REST", rest.1.clone())] {
            let f = &v["footprint"];
            let num = |k: &str| f[k].as_f64().unwrap();
            let near = |got: f64, want: f64, what: &str| {
                assert!(
                    (got - want).abs() <= 1e-9 * want.abs(),
                    "{at} {what}: got {got}, want {want}"
                );
            };
            assert_eq!(
                f["average"]["intensity_sources"],
                json!(["egrid2023:CAMX", "electricitymaps:US-CAL-CISO"]),
                "{at}"
            );
            if whole_run {
                // Both H100s of i-ca for the whole run.
                let embodied = 2.0 * h100_g_per_ms() * RUN_MS as f64;
                assert_eq!(f["it_energy_mj"], fx.ca_mj, "{at}");
                near(num("it_energy_kwh"), fx.ca_mj as f64 / MJ_PER_KWH, "kWh");
                near(
                    num("facility_energy_kwh"),
                    fx.ca_mj as f64 / MJ_PER_KWH * PUE_CA,
                    "fac",
                );
                near(num("operational_it_co2e_g"), e.marginal_g, "operational_it");
                near(
                    num("operational_co2e_g"),
                    e.marginal_g * PUE_CA,
                    "operational",
                );
                near(num("embodied_co2e_g"), embodied, "embodied");
                let total = e.marginal_g * PUE_CA + embodied;
                near(num("total_co2e_g"), total, "total");
                near(num("sci_g_per_unit"), total / 3.0, "sci");
                let average = &f["average"];
                near(
                    average["operational_it_co2e_g"].as_f64().unwrap(),
                    e.average_g,
                    "avg it",
                );
                near(
                    average["operational_co2e_g"].as_f64().unwrap(),
                    e.average_g * PUE_CA,
                    "avg",
                );
                assert_eq!(
                    f["provenance"]["energy_without_intensity_mj"], e.missing_mj,
                    "{at}"
                );
                assert_eq!(
                    f["embodied"],
                    json!({"gpus": 2, "unknown_models": []}),
                    "{at}"
                );
            } else {
                // Between the samples wholly inside the edges and those touching them; i-a2
                // has no 2023 data. Embodied: i-ca's two H100s and i-a2's one over the window.
                let (lo, hi) = (fx.from + 95_000, fx.to - 1_234_567);
                let inside: u64 = fx
                    .samples
                    .iter()
                    .filter(|s| s.sample.start.0 >= lo && s.sample.end.0 <= hi)
                    .map(|s| s.sample.energy.0)
                    .sum();
                let touching: u64 = fx
                    .samples
                    .iter()
                    .filter(|s| s.sample.start.0 < hi && s.sample.end.0 > lo)
                    .map(|s| s.sample.energy.0)
                    .sum();
                let got = f["it_energy_mj"].as_u64().unwrap();
                assert!(
                    inside < got && got < touching,
                    "{at}: {inside} {got} {touching}"
                );
                near(
                    num("embodied_co2e_g"),
                    3.0 * h100_g_per_ms() * edges_ms as f64,
                    "embodied",
                );
                assert_eq!(
                    f["embodied"],
                    json!({"gpus": 4, "unknown_models": [MYSTERY]}),
                    "{at}"
                );
                let op = num("operational_it_co2e_g");
                assert!(op > 0.0 && op < e.marginal_g, "{at}: {op}");
                near(num("operational_co2e_g"), op * PUE_CA, "operational");
            }
        }
        // A reader reads the same; another tenant finds nothing.
        let as_reader = client
            .get_workload_footprint(reader(footprint_req(id), "acme"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(as_reader, g);
        let (grpc, rest) = footprint_both(&fx, &mut client, "globex", id).await;
        assert_same_error(&grpc.unwrap_err(), Code::NotFound, &rest, 404);
    }

    // An open workload started in 2023 spans more than a request may read: the REST 422 is
    // INVALID_ARGUMENT with the same advice.
    let (status, created) = post(create_body(&create_req(
        &["i-ca"],
        rfc3339(fx.from),
        None,
        &[],
    )))
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (grpc, rest) = footprint_both(&fx, &mut client, "acme", id).await;
    assert_same_error(&grpc.unwrap_err(), Code::InvalidArgument, &rest, 422);
    drop(client);
    fx.server.stop().await;
}

fn list_req(limit: Option<u32>, cursor: &str, status: &str) -> pb::ListWorkloadsRequest {
    pb::ListWorkloadsRequest {
        limit,
        cursor: cursor.into(),
        status: status.into(),
    }
}

/// The REST path of the same list request.
fn list_path(r: &pb::ListWorkloadsRequest) -> String {
    let mut query = Vec::new();
    if let Some(l) = r.limit {
        query.push(format!("limit={l}"));
    }
    if !r.cursor.is_empty() {
        query.push(format!("cursor={}", r.cursor));
    }
    if !r.status.is_empty() {
        query.push(format!("status={}", r.status));
    }
    format!("/v1/workloads?{}", query.join("&"))
}

fn list_json(r: &pb::ListWorkloadsResponse) -> Value {
    let mut v = json!({ "workloads": r.workloads.iter().map(workload_json).collect::<Vec<_>>() });
    if let Some(c) = &r.next_cursor {
        v["next_cursor"] = json!(c);
    }
    v
}

async fn list_both(
    fx: &RealData,
    client: &mut TenantQueryClient<Channel>,
    tenant: &str,
    req: pb::ListWorkloadsRequest,
) -> (
    Result<pb::ListWorkloadsResponse, tonic::Status>,
    (u16, Value),
) {
    let rest = rest_get(&fx.server, &list_path(&req), tenant).await;
    let grpc = client
        .list_workloads(bearer(req, tenant))
        .await
        .map(tonic::Response::into_inner);
    (grpc, rest)
}

/// REST's view of one of acme's workloads, from its list.
async fn rest_workload(fx: &RealData, id: &str) -> Value {
    let (status, list) = rest_get(&fx.server, "/v1/workloads?limit=1000", "acme").await;
    assert_eq!(status, 200, "{list}");
    list["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not listed"))
}

#[tokio::test]
async fn workloads_are_created_labelled_closed_and_listed_over_grpc_as_over_rest() {
    let fx = real_data().await;
    let mut client = fx.server.client().await;
    let admin = token("acme");
    let reader_token = role_token("acme", Role::Reader);

    // Create: a closed workload (from RFC 3339, to in ms) over gRPC is what REST lists, and
    // what REST creates from the same body, but for its id and creation time.
    let closed = create_req(
        &["i-ca"],
        rfc3339(fx.from),
        Some(fx.to.to_string()),
        &[("team", "vision"), ("project", "wattprint")],
    );
    let a = client
        .create_workload(bearer(closed.clone(), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (a.status.as_str(), a.to.clone()),
        ("closed", Some(rfc3339(fx.to)))
    );
    assert_same_json(
        &workload_json(&a),
        &rest_workload(&fx, &a.id).await,
        "created",
    );
    let (status, mut twin) = rest_call(
        &fx.server,
        reqwest::Method::POST,
        "/v1/workloads",
        &admin,
        Some(&create_body(&closed)),
    )
    .await;
    assert_eq!(status, 201, "{twin}");
    twin["id"] = json!(a.id);
    twin["created_at"] = json!(a.created_at);
    assert_same_json(&workload_json(&a), &twin, "twin");

    // An open workload (no `to`), started an hour ago.
    let started = now_ms() - 3_600_000;
    let open = client
        .create_workload(bearer(
            create_req(&["i-ca", "i-a1"], started.to_string(), None, &[]),
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((open.status.as_str(), open.to.as_deref()), ("open", None));
    assert_same_json(
        &workload_json(&open),
        &rest_workload(&fx, &open.id).await,
        "open",
    );

    // Labels over gRPC are what REST lists; labels over REST are what gRPC lists.
    let labelled = client
        .set_workload_labels(bearer(
            pb::SetWorkloadLabelsRequest {
                workload_id: open.id.clone(),
                labels: HashMap::from([("team".to_owned(), "speech".to_owned())]),
            },
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        labelled.labels,
        HashMap::from([("team".to_owned(), "speech".to_owned())])
    );
    assert_same_json(
        &workload_json(&labelled),
        &rest_workload(&fx, &open.id).await,
        "labelled",
    );
    let (status, relabelled) = rest_labels(&fx.server, &admin, &a.id, &json!({"labels": {}})).await;
    assert_eq!(status, 200, "{relabelled}");
    let listed = client
        .list_workloads(bearer(list_req(Some(1000), "", ""), "acme"))
        .await
        .unwrap()
        .into_inner();
    let a_now = listed.workloads.iter().find(|w| w.id == a.id).unwrap();
    assert!(a_now.labels.is_empty());
    assert_same_json(&workload_json(a_now), &relabelled, "relabelled");

    // Close at an end; again at the same end: unchanged; at another: ALREADY_EXISTS (409),
    // with REST's message.
    let end = started + 1_800_000;
    let close = |id: &str, end: Option<String>| pb::CloseWorkloadRequest {
        workload_id: id.to_owned(),
        end,
    };
    let closed_now = client
        .close_workload(bearer(close(&open.id, Some(rfc3339(end))), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (closed_now.status.as_str(), closed_now.to.clone()),
        ("closed", Some(rfc3339(end)))
    );
    assert_same_json(
        &workload_json(&closed_now),
        &rest_workload(&fx, &open.id).await,
        "closed",
    );
    let again = client
        .close_workload(bearer(close(&open.id, Some(end.to_string())), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, closed_now);
    let other_end = Some(rfc3339(end + 60_000));
    let grpc = client
        .close_workload(bearer(close(&open.id, other_end.clone()), "acme"))
        .await
        .unwrap_err();
    let rest = rest_close(
        &fx.server,
        &admin,
        &open.id,
        Some(&json!({ "end": other_end })),
    )
    .await;
    assert_same_error(&grpc, Code::AlreadyExists, &rest, 409);
    // Without an end: now.
    let third = client
        .create_workload(bearer(
            create_req(&["i-ca"], started.to_string(), None, &[]),
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    let before = now_ms();
    let shut = client
        .close_workload(bearer(close(&third.id, None), "acme"))
        .await
        .unwrap()
        .into_inner();
    let after = now_ms();
    let at = parse_instant("to", shut.to.as_deref().unwrap()).unwrap().0;
    assert!(before <= at && at <= after, "{shut:?}");

    // Pages: walked with the same cursors, each page is REST's; filters likewise.
    for status in ["", "all", "open", "closed"] {
        let mut cursor = String::new();
        let mut seen = Vec::new();
        loop {
            let (grpc, rest) =
                list_both(&fx, &mut client, "acme", list_req(Some(2), &cursor, status)).await;
            assert_eq!(rest.0, 200, "{}", rest.1);
            let page = grpc.unwrap();
            assert_same_json(&list_json(&page), &rest.1, status);
            seen.extend(page.workloads.iter().map(|w| w.id.clone()));
            match page.next_cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
        let expected = match status {
            "open" => 0,
            "closed" => 4,
            _ => 4,
        };
        assert_eq!(seen.len(), expected, "{status:?}: {seen:?}");
    }
    let (grpc, rest) = list_both(&fx, &mut client, "acme", list_req(None, "", "")).await;
    assert_same_json(&list_json(&grpc.unwrap()), &rest.1, "default page");
    for bad in [
        list_req(Some(0), "", ""),
        list_req(Some(1001), "", ""),
        list_req(None, "wl_not_a_position", ""),
        list_req(None, "", "finished"),
    ] {
        let what = list_path(&bad);
        let (grpc, rest) = list_both(&fx, &mut client, "acme", bad).await;
        assert_same_error(&grpc.unwrap_err(), Code::InvalidArgument, &rest, 400);
        assert!(rest.1["detail"].is_string(), "{what}");
    }

    // Readers may not change anything: PERMISSION_DENIED with REST's message, nothing changed.
    let before = rest_get(&fx.server, "/v1/workloads?limit=1000", "acme").await;
    let denied = [
        client
            .create_workload(reader(closed.clone(), "acme"))
            .await
            .unwrap_err(),
        client
            .set_workload_labels(reader(
                pb::SetWorkloadLabelsRequest {
                    workload_id: a.id.clone(),
                    labels: HashMap::new(),
                },
                "acme",
            ))
            .await
            .unwrap_err(),
        client
            .close_workload(reader(close(&a.id, None), "acme"))
            .await
            .unwrap_err(),
    ];
    let rest = rest_call(
        &fx.server,
        reqwest::Method::POST,
        "/v1/workloads",
        &reader_token,
        Some(&create_body(&closed)),
    )
    .await;
    for status in &denied {
        assert_same_error(status, Code::PermissionDenied, &rest, 403);
    }
    let rest = rest_close(&fx.server, &reader_token, &a.id, None).await;
    assert_same_error(&denied[2], Code::PermissionDenied, &rest, 403);
    assert_eq!(
        rest_get(&fx.server, "/v1/workloads?limit=1000", "acme").await,
        before
    );
    // Readers list like admins.
    let as_reader = client
        .list_workloads(reader(list_req(Some(1000), "", ""), "acme"))
        .await
        .unwrap()
        .into_inner();
    assert_same_json(&list_json(&as_reader), &before.1, "reader list");

    // Another tenant: an empty list, and acme's workloads and instances do not exist.
    let (grpc, rest) = list_both(&fx, &mut client, "globex", list_req(None, "", "")).await;
    let theirs = grpc.unwrap();
    assert!(theirs.workloads.is_empty() && theirs.next_cursor.is_none());
    assert_same_json(&list_json(&theirs), &rest.1, "globex");
    let grpc = client
        .set_workload_labels(bearer(
            pb::SetWorkloadLabelsRequest {
                workload_id: a.id.clone(),
                labels: HashMap::new(),
            },
            "globex",
        ))
        .await
        .unwrap_err();
    let rest = rest_labels(&fx.server, &token("globex"), &a.id, &json!({"labels": {}})).await;
    assert_same_error(&grpc, Code::NotFound, &rest, 404);
    let grpc = client
        .close_workload(bearer(close(&a.id, None), "globex"))
        .await
        .unwrap_err();
    let rest = rest_close(&fx.server, &token("globex"), &a.id, None).await;
    assert_same_error(&grpc, Code::NotFound, &rest, 404);
    let grpc = client
        .create_workload(bearer(closed.clone(), "globex"))
        .await
        .unwrap_err();
    let rest = rest_call(
        &fx.server,
        reqwest::Method::POST,
        "/v1/workloads",
        &token("globex"),
        Some(&create_body(&closed)),
    )
    .await;
    assert_same_error(&grpc, Code::NotFound, &rest, 404);
    assert_eq!(grpc.message(), "instance i-ca not found");

    // Bad arguments: INVALID_ARGUMENT with REST's message, for creation, labels and closing.
    let from = rfc3339(fx.from);
    let mut bad_creates = vec![
        create_req(&["i-ca"], from.clone(), Some(rfc3339(fx.from - 1)), &[]),
        create_req(&["i-ca"], "soon".into(), None, &[]),
        create_req(&["i-ca", "i-ca"], from.clone(), None, &[]),
        create_req(&[], from.clone(), None, &[]),
        create_req(
            &["i-ca"],
            from.clone(),
            Some(rfc3339(fx.from + 40 * 86_400_000)),
            &[],
        ),
        create_req(&["i-ca"], from.clone(), None, &[("-bad key", "x")]),
    ];
    let mut blank = create_req(&["i-ca"], from.clone(), None, &[]);
    blank.label = " ".into();
    bad_creates.push(blank);
    let mut no_units = create_req(&["i-ca"], from.clone(), None, &[]);
    no_units.functional_units = 0.0;
    bad_creates.push(no_units);
    for bad in bad_creates {
        let body = create_body(&bad);
        let grpc = client
            .create_workload(bearer(bad, "acme"))
            .await
            .unwrap_err();
        let rest = rest_call(
            &fx.server,
            reqwest::Method::POST,
            "/v1/workloads",
            &admin,
            Some(&body),
        )
        .await;
        assert_same_error(&grpc, Code::InvalidArgument, &rest, 400);
    }
    let long_value = "v".repeat(201);
    for labels in [
        BTreeMap::from([("no spaces allowed".to_owned(), "x".to_owned())]),
        BTreeMap::from([("k".to_owned(), long_value)]),
        (0..65).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
    ] {
        let grpc = client
            .set_workload_labels(bearer(
                pb::SetWorkloadLabelsRequest {
                    workload_id: a.id.clone(),
                    labels: labels.clone().into_iter().collect(),
                },
                "acme",
            ))
            .await
            .unwrap_err();
        let rest = rest_labels(&fx.server, &admin, &a.id, &json!({ "labels": labels })).await;
        assert_same_error(&grpc, Code::InvalidArgument, &rest, 400);
    }
    for end in ["later", &rfc3339(started + 40 * 86_400_000)] {
        let grpc = client
            .close_workload(bearer(close(&third.id, Some(end.to_owned())), "acme"))
            .await
            .unwrap_err();
        let rest = rest_close(&fx.server, &admin, &third.id, Some(&json!({ "end": end }))).await;
        assert_same_error(&grpc, Code::InvalidArgument, &rest, 400);
    }
    let grpc = client
        .close_workload(bearer(close(&"x".repeat(300), None), "acme"))
        .await
        .unwrap_err();
    let rest = rest_close(&fx.server, &admin, &"x".repeat(300), None).await;
    assert_same_error(&grpc, Code::InvalidArgument, &rest, 400);
    drop(client);
    fx.server.stop().await;
}

async fn summary_both(
    fx: &RealData,
    client: &mut TenantQueryClient<Channel>,
    tenant: &str,
    from: &str,
    to: &str,
) -> (Result<pb::TenantSummary, tonic::Status>, (u16, Value)) {
    let mut query = Vec::new();
    if !from.is_empty() {
        query.push(format!("from={from}"));
    }
    if !to.is_empty() {
        query.push(format!("to={to}"));
    }
    let rest = rest_get(
        &fx.server,
        &format!("/v1/summary?{}", query.join("&")),
        tenant,
    )
    .await;
    let grpc = client
        .get_tenant_summary(bearer(
            pb::GetTenantSummaryRequest {
                from: from.into(),
                to: to.into(),
            },
            tenant,
        ))
        .await
        .map(tonic::Response::into_inner);
    (grpc, rest)
}

#[tokio::test]
async fn tenant_summaries_over_grpc_carry_the_worked_numbers() {
    let fx = real_data().await;
    let e = fx.expected();
    // i-a2 (see footprints_over_grpc_carry_the_numbers_worked_by_hand), PUE 1.
    let a2_co2e = ((30_000_000.0 + 40_000_002.0) * 200.0 + (30_000_001.0 + 20_000_001.0) * 300.0)
        / MJ_PER_KWH;
    let mut client = fx.server.client().await;
    // The replayed run (2023) and the harness's own data (2026), per tenant.
    let run = (rfc3339(fx.from - 600_000), rfc3339(fx.to + 600_000));
    let harness_range = (T0.to_string(), (T0 + 3_600_000).to_string());
    for (tenant, (from, to)) in [
        ("acme", &run),
        ("acme", &harness_range),
        ("globex", &run),
        ("globex", &harness_range),
    ] {
        let (grpc, rest) = summary_both(&fx, &mut client, tenant, from, to).await;
        assert_eq!(rest.0, 200, "{}", rest.1);
        let g = grpc.unwrap();
        // Per instance: (id, IT energy mJ, IT g CO2e, PUE), worked out by hand.
        let want: Vec<(&str, u64, f64, f64)> = match (tenant, from == &run.0) {
            ("acme", true) => vec![("i-ca", fx.ca_mj, e.marginal_g, PUE_CA)],
            ("acme", false) => vec![
                ("i-a1", (0..15).map(a1_energy).sum(), f64::NAN, PUE_R1),
                ("i-a2", 120_000_004, a2_co2e, 1.0),
            ],
            ("globex", true) => vec![],
            _ => vec![(
                "i-b1",
                4 * 5_000_000,
                4.0 * 5_000_000.0 / MJ_PER_KWH * 999.0,
                1.0,
            )],
        };
        for (at, v) in [("gRPC", summary_json(&g)), ("REST", rest.1.clone())] {
            let at = format!("{at} {tenant} {from}");
            let instances = v["instances"].as_array().unwrap();
            let ids: Vec<&str> = instances
                .iter()
                .map(|i| i["instance_id"].as_str().unwrap())
                .collect();
            let want_ids: Vec<&str> = want.iter().map(|w| w.0).collect();
            assert_eq!(ids, want_ids, "{at}");
            for (i, (id, mj, co2e, pue)) in instances.iter().zip(&want) {
                assert_eq!(i["it_energy_mj"], *mj, "{at} {id}");
                if !co2e.is_nan() {
                    let got = i["operational_it_co2e_g"].as_f64().unwrap();
                    assert!((got - co2e).abs() <= 1e-9 * co2e, "{at} {id}: {got} {co2e}");
                    let got = i["operational_co2e_g"].as_f64().unwrap();
                    assert!((got - co2e * pue).abs() <= 1e-9 * co2e, "{at} {id}: {got}");
                }
            }
            let total: u64 = want.iter().map(|w| w.1).sum();
            assert_eq!(v["totals"]["it_energy_mj"], total, "{at}");
            let without = &v["totals"]["provenance"]["energy_without_intensity_mj"];
            if tenant == "acme" && from == &run.0 {
                assert_eq!(*without, e.missing_mj, "{at}");
            }
        }
    }
    // Bad ranges: INVALID_ARGUMENT with REST's message (a missing bound included).
    let (from, to) = (rfc3339(fx.from), rfc3339(fx.to));
    let far = rfc3339(fx.from + 32 * 86_400_000);
    for (from, to) in [
        ("", to.as_str()),
        (from.as_str(), ""),
        (to.as_str(), from.as_str()),
        (from.as_str(), far.as_str()),
        ("last week", to.as_str()),
    ] {
        let (grpc, rest) = summary_both(&fx, &mut client, "acme", from, to).await;
        assert_same_error(&grpc.unwrap_err(), Code::InvalidArgument, &rest, 400);
    }
    drop(client);
    fx.server.stop().await;
}

#[tokio::test]
async fn instances_come_a_page_at_a_time_over_grpc_as_over_rest() {
    let fx = real_data().await;
    let mut client = fx.server.client().await;
    for (tenant, limit) in [
        ("acme", Some(1)),
        ("acme", Some(2)),
        ("acme", None),
        ("globex", Some(1)),
    ] {
        let mut cursor = String::new();
        let mut seen = Vec::new();
        loop {
            let req = pb::ListInstancesRequest {
                limit,
                cursor: cursor.clone(),
            };
            let mut path = format!("/v1/instances?cursor={cursor}");
            if cursor.is_empty() {
                path = "/v1/instances?".into();
            }
            if let Some(l) = limit {
                path.push_str(&format!("&limit={l}"));
            }
            let (status, rest) = rest_get(&fx.server, &path, tenant).await;
            assert_eq!(status, 200, "{rest}");
            let page = client
                .list_instances(bearer(req, tenant))
                .await
                .unwrap()
                .into_inner();
            let mut got = json!({
                "instances": page.instances.iter().map(instance_json).collect::<Vec<_>>(),
            });
            if let Some(c) = &page.next_cursor {
                got["next_cursor"] = json!(c);
            }
            assert_same_json(&got, &rest, &path);
            seen.extend(page.instances.iter().map(|i| i.instance_id.clone()));
            match page.next_cursor {
                Some(c) => cursor = c,
                None => break,
            }
        }
        let want: &[&str] = if tenant == "acme" {
            &["i-a1", "i-a2", "i-ca"]
        } else {
            &["i-b1"]
        };
        assert_eq!(seen, want, "{tenant} {limit:?}");
    }
    for (limit, cursor, path) in [
        (Some(0), "", "/v1/instances?limit=0"),
        (Some(1001), "", "/v1/instances?limit=1001"),
        (None, "i-b1", "/v1/instances?cursor=i-b1"),
    ] {
        let grpc = client
            .list_instances(bearer(
                pb::ListInstancesRequest {
                    limit,
                    cursor: cursor.into(),
                },
                "acme",
            ))
            .await
            .unwrap_err();
        let rest = rest_get(&fx.server, path, "acme").await;
        assert_same_error(&grpc, Code::InvalidArgument, &rest, 400);
    }
    drop(client);
    fx.server.stop().await;
}

#[tokio::test]
async fn mutating_rpcs_spend_the_rest_rate_limit_and_change_nothing_when_refused() {
    // Two requests at once, then one every 1000 s: the test never waits for a refill.
    let limiter = RateLimiter::new(RateLimit {
        per_second: 0.001,
        burst: 2,
    })
    .unwrap();
    let fx = real_data_with(|s| s.with_rate_limiter(limiter)).await;
    let mut client = fx.server.client().await;
    let (status, _) = rest_get(&fx.server, "/v1/workloads", "acme").await;
    assert_eq!(status, 200);
    let made = client
        .create_workload(bearer(
            create_req(&["i-ca"], rfc3339(fx.from), Some(rfc3339(fx.to)), &[]),
            "acme",
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .create_workload(bearer(
            create_req(&["i-ca"], rfc3339(fx.from), Some(rfc3339(fx.to)), &[]),
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some());
    let closing = client
        .close_workload(bearer(
            pb::CloseWorkloadRequest {
                workload_id: made.id.clone(),
                end: None,
            },
            "acme",
        ))
        .await
        .unwrap_err();
    assert_eq!(closing.code(), Code::ResourceExhausted);
    let stored =
        fx.h.store
            .list_workloads(&TenantScope::from_verified(TenantId::from("acme")))
            .await
            .unwrap();
    let ids: Vec<String> = stored.iter().map(|w| w.id.to_string()).collect();
    assert_eq!(ids, [made.id.as_str()]);
    // Another tenant's budget is its own.
    let theirs = client
        .list_workloads(bearer(list_req(None, "", ""), "globex"))
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.workloads.is_empty());
    drop(client);
    fx.server.stop().await;
}
