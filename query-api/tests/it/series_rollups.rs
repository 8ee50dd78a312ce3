//! A series at 1 h and 1 d steps, and a workload's footprint, summed from hourly totals
//! (rollups) equal the ones computed from the 5-minute intervals, on both stores: ~27 hours of the real H100 trace on
//! two GPUs with ragged ends, every kind of intensity, a stretch of zero-energy intervals, and
//! a batch redelivered after the rollups were built; with and without figures on average
//! intensity (published hourly averages, then a static rate; and averages changing inside an
//! hour, which must fall back to the intervals); and a workload over two instances with
//! ragged ends. Integers to the unit, floats to 1e-9 relative; the energy also against the
//! samples' own sum.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use serde_json::Value;
use wattprint_api_types::time::Step;
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, PointKind, RegionIntensity,
    Signal,
};
use wattprint_core::{
    Bucket, GramsPerKwh, InstanceId, RegionId, TenantId, TenantScope, UnixMillis,
};
use wattprint_query_api::average::hour_averages;
use wattprint_query_api::service::footprint::footprint_of;
use wattprint_query_api::service::{
    aggregate_intervals, instance_series, workload_energy, workload_footprint, SeriesRequest,
};
use wattprint_query_api::ApiLimits;
use wattprint_store::{
    ClickHouseStore, EnrichedSample, NewWorkload, SqliteStore, Store, StoreError, Workload,
};

const HOUR: i64 = 3_600_000;
const INSTANCE: &str = "i-roll";
const GPUS: [&str; 2] = ["GPU-roll-1", "GPU-roll-2"];
/// The data's ragged ends: from 7 minutes into the hour two hours before T0 (a midnight) to 13
/// minutes past hour 25.
const DATA_FROM: i64 = T0 - 2 * HOUR + 7 * 60_000;
const DATA_TO: i64 = T0 + 25 * HOUR + 13 * 60_000;
/// The hour where GPU 1 sends nothing and GPU 2 reports zero energy: its 1 h step has
/// intensity but no energy to weight it by.
const ZERO_HOUR: i64 = T0 + 5 * HOUR;

fn scope(tenant: &str) -> TenantScope {
    TenantScope::from_verified(TenantId::from(tenant))
}

/// Every kind of intensity, by bucket: missing, forecast, the average, replayed actuals.
fn intensity(bucket: Bucket) -> Option<JoinedIntensity> {
    let k = (bucket.start().0 - T0).div_euclid(B);
    let (value, kind) = match k.rem_euclid(35) {
        0 | 7 | 14 => return None,
        5 | 10 => (300.0 + (k.rem_euclid(13)) as f64, IntensityKind::Forecast),
        3 | 6 | 9 => (412.5, IntensityKind::FallbackAverage),
        _ => (
            100.0 + (k.rem_euclid(17)) as f64 * 7.5,
            IntensityKind::Actual,
        ),
    };
    Some(JoinedIntensity {
        value: GramsPerKwh(value),
        kind,
        source: "test:rollups".into(),
        point_at: bucket.start(),
        replayed: k.rem_euclid(11) == 0,
    })
}

/// A join with region R1's published hourly averages over the first 20 hours of the data (a
/// static rate after them), each `minutes` long: 60 gives one value per hour, less changes
/// inside hours.
fn averages_join(minutes: i64) -> IntensityJoin {
    let mut join = IntensityJoin::new(0);
    join.insert(
        RegionId::from("R1"),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((GramsPerKwh(371.25), "egrid2023:R1".into())),
        },
    );
    let first = DATA_FROM.div_euclid(HOUR) * HOUR;
    for k in 0..20 * 60 / minutes {
        join.record(&IntensityPoint {
            region: RegionId::from("R1"),
            at: UnixMillis(first + k * minutes * 60_000),
            duration_ms: minutes * 60_000,
            value: GramsPerKwh(180.0 + 9.5 * k as f64),
            signal: Signal::Average,
            kind: PointKind::Actual,
            issued_at: None,
            provider: "electricitymaps:R1".into(),
            model_version: None,
            fetched_at: UnixMillis(0),
        })
        .unwrap();
    }
    join
}

/// Tenant `acme`'s sample of `gpu` on `instance` in region R1, enriched with [`intensity`].
fn acme_sample(
    instance: &str,
    gpu: &str,
    (seq, start, end, mj): (u64, i64, i64, u64),
) -> EnrichedSample {
    enriched(
        "acme", instance, gpu, "R1", PUE_R1, seq, start, end, mj, intensity,
    )
}

