//! Authentication: every tenant route refuses requests without a valid token with 401 and a
//! problem document; health needs no token.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::StatusCode;
use common::*;
use wattprint_core::TenantId;
use wattprint_query_api::{mint_token, mint_token_at, AuthConfig};

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
