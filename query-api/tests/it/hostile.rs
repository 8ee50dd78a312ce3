//! Hostile and malformed parameters (bad dates, huge or reversed ranges, overflowing numbers,
//! injection attempts, odd ids and tenant names) get 400 or 404 with a problem document, never
//! a 500, on the tenant and the operator routes.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::*;

#[tokio::test]
async fn bad_series_parameters_are_400() {
    let h = harness().await;
    let t = token("acme");
    let base = "/v1/instances/i-a1/series";
    let cases = [
        "from=yesterday&to=1795392600000".to_owned(),
        "from=2026-13-40T00:00:00Z&to=2026-11-24T00:00:00Z".to_owned(),
        "from=2026-11-23&to=2026-11-24".to_owned(),
        format!("from={}&to={T0}", T0 + B),
        format!("from={T0}&to={T0}"),
        format!("from={T0}&to={}&step=7m", T0 + B),
        format!("from={T0}&to={}&step=RAW", T0 + B),
        format!("from={T0}&to={}&step=", T0 + B),
        // 32 days > the 31-day limit; and the whole epoch.
        format!("from={T0}&to={}", T0 + 32 * 86_400_000),
        format!("from=0&to={T0}&step=1d"),
        "from=-9223372036854775808&to=9223372036854775807".to_owned(),
        "from=99999999999999999999999&to=1".to_owned(),
        "from=1e12&to=2e12".to_owned(),
        "from=1795392000000%27%20OR%201%3D1--&to=1795392600000".to_owned(),
        format!("from={T0}&to=NaN"),
    ];
    for q in &cases {
        let r = get(&h.app, &format!("{base}?{q}"), Some(&t)).await;
        r.assert_problem(StatusCode::BAD_REQUEST);
        assert!(!r.body["detail"].as_str().unwrap().is_empty(), "{q}");
    }
}

