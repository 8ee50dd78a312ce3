//! The bad-input corpus kept in `tests/corpus/` against the real router: refused tokens and
//! hostile requests are each answered with a problem document (4xx), never a 5xx, and leave
//! the tenant's data as it was.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use common::*;
use serde_json::Value;
use std::path::Path;

/// Non-comment lines of a corpus file, each a JSON value.
fn json_lines(rel: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus")
        .join(rel);
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Why `r` is not a problem document with a 4xx status, if it is not.
fn not_a_client_problem(name: &str, r: &Reply) -> Option<String> {
    let ok = r.status.is_client_error()
        && r.content_type() == "application/problem+json"
        && r.body["status"] == r.status.as_u16()
        && r.body["detail"].as_str().is_some_and(|d| !d.is_empty());
    (!ok).then(|| format!("{name}: {} {:.200}", r.status, r.text))
}

#[tokio::test]
async fn every_corpus_token_is_refused_and_a_good_one_still_works() {
    let h = harness().await;
    let cases = json_lines("tokens.jsonl");
    assert!(cases.len() >= 30, "{}", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let value = case["authorization"].as_str().unwrap();
        let mut req = Request::builder().method(Method::GET).uri("/v1/instances");
        // A header value that HTTP cannot carry is refused by the client library already.
        match axum::http::HeaderValue::from_str(value) {
            Ok(v) => req = req.header(header::AUTHORIZATION, v),
            Err(_) => continue,
        }
        let r = send(&h.app, req.body(Body::empty()).unwrap()).await;
        wrong.extend(not_a_client_problem(name, &r));
        if !matches!(r.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            wrong.push(format!(
                "{name}: {} is not 401 or 403: {:.300}",
                r.status, r.text
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let ok = get(&h.app, "/v1/instances", Some(&token("acme"))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

#[tokio::test]
async fn every_corpus_request_is_a_client_problem_and_changes_nothing() {
    let h = harness().await;
    let t = token("acme");
    let before = get(&h.app, "/v1/workloads", Some(&t)).await;
    let cases = json_lines("requests.jsonl");
    assert!(cases.len() >= 50, "{}", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let method = Method::from_bytes(case["method"].as_str().unwrap().as_bytes()).unwrap();
        let body = match &case["body"] {
            Value::Null if method == Method::GET || method == Method::DELETE => Body::empty(),
            Value::String(raw) => Body::from(raw.clone()),
            other => Body::from(other.to_string()),
        };
        let req = Request::builder()
            .method(method)
            .uri(case["path"].as_str().unwrap())
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap();
        let r = send(&h.app, req).await;
        wrong.extend(not_a_client_problem(name, &r));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let after = get(&h.app, "/v1/workloads", Some(&t)).await;
    assert_eq!(before.body, after.body);
}
