//! Answers given without a verified token are rate limited per client IP on the real server
//! (TCP, so the peer address is known): bad-token floods on REST and gRPC, health and OpenAPI
//! all spend the IP's bucket, then get 429 with `Retry-After`; authenticated answers do not.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;

use common::*;
use wattprint_proto::v1::ListInstancesRequest;
use wattprint_query_api::{ApiLimits, ApiState, RateLimit, UnauthenticatedLimiter};
use wattprint_store::Store;

async fn server(h: &Harness, burst: u32) -> Server {
    let store: Arc<dyn Store> = h.store.clone();
    let limiter = UnauthenticatedLimiter::new(RateLimit {
        per_second: 0.05,
        burst,
    })
    .unwrap();
    let state = ApiState::new(store, auth(), catalog(), ApiLimits::default())
        .with_unauthenticated_limiter(limiter);
    Server::start_state(state).await
}

fn assert_too_many(r: &reqwest::Response) {
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&wait), "retry after {wait} s");
}

#[tokio::test]
async fn a_bad_token_flood_is_throttled_per_ip_and_good_tokens_are_not_charged() {
    let h = harness().await;
    let s = server(&h, 5).await;
    let http = reqwest::Client::new();
    let instances = s.url("/v1/instances");
    // Authenticated answers spend nothing: many more than the burst.
    for _ in 0..12 {
        let r = http
            .get(&instances)
            .bearer_auth(token("globex"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A guessing flood: the burst of 401s, then 429s.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let r = http
            .get(&instances)
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert_too_many(&r);
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // Blocked: even a good token (it cannot be told from a guess without verifying it), health,
    // and gRPC, which gets RESOURCE_EXHAUSTED with the wait as metadata.
    let r = http
        .get(&instances)
        .bearer_auth(token("globex"))
        .send()
        .await
        .unwrap();
    assert_too_many(&r);
    assert_too_many(&http.get(s.url("/healthz")).send().await.unwrap());
    let mut client = s.client().await;
    let mut req = tonic::Request::new(ListInstancesRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("globex")).parse().unwrap(),
    );
    let status = client.list_instances(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
    s.stop().await;
}

#[tokio::test]
async fn health_openapi_and_grpc_auth_failures_spend_the_same_bucket() {
    let h = harness().await;
    let s = server(&h, 4).await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/openapi.json", "/no-such-route"] {
        let r = http.get(s.url(path)).send().await.unwrap();
        assert_ne!(r.status(), 429, "{path}");
    }
    let mut client = s.client().await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let mut req = tonic::Request::new(ListInstancesRequest::default());
        req.metadata_mut()
            .insert("authorization", "Bearer not-a-token".parse().unwrap());
        codes.push(client.list_instances(req).await.unwrap_err().code());
    }
    assert_eq!(
        codes,
        [
            tonic::Code::Unauthenticated,
            tonic::Code::ResourceExhausted,
            tonic::Code::ResourceExhausted
        ]
    );
    assert_too_many(&http.get(s.url("/openapi.json")).send().await.unwrap());
    s.stop().await;
}

#[tokio::test]
async fn without_a_limiter_unauthenticated_answers_are_not_limited() {
    let h = harness().await;
    let s = Server::start(&h).await;
    let http = reqwest::Client::new();
    for i in 0..150 {
        let r = http
            .get(s.url("/v1/instances"))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    s.stop().await;
}
