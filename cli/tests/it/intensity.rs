//! `wattprint intensity import` and `status` as an operator runs them: a ledger CSV built from
//! the real CAISO_NORTH series goes into the embedded store, and the status shows its latest
//! point, the gap after it, and refuses a broken file with the line that is wrong.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::run;
use std::path::Path;

#[test]
fn imported_points_reach_the_ledger_and_the_status_report() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/wattprint.example.toml"),
    )
    .unwrap();
    // A live (not replayed) region fed only by imports, beside the example's replayed ones.
    let config = dir.path().join("wattprint.toml");
    let example = example.replace(
        "data_dir = \".wattprint\"",
        &format!("data_dir = {:?}", dir.path().join("data")),
    );
    assert!(
        example.contains(dir.path().to_str().unwrap()),
        "the example names its data_dir"
    );
    std::fs::write(
        &config,
        format!("{example}\n[[intensity.regions]]\nid = \"LIVE_CAISO_NORTH\"\negrid_subregion = \"CAMX\"\n"),
    )
    .unwrap();
    // The first 12 rows of the real series, in the ledger's CSV format.
    let series = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/moer/watttime2023_caiso-north_actual.csv"),
    )
    .unwrap();
    let mut csv = String::from(
        "region,at,duration_s,value,unit,signal,kind,issued_at,provider,model_version\n",
    );
    let rows: Vec<(String, String)> = series
        .lines()
        .skip(1)
        .take(12)
        .map(|l| {
            let (t, v) = l.split_once(',').unwrap();
            (t.replace(' ', "T") + "Z", v.to_owned())
        })
        .collect();
    for (t, v) in &rows {
        csv.push_str(&format!(
            "LIVE_CAISO_NORTH,{t},300,{v},g_per_kwh,marginal,actual,,watttime:CAISO_NORTH,\n"
        ));
    }
    let file = dir.path().join("points.csv");
    std::fs::write(&file, &csv).unwrap();

    let (ok, out) = run(&config, &["intensity", "import"]);
    assert!(!ok, "import without a file must fail: {out}");
    let (ok, out) = run(&config, &["intensity", "import", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ledger: 12 new, 0 revised; 0 refused"),
        "{out}"
    );
    // Importing again adds nothing.
    let (ok, out) = run(&config, &["intensity", "import", file.to_str().unwrap()]);
    assert!(ok && out.contains("ledger: 0 new, 0 revised"), "{out}");

    let (ok, out) = run(&config, &["intensity", "status", "--days", "1"]);
    assert!(ok, "{out}");
    let (last_t, last_v) = rows.last().unwrap();
    let live = out.split("LIVE_CAISO_NORTH").nth(1).unwrap();
    let value: f64 = last_v.parse().unwrap();
    assert!(
        live.contains(&format!(
            "latest marginal actual: {}.000Z = {value:.1} g/kWh (watttime:CAISO_NORTH",
            last_t.trim_end_matches('Z')
        )),
        "{live}"
    );
    // Those points are from 2023: the last day has no actual at all, and says so.
    assert!(
        live.contains("marginal actuals: 1 gaps in the last 1 d, 288 buckets missing"),
        "{live}"
    );
    assert!(out.contains("SGIP_CAISO_PGE (historical series replayed on a shifted clock)"));

    // A file with a bad unit is refused whole, naming the line.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, csv.replacen("g_per_kwh", "tons_per_year", 1)).unwrap();
    let (ok, out) = run(&config, &["intensity", "import", bad.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("bad.csv") && out.contains("tons_per_year"),
        "{out}"
    );
}
