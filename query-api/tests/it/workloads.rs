//! Workloads against the real SQLite store: creation, listing, and footprints whose energy,
//! emissions and SCI match hand computations to the millijoule.
#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::header::LOCATION;
use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};

const MS_PER_YEAR: f64 = 365.25 * 24.0 * 3600.0 * 1000.0;

/// Embodied grams of one H100 of the test catalog reserved for `ms`.
fn h100_share(ms: i64) -> f64 {
    H100_KG * 1000.0 * ms as f64 / (H100_YEARS * MS_PER_YEAR)
}

async fn footprint(h: &Harness, id: &str) -> Value {
    let r = get(&h.app, &format!("/v1/workloads/{id}"), Some(&token("acme"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

#[tokio::test]
async fn created_workloads_are_returned_listed_and_located() {
    let h = harness().await;
    let t = token("acme");
    let r = post_json(
        &h.app,
        "/v1/workloads",
        Some(&t),
        &json!({
            "label": "bert-finetune-run-3",
            "instance_ids": ["i-a1", "i-a2"],
            "from": "2026-11-23T00:00:00Z",
            "to": T0 + 600_000,
            "functional_unit": "training run",
            "functional_units": 1.5,
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.headers.get(LOCATION).unwrap(),
        &format!("/v1/workloads/{id}")
    );
    assert_eq!(r.body["label"], "bert-finetune-run-3");
    assert_eq!(r.body["instance_ids"], json!(["i-a1", "i-a2"]));
    assert_eq!(r.body["from"], "2026-11-23T00:00:00.000Z");
    assert_eq!(r.body["to"], "2026-11-23T00:10:00.000Z");
    assert_eq!(r.body["functional_unit"], "training run");
    assert_eq!(r.body["functional_units"], 1.5);
    assert!(r.body["created_at"].as_str().unwrap().ends_with('Z'));

    let list = get(&h.app, "/v1/workloads", Some(&t)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.body["workloads"], json!([r.body.clone()]));

    let detail = footprint(&h, &id).await;
    for field in ["id", "label", "instance_ids", "from", "to", "created_at"] {
        assert_eq!(detail[field], r.body[field], "{field}");
    }
    assert!(detail["footprint"].is_object());
}

#[tokio::test]
async fn a_range_that_is_exactly_some_samples_gets_exactly_their_energy() {
    let h = harness().await;
    // Samples 2..=7 of GPU-a1 span [T0 + 150 s, T0 + 510 s]: mid-bucket to mid-bucket.
    let (from, to) = (T0 + 150_000, T0 + 510_000);
    let id = create_workload(&h.app, "acme", &["i-a1"], from, to, 3.0).await;
    let f = &footprint(&h, &id).await["footprint"];
    let energy: u64 = (2..=7).map(a1_energy).sum();
    assert_eq!(energy, 108_027_081);
    assert_eq!(f["it_energy_mj"], energy);
    // Bucket 0 gets samples 2, 3 and the first half of 4; bucket 1 the rest.
    let (b0, b1) = (
        18_002_006 + 18_003_009 + 9_002_006,
        9_002_006 + 18_005_015 + 18_006_018 + 18_007_021,
    );
    assert_eq!(b0 + b1, energy);
    let it = (b0 as f64 * 100.0 + b1 as f64 * 400.0) / MJ_PER_KWH;
    assert_close(&f["it_energy_kwh"], energy as f64 / MJ_PER_KWH);
    assert_close(
        &f["facility_energy_kwh"],
        energy as f64 * PUE_R1 / MJ_PER_KWH,
    );
    assert_close(&f["operational_it_co2e_g"], it);
    assert_close(&f["operational_co2e_g"], it * PUE_R1);
    let m = h100_share(to - from);
    assert_close(&f["embodied_co2e_g"], m);
    assert_close(&f["total_co2e_g"], it * PUE_R1 + m);
    assert_close(&f["sci_g_per_unit"], (it * PUE_R1 + m) / 3.0);
    assert_eq!(f["functional_units"], 3.0);
    assert_eq!(f["functional_unit"], "training run");
    assert_eq!(
        f["coverage"],
        json!({"expected_gpu_ms": 360_000, "covered_gpu_ms": 360_000})
    );
    assert_eq!(f["embodied"], json!({"gpus": 1, "unknown_models": []}));
    assert_eq!(f["provenance"]["intervals_actual"], 2);
    assert_eq!(f["provenance"]["energy_measured_share"], 1.0);
}

#[tokio::test]
async fn a_range_starting_and_ending_mid_sample_is_clipped_to_the_millijoule() {
    let h = harness().await;
    // From 200 s (10 s before sample 2 ends) to 700 s (10 s into sample 11).
    let (from, to) = (T0 + 200_000, T0 + 700_000);
    let id = create_workload(&h.app, "acme", &["i-a1"], from, to, 10.0).await;
    let f = &footprint(&h, &id).await["footprint"];
    // Sample 2 (18_002_006 mJ over 60 s) keeps its last 10 s: 18_002_006 − ⌊18_002_006 × 5/6⌋.
    let head = 18_002_006 - 15_001_671;
    // Sample 11 (18_011_033 mJ) gives its first 10 s: ⌊18_011_033 / 6⌋.
    let tail = 3_001_838;
    // Sample 9 (18_009_027) straddles 600 s: ⌊/2⌋ = 9_004_513 before, 9_004_514 after.
    let b0 = head + 18_003_009 + 9_002_006;
    let b1 = 9_002_006 + 18_005_015 + 18_006_018 + 18_007_021 + 18_008_024 + 9_004_513;
    let b2 = 9_004_514 + 18_010_030 + tail;
    assert_eq!((b0, b1, b2), (30_005_350, 90_032_597, 30_016_382));
    assert_eq!(f["it_energy_mj"], 150_054_329u64);
    assert_eq!(f["it_energy_mj"], b0 + b1 + b2);
    let it = (b0 as f64 * 100.0 + b1 as f64 * 400.0 + b2 as f64 * 250.0) / MJ_PER_KWH;
    assert_close(&f["operational_it_co2e_g"], it);
    assert_close(&f["operational_co2e_g"], it * PUE_R1);
    let m = h100_share(500_000);
    assert_close(&f["sci_g_per_unit"], (it * PUE_R1 + m) / 10.0);
    assert_eq!(f["provenance"]["intervals_actual"], 2);
    assert_eq!(f["provenance"]["intervals_fallback"], 1);
    assert_eq!(
        f["coverage"],
        json!({"expected_gpu_ms": 500_000, "covered_gpu_ms": 500_000})
    );
}

#[tokio::test]
async fn energy_without_intensity_is_reported_and_gaps_lower_coverage() {
    let h = harness().await;
    let id = create_workload(&h.app, "acme", &["i-a1"], T0, T0 + 4 * B, 1.0).await;
    let f = &footprint(&h, &id).await["footprint"];
    assert_eq!(f["it_energy_mj"], 270_105_315u64);
    assert_eq!(f["provenance"]["intervals_missing_intensity"], 1);
    assert_eq!(f["provenance"]["energy_without_intensity_mj"], 9_007_021);
    assert_eq!(
        f["coverage"],
        json!({"expected_gpu_ms": 1_200_000, "covered_gpu_ms": 900_000})
    );
    let it = (81_008_024.0 * 100.0 + 90_032_597.0 * 400.0 + 90_057_673.0 * 250.0) / MJ_PER_KWH;
    assert_close(&f["operational_it_co2e_g"], it);
}

#[tokio::test]
async fn several_instances_add_up_and_unknown_models_are_listed() {
    let h = harness().await;
    let (from, to) = (T0 + 100_000, T0 + 400_000);
    let id = create_workload(&h.app, "acme", &["i-a1", "i-a2"], from, to, 2.0).await;
    let f = &footprint(&h, &id).await["footprint"];
    // i-a1: sample 1 from 100 s (18_001_003 − ⌊18_001_003/6⌋), samples 2..=5, sample 6 to 400 s.
    let a1_b0 = (18_001_003 - 3_000_167) + 18_002_006 + 18_003_009 + 9_002_006;
    let a1_b1 = 9_002_006 + 18_005_015 + 3_001_003;
    // i-a2: GPU-a2 ⌊30_000_000 × 2/3⌋... exactly 20_000_000 in bucket 0, ⌊30_000_001/3⌋ in
    // bucket 1; GPU-a3's one sample spans the range exactly: 40_000_002 + 20_000_001.
    let (a2_b0, a2_b1) = (20_000_000, 10_000_000);
    let (a3_b0, a3_b1) = (40_000_002, 20_000_001);
    let energy = a1_b0 + a1_b1 + a2_b0 + a2_b1 + a3_b0 + a3_b1;
    assert_eq!(energy, 180_015_884u64);
    assert_eq!(f["it_energy_mj"], energy);
    let r1 = (a1_b0 as f64 * 100.0 + a1_b1 as f64 * 400.0) / MJ_PER_KWH;
    let r2 = ((a2_b0 + a3_b0) as f64 * 200.0 + (a2_b1 + a3_b1) as f64 * 300.0) / MJ_PER_KWH;
    assert_close(&f["operational_it_co2e_g"], r1 + r2);
    assert_close(&f["operational_co2e_g"], r1 * PUE_R1 + r2);
    // Two H100s count; the unknown model counts zero and is named.
    let m = 2.0 * h100_share(to - from);
    assert_close(&f["embodied_co2e_g"], m);
    assert_close(&f["sci_g_per_unit"], (r1 * PUE_R1 + r2 + m) / 2.0);
    assert_eq!(
        f["embodied"],
        json!({"gpus": 3, "unknown_models": [MYSTERY]})
    );
    assert_eq!(
        f["coverage"],
        json!({"expected_gpu_ms": 900_000, "covered_gpu_ms": 900_000})
    );
    assert_eq!(f["provenance"]["intervals_forecast"], 2);
    assert_eq!(f["missing_instances"], json!([]));
}

#[tokio::test]
async fn invalid_workloads_are_400_with_a_message() {
    let h = harness().await;
    let t = token("acme");
    let good = json!({
        "label": "run", "instance_ids": ["i-a1"], "from": T0, "to": T0 + B,
        "functional_unit": "run", "functional_units": 1,
    });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let cases = [
        with("label", json!("")),
        with("instance_ids", json!([])),
        with("instance_ids", json!(["i-a1", "i-a1"])),
        with("to", json!(T0 - 1)),
        with("from", json!("last tuesday")),
        with("to", json!(T0 + 40 * 24 * 3_600_000_i64)),
        with("functional_units", json!(0)),
        with("functional_units", json!(-3.5)),
        with("functional_units", json!("many")),
        with("extra_field", json!(1)),
        json!({"label": "run"}),
        json!([1, 2, 3]),
    ];
    for body in cases {
        let r = post_json(&h.app, "/v1/workloads", Some(&t), &body).await;
        r.assert_problem(StatusCode::BAD_REQUEST);
        assert!(!r.body["detail"].as_str().unwrap().is_empty());
    }
    // Not JSON at all.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/workloads")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {t}"))
        .body(axum::body::Body::from("{not json"))
        .unwrap();
    send(&h.app, req)
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    // Unknown instance: 404 naming it.
    let r = post_json(
        &h.app,
        "/v1/workloads",
        Some(&t),
        &with("instance_ids", json!(["i-a1", "i-nope"])),
    )
    .await;
    r.assert_problem(StatusCode::NOT_FOUND);
    assert!(r.body["detail"].as_str().unwrap().contains("i-nope"));
    // Nothing was created by any of these.
    assert_eq!(
        get(&h.app, "/v1/workloads", Some(&t)).await.body["workloads"],
        json!([])
    );
}

async fn send_json(
    h: &Harness,
    method: axum::http::Method,
    uri: &str,
    bearer: &str,
    body: Option<&Value>,
) -> Reply {
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {bearer}"),
        );
    let body = match body {
        Some(b) => {
            req = req.header(axum::http::header::CONTENT_TYPE, "application/json");
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    send(&h.app, req.body(body).unwrap()).await
}

fn reader_token(tenant: &str) -> String {
    wattprint_query_api::mint_role_token(
        &auth(),
        wattprint_query_api::Role::Reader,
        tenant,
        std::time::SystemTime::now(),
        std::time::Duration::from_secs(600),
    )
    .unwrap()
}

#[tokio::test]
async fn open_workloads_are_labelled_closed_once_and_listed_by_status() {
    // A range limit far beyond the test data's age, so "open until now" is always readable.
    let h = harness_with(wattprint_query_api::ApiLimits {
        max_range_ms: 100 * 365 * 24 * 3_600_000,
        ..Default::default()
    })
    .await;
    let admin = token("acme");
    let r = post_json(
        &h.app,
        "/v1/workloads",
        Some(&admin),
        &json!({
            "label": "still running",
            "instance_ids": ["i-a1"],
            "from": T0,
            "functional_unit": "training run",
            "functional_units": 1,
            "labels": {"team": "research"},
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        (&r.body["status"], &r.body["to"]),
        (&json!("open"), &Value::Null)
    );
    assert_eq!(r.body["labels"], json!({"team": "research"}));
    let id = r.body["id"].as_str().unwrap().to_owned();

    // Open: the footprint runs to now, so it holds every sample of i-a1 — the same energy as
    // the workload closed after the last sample.
    let open = footprint(&h, &id).await;
    let closed_after = create_workload(&h.app, "acme", &["i-a1"], T0, T0 + 3_600_000, 1.0).await;
    let closed = footprint(&h, &closed_after).await;
    assert_eq!(
        open["footprint"]["it_energy_mj"],
        closed["footprint"]["it_energy_mj"]
    );
    assert!(open["footprint"]["it_energy_mj"].as_u64().unwrap() > 0);

    // Labels: readers may not change them; admins replace them; bad keys are 400s.
    let labels_uri = format!("/v1/workloads/{id}/labels");
    let put = |token: String, body: Value| {
        let uri = labels_uri.clone();
        let h = &h;
        async move { send_json(h, axum::http::Method::PUT, &uri, &token, Some(&body)).await }
    };
    put(reader_token("acme"), json!({"labels": {"x": "y"}}))
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    let r = put(
        admin.clone(),
        json!({"labels": {"team": "platform", "run": "7"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["labels"], json!({"run": "7", "team": "platform"}));
    put(admin.clone(), json!({"labels": {"no spaces": "y"}}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    put(admin.clone(), json!({"labelz": {}}))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);

    // Close: readers may not; an end before the start is a 400; then once; the same end again
    // is the same answer; another end is a 409; another tenant gets a 404.
    let close_uri = format!("/v1/workloads/{id}/close");
    let close = |token: String, body: Option<Value>| {
        let uri = close_uri.clone();
        let h = &h;
        async move { send_json(h, axum::http::Method::POST, &uri, &token, body.as_ref()).await }
    };
    close(reader_token("acme"), None)
        .await
        .assert_problem(StatusCode::FORBIDDEN);
    close(admin.clone(), Some(json!({"end": T0 - 1})))
        .await
        .assert_problem(StatusCode::BAD_REQUEST);
    let end = T0 + 600_000;
    let r = close(admin.clone(), Some(json!({"end": end}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "closed");
    assert_eq!(r.body["to"], "2026-11-23T00:10:00.000Z");
    assert_eq!(r.body["labels"], json!({"run": "7", "team": "platform"}));
    let again = close(admin.clone(), Some(json!({"end": end}))).await;
    assert_eq!((again.status, &again.body), (StatusCode::OK, &r.body));
    close(admin.clone(), Some(json!({"end": end + 1})))
        .await
        .assert_problem(StatusCode::CONFLICT);
    close(token("globex"), None)
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    let ten_minutes = create_workload(&h.app, "acme", &["i-a1"], T0, end, 1.0).await;
    assert_eq!(
        footprint(&h, &id).await["footprint"]["it_energy_mj"],
        footprint(&h, &ten_minutes).await["footprint"]["it_energy_mj"]
    );

    // Lists: by status, a page at a time, newest first; bad parameters are 400s.
    let second_open = post_json(
        &h.app,
        "/v1/workloads",
        Some(&admin),
        &json!({"label": "open 2", "instance_ids": ["i-a2"], "from": T0,
                "functional_unit": "run", "functional_units": 1}),
    )
    .await;
    let second_open = second_open.body["id"].as_str().unwrap().to_owned();
    let list = |query: &str| {
        let uri = format!("/v1/workloads{query}");
        let h = &h;
        async move { get(&h.app, &uri, Some(&token("acme"))).await }
    };
    let ids = |r: &Reply| -> Vec<String> {
        r.body["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = list("").await;
    assert_eq!(
        ids(&all),
        vec![
            second_open.clone(),
            ten_minutes.clone(),
            closed_after.clone(),
            id.clone()
        ]
    );
    assert!(all.body.get("next_cursor").is_none(), "{}", all.text);
    assert_eq!(ids(&list("?status=open").await), vec![second_open.clone()]);
    assert_eq!(ids(&list("?status=closed").await).len(), 3);
    let mut walked = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = list(&format!("?limit=3{cursor}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        walked.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(walked, ids(&all));
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?limit=x",
        "?cursor=wl_nope",
        "?status=done",
    ] {
        list(bad).await.assert_problem(StatusCode::BAD_REQUEST);
    }
    // The other tenant sees none of them.
    let theirs = get(&h.app, "/v1/workloads", Some(&token("globex"))).await;
    assert_eq!(theirs.body["workloads"], json!([]));
}

#[tokio::test]
async fn average_intensity_emissions_are_reported_beside_the_marginal_by_hand() {
    use std::sync::Arc;
    use wattprint_core::intensity::{
        IntensityJoin, IntensityPoint, PointKind, RegionIntensity, Signal,
    };
    use wattprint_core::{GramsPerKwh, RegionId, UnixMillis};
    let h = harness().await;
    // R1: only its static annual rate; R2: a published hourly average for T0's hour (and a
    // static rate it must not fall back to while the published one covers the bucket).
    let mut join = IntensityJoin::new(15 * 60_000);
    for (region, rate, source) in [("R1", 250.0, "egrid2023:R1"), ("R2", 300.0, "egrid2023:R2")] {
        join.insert(
            RegionId::from(region),
            RegionIntensity {
                marginal: None,
                replay: false,
                average: Some((GramsPerKwh(rate), source.to_owned())),
            },
        );
    }
    join.record(&IntensityPoint {
        region: RegionId::from("R2"),
        at: UnixMillis(T0),
        duration_ms: 3_600_000,
        value: GramsPerKwh(180.0),
        signal: Signal::Average,
        kind: PointKind::Actual,
        issued_at: None,
        provider: "electricitymaps:R2".to_owned(),
        model_version: None,
        fetched_at: UnixMillis(T0),
    })
    .unwrap();
    let store: Arc<dyn wattprint_store::Store> = h.store.clone();
    let app = wattprint_query_api::router(
        wattprint_query_api::ApiState::new(store, auth(), catalog(), Default::default())
            .with_intensity(Arc::new(join)),
    );
    let e_a1: u64 = (0..15).map(a1_energy).sum();
    let e_a2: u64 = 30_000_000 + 30_000_001 + 60_000_003;
    let g = |mj: u64, g_per_kwh: f64| mj as f64 * g_per_kwh / 3_600_000_000.0;

    let id = create_workload(&app, "acme", &["i-a1", "i-a2"], T0, T0 + 3_600_000, 2.0).await;
    let r = get(&app, &format!("/v1/workloads/{id}"), Some(&token("acme"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let fp = &r.body["footprint"];
    assert_eq!(fp["it_energy_mj"], e_a1 + e_a2);
    let avg = &fp["average"];
    assert_close(
        &avg["operational_it_co2e_g"],
        g(e_a1, 250.0) + g(e_a2, 180.0),
    );
    assert_close(
        &avg["operational_co2e_g"],
        g(e_a1, 250.0) * PUE_R1 + g(e_a2, 180.0),
    );
    let embodied = fp["embodied_co2e_g"].as_f64().unwrap();
    assert_close(
        &avg["sci_g_per_unit"],
        (g(e_a1, 250.0) * PUE_R1 + g(e_a2, 180.0) + embodied) / 2.0,
    );
    assert_close(
        &avg["intensity_g_per_kwh"],
        (e_a1 as f64 * 250.0 + e_a2 as f64 * 180.0) / (e_a1 + e_a2) as f64,
    );
    assert_eq!(avg["energy_without_intensity_mj"], 0);
    assert_eq!(
        avg["intensity_sources"],
        json!(["egrid2023:R1", "electricitymaps:R2"])
    );

    // The series carries the same per 5-minute step; its steps add up to the footprint's.
    let s = get(
        &app,
        &format!(
            "/v1/instances/i-a2/series?from={T0}&to={}&step=5m",
            T0 + 900_000
        ),
        Some(&token("acme")),
    )
    .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.text);
    let points = s.body["points"].as_array().unwrap();
    let mut sum = 0.0;
    for p in points {
        let e = p["energy_mj"].as_u64().unwrap();
        if e > 0 {
            assert_close(&p["average_intensity_g_per_kwh"], 180.0);
        }
        assert_close(&p["average_co2e_g"], g(e, 180.0));
        sum += p["average_co2e_g"].as_f64().unwrap();
    }
    assert!((sum - g(e_a2, 180.0)).abs() < 1e-9, "{sum}");

    // Without intensity sources the average figures are null, not zero.
    let bare = get(&h.app, &format!("/v1/workloads/{id}"), Some(&token("acme"))).await;
    assert!(bare.body["footprint"]["average"].is_null(), "{}", bare.text);
}

#[tokio::test]
async fn energy_evidence_reconciles_to_the_footprint_and_the_intervals_by_hand() {
    use wattprint_api_types::WorkloadEvidence;
    use wattprint_core::intensity::{IntensityPoint, PointKind, Signal};
    use wattprint_core::{GramsPerKwh, RegionId, UnixMillis};
    use wattprint_store::Store;
    let h = harness().await;
    // The ledger holds R1's actual with the provider's model version, and another provider's
    // point that was not joined to the workload (not listed).
    let point = |provider: &str, version: &str| IntensityPoint {
        region: RegionId::from("R1"),
        at: UnixMillis(T0),
        duration_ms: B,
        value: GramsPerKwh(100.0),
        signal: Signal::Marginal,
        kind: PointKind::Actual,
        issued_at: None,
        provider: provider.to_owned(),
        model_version: Some(version.to_owned()),
        fetched_at: UnixMillis(T0 + B),
    };
    h.store
        .write_intensity(&[point("test:series", "2023-03-01"), point("other:R1", "v9")])
        .await
        .unwrap();
    // Samples 2..=7 of GPU-a1: bucket 0 (100 g/kWh, actual) and bucket 1 (400 g/kWh, actual).
    let (from, to) = (T0 + 150_000, T0 + 510_000);
    let id = create_workload(&h.app, "acme", &["i-a1"], from, to, 3.0).await;
    let r = get(
        &h.app,
        &format!("/v1/workloads/{id}/evidence"),
        Some(&token("acme")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let ev: WorkloadEvidence = serde_json::from_str(&r.text).unwrap();

    // By hand, from the intervals: the 5-minute split of the samples.
    let (b0, b1): (u64, u64) = (
        18_002_006 + 18_003_009 + 9_002_006,
        9_002_006 + 18_005_015 + 18_006_018 + 18_007_021,
    );
    let marginal_it = (b0 as f64 * 100.0 + b1 as f64 * 400.0) / MJ_PER_KWH;
    assert_eq!(ev.energy.it_energy_mj, b0 + b1);
    assert_eq!(ev.energy.measured_energy_mj, b0 + b1);
    assert_eq!(ev.energy.estimated_energy_mj, 0);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(
        ev.energy.it_energy_kwh,
        (b0 + b1) as f64 / MJ_PER_KWH
    ));
    assert!(close(ev.energy.mean_pue.unwrap(), PUE_R1));
    assert!(close(ev.emissions.marginal_it_co2e_g, marginal_it));
    assert!(close(ev.emissions.marginal_co2e_g, marginal_it * PUE_R1));
    assert!(close(ev.emissions.embodied_co2e_g, h100_share(to - from)));
    // No average intensity configured: no location-based number, all energy listed as without.
    assert_eq!(ev.emissions.location_co2e_g, None);
    assert_eq!(ev.emissions.location_missing_energy_mj, b0 + b1);

    // The footprint endpoint's numbers, exactly.
    let f = &footprint(&h, &id).await["footprint"];
    assert_eq!(f["it_energy_mj"], ev.energy.it_energy_mj);
    for (got, field) in [
        (ev.energy.facility_energy_kwh, "facility_energy_kwh"),
        (ev.emissions.marginal_co2e_g, "operational_co2e_g"),
        (ev.emissions.marginal_it_co2e_g, "operational_it_co2e_g"),
        (ev.emissions.embodied_co2e_g, "embodied_co2e_g"),
        (ev.emissions.sci_g_per_unit, "sci_g_per_unit"),
    ] {
        assert_eq!(got, f[field].as_f64().unwrap(), "{field}");
    }
    assert_eq!(
        serde_json::to_value(&ev.sources.provenance).unwrap(),
        f["provenance"]
    );
    assert_eq!(
        serde_json::to_value(ev.energy.coverage).unwrap(),
        f["coverage"]
    );

    // What and where.
    assert_eq!(ev.tenant, "acme");
    assert_eq!(ev.workload.id, id);
    assert_eq!(ev.gpus, 1);
    assert_eq!(ev.instances.len(), 1);
    assert_eq!(ev.instances[0].region, "R1");
    assert_eq!(ev.instances[0].gpu_models, [H100]);
    assert_eq!(ev.sources.marginal_sources, ["test:series"]);
    assert_eq!(ev.sources.model_versions, ["test:series 2023-03-01"]);
    assert!(!ev.method.is_empty());

    // The hash covers the content, not the time of the request: recomputed from the served
    // bytes as docs/statements.md says (generated_at "", content_sha256 null), and the same
    // on a later request whose generated_at differs.
    let hash = ev.content_sha256.clone().unwrap();
    assert_eq!(sha256_hex(evidence_hash_input(&r.text).as_bytes()), hash);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = get(
        &h.app,
        &format!("/v1/workloads/{id}/evidence"),
        Some(&token("acme")),
    )
    .await;
    let again_ev: WorkloadEvidence = serde_json::from_str(&again.text).unwrap();
    assert_ne!(again_ev.generated_at, ev.generated_at);
    assert_eq!(again_ev.content_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(
        evidence_hash_input(&again.text),
        evidence_hash_input(&r.text)
    );
    // Any change to the content changes the hash.
    let tampered = r.text.replacen(r#""gpus":1,"#, r#""gpus":2,"#, 1);
    assert_ne!(tampered, r.text);
    assert_ne!(sha256_hex(evidence_hash_input(&tampered).as_bytes()), hash);

    // Another tenant's workload is not there.
    get(
        &h.app,
        &format!("/v1/workloads/{id}/evidence"),
        Some(&token("globex")),
    )
    .await
    .assert_problem(StatusCode::NOT_FOUND);
}
