//! Series aggregation against the real SQLite store: sums are exact, emissions are Σ E_i × I_i
//! by hand, raw samples come back as stored.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::*;
use wattprint_query_api::ApiLimits;

/// Energy of i-a1's four buckets, by hand. Sample k spans [30 s + k min, 90 s + k min]; samples
/// 4, 9 and 14 straddle the edges at 5, 10 and 15 min, half on each side.
fn a1_buckets() -> [u64; 4] {
    let half = |k: u64| a1_energy(k) / 2; // floor of the first half
    let b0 = (0..4).map(a1_energy).sum::<u64>() + half(4);
    let b1 = (a1_energy(4) - half(4)) + (5..9).map(a1_energy).sum::<u64>() + half(9);
    let b2 = (a1_energy(9) - half(9)) + (10..14).map(a1_energy).sum::<u64>() + half(14);
    let b3 = a1_energy(14) - half(14);
    [b0, b1, b2, b3]
}

#[test]
fn hand_numbers_are_what_we_think() {
    assert_eq!(
        a1_buckets(),
        [81_008_024, 90_032_597, 90_057_673, 9_007_021]
    );
    assert_eq!(
        a1_buckets().iter().sum::<u64>(),
        (0..15).map(a1_energy).sum::<u64>()
    );
}

#[tokio::test]
async fn five_minute_series_sums_exactly_and_uses_each_buckets_intensity() {
    let h = harness().await;
    let t = token("acme");
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a1/series?from={T0}&to={}&step=5m",
            T0 + 4 * B
        ),
        Some(&t),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["instance_id"], "i-a1");
    assert_eq!(r.body["step"], "5m");
    assert_eq!(r.body["from"], "2026-11-23T00:00:00.000Z");
    assert_eq!(r.body["to"], "2026-11-23T00:20:00.000Z");
    let points = r.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    let e = a1_buckets();
    let intensities = [Some(100.0), Some(400.0), Some(250.0), None];
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p["energy_mj"], e[i], "bucket {i}");
        assert_close(&p["energy_kwh"], e[i] as f64 / MJ_PER_KWH);
        match intensities[i] {
            Some(v) => {
                assert_close(&p["intensity_g_per_kwh"], v);
                assert_close(&p["co2e_g"], e[i] as f64 * v / MJ_PER_KWH);
                assert_close(&p["facility_co2e_g"], e[i] as f64 * v / MJ_PER_KWH * PUE_R1);
                assert_eq!(p["co2e_missing_energy_mj"], 0);
            }
            None => {
                assert!(p["intensity_g_per_kwh"].is_null());
                assert_eq!(p["co2e_g"], 0.0);
                assert_eq!(p["co2e_missing_energy_mj"], e[i]);
                assert_eq!(p["intensity_kinds"]["missing"], 1);
            }
        }
    }
    assert_eq!(points[0]["start"], "2026-11-23T00:00:00.000Z");
    assert_eq!(points[0]["end"], "2026-11-23T00:05:00.000Z");
    assert_eq!(points[2]["intensity_kinds"]["fallback_average"], 1);
    assert_eq!(points[1]["intensity_kinds"]["actual"], 1);
    // Bucket 0 is covered from 30 s on; bucket 3 for its first 30 s.
    assert_close(&points[0]["coverage"], 270_000.0 / 300_000.0);
    assert_close(&points[3]["coverage"], 30_000.0 / 300_000.0);
    // Power while measured: bucket 0's energy over 270 s.
    assert_close(&points[0]["power_mean_w"], e[0] as f64 / 270_000.0);
    // Sample 4 (power_max 350.004 W) straddles into bucket 0.
    assert_eq!(points[0]["power_max_w"], 350.004);
}

