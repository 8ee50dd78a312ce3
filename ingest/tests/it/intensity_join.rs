//! The intensity join on the real shipped data (`data/moer/`, `data/locations/`,
//! `data/h100-trace/`): which 5-minute point a bucket gets at its edges, UTC everywhere (DST and
//! leap-second dates), exact unit conversions, the fallback chain in order, and the arithmetic of
//! restating forecast buckets with actuals.
//!
//! Expected values are read from the CSV files independently of the loaders under test (the `csv`
//! crate and a calendar conversion of this file's own), so a loader or join that shifted, rounded
//! or picked the wrong row fails here.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use flate2::read::GzDecoder;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use wattprint_core::intensity::{
    policy_rank, IntensityJoin, IntensityKind, IntensityPoint, JoinedIntensity, MarginalSeries,
    PointKind, RegionIntensity, Signal,
};
use wattprint_core::{
    Bucket, GramsCo2e, GramsPerKwh, Millijoules, RegionId, UnixMillis, BUCKET_MS,
};
use wattprint_intensity::files::{load_egrid_rates, load_marginal, MarginalFormat};
use wattprint_intensity::timefmt::parse_utc_timestamp;

const ACTUAL_CSV: &str = "moer/watttime2023_caiso-north_actual.csv";
const FORECAST_CSV: &str = "moer/watttime2023_caiso-north_forecast_2023-06-08_09.csv";
const EGRID_CSV: &str = "locations/epa_egrid2023_subregion_output_rates.csv";
const SOURCE: &str = "watttime:CAISO_NORTH";
const MINUTE: i64 = 60_000;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data")
        .join(rel)
}

fn caiso() -> RegionId {
    RegionId::from("CAISO_NORTH")
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) to Unix milliseconds, by counting days: written apart from the
/// loaders' conversion so the two check each other.
fn utc_ms(s: &str) -> i64 {
    let f = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, mo, d, h, mi, sec) = (f(0, 4), f(5, 7), f(8, 10), f(11, 13), f(14, 16), f(17, 19));
    assert!(y >= 1970 && (1..=12).contains(&mo) && sec < 60, "{s}");
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: i64 = (1970..y).map(|y| if leap(y) { 366 } else { 365 }).sum();
    let month_days = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += month_days[..(mo - 1) as usize].iter().sum::<i64>() + d - 1;
    ((days * 24 + h) * 60 + mi) * MINUTE + sec * 1000
}

/// The rows of a shipped CSV file (header skipped).
fn rows(rel: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(data(rel))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

/// The real CAISO_NORTH actuals: (bucket start ms, g/kWh), in file order.
fn actual_rows() -> Vec<(i64, f64)> {
    rows(ACTUAL_CSV)
        .iter()
        .map(|r| (utc_ms(&r[0]), r[1].parse().unwrap()))
        .collect()
}

/// The real forecast slice: (request time ms, forecast time ms, g/kWh).
fn forecast_rows() -> Vec<(i64, i64, f64)> {
    rows(FORECAST_CSV)
        .iter()
        .map(|r| (utc_ms(&r[0]), utc_ms(&r[1]), r[2].parse().unwrap()))
        .collect()
}

fn bucket(ms: i64) -> Bucket {
    Bucket::aligned(UnixMillis(ms)).unwrap()
}

fn marginal_point(at: i64, value: f64, issued: Option<i64>) -> IntensityPoint {
    IntensityPoint {
        region: caiso(),
        at: UnixMillis(at),
        duration_ms: BUCKET_MS,
        value: GramsPerKwh(value),
        signal: Signal::Marginal,
        kind: if issued.is_some() {
            PointKind::Forecast
        } else {
            PointKind::Actual
        },
        issued_at: issued.map(UnixMillis),
        provider: SOURCE.to_owned(),
        model_version: None,
        fetched_at: UnixMillis(0),
    }
}

/// The ledger's points for the shipped files, times parsed by the loader under test
/// ([`parse_utc_timestamp`]): actuals, then forecasts issued at `request_time`.
fn ledger_points(
    keep_actual: impl Fn(i64) -> bool,
    keep_forecast: impl Fn(i64) -> bool,
) -> Vec<IntensityPoint> {
    let t = |s: &str| parse_utc_timestamp(s).unwrap().0;
    let mut points: Vec<IntensityPoint> = rows(ACTUAL_CSV)
        .iter()
        .map(|r| marginal_point(t(&r[0]), r[1].parse().unwrap(), None))
        .filter(|p| keep_actual(p.at.0))
        .collect();
    points.extend(
        rows(FORECAST_CSV)
            .iter()
            .map(|r| marginal_point(t(&r[1]), r[2].parse().unwrap(), Some(t(&r[0]))))
            .filter(|p| keep_forecast(p.issued_at.unwrap().0)),
    );
    points
}

/// eGRID 2023 CAMX (WECC California), loaded by the loader under test.
fn camx() -> GramsPerKwh {
    load_egrid_rates(&data(EGRID_CSV)).unwrap()["CAMX"]
}

/// A live (not replayed) join of CAISO_NORTH with no points yet, the CAMX static average.
fn empty_join(max_staleness_ms: i64) -> IntensityJoin {
    let mut j = IntensityJoin::new(max_staleness_ms);
    j.insert(
        caiso(),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: Some((camx(), "egrid2023:CAMX".to_owned())),
        },
    );
    j
}

