//! `GET /v1/restatements` and gRPC `ListRestatements` on a real SQLite store, with restatements
//! produced the way production produces them: samples enriched by an intensity join that has
//! only a forecast, a nearest actual or the static average for most buckets, then the actual
//! marginal values (WattTime CAISO_NORTH, shipped in `data/moer/`) recorded into the join and
//! `Store::restate` run, as the enricher's ledger refresh does.
//!
//! Checks: every number is E × ΔI by hand from the stored intervals; totals are the sums;
//! summaries and footprints moved by exactly the totals; tenants see only their own; bad
//! tokens and bad ranges are refused; gRPC answers what REST answers, bit for bit.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use common::*;
use serde_json::{json, Value};
use tonic::{Code, Request};
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, PointKind, RegionIntensity,
    Signal,
};
use wattprint_core::{GramsPerKwh, InstanceId, RegionId, TenantId, TenantScope, UnixMillis};
use wattprint_proto::v1::{ListRestatementsRequest, ListRestatementsResponse};
use wattprint_query_api::{mint_token, mint_token_at, ApiLimits, AuthConfig};
use wattprint_store::{IntervalRow, Store};

const REGION: &str = "CAISO_NORTH";
/// The buckets the fixture's samples touch: 0..=8 (the last sample ends 3 s into bucket 8).
const BUCKETS: i64 = 9;
/// acme's CAISO instance, its GPUs and PUE; globex's.
const ACME: (&str, &str, &[&str], f64) = ("acme", "i-ca", &["GPU-c1", "GPU-c2"], 1.1);
const GLOBEX: (&str, &str, &[&str], f64) = ("globex", "i-cg", &["GPU-g1"], 1.3);
const KWH: f64 = 3.6e9;

/// WattTime's CAISO_NORTH MOER from 2023-06-08 00:00 UTC, g/kWh (played here from T0).
fn moer() -> Vec<f64> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/moer/watttime2023_caiso-north_actual.csv"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .take(BUCKETS as usize)
        .map(|l| l.split(',').nth(1).unwrap().trim().parse().unwrap())
        .collect()
}

/// eGRID 2023 CAMX total output rate, 429.983 lb/MWh: the static average.
fn camx() -> GramsPerKwh {
    GramsPerKwh::from_lb_per_mwh(429.983)
}

fn point(i: i64, value: f64, kind: PointKind, issued: Option<i64>) -> IntensityPoint {
    IntensityPoint {
        region: RegionId::from(REGION),
        at: UnixMillis(T0 + i * B),
        duration_ms: B,
        value: GramsPerKwh(value),
        signal: Signal::Marginal,
        kind,
        issued_at: issued.map(|i| UnixMillis(T0 + i * B)),
        provider: "watttime:CAISO_NORTH".to_owned(),
        model_version: Some("2023-03-01".to_owned()),
        fetched_at: UnixMillis(T0 + (i + 1) * B),
    }
}

fn scope(tenant: &str) -> TenantScope {
    TenantScope::from_verified(TenantId::from(tenant))
}

/// What the fixture's intensity is before and after restatement, bucket by bucket:
/// (value, kind, point_at bucket index).
fn expected_intensity(i: i64, after: bool) -> (f64, IntensityKind, i64) {
    let m = moer();
    let at = |j: i64| m[j as usize];
    match (i, after) {
        (0, _) => (at(0), IntensityKind::Actual, 0),
        // The nearest actual (bucket 0, within the join's 5 minutes of staleness).
        (1, false) => (at(0), IntensityKind::Actual, 0),
        // Forecasts issued a bucket ahead: persistence of the previous actual.
        (2..=4, false) => (at(i - 1), IntensityKind::Forecast, i - 1),
        (5..=8, false) => (camx().0, IntensityKind::FallbackAverage, i),
        (1..=6, true) => (at(i), IntensityKind::Actual, i),
        // No actual of its own yet: the nearest, bucket 6's.
        (7, true) => (at(6), IntensityKind::Actual, 6),
        (8, true) => (camx().0, IntensityKind::FallbackAverage, 8),
        _ => unreachable!(),
    }
}

