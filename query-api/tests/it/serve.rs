//! The real server on a TCP port: answers over HTTP and stops when its shutdown future resolves.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wattprint_query_api::{serve, ApiLimits, ApiState};
use wattprint_store::Store;

#[tokio::test]
async fn serves_over_tcp_until_shutdown() {
    let h = harness().await;
    let store: Arc<dyn Store> = h.store.clone();
    let state = ApiState::new(store, auth(), catalog(), ApiLimits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stop_rx.await;
    }));

    let client = reqwest::Client::new();
    let health: serde_json::Value = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let r = client
        .get(format!("http://{addr}/v1/instances"))
        .bearer_auth(token("globex"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["instances"][0]["instance_id"], "i-b1");
    let r = client
        .get(format!("http://{addr}/v1/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());
}
