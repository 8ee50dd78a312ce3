//! Monthly statements on both stores (SQLite, and the real ClickHouse server), with energy from
//! the real H100 trace's counter and intensity from WattTime's real CAISO_NORTH series:
//! preliminary vs issued, issued exactly once by two racing replicas, never changed after
//! issue, late samples and a restatement after issue carried as dated adjustments on a later
//! statement, totals reconciled to the 5-minute ledger (mJ exact, grams to 1e-9), CSV and the
//! operator's all-tenant CSV and Parquet exports equal to the JSON, and no tenant seeing
//! another's usage.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use wattprint_core::accounting::split_into_buckets;
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, PointKind, RegionIntensity,
    Signal,
};
use wattprint_core::sample::{Attribution, EnergySample, EnergySource};
use wattprint_core::sci::{EmbodiedSpec, HardwareCatalog};
use wattprint_core::{
    Bucket, GpuUuid, GramsPerKwh, HostId, InstanceId, Millijoules, Milliwatts, RegionId, TenantId,
    TenantScope, UnixMillis,
};
use wattprint_query_api::statements::{self, issue_due, Period, Sources, StatementPolicy};
use wattprint_store::{
    ClickHouseStore, EnrichedSample, EnrichedShare, GpuRecord, InstanceRecord, NewWorkload,
    SqliteStore, Store,
};

const H100: &str = "NVIDIA H100 80GB HBM3";
const REGION: &str = "CAISO_NORTH";
const PUE: f64 = 1.15;
const KWH: f64 = 3.6e9;
/// Each sample spans 10 s of the trace.
const SPAN_MS: i64 = 10_000;
/// eGRID 2023 CAMX total output rate, lb/MWh → g/kWh: the location-based average.
const CAMX_G_PER_KWH: f64 = 429.983 * 453.59237 / 1000.0;

fn period() -> Period {
    Period::parse("2026-10").unwrap()
}

fn scope(t: &str) -> TenantScope {
    TenantScope::from_verified(TenantId::from(t))
}

/// Counter energy of the real trace (190 s) over consecutive 10 s windows, mJ.
fn trace_minutes() -> Vec<u64> {
    let rows = wattprint_tests::read_trace();
    let t0 = rows[0].t_ms;
    let mut out = Vec::new();
    let mut last = rows[0].counter_mj;
    let mut window = 1;
    for r in &rows {
        if r.t_ms - t0 >= window * SPAN_MS {
            out.push(r.counter_mj - last);
            last = r.counter_mj;
            window += 1;
        }
    }
    assert!(out.len() >= 15, "the trace is over 150 s long");
    out
}

/// WattTime CAISO_NORTH marginal values, g/kWh, one per 5-minute bucket from the month's start.
fn moer() -> Vec<f64> {
    let path = wattprint_tests::data_dir().join("moer/watttime2023_caiso-north_actual.csv");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().trim().parse().unwrap())
        .collect()
}

fn marginal(bucket: Bucket) -> Option<JoinedIntensity> {
    let m = moer();
    let i = (bucket.start().0 - period().start().0) / 300_000;
    Some(JoinedIntensity {
        value: GramsPerKwh(m[i as usize % m.len()]),
        kind: IntensityKind::Actual,
        source: "watttime:CAISO_NORTH".into(),
        point_at: bucket.start(),
        replayed: true,
    })
}

fn sample(
    tenant: &str,
    instance: &str,
    gpu: &str,
    seq: u64,
    start: i64,
    mj: u64,
) -> EnrichedSample {
    let sample = EnergySample {
        host: HostId::from("host-1"),
        gpu: GpuUuid::from(gpu),
        instance: InstanceId::from(instance),
        seq,
        start: UnixMillis(start),
        end: UnixMillis(start + SPAN_MS),
        energy: Millijoules(mj),
        power: Milliwatts(300_000),
        power_max: Milliwatts(690_000),
        util_gpu_pct: 90,
        mem_used_bytes: 1 << 30,
        temp_c: 60,
        sm_clock_mhz: 1980,
        chain_start: seq == 0,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    };
    let shares = split_into_buckets(sample.start, sample.end, sample.energy)
        .into_iter()
        .map(|s| EnrichedShare {
            bucket: s.bucket,
            energy: s.energy,
            covered_ms: s.covered_ms,
            intensity: marginal(s.bucket),
        })
        .collect();
    EnrichedSample {
        sample,
        tenant: TenantId::from(tenant),
        region: RegionId::from(REGION),
        pue: PUE,
        shares,
    }
}

/// The month's hand computation for a set of samples: energy, marginal facility grams (per
/// bucket share E × I × PUE) and location-based grams (E × CAMX × PUE).
fn by_hand(samples: &[EnrichedSample]) -> (u64, f64, f64) {
    let (mut e, mut marginal_g, mut location_g) = (0u64, 0.0, 0.0);
    for s in samples {
        for sh in &s.shares {
            e += sh.energy.0;
            let i = sh.intensity.as_ref().unwrap().value.0;
            marginal_g += sh.energy.0 as f64 * i / KWH * PUE;
            location_g += sh.energy.0 as f64 * CAMX_G_PER_KWH / KWH * PUE;
        }
    }
    (e, marginal_g, location_g)
}

