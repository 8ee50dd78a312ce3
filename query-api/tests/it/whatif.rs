//! `GET /v1/workloads/{id}/whatif` on a real intensity series (WattTime CAISO_NORTH actual
//! MOER, June–July 2023) and a real energy profile (the H100 trace's phases, looped), checked
//! against brute-force references computed here from the raw files.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use common::*;
use serde_json::Value;
use wattprint_core::accounting::clip_energy;
use wattprint_core::intensity::{IntensityJoin, MarginalSeries, RegionIntensity};
use wattprint_core::{Bucket, GramsPerKwh, RegionId, UnixMillis};
use wattprint_proto::v1::tenant_query_server::TenantQuery;
use wattprint_proto::v1::GetWorkloadWhatIfRequest;
use wattprint_query_api::time::parse_instant;
use wattprint_query_api::{router, ApiLimits, ApiState, GrpcTenantQuery};
use wattprint_store::{SqliteStore, Store};

const REGION: &str = "CAISO_NORTH";
const PUE: f64 = 1.3;

/// The WattTime file as (ms, g/kWh), read by hand.
fn read_moer() -> Vec<(i64, f64)> {
    let text = std::fs::read_to_string(data("moer/watttime2023_caiso-north_actual.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let (t, v) = line.split_once(',').unwrap();
            let at = parse_instant("t", &format!("{}Z", t.replace(' ', "T"))).unwrap();
            (at.0, v.parse().unwrap())
        })
        .collect()
}

fn no_intensity(_: Bucket) -> Option<wattprint_core::intensity::JoinedIntensity> {
    None
}

/// Samples of one GPU: the trace's phases looped from `from` until `to`.
fn gpu_samples(
    instance: &str,
    gpu: &str,
    region: &str,
    from: i64,
    to: i64,
    skip: usize,
) -> Vec<wattprint_store::EnrichedSample> {
    trace_spans(skip, from, to)
        .into_iter()
        .map(|(seq, start, end, mj)| {
            enriched(
                "acme",
                instance,
                gpu,
                region,
                PUE,
                seq,
                start,
                end,
                mj,
                no_intensity,
            )
        })
        .collect()
}

struct Fixture {
    app: Router,
    state: ApiState,
    moer: BTreeMap<i64, f64>,
    samples: Vec<wattprint_store::EnrichedSample>,
}

async fn fixture(with_intensity: bool) -> Fixture {
    fixture_with(with_intensity, ApiLimits::default()).await
}

async fn fixture_with(with_intensity: bool, limits: ApiLimits) -> Fixture {
    let raw = read_moer();
    let series = MarginalSeries::new(
        "watttime:CAISO_NORTH",
        raw.iter()
            .map(|&(t, v)| (UnixMillis(t), GramsPerKwh(v)))
            .collect(),
    )
    .unwrap();
    let mut join = IntensityJoin::new(15 * 60_000);
    join.insert(
        RegionId::from(REGION),
        RegionIntensity {
            marginal: Some(series),
            replay: false,
            average: Some((GramsPerKwh(250.0), "egrid:CAMX".into())),
        },
    );
    join.insert(
        RegionId::from("AVG_ONLY"),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((GramsPerKwh(400.0), "egrid:NWPP".into())),
        },
    );
    for point in forecast_points() {
        join.record(&point).unwrap();
    }
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    store
        .upsert_inventory(&[
            instance(
                "acme",
                "i-cn",
                REGION,
                Some("95112"),
                vec![gpu("GPU-cn0", H100), gpu("GPU-cn1", H100)],
            ),
            instance(
                "acme",
                "i-avg",
                "AVG_ONLY",
                None,
                vec![gpu("GPU-avg", H100)],
            ),
            instance("globex", "i-g", REGION, None, vec![gpu("GPU-g", H100)]),
            instance("acme", "i-fc", REGION, None, vec![gpu("GPU-fc", H100)]),
        ])
        .await
        .unwrap();
    let (from, to) = long_run();
    let mut samples = gpu_samples("i-cn", "GPU-cn0", REGION, from, to, 0);
    samples.extend(gpu_samples("i-cn", "GPU-cn1", REGION, from + 7_000, to, 1));
    samples.extend(gpu_samples("i-avg", "GPU-avg", "AVG_ONLY", from, to, 0));
    let (fc_from, fc_to) = forecast_run();
    samples.extend(gpu_samples("i-fc", "GPU-fc", REGION, fc_from, fc_to, 2));
    let outcome = store.write_samples(&samples).await.unwrap();
    assert_eq!(outcome.inserted as usize, samples.len());
    let dyn_store: Arc<dyn Store> = store;
    let mut state = ApiState::new(dyn_store, auth(), catalog(), limits);
    if with_intensity {
        state = state.with_intensity(Arc::new(join));
    }
    Fixture {
        app: router(state.clone()),
        state,
        moer: raw.into_iter().collect(),
        samples,
    }
}

