//! Throughput of the intensity join on the real CAISO_NORTH data: one month of 5-minute WattTime
//! MOER actuals, the shipped two-day forecast slice (5 to 65 minutes ahead) and the eGRID CAMX
//! static average. Lookups of buckets that hit actuals, that fall to forecasts (the actuals of
//! 2023-06-08 left out), that fall to the average (a published Electricity Maps hour, or the
//! static rate), and a batch as the enricher joins it (many GPUs × buckets with a per-batch cache
//! of (region, bucket)); and `record` of ledger points. Elements are intervals (lookups) or
//! points (record); criterion runs on one thread, so the figures are per core.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;
use wattprint_core::intensity::{
    IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, MarginalSeries, PointKind,
    RegionIntensity, Signal,
};
use wattprint_core::{Bucket, GramsPerKwh, RegionId, UnixMillis, BUCKET_MS};

const DAY_MS: i64 = 86_400_000;
/// Nearest-actual bound: two buckets, so a day without actuals is well beyond it.
const MAX_STALENESS_MS: i64 = 2 * BUCKET_MS;
/// eGRID 2023 CAMX total output CO2e rate, lb/MWh (data/locations/epa_egrid2023_...csv).
const CAMX_LB_PER_MWH: f64 = 429.983;

fn data(rel: &str) -> String {
    format!("{}/../data/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// `YYYY-MM-DD HH:MM:SS`, UTC (the WattTime and Electricity Maps exports).
fn utc(s: &str) -> UnixMillis {
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().expect("digits");
    UnixMillis::from_utc(
        i64::from(n(0..4)),
        n(5..7),
        n(8..10),
        n(11..13),
        n(14..16),
        n(17..19),
    )
    .expect("valid UTC time")
}

fn read_csv(rel: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(data(rel))
        .expect("shipped file")
        .records()
        .map(|r| r.expect("row"))
        .collect()
}

fn point(
    at: UnixMillis,
    value: f64,
    kind: PointKind,
    issued: Option<UnixMillis>,
) -> IntensityPoint {
    IntensityPoint {
        region: RegionId::from("CAISO_NORTH"),
        at,
        duration_ms: BUCKET_MS,
        value: GramsPerKwh(value),
        signal: Signal::Marginal,
        kind,
        issued_at: issued,
        provider: "watttime:CAISO_NORTH".to_owned(),
        model_version: None,
        fetched_at: UnixMillis(0),
    }
}

/// The real data as ledger points: marginal actuals, marginal forecasts, hourly averages.
struct Ledger {
    actual: Vec<IntensityPoint>,
    forecast: Vec<IntensityPoint>,
    average: Vec<IntensityPoint>,
}

fn ledger() -> Ledger {
    let actual = read_csv("moer/watttime2023_caiso-north_actual.csv")
        .iter()
        .map(|r| {
            point(
                utc(&r[0]),
                r[1].parse().expect("value"),
                PointKind::Actual,
                None,
            )
        })
        .collect();
    let forecast = read_csv("moer/watttime2023_caiso-north_forecast_2023-06-08_09.csv")
        .iter()
        .map(|r| {
            let issued = utc(&r[0]);
            point(
                utc(&r[1]),
                r[2].parse().expect("value"),
                PointKind::Forecast,
                Some(issued),
            )
        })
        .collect();
    // Columns: Datetime (UTC), ..., direct (4), LCA (5).
    let average = read_csv("grid-average/electricitymaps_US-CAL-CISO_2023-06_hourly.csv")
        .iter()
        .map(|r| IntensityPoint {
            duration_ms: 12 * BUCKET_MS,
            signal: Signal::Average,
            provider: "electricitymaps:US-CAL-CISO".to_owned(),
            model_version: Some("lifecycle".to_owned()),
            ..point(
                utc(&r[0]),
                r[5].parse().expect("value"),
                PointKind::Actual,
                None,
            )
        })
        .collect();
    Ledger {
        actual,
        forecast,
        average,
    }
}

/// A join for `regions`, each with the actuals outside `[gap_from, gap_to)` as its series, the
/// static CAMX average, and the forecast and average points recorded.
fn join(ledger: &Ledger, regions: &[RegionId], gap: (UnixMillis, UnixMillis)) -> IntensityJoin {
    let mut j = IntensityJoin::new(MAX_STALENESS_MS);
    for region in regions {
        let points = ledger
            .actual
            .iter()
            .filter(|p| p.at < gap.0 || p.at >= gap.1)
            .map(|p| (p.at, p.value))
            .collect();
        j.insert(
            region.clone(),
            RegionIntensity {
                marginal: Some(
                    MarginalSeries::new("watttime:CAISO_NORTH", points).expect("series"),
                ),
                replay: false,
                average: Some((
                    GramsPerKwh::from_lb_per_mwh(CAMX_LB_PER_MWH),
                    "egrid2023:CAMX".to_owned(),
                )),
            },
        );
        for p in ledger.forecast.iter().chain(&ledger.average) {
            j.record(&IntensityPoint {
                region: region.clone(),
                ..p.clone()
            })
            .expect("real point");
        }
    }
    j
}

fn buckets(from: UnixMillis, to: UnixMillis) -> Vec<Bucket> {
    (from.0..to.0)
        .step_by(BUCKET_MS as usize)
        .map(|t| Bucket::aligned(UnixMillis(t)).expect("aligned"))
        .collect()
}

/// Looks every bucket up; the sum of the values keeps the work from being optimised away.
fn lookup_all(j: &IntensityJoin, region: &RegionId, bs: &[Bucket]) -> f64 {
    bs.iter()
        .filter_map(|&b| j.lookup(region, b))
        .map(|x| x.value.0)
        .sum()
}

fn bench(c: &mut Criterion) {
    let ledger = ledger();
    let caiso = RegionId::from("CAISO_NORTH");
    let day0 = utc("2023-06-08 00:00:00");
    let j = join(
        &ledger,
        std::slice::from_ref(&caiso),
        (day0, UnixMillis(day0.0 + DAY_MS)),
    );

    let mut group = c.benchmark_group("intensity_join");
    // (a) 2023-06-09 .. 2023-07-08: every bucket has its actual.
    // (b) 2023-06-08 00:05 .. 24:00, actuals left out: the latest forecast issued before each.
    // (c) beyond the series and the bound: a published Electricity Maps hour (2023-06-01 .. 07,
    //     before the actuals begin) or, with no published average (August), the static rate.
    let cases = [
        (
            "lookup_actual",
            buckets(UnixMillis(day0.0 + DAY_MS), utc("2023-07-09 00:00:00")),
            IntensityKind::Actual,
        ),
        (
            "lookup_forecast",
            buckets(UnixMillis(day0.0 + BUCKET_MS), UnixMillis(day0.0 + DAY_MS)),
            IntensityKind::Forecast,
        ),
        (
            "lookup_fallback_published_average",
            buckets(utc("2023-06-01 00:00:00"), utc("2023-06-07 23:00:00")),
            IntensityKind::FallbackAverage,
        ),
        (
            "lookup_fallback_static_average",
            buckets(utc("2023-08-01 00:00:00"), utc("2023-08-08 00:00:00")),
            IntensityKind::FallbackAverage,
        ),
    ];
    for (name, bs, kind) in &cases {
        assert!(
            bs.iter()
                .all(|&b| j.lookup(&caiso, b).map(|x| x.kind) == Some(*kind)),
            "{name}: every bucket should join as {kind:?}"
        );
        group.throughput(Throughput::Elements(bs.len() as u64));
        group.bench_with_input(BenchmarkId::new(*name, bs.len()), bs, |b, bs| {
            b.iter(|| black_box(lookup_all(&j, &caiso, black_box(bs))))
        });
    }

    // (d) The enricher's way: a batch of GPUs × buckets over a few regions, each interval looked
    // up through a per-batch cache of (region, bucket) and its value cloned into the interval.
    let regions: Vec<RegionId> = [
        "CAISO_NORTH",
        "CAISO_NORTH_B",
        "CAISO_NORTH_C",
        "CAISO_NORTH_D",
    ]
    .into_iter()
    .map(RegionId::from)
    .collect();
    let jr = join(&ledger, &regions, (day0, UnixMillis(day0.0 + DAY_MS)));
    // One hour mixing actuals and forecasts: 2023-06-08 23:30 .. 2023-06-09 00:30.
    let hour = buckets(utc("2023-06-08 23:30:00"), utc("2023-06-09 00:30:00"));
    for (gpus, nb) in [(256usize, 1usize), (1024, 12)] {
        let intervals: Vec<(RegionId, Bucket)> = (0..gpus)
            .flat_map(|g| {
                let region = regions[g % regions.len()].clone();
                hour[..nb].iter().map(move |&b| (region.clone(), b))
            })
            .collect();
        group.throughput(Throughput::Elements(intervals.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(
                format!("batch_{gpus}gpus_x_{nb}buckets_4regions"),
                intervals.len(),
            ),
            &intervals,
            |b, intervals| {
                b.iter(|| {
                    let mut cache: HashMap<(RegionId, Bucket), Option<JoinedIntensity>> =
                        HashMap::new();
                    let joined: Vec<Option<JoinedIntensity>> = intervals
                        .iter()
                        .map(|(region, bucket)| {
                            cache
                                .entry((region.clone(), *bucket))
                                .or_insert_with(|| jr.lookup(region, *bucket))
                                .clone()
                        })
                        .collect();
                    black_box(joined)
                })
            },
        );
        // The same batch without the cache, for comparison: what the cache saves (or costs).
        group.bench_with_input(
            BenchmarkId::new(
                format!("batch_{gpus}gpus_x_{nb}buckets_4regions_uncached"),
                intervals.len(),
            ),
            &intervals,
            |b, intervals| {
                b.iter(|| {
                    let joined: Vec<Option<JoinedIntensity>> = intervals
                        .iter()
                        .map(|(region, bucket)| jr.lookup(region, *bucket))
                        .collect();
                    black_box(joined)
                })
            },
        );
    }

    // record: points/s into a configured join with no points yet (the setup clone is not timed).
    let empty = {
        let mut e = IntensityJoin::new(MAX_STALENESS_MS);
        e.insert(
            caiso.clone(),
            RegionIntensity {
                marginal: None,
                replay: false,
                average: None,
            },
        );
        e
    };
    let full = {
        let mut f = empty.clone();
        for p in &ledger.actual {
            f.record(p).expect("real point");
        }
        f
    };
    for (name, points, base) in [
        ("record_actuals_new", &ledger.actual, &empty),
        ("record_forecasts_new", &ledger.forecast, &empty),
        ("record_actuals_unchanged", &ledger.actual, &full),
    ] {
        group.throughput(Throughput::Elements(points.len() as u64));
        group.bench_with_input(BenchmarkId::new(name, points.len()), points, |b, points| {
            b.iter_batched(
                || base.clone(),
                |mut j| {
                    for p in points {
                        black_box(j.record(p).expect("real point"));
                    }
                    j
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
