//! The file provider on the shipped exports and on ledger files, through the same trait as the
//! API clients.

use crate::common::{self, utc};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use wattprint_core::intensity::{PointKind, Signal};
use wattprint_core::{GramsPerKwh, RegionId, UnixMillis};
use wattprint_intensity::files::{EmissionFactor, FileError, FileProvider, Imported};
use wattprint_intensity::{FetchRequest, Provider};

fn request(
    region: &str,
    signal: Signal,
    kind: PointKind,
    from: UnixMillis,
    to: UnixMillis,
) -> FetchRequest {
    FetchRequest {
        region: RegionId::from(region),
        provider_region: String::new(),
        signal,
        kind,
        from,
        to,
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[tokio::test]
async fn watttime_exports_import_as_shipped() {
    let region = RegionId::from("caiso-north");
    let mut files = FileProvider::new("files");
    let imported = files
        .import_watttime_actual_csv(
            &common::data("moer/watttime2023_caiso-north_actual.csv"),
            &region,
        )
        .unwrap();
    assert_eq!(
        imported,
        Imported {
            points: 8928,
            rejected: 0
        }
    );
    let imported = files
        .import_watttime_forecast_csv(
            &common::data("moer/watttime2023_caiso-north_forecast_2023-06-08_09.csv"),
            &region,
        )
        .unwrap();
    assert_eq!(
        imported,
        Imported {
            points: 576 * 13,
            rejected: 0
        }
    );

    let provider: &dyn Provider = &files;
    assert_eq!(provider.name(), "files");
    let shipped = common::caiso_north_actuals();
    let (from, to) = (utc(2023, 6, 1, 0, 0), utc(2023, 7, 9, 0, 0));
    let got = provider
        .fetch(&request(
            "caiso-north",
            Signal::Marginal,
            PointKind::Actual,
            from,
            to,
        ))
        .await
        .unwrap();
    assert_eq!(got.points.len(), shipped.len());
    for (p, (t, g)) in got.points.iter().zip(&shipped) {
        assert_eq!((p.at, p.value.0.to_bits()), (*t, g.to_bits()));
        assert_eq!(p.provider, "watttime:CAISO_NORTH");
        assert_eq!(p.duration_ms, 300_000);
        assert_eq!(p.model_version, None);
        assert!(p.validate().is_ok());
    }
    assert_eq!(
        got.gaps,
        vec![(from, utc(2023, 6, 8, 0, 0))],
        "before the data: a gap"
    );

    // Forecasts issued in the first hour: twelve runs of thirteen points.
    let got = provider
        .fetch(&request(
            "caiso-north",
            Signal::Marginal,
            PointKind::Forecast,
            utc(2023, 6, 8, 0, 0),
            utc(2023, 6, 8, 1, 0),
        ))
        .await
        .unwrap();
    assert_eq!(got.points.len(), 12 * 13);
    let runs: BTreeSet<_> = got.points.iter().map(|p| p.issued_at).collect();
    assert_eq!(runs.len(), 12);
    assert!(got.gaps.is_empty());
    let first = &got.points[0];
    assert_eq!(first.issued_at, Some(utc(2023, 6, 8, 0, 0)));
    assert_eq!(first.at, utc(2023, 6, 8, 0, 5));
    assert_eq!(first.value, GramsPerKwh(412.406182804));

    // Another signal or region: nothing, and the whole range is a gap.
    let day = (utc(2023, 6, 8, 0, 0), utc(2023, 6, 9, 0, 0));
    for (region, signal) in [("caiso-north", Signal::Average), ("pjm", Signal::Marginal)] {
        let got = provider
            .fetch(&request(region, signal, PointKind::Actual, day.0, day.1))
            .await
            .unwrap();
        assert!(got.points.is_empty());
        assert_eq!(got.gaps, vec![day]);
    }
}

#[tokio::test]
async fn electricitymaps_exports_import_either_factor() {
    let path = common::data("grid-average/electricitymaps_US-CAL-CISO_2023-06_hourly.csv");
    let hours = common::us_cal_ciso_june();
    let june = (utc(2023, 6, 1, 0, 0), utc(2023, 7, 1, 0, 0));
    for (factor, name) in [
        (EmissionFactor::Lifecycle, "lifecycle"),
        (EmissionFactor::Direct, "direct"),
    ] {
        let mut files = FileProvider::new("files");
        let imported = files
            .import_electricitymaps_csv(&path, &RegionId::from("us-cal-ciso"), factor)
            .unwrap();
        assert_eq!(
            imported,
            Imported {
                points: 720,
                rejected: 0
            }
        );
        let got = files
            .fetch(&request(
                "us-cal-ciso",
                Signal::Average,
                PointKind::Actual,
                june.0,
                june.1,
            ))
            .await
            .unwrap();
        assert_eq!(got.points.len(), 720);
        assert!(got.gaps.is_empty());
        for (p, h) in got.points.iter().zip(&hours) {
            let expected = match factor {
                EmissionFactor::Lifecycle => h.lifecycle,
                EmissionFactor::Direct => h.direct,
            };
            assert_eq!((p.at, p.value.0.to_bits()), (h.at, expected.to_bits()));
            assert_eq!(p.duration_ms, 3_600_000);
            assert_eq!(p.provider, "electricitymaps:US-CAL-CISO");
            assert_eq!(p.model_version.as_deref(), Some(name));
        }
    }
}

#[tokio::test]
async fn estimated_hours_say_how_they_were_estimated() {
    // Two real rows of the 2023 export (shared data): one estimated, one measured.
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "em.csv",
        "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage,Renewable Percentage,Data Source,Data Estimated,Data Estimation Method\n\
2023-03-12 09:00:00,USA,California Independent System Operator,US-CAL-CISO,236.13,313.48,44.71,31.7,Electricity Maps Estimation,true,ESTIMATED_TIME_SLICER_AVERAGE\n\
2023-01-01 00:00:00,USA,California Independent System Operator,US-CAL-CISO,218.3,285.41,52.84,39.03,caiso.com,false,\n",
    );
    let mut files = FileProvider::new("files");
    files
        .import_electricitymaps_csv(
            &path,
            &RegionId::from("us-cal-ciso"),
            EmissionFactor::Lifecycle,
        )
        .unwrap();
    let versions: Vec<_> = files
        .points()
        .iter()
        .map(|p| (p.value.0, p.model_version.clone().unwrap()))
        .collect();
    assert_eq!(
        versions,
        vec![
            (
                313.48,
                "lifecycle;estimated:ESTIMATED_TIME_SLICER_AVERAGE".to_owned()
            ),
            (285.41, "lifecycle".to_owned()),
        ]
    );
}

const LEDGER_HEADER: &str =
    "region,at,duration_s,value,unit,signal,kind,issued_at,provider,model_version\n";

/// Rows in all three units, a forecast, and two rows to refuse (lines 5 and 6).
const LEDGER_ROWS: &str = "\
caiso-north,2023-06-08T00:00:00Z,300,425.01605069,g_per_kwh,marginal,actual,,watttime:CAISO_NORTH,2023-03-01
caiso-north,2023-06-08T00:05:00+00:00,300,0.43227352861,kg_per_kwh,marginal,actual,,sgip:CAISO_NORTH,
caiso-north,2023-06-08T00:10:00Z,300,955.5,lb_per_mwh,marginal,actual,,watttime:CAISO_NORTH,2023-03-01
caiso-north,2023-06-08T00:15:00Z,300,NaN,g_per_kwh,marginal,actual,,watttime:CAISO_NORTH,2023-03-01
caiso-north,2023-06-08T00:20:00Z,300,,g_per_kwh,marginal,actual,,watttime:CAISO_NORTH,2023-03-01
caiso-north,2023-06-08T00:05:00Z,300,412.406182804,g_per_kwh,marginal,forecast,2023-06-08T00:00:00Z,watttime:CAISO_NORTH,2023-03-01
";

async fn check_ledger_import(files: &FileProvider, file: &str, refused_at: [&str; 2]) {
    let half_hour = (utc(2023, 6, 8, 0, 0), utc(2023, 6, 8, 0, 30));
    let got = files
        .fetch(&request(
            "caiso-north",
            Signal::Marginal,
            PointKind::Actual,
            half_hour.0,
            half_hour.1,
        ))
        .await
        .unwrap();
    let values: Vec<f64> = got.points.iter().map(|p| p.value.0).collect();
    assert_eq!(
        values,
        vec![
            425.01605069,
            GramsPerKwh::from_kg_per_kwh(0.43227352861).0,
            GramsPerKwh::from_lb_per_mwh(955.5).0,
        ]
    );
    assert_eq!(got.points[0].model_version.as_deref(), Some("2023-03-01"));
    assert_eq!(got.points[1].model_version, None);
    assert_eq!(got.points[1].provider, "sgip:CAISO_NORTH");
    assert_eq!(got.rejected.len(), 2, "{:?}", got.rejected);
    assert!(
        got.rejected[0].contains(file) && got.rejected[0].contains(refused_at[0]),
        "{:?}",
        got.rejected
    );
    assert!(got.rejected[0].contains("NaN"));
    assert!(got.rejected[1].contains(refused_at[1]) && got.rejected[1].contains("value missing"));
    assert_eq!(got.gaps, vec![(utc(2023, 6, 8, 0, 15), half_hour.1)]);

    let got = files
        .fetch(&request(
            "caiso-north",
            Signal::Marginal,
            PointKind::Forecast,
            half_hour.0,
            half_hour.1,
        ))
        .await
        .unwrap();
    assert_eq!(got.points.len(), 1);
    assert_eq!(got.points[0].issued_at, Some(utc(2023, 6, 8, 0, 0)));
    assert_eq!(got.points[0].at, utc(2023, 6, 8, 0, 5));
}

#[tokio::test]
async fn ledger_csv_imports_units_exactly_and_refuses_bad_values_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "ledger.csv",
        &format!("{LEDGER_HEADER}{LEDGER_ROWS}"),
    );
    let mut files = FileProvider::new("files");
    let imported = files.import_ledger_csv(&path).unwrap();
    assert_eq!(
        imported,
        Imported {
            points: 4,
            rejected: 2
        }
    );
    check_ledger_import(&files, "ledger.csv", ["ledger.csv:5", "ledger.csv:6"]).await;
}