/// WattTime's real forecasts for CAISO_NORTH (issued every 5 minutes on 2023-06-08/09, 5 to
/// 65 minutes ahead) as ledger points: (issued, target, value) per row.
fn forecast_rows() -> Vec<(i64, i64, f64)> {
    let text = std::fs::read_to_string(data(
        "moer/watttime2023_caiso-north_forecast_2023-06-08_09.csv",
    ))
    .unwrap();
    let at = |t: &str| {
        parse_instant("t", &format!("{}Z", t.replace(' ', "T")))
            .unwrap()
            .0
    };
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            (at(f[0]), at(f[1]), f[2].parse().unwrap())
        })
        .collect()
}

fn forecast_points() -> Vec<wattprint_core::intensity::IntensityPoint> {
    use wattprint_core::intensity::{IntensityPoint, PointKind, Signal};
    forecast_rows()
        .into_iter()
        .map(|(issued, target, value)| IntensityPoint {
            region: RegionId::from(REGION),
            at: UnixMillis(target),
            duration_ms: B,
            value: GramsPerKwh(value),
            signal: Signal::Marginal,
            kind: PointKind::Forecast,
            issued_at: Some(UnixMillis(issued)),
            provider: "watttime:CAISO_NORTH".to_owned(),
            model_version: None,
            fetched_at: UnixMillis(issued),
        })
        .collect()
}

/// A 25-minute run of instance i-fc on 2023-06-08, inside the forecasts' days.
fn forecast_run() -> (i64, i64) {
    let from = parse_instant("from", "2023-06-08T10:01:00Z").unwrap().0;
    (from, from + 25 * 60_000)
}

/// A 3-hour run starting off the 5-minute grid, 15 h before the series ends.
fn long_run() -> (i64, i64) {
    let from = parse_instant("from", "2023-07-08T06:02:10Z").unwrap().0;
    (from, from + 3 * 3_600_000)
}

/// Facility energy per slot of `[from, to)` for instance i-cn, by hand: each sample's energy
/// inside each slot ∩ `[from, to)` by core's `clip_energy` (consistent with the bucket split
/// the store did), summed per slot, × PUE, rounded to the mJ.
fn profile(f: &Fixture, from: i64, to: i64) -> (i64, Vec<u64>) {
    profile_of(f, "i-cn", from, to)
}

/// [`profile`] of any instance of the fixture.
fn profile_of(f: &Fixture, instance: &str, from: i64, to: i64) -> (i64, Vec<u64>) {
    let first = from.div_euclid(B) * B;
    let n = ((to - first) + B - 1).div_euclid(B) as usize;
    let mut it = vec![0u64; n];
    for s in f
        .samples
        .iter()
        .filter(|s| s.sample.instance.as_str() == instance)
    {
        for (slot, acc) in it.iter_mut().enumerate() {
            let a = from.max(first + slot as i64 * B);
            let b = to.min(first + (slot as i64 + 1) * B);
            if s.sample.end.0 > a && s.sample.start.0 < b {
                *acc += clip_energy(
                    s.sample.start,
                    s.sample.end,
                    s.sample.energy,
                    UnixMillis(a),
                    UnixMillis(b),
                )
                .0;
            }
        }
    }
    let facility = it
        .iter()
        .map(|&e| (e as f64 * PUE).round() as u64)
        .collect();
    (first, facility)
}