#[test]
fn bucket_edges_pick_the_point_starting_the_bucket_through_its_last_millisecond() {
    let rows = actual_rows();
    let series = load_marginal(&data(ACTUAL_CSV), MarginalFormat::WattTimeCsv, SOURCE).unwrap();
    assert_eq!(series.len(), rows.len());
    // A generous bound: a join that looked up the wrong bucket would still find a value, and
    // only `point_at` and the value would tell.
    let mut j = IntensityJoin::new(60 * MINUTE);
    j.insert(
        caiso(),
        RegionIntensity {
            marginal: Some(series),
            replay: false,
            average: None,
        },
    );
    // Points at the start, the middle and the end of the month whose neighbours differ, so
    // taking a neighbour's value cannot pass.
    let distinct = |i: usize| {
        let (a, b, c) = (rows[i - 1].1, rows[i].1, rows[i + 1].1);
        a != b && b != c && a != c
    };
    let picks: Vec<usize> = [1, rows.len() / 2, rows.len() - 40]
        .into_iter()
        .map(|from| (from..rows.len() - 1).find(|&i| distinct(i)).unwrap())
        .collect();
    for i in picks {
        let (t, v) = rows[i];
        let (next_t, next_v) = rows[i + 1];
        let (prev_t, prev_v) = rows[i - 1];
        assert_eq!((next_t - t, t - prev_t), (BUCKET_MS, BUCKET_MS));
        let at = |ms: i64| {
            let b = Bucket::containing(UnixMillis(ms));
            let x = j.lookup(&caiso(), b).unwrap();
            assert_eq!(x.kind, IntensityKind::Actual);
            (b.start().0, x.point_at.0, x.value.0)
        };
        // The bucket starting exactly at the point's time.
        assert_eq!(at(t), (t, t, v), "bucket starting at row {i}");
        // Its last millisecond still belongs to it.
        assert_eq!(
            at(t + BUCKET_MS - 1),
            (t, t, v),
            "last ms of row {i}'s bucket"
        );
        // The first millisecond of the next bucket is the next row's.
        assert_eq!(
            at(t + BUCKET_MS),
            (next_t, next_t, next_v),
            "first ms after row {i}"
        );
        // And the millisecond before the bucket is the previous row's.
        assert_eq!(
            at(t - 1),
            (prev_t, prev_t, prev_v),
            "last ms before row {i}"
        );
    }
}

/// Five-minute labels `YYYY-MM-DD HH:MM:00` from `start`, `n` of them, carried over hours,
/// days, months and years by hand.
fn labels(start: (i64, u32, u32, u32, u32), n: usize) -> Vec<String> {
    let (mut y, mut mo, mut d, mut h, mut mi) = start;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:00"));
        mi += 5;
        if mi == 60 {
            (mi, h) = (0, h + 1);
        }
        if h == 24 {
            (h, d) = (0, d + 1);
        }
        let month_len = match mo {
            2 if y % 4 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if d > month_len {
            (d, mo) = (1, mo + 1);
        }
        if mo > 12 {
            (mo, y) = (1, y + 1);
        }
    }
    out
}