#[tokio::test]
async fn ledger_json_is_the_same_format() {
    let ledger_csv = format!("{LEDGER_HEADER}{LEDGER_ROWS}");
    let mut csv_reader = csv::Reader::from_reader(ledger_csv.as_bytes());
    let records: Vec<serde_json::Value> = csv_reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let opt = |s: &str| {
                if s.is_empty() {
                    serde_json::Value::Null
                } else {
                    s.into()
                }
            };
            let value = match &r[3] {
                "" => serde_json::Value::Null,
                "NaN" => "__NaN__".into(),
                v => serde_json::json!(v.parse::<f64>().unwrap()),
            };
            serde_json::json!({
                "region": &r[0], "at": &r[1], "duration_s": r[2].parse::<i64>().unwrap(),
                "value": value, "unit": &r[4], "signal": &r[5], "kind": &r[6],
                "issued_at": opt(&r[7]), "provider": &r[8], "model_version": opt(&r[9]),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&records)
        .unwrap()
        .replace("\"__NaN__\"", "NaN");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "ledger.json", &text);
    let mut files = FileProvider::new("files");
    let imported = files.import_ledger_json(&path).unwrap();
    assert_eq!(
        imported,
        Imported {
            points: 4,
            rejected: 2
        }
    );
    check_ledger_import(&files, "ledger.json", ["record 3", "record 4"]).await;
}