fn grams(profile: &[u64], intensity: &[f64]) -> f64 {
    profile
        .iter()
        .zip(intensity)
        .map(|(&e, &i)| e as f64 * i)
        .sum::<f64>()
        / MJ_PER_KWH
}

fn rfc3339(ms: i64) -> String {
    UnixMillis(ms).to_rfc3339()
}

fn close(got: &Value, want: f64) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{got} is not a number"));
    assert!(
        (g - want).abs() <= 1e-9 * want.abs().max(1.0),
        "got {g}, want {want}"
    );
}

async fn whatif(app: &Router, tenant: &str, id: &str, query: &str) -> Reply {
    get(
        app,
        &format!("/v1/workloads/{id}/whatif{query}"),
        Some(&token(tenant)),
    )
    .await
}

#[tokio::test]
async fn flexible_start_matches_brute_force_on_real_data() {
    let f = fixture(true).await;
    let (from, to) = long_run();
    let id = create_workload(&f.app, "acme", &["i-cn"], from, to, 1.0).await;
    let r = whatif(&f.app, "acme", &id, "?window_hours=6,12,24&factor=1.5").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (first, prof) = profile(&f, from, to);
    let n = prof.len();
    assert_eq!(n, 37, "3 h from 06:02:10 touch 37 buckets");
    assert_eq!(r.body["profile_slots"], n);
    assert_eq!(r.body["region"], REGION);
    assert_eq!(r.body["intensity_source"], "watttime:CAISO_NORTH");
    assert_eq!(r.body["first_slot"], rfc3339(first));
    close(
        &r.body["energy_kwh"],
        prof.iter().sum::<u64>() as f64 / MJ_PER_KWH,
    );
    let i_at = |slot: usize| f.moer[&(first + slot as i64 * B)];

    let fs = r.body["flexible_start"].as_array().unwrap();
    assert_eq!(fs.len(), 2, "6 h and 12 h fit in the series; {}", r.text);
    for (k, hours) in [6usize, 12].into_iter().enumerate() {
        let w = hours * 12;
        let by_offset: Vec<f64> = (0..=w)
            .map(|d| grams(&prof, &(d..d + n).map(i_at).collect::<Vec<_>>()))
            .collect();
        let best = (0..=w)
            .min_by(|&a, &b| by_offset[a].total_cmp(&by_offset[b]).then(a.cmp(&b)))
            .unwrap();
        let worst = (0..=w)
            .max_by(|&a, &b| by_offset[a].total_cmp(&by_offset[b]).then(b.cmp(&a)))
            .unwrap();
        let v = &fs[k];
        assert_eq!(v["window_hours"], hours as f64);
        close(&v["actual_co2e_g"], by_offset[0]);
        assert_eq!(v["best_start"], rfc3339(first + best as i64 * B), "{v}");
        assert_eq!(v["best_delay_minutes"], best as i64 * 5);
        close(&v["best_co2e_g"], by_offset[best]);
        assert_eq!(v["worst_start"], rfc3339(first + worst as i64 * B));
        close(&v["worst_co2e_g"], by_offset[worst]);
        close(&v["saving_co2e_g"], by_offset[0] - by_offset[best]);
    }
    // The series' last point is 2023-07-08T23:55Z, held for 15 minutes by the join's
    // staleness rule, so actual values end 2023-07-09T00:15Z: a 24 h window needs 9 h more.
    let unavailable = r.body["unavailable"].as_array().unwrap();
    assert_eq!(unavailable.len(), 1, "{}", r.text);
    let why = unavailable[0].as_str().unwrap();
    assert!(
        why.starts_with("flexible start 24 h") && why.contains("until 2023-07-09T09:05:00"),
        "{why}"
    );
    assert_eq!(
        r.body["intensity_known_until"],
        rfc3339(parse_instant("t", "2023-07-09T00:15:00Z").unwrap().0)
    );

    // The long run's pause-and-resume: a valid schedule whose emissions recompute by hand.
    let pr = &r.body["pause_resume"][0];
    let m = (1.5 * n as f64).ceil() as usize;
    assert_eq!(pr["deadline"], rfc3339(first + m as i64 * B));
    let mut slots = Vec::new();
    for run in pr["schedule"].as_array().unwrap() {
        let a = parse_instant("from", run["from"].as_str().unwrap())
            .unwrap()
            .0;
        let b = parse_instant("to", run["to"].as_str().unwrap()).unwrap().0;
        slots.extend(((a - first) / B) as usize..((b - first) / B) as usize);
    }
    assert_eq!(slots.len(), n);
    assert!(slots.windows(2).all(|w| w[0] < w[1]) && slots[n - 1] < m);
    let scheduled: f64 = prof
        .iter()
        .zip(&slots)
        .map(|(&e, &s)| e as f64 * i_at(s))
        .sum::<f64>()
        / MJ_PER_KWH;
    close(&pr["co2e_g"], scheduled);
    assert_eq!(pr["paused_minutes"], (slots[n - 1] + 1 - n) as i64 * 5);
}