#[test]
fn dst_transitions_and_a_leap_second_date_do_not_shift_utc_buckets() {
    // Unix time of the transitions (`date -u -d 2023-03-12T10:00:00Z +%s` etc.): US DST began at
    // 2023-03-12 10:00Z (02:00 PST → 03:00 PDT) and ended at 2023-11-05 09:00Z (02:00 PDT →
    // 01:00 PST); a leap second was inserted as 2016-12-31T23:59:60Z, which Unix time skips.
    let cases = [
        (
            "2023-03-12 10:00:00",
            1_678_615_200_000,
            (2023, 3, 12, 8, 0),
        ),
        (
            "2023-11-05 09:00:00",
            1_699_174_800_000,
            (2023, 11, 5, 7, 0),
        ),
        (
            "2017-01-01 00:00:00",
            1_483_228_800_000,
            (2016, 12, 31, 22, 0),
        ),
    ];
    // The real CAISO_NORTH values of 2023-06-08, placed at these dates: the shipped series does
    // not cover them, and the values only need to be real and distinguishable.
    let values: Vec<f64> = actual_rows().iter().map(|r| r.1).take(48).collect();
    for (transition, unix_ms, start) in cases {
        let labels = labels(start, values.len());
        assert!(labels.iter().any(|l| l == transition), "{transition}");
        let times: Vec<UnixMillis> = labels
            .iter()
            .map(|l| parse_utc_timestamp(l).unwrap())
            .collect();
        assert_eq!(parse_utc_timestamp(transition), Some(UnixMillis(unix_ms)));
        assert_eq!(times[24], UnixMillis(unix_ms), "two hours after {start:?}");
        for (l, t) in labels.iter().zip(&times) {
            assert_eq!(t.0, utc_ms(l), "{l}");
        }
        for w in times.windows(2) {
            assert_eq!(w[1].since(w[0]), BUCKET_MS, "{} → {}", w[0], w[1]);
        }
        let series = MarginalSeries::new(
            SOURCE,
            times
                .iter()
                .copied()
                .zip(values.iter().map(|&v| GramsPerKwh(v)))
                .collect(),
        )
        .unwrap();
        let mut j = IntensityJoin::new(60 * MINUTE);
        j.insert(
            caiso(),
            RegionIntensity {
                marginal: Some(series),
                replay: false,
                average: None,
            },
        );
        let mut b = Bucket::containing(times[0]);
        for (i, (&t, &v)) in times.iter().zip(&values).enumerate() {
            assert_eq!(b.start(), t, "{}", labels[i]);
            if i > 0 {
                assert_eq!(b.start().since(times[i - 1]), BUCKET_MS);
            }
            for probe in [t.0, t.0 + BUCKET_MS - 1] {
                let x = j
                    .lookup(&caiso(), Bucket::containing(UnixMillis(probe)))
                    .unwrap();
                assert_eq!(
                    (x.kind, x.point_at, x.value),
                    (IntensityKind::Actual, t, GramsPerKwh(v)),
                    "{} (+{} ms)",
                    labels[i],
                    probe - t.0
                );
            }
            b = b.next();
        }
    }
    // Wall-clock labels that do not exist (03-12 02:30) or are ambiguous (11-05 01:30) in US
    // local time are plain UTC instants here, each exactly one.
    assert_eq!(
        parse_utc_timestamp("2023-03-12 02:30:00"),
        Some(UnixMillis(1_678_615_200_000 - 450 * MINUTE))
    );
    assert_eq!(
        parse_utc_timestamp("2023-11-05 01:30:00"),
        Some(UnixMillis(1_699_174_800_000 - 450 * MINUTE))
    );
}

