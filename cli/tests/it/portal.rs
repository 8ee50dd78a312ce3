//! The tenant portal in a real browser against a real `wattprint up`: Debian's `chromium`
//! driven by Playwright (`tests/portal/portal.mjs`, `playwright-core` pinned in
//! `tests/portal/package-lock.json`). Every view renders with real data, the numbers on screen
//! are the API's (fetched here and compared), another tenant's instance is a not-found page
//! with none of its data, a reader sees no admin action; screenshots of each view are kept in
//! `target/test-artifacts/portal/`, and the largest contentful paint and the time to an
//! instance's 30-day chart are printed (not asserted).
//!
//! Needs `chromium` (or `WPTEST_CHROMIUM`), `node` and `npm ci` run in `tests/portal/`
//! (`scripts/test-all.sh` does both). Without them the test is skipped, unless `CI` or
//! `WPTEST_REQUIRE_SERVERS` is set: then it fails.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::up::{get, interrupt_and_wait, start_with, Up};

pub(crate) const PORTAL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/portal");
pub(crate) const ARTIFACTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/test-artifacts/portal"
);

/// Chromium and the installed Playwright driver, or why they are missing.
fn browser() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("WPTEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} not found (apt-get install -y chromium, or set WPTEST_CHROMIUM)",
            chromium.display()
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node not found (apt-get install -y nodejs npm)".into());
    }
    let driver = Path::new(PORTAL_DIR).join("node_modules/playwright-core/package.json");
    if !driver.exists() {
        return Err(format!(
            "Playwright not installed: run `npm ci` in {PORTAL_DIR}"
        ));
    }
    Ok(chromium)
}

fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some()
}

