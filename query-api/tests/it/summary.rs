//! `GET /v1/summary` against the real SQLite store: per-instance and tenant totals by hand,
//! agreement with the 5-minute series, tenant isolation, redeliveries and request errors.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use wattprint_query_api::ApiLimits;

const DAY: i64 = 86_400_000;

/// `(energy mJ, intensity g/kWh if any)` of every GPU-interval of `instance`, by hand (see
/// `common::harness_with` and `tests/series.rs`).
fn intervals_of(instance: &str) -> Vec<(u64, Option<f64>)> {
    match instance {
        // i-a1: GPU-a1's four buckets; R1 intensity actual 100, actual 400, fallback 250, none.
        "i-a1" => {
            let half = |k: u64| a1_energy(k) / 2;
            let b0 = (0..4).map(a1_energy).sum::<u64>() + half(4);
            let b1 = (a1_energy(4) - half(4)) + (5..9).map(a1_energy).sum::<u64>() + half(9);
            let b2 = (a1_energy(9) - half(9)) + (10..14).map(a1_energy).sum::<u64>() + half(14);
            let b3 = a1_energy(14) - half(14);
            vec![
                (b0, Some(100.0)),
                (b1, Some(400.0)),
                (b2, Some(250.0)),
                (b3, None),
            ]
        }
        // i-a2: GPU-a2 one sample per bucket; GPU-a3 [100 s, 400 s] split 200 s / 100 s.
        // R2: actual 200, forecast 300.
        "i-a2" => vec![
            (30_000_000, Some(200.0)),
            (30_000_001, Some(300.0)),
            (40_000_002, Some(200.0)),
            (20_000_001, Some(300.0)),
        ],
        // i-b1: four 5_000_000 mJ minutes in bucket 0 at 999.
        "i-b1" => vec![(20_000_000, Some(999.0))],
        other => panic!("{other}"),
    }
}

/// Checks energy and emissions of one usage object against the intervals and PUE.
fn assert_usage(v: &Value, intervals: &[(u64, Option<f64>)], pue: f64) {
    let energy: u64 = intervals.iter().map(|(e, _)| e).sum();
    let co2e: f64 = intervals
        .iter()
        .filter_map(|(e, i)| i.map(|i| *e as f64 * i / MJ_PER_KWH))
        .sum();
    let missing: u64 = intervals
        .iter()
        .filter(|(_, i)| i.is_none())
        .map(|(e, _)| e)
        .sum();
    assert_eq!(v["it_energy_mj"], energy, "{v}");
    assert_close(&v["it_energy_kwh"], energy as f64 / MJ_PER_KWH);
    assert_close(&v["facility_energy_kwh"], energy as f64 / MJ_PER_KWH * pue);
    assert_close(&v["operational_it_co2e_g"], co2e);
    assert_close(&v["operational_co2e_g"], co2e * pue);
    assert_eq!(v["gpu_intervals"], intervals.len());
    assert_eq!(v["estimated_energy_mj"], 0);
    assert_eq!(v["provenance"]["energy_without_intensity_mj"], missing);
    assert_eq!(v["provenance"]["energy_measured_share"], 1.0);
}