/// Every way to place `n` ordered work slots in `m` slots: the least emissions and its
/// earliest-lexicographic schedule.
fn brute_pause(prof: &[u64], intensity: &[f64]) -> (f64, Vec<usize>) {
    fn go(
        prof: &[u64],
        intensity: &[f64],
        next: usize,
        chosen: &mut Vec<usize>,
        best: &mut (f64, Vec<usize>),
    ) {
        let j = chosen.len();
        if j == prof.len() {
            let e = grams(
                prof,
                &chosen.iter().map(|&s| intensity[s]).collect::<Vec<_>>(),
            );
            if best.1.is_empty() || e < best.0 - 1e-9 * best.0.abs().max(1.0) {
                *best = (e, chosen.clone());
            }
            return;
        }
        for s in next..=intensity.len() - (prof.len() - j) {
            chosen.push(s);
            go(prof, intensity, s + 1, chosen, best);
            chosen.pop();
        }
    }
    let mut best = (f64::INFINITY, Vec::new());
    go(prof, intensity, 0, &mut Vec::new(), &mut best);
    best
}

#[tokio::test]
async fn pause_and_resume_matches_brute_force_on_real_data() {
    let f = fixture(true).await;
    // 30 minutes inside the long run, ending on a sample edge: 7 slots.
    let (run_from, _) = long_run();
    let ends: Vec<i64> = f
        .samples
        .iter()
        .filter(|s| s.sample.instance.as_str() == "i-cn")
        .map(|s| s.sample.end.0)
        .collect();
    let from = run_from;
    let to = *ends
        .iter()
        .filter(|&&e| e - from >= 30 * 60_000)
        .min()
        .unwrap();
    let id = create_workload(&f.app, "acme", &["i-cn"], from, to, 1.0).await;
    let r = whatif(&f.app, "acme", &id, "?window_hours=1&factor=1.5,2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (first, prof) = profile(&f, from, to);
    let n = prof.len();
    for (k, factor) in [1.5f64, 2.0].into_iter().enumerate() {
        let m = (factor * n as f64).ceil() as usize;
        let intensity: Vec<f64> = (0..m).map(|s| f.moer[&(first + s as i64 * B)]).collect();
        let (best, schedule) = brute_pause(&prof, &intensity);
        let v = &r.body["pause_resume"][k];
        assert_eq!(v["factor"], factor);
        close(&v["co2e_g"], best);
        close(&v["actual_co2e_g"], grams(&prof, &intensity[..n]));
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &s in &schedule {
            match runs.last_mut() {
                Some((_, end)) if *end == s => *end = s + 1,
                _ => runs.push((s, s + 1)),
            }
        }
        let want: Vec<Value> = runs
            .iter()
            .map(|&(a, b)| {
                serde_json::json!({
                    "from": rfc3339(first + a as i64 * B),
                    "to": rfc3339(first + b as i64 * B),
                })
            })
            .collect();
        assert_eq!(v["schedule"], Value::Array(want), "factor {factor}");
    }
}

#[tokio::test]
async fn whatifs_refuse_what_they_cannot_answer() {
    let f = fixture(true).await;
    let (from, to) = long_run();
    let id = create_workload(&f.app, "acme", &["i-cn"], from, to, 1.0).await;

    // Another tenant cannot see it: 404, same as a workload that does not exist.
    whatif(&f.app, "globex", &id, "")
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    whatif(&f.app, "acme", "no-such-workload", "")
        .await
        .assert_problem(StatusCode::NOT_FOUND);
    let anon = get(&f.app, &format!("/v1/workloads/{id}/whatif"), None).await;
    anon.assert_problem(StatusCode::UNAUTHORIZED);

    for bad in [
        "?window_hours=abc",
        "?window_hours=0",
        "?window_hours=-6",
        "?window_hours=721",
        "?window_hours=0.01",
        "?window_hours=NaN",
        "?window_hours=1,2,3,4,5,6,7,8,9",
        "?window_hours=",
        "?factor=0.5",
        "?factor=5",
        "?factor=inf",
    ] {
        let r = whatif(&f.app, "acme", &id, bad).await;
        r.assert_problem(StatusCode::BAD_REQUEST);
    }

    // Two regions: no single intensity to shift on.
    let both = create_workload(&f.app, "acme", &["i-cn", "i-avg"], from, to, 1.0).await;
    let r = whatif(&f.app, "acme", &both, "").await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("AVG_ONLY, CAISO_NORTH"),
        "{}",
        r.text
    );

    // A region with only an average: no actual marginal value, so nothing is computed.
    let avg = create_workload(&f.app, "acme", &["i-avg"], from, to, 1.0).await;
    let r = whatif(&f.app, "acme", &avg, "").await;
    r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("fallback_average"),
        "{}",
        r.text
    );

    // A run entirely after the series: no actual values during it.
    let late = parse_instant("t", "2023-07-10T00:00:00Z").unwrap().0;
    let r = post_json(
        &f.app,
        "/v1/workloads",
        Some(&token("acme")),
        &serde_json::json!({"label": "late", "instance_ids": ["i-cn"], "from": late,
            "to": late + 3_600_000, "functional_unit": "run", "functional_units": 1.0}),
    )
    .await;
    let late_id = r.body["id"].as_str().unwrap().to_owned();
    whatif(&f.app, "acme", &late_id, "")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY);

    // A server without intensity sources says so.
    let bare = fixture(false).await;
    let id = create_workload(&bare.app, "acme", &["i-cn"], from, to, 1.0).await;
    whatif(&bare.app, "acme", &id, "")
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn grpc_gives_the_rest_numbers_exactly() {
    let f = fixture(true).await;
    let (from, to) = long_run();
    let id = create_workload(&f.app, "acme", &["i-cn"], from, to, 1.0).await;
    let rest = whatif(&f.app, "acme", &id, "?window_hours=6,24&factor=1.25,2").await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.text);
    let grpc = GrpcTenantQuery::new(f.state.clone());
    let call = |tenant: &str, window_hours: Vec<f64>, factors: Vec<f64>| {
        let mut req = tonic::Request::new(GetWorkloadWhatIfRequest {
            workload_id: id.clone(),
            window_hours,
            factors,
            basis: String::new(),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token(tenant)).parse().unwrap(),
        );
        req
    };
    let got = grpc
        .get_workload_what_if(call("acme", vec![6.0, 24.0], vec![1.25, 2.0]))
        .await
        .unwrap()
        .into_inner();
    let b = &rest.body;
    assert_eq!(got.profile_slots, b["profile_slots"].as_u64().unwrap());
    assert_eq!(got.energy_kwh, b["energy_kwh"].as_f64().unwrap());
    assert_eq!(got.unavailable.len(), 1);
    assert_eq!(got.unavailable[0], b["unavailable"][0].as_str().unwrap());
    assert_eq!(got.flexible_start.len(), 1);
    let (g, r) = (&got.flexible_start[0], &b["flexible_start"][0]);
    assert_eq!(g.best_start, r["best_start"].as_str().unwrap());
    assert_eq!(g.best_co2e_g, r["best_co2e_g"].as_f64().unwrap());
    assert_eq!(g.saving_co2e_g, r["saving_co2e_g"].as_f64().unwrap());
    assert_eq!(got.pause_resume.len(), 2);
    for (g, r) in got
        .pause_resume
        .iter()
        .zip(b["pause_resume"].as_array().unwrap())
    {
        assert_eq!(g.co2e_g, r["co2e_g"].as_f64().unwrap());
        let runs: Vec<(&str, &str)> = r["schedule"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["from"].as_str().unwrap(), x["to"].as_str().unwrap()))
            .collect();
        let grpc_runs: Vec<(&str, &str)> = g
            .schedule
            .iter()
            .map(|x| (x.from.as_str(), x.to.as_str()))
            .collect();
        assert_eq!(grpc_runs, runs);
    }

    // Empty lists mean the paper's values; bad values and other tenants are refused alike.
    let paper = grpc
        .get_workload_what_if(call("acme", vec![], vec![]))
        .await
        .unwrap()
        .into_inner();
    let factors: Vec<f64> = paper.pause_resume.iter().map(|p| p.factor).collect();
    assert_eq!(factors, vec![1.25, 1.5, 1.75, 2.0]);
    let bad = grpc
        .get_workload_what_if(call("acme", vec![0.01], vec![]))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let other = grpc
        .get_workload_what_if(call("globex", vec![], vec![]))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound, "{other:?}");
}

