//! `GET /v1/summary`, the billing path, converges to the sum of the stored 5-minute intervals
//! after a restatement fails mid-way, on both stores.
//!
//! ClickHouse: the store under test talks to the real server through a fault-injecting TCP
//! proxy (`common::proxy`) that, during a restatement, goes down right after the shares
//! rewrite (where the rollup-marks write used to follow), swallows the shares insert's answer,
//! refuses the shares insert, or refuses the rollup-marks write. Rollups are fresh and in use before the fault. SQLite: a
//! trigger, created on a second connection to the store's file, aborts the restatement after a
//! few intervals. The truth is computed here from `instance_intervals` (on ClickHouse through
//! a second store that bypasses the proxy): energy to the mJ, grams to 1e-9 relative.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::Router;
use common::proxy::{Action, FaultProxy};
use common::*;
use serde_json::Value;
use wattprint_core::intensity::{
    IntensityJoin, IntensityPoint, PointKind, RegionIntensity, Signal,
};
use wattprint_core::{GramsPerKwh, InstanceId, RegionId, TenantId, TenantScope, UnixMillis};
use wattprint_query_api::{router, ApiLimits, ApiState};
use wattprint_store::{ClickHouseStore, EnrichedSample, SqliteStore, Store};

const TENANT: &str = "acme";
const INSTANCE: &str = "i-f1";
const GPUS: [&str; 2] = ["GPU-f1", "GPU-f2"];
const REGION: &str = "R-FAULT";
const PUE: f64 = 1.25;
const HOUR: i64 = 3_600_000;
/// Whole hours of samples: every one of them can be read from a rollup.
const HOURS: i64 = 3;
/// The static average the samples are first joined with, g/kWh.
const AVERAGE: f64 = 412.5;

fn end() -> i64 {
    T0 + HOURS * HOUR
}

/// A join with only the region's average, or with an actual for every bucket as well.
fn join(actuals: bool) -> IntensityJoin {
    let region = RegionId::from(REGION);
    let mut join = IntensityJoin::new(B);
    join.insert(
        region.clone(),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((GramsPerKwh(AVERAGE), "test:average".to_owned())),
        },
    );
    if actuals {
        for i in 0..HOURS * HOUR / B {
            join.record(&IntensityPoint {
                region: region.clone(),
                at: UnixMillis(T0 + i * B),
                duration_ms: B,
                // Varies by bucket, never the average.
                value: GramsPerKwh(180.0 + 7.25 * ((i * 37) % 41) as f64),
                signal: Signal::Marginal,
                kind: PointKind::Actual,
                issued_at: None,
                provider: "test:actuals".to_owned(),
                model_version: None,
                fetched_at: UnixMillis(T0 + (i + 1) * B),
            })
            .unwrap();
        }
    }
    join
}

/// One-minute samples from 7 s after T0 for [`HOURS`] hours on each GPU, joined with the
/// average: every bucket edge falls inside a sample.
fn samples() -> Vec<EnrichedSample> {
    let join = join(false);
    let mut out = Vec::new();
    for (g, gpu) in GPUS.iter().enumerate() {
        for k in 0..(HOURS * 60 - 1) as u64 {
            let start = T0 + 7_000 + 60_000 * k as i64;
            out.push(enriched(
                TENANT,
                INSTANCE,
                gpu,
                REGION,
                PUE,
                k,
                start,
                start + 60_000,
                17_000_003 + 313 * k + 2_000_011 * g as u64,
                |b| join.lookup(&RegionId::from(REGION), b),
            ));
        }
    }
    out
}

fn scope() -> TenantScope {
    TenantScope::from_verified(TenantId::from(TENANT))
}

/// Stores the inventory and the samples.
async fn seed(store: &dyn Store) {
    store
        .upsert_inventory(&[instance(
            TENANT,
            INSTANCE,
            REGION,
            None,
            GPUS.iter().map(|g| gpu(g, H100)).collect(),
        )])
        .await
        .unwrap();
    let s = samples();
    assert_eq!(
        store.write_samples(&s).await.unwrap().inserted as usize,
        s.len()
    );
}

/// Totals worked out here from the stored 5-minute intervals.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Truth {
    energy_mj: u64,
    it_g: f64,
    facility_g: f64,
}