#[tokio::test]
async fn hourly_series_is_the_sum_of_its_buckets_and_emissions_are_per_interval() {
    let h = harness().await;
    let t = token("acme");
    // Mid-hour bounds are widened to the hour.
    let r = get(
        &h.app,
        "/v1/instances/i-a1/series?from=2026-11-23T00:10:00Z&to=2026-11-23T00:50:00Z&step=1h",
        Some(&t),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["from"], "2026-11-23T00:00:00.000Z");
    assert_eq!(r.body["to"], "2026-11-23T01:00:00.000Z");
    let points = r.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 1);
    let p = &points[0];
    let e = a1_buckets();
    assert_eq!(p["energy_mj"], 270_105_315u64);
    assert_eq!(p["energy_mj"], e.iter().sum::<u64>());
    let co2e = (e[0] as f64 * 100.0 + e[1] as f64 * 400.0 + e[2] as f64 * 250.0) / MJ_PER_KWH;
    assert_close(&p["co2e_g"], co2e);
    // Σ E_i I_i differs from E × mean(I): the test would catch a mean-based implementation.
    let naive = (e[0] + e[1] + e[2]) as f64 / MJ_PER_KWH * (100.0 + 400.0 + 250.0) / 3.0;
    assert!((co2e - naive).abs() > 1e-3);
    assert_close(
        &p["intensity_g_per_kwh"],
        co2e * MJ_PER_KWH / (e[0] + e[1] + e[2]) as f64,
    );
    assert_eq!(p["co2e_missing_energy_mj"], e[3]);
    assert_eq!(
        p["intensity_kinds"],
        serde_json::json!({"actual": 2, "forecast": 0, "fallback_average": 1, "missing": 1, "replayed": 0})
    );
    assert_close(&p["coverage"], 900_000.0 / 3_600_000.0);
}

#[tokio::test]
async fn gpus_are_summed_and_coverage_counts_every_gpu() {
    let h = harness().await;
    let t = token("acme");
    let r = get(
        &h.app,
        &format!("/v1/instances/i-a2/series?from={T0}&to={}", T0 + 2 * B),
        Some(&t),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["step"], "5m", "5m is the default step");
    let p = r.body["points"].as_array().unwrap();
    // GPU-a2: 30_000_000 and 30_000_001 on the bucket edges. GPU-a3: 60_000_003 over
    // [100 s, 400 s] → ⌊60_000_003 × 200/300⌋ = 40_000_002 then 20_000_001.
    assert_eq!(p[0]["energy_mj"], 70_000_002u64);
    assert_eq!(p[1]["energy_mj"], 50_000_002u64);
    assert_close(&p[0]["coverage"], 500_000.0 / 600_000.0);
    assert_close(&p[1]["coverage"], 400_000.0 / 600_000.0);
    assert_close(
        &p[0]["power_mean_w"],
        30_000_000.0 / 300_000.0 + 40_000_002.0 / 200_000.0,
    );
    assert_close(&p[0]["co2e_g"], 70_000_002.0 * 200.0 / MJ_PER_KWH);
    assert_close(&p[1]["co2e_g"], 50_000_002.0 * 300.0 / MJ_PER_KWH);
    assert_eq!(p[1]["intensity_kinds"]["forecast"], 2);

    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a2/series?from={T0}&to={}&step=1h",
            T0 + 2 * B
        ),
        Some(&t),
    )
    .await;
    let p = &r.body["points"][0];
    assert_eq!(p["energy_mj"], 120_000_004u64);
    assert_close(
        &p["co2e_g"],
        (70_000_002.0 * 200.0 + 50_000_002.0 * 300.0) / MJ_PER_KWH,
    );
    assert_close(&p["coverage"], 900_000.0 / (3_600_000.0 * 2.0));

    let r = get(
        &h.app,
        &format!("/v1/instances/i-a2/series?from={T0}&to={}&step=1d", T0 + 1),
        Some(&t),
    )
    .await;
    let p = r.body["points"].as_array().unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["energy_mj"], 120_000_004u64);
    assert_eq!(p[0]["end"], "2026-11-24T00:00:00.000Z");
}

#[tokio::test]
async fn empty_steps_are_gaps_not_missing_points() {
    let h = harness().await;
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a1/series?from={}&to={}",
            T0 + 20 * B,
            T0 + 22 * B
        ),
        Some(&token("acme")),
    )
    .await;
    let p = r.body["points"].as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0]["energy_mj"], 0);
    assert_eq!(p[0]["coverage"], 0.0);
    assert!(p[0]["power_mean_w"].is_null() && p[0]["intensity_g_per_kwh"].is_null());
}