#[test]
fn files_not_in_the_format_are_refused_whole_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = "caiso-north,2023-06-08T00:00:00Z,300,425.0,g_per_kwh,marginal,actual,,watttime:CAISO_NORTH,\n";
    let cases = [
        ("local time", "caiso-north,2023-06-08T02:05:00+02:00,300,1,g_per_kwh,marginal,actual,,p,\n", 3, "must be UTC"),
        ("no offset", "caiso-north,2023-06-08 00:05:00,300,1,g_per_kwh,marginal,actual,,p,\n", 3, "not an RFC 3339 time"),
        ("unit", "caiso-north,2023-06-08T00:05:00Z,300,1,mg_per_kwh,marginal,actual,,p,\n", 3, "mg_per_kwh"),
        ("signal", "caiso-north,2023-06-08T00:05:00Z,300,1,g_per_kwh,moer,actual,,p,\n", 3, "moer"),
        ("issue time", "caiso-north,2023-06-08T00:05:00Z,300,1,g_per_kwh,marginal,forecast,2023-06-07T17:00:00-07:00,p,\n", 3, "must be UTC"),
        ("columns", "caiso-north,2023-06-08T00:05:00Z,300\n", 3, "CSV"),
    ];
    for (what, bad_row, line, says) in cases {
        let path = write(
            dir.path(),
            "bad.csv",
            &format!("{LEDGER_HEADER}{good}{bad_row}{good}"),
        );
        let mut files = FileProvider::new("files");
        let err = files.import_ledger_csv(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, FileError::Line { line: l, .. } if *l == line),
            "{what}: {msg}"
        );
        assert!(
            msg.contains("bad.csv:3:") && msg.contains(says),
            "{what}: {msg}"
        );
        assert!(
            files.points().is_empty(),
            "{what}: nothing of a refused file is kept"
        );
    }

    let path = write(dir.path(), "header.csv", "region,at,value\n");
    let err = FileProvider::new("f").import_ledger_csv(&path).unwrap_err();
    assert!(err.to_string().contains("header.csv:1:"), "{err}");

    let path = write(
        dir.path(),
        "wt.csv",
        "time,Caiso_North\n2023-06-08T00:00:00+02:00,425.0\n",
    );
    let err = FileProvider::new("f")
        .import_watttime_actual_csv(&path, &RegionId::from("r"))
        .unwrap_err();
    assert!(err.to_string().contains("wt.csv:2:"), "{err}");

    let err = FileProvider::new("f")
        .import_ledger_csv(&dir.path().join("absent.csv"))
        .unwrap_err();
    assert!(matches!(err, FileError::Io { .. }) && err.to_string().contains("absent.csv"));

    for (text, says) in [
        ("[{\"region\": \"r\"", "ledger.json:1:"),
        (
            r#"[{"region":"r","at":"2023-06-08T02:00:00+02:00","duration_s":300,"value":1,"unit":"g_per_kwh","signal":"marginal","kind":"actual","provider":"p"}]"#,
            "record 0: at:",
        ),
        (
            r#"[{"region":"r","at":"2023-06-08T00:00:00Z","duration_s":300,"value":1,"unit":"g_per_kwh","signal":"marginal","kind":"actual","provider":"p","colour":"red"}]"#,
            "unknown field \"colour\"",
        ),
    ] {
        let path = write(dir.path(), "ledger.json", text);
        let err = FileProvider::new("f")
            .import_ledger_json(&path)
            .unwrap_err();
        assert!(err.to_string().contains(says), "{err} should say {says}");
    }
}