async fn truth(store: &dyn Store) -> Truth {
    let rows = store
        .instance_intervals(
            &scope(),
            &InstanceId::from(INSTANCE),
            UnixMillis(T0),
            UnixMillis(end()),
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as i64, HOURS * HOUR / B * GPUS.len() as i64);
    let mut t = Truth {
        energy_mj: 0,
        it_g: 0.0,
        facility_g: 0.0,
    };
    for r in rows {
        t.energy_mj += r.energy.0;
        let i = r.intensity.as_ref().expect("every interval has intensity");
        let g = r.energy.0 as f64 * i.value.0 / MJ_PER_KWH;
        t.it_g += g;
        t.facility_g += g * r.pue;
    }
    t
}

fn app(store: Arc<dyn Store>) -> Router {
    router(ApiState::new(
        store,
        auth(),
        catalog(),
        ApiLimits::default(),
    ))
}

/// `GET /v1/summary` over the whole hours; `None` when the API answers with an error.
async fn api_summary(app: &Router) -> Option<Value> {
    let r = get(
        app,
        &format!("/v1/summary?from={T0}&to={}", end()),
        Some(&token(TENANT)),
    )
    .await;
    (r.status == StatusCode::OK).then_some(r.body)
}

fn assert_relative(got: &Value, want: f64, what: &str) {
    let got = got.as_f64().unwrap();
    assert!(
        (got - want).abs() <= 1e-9 * want.abs(),
        "{what}: summary {got}, intervals {want}"
    );
}

/// The summary's totals equal the intervals' sums.
fn assert_converged(summary: &Value, t: &Truth, when: &str) {
    let totals = &summary["totals"];
    assert_eq!(
        totals["it_energy_mj"].as_u64().unwrap(),
        t.energy_mj,
        "{when}: energy"
    );
    assert_relative(
        &totals["operational_it_co2e_g"],
        t.it_g,
        &format!("{when}: IT grams"),
    );
    assert_relative(
        &totals["operational_co2e_g"],
        t.facility_g,
        &format!("{when}: facility grams"),
    );
}

/// Instance-hours a summary of the whole range reads from rollups.
async fn rollup_hours(store: &dyn Store) -> u64 {
    store
        .tenant_summary(&scope(), UnixMillis(T0), UnixMillis(end()))
        .await
        .unwrap()
        .rollup_instance_hours
}

/// A restatement's shares rewrite.
const SHARES: &str = "INSERT INTO `shares`(";
/// A rollup-marks write.
const MARKS: &str = "INSERT INTO `rollup_marks`(";

