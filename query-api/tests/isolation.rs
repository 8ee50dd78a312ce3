//! Tenant isolation on every endpoint: tenant `globex` never sees or touches `acme`'s
//! instances, samples or workloads, and the 404 it gets is the one for things that do not exist.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

fn ids(body: &serde_json::Value, list: &str, key: &str) -> Vec<String> {
    body[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn instance_lists_hold_only_the_callers_instances() {
    let h = harness().await;
    let a = get(&h.app, "/v1/instances", Some(&token("acme"))).await;
    let b = get(&h.app, "/v1/instances", Some(&token("globex"))).await;
    assert_eq!(ids(&a.body, "instances", "instance_id"), ["i-a1", "i-a2"]);
    assert_eq!(ids(&b.body, "instances", "instance_id"), ["i-b1"]);
    // A tenant with nothing sees nothing.
    let c = get(&h.app, "/v1/instances", Some(&token("initech"))).await;
    assert_eq!(c.body, json!({"instances": []}));
}

#[tokio::test]
async fn series_of_another_tenants_instance_is_404_like_a_missing_one() {
    let h = harness().await;
    let range = format!("from={T0}&to={}", T0 + 4 * B);
    for step in ["raw", "5m", "1h", "1d"] {
        // The owner gets data, so the 404 below is isolation, not an empty store.
        let own = get(
            &h.app,
            &format!("/v1/instances/i-a1/series?{range}&step={step}"),
            Some(&token("acme")),
        )
        .await;
        assert_eq!(own.status, StatusCode::OK, "{step}: {}", own.text);
        assert!(!own.body["points"].as_array().unwrap().is_empty());

        let foreign = get(
            &h.app,
            &format!("/v1/instances/i-a1/series?{range}&step={step}"),
            Some(&token("globex")),
        )
        .await;
        foreign.assert_problem(StatusCode::NOT_FOUND);
        let absent = get(
            &h.app,
            &format!("/v1/instances/i-zz/series?{range}&step={step}"),
            Some(&token("globex")),
        )
        .await;
        absent.assert_problem(StatusCode::NOT_FOUND);
        assert_eq!(foreign.body["type"], absent.body["type"]);
        assert_eq!(
            foreign.body["detail"]
                .as_str()
                .unwrap()
                .replace("i-a1", "X"),
            absent.body["detail"].as_str().unwrap().replace("i-zz", "X"),
        );
    }
    // And the other way round.
    let r = get(
        &h.app,
        &format!("/v1/instances/i-b1/series?{range}"),
        Some(&token("acme")),
    )
    .await;
    r.assert_problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn workloads_are_invisible_to_other_tenants() {
    let h = harness().await;
    let id = create_workload(&h.app, "acme", &["i-a1"], T0, T0 + B, 1.0).await;
    assert_eq!(
        get(&h.app, &format!("/v1/workloads/{id}"), Some(&token("acme")))
            .await
            .status,
        StatusCode::OK
    );

    let r = get(
        &h.app,
        &format!("/v1/workloads/{id}"),
        Some(&token("globex")),
    )
    .await;
    r.assert_problem(StatusCode::NOT_FOUND);
    let absent = get(
        &h.app,
        "/v1/workloads/wl_ffffffffffffffff",
        Some(&token("globex")),
    )
    .await;
    absent.assert_problem(StatusCode::NOT_FOUND);
    assert_eq!(r.body["type"], absent.body["type"]);

    let list = get(&h.app, "/v1/workloads", Some(&token("globex"))).await;
    assert_eq!(list.body, json!({"workloads": []}));
    let own = get(&h.app, "/v1/workloads", Some(&token("acme"))).await;
    assert_eq!(ids(&own.body, "workloads", "id"), [id]);
}

#[tokio::test]
async fn a_workload_cannot_name_another_tenants_instance() {
    let h = harness().await;
    let t = token("globex");
    for instances in [json!(["i-a1"]), json!(["i-b1", "i-a2"])] {
        let r = post_json(
            &h.app,
            "/v1/workloads",
            Some(&t),
            &json!({
                "label": "steal", "instance_ids": instances, "from": T0, "to": T0 + B,
                "functional_unit": "run", "functional_units": 1,
            }),
        )
        .await;
        r.assert_problem(StatusCode::NOT_FOUND);
    }
    assert_eq!(
        get(&h.app, "/v1/workloads", Some(&t)).await.body,
        json!({"workloads": []})
    );
    // Its own instance works, and its footprint holds only its own energy (4 × 5_000_000 mJ at
    // 999 g/kWh), nothing of acme's samples in the same time range.
    let id = create_workload(&h.app, "globex", &["i-b1"], T0, T0 + B, 1.0).await;
    let r = get(&h.app, &format!("/v1/workloads/{id}"), Some(&t)).await;
    assert_eq!(r.body["footprint"]["it_energy_mj"], 20_000_000);
    assert_close(
        &r.body["footprint"]["operational_co2e_g"],
        20_000_000.0 * 999.0 / MJ_PER_KWH,
    );
}