/// Both GPUs' samples: the trace's phases looped over the data's span.
fn samples() -> Vec<EnrichedSample> {
    let mut out = Vec::new();
    for (g, gpu) in GPUS.iter().enumerate() {
        for (seq, start, end, mj) in trace_spans(g * 3, DATA_FROM, DATA_TO) {
            let in_zero_hour = start < ZERO_HOUR + HOUR && end > ZERO_HOUR;
            if !(in_zero_hour && g == 0) {
                let mj = if in_zero_hour { 0 } else { mj };
                out.push(acme_sample(INSTANCE, gpu, (seq, start, end, mj)));
            }
        }
    }
    out
}

async fn seed(store: &dyn Store) -> Vec<EnrichedSample> {
    store
        .upsert_inventory_at(
            &[
                instance(
                    "acme",
                    INSTANCE,
                    "R1",
                    None,
                    vec![gpu(GPUS[0], H100), gpu(GPUS[1], H100)],
                ),
                instance(
                    "globex",
                    "i-other",
                    "R1",
                    None,
                    vec![gpu("GPU-other", H100)],
                ),
            ],
            UnixMillis(DATA_FROM - HOUR),
        )
        .await
        .unwrap();
    let all = samples();
    for batch in all.chunks(700) {
        let out = store.write_samples(batch).await.unwrap();
        assert_eq!(out.inserted as usize, batch.len(), "{out:?}");
    }
    store
        .refresh_rollups(UnixMillis(DATA_FROM - HOUR), UnixMillis(DATA_TO + HOUR))
        .await
        .unwrap();
    all
}

/// Panics unless the two JSON values are equal, floats to 1e-9 relative.
fn assert_same(got: &Value, want: &Value, at: &str) {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-6),
                "{at}: {a} != {b}"
            );
        }
        (Value::Array(a), Value::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{at}: lengths");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            assert_eq!(
                a.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "{at}: fields"
            );
            for (k, x) in a {
                assert_same(x, &b[k], &format!("{at}.{k}"));
            }
        }
        (a, b) => assert_eq!(a, b, "{at}"),
    }
}

/// The 1 h and 1 d series of a ragged range equal the ones computed from the intervals, and
/// hold every sample's energy. Returns the hourly series.
async fn check_series(
    store: &dyn Store,
    samples: &[EnrichedSample],
    zero_hour: bool,
    join: Option<&IntensityJoin>,
) -> Value {
    let acme = scope("acme");
    let instance = InstanceId::from(INSTANCE);
    let (from, to) = (UnixMillis(DATA_FROM + 3_000), UnixMillis(DATA_TO));
    let mut hourly = Value::Null;
    for step in [Step::Hour, Step::Day] {
        let req = SeriesRequest { from, to, step };
        let got = instance_series(store, &acme, &instance, req, &ApiLimits::default(), join)
            .await
            .unwrap();
        let step_ms = step.millis().unwrap();
        let (a, b) = (
            UnixMillis(from.0.div_euclid(step_ms) * step_ms),
            UnixMillis((to.0 + step_ms - 1).div_euclid(step_ms) * step_ms),
        );
        let rows = store
            .instance_intervals(&acme, &instance, a, b)
            .await
            .unwrap();
        let want = aggregate_intervals(&rows, a, b, step_ms, GPUS.len(), join);
        let got = serde_json::to_value(&got).unwrap();
        let points = &got["points"];
        assert_same(points, &serde_json::to_value(&want).unwrap(), step.as_str());
        // By hand: every sample lies in the range, so the steps hold all their energy.
        let energy: u64 = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["energy_mj"].as_u64().unwrap())
            .sum();
        assert_eq!(
            energy,
            samples.iter().map(|s| s.sample.energy.0).sum::<u64>()
        );
        if join.is_some() {
            let average: f64 = points
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["average_co2e_g"].as_f64().unwrap())
                .sum();
            assert!(average > 0.0, "{points}");
        }
        if step == Step::Hour && zero_hour {
            let zero = &points[((ZERO_HOUR - a.0) / HOUR) as usize];
            assert_eq!(zero["energy_mj"], 0);
            assert!(
                zero["intensity_g_per_kwh"].as_f64().unwrap() > 0.0,
                "{zero}"
            );
        }
        if step == Step::Hour {
            hourly = got;
        }
    }
    hourly
}