/// One restatement cut by `action` on the first request containing `pattern`, on a fresh
/// database: the summary through the API equals the intervals before, right after the fault,
/// and once a later pass and a rollup refresh ran (rollups in use again).
async fn clickhouse_case(url: &str, pattern: &str, action: Action) {
    let db = format!("wp_test_{:016x}", rand::random::<u64>());
    let direct = ClickHouseStore::connect(url, &db).await.unwrap();
    seed(&direct).await;
    let region = RegionId::from(REGION);
    direct
        .refresh_rollups(UnixMillis(T0), UnixMillis(end()))
        .await
        .unwrap();
    assert_eq!(
        rollup_hours(&direct).await,
        HOURS as u64,
        "rollups in use before"
    );

    let upstream = url.trim_start_matches("http://").trim_end_matches('/');
    let proxy = FaultProxy::start(upstream).await;
    let proxied: Arc<dyn Store> =
        Arc::new(ClickHouseStore::connect(&proxy.url(), &db).await.unwrap());
    let api = app(proxied.clone());
    let before = truth(&direct).await;
    assert_converged(&api_summary(&api).await.unwrap(), &before, "before");

    proxy.on(pattern, action);
    let restated = proxied
        .restate(&region, UnixMillis(T0), UnixMillis(end()), &join(true))
        .await;
    assert!(
        proxy.hits(pattern) >= 1,
        "{pattern} {action:?}: the fault fired ({restated:?})"
    );
    match action {
        Action::DownAfter => assert!(proxy.is_down(), "went down after the shares insert"),
        Action::Refuse | Action::SwallowAnswer => assert!(restated.is_err(), "{action:?}"),
    }
    if action == Action::DownAfter {
        assert!(
            api_summary(&api).await.is_none(),
            "the API reads through the proxy"
        );
    }
    proxy.heal();
    let after_fault = truth(&direct).await;
    match action {
        Action::Refuse => assert_eq!(after_fault, before, "refused: nothing rewritten"),
        _ => assert!(
            (after_fault.it_g - before.it_g).abs() > 1e-3 * before.it_g,
            "{action:?}: the shares were rewritten"
        ),
    }
    assert_eq!(after_fault.energy_mj, before.energy_mj);
    let summary = api_summary(&api).await.unwrap();
    assert_converged(&summary, &after_fault, &format!("{action:?}, right after"));

    // A later pass restates whatever is left; the refresh loop's call makes rollups fresh.
    proxied
        .restate(&region, UnixMillis(T0), UnixMillis(end()), &join(true))
        .await
        .unwrap();
    proxied
        .refresh_rollups(UnixMillis(T0), UnixMillis(end()))
        .await
        .unwrap();
    let settled = truth(&direct).await;
    if action != Action::Refuse {
        assert_eq!(settled, after_fault, "nothing was left to restate");
    }
    assert!((settled.it_g - before.it_g).abs() > 1e-3 * before.it_g);
    assert_eq!(
        rollup_hours(&direct).await,
        HOURS as u64,
        "rollups in use after"
    );
    assert_converged(
        &api_summary(&api).await.unwrap(),
        &settled,
        &format!("{action:?}, settled"),
    );
    drop(proxy);
    clickhouse::Client::default()
        .with_url(url)
        .query("DROP DATABASE IF EXISTS ?")
        .bind(clickhouse::sql::Identifier(&db))
        .execute()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_summary_converges_when_the_server_goes_down_after_the_shares_rewrite() {
    let Some(url) = clickhouse_url("summary_faults::down_after_shares") else {
        return;
    };
    clickhouse_case(&url, SHARES, Action::DownAfter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_summary_converges_when_the_shares_rewrite_answer_is_lost() {
    let Some(url) = clickhouse_url("summary_faults::answer_lost") else {
        return;
    };
    clickhouse_case(&url, SHARES, Action::SwallowAnswer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_summary_converges_when_the_rollup_marks_write_is_refused() {
    let Some(url) = clickhouse_url("summary_faults::marks_refused") else {
        return;
    };
    clickhouse_case(&url, MARKS, Action::Refuse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_summary_converges_when_the_shares_rewrite_is_refused() {
    let Some(url) = clickhouse_url("summary_faults::refused") else {
        return;
    };
    clickhouse_case(&url, SHARES, Action::Refuse).await;
}

/// SQLite restates in one transaction: a step failing mid-way (a trigger aborting the fourth
/// restatement record) rolls every interval back, and the summary equals the intervals; the
/// next pass applies everything.
#[tokio::test]
async fn sqlite_summary_converges_after_a_restatement_fails_mid_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    seed(store.as_ref()).await;
    let api = app(store.clone());
    let region = RegionId::from(REGION);
    let before = truth(store.as_ref()).await;
    assert_converged(&api_summary(&api).await.unwrap(), &before, "before");

    let side = rusqlite::Connection::open(&path).unwrap();
    side.execute_batch(
        "CREATE TRIGGER fail_restatement BEFORE INSERT ON restatements \
         WHEN (SELECT count(*) FROM restatements) >= 3 \
         BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
    )
    .unwrap();
    let failed = store
        .restate(&region, UnixMillis(T0), UnixMillis(end()), &join(true))
        .await;
    assert!(
        failed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("injected fault")),
        "{failed:?}"
    );
    let after_fault = truth(store.as_ref()).await;
    assert_eq!(after_fault, before, "the failed pass changed no interval");
    let restated: i64 = side
        .query_row("SELECT count(*) FROM restatements", [], |r| r.get(0))
        .unwrap();
    assert_eq!(restated, 0, "and kept no record");
    assert_converged(
        &api_summary(&api).await.unwrap(),
        &after_fault,
        "right after",
    );

    side.execute_batch("DROP TRIGGER fail_restatement").unwrap();
    let outcome = store
        .restate(&region, UnixMillis(T0), UnixMillis(end()), &join(true))
        .await
        .unwrap();
    assert_eq!(
        outcome.intervals as i64,
        HOURS * HOUR / B * GPUS.len() as i64
    );
    let settled = truth(store.as_ref()).await;
    assert!((settled.it_g - before.it_g).abs() > 1e-3 * before.it_g);
    assert_converged(&api_summary(&api).await.unwrap(), &settled, "settled");
}