/// Chromium for `test`, or `None` (skipped, said on stderr) where the browser, node or the
/// driver is missing and nothing requires them.
pub(crate) fn browser_or_skip(test: &str) -> Option<PathBuf> {
    match browser() {
        Ok(c) => Some(c),
        Err(why) if required() => panic!("the {test} needs {why}"),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Runs the browser script `script` (in `tests/portal/`) with `env`, screenshots to
/// `artifacts`; its JSON report, also kept there as `report.json`.
pub(crate) fn run_script(
    script: &str,
    chromium: &Path,
    artifacts: &Path,
    env: &[(&str, String)],
) -> Value {
    let out = Command::new("node")
        .arg(script)
        .current_dir(PORTAL_DIR)
        .env("CHROMIUM", chromium)
        .env("PORTAL_ARTIFACTS", artifacts)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser script {script} failed:\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(
        artifacts.join("report.json"),
        serde_json::to_vec_pretty(&report).unwrap(),
    )
    .unwrap();
    report
}

/// A port free on the loopback address now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Waits until the replay is wholly stored: the tenant's total energy stops changing.
pub(crate) async fn settled(up: &Up, token: &str, from: i64, to: i64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut last, mut stable) = (0u64, 0);
    while stable < 12 {
        assert!(
            Instant::now() < deadline,
            "the replay never settled (last total {last} mJ)"
        );
        let (status, s) = get(&format!("{}/v1/summary?from={from}&to={to}", up.api), token).await;
        assert_eq!(status, 200, "{s}");
        let total = s["totals"]["it_energy_mj"].as_u64().unwrap();
        stable = if total == last && total > 0 {
            stable + 1
        } else {
            0
        };
        last = total;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The fields one view shows, as `(field, value, text)`, for a row (`None`: outside rows).
pub(crate) fn fields<'a>(
    view: &'a Value,
    row: Option<&str>,
) -> Vec<(&'a str, Option<f64>, &'a str)> {
    view["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["row"].as_str() == row)
        .map(|x| {
            (
                x["field"].as_str().unwrap(),
                x["value"].as_f64(),
                x["text"].as_str().unwrap(),
            )
        })
        .collect()
}

/// The part of `view` inside the element marked `data-scope="{scope}"`.
pub(crate) fn scoped(view: &Value, scope: &str) -> Value {
    let inside: Vec<&Value> = view["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["scope"] == scope)
        .collect();
    serde_json::json!({ "fields": inside })
}

/// The value shown for `field` (outside rows, or in `row`): must be there.
pub(crate) fn shown(view: &Value, row: Option<&str>, field: &str) -> f64 {
    let all = fields(view, row);
    let (_, value, text) = all
        .iter()
        .find(|(f, _, _)| *f == field)
        .unwrap_or_else(|| panic!("{field} not shown in {row:?}: {all:?}"));
    let value = value.unwrap_or_else(|| panic!("{field} shown as {text:?}, without a value"));
    check_text(value, text);
    value
}

/// The text people read is the exact value rounded to the decimals shown, with a unit.
pub(crate) fn check_text(value: f64, text: &str) {
    let number: String = text
        .split_whitespace()
        .next()
        .unwrap()
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let unit = text.split_whitespace().nth(1);
    assert!(unit.is_some(), "{text:?} has no unit");
    let read: f64 = number.parse().unwrap_or_else(|_| panic!("{text:?}"));
    let decimals = number.split('.').nth(1).map_or(0, str::len) as i32;
    assert!(
        (read - value).abs() <= 0.5 * 10f64.powi(-decimals) + 1e-12,
        "{text:?} does not show {value}"
    );
}

pub(crate) fn assert_eq_exact(screen: f64, api: f64, what: &str) {
    assert!(
        screen.to_bits() == api.to_bits(),
        "{what}: the portal shows {screen}, the API says {api}"
    );
}

#[tokio::test]
async fn the_portal_shows_the_apis_numbers_in_a_real_browser() {
    let Some(chromium) = browser_or_skip("portal browser test") else {
        return;
    };

    // A replay of about 75 minutes of the real trace, two hours ago, stored as fast as
    // acks allow, so the data is still while the browser reads it.
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    // The cloud console that embeds the portal: a page the browser script serves on this
    // free port, as http://localhost:PORT, the origin allowed to frame the portal.
    let console_port = free_port();
    let console = format!("http://localhost:{console_port}");
    let start_at = (now - 2 * 3_600_000).div_euclid(300_000) * 300_000;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("portal.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\n[query_api]\nportal_frame_ancestors = [\"{console}\"]\n\n\
             [agent.replay]\ngpus = 2\ninstances = 2\nloops = 24\n\
             unpaced = true\nstart_at_ms = {start_at}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let up = start_with(&data, Some(&config));
    let api = up.api.clone();
    let admin = up.tokens[0].1.clone();
    let globex = up.tokens[1].1.clone();
    let (ok, reader) = crate::run(&config, &["token", "--tenant", "acme", "--role", "reader"]);
    assert!(ok, "{reader}");
    let reader = reader
        .lines()
        .find(|l| l.starts_with("ey"))
        .unwrap_or_else(|| panic!("no token in {reader:?}"))
        .to_owned();
    settled(&up, &admin, start_at - 300_000, now).await;
    settled(&up, &globex, start_at - 300_000, now).await;

    let (_, list) = get(&format!("{api}/v1/instances"), &admin).await;
    let instance = list["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, list) = get(&format!("{api}/v1/instances"), &globex).await;
    let other = list["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A closed workload over the replay's first 30 minutes.
    let created = reqwest::Client::new()
        .post(format!("{api}/v1/workloads"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({
            "label": "portal test run", "instance_ids": [instance], "from": start_at,
            "to": start_at + 1_800_000, "functional_unit": "training run",
            "functional_units": 2.0, "labels": {"team": "ml"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let workload = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The page is served with its policy: own origin only, framed by itself and the console.
    let page = reqwest::get(format!("{api}/portal/")).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'")
            && csp.ends_with(&format!("frame-ancestors 'self' {console}")),
        "{csp}"
    );

    // This test's screenshots only: `sign-in/` beside them is portal_oidc.rs's.
    for entry in std::fs::read_dir(ARTIFACTS).into_iter().flatten().flatten() {
        if entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    let report = run_script(
        "portal.mjs",
        &chromium,
        Path::new(ARTIFACTS),
        &[
            ("PORTAL_API", api.clone()),
            ("PORTAL_ADMIN_TOKEN", admin.clone()),
            ("PORTAL_READER_TOKEN", reader.clone()),
            ("PORTAL_INSTANCE", instance.clone()),
            ("PORTAL_OTHER_INSTANCE", other.clone()),
            ("PORTAL_WORKLOAD", workload.clone()),
            ("PORTAL_CONSOLE_PORT", console_port.to_string()),
        ],
    );
    let views = &report["views"];

    // Figures, printed for the record.
    println!(
        "portal timings: largest contentful paint {} ms; instance 30-day chart (5-minute \
         steps) drawn {} ms after navigating to it",
        report["timings"]["lcp_ms"], report["timings"]["chart_30d_ms"]
    );

    // Nothing failed in the page, no raw JSON or error anywhere a user looks.
    assert_eq!(report["console_errors"], serde_json::json!([]), "{report}");
    for (name, v) in views.as_object().unwrap() {
        assert_eq!(v["looks_like_json"], false, "{name}: {}", v["text"]);
        if name != "bad_token" {
            assert_eq!(
                v["error_notices"],
                serde_json::json!([]),
                "{name}: {}",
                v["text"]
            );
        }
    }
    let checks = &report["checks"];
    assert_eq!(checks["fragment_cleared"], true);
    assert_eq!(checks["token_in_session"], true);
    assert_eq!(checks["first_tab_target"], "Instances");
    let picked = checks["picker_hash"].as_str().unwrap();
    assert!(
        picked.contains("range=7d") && picked.contains("step=1h"),
        "{picked}"
    );
    assert!(checks["download_name"].as_str().unwrap().ends_with(".csv"));
    assert!(checks["download_bytes"].as_u64().unwrap() > 0);

    // Instances: the 24-hour summary per instance and in total, with a power sparkline.
    let v = &views["instances"];
    assert_eq!(v["rows"], 1, "acme has one instance: {}", v["text"]);
    assert!(v["sparklines"].as_u64().unwrap() >= 1, "{}", v["text"]);
    let (from, to) = (v["from"].as_i64().unwrap(), v["to"].as_i64().unwrap());
    let (_, summary) = get(&format!("{api}/v1/summary?from={from}&to={to}"), &admin).await;
    let row = &summary["instances"][0];
    assert_eq!(row["instance_id"], instance.as_str());
    for field in ["it_energy_kwh", "operational_co2e_g"] {
        let screen = shown(v, Some(&instance), field);
        assert_eq_exact(screen, f(&row[field]), field);
        assert!(screen > 0.0, "{field}");
        assert_eq_exact(
            shown(&scoped(v, "totals"), None, field),
            f(&summary["totals"][field]),
            field,
        );
    }

    // An instance's charts at every step: the totals on screen are the series' own.
    for name in [
        "instance_30d",
        "instance_24h_1h",
        "instance_7d_1d",
        "instance_6h_5m",
        "instance_1h_raw",
    ] {
        let v = &views[name];
        let step = v["step"].as_str().unwrap();
        let (from, to) = (v["from"].as_i64().unwrap(), v["to"].as_i64().unwrap());
        let (status, series) = get(
            &format!("{api}/v1/instances/{instance}/series?from={from}&to={to}&step={step}"),
            &admin,
        )
        .await;
        assert_eq!(status, 200, "{series}");
        let points = series["points"].as_array().unwrap();
        let energy_mj: u64 = points
            .iter()
            .map(|p| p["energy_mj"].as_u64().unwrap())
            .sum();
        assert!(energy_mj > 0, "{name}: no energy in the range");
        assert_eq_exact(
            shown(v, None, "energy_kwh"),
            energy_mj as f64 / 3.6e9,
            &format!("{name} energy"),
        );
        if step == "raw" {
            assert_eq!(v["canvases"], 1, "{name}: {}", v["text"]);
            continue;
        }
        assert_eq!(
            v["canvases"], 4,
            "{name}: power, energy, intensity, emissions"
        );
        let co2e = points.iter().fold(0.0, |a, p| a + f(&p["co2e_g"]));
        assert_eq_exact(shown(v, None, "co2e_g"), co2e, &format!("{name} co2e"));
        let avg = points
            .iter()
            .fold(0.0, |a, p| a + p["average_co2e_g"].as_f64().unwrap_or(0.0));
        assert_eq_exact(
            shown(v, None, "average_co2e_g"),
            avg,
            &format!("{name} average co2e"),
        );
        let max_w = points.iter().fold(0.0, |a: f64, p| {
            a.max(p["power_max_w"].as_f64().unwrap_or(0.0))
        });
        assert_eq_exact(
            shown(v, None, "power_max_w"),
            max_w,
            &format!("{name} power"),
        );
    }

    // Workloads: the list and the detail show the footprint the API computes.
    let (_, detail) = get(&format!("{api}/v1/workloads/{workload}"), &admin).await;
    let fp = &detail["footprint"];
    let v = &views["workloads"];
    for field in ["it_energy_kwh", "total_co2e_g", "sci_g_per_unit"] {
        assert_eq_exact(shown(v, Some(&workload), field), f(&fp[field]), field);
    }
    assert!(v["text"].as_str().unwrap().contains("actual"), "provenance");
    let v = &views["workload"];
    for field in [
        "it_energy_kwh",
        "operational_co2e_g",
        "embodied_co2e_g",
        "total_co2e_g",
        "sci_g_per_unit",
    ] {
        assert_eq_exact(shown(v, None, field), f(&fp[field]), field);
    }
    assert_eq_exact(
        shown(v, None, "average_sci_g_per_unit"),
        f(&fp["average"]["sci_g_per_unit"]),
        "average SCI",
    );
    assert!(f(&fp["sci_g_per_unit"]) > 0.0);

    // What-ifs: as run, best Flexible Start (6 h) and Pause and Resume (2×) over the curve.
    let (status, whatif) = get(
        &format!("{api}/v1/workloads/{workload}/whatif?window_hours=6&factor=2"),
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{whatif}");
    let v = &views["whatif"];
    assert_eq!(v["canvases"], 1, "the intensity curve: {}", v["text"]);
    let fs = &whatif["flexible_start"][0];
    let pr = &whatif["pause_resume"][0];
    assert_eq_exact(
        shown(v, None, "actual_co2e_g"),
        f(&fs["actual_co2e_g"]),
        "as run",
    );
    assert_eq_exact(
        shown(v, None, "best_co2e_g"),
        f(&fs["best_co2e_g"]),
        "flexible start",
    );
    assert_eq_exact(
        shown(v, None, "pause_co2e_g"),
        f(&pr["co2e_g"]),
        "pause and resume",
    );

    // Statements: one row per month the API lists, with downloads.
    let (_, statements) = get(&format!("{api}/v1/statements"), &admin).await;
    let months = statements["statements"].as_array().unwrap().len();
    assert!(months >= 1);
    assert_eq!(views["statements"]["rows"], months as u64);

    // Restatements: the totals over the same range (a replay of actuals restates nothing,
    // which the view says in words).
    let v = &views["restatements"];
    let (from, to) = (v["from"].as_i64().unwrap(), v["to"].as_i64().unwrap());
    let (status, restated) = get(
        &format!("{api}/v1/restatements?from={from}&to={to}"),
        &admin,
    )
    .await;
    assert_eq!(status, 200, "{restated}");
    assert_eq_exact(
        shown(v, None, "it_co2e_delta_g"),
        f(&restated["totals"]["it_co2e_delta_g"]),
        "restated IT emissions",
    );
    if restated["restatements"].as_array().unwrap().is_empty() {
        assert!(v["text"]
            .as_str()
            .unwrap()
            .contains("no interval was restated"));
    }

    // Methodology: the 30-day energy and how much of it was estimated.
    let v = &views["methodology"];
    let (from, to) = (v["from"].as_i64().unwrap(), v["to"].as_i64().unwrap());
    let (_, summary) = get(&format!("{api}/v1/summary?from={from}&to={to}"), &admin).await;
    assert_eq_exact(
        shown(v, None, "it_energy_kwh"),
        f(&summary["totals"]["it_energy_kwh"]),
        "methodology energy",
    );
    assert_eq_exact(
        shown(v, None, "estimated_energy_kwh"),
        summary["totals"]["estimated_energy_mj"].as_u64().unwrap() as f64 / 3.6e9,
        "methodology estimated energy",
    );
    let text = v["text"].as_str().unwrap();
    assert!(text.contains("actual marginal intensity") && text.contains("replayed"));
    let source = whatif["intensity_source"].as_str().unwrap();
    assert!(
        text.contains(source),
        "the marginal provider {source}: {text}"
    );

    // Another tenant's instance: not found, and nothing of it on screen.
    for name in ["other_instance", "unknown"] {
        let v = &views[name];
        assert_eq!(v["not_found"], true, "{name}: {}", v["text"]);
        assert_eq!(v["fields"], serde_json::json!([]), "{name}");
        assert_eq!(v["canvases"], 0, "{name}");
    }
    assert!(!views["other_instance"]["text"]
        .as_str()
        .unwrap()
        .contains(&other));

    // Admin actions: shown to the admin, never to a reader.
    assert!(views["workloads"]["admin_elements"].as_u64().unwrap() >= 1);
    assert!(views["workload"]["admin_elements"].as_u64().unwrap() >= 1);
    for name in ["reader_workloads", "reader_workload"] {
        let v = &views[name];
        assert_eq!(v["admin_elements"], 0, "{name}: {}", v["text"]);
        assert!(!v["fields"].as_array().unwrap().is_empty(), "{name}");
    }

    // The admin's forms reached the API: the labels were saved, a workload was created.
    let (_, detail) = get(&format!("{api}/v1/workloads/{workload}"), &admin).await;
    assert_eq!(
        detail["labels"],
        serde_json::json!({"team": "ml", "run": "browser"})
    );
    let created = views["created"]["view"].as_str().unwrap();
    let created = created
        .strip_prefix("workloads/")
        .unwrap_or_else(|| panic!("{created}"));
    let (status, made) = get(&format!("{api}/v1/workloads/{created}"), &admin).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["label"], "made in the browser");
    assert_eq!(made["instance_ids"], serde_json::json!([instance]));

    // Embedded in the console's iframe with a reader's token in the fragment: the portal
    // shows the tenant's instances; a page of an origin not configured cannot frame it.
    assert_eq!(checks["embedded_h1"], "Instances");
    assert_eq!(checks["embedded_rows"], 1);
    assert_eq!(checks["stranger_frame_shows_portal"], false);

    // Without a token, and with a bad one: what to do, in words.
    assert_eq!(views["signed_out"]["h1"], "Signed out");
    let v = &views["bad_token"];
    assert!(
        v["error_notices"][0]
            .as_str()
            .unwrap()
            .contains("sign-in has expired or is not valid"),
        "{}",
        v["text"]
    );

    for shot in [
        "01-instances",
        "02-instance-30d-5m",
        "06-whatif",
        "09-other-tenant-instance",
    ] {
        assert!(Path::new(ARTIFACTS).join(format!("{shot}.png")).exists());
    }
    interrupt_and_wait(up);
}