fn assert_grams(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: {got} vs {want}"
    );
}

fn inventory() -> Vec<InstanceRecord> {
    let inst = |tenant: &str, id: &str, gpu: &str| InstanceRecord {
        tenant: TenantId::from(tenant),
        instance: InstanceId::from(id),
        region: RegionId::from(REGION),
        zip_code: None,
        gpus: vec![GpuRecord {
            uuid: GpuUuid::from(gpu),
            model: H100.into(),
            power_limit: Milliwatts(700_000),
            host: HostId::from("host-1"),
        }],
    };
    vec![inst("acme", "i-1", "GPU-1"), inst("globex", "i-2", "GPU-2")]
}

fn catalog() -> HardwareCatalog {
    let mut c = HardwareCatalog::default();
    c.models.insert(
        H100.into(),
        EmbodiedSpec {
            embodied_kgco2e: 1_000.0,
            lifetime_years: 4.0,
            source: "test".into(),
        },
    );
    c
}

fn join() -> IntensityJoin {
    let mut join = IntensityJoin::new(15 * 60 * 1000);
    join.insert(
        RegionId::from(REGION),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((GramsPerKwh(CAMX_G_PER_KWH), "egrid2023:CAMX".into())),
        },
    );
    join
}

/// The whole behaviour on one store.
async fn statements_on(store: Arc<dyn Store>, store_name: &str) {
    let p = period();
    let day = 86_400_000;
    store.upsert_inventory(&inventory()).await.unwrap();
    let minutes = trace_minutes();
    let acme: Vec<EnrichedSample> = minutes
        .iter()
        .enumerate()
        .map(|(k, mj)| {
            sample(
                "acme",
                "i-1",
                "GPU-1",
                k as u64,
                p.start().0 + day + k as i64 * SPAN_MS,
                *mj,
            )
        })
        .collect();
    let globex: Vec<EnrichedSample> = minutes
        .iter()
        .rev()
        .enumerate()
        .map(|(k, mj)| {
            sample(
                "globex",
                "i-2",
                "GPU-2",
                k as u64,
                p.start().0 + 2 * day + k as i64 * SPAN_MS,
                *mj,
            )
        })
        .collect();
    store.write_samples(&acme).await.unwrap();
    store.write_samples(&globex).await.unwrap();
    // A workload over acme's first five samples.
    let w_from = UnixMillis(p.start().0 + day);
    store
        .create_workload(
            &scope("acme"),
            &NewWorkload {
                label: "fine-tune".into(),
                instances: vec![InstanceId::from("i-1")],
                from: w_from,
                to: Some(UnixMillis(w_from.0 + 5 * SPAN_MS)),
                functional_unit: "run".into(),
                functional_units: 1.0,
                labels: Default::default(),
            },
        )
        .await
        .unwrap();

    let (catalog, join) = (catalog(), join());
    let src = Sources {
        store: store.as_ref(),
        catalog: &catalog,
        join: Some(&join),
        market: None,
    };
    let policy = StatementPolicy::default();

    // Preliminary while the month runs: the ledger's numbers, by hand and by the store.
    let mid = UnixMillis(p.start().0 + 20 * day);
    let pre = statements::statement(src, &scope("acme"), p, mid, policy)
        .await
        .unwrap();
    assert_eq!(pre.view.status, "preliminary");
    assert_eq!(pre.view.content_sha256, None);
    let (e, marginal_g, location_g) = by_hand(&acme);
    assert_eq!(pre.view.totals.it_energy_mj, e);
    assert_eq!(
        e,
        minutes.iter().sum::<u64>(),
        "the trace's counter, to the mJ"
    );
    assert_grams(pre.view.totals.marginal_co2e_g, marginal_g, "marginal");
    assert_grams(
        pre.view.totals.location_co2e_g.unwrap(),
        location_g,
        "location",
    );
    let summary = store
        .tenant_summary(&scope("acme"), p.start(), p.end())
        .await
        .unwrap();
    assert_eq!(
        summary.totals.energy.0, e,
        "reconciles to the store's summary"
    );
    assert_grams(
        pre.view.totals.marginal_co2e_g,
        summary.totals.facility_co2e.0,
        "summary",
    );
    assert_eq!(pre.view.instances.len(), 1);
    assert_eq!(pre.view.instances[0].amounts.it_energy_mj, e);
    assert!(pre.view.totals.embodied_co2e_g > 0.0);
    let w = &pre.view.workloads[0];
    assert_eq!(w.label, "fine-tune");
    assert_eq!(w.amounts.it_energy_mj, minutes[..5].iter().sum::<u64>());
    assert_eq!(pre.view.market_based.status, "not_configured");
    assert_eq!(pre.view.market_based.co2e_g, None);
    // CSV carries the same numbers.
    let csv = statements::csv::render(&pre.view).unwrap();
    let total_row = csv.lines().nth(1).unwrap();
    assert!(total_row.contains(&format!(",total,,,{e},")), "{csv}");
    assert!(
        total_row.contains(&pre.view.totals.marginal_co2e_g.to_string()),
        "{csv}"
    );

    // Other tenants: globex's month is its own, acme's instance absent.
    let g = statements::statement(src, &scope("globex"), p, mid, policy)
        .await
        .unwrap();
    assert_eq!(g.view.totals.it_energy_mj, by_hand(&globex).0);
    assert!(g.view.instances.iter().all(|i| i.instance_id == "i-2"));
    assert!(g.view.workloads.is_empty());
    let nobody = statements::statement(src, &scope("nobody"), p, mid, policy)
        .await
        .unwrap();
    assert_eq!(nobody.view.totals.it_energy_mj, 0);

    // Not due before the grace has passed; then issued exactly once by two racing replicas.
    let early = issue_due(src, UnixMillis(policy.issue_at(p).0 - 1), policy)
        .await
        .unwrap();
    assert!(early.issued.is_empty(), "{early:?}");
    let due = UnixMillis(policy.issue_at(p).0 + 60_000);
    let (a, b) = tokio::join!(
        issue_due(src, due, policy),
        issue_due(src, UnixMillis(due.0 + 1), policy)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.errors.is_empty() && b.errors.is_empty(), "{a:?} {b:?}");
    assert_eq!((a.latest_issued, b.latest_issued), (Some(p), Some(p)));
    assert_eq!(early.latest_issued, None);
    let issued = store.issued_statements(&scope("acme")).await.unwrap();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let first = statements::statement(src, &scope("acme"), p, due, policy)
        .await
        .unwrap();
    assert_eq!(first.body, issued[0].body, "served byte for byte as issued");
    assert_eq!(first.view.status, "issued");
    let hash = statements::issue::content_sha256(&first.view).unwrap();
    assert_eq!(first.view.content_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(first.view.totals.it_energy_mj, e);
    // A statement issued before the carbon-aware potential existed (no such field) reads and
    // writes back byte for byte, so its hash still holds.
    let cut = first
        .body
        .find(",\"carbon_aware\"")
        .expect("the potential is last");
    let older = format!("{}}}", &first.body[..cut]);
    let parsed: wattprint_api_types::StatementView = serde_json::from_str(&older).unwrap();
    assert_eq!(parsed.carbon_aware, None);
    assert_eq!(serde_json::to_string(&parsed).unwrap(), older);
    lines_equal_json(
        &csv_lines(&statements::csv::render(&first.view).unwrap()),
        &[&first.view],
    );
    exports_equal_json(src, p, due, policy).await;
    pdf_shows_the_json(&first.view, store_name);

    // Late samples for the issued month change nothing issued...
    let late: Vec<EnrichedSample> = minutes[..3]
        .iter()
        .enumerate()
        .map(|(k, mj)| {
            sample(
                "acme",
                "i-1",
                "GPU-1",
                1000 + k as u64,
                p.start().0 + 10 * day + k as i64 * SPAN_MS,
                *mj,
            )
        })
        .collect();
    store.write_samples(&late).await.unwrap();
    let after = UnixMillis(due.0 + day);
    let again = statements::statement(src, &scope("acme"), p, after, policy)
        .await
        .unwrap();
    assert_eq!(again.body, first.body, "an issued statement never changes");
    let issue_again = statements::issue(src, &scope("acme"), p, after, policy)
        .await
        .unwrap();
    assert_eq!(
        issue_again.body, first.body,
        "issuing again returns the issued one"
    );

    // ...and appear as a dated adjustment on the next month's statement.
    let (late_e, late_g, late_loc) = by_hand(&late);
    let next = statements::statement(src, &scope("acme"), p.next(), after, policy)
        .await
        .unwrap();
    assert_eq!(
        next.view.adjustments.len(),
        1,
        "{:?}",
        next.view.adjustments
    );
    let adj = &next.view.adjustments[0];
    assert_eq!(adj.period, p.to_string());
    // The export of the next month carries the adjustment, its usage in the month corrected.
    exports_equal_json(src, p.next(), after, policy).await;
    assert_eq!(adj.it_energy_mj, late_e as i64);
    assert_grams(adj.marginal_co2e_g, late_g, "adjustment marginal");
    assert_grams(adj.location_co2e_g, late_loc, "adjustment location");
    // Issued + adjustments = a recompute of the month today.
    let today = statements::compute(src, &scope("acme"), p, after)
        .await
        .unwrap();
    assert_eq!(
        first.view.totals.it_energy_mj as i64 + adj.it_energy_mj,
        today.totals.it_energy_mj as i64
    );
    assert_grams(
        first.view.totals.marginal_co2e_g + adj.marginal_co2e_g,
        today.totals.marginal_co2e_g,
        "issued + adjustments",
    );

    // Once the next month is issued with that adjustment, the one after does not repeat it.
    // (That month also holds a sample whose interval has no intensity yet: restated below.)
    let mut unjoined = sample(
        "acme",
        "i-1",
        "GPU-1",
        2000,
        p.next().start().0 + 3 * day,
        minutes[0],
    );
    for share in &mut unjoined.shares {
        share.intensity = None;
    }
    store.write_samples(&[unjoined.clone()]).await.unwrap();
    let next_due = UnixMillis(policy.issue_at(p.next()).0 + 1);
    statements::issue(src, &scope("acme"), p.next(), next_due, policy)
        .await
        .unwrap();
    let third = statements::statement(src, &scope("acme"), p.next().next(), next_due, policy)
        .await
        .unwrap();
    assert!(
        third.view.adjustments.is_empty(),
        "{:?}",
        third.view.adjustments
    );

    // A restatement after issue: the actual intensity of that interval arrives once the month
    // is issued. The issued month does not change; the next statement carries the difference.
    let restated_g_per_kwh = 321.0;
    let bucket = Bucket::containing(unjoined.sample.start);
    let mut actual = IntensityJoin::new(15 * 60 * 1000);
    actual.insert(
        RegionId::from(REGION),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: None,
        },
    );
    actual
        .record(&IntensityPoint {
            region: RegionId::from(REGION),
            at: bucket.start(),
            duration_ms: 300_000,
            value: GramsPerKwh(restated_g_per_kwh),
            signal: Signal::Marginal,
            kind: PointKind::Actual,
            issued_at: None,
            provider: "watttime:CAISO_NORTH".into(),
            model_version: None,
            fetched_at: next_due,
        })
        .unwrap();
    let next_issued = statements::statement(src, &scope("acme"), p.next(), next_due, policy)
        .await
        .unwrap();
    let outcome = store
        .restate(
            &RegionId::from(REGION),
            bucket.start(),
            bucket.end(),
            &actual,
        )
        .await
        .unwrap();
    assert_eq!(outcome.intervals, 1, "{outcome:?}");
    let later = UnixMillis(next_due.0 + day);
    let again = statements::statement(src, &scope("acme"), p.next(), later, policy)
        .await
        .unwrap();
    assert_eq!(again.body, next_issued.body, "issued months never change");
    let fourth = statements::statement(src, &scope("acme"), p.next().next(), later, policy)
        .await
        .unwrap();
    assert_eq!(
        fourth.view.adjustments.len(),
        1,
        "{:?}",
        fourth.view.adjustments
    );
    let restated = &fourth.view.adjustments[0];
    assert_eq!(restated.period, p.next().to_string());
    assert_eq!(restated.it_energy_mj, 0, "a restatement moves no energy");
    assert_grams(
        restated.marginal_co2e_g,
        minutes[0] as f64 * restated_g_per_kwh / KWH * PUE,
        "restatement adjustment",
    );
    assert_grams(restated.location_co2e_g, 0.0, "the average did not change");
    let today = statements::compute(src, &scope("acme"), p.next(), later)
        .await
        .unwrap();
    assert_grams(
        next_issued.view.totals.marginal_co2e_g + restated.marginal_co2e_g,
        today.totals.marginal_co2e_g,
        "issued + restatement = recompute",
    );

    // globex got its own statement of the month; nothing of acme's.
    let g_issued = store.issued_statements(&scope("globex")).await.unwrap();
    assert_eq!(g_issued.len(), 1);
    assert!(!g_issued[0].body.contains("i-1"), "{}", g_issued[0].body);
}