#[tokio::test]
async fn raw_series_returns_the_stored_samples_in_time_order() {
    let h = harness().await;
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a2/series?from={T0}&to={}&step=raw",
            T0 + 2 * B
        ),
        Some(&token("acme")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["from"], "2026-11-23T00:00:00.000Z");
    let p = r.body["points"].as_array().unwrap();
    let got: Vec<(&str, u64)> = p
        .iter()
        .map(|x| {
            (
                x["gpu_uuid"].as_str().unwrap(),
                x["energy_mj"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("GPU-a2", 30_000_000),
            ("GPU-a3", 60_000_003),
            ("GPU-a2", 30_000_001)
        ]
    );
    let first = &p[0];
    assert_eq!(first["start"], "2026-11-23T00:00:00.000Z");
    assert_eq!(first["end"], "2026-11-23T00:05:00.000Z");
    assert_eq!(first["power_w"], 300.0);
    assert_eq!(first["power_max_w"], 350.0);
    assert_eq!(first["util_gpu_pct"], 90);
    assert_eq!(first["temp_c"], 60);
    assert_eq!(first["chain_start"], true);
    assert_eq!(first["energy_source"], "counter");
    // Only samples overlapping [from, to): a window inside GPU-a3's span finds it alone.
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a2/series?from={}&to={}&step=raw",
            T0 + 310_000,
            T0 + 320_000
        ),
        Some(&token("acme")),
    )
    .await;
    let p = r.body["points"].as_array().unwrap();
    assert_eq!(
        p.len(),
        2,
        "GPU-a2's second sample and GPU-a3's sample overlap it"
    );
}

#[tokio::test]
async fn too_many_points_asks_for_a_coarser_step() {
    let h = harness_with(ApiLimits {
        max_points: 10,
        ..ApiLimits::default()
    })
    .await;
    let t = token("acme");
    // 15 raw samples > 10.
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a1/series?from={T0}&to={}&step=raw",
            T0 + 4 * B
        ),
        Some(&t),
    )
    .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    assert!(
        r.body["detail"].as_str().unwrap().contains("coarser step"),
        "{}",
        r.text
    );
    // 12 five-minute points > 10, but one hourly point is fine.
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a1/series?from={T0}&to={}&step=5m",
            T0 + 12 * B
        ),
        Some(&t),
    )
    .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    assert!(r.body["detail"].as_str().unwrap().contains("coarser step"));
    let r = get(
        &h.app,
        &format!(
            "/v1/instances/i-a1/series?from={T0}&to={}&step=1h",
            T0 + 12 * B
        ),
        Some(&t),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn instances_list_shows_the_inventory() {
    let h = harness().await;
    let r = get(&h.app, "/v1/instances", Some(&token("acme"))).await;
    assert_eq!(
        r.body,
        serde_json::json!({"instances": [
            {"instance_id": "i-a1", "region": "R1", "zip_code": "94105",
             "gpus": [{"uuid": "GPU-a1", "model": H100, "power_limit_w": 700.0}]},
            {"instance_id": "i-a2", "region": "R2", "zip_code": null,
             "gpus": [{"uuid": "GPU-a2", "model": H100, "power_limit_w": 700.0},
                      {"uuid": "GPU-a3", "model": MYSTERY, "power_limit_w": 700.0}]},
        ]})
    );
}

#[tokio::test]
async fn instances_come_a_page_at_a_time_in_id_order() {
    let h = harness().await;
    let t = token("acme");
    let all = get(&h.app, "/v1/instances", Some(&t)).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert!(all.body.get("next_cursor").is_none(), "{}", all.text);
    let ids = |r: &Reply| -> Vec<String> {
        r.body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instance_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&all), vec!["i-a1", "i-a2"]);
    let first = get(&h.app, "/v1/instances?limit=1", Some(&t)).await;
    assert_eq!(ids(&first), vec!["i-a1"]);
    assert_eq!(first.body["next_cursor"], "i-a1");
    let second = get(&h.app, "/v1/instances?limit=1&cursor=i-a1", Some(&t)).await;
    assert_eq!(ids(&second), vec!["i-a2"]);
    assert!(second.body.get("next_cursor").is_none(), "{}", second.text);
    // Another tenant's id is not a position in this tenant's list.
    get(&h.app, "/v1/instances?cursor=i-b1", Some(&t))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    get(&h.app, "/v1/instances?limit=0", Some(&t))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
}