struct Fixture {
    h: Harness,
    /// Intervals of the CAISO instances before any restatement, by (tenant, gpu, bucket index).
    before: BTreeMap<(String, String, i64), IntervalRow>,
    /// `GET /v1/summary` of each tenant before and after restatement.
    summaries: BTreeMap<(&'static str, bool), Value>,
    /// The footprint of an acme workload over i-ca, before and after.
    footprints: (Value, Value),
}

fn window() -> String {
    format!("from={T0}&to={}", T0 + BUCKETS * B)
}

async fn summary(h: &Harness, tenant: &str) -> Value {
    let r = get(
        &h.app,
        &format!("/v1/summary?{}", window()),
        Some(&token(tenant)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

async fn intervals(h: &Harness, tenant: &str, instance: &str) -> Vec<IntervalRow> {
    h.store
        .instance_intervals(
            &scope(tenant),
            &InstanceId::from(instance),
            UnixMillis(T0),
            UnixMillis(T0 + BUCKETS * B),
        )
        .await
        .unwrap()
}

/// The harness's two tenants plus a CAISO_NORTH instance each, enriched and then restated in
/// two passes: a late forecast for bucket 6 (average → forecast), then actuals for buckets
/// 1 to 6 (forecast, nearest actual or average → actual; bucket 7 average → nearest actual;
/// bucket 8 keeps its average).
async fn fixture(limits: ApiLimits) -> Fixture {
    let h = harness_with(limits).await;
    let m = moer();
    let mut inventory = Vec::new();
    for (tenant, inst, gpus, _) in [ACME, GLOBEX] {
        inventory.push(instance(
            tenant,
            inst,
            REGION,
            Some("95814"),
            gpus.iter().map(|g| gpu(g, H100)).collect(),
        ));
    }
    h.store.upsert_inventory(&inventory).await.unwrap();

    let mut join = IntensityJoin::new(B);
    join.insert(
        RegionId::from(REGION),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((camx(), "egrid2023:CAMX".to_owned())),
        },
    );
    join.record(&point(0, m[0], PointKind::Actual, None))
        .unwrap();
    for i in 2..=4 {
        join.record(&point(
            i,
            m[i as usize - 1],
            PointKind::Forecast,
            Some(i - 1),
        ))
        .unwrap();
    }
    // 40 minutes of 10 s samples from T0 + 3 s: every bucket edge falls inside a sample.
    let mut samples = Vec::new();
    for (n, (tenant, inst, gpus, pue)) in [ACME, GLOBEX].into_iter().enumerate() {
        for (g, gpu) in gpus.iter().enumerate() {
            for k in 0..240u64 {
                let start = T0 + 3_000 + 10_000 * k as i64;
                let mj = 3_100_007 + 211 * k + 1_000_003 * (n * 2 + g) as u64;
                samples.push(enriched(
                    tenant,
                    inst,
                    gpu,
                    REGION,
                    pue,
                    k,
                    start,
                    start + 10_000,
                    mj,
                    |b| join.lookup(&RegionId::from(REGION), b),
                ));
            }
        }
    }
    h.store.write_samples(&samples).await.unwrap();

    let mut before = BTreeMap::new();
    for (tenant, inst, _, _) in [ACME, GLOBEX] {
        for row in intervals(&h, tenant, inst).await {
            let i = (row.bucket.start().0 - T0) / B;
            let (v, kind, at) = expected_intensity(i, false);
            let j = row.intensity.as_ref().unwrap();
            assert_eq!(
                (j.value.0, j.kind, j.point_at),
                (v, kind, UnixMillis(T0 + at * B)),
                "bucket {i} as enriched"
            );
            before.insert((tenant.to_owned(), row.gpu.to_string(), i), row);
        }
    }
    assert_eq!(before.len(), 3 * BUCKETS as usize);
    let workload = create_workload(&h.app, "acme", &["i-ca"], T0, T0 + BUCKETS * B, 1.0).await;
    let footprint = |h: &Harness| {
        let (app, id) = (h.app.clone(), workload.clone());
        async move {
            let r = get(&app, &format!("/v1/workloads/{id}"), Some(&token("acme"))).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body["footprint"].clone()
        }
    };
    let mut summaries = BTreeMap::new();
    for tenant in ["acme", "globex"] {
        summaries.insert((tenant, false), summary(&h, tenant).await);
    }
    let footprint_before = footprint(&h).await;

    let region = RegionId::from(REGION);
    let (from, to) = (UnixMillis(T0), UnixMillis(T0 + BUCKETS * B));
    join.record(&point(6, 250.5, PointKind::Forecast, Some(5)))
        .unwrap();
    let first = h.store.restate(&region, from, to, &join).await.unwrap();
    assert_eq!(
        first.intervals, 3,
        "bucket 6 of three GPUs: average → forecast"
    );
    for i in 1..=6 {
        join.record(&point(i, m[i as usize], PointKind::Actual, None))
            .unwrap();
    }
    let second = h.store.restate(&region, from, to, &join).await.unwrap();
    assert_eq!(second.intervals, 3 * 7, "buckets 1 to 7 of three GPUs");

    for (tenant, inst, _, _) in [ACME, GLOBEX] {
        for row in intervals(&h, tenant, inst).await {
            let i = (row.bucket.start().0 - T0) / B;
            let (v, kind, at) = expected_intensity(i, true);
            let j = row.intensity.as_ref().unwrap();
            assert_eq!(
                (j.value.0, j.kind, j.point_at),
                (v, kind, UnixMillis(T0 + at * B)),
                "bucket {i} restated"
            );
        }
    }
    for tenant in ["acme", "globex"] {
        summaries.insert((tenant, true), summary(&h, tenant).await);
    }
    let footprint_after = footprint(&h).await;
    Fixture {
        h,
        before,
        summaries,
        footprints: (footprint_before, footprint_after),
    }
}

async fn restatements(h: &Harness, tenant: &str, query: &str) -> Value {
    let r = get(
        &h.app,
        &format!("/v1/restatements?{query}"),
        Some(&token(tenant)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn close(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "got {got}, want {want}"
    );
}

fn rfc3339(ms: i64) -> String {
    UnixMillis(ms).to_rfc3339()
}

fn intensity_json(j: &JoinedIntensity) -> Value {
    json!({
        "value_g_per_kwh": j.value.0,
        "kind": j.kind.as_str(),
        "source": j.source,
        "point_at": j.point_at.to_rfc3339(),
        "replayed": j.replayed,
    })
}

#[tokio::test]
async fn every_number_is_energy_times_the_change_of_intensity() {
    let fx = fixture(ApiLimits::default()).await;
    let m = moer();
    for (tenant, inst, gpus, pue) in [ACME, GLOBEX] {
        let body = restatements(&fx.h, tenant, &window()).await;
        assert_eq!(body["from"], rfc3339(T0));
        assert_eq!(body["to"], rfc3339(T0 + BUCKETS * B));
        let list = body["restatements"].as_array().unwrap();
        // Per GPU: bucket 6 twice (average → forecast → actual), buckets 1-5 and 7 once.
        assert_eq!(list.len(), gpus.len() * 8, "{tenant}");
        let mut per_interval: BTreeMap<(String, i64), Vec<&Value>> = BTreeMap::new();
        let (mut it_sum, mut facility_sum) = (0.0, 0.0);
        for r in list {
            assert_eq!(r["instance"], inst);
            assert_eq!(r["region"], REGION);
            assert_eq!(r["pue"], pue);
            let bucket = (0..BUCKETS)
                .find(|i| r["bucket_start"] == rfc3339(T0 + i * B))
                .unwrap();
            let gpu = r["gpu"].as_str().unwrap().to_owned();
            let stored = &fx.before[&(tenant.to_owned(), gpu.clone(), bucket)];
            assert_eq!(r["energy_mj"], stored.energy.0, "energy as stored");
            // E × ΔI by hand, E in kWh.
            let (prev, cur) = (
                &r["previous"]["value_g_per_kwh"],
                &r["current"]["value_g_per_kwh"],
            );
            let want = stored.energy.0 as f64 / KWH * (f(cur) - f(prev));
            close(f(&r["it_co2e_delta_g"]), want);
            close(f(&r["facility_co2e_delta_g"]), want * pue);
            it_sum += f(&r["it_co2e_delta_g"]);
            facility_sum += f(&r["facility_co2e_delta_g"]);
            assert!(r["reason"].as_str().unwrap().contains(" replaces "), "{r}");
            per_interval.entry((gpu, bucket)).or_default().push(r);
        }
        close(f(&body["totals"]["it_co2e_delta_g"]), it_sum);
        close(f(&body["totals"]["facility_co2e_delta_g"]), facility_sum);
        assert_eq!(body["totals"]["intervals"], gpus.len() * 7);

        // Each interval's steps chain from its stored intensity before to its stored intensity
        // after, and their deltas add up to E × (I_after − I_before).
        let mut total_by_hand = 0.0;
        for ((gpu, bucket), steps) in &per_interval {
            let stored = &fx.before[&(tenant.to_owned(), gpu.clone(), *bucket)];
            assert_eq!(
                steps[0]["previous"],
                intensity_json(stored.intensity.as_ref().unwrap())
            );
            for pair in steps.windows(2) {
                assert_eq!(pair[0]["current"], pair[1]["previous"]);
            }
            let (v_after, kind_after, at_after) = expected_intensity(*bucket, true);
            let last = &steps[steps.len() - 1]["current"];
            assert_eq!(
                (f(&last["value_g_per_kwh"]), last["kind"].as_str().unwrap()),
                (v_after, kind_after.as_str())
            );
            assert_eq!(last["point_at"], rfc3339(T0 + at_after * B));
            assert_eq!(last["source"], "watttime:CAISO_NORTH@2023-03-01");
            assert_eq!(last["replayed"], false);
            let (v_before, _, _) = expected_intensity(*bucket, false);
            let expected = stored.energy.0 as f64 / KWH * (v_after - v_before);
            let listed: f64 = steps.iter().map(|s| f(&s["it_co2e_delta_g"])).sum();
            assert!((listed - expected).abs() <= 1e-9 * expected.abs().max(1.0));
            total_by_hand += expected;
        }
        assert!(
            (f(&body["totals"]["it_co2e_delta_g"]) - total_by_hand).abs()
                <= 1e-9 * total_by_hand.abs()
        );
        // Bucket 6 went average → forecast (the late one) → actual, in that order.
        let six = &per_interval[&(gpus[0].to_owned(), 6)];
        let kinds: Vec<&str> = six
            .iter()
            .map(|s| s["current"]["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["forecast", "actual"]);
        assert_eq!(six[0]["previous"]["kind"], "fallback_average");
        assert_eq!(six[0]["previous"]["source"], "egrid2023:CAMX");
        assert_eq!(six[0]["current"]["value_g_per_kwh"], 250.5);
        assert_eq!(six[0]["current"]["point_at"], rfc3339(T0 + 5 * B));
        assert_eq!(six[1]["current"]["value_g_per_kwh"], m[6]);
        // Bucket 1 was joined with the nearest actual (bucket 0's), bucket 7 now is.
        let one = &per_interval[&(gpus[0].to_owned(), 1)][0];
        assert_eq!(
            (&one["previous"]["kind"], &one["previous"]["point_at"]),
            (&json!("actual"), &json!(rfc3339(T0)))
        );
        assert!(one["reason"]
            .as_str()
            .unwrap()
            .contains("replaces nearest actual"));
        let seven = &per_interval[&(gpus[0].to_owned(), 7)][0];
        assert_eq!(seven["current"]["point_at"], rfc3339(T0 + 6 * B));
        assert!(!per_interval.contains_key(&(gpus[0].to_owned(), 0)));
        assert!(!per_interval.contains_key(&(gpus[0].to_owned(), 8)));
    }

    // A range selects by bucket, rounded out to whole buckets as summaries are.
    let body = restatements(
        &fx.h,
        "acme",
        &format!("from={}&to={}", T0 + B + 1, T0 + 2 * B - 1),
    )
    .await;
    assert_eq!(
        (&body["from"], &body["to"]),
        (&json!(rfc3339(T0 + B)), &json!(rfc3339(T0 + 2 * B)))
    );
    let list = body["restatements"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|r| r["bucket_start"] == rfc3339(T0 + B)));
    assert_eq!(body["totals"]["intervals"], 2);
    // RFC 3339 works too; a range without restatements is empty with zero totals.
    let body = restatements(
        &fx.h,
        "acme",
        "from=2026-11-24T00:00:00Z&to=2026-11-25T00:00:00%2B01:00",
    )
    .await;
    assert_eq!(body["restatements"], json!([]));
    assert_eq!(
        body["totals"],
        json!({"intervals": 0, "it_co2e_delta_g": 0.0, "facility_co2e_delta_g": 0.0})
    );
}

#[tokio::test]
async fn summaries_and_footprints_moved_by_exactly_the_restatements() {
    let fx = fixture(ApiLimits::default()).await;
    for tenant in ["acme", "globex"] {
        let body = restatements(&fx.h, tenant, &window()).await;
        let (before, after) = (
            &fx.summaries[&(tenant, false)]["totals"],
            &fx.summaries[&(tenant, true)]["totals"],
        );
        let moved = f(&after["operational_it_co2e_g"]) - f(&before["operational_it_co2e_g"]);
        let delta = f(&body["totals"]["it_co2e_delta_g"]);
        assert!(delta.abs() > 1.0, "the fixture moves emissions visibly");
        assert!(
            (moved - delta).abs() <= 1e-9 * delta.abs(),
            "{tenant}: summary moved {moved}, restatements say {delta}"
        );
        let moved = f(&after["operational_co2e_g"]) - f(&before["operational_co2e_g"]);
        let delta = f(&body["totals"]["facility_co2e_delta_g"]);
        assert!(
            (moved - delta).abs() <= 1e-9 * delta.abs(),
            "{moved} vs {delta}"
        );
        assert_eq!(
            after["it_energy_mj"], before["it_energy_mj"],
            "energy never moves"
        );
        assert_eq!(after["gpu_intervals"], before["gpu_intervals"]);
        // Provenance moved with them: per CAISO GPU, the forecasts of buckets 2-4 and the
        // averages of buckets 5-7 are actuals now (bucket 8 keeps its average).
        let gpus = if tenant == "acme" { 2 } else { 1 };
        let count = |s: &Value, k: &str| s["provenance"][k].as_u64().unwrap();
        for kind in ["intervals_forecast", "intervals_fallback"] {
            assert_eq!(count(after, kind), count(before, kind) - 3 * gpus, "{kind}");
        }
        assert_eq!(
            count(after, "intervals_actual"),
            count(before, "intervals_actual") + 6 * gpus
        );
        // Instances without restatements did not move at all.
        let others = |s: &Value| -> Vec<Value> {
            s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["instance_id"] != "i-ca" && i["instance_id"] != "i-cg")
                .cloned()
                .collect()
        };
        assert_eq!(
            others(&fx.summaries[&(tenant, true)]),
            others(&fx.summaries[&(tenant, false)])
        );
    }
    // The workload over i-ca (all of acme's restated intervals): its operational emissions
    // (facility energy × intensity) moved by the facility total.
    let body = restatements(&fx.h, "acme", &window()).await;
    let (before, after) = &fx.footprints;
    let moved = f(&after["operational_co2e_g"]) - f(&before["operational_co2e_g"]);
    let delta = f(&body["totals"]["facility_co2e_delta_g"]);
    assert!(
        (moved - delta).abs() <= 1e-9 * delta.abs(),
        "{moved} vs {delta}"
    );
}

#[tokio::test]
async fn tenants_see_only_their_own_and_bad_requests_are_refused() {
    let fx = fixture(ApiLimits {
        max_restatements: 10,
        ..ApiLimits::default()
    })
    .await;
    let app = &fx.h.app;
    // globex holds 8 restatements (under the limit of 10), all of its own instance.
    let globex = restatements(&fx.h, "globex", &window()).await;
    let list = globex["restatements"].as_array().unwrap();
    assert_eq!(list.len(), 8);
    assert!(list
        .iter()
        .all(|r| r["instance"] == "i-cg" && r["gpu"] == "GPU-g1"));
    assert!(!globex.to_string().contains("i-ca") && !globex.to_string().contains("GPU-c"));
    // acme holds 16: more than the limit, refused rather than cut short.
    let r = get(
        app,
        &format!("/v1/restatements?{}", window()),
        Some(&token("acme")),
    )
    .await;
    r.assert_problem(StatusCode::BAD_REQUEST);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("16 restatements, more than the limit of 10"),
        "{}",
        r.text
    );
    // Within the limit, acme sees only its own (buckets 1-3: 2 GPUs × 3).
    let acme = restatements(&fx.h, "acme", &format!("from={T0}&to={}", T0 + 4 * B)).await;
    let list = acme["restatements"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    assert!(list.iter().all(|r| r["instance"] == "i-ca"));
    assert!(!acme.to_string().contains("i-cg") && !acme.to_string().contains("GPU-g1"));
    // A tenant without instances sees nothing.
    let none = restatements(&fx.h, "initech", &window()).await;
    assert_eq!(none["restatements"], json!([]));
    assert_eq!(none["totals"]["intervals"], 0);

    // No token, a token that is not a JWT, one signed with another key, an expired one: 401.
    let uri = format!("/v1/restatements?{}", window());
    let foreign_key = AuthConfig::new(
        "another-secret-entirely-for-tests",
        "wattprint-test",
        "wattprint-query-api",
    );
    let forged = mint_token(
        &foreign_key,
        &TenantId::from("acme"),
        Duration::from_secs(600),
    )
    .unwrap();
    let expired = mint_token_at(
        &auth(),
        &TenantId::from("acme"),
        SystemTime::now() - Duration::from_secs(3600),
        Duration::from_secs(60),
    )
    .unwrap();
    for bearer in [
        None,
        Some("not-a-jwt"),
        Some(forged.as_str()),
        Some(expired.as_str()),
    ] {
        let r = get(app, &uri, bearer).await;
        r.assert_problem(StatusCode::UNAUTHORIZED);
        assert!(!r.text.contains("i-c"), "{}", r.text);
    }

    // Bad ranges: 400 saying what is wrong.
    let t = token("acme");
    for (query, needle) in [
        (String::new(), "from is required"),
        (format!("from={T0}"), "to is required"),
        (format!("to={T0}"), "from is required"),
        (format!("from=&to={T0}"), "from is required"),
        (format!("from={T0}&to={T0}"), "must be after"),
        (format!("from={}&to={T0}", T0 + B), "must be after"),
        (
            format!("from={T0}&to={}", T0 + 31 * 86_400_000 + 1),
            "exceeds the limit",
        ),
        (format!("from=yesterday&to={T0}"), "from"),
        (format!("from={T0}&to=253402300800000"), "outside years"),
        (format!("from={T0}&to[]=1"), "to"),
    ] {
        let r = get(app, &format!("/v1/restatements?{query}"), Some(&t)).await;
        r.assert_problem(StatusCode::BAD_REQUEST);
        let detail = r.body["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{query}: {detail}");
    }
    post_json(app, &uri, Some(&t), &json!({}))
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED);
}

/// The REST answer of `tenant` for `/v1/restatements?{query}` (must be 200).
async fn rest(server: &Server, tenant: &str, query: &str) -> Value {
    let r = reqwest::Client::new()
        .get(server.url(&format!("/v1/restatements?{query}")))
        .bearer_auth(token(tenant))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn grpc_request(
    from: &str,
    to: &str,
    authorization: Option<&str>,
) -> Request<ListRestatementsRequest> {
    let mut req = Request::new(ListRestatementsRequest {
        from: from.to_owned(),
        to: to.to_owned(),
    });
    if let Some(value) = authorization {
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    req
}

/// The gRPC answer rendered with the REST field names, for an exact comparison.
fn as_json(r: &ListRestatementsResponse) -> Value {
    let intensity = |j: &wattprint_proto::v1::JoinedIntensity| {
        json!({
            "value_g_per_kwh": j.value_g_per_kwh,
            "kind": j.kind,
            "source": j.source,
            "point_at": j.point_at,
            "replayed": j.replayed,
        })
    };
    let totals = r.totals.as_ref().unwrap();
    json!({
        "from": r.from,
        "to": r.to,
        "restatements": r.restatements.iter().map(|x| json!({
            "instance": x.instance,
            "gpu": x.gpu,
            "bucket_start": x.bucket_start,
            "region": x.region,
            "energy_mj": x.energy_mj,
            "pue": x.pue,
            "previous": x.previous.as_ref().map_or(Value::Null, intensity),
            "current": intensity(x.current.as_ref().unwrap()),
            "reason": x.reason,
            "restated_at": x.restated_at,
            "it_co2e_delta_g": x.it_co2e_delta_g,
            "facility_co2e_delta_g": x.facility_co2e_delta_g,
        })).collect::<Vec<_>>(),
        "totals": {
            "intervals": totals.intervals,
            "it_co2e_delta_g": totals.it_co2e_delta_g,
            "facility_co2e_delta_g": totals.facility_co2e_delta_g,
        },
    })
}

#[tokio::test]
async fn grpc_answers_what_rest_answers() {
    let fx = fixture(ApiLimits::default()).await;
    let server = Server::start(&fx.h).await;
    let mut client = server.client().await;
    let (from, to) = (rfc3339(T0), (T0 + BUCKETS * B).to_string());
    for tenant in ["acme", "globex", "initech"] {
        let rest = rest(&server, tenant, &format!("from={from}&to={to}")).await;
        let bearer = format!("Bearer {}", token(tenant));
        let grpc = client
            .list_restatements(grpc_request(&from, &to, Some(&bearer)))
            .await
            .unwrap()
            .into_inner();
        // Bit for bit: serde_json parses floats exactly (float_roundtrip), proto doubles are
        // exact on the wire.
        assert_eq!(as_json(&grpc), rest, "{tenant}");
    }
    let acme = client
        .list_restatements(grpc_request(
            &from,
            &to,
            Some(&format!("Bearer {}", token("acme"))),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acme.restatements.len(), 16);
    assert!(acme.restatements.iter().all(|r| r.instance == "i-ca"));

    // Same refusals, as gRPC codes with the REST detail.
    let missing = client
        .list_restatements(grpc_request(&from, &to, None))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let forged = client
        .list_restatements(grpc_request(&from, &to, Some("Bearer not-a-jwt")))
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);
    let bearer = format!("Bearer {}", token("acme"));
    for (from, to, needle) in [
        ("", to.as_str(), "from is required"),
        (from.as_str(), "", "to is required"),
        (to.as_str(), from.as_str(), "must be after"),
        (from.as_str(), "9999999999999", "exceeds the limit"),
        ("soon", to.as_str(), "from"),
    ] {
        let err = client
            .list_restatements(grpc_request(from, to, Some(&bearer)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
    server.stop().await;
}