/// Every way to place `n` ordered work slots in `m` slots.
fn schedules(n: usize, m: usize) -> Vec<Vec<usize>> {
    fn go(start: usize, left: usize, m: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if left == 0 {
            out.push(cur.clone());
            return;
        }
        for s in start..=m - left {
            cur.push(s);
            go(s + 1, left - 1, m, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(0, n, m, &mut Vec::new(), &mut out);
    out
}

#[tokio::test]
async fn forecast_basis_plans_on_what_was_known_at_the_start_and_is_judged_on_actuals() {
    let f = fixture(true).await;
    let (from, to) = forecast_run();
    let id = create_workload(&f.app, "acme", &["i-fc"], from, to, 1.0).await;
    let r = whatif(
        &f.app,
        "acme",
        &id,
        "?window_hours=0.5,1&factor=2&basis=forecast",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["basis_kind"], "forecast");
    let (first, prof) = profile_of(&f, "i-fc", from, to);
    let n = prof.len();
    assert_eq!(n, 6, "10:01 to 10:26 touches six buckets");

    // By hand from the CSV: per slot, the latest forecast issued at or before 10:01.
    let rows = forecast_rows();
    let forecast_at = |slot: usize| -> Option<f64> {
        let target = first + slot as i64 * B;
        rows.iter()
            .filter(|(issued, t, _)| *t == target && *issued <= from)
            .max_by_key(|(issued, _, _)| *issued)
            .map(|(_, _, v)| *v)
    };
    let known = (0..).take_while(|&s| forecast_at(s).is_some()).count();
    assert_eq!(known, 14, "issued 10:00 reaches 11:05");
    assert_eq!(r.body["intensity_known_until"], rfc3339(first + 14 * B));
    let fc: Vec<f64> = (0..known).map(|s| forecast_at(s).unwrap()).collect();
    let actual: Vec<f64> = (0..known)
        .map(|s| f.moer[&(first + s as i64 * B)])
        .collect();
    let on = |series: &[f64], slots: &[usize]| -> f64 {
        let picked: Vec<f64> = slots.iter().map(|&s| series[s]).collect();
        grams(&prof, &picked)
    };
    let as_run: Vec<usize> = (0..n).collect();

    // Flexible Start over 30 minutes: the best offset by brute force on the forecast.
    let fs = r.body["flexible_start"].as_array().unwrap();
    assert_eq!(
        fs.len(),
        1,
        "the 1 h window needs forecasts past 11:05: {}",
        r.text
    );
    let plans: Vec<Vec<usize>> = (0..=6).map(|d| (d..d + n).collect()).collect();
    let best = (0..plans.len())
        .min_by(|&a, &b| {
            on(&fc, &plans[a])
                .total_cmp(&on(&fc, &plans[b]))
                .then(a.cmp(&b))
        })
        .unwrap();
    let v = &fs[0];
    assert_eq!(v["best_start"], rfc3339(first + best as i64 * B), "{v}");
    close(&v["actual_co2e_g"], on(&fc, &as_run));
    close(&v["best_co2e_g"], on(&fc, &plans[best]));
    close(&v["realized_co2e_g"], on(&actual, &plans[best]));
    close(
        &v["realized_saving_co2e_g"],
        on(&actual, &as_run) - on(&actual, &plans[best]),
    );
    let why = r.body["unavailable"][0].as_str().unwrap();
    assert!(
        why.starts_with("flexible start 1 h") && why.contains("forecast"),
        "{why}"
    );

    // Pause and Resume ×2: the optimum over all 924 schedules of 6 slots in 12, on the forecast.
    let all = schedules(n, 12);
    assert_eq!(all.len(), 924);
    let best_schedule = all
        .iter()
        .min_by(|a, b| on(&fc, a).total_cmp(&on(&fc, b)))
        .unwrap();
    let pr = &r.body["pause_resume"][0];
    let mut slots = Vec::new();
    for run in pr["schedule"].as_array().unwrap() {
        let a = parse_instant("from", run["from"].as_str().unwrap())
            .unwrap()
            .0;
        let b = parse_instant("to", run["to"].as_str().unwrap()).unwrap().0;
        slots.extend(((a - first) / B) as usize..((b - first) / B) as usize);
    }
    close(&pr["co2e_g"], on(&fc, best_schedule));
    close(&pr["co2e_g"], on(&fc, &slots));
    close(&pr["realized_co2e_g"], on(&actual, &slots));
    close(
        &pr["realized_saving_co2e_g"],
        on(&actual, &as_run) - on(&actual, &slots),
    );

    // Hindsight on the same run has no realized figures; gRPC says the same as REST.
    let hindsight = whatif(&f.app, "acme", &id, "?window_hours=0.5&factor=2").await;
    assert_eq!(hindsight.body["basis_kind"], "actual");
    assert!(hindsight.body["flexible_start"][0]["realized_co2e_g"].is_null());
    close(
        &hindsight.body["flexible_start"][0]["actual_co2e_g"],
        on(&actual, &as_run),
    );
    let bad = whatif(&f.app, "acme", &id, "?basis=psychic").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let grpc = GrpcTenantQuery::new(f.state.clone());
    let mut req = tonic::Request::new(GetWorkloadWhatIfRequest {
        workload_id: id.clone(),
        window_hours: vec![0.5],
        factors: vec![2.0],
        basis: "forecast".into(),
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("acme")).parse().unwrap(),
    );
    let g = grpc.get_workload_what_if(req).await.unwrap().into_inner();
    assert_eq!(g.basis_kind, "forecast");
    assert_eq!(
        g.flexible_start[0].realized_co2e_g,
        v["realized_co2e_g"].as_f64()
    );
    assert_eq!(
        g.pause_resume[0].realized_co2e_g,
        pr["realized_co2e_g"].as_f64()
    );
}

/// Search cells of Flexible Start windows `w` and Pause and Resume deadlines `m` on `n`
/// slots, by the documented model: n·(m−n+1) per deadline, n·(w+1)/8 (rounded up, summed) per
/// window.
fn cells(n: u64, windows: &[u64], deadlines: &[u64]) -> u64 {
    let flexible: u64 = windows.iter().map(|w| n * (w + 1)).sum();
    deadlines.iter().map(|m| n * (m - n + 1)).sum::<u64>() + flexible.div_ceil(8)
}

#[tokio::test]
async fn whatifs_over_the_budget_are_refused_before_any_work_rest_and_grpc() {
    // The 3-hour run touches 37 slots. 6 h is 72 window slots; ×1.5 is a 56-slot deadline.
    let small = cells(37, &[72], &[56]);
    assert_eq!(small, 338 + 740);
    let big = cells(37, &[720 * 12], &[148]);
    let limits = ApiLimits {
        whatif_budget_cells: small,
        ..ApiLimits::default()
    };
    let f = fixture_with(true, limits).await;
    let (from, to) = long_run();
    let id = create_workload(&f.app, "acme", &["i-cn"], from, to, 1.0).await;

    // Exactly at the budget: computed as usual.
    let ok = whatif(&f.app, "acme", &id, "?window_hours=6&factor=1.5").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["flexible_start"].as_array().unwrap().len(), 1);
    assert_eq!(ok.body["pause_resume"].as_array().unwrap().len(), 1);

    // One cell more (a deadline of 57 slots: ×1.53) is over it; so is 720 h and ×4.
    let (over, cost) = (cells(37, &[72], &[57]), small + 37);
    assert_eq!(over, cost);
    for (query, asked) in [
        ("?window_hours=6&factor=1.53", over),
        ("?window_hours=720&factor=4", big),
    ] {
        let r = whatif(&f.app, "acme", &id, query).await;
        r.assert_problem(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["type"], "urn:wattprint:problem:over-budget");
        let detail = r.body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("cost {asked} search cells"))
                && detail.contains(&format!("at most {small} per request")),
            "{detail}"
        );
    }

    // Refused before reading energy: a workload over two regions, which the search would
    // refuse after reading it, is refused for its cost instead.
    let both = create_workload(&f.app, "acme", &["i-cn", "i-avg"], from, to, 1.0).await;
    let r = whatif(&f.app, "acme", &both, "?window_hours=720&factor=4").await;
    assert_eq!(
        r.body["type"], "urn:wattprint:problem:over-budget",
        "{}",
        r.text
    );
    let r = whatif(&f.app, "acme", &both, "?window_hours=6&factor=1.5").await;
    assert_eq!(
        r.body["type"], "urn:wattprint:problem:unprocessable",
        "{}",
        r.text
    );

    // gRPC: the same answer, the same message.
    let grpc = GrpcTenantQuery::new(f.state.clone());
    let call = |window_hours: Vec<f64>, factors: Vec<f64>| {
        let mut req = tonic::Request::new(GetWorkloadWhatIfRequest {
            workload_id: id.clone(),
            window_hours,
            factors,
            basis: String::new(),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token("acme")).parse().unwrap(),
        );
        req
    };
    let got = grpc
        .get_workload_what_if(call(vec![6.0], vec![1.5]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.pause_resume.len(), 1);
    let refused = grpc
        .get_workload_what_if(call(vec![720.0], vec![4.0]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused
            .message()
            .contains(&format!("cost {big} search cells")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_default_budget_runs_the_paper_defaults() {
    let f = fixture(true).await;
    let (from, to) = long_run();
    let id = create_workload(&f.app, "acme", &["i-cn"], from, to, 1.0).await;
    let r = whatif(
        &f.app,
        "acme",
        &id,
        "?window_hours=720&factor=4,4,4,4,4,4,4,4",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "a 3-hour run is cheap: {}",
        r.text
    );
    let r = whatif(&f.app, "acme", &id, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