/// The carbon-aware potential of a small month by hand: one workload of two 5-minute slots
/// (90 000 000 and 60 000 000 mJ) on actual marginal intensities 400, 100, 50, 300, then 50
/// g/kWh. Flexible Start (24 h) moves it to slot 4 onwards (50 + 50); Pause and Resume (deadline
/// 2 × 2 slots) runs it in slots 1 and 2 (100, then 50).
async fn carbon_aware_on(store: &dyn Store) {
    let p = Period::parse("2026-06").unwrap();
    let t0 = p.start().0 + 86_400_000;
    let mut inv = inventory();
    inv[0].tenant = TenantId::from("initech");
    inv[0].instance = InstanceId::from("i-3");
    inv[0].gpus[0].uuid = GpuUuid::from("GPU-3");
    store.upsert_inventory(&inv[..1]).await.unwrap();
    let (e0, e1) = (90_000_000u64, 60_000_000u64);
    let samples: Vec<EnrichedSample> = (0..60u64)
        .map(|k| {
            let mj = if k < 30 { e0 / 30 } else { e1 / 30 };
            sample("initech", "i-3", "GPU-3", k, t0 + k as i64 * SPAN_MS, mj)
        })
        .collect();
    store.write_samples(&samples).await.unwrap();
    store
        .create_workload(
            &scope("initech"),
            &NewWorkload {
                label: "train".into(),
                instances: vec![InstanceId::from("i-3")],
                from: UnixMillis(t0),
                to: Some(UnixMillis(t0 + 600_000)),
                functional_unit: "run".into(),
                functional_units: 1.0,
                labels: Default::default(),
            },
        )
        .await
        .unwrap();
    let intensity = |slot: usize| match slot {
        0 => 400.0,
        1 => 100.0,
        3 => 300.0,
        _ => 50.0,
    };
    let mut join = join();
    for slot in 0..300 {
        join.record(&IntensityPoint {
            region: RegionId::from(REGION),
            at: UnixMillis(t0 + slot as i64 * 300_000),
            duration_ms: 300_000,
            value: GramsPerKwh(intensity(slot)),
            signal: Signal::Marginal,
            kind: PointKind::Actual,
            issued_at: None,
            provider: "watttime:CAISO_NORTH".into(),
            model_version: None,
            fetched_at: UnixMillis(t0),
        })
        .unwrap();
    }
    let catalog = catalog();
    let src = Sources {
        store,
        catalog: &catalog,
        join: Some(&join),
        market: None,
    };
    let view = statements::compute(src, &scope("initech"), p, p.end())
        .await
        .unwrap();
    // Facility energy per slot, rounded to the mJ as the what-ifs take it; grams = mJ × g/kWh.
    let (f0, f1) = ((e0 as f64 * PUE).round(), (e1 as f64 * PUE).round());
    let g = |a: f64, b: f64| (f0 * a + f1 * b) / KWH;
    let c = view.carbon_aware.clone().unwrap();
    assert_eq!((c.window_hours, c.deadline_factor), (24.0, 2.0));
    assert!(c.basis.contains("actual"), "{}", c.basis);
    assert_eq!(c.workloads.len(), 1, "{:?}", c.workloads);
    let w = &c.workloads[0];
    assert!(w.unavailable.is_empty(), "{:?}", w.unavailable);
    assert_grams(w.actual_co2e_g.unwrap(), g(400.0, 100.0), "as run");
    assert_grams(
        w.flexible_start_saving_co2e_g.unwrap(),
        g(400.0, 100.0) - g(50.0, 50.0),
        "flexible start",
    );
    assert_eq!(
        w.flexible_start_best_start.as_deref(),
        Some(UnixMillis(t0 + 4 * 300_000).to_rfc3339().as_str())
    );
    assert_grams(
        w.pause_resume_saving_co2e_g.unwrap(),
        g(400.0, 100.0) - g(100.0, 50.0),
        "pause and resume",
    );
    assert_eq!(
        c.flexible_start_saving_co2e_g,
        w.flexible_start_saving_co2e_g.unwrap()
    );
    assert_eq!(
        c.pause_resume_saving_co2e_g,
        w.pause_resume_saving_co2e_g.unwrap()
    );
    // The CSV's total and workload rows carry the same savings.
    let rows = csv_lines(&statements::csv::render(&view).unwrap());
    for (line, want) in [
        ("total", c.flexible_start_saving_co2e_g),
        ("workload", w.flexible_start_saving_co2e_g.unwrap()),
    ] {
        let row = rows.iter().find(|r| r["line"] == line).unwrap();
        assert_eq!(
            row["flexible_start_saving_co2e_g"].parse::<f64>().unwrap(),
            want
        );
    }
    // A workload that has not ended in the month is not counted in it.
    let july = statements::compute(src, &scope("initech"), p.next(), p.next().end())
        .await
        .unwrap();
    assert!(july.carbon_aware.unwrap().workloads.is_empty());
}