#[tokio::test]
async fn sql_ish_and_odd_ids_are_404_or_400_never_500() {
    let h = harness().await;
    let t = token("acme");
    let range = format!("from={T0}&to={}", T0 + B);
    let ids = [
        "i-a1'%20OR%20'1'%3D'1",
        "i-a1%22%3B%20DROP%20TABLE%20samples%3B--",
        "%25",
        "..",
        "i-a1%00",
        "%F0%9F%94%A5",
        "i-a1%2F..%2Fi-b1",
    ];
    for id in ids {
        for step in ["raw", "5m"] {
            let r = get(
                &h.app,
                &format!("/v1/instances/{id}/series?{range}&step={step}"),
                Some(&t),
            )
            .await;
            assert!(
                r.status == StatusCode::NOT_FOUND || r.status == StatusCode::BAD_REQUEST,
                "{id}: {} {}",
                r.status,
                r.text
            );
            r.assert_problem(r.status);
        }
        let r = get(&h.app, &format!("/v1/workloads/{id}"), Some(&t)).await;
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::BAD_REQUEST,
            "{id}: {}",
            r.text
        );
        r.assert_problem(r.status);
    }
    let long = "x".repeat(1000);
    get(
        &h.app,
        &format!("/v1/instances/{long}/series?{range}"),
        Some(&t),
    )
    .await
    .assert_problem(StatusCode::BAD_REQUEST);
    get(&h.app, &format!("/v1/workloads/{long}"), Some(&t))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    // The store is intact afterwards.
    let r = get(
        &h.app,
        &format!("/v1/instances/i-a1/series?{range}&step=raw"),
        Some(&t),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["points"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn sql_ish_workload_bodies_are_stored_as_text_or_refused() {
    let h = harness().await;
    let t = token("acme");
    let r = post_json(
        &h.app,
        "/v1/workloads",
        Some(&t),
        &serde_json::json!({
            "label": "x'); DROP TABLE workloads; --",
            "instance_ids": ["i-a1' OR '1'='1"],
            "from": T0, "to": T0 + B, "functional_unit": "run", "functional_units": 1,
        }),
    )
    .await;
    r.assert_problem(StatusCode::NOT_FOUND);
    let r = post_json(
        &h.app,
        "/v1/workloads",
        Some(&t),
        &serde_json::json!({
            "label": "x'); DROP TABLE workloads; --",
            "instance_ids": ["i-a1"],
            "from": T0, "to": T0 + B, "functional_unit": "run", "functional_units": 1,
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let list = get(&h.app, "/v1/workloads", Some(&t)).await;
    assert_eq!(
        list.body["workloads"][0]["label"],
        "x'); DROP TABLE workloads; --"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_creates_nothing() {
    let h = harness().await;
    let t = token("acme");
    let body = serde_json::json!({
        "label": "x".repeat(100 << 10),
        "instance_ids": ["i-a1"],
        "from": T0, "to": T0 + B, "functional_unit": "run", "functional_units": 1,
    });
    let r = post_json(&h.app, "/v1/workloads", Some(&t), &body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    let list = get(&h.app, "/v1/workloads", Some(&t)).await;
    assert_eq!(list.body["workloads"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let h = harness().await;
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/workloads")
        .header("authorization", format!("Bearer {}", token("acme")))
        .body(axum::body::Body::from("{}"))
        .unwrap();
    send(&h.app, req)
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// Range queries every ranged route must refuse with 400: bad dates, reversed, empty and huge
/// ranges, overflowing numbers, injection attempts, repeated parameters.
fn hostile_ranges() -> Vec<String> {
    vec![
        String::new(),
        format!("from={T0}"),
        format!("to={T0}"),
        "from=yesterday&to=today".to_owned(),
        "from=2026-02-30T00:00:00Z&to=2026-03-01T00:00:00Z".to_owned(),
        "from=2026-11-23T25:00:00Z&to=2026-11-24T00:00:00Z".to_owned(),
        "from=2026-11-23&to=2026-11-24".to_owned(),
        format!("from={}&to={T0}", T0 + B),
        format!("from={T0}&to={T0}"),
        format!("from={T0}&to={}", T0 + 32 * 86_400_000),
        "from=0&to=9223372036854775807".to_owned(),
        "from=-9223372036854775808&to=9223372036854775807".to_owned(),
        "from=99999999999999999999999&to=1".to_owned(),
        "from=1e12&to=2e12".to_owned(),
        format!("from={T0}&to=NaN"),
        format!("from={T0}&to=Infinity"),
        "from=1795392000000%27%20OR%201%3D1--&to=1795392600000".to_owned(),
        "from=1795392000000;DROP%20TABLE%20samples&to=1795392600000".to_owned(),
        format!("from={T0}&from={}&to={}", T0 + B, T0 + 2 * B),
        format!("from=%00{T0}&to={}", T0 + B),
    ]
}

#[tokio::test]
async fn hostile_ranges_are_400_on_summary_restatements_and_the_operator_summary() {
    let h = harness().await;
    let tenant = token("acme");
    let operator = role_token("billing@provider", wattprint_query_api::Role::Operator);
    for (route, bearer) in [
        ("/v1/summary", &tenant),
        ("/v1/restatements", &tenant),
        ("/v1/operator/tenants/acme/summary", &operator),
    ] {
        for q in hostile_ranges() {
            let r = get(&h.app, &format!("{route}?{q}"), Some(bearer)).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{route}?{q}: {}", r.text);
            r.assert_problem(StatusCode::BAD_REQUEST);
            assert!(
                !r.body["detail"].as_str().unwrap().is_empty(),
                "{route}?{q}"
            );
        }
        // The same route answers a sane range, so the 400s above are the parameters'.
        let ok = get(
            &h.app,
            &format!("{route}?from={T0}&to={}", T0 + B),
            Some(bearer),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{route}: {}", ok.text);
    }
}

#[tokio::test]
async fn hostile_tenant_names_on_the_operator_routes_are_400_or_an_empty_tenant() {
    let h = harness().await;
    let operator = role_token("billing@provider", wattprint_query_api::Role::Operator);
    let range = format!("from={T0}&to={}", T0 + 4 * B);
    for tenant in ["acme%00", &"t".repeat(1000)] {
        get(
            &h.app,
            &format!("/v1/operator/tenants/{tenant}/summary?{range}"),
            Some(&operator),
        )
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    }
    // Injection attempts are names of tenants that do not exist: nothing of acme or globex.
    for tenant in [
        "acme'%20OR%20'1'%3D'1",
        "acme%22%3B%20DROP%20TABLE%20samples%3B--",
        "%25",
        "acme%2F..%2Fglobex",
    ] {
        let r = get(
            &h.app,
            &format!("/v1/operator/tenants/{tenant}/summary?{range}"),
            Some(&operator),
        )
        .await;
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
            "{tenant}: {} {}",
            r.text,
            r.status
        );
        if r.status == StatusCode::OK {
            assert_eq!(r.body["totals"]["it_energy_mj"], 0, "{tenant}");
            assert_eq!(r.body["instances"], serde_json::json!([]), "{tenant}");
        }
    }
    // The store is intact: acme's summary still has its energy.
    let r = get(
        &h.app,
        &format!("/v1/operator/tenants/acme/summary?{range}"),
        Some(&operator),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["totals"]["it_energy_mj"].as_u64().unwrap() > 0);
}