#[test]
fn timestamps_with_non_utc_offsets_are_rejected_not_guessed() {
    let utc = Some(UnixMillis(1_678_615_200_000));
    for ok in [
        "2023-03-12 10:00:00",
        "2023-03-12T10:00:00",
        "2023-03-12T10:00:00Z",
        "2023-03-12 10:00:00+00:00",
    ] {
        assert_eq!(parse_utc_timestamp(ok), utc, "{ok}");
    }
    // The same instant written in Pacific time, before and after the change, and others.
    for offset in [
        "2023-03-12 02:00:00-08:00",
        "2023-03-12T03:00:00-07:00",
        "2023-11-05 01:30:00-07:00",
        "2023-11-05 01:30:00-08:00",
        "2023-03-12 11:00:00+01:00",
        "2023-03-12 10:00:00-00:00",
        "2023-03-12 10:00:00+0000",
        "2023-03-12 10:00:00 UTC",
        "2023-03-12 02:00:00 PST",
    ] {
        assert_eq!(parse_utc_timestamp(offset), None, "{offset}");
    }
    // A file with one such row is refused with its line, not loaded around it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moer.csv");
    std::fs::write(
        &path,
        "time,moer\n2023-03-12 09:55:00+00:00,0.4\n2023-03-12 03:00:00-07:00,0.4\n",
    )
    .unwrap();
    let err = load_marginal(&path, MarginalFormat::Sgip, "sgip:test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("moer.csv:3: bad UTC timestamp"), "{err}");
}

#[test]
fn leap_second_23_59_60_is_rejected_and_unix_time_skips_it() {
    for s in [
        "2016-12-31 23:59:60",
        "2016-12-31T23:59:60Z",
        "2016-12-31 23:59:60+00:00",
    ] {
        assert_eq!(parse_utc_timestamp(s), None, "{s}");
    }
    let before = parse_utc_timestamp("2016-12-31 23:59:59").unwrap();
    let after = parse_utc_timestamp("2017-01-01T00:00:00Z").unwrap();
    assert_eq!(after.since(before), 1000);
    assert_eq!(
        after.since(parse_utc_timestamp("2016-12-31 23:55:00").unwrap()),
        BUCKET_MS
    );
}

#[test]
fn egrid_lb_per_mwh_converts_to_g_per_kwh_by_exactly_0_45359237() {
    let loaded = load_egrid_rates(&data(EGRID_CSV)).unwrap();
    let file = rows(EGRID_CSV);
    // Columns: subregion, full_name, data_year, co2_lb_per_mwh, co2e_lb_per_mwh, ...
    let camx = file.iter().find(|r| &r[0] == "CAMX").unwrap();
    assert_eq!(&camx[4], "429.983");
    assert_eq!(loaded["CAMX"].0, 429.983 * 0.45359237);
    assert_eq!(GramsPerKwh::PER_LB_PER_MWH, 0.45359237);
    // The CO2e column, not CO2 only.
    assert_ne!(loaded["CAMX"].0, 428.464 * 0.45359237);
    assert_eq!(loaded.len(), file.len());
    for r in &file {
        let lb: f64 = r[4].parse().unwrap();
        assert_eq!(loaded[&r[0]].0, lb * 0.45359237, "{}", &r[0]);
    }
}

#[test]
fn sgip_kg_per_kwh_converts_to_g_per_kwh_by_exactly_1000() {
    for (file, name) in [
        ("moer/SGIP_CAISO_PGE_2020-08.csv.gz", "sgip:PGE"),
        ("moer/SGIP_CAISO_SCE_2020-08.csv.gz", "sgip:SCE"),
    ] {
        let series = load_marginal(&data(file), MarginalFormat::Sgip, name).unwrap();
        // The first rows, read apart from the loader: `time,moer,f1..f36`, kg/kWh, `+00:00`.
        let gz = GzDecoder::new(std::fs::File::open(data(file)).unwrap());
        let first: Vec<(i64, f64)> = csv::Reader::from_reader(gz)
            .records()
            .take(24)
            .map(|r| {
                let r = r.unwrap();
                let time = r[0].strip_suffix("+00:00").unwrap();
                (utc_ms(time), r[1].parse().unwrap())
            })
            .collect();
        assert_eq!(first.len(), 24);
        assert_eq!(series.first().0, first[0].0);
        for (t, kg) in first {
            assert!(kg > 0.0 && kg < 2.0, "{file}: {kg} kg/kWh");
            let (at, v) = series.as_of(UnixMillis(t), 0).unwrap();
            assert_eq!((at.0, v.0), (t, kg * 1000.0), "{file} at {t}");
        }
    }
}

/// The latest forecast row for `target` issued strictly before it among `forecasts`, by hand.
fn latest_forecast_before(forecasts: &[(i64, i64, f64)], target: i64) -> Option<(i64, f64)> {
    forecasts
        .iter()
        .filter(|&&(issued, at, _)| at == target && issued < target)
        .max_by_key(|&&(issued, _, _)| issued)
        .map(|&(issued, _, v)| (issued, v))
}

#[test]
fn an_hour_without_actuals_uses_the_latest_forecast_issued_before_each_bucket() {
    let hour = (utc_ms("2023-06-08 12:00:00"), utc_ms("2023-06-08 13:00:00"));
    let missing = |t: i64| (hour.0..hour.1).contains(&t);
    let mut j = empty_join(15 * MINUTE);
    for p in ledger_points(|t| !missing(t), |_| true) {
        j.record(&p).unwrap();
    }
    let actuals: BTreeMap<i64, f64> = actual_rows().into_iter().collect();
    let forecasts = forecast_rows();
    let mut differs_from_actual = 0;
    for t in (hour.0..hour.1).step_by(BUCKET_MS as usize) {
        let (issued, v) = latest_forecast_before(&forecasts, t).unwrap();
        // Thirteen forecasts target each bucket (issued 65 to 5 minutes before it).
        assert_eq!(forecasts.iter().filter(|f| f.1 == t).count(), 13);
        let x = j.lookup(&caiso(), bucket(t)).unwrap();
        assert_eq!(
            (x.kind, x.point_at.0, x.value.0, x.source.as_str()),
            (IntensityKind::Forecast, issued, v, SOURCE),
            "{}",
            UnixMillis(t)
        );
        assert_eq!(issued, t - 5 * MINUTE);
        assert_eq!(policy_rank(Some(&x), bucket(t)), 3);
        differs_from_actual += usize::from(v != actuals[&t]);
    }
    assert!(differs_from_actual > 0, "forecasts equal the actuals");
    // Either side of the hour, the actuals.
    for t in [hour.0 - BUCKET_MS, hour.1] {
        let x = j.lookup(&caiso(), bucket(t)).unwrap();
        assert_eq!(
            (x.kind, x.point_at.0, x.value.0),
            (IntensityKind::Actual, t, actuals[&t])
        );
    }
}

#[test]
fn fallback_chain_forecast_then_nearest_actual_within_bound_then_egrid_average() {
    // The actuals of 2023-06-08 12:00–13:00Z are missing, and the forecast feed stopped at
    // 11:00Z (forecasts issued from then on never arrived): only 12:00 still has a forecast.
    let hour = (utc_ms("2023-06-08 12:00:00"), utc_ms("2023-06-08 13:00:00"));
    let feed_stop = utc_ms("2023-06-08 11:00:00");
    let bound = 15 * MINUTE;
    let mut j = empty_join(bound);
    for p in ledger_points(|t| !(hour.0..hour.1).contains(&t), |i| i < feed_stop) {
        j.record(&p).unwrap();
    }
    let actuals: BTreeMap<i64, f64> = actual_rows().into_iter().collect();
    let forecasts: Vec<_> = forecast_rows()
        .into_iter()
        .filter(|f| f.0 < feed_stop)
        .collect();
    let (before, after) = (hour.0 - BUCKET_MS, hour.1);
    let mut kinds = Vec::new();
    for t in (hour.0..hour.1).step_by(BUCKET_MS as usize) {
        let x = j.lookup(&caiso(), bucket(t)).unwrap();
        let expected = if let Some((issued, v)) = latest_forecast_before(&forecasts, t) {
            (IntensityKind::Forecast, issued, v, SOURCE.to_owned())
        } else if t - before <= bound && t - before <= after - t {
            (
                IntensityKind::Actual,
                before,
                actuals[&before],
                SOURCE.to_owned(),
            )
        } else if after - t <= bound {
            (
                IntensityKind::Actual,
                after,
                actuals[&after],
                SOURCE.to_owned(),
            )
        } else {
            (
                IntensityKind::FallbackAverage,
                t,
                camx().0,
                "egrid2023:CAMX".to_owned(),
            )
        };
        assert_eq!(
            (x.kind, x.point_at.0, x.value.0, x.source),
            expected,
            "{}",
            UnixMillis(t)
        );
        kinds.push((t, x.kind, x.point_at.0));
    }
    let m = |s: &str| utc_ms(&format!("2023-06-08 {s}:00"));
    // Spelled out: a forecast beats a nearest actual within the bound (12:00, issued 10:55);
    // nearest actuals at both edges up to the bound inclusive; CAMX in between.
    let (fc, near, avg) = (
        IntensityKind::Forecast,
        IntensityKind::Actual,
        IntensityKind::FallbackAverage,
    );
    assert_eq!(
        kinds,
        vec![
            (m("12:00"), fc, m("10:55")),
            (m("12:05"), near, m("11:55")),
            (m("12:10"), near, m("11:55")),
            (m("12:15"), avg, m("12:15")),
            (m("12:20"), avg, m("12:20")),
            (m("12:25"), avg, m("12:25")),
            (m("12:30"), avg, m("12:30")),
            (m("12:35"), avg, m("12:35")),
            (m("12:40"), avg, m("12:40")),
            (m("12:45"), near, m("13:00")),
            (m("12:50"), near, m("13:00")),
            (m("12:55"), near, m("13:00")),
        ]
    );
    assert_eq!(camx(), GramsPerKwh(429.983 * 0.45359237));
    // Step 5: a region with no marginal data and no average gets nothing, not an invention.
    j.insert(
        RegionId::from("NOWHERE"),
        RegionIntensity {
            marginal: None,
            replay: false,
            average: None,
        },
    );
    assert_eq!(j.lookup(&RegionId::from("NOWHERE"), bucket(hour.0)), None);
}

#[test]
fn restating_forecast_buckets_changes_the_total_by_the_sum_of_energy_times_intensity_change() {
    // Energy per bucket: the real H100's counter energy over the whole shipped trace (last
    // `energy_counter_mJ` minus the first), charged to every bucket of the day.
    let trace = rows("h100-trace/h100_power_trace_50ms.csv");
    let counter = |r: &csv::StringRecord| r[5].parse::<u64>().unwrap();
    let energy = Millijoules(counter(trace.last().unwrap()) - counter(&trace[0]));
    assert_eq!(energy, Millijoules(74_111_907));

    // 2023-06-09: when its intervals were first joined the actuals had arrived up to 12:00Z;
    // the rest of the day was joined with forecasts. Then the afternoon's actuals arrive.
    let day = utc_ms("2023-06-09 00:00:00");
    let noon = day + 144 * BUCKET_MS;
    let buckets: Vec<Bucket> = (0..288).map(|i| bucket(day + i * BUCKET_MS)).collect();
    let mut j = empty_join(2 * BUCKET_MS);
    for p in ledger_points(|t| t < noon, |_| true) {
        j.record(&p).unwrap();
    }
    let old: Vec<_> = buckets
        .iter()
        .map(|&b| j.lookup(&caiso(), b).unwrap())
        .collect();
    for p in ledger_points(|t| t >= noon, |_| false) {
        j.record(&p).unwrap();
    }
    let new: Vec<_> = buckets
        .iter()
        .map(|&b| j.lookup(&caiso(), b).unwrap())
        .collect();

    let actuals: BTreeMap<i64, f64> = actual_rows().into_iter().collect();
    let forecasts = forecast_rows();
    let (mut restated_delta, mut restated) = (0.0, 0);
    for ((&b, o), n) in buckets.iter().zip(&old).zip(&new) {
        let t = b.start().0;
        let change = j.restatement(&caiso(), b, Some(o));
        if t < noon {
            assert_eq!(o.kind, IntensityKind::Actual);
            assert_eq!(change, None, "{}: already actual", b.start());
            assert_eq!(o, n);
            continue;
        }
        let (_, forecast) = latest_forecast_before(&forecasts, t).unwrap();
        assert_eq!((o.kind, o.value.0), (IntensityKind::Forecast, forecast));
        let change = change.unwrap();
        assert_eq!(
            (change.kind, change.point_at.0, change.value.0),
            (IntensityKind::Actual, t, actuals[&t])
        );
        assert_eq!(&change, n);
        assert_eq!(j.restatement(&caiso(), b, Some(&change)), None);
        // E × (I_actual − I_forecast), in grams.
        restated_delta += change.value.emissions(energy).0 - o.value.emissions(energy).0;
        restated += 1;
    }
    assert_eq!(restated, 144);

    let total = |js: &[JoinedIntensity]| {
        js.iter()
            .map(|x| x.value.emissions(energy))
            .fold(GramsCo2e(0.0), |a, b| a + b)
            .0
    };
    let (before, after) = (total(&old), total(&new));
    let difference = after - before;
    assert!(difference.abs() > 1e-3 * before, "{before} → {after}");
    assert!(
        (restated_delta - difference).abs() <= 1e-9 * difference.abs(),
        "sum of restatements {restated_delta} g vs totals' difference {difference} g"
    );
}