/// A table's rows as column name → text (empty for null), what CSV and Parquet are compared
/// with the JSON through.
type Lines = Vec<std::collections::BTreeMap<String, String>>;

fn csv_lines(text: &str) -> Lines {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h = r.headers().unwrap().clone();
    r.records()
        .map(|x| {
            let x = x.unwrap();
            h.iter()
                .zip(x.iter())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

/// A Parquet file's rows, read back with the parquet crate's own reader.
fn parquet_lines(bytes: &[u8]) -> Lines {
    use parquet::record::Field;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("statements.parquet");
    std::fs::write(&path, bytes).unwrap();
    let reader =
        parquet::file::serialized_reader::SerializedFileReader::try_from(path.as_path()).unwrap();
    reader
        .into_iter()
        .map(|row| {
            row.unwrap()
                .get_column_iter()
                .map(|(k, v)| {
                    let text = match v {
                        Field::Null => String::new(),
                        Field::Long(i) => i.to_string(),
                        Field::Double(f) => f.to_string(),
                        Field::Str(s) => s.clone(),
                        other => panic!("column {k} holds {other:?}"),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .collect()
}

/// Every row carries the JSON's numbers for its line (of the statement of its tenant), and
/// every line of the statements has its row.
fn lines_equal_json(rows: &Lines, views: &[&wattprint_api_types::StatementView]) {
    let find = |view: &wattprint_api_types::StatementView, line: &str, id: &str| {
        rows.iter()
            .find(|x| x["tenant"] == view.tenant && x["line"] == line && x["id"] == id)
            .unwrap_or_else(|| panic!("no {line} {id} row of {} in {rows:?}", view.tenant))
    };
    for view in views {
        let check = |row: &std::collections::BTreeMap<String, String>,
                     a: &wattprint_api_types::StatementAmounts| {
            assert_eq!(row["it_energy_mj"].parse::<u64>().unwrap(), a.it_energy_mj);
            assert_eq!(
                row["marginal_co2e_g"].parse::<f64>().unwrap(),
                a.marginal_co2e_g
            );
            assert_eq!(
                row["embodied_co2e_g"].parse::<f64>().unwrap(),
                a.embodied_co2e_g
            );
            assert_eq!(
                row["location_co2e_g"].parse::<f64>().ok(),
                a.location_co2e_g
            );
            assert_eq!(row["statement_id"], view.statement_id);
            assert_eq!(row["status"], view.status);
            assert_eq!(
                row["content_sha256"],
                view.content_sha256.clone().unwrap_or_default()
            );
            assert_eq!(row["period"], view.period);
            assert_eq!(row["usage_period"], view.period);
            assert_eq!(row["model_version"], view.model_version);
        };
        check(find(view, "total", ""), &view.totals);
        for i in &view.instances {
            check(find(view, "instance", &i.instance_id), &i.amounts);
        }
        for w in &view.workloads {
            let row = find(view, "workload", &w.workload_id);
            check(row, &w.amounts);
            assert_eq!(
                row["sci_g_per_unit"].parse::<f64>().unwrap(),
                w.sci_g_per_unit
            );
        }
        for adj in &view.adjustments {
            let row = find(view, "adjustment", &adj.period);
            assert_eq!(
                row["it_energy_mj"].parse::<i64>().unwrap(),
                adj.it_energy_mj
            );
            assert_eq!(
                row["marginal_co2e_g"].parse::<f64>().unwrap(),
                adj.marginal_co2e_g
            );
            assert_eq!(row["usage_period"], adj.period, "the month corrected");
            assert_eq!(row["period"], view.period);
        }
    }
    for view in views {
        let total = find(view, "total", "");
        assert_eq!(
            total["market_co2e_g"].parse::<f64>().ok(),
            view.market_based.co2e_g
        );
        for m in &view.market_based.regions {
            let row = find(view, "market_region", &m.region);
            assert_eq!(row["label"], m.status);
            assert_eq!(
                row["facility_energy_kwh"].parse::<f64>().unwrap(),
                m.facility_energy_kwh
            );
            assert_eq!(row["market_co2e_g"].parse::<f64>().ok(), m.co2e_g);
        }
    }
    let lines: usize = views
        .iter()
        .map(|v| {
            1 + v.instances.len()
                + v.workloads.len()
                + v.adjustments.len()
                + v.market_based.regions.len()
        })
        .sum();
    assert_eq!(rows.len(), lines);
}

/// The operator's CSV and Parquet exports of `period` hold every tenant's statement as the
/// tenant reads it.
async fn exports_equal_json(src: Sources<'_>, p: Period, now: UnixMillis, policy: StatementPolicy) {
    use statements::export::{render, ExportFormat};
    let mut views = Vec::new();
    for t in ["acme", "globex"] {
        views.push(
            statements::statement(src, &scope(t), p, now, policy)
                .await
                .unwrap()
                .view,
        );
    }
    let views: Vec<&wattprint_api_types::StatementView> = views.iter().collect();
    let parquet = render(src, p, now, policy, ExportFormat::Parquet)
        .await
        .unwrap();
    assert_eq!(&parquet[..4], b"PAR1");
    lines_equal_json(&parquet_lines(&parquet), &views);
    let csv = render(src, p, now, policy, ExportFormat::Csv)
        .await
        .unwrap();
    lines_equal_json(&csv_lines(std::str::from_utf8(&csv).unwrap()), &views);
}

/// The PDF's text (poppler's `pdftotext`) shows the JSON's numbers; its first page is kept as
/// a PNG under `target/test-artifacts/`.
/// A PDF's text, as poppler's `pdftotext -layout` extracts it.
fn pdf_text(pdf_bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("statement.pdf");
    std::fs::write(&pdf, pdf_bytes).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout"])
        .arg(&pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils; scripts/test-all.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pdf_shows_the_json(view: &wattprint_api_types::StatementView, store: &str) {
    use wattprint_query_api::statements::pdf::{kg, kwh};
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("statement.pdf");
    std::fs::write(&pdf, statements::pdf::render(view)).unwrap();
    let text = pdf_text(&std::fs::read(&pdf).unwrap());
    let t = &view.totals;
    let hash = view.content_sha256.clone().unwrap();
    for want in [
        view.tenant.clone(),
        view.period.clone(),
        view.statement_id.clone(),
        hash,
        view.issued_at.clone().unwrap(),
        format!("{} kWh ({} mJ)", kwh(t.it_energy_kwh), t.it_energy_mj),
        format!("{} kgCO2e", kg(t.marginal_co2e_g)),
        format!("{} kgCO2e", kg(t.location_co2e_g.unwrap())),
        format!("{} kgCO2e", kg(t.embodied_co2e_g)),
        "not_configured".to_owned(),
        "Methodology and data sources".to_owned(),
    ] {
        assert!(text.contains(&want), "the PDF lacks {want:?}:\n{text}");
    }
    if let Some(c) = &view.carbon_aware {
        for want in [
            "Carbon-aware potential".to_owned(),
            format!(
                "Flexible Start would have saved {} kgCO2e",
                kg(c.flexible_start_saving_co2e_g)
            ),
        ] {
            assert!(text.contains(&want), "the PDF lacks {want:?}:\n{text}");
        }
    }
    for i in &view.instances {
        let row = format!("{}", i.amounts.it_energy_mj);
        assert!(
            text.contains(&i.instance_id) && text.contains(&row),
            "{text}"
        );
    }
    for w in &view.workloads {
        assert!(text.contains(&w.label) && text.contains(&w.amounts.it_energy_mj.to_string()));
    }
    let artefacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let png = artefacts.join(format!("statement-{store}-page1"));
    let ok = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile"])
        .arg(&pdf)
        .arg(&png)
        .status()
        .expect("pdftoppm (poppler-utils)");
    assert!(ok.success());
    assert!(png.with_extension("png").metadata().unwrap().len() > 1000);
}

/// Market-based emissions by hand. In 2026-08, acme and globex run the trace in CAISO_NORTH
/// in hour 0 (instruments cover half of both: each gets half of its energy matched), acme
/// alone in hour 1 (instruments for ten times its energy: all of it matched, none beyond)
/// and globex alone in hour 2 (no instruments: none matched). Umbrella, in hour 3, also runs in
/// PJM, where none are configured: its statement is `partial`, with no total.
async fn market_based_on(store: &dyn Store) {
    use statements::{MarketInstruments, RegionInstruments};
    let p = Period::parse("2026-08").unwrap();
    let hour = 3_600_000;
    let t0 = p.start().0 + 86_400_000;
    let mut inv = inventory();
    let mut pjm = inv[0].clone();
    pjm.tenant = TenantId::from("umbrella");
    pjm.instance = InstanceId::from("i-4");
    pjm.region = RegionId::from("PJM");
    pjm.gpus[0].uuid = GpuUuid::from("GPU-4");
    let mut caiso = pjm.clone();
    caiso.instance = InstanceId::from("i-5");
    caiso.region = RegionId::from(REGION);
    caiso.gpus[0].uuid = GpuUuid::from("GPU-5");
    inv.extend([pjm, caiso]);
    store.upsert_inventory(&inv).await.unwrap();
    let minutes = trace_minutes();
    // Sequence numbers above those of the October and June tests on the same GPUs.
    let run = |tenant: &str, instance: &str, gpu: &str, region: &str, hour_no: i64| {
        minutes
            .iter()
            .enumerate()
            .map(|(k, mj)| {
                let mut s = sample(
                    tenant,
                    instance,
                    gpu,
                    50_000 + hour_no as u64 * 100 + k as u64,
                    t0 + hour_no * hour + k as i64 * SPAN_MS,
                    *mj,
                );
                s.sample.chain_start = false;
                s.region = RegionId::from(region);
                s
            })
            .collect::<Vec<_>>()
    };
    let (a0, a1) = (
        run("acme", "i-1", "GPU-1", REGION, 0),
        run("acme", "i-1", "GPU-1", REGION, 1),
    );
    let (g0, g2) = (
        run("globex", "i-2", "GPU-2", REGION, 0),
        run("globex", "i-2", "GPU-2", REGION, 2),
    );
    let (u_pjm, u_caiso) = (
        run("umbrella", "i-4", "GPU-4", "PJM", 3),
        run("umbrella", "i-5", "GPU-5", REGION, 3),
    );
    for batch in [&a0, &a1, &g0, &g2, &u_pjm, &u_caiso] {
        let out = store.write_samples(batch).await.unwrap();
        assert_eq!(out.inserted as usize, batch.len(), "{out:?}");
    }
    // Facility kWh of a run, by hand from the trace's counter energy.
    let kwh = |run: &[EnrichedSample]| -> f64 {
        run.iter()
            .map(|s| s.sample.energy.0 as f64 * PUE / KWH)
            .sum()
    };
    let (a0k, a1k, g0k, g2k) = (kwh(&a0), kwh(&a1), kwh(&g0), kwh(&g2));
    let (upk, uck) = (kwh(&u_pjm), kwh(&u_caiso));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("caiso-eac.csv");
    let at = |h: i64| UnixMillis(t0 + h * hour).to_rfc3339();
    std::fs::write(
        &file,
        format!(
            "hour_start,kwh\n{},{}\n{},{}\n{},{}\n{},{}\n",
            at(0),
            (a0k + g0k) / 4.0,
            at(0),
            (a0k + g0k) / 4.0,
            at(1),
            10.0 * a1k,
            at(3),
            2.0 * uck,
        ),
    )
    .unwrap();
    let instruments = |factor: f64, residual: Option<f64>| MarketInstruments {
        regions: [(
            RegionId::from(REGION),
            RegionInstruments {
                instruments: file.clone(),
                instrument_g_per_kwh: factor,
                residual_mix_g_per_kwh: residual,
            },
        )]
        .into(),
    };
    let (catalog, join) = (catalog(), join());
    let market_view = |market: MarketInstruments, join: Option<IntensityJoin>, tenant: &str| {
        let (catalog, tenant) = (&catalog, tenant.to_owned());
        async move {
            let src = Sources {
                store,
                catalog,
                join: join.as_ref(),
                market: Some(&market),
            };
            statements::compute(src, &scope(&tenant), p, p.end())
                .await
                .unwrap()
        }
    };

    // Renewable certificates (0 g/kWh), residual mix 400 g/kWh.
    let acme = market_view(instruments(0.0, Some(400.0)), Some(join.clone()), "acme").await;
    let m = &acme.market_based;
    assert_eq!(
        (m.status.as_str(), m.regions.len()),
        ("configured", 1),
        "{m:?}"
    );
    let r = &m.regions[0];
    assert_eq!(
        (r.region.as_str(), r.status.as_str()),
        (REGION, "configured")
    );
    assert_grams(r.facility_energy_kwh, a0k + a1k, "acme facility kWh");
    assert_grams(r.matched_kwh.unwrap(), a0k / 2.0 + a1k, "acme matched kWh");
    assert_grams(r.instrument_co2e_g.unwrap(), 0.0, "acme instrument grams");
    assert_grams(m.co2e_g.unwrap(), a0k / 2.0 * 400.0, "acme market grams");
    assert_eq!(r.residual.as_deref(), Some("residual_mix:400"));
    assert_eq!(r.instruments_sha256.as_ref().map(String::len), Some(64));
    let globex = market_view(instruments(0.0, Some(400.0)), Some(join.clone()), "globex").await;
    let gr = &globex.market_based.regions[0];
    assert_grams(gr.matched_kwh.unwrap(), g0k / 2.0, "globex matched kWh");
    assert_grams(
        globex.market_based.co2e_g.unwrap(),
        (g0k / 2.0 + g2k) * 400.0,
        "globex market grams",
    );
    // Hour 0's instruments are allocated once: the two tenants' matched energy adds up to them.
    assert_grams(
        (r.matched_kwh.unwrap() - a1k) + gr.matched_kwh.unwrap(),
        (a0k + g0k) / 2.0,
        "hour 0 matched, both tenants",
    );

    // Instruments at 5 g/kWh, no residual mix: unmatched energy on the grid average (CAMX).
    let acme = market_view(instruments(5.0, None), Some(join.clone()), "acme").await;
    let r = &acme.market_based.regions[0];
    assert_eq!(r.residual.as_deref(), Some("grid_average"));
    assert_grams(
        acme.market_based.co2e_g.unwrap(),
        (a0k / 2.0 + a1k) * 5.0 + a0k / 2.0 * CAMX_G_PER_KWH,
        "acme market grams on the grid average",
    );
    // …and without any average: no number, and how much energy lacked a factor.
    let acme = market_view(instruments(5.0, None), None, "acme").await;
    let r = &acme.market_based.regions[0];
    assert_eq!((acme.market_based.co2e_g, r.co2e_g), (None, None));
    assert_grams(
        r.unmatched_without_factor_kwh.unwrap(),
        a0k / 2.0,
        "acme energy without a residual factor",
    );

    // Umbrella also ran in PJM, which has no instruments: no total, PJM without numbers.
    let umbrella = market_view(
        instruments(0.0, Some(400.0)),
        Some(join.clone()),
        "umbrella",
    )
    .await;
    let m = &umbrella.market_based;
    assert_eq!((m.status.as_str(), m.co2e_g), ("partial", None), "{m:?}");
    let by_region = |name: &str| m.regions.iter().find(|r| r.region == name).unwrap();
    assert_eq!(by_region("PJM").status, "not_configured");
    assert_eq!(by_region("PJM").co2e_g, None);
    assert_grams(
        by_region("PJM").facility_energy_kwh,
        upk,
        "umbrella PJM kWh",
    );
    assert_grams(
        by_region(REGION).matched_kwh.unwrap(),
        uck,
        "umbrella CAISO matched",
    );
    assert_eq!(by_region(REGION).co2e_g, Some(0.0));
    // The table (CSV) carries the same numbers.
    let csv = statements::csv::render(&umbrella).unwrap();
    lines_equal_json(&csv_lines(&csv), &[&umbrella]);
    let text = pdf_text(&statements::pdf::render(&umbrella));
    assert!(text.contains("Market-based emissions"), "{text}");
    assert!(text.contains("not_configured"), "{text}");

    // Without instruments, no number at all.
    let src = Sources {
        store,
        catalog: &catalog,
        join: Some(&join),
        market: None,
    };
    let plain = statements::compute(src, &scope("acme"), p, p.end())
        .await
        .unwrap();
    assert_eq!(plain.market_based.status, "not_configured");
    assert!(plain.market_based.co2e_g.is_none() && plain.market_based.regions.is_empty());
}

#[tokio::test]
async fn statements_on_sqlite() {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    statements_on(store.clone(), "sqlite").await;
    carbon_aware_on(store.as_ref()).await;
    market_based_on(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_clickhouse() {
    let Some((url, _)) = wattprint_tests::test_servers() else {
        return;
    };
    let db = format!("wp_test_statements_{:08x}", rand::random::<u32>());
    let store = ClickHouseStore::connect(&url, &db).await.unwrap();
    let store = Arc::new(store);
    statements_on(store.clone(), "clickhouse").await;
    carbon_aware_on(store.as_ref()).await;
    market_based_on(store.as_ref()).await;
    let _ = reqwest::Client::new()
        .post(&url)
        .body(format!("DROP DATABASE IF EXISTS {db}"))
        .send()
        .await;
}