/// The footprint of a ragged workload over the data, whole hours read from hourly totals,
/// equals the one of its 5-minute slices; its energy is the samples' inside the span, clipped.
async fn check_footprint(
    store: &dyn Store,
    w: &Workload,
    samples: &[EnrichedSample],
    join: Option<&IntensityJoin>,
) -> Value {
    let acme = scope("acme");
    let span = (w.spec.from, w.spec.to.unwrap());
    let got = workload_footprint(store, &acme, &catalog(), w, span, join)
        .await
        .unwrap();
    let energy = workload_energy(store, &acme, w, span, join).await.unwrap();
    let want = footprint_of(&energy, &catalog(), w, span, join.is_some()).unwrap();
    let got = serde_json::to_value(&got).unwrap();
    assert_same(&got, &serde_json::to_value(&want).unwrap(), "footprint");
    if join.is_some() {
        assert!(
            got["average"]["operational_co2e_g"].as_f64().unwrap() > 0.0,
            "{got}"
        );
    }
    let by_hand: u64 = samples
        .iter()
        .map(|s| {
            let s = &s.sample;
            wattprint_core::accounting::clip_energy(s.start, s.end, s.energy, span.0, span.1).0
        })
        .sum();
    assert_eq!(got["it_energy_mj"], by_hand);
    got
}

/// Every check with no join, with hourly averages (read from hourly totals), and with
/// half-hourly ones (read from the intervals).
async fn check_all(
    store: &dyn Store,
    w: Option<&Workload>,
    samples: &[EnrichedSample],
    zero_hour: bool,
) -> (Value, Option<Value>) {
    let (hourly, half_hourly) = (averages_join(60), averages_join(30));
    let mut out = (Value::Null, None);
    for join in [None, Some(&hourly), Some(&half_hourly)] {
        let series = check_series(store, samples, zero_hour, join).await;
        let footprint = match w {
            Some(w) => Some(check_footprint(store, w, samples, join).await),
            None => None,
        };
        if join.is_none() {
            out = (series, footprint);
        }
    }
    // The hours carry their region, so hourly averages apply to every one of them.
    let hours = store
        .instance_hourly_usage(
            &scope("acme"),
            &InstanceId::from(INSTANCE),
            UnixMillis(DATA_FROM.div_euclid(HOUR) * HOUR),
            UnixMillis((DATA_TO / HOUR + 1) * HOUR),
        )
        .await
        .unwrap();
    assert!(hours.len() > 40, "{} hours", hours.len());
    assert!(
        hours.iter().all(|h| h.region == Some(RegionId::from("R1"))),
        "{hours:?}"
    );
    assert!(hour_averages(&hourly, &hours).is_some());
    assert_eq!(hour_averages(&half_hourly, &hours), None);
    out
}