async fn summary(h: &Harness, tenant: &str, from: i64, to: i64) -> Value {
    let r = get(
        &h.app,
        &format!("/v1/summary?from={from}&to={to}"),
        Some(&token(tenant)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test]
async fn a_month_summary_sums_every_interval_by_hand() {
    let h = harness().await;
    let b = summary(&h, "acme", T0, T0 + 30 * DAY).await;
    assert_eq!(b["from"], "2026-11-23T00:00:00.000Z");
    assert_eq!(b["to"], "2026-12-23T00:00:00.000Z");
    let instances = b["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    let (a1, a2) = (&instances[0], &instances[1]);
    assert_eq!(
        (&a1["instance_id"], &a1["gpus"]),
        (&json!("i-a1"), &json!(1))
    );
    assert_eq!(
        (&a2["instance_id"], &a2["gpus"]),
        (&json!("i-a2"), &json!(2))
    );
    assert_usage(a1, &intervals_of("i-a1"), PUE_R1);
    assert_usage(a2, &intervals_of("i-a2"), 1.0);
    assert_eq!(
        a1["provenance"],
        json!({
            "energy_measured_share": 1.0,
            "intervals_actual": 2,
            "intervals_forecast": 0,
            "intervals_fallback": 1,
            "intervals_missing_intensity": 1,
            "energy_without_intensity_mj": intervals_of("i-a1")[3].0,
            "intervals_replayed_intensity": 0,
        })
    );
    assert_eq!(a2["provenance"]["intervals_actual"], 2);
    assert_eq!(a2["provenance"]["intervals_forecast"], 2);
    // 15 one-minute samples; two 5-minute samples and one of 300 s.
    assert_eq!(a1["covered_gpu_ms"], 900_000);
    assert_eq!(a2["covered_gpu_ms"], 900_000);
    assert_close(&a1["power_max_w"], 350.014);
    assert_close(&a2["power_max_w"], 350.001);

    // Tenant totals: the two instances added.
    let t = &b["totals"];
    let e1 = a1["it_energy_mj"].as_u64().unwrap();
    let e2 = a2["it_energy_mj"].as_u64().unwrap();
    assert_eq!(t["it_energy_mj"], e1 + e2);
    assert_eq!(t["gpu_intervals"], 8);
    for field in [
        "operational_it_co2e_g",
        "operational_co2e_g",
        "facility_energy_kwh",
    ] {
        assert_close(
            &t[field],
            a1[field].as_f64().unwrap() + a2[field].as_f64().unwrap(),
        );
    }
    assert_eq!(t["provenance"]["intervals_actual"], 4);
    assert_close(&t["power_max_w"], 350.014);
}

#[tokio::test]
async fn the_summary_agrees_with_the_five_minute_series() {
    let h = harness().await;
    let t = token("acme");
    let b = summary(&h, "acme", T0, T0 + DAY).await;
    for inst in b["instances"].as_array().unwrap() {
        let id = inst["instance_id"].as_str().unwrap();
        let r = get(
            &h.app,
            &format!(
                "/v1/instances/{id}/series?from={T0}&to={}&step=5m",
                T0 + DAY
            ),
            Some(&t),
        )
        .await;
        let points = r.body["points"].as_array().unwrap();
        let energy: u64 = points
            .iter()
            .map(|p| p["energy_mj"].as_u64().unwrap())
            .sum();
        let co2e: f64 = points.iter().map(|p| p["co2e_g"].as_f64().unwrap()).sum();
        let facility: f64 = points
            .iter()
            .map(|p| p["facility_co2e_g"].as_f64().unwrap())
            .sum();
        assert_eq!(inst["it_energy_mj"], energy, "{id}");
        assert_close(&inst["operational_it_co2e_g"], co2e);
        assert_close(&inst["operational_co2e_g"], facility);
    }
}

#[tokio::test]
async fn the_range_is_whole_five_minute_buckets_overlapping_it() {
    let h = harness().await;
    // [T0 + 1 ms, T0 + 5 min + 1 ms) overlaps buckets 0 and 1.
    let b = summary(&h, "acme", T0 + 1, T0 + B + 1).await;
    assert_eq!(b["from"], "2026-11-23T00:00:00.000Z");
    assert_eq!(b["to"], "2026-11-23T00:10:00.000Z");
    assert_usage(&b["instances"][0], &intervals_of("i-a1")[..2], PUE_R1);
    // RFC 3339 works as well as milliseconds, in any offset.
    let r = get(
        &h.app,
        "/v1/summary?from=2026-11-23T01:00:00%2B01:00&to=2026-11-23T00:15:00Z",
        Some(&token("acme")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_usage(&r.body["instances"][0], &intervals_of("i-a1")[..3], PUE_R1);
    // Before any data: nothing.
    let b = summary(&h, "acme", T0 - DAY, T0).await;
    assert_eq!(b["instances"], json!([]));
    assert_eq!(b["totals"]["it_energy_mj"], 0);
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_usage() {
    let h = harness().await;
    let g = summary(&h, "globex", T0, T0 + DAY).await;
    let instances = g["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["instance_id"], "i-b1");
    assert_usage(&instances[0], &intervals_of("i-b1"), 1.0);
    assert_usage(&g["totals"], &intervals_of("i-b1"), 1.0);
    // acme's summary has nothing of globex's (which shares its time range).
    let a = summary(&h, "acme", T0, T0 + DAY).await;
    let ids: Vec<&str> = a["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i-a1", "i-a2"]);
    // A tenant with nothing gets an empty summary, not an error.
    let n = summary(&h, "initech", T0, T0 + DAY).await;
    assert_eq!(n["instances"], json!([]));
    assert_eq!(n["totals"]["it_energy_mj"], 0);
    assert_eq!(n["totals"]["power_max_w"], Value::Null);
    assert_eq!(n["totals"]["provenance"]["energy_measured_share"], 1.0);
    // Query parameters cannot name a tenant: unknown ones are ignored, the token decides.
    let r = get(
        &h.app,
        &format!("/v1/summary?from={T0}&to={}&tenant=acme", T0 + DAY),
        Some(&token("globex")),
    )
    .await;
    assert_eq!(r.body, g);
}

#[tokio::test]
async fn redelivered_samples_do_not_change_the_summary() {
    let h = harness().await;
    let before = summary(&h, "acme", T0, T0 + DAY).await;
    let again: Vec<_> = (0..15u64)
        .map(|k| {
            let start = T0 + 30_000 + 60_000 * k as i64;
            enriched(
                "acme",
                "i-a1",
                "GPU-a1",
                "R1",
                PUE_R1,
                k,
                start,
                start + 60_000,
                a1_energy(k),
                intensity_r1,
            )
        })
        .collect();
    use wattprint_store::Store;
    let out = h.store.write_samples(&again).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (0, 15));
    assert_eq!(summary(&h, "acme", T0, T0 + DAY).await, before);
}

#[tokio::test]
async fn bad_requests_are_problems() {
    let h = harness_with(ApiLimits {
        max_range_ms: 31 * DAY,
        max_points: 100,
        ..ApiLimits::default()
    })
    .await;
    let t = token("acme");
    for (uri, needle) in [
        ("/v1/summary".to_owned(), "from is required"),
        (format!("/v1/summary?from={T0}"), "to is required"),
        (format!("/v1/summary?to={T0}"), "from is required"),
        (format!("/v1/summary?from={T0}&to={T0}"), "must be after"),
        (
            format!("/v1/summary?from={}&to={T0}", T0 + B),
            "must be after",
        ),
        (
            format!("/v1/summary?from={T0}&to={}", T0 + 31 * DAY + 1),
            "exceeds the limit",
        ),
        (format!("/v1/summary?from=yesterday&to={T0}"), "from"),
        (
            format!("/v1/summary?from={T0}&to=253402300800000"),
            "outside years",
        ),
    ] {
        let r = get(&h.app, &uri, Some(&t)).await;
        r.assert_problem(StatusCode::BAD_REQUEST);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{uri}: {detail}");
    }
    // A month is within the default limit (a 31-day one included).
    let ok = get(
        &h.app,
        &format!("/v1/summary?from={T0}&to={}", T0 + 31 * DAY),
        Some(&t),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    // No token, a bad token: 401; another method: 405.
    let uri = format!("/v1/summary?from={T0}&to={}", T0 + DAY);
    get(&h.app, &uri, None)
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    get(&h.app, &uri, Some("not-a-jwt"))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED);
    post_json(&h.app, &uri, Some(&t), &json!({}))
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED);
}
