//! Authentication and authorisation: every tenant route refuses requests without a valid token
//! with 401 and a problem document (health needs no token); readers read, only admins write,
//! operators reach every tenant through the operator routes and nothing else; each tenant has
//! its own rate limit.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, SystemTime};

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::StatusCode;
use common::*;
use wattprint_core::{TenantId, UnixMillis};
use wattprint_query_api::{
    mint_token, mint_token_at, router, ApiLimits, ApiState, AuthConfig, RateLimit, RateLimiter,
    Role,
};

const ROUTES: [&str; 4] = [
    "/v1/instances",
    "/v1/instances/i-a1/series?from=1795392000000&to=1795392600000",
    "/v1/workloads",
    "/v1/workloads/wl_0000000000000000",
];

async fn assert_401(h: &Harness, bearer: Option<&str>, expect_error: bool) {
    for route in ROUTES {
        let r = get(&h.app, route, bearer).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
        let challenge = r.headers.get(WWW_AUTHENTICATE).unwrap().to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert_eq!(
            challenge.contains("invalid_token"),
            expect_error,
            "{challenge}"
        );
    }
    let r = post_json(&h.app, "/v1/workloads", bearer, &serde_json::json!({})).await;
    r.assert_problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_needs_no_token() {
    let h = harness().await;
    let r = get(&h.app, "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let h = harness().await;
    let r = get(&h.app, "/v1/instances", Some(&token("acme"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.content_type(), "application/json");
}

#[tokio::test]
async fn missing_token_is_401() {
    let h = harness().await;
    assert_401(&h, None, false).await;
}

#[tokio::test]
async fn garbage_tokens_are_401() {
    let h = harness().await;
    for garbage in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.eyJ0ZW5hbnQiOiJhY21lIn0.",
    ] {
        assert_401(&h, Some(garbage), true).await;
    }
    // Not a bearer scheme at all.
    let req = axum::http::Request::builder()
        .uri("/v1/instances")
        .header("authorization", format!("Basic {}", token("acme")))
        .body(axum::body::Body::empty())
        .unwrap();
    send(&h.app, req)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_token_is_401() {
    let h = harness().await;
    let issued = SystemTime::now() - Duration::from_secs(3600);
    let t = mint_token_at(
        &auth(),
        &TenantId::from("acme"),
        issued,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_401(&h, Some(&t), true).await;
    let r = get(&h.app, "/v1/instances", Some(&t)).await;
    assert_eq!(r.body["detail"], "token expired");
}

#[tokio::test]
async fn token_not_yet_valid_is_401() {
    let h = harness().await;
    let issued = SystemTime::now() + Duration::from_secs(3600);
    let t = mint_token_at(
        &auth(),
        &TenantId::from("acme"),
        issued,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_401(&h, Some(&t), true).await;
}

#[tokio::test]
async fn wrong_issuer_audience_or_secret_is_401() {
    let h = harness().await;
    let tenant = TenantId::from("acme");
    for other in [
        AuthConfig {
            issuer: "someone-else".into(),
            ..auth()
        },
        AuthConfig {
            audience: "another-api".into(),
            ..auth()
        },
        AuthConfig {
            hs256_secret: "a-different-secret".into(),
            ..auth()
        },
    ] {
        let t = mint_token(&other, &tenant, Duration::from_secs(600)).unwrap();
        assert_401(&h, Some(&t), true).await;
    }
}

#[tokio::test]
async fn unknown_routes_are_problem_documents() {
    let h = harness().await;
    get(&h.app, "/v2/nothing", None)
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    let r = send(
        &h.app,
        axum::http::Request::builder()
            .method("DELETE")
            .uri("/v1/instances")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    r.assert_problem(StatusCode::METHOD_NOT_ALLOWED);
}

// ---------------------------------------------------------------------------------------------
// Roles: reader, admin, operator.

fn workload_body() -> serde_json::Value {
    serde_json::json!({
        "label": "role test", "instance_ids": ["i-a1"], "from": T0, "to": T0 + B,
        "functional_unit": "run", "functional_units": 1,
    })
}

async fn send_json(
    h: &Harness,
    method: &str,
    uri: &str,
    bearer: &str,
    body: &serde_json::Value,
) -> Reply {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    send(&h.app, req).await
}

#[tokio::test]
async fn readers_read_and_only_admins_create_label_and_close_workloads() {
    let h = harness().await;
    let reader = role_token("acme", Role::Reader);
    let admin = role_token("acme", Role::Admin);
    for route in ROUTES {
        let r = get(&h.app, route, Some(&reader)).await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::NOT_FOUND,
            "{route}"
        );
    }
    let r = post_json(&h.app, "/v1/workloads", Some(&reader), &workload_body()).await;
    r.assert_problem(StatusCode::FORBIDDEN);
    assert_eq!(r.body["type"], "urn:wattprint:problem:forbidden");
    assert!(
        r.body["detail"].as_str().unwrap().contains("admin"),
        "{}",
        r.text
    );
    // Refused before anything was stored.
    let list = get(&h.app, "/v1/workloads", Some(&reader)).await;
    assert_eq!(list.body["workloads"], serde_json::json!([]));

    let r = post_json(&h.app, "/v1/workloads", Some(&admin), &workload_body()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // The reader sees what the admin created, and cannot change it.
    let list = get(&h.app, "/v1/workloads", Some(&reader)).await;
    assert_eq!(list.body["workloads"][0]["id"], id.as_str());
    let labels = send_json(
        &h,
        "PUT",
        &format!("/v1/workloads/{id}/labels"),
        &reader,
        &serde_json::json!({"labels": {"team": "x"}}),
    )
    .await;
    labels.assert_problem(StatusCode::FORBIDDEN);
    let close = send_json(
        &h,
        "POST",
        &format!("/v1/workloads/{id}/close"),
        &reader,
        &serde_json::json!({}),
    )
    .await;
    close.assert_problem(StatusCode::FORBIDDEN);
    let after = get(&h.app, &format!("/v1/workloads/{id}"), Some(&reader)).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body["to"], r.body["to"]);
    assert_eq!(after.body["labels"], r.body["labels"]);
}

/// An HS256 token signed with the harness secret carrying `extra` claims.
fn custom_token(extra: serde_json::Value) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": "someone", "tenant": "acme", "iss": auth().issuer, "aud": auth().audience,
        "iat": now, "nbf": now, "exp": now + 600,
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(auth().hs256_secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn roles_come_from_the_roles_claim_or_wattprint_scopes_and_default_to_reader() {
    let h = harness().await;
    let cases = [
        (serde_json::json!({}), StatusCode::FORBIDDEN),
        (serde_json::json!({"roles": []}), StatusCode::FORBIDDEN),
        (
            serde_json::json!({"roles": ["reader"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({"roles": ["Admin", "superuser"]}),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({"scope": "openid admin"}),
            StatusCode::FORBIDDEN,
        ),
        (
            serde_json::json!({"roles": ["reader", "admin"]}),
            StatusCode::CREATED,
        ),
        (
            serde_json::json!({"scope": "openid wattprint:admin profile"}),
            StatusCode::CREATED,
        ),
    ];
    for (extra, want) in cases {
        let r = post_json(
            &h.app,
            "/v1/workloads",
            Some(&custom_token(extra.clone())),
            &workload_body(),
        )
        .await;
        assert_eq!(r.status, want, "{extra}: {}", r.text);
    }
    // A tenant-less token that is not an operator's is no token at all.
    let r = get(
        &h.app,
        "/v1/instances",
        Some(&custom_token(
            serde_json::json!({"tenant": null, "roles": ["admin"]}),
        )),
    )
    .await;
    r.assert_problem(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn operators_reach_every_tenant_only_through_the_operator_routes() {
    let h = harness().await;
    let op = role_token("billing@provider", Role::Operator);
    // Tenant routes refuse an operator token, REST and gRPC.
    for route in ROUTES {
        get(&h.app, route, Some(&op))
            .await
            .assert_problem(StatusCode::FORBIDDEN);
    }
    post_json(&h.app, "/v1/workloads", Some(&op), &workload_body())
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    // A tenant claim does not make an operator token a tenant's.
    let op_with_tenant = custom_token(serde_json::json!({"roles": ["operator"]}));
    get(&h.app, "/v1/instances", Some(&op_with_tenant))
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    let mut req = tonic::Request::new(wattprint_proto::v1::ListInstancesRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {op}").parse().unwrap());
    let status = client.list_instances(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    server.stop().await;

    // The operator's own routes: every tenant of the inventory.
    let r = get(&h.app, "/v1/operator/tenants", Some(&op)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.body,
        serde_json::json!({"tenants": [
            {"tenant": "acme", "instances": 2, "gpus": 3},
            {"tenant": "globex", "instances": 1, "gpus": 1},
        ]})
    );
    // Each tenant's summary is exactly the one the tenant gets itself.
    let range = format!("from={T0}&to={}", T0 + 4 * B);
    for tenant in ["acme", "globex"] {
        let own = get(
            &h.app,
            &format!("/v1/summary?{range}"),
            Some(&token(tenant)),
        )
        .await;
        let seen = get(
            &h.app,
            &format!("/v1/operator/tenants/{tenant}/summary?{range}"),
            Some(&op),
        )
        .await;
        assert_eq!(seen.status, StatusCode::OK, "{}", seen.text);
        assert_eq!(seen.body, own.body, "{tenant}");
    }
    // Real numbers: globex's 4 samples of 5 000 000 mJ, all in the first bucket.
    let globex = get(
        &h.app,
        &format!("/v1/operator/tenants/globex/summary?{range}"),
        Some(&op),
    )
    .await;
    assert_eq!(globex.body["totals"]["it_energy_mj"], 20_000_000);
    // A tenant without instances has an empty summary, not an error.
    let none = get(
        &h.app,
        &format!("/v1/operator/tenants/initech/summary?{range}"),
        Some(&op),
    )
    .await;
    assert_eq!(none.status, StatusCode::OK);
    assert_eq!(none.body["totals"]["it_energy_mj"], 0);
    assert_eq!(none.body["instances"], serde_json::json!([]));
    // Every tenant's statement of a month, stacked: exactly the rows each tenant's own CSV has.
    let month = wattprint_query_api::statements::Period::containing(UnixMillis(T0));
    let export = get(
        &h.app,
        &format!("/v1/operator/statements/{month}.csv"),
        Some(&op),
    )
    .await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.text);
    assert_eq!(export.content_type(), "text/csv; charset=utf-8");
    let mut want = String::new();
    for tenant in ["acme", "globex"] {
        let own = get(
            &h.app,
            &format!("/v1/statements/{month}.csv"),
            Some(&token(tenant)),
        )
        .await;
        assert_eq!(own.status, StatusCode::OK, "{}", own.text);
        let (header, rows) = own.text.split_once('\n').unwrap();
        if want.is_empty() {
            want = format!("{header}\n");
        }
        want.push_str(rows);
    }
    assert_eq!(export.text, want);
    assert!(export.text.contains(",globex,") && export.text.contains(",20000000,"));
    let parquet = get(
        &h.app,
        &format!("/v1/operator/statements/{month}.parquet"),
        Some(&op),
    )
    .await;
    assert_eq!(parquet.status, StatusCode::OK);
    assert_eq!(parquet.content_type(), "application/vnd.apache.parquet");
    assert!(parquet.text.starts_with("PAR1"));
    for bad in [
        format!("{month}"),
        format!("{month}.xlsx"),
        "2026-13.csv".into(),
    ] {
        get(&h.app, &format!("/v1/operator/statements/{bad}"), Some(&op))
            .await
            .assert_problem(StatusCode::BAD_REQUEST);
    }
    // Bad ranges are 400s.
    for q in ["", "from=yesterday&to=1", "from=0&to=9223372036854775807"] {
        get(
            &h.app,
            &format!("/v1/operator/tenants/acme/summary?{q}"),
            Some(&op),
        )
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn tenant_tokens_never_reach_the_operator_routes() {
    let h = harness().await;
    let range = format!("from={T0}&to={}", T0 + B);
    for route in [
        "/v1/operator/tenants".to_owned(),
        format!("/v1/operator/tenants/globex/summary?{range}"),
        format!("/v1/operator/tenants/acme/summary?{range}"),
        "/v1/operator/statements/2026-11.csv".to_owned(),
        "/v1/operator/statements/2026-11.parquet".to_owned(),
    ] {
        for role in [Role::Reader, Role::Admin] {
            let r = get(&h.app, &route, Some(&role_token("acme", role))).await;
            r.assert_problem(StatusCode::FORBIDDEN);
            assert!(!r.text.contains("i-b1") && !r.text.contains("it_energy"));
        }
        get(&h.app, &route, None)
            .await
            .assert_problem(StatusCode::UNAUTHORIZED);
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limits.

#[tokio::test]
async fn each_tenant_has_its_own_request_budget_on_rest_and_grpc() {
    let h = harness().await;
    // Three requests at once, then one every 1000 s: the test never waits for a refill.
    let limiter = RateLimiter::new(RateLimit {
        per_second: 0.001,
        burst: 3,
    })
    .unwrap();
    let store: std::sync::Arc<dyn wattprint_store::Store> = h.store.clone();
    let state =
        ApiState::new(store, auth(), catalog(), ApiLimits::default()).with_rate_limiter(limiter);
    let app = router(state.clone());
    let acme = token("acme");
    for _ in 0..3 {
        assert_eq!(
            get(&app, "/v1/instances", Some(&acme)).await.status,
            StatusCode::OK
        );
    }
    let r = get(&app, "/v1/instances", Some(&acme)).await;
    r.assert_problem(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["type"], "urn:wattprint:problem:rate-limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1000).contains(&retry), "Retry-After {retry}");
    // Another token of the same tenant shares the budget.
    get(
        &app,
        "/v1/instances",
        Some(&role_token("acme", Role::Reader)),
    )
    .await
    .assert_problem(StatusCode::TOO_MANY_REQUESTS);
    // Bad tokens are refused as such, not counted against anyone.
    get(&app, "/v1/instances", Some("garbage"))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    // Other tenants and the operator are unaffected.
    let globex = token("globex");
    for _ in 0..2 {
        assert_eq!(
            get(&app, "/v1/instances", Some(&globex)).await.status,
            StatusCode::OK
        );
    }
    let op = role_token("billing@provider", Role::Operator);
    assert_eq!(
        get(&app, "/v1/operator/tenants", Some(&op)).await.status,
        StatusCode::OK
    );

    // gRPC spends the same budgets: globex has one request left, acme none.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wattprint_query_api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let mut client = wattprint_proto::v1::tenant_query_client::TenantQueryClient::connect(format!(
        "http://{addr}"
    ))
    .await
    .unwrap();
    let call = |token: String| {
        let mut req = tonic::Request::new(wattprint_proto::v1::ListInstancesRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    };
    let ok = client.list_instances(call(globex.clone())).await.unwrap();
    assert_eq!(ok.into_inner().instances.len(), 1);
    for t in [globex, acme] {
        let status = client.list_instances(call(t)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry: u64 = status
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=1000).contains(&retry));
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

fn with<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn grpc_writes_need_the_admin_role_too() {
    use wattprint_proto::v1::{
        CloseWorkloadRequest, CreateWorkloadRequest, SetWorkloadLabelsRequest,
    };
    let h = harness().await;
    let id = create_workload(&h.app, "acme", &["i-a1"], T0, T0 + B, 1.0).await;
    let server = Server::start(&h).await;
    let mut client = server.client().await;
    let create = || CreateWorkloadRequest {
        label: "grpc".into(),
        instance_ids: vec!["i-a1".into()],
        from: T0.to_string(),
        to: Some((T0 + B).to_string()),
        functional_unit: "run".into(),
        functional_units: 1.0,
        labels: Default::default(),
    };
    let reader = role_token("acme", Role::Reader);
    let op = role_token("billing@provider", Role::Operator);
    for token in [&reader, &op] {
        let denied = [
            client.create_workload(with(create(), token)).await.err(),
            client
                .set_workload_labels(with(
                    SetWorkloadLabelsRequest {
                        workload_id: id.clone(),
                        labels: [("team".to_owned(), "x".to_owned())].into(),
                    },
                    token,
                ))
                .await
                .err(),
            client
                .close_workload(with(
                    CloseWorkloadRequest {
                        workload_id: id.clone(),
                        end: None,
                    },
                    token,
                ))
                .await
                .err(),
        ];
        for status in denied {
            assert_eq!(status.unwrap().code(), tonic::Code::PermissionDenied);
        }
    }
    // Nothing changed; the admin's create goes through.
    let list = get(&h.app, "/v1/workloads", Some(&reader)).await;
    assert_eq!(list.body["workloads"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["workloads"][0]["labels"], serde_json::json!({}));
    let created = client
        .create_workload(with(create(), &token("acme")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.label, "grpc");
    server.stop().await;
}