async fn case(store: &dyn Store) {
    let written = seed(store).await;
    let mut written = written;
    let (before, _) = check_all(store, None, &written, true).await;
    let w = store
        .create_workload(
            &scope("acme"),
            &NewWorkload {
                label: "ragged".into(),
                instances: vec![InstanceId::from(INSTANCE)],
                from: UnixMillis(DATA_FROM + 11 * 60_000 + 7_000),
                to: Some(UnixMillis(DATA_TO - 29 * 60_000 - 3_000)),
                functional_unit: "run".into(),
                functional_units: 3.0,
                labels: Default::default(),
            },
        )
        .await
        .unwrap();
    let footprint_before = check_all(store, Some(&w), &written, true).await.1.unwrap();

    // A batch delivered again after the rollups were built changes nothing.
    let again = &written[written.len() / 3..written.len() / 3 + 500];
    let out = store.write_samples(again).await.unwrap();
    assert_eq!(
        (out.inserted, out.duplicates as usize),
        (0, again.len()),
        "{out:?}"
    );
    let (after, footprint_after) = check_all(store, Some(&w), &written, true).await;
    let footprint_after = footprint_after.unwrap();
    assert_same(&after, &before, "after the redelivery");
    assert_same(
        &footprint_after,
        &footprint_before,
        "footprint after the redelivery",
    );

    // A late sample in an hour already rolled up (no refresh after it): that hour is read
    // from 5-minute data until recomputed, and everything still adds up.
    let late = enriched(
        "acme",
        INSTANCE,
        GPUS[0],
        "R1",
        PUE_R1,
        1_000_000,
        ZERO_HOUR + 30 * 60_000,
        ZERO_HOUR + 31 * 60_000,
        42_000_017,
        intensity,
    );
    let out = store
        .write_samples(std::slice::from_ref(&late))
        .await
        .unwrap();
    assert_eq!(out.inserted, 1, "{out:?}");
    written.push(late);
    let (late_series, _) = check_all(store, Some(&w), &written, false).await;
    let at = ((ZERO_HOUR - T0 + 2 * HOUR) / HOUR) as usize;
    assert_eq!(late_series["points"][at]["energy_mj"], 42_000_017);

    // Another tenant does not see the instance; a range of part hours is refused.
    let err = store
        .instance_hourly_usage(
            &scope("globex"),
            &InstanceId::from(INSTANCE),
            UnixMillis(T0),
            UnixMillis(T0 + HOUR),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .instance_hourly_usage(
            &scope("acme"),
            &InstanceId::from(INSTANCE),
            UnixMillis(T0 + B),
            UnixMillis(T0 + HOUR),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
}

/// A workload over two instances (three GPUs) whose ragged ends cut samples: its footprint
/// from hourly totals equals the one of 5-minute slices, its energy is every sample's clipped
/// to the span (to the mJ, a redelivery counted once), its covered time their overlap with it.
async fn two_instances_with_ragged_ends(store: &dyn Store) {
    const EDGE_A: &str = "i-edge-a";
    const EDGE_C: &str = "i-edge-c";
    let gpus = [
        (EDGE_A, "GPU-edge-a1"),
        (EDGE_A, "GPU-edge-a2"),
        (EDGE_C, "GPU-edge-c1"),
    ];
    store
        .upsert_inventory_at(
            &[
                instance(
                    "acme",
                    EDGE_A,
                    "R1",
                    None,
                    vec![gpu(gpus[0].1, H100), gpu(gpus[1].1, H100)],
                ),
                instance("acme", EDGE_C, "R1", None, vec![gpu(gpus[2].1, H100)]),
            ],
            UnixMillis(T0 - HOUR),
        )
        .await
        .unwrap();
    let mut all = Vec::new();
    for (k, (inst, gpu)) in gpus.into_iter().enumerate() {
        let from = T0 + k as i64 * 17_003;
        for span in trace_spans(k * 5, from, T0 + 3 * HOUR) {
            all.push(acme_sample(inst, gpu, span));
        }
    }
    for batch in all.chunks(700) {
        store.write_samples(batch).await.unwrap();
    }
    let again = store.write_samples(&all[..300]).await.unwrap();
    assert_eq!(again.duplicates, 300, "{again:?}");
    store
        .refresh_rollups(UnixMillis(T0 - HOUR), UnixMillis(T0 + 4 * HOUR))
        .await
        .unwrap();
    let (from, to) = (T0 + 7 * 60_000 + 1_234, T0 + 2 * HOUR + 41 * 60_000 + 17);
    let w = store
        .create_workload(
            &scope("acme"),
            &NewWorkload {
                label: "two instances".into(),
                instances: vec![InstanceId::from(EDGE_A), InstanceId::from(EDGE_C)],
                from: UnixMillis(from),
                to: Some(UnixMillis(to)),
                functional_unit: "run".into(),
                functional_units: 1.0,
                labels: Default::default(),
            },
        )
        .await
        .unwrap();
    let got = check_footprint(store, &w, &all, None).await;
    let cut = all
        .iter()
        .filter(|s| {
            let s = &s.sample;
            (s.start.0 < from && s.end.0 > from) || (s.start.0 < to && s.end.0 > to)
        })
        .count();
    assert!(cut >= 3, "the span cuts samples at both ends ({cut})");
    let covered: i64 = all
        .iter()
        .map(|s| (s.sample.end.0.min(to) - s.sample.start.0.max(from)).max(0))
        .sum();
    assert_eq!(got["coverage"]["covered_gpu_ms"], covered);
}

#[tokio::test]
async fn sqlite_hourly_series_equal_the_five_minute_ones() {
    let store = SqliteStore::open_in_memory().unwrap();
    case(&store).await;
    two_instances_with_ragged_ends(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_hourly_series_equal_the_five_minute_ones() {
    let Some(url) = clickhouse_url("series_rollups::clickhouse") else {
        return;
    };
    let db = format!("wp_test_{:016x}", rand::random::<u64>());
    let store = ClickHouseStore::connect(&url, &db).await.unwrap();
    case(&store).await;
    two_instances_with_ragged_ends(&store).await;
    // The rollups were in use: a summary of the whole hours reads them.
    let summary = store
        .tenant_summary(&scope("acme"), UnixMillis(T0), UnixMillis(T0 + 24 * HOUR))
        .await
        .unwrap();
    assert!(summary.rollup_instance_hours > 0, "{summary:?}");
    clickhouse::Client::default()
        .with_url(&url)
        .query("DROP DATABASE IF EXISTS ?")
        .bind(clickhouse::sql::Identifier(&db))
        .execute()
        .await
        .unwrap();
}
