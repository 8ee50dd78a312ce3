//! The Python SDK (`sdk/python`) against a real `wattprint up` whose replay of the shipped H100
//! trace has finished: its pytest suite (every client method, sync and async, typed errors,
//! `mypy --strict`) and its example, whose printed numbers must be exactly the API's.
//!
//! The interpreter is `$WPTEST_PYTHON`, a venv with `pip install -e 'sdk/python[test]'` that
//! `scripts/test-all.sh` creates; without it the test skips, or fails when
//! `WPTEST_REQUIRE_SERVERS` is set.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{
    camx_average_g_per_kwh, line_after, numbers_after, repo_path, trace_energy_mj, Server,
    RATE_BURST,
};
use serde_json::Value;
use wattprint_tests::servers_required;

/// The venv's interpreter, or `None` (skip) when not configured and not required.
fn python() -> Option<PathBuf> {
    match std::env::var_os("WPTEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if servers_required() => panic!(
            "WPTEST_REQUIRE_SERVERS is set but WPTEST_PYTHON is not: scripts/test-all.sh creates \
             it (python3 -m venv target/py-sdk && target/py-sdk/bin/pip install -e 'sdk/python[test]')"
        ),
        None => {
            eprintln!("skipped: no WPTEST_PYTHON (see scripts/test-all.sh)");
            None
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_tests_and_example_against_a_real_server() {
    let Some(python) = python() else { return };
    let sdk = repo_path("sdk/python");
    // The interpreter imports the repository's package, not some other install.
    let out = Command::new(&python)
        .args(["-c", "import wattprint; print(wattprint.__file__)"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(out.status.success(), "{}", text(&out));
    let module = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        module.starts_with(sdk.join("src").canonicalize().unwrap()),
        "wattprint is imported from {}, not sdk/python/src",
        module.display()
    );

    let server = Server::start();
    let token = server.token(&["--tenant", "acme"]);
    let gpu_energy = trace_energy_mj();
    assert_eq!(server.wait_for_replay(&token).await, 2 * gpu_energy);
    let env: Vec<(&str, String)> = vec![
        ("WATTPRINT_URL", server.url.clone()),
        ("WATTPRINT_TOKEN", token.clone()),
        (
            "WATTPRINT_OTHER_TOKEN",
            server.token(&["--tenant", "globex"]),
        ),
        (
            "WATTPRINT_READER_TOKEN",
            server.token(&["--tenant", "acme", "--role", "reader"]),
        ),
        (
            "WATTPRINT_OPERATOR_TOKEN",
            server.token(&["--role", "operator", "--subject", "py-ops"]),
        ),
        (
            "WATTPRINT_HASTY_TOKEN",
            server.token(&["--tenant", "umbrella", "--role", "reader"]),
        ),
        ("WATTPRINT_TEST_RATE_BURST", RATE_BURST.to_string()),
        ("WATTPRINT_TEST_FROM", server.from_ms.to_string()),
        ("WATTPRINT_TEST_TO", server.to_ms.to_string()),
        ("WATTPRINT_TEST_GPU_ENERGY_MJ", gpu_energy.to_string()),
        (
            "WATTPRINT_TEST_AVERAGE_G_PER_KWH",
            format!("{:?}", camx_average_g_per_kwh()),
        ),
        ("WATTPRINT_TEST_REQUIRE", "1".to_owned()),
    ];

    // The statement example prints the month's preliminary statement as the API serves it.
    let month = wattprint_core::UnixMillis(server.from_ms).to_rfc3339()[..7].to_owned();
    let out = Command::new(&python)
        .arg(sdk.join("examples/statement.py"))
        .arg(&month)
        .env("WATTPRINT_URL", &server.url)
        .env("WATTPRINT_TOKEN", &token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "statement example failed:\n{}",
        text(&out)
    );
    let (status, st) = server.get(&token, &format!("/v1/statements/{month}")).await;
    assert_eq!(status, 200, "{st}");
    let total = &st["totals"];
    assert!(
        stdout.contains(&format!(
            "statement {} acme {month} preliminary",
            st["statement_id"].as_str().unwrap()
        )),
        "{stdout}"
    );
    let energy = total["it_energy_mj"].as_u64().unwrap();
    assert!(energy >= 2 * gpu_energy, "{st}");
    assert!(
        stdout.contains(&format!("total it_energy_mj={energy} marginal_co2e_g=")),
        "{stdout}"
    );
    assert_eq!(
        numbers_after(&stdout, "total it_energy_mj=")[..1],
        [energy as f64]
    );

    // The example: every number it prints is the API's, read back here with plain HTTP.
    let out = Command::new(&python)
        .arg(sdk.join("examples/footprint.py"))
        .args(["acme-gpu-vm-1", "acme-gpu-vm-2"])
        .env("WATTPRINT_URL", &server.url)
        .env("WATTPRINT_TOKEN", &token)
        .env("WATTPRINT_FROM", server.from_ms.to_string())
        .env("WATTPRINT_TO", server.to_ms.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "example failed:\n{}", text(&out));
    assert_eq!(line_after(&stdout, "instances:"), "2");
    let id = line_after(&stdout, "workload:");
    let (status, w) = server.get(&token, &format!("/v1/workloads/{id}")).await;
    assert_eq!(status, 200, "{w}");
    let fp = &w["footprint"];
    assert_eq!(fp["it_energy_mj"].as_u64(), Some(2 * gpu_energy));
    let num = |k: &str| f64_of(&fp[k]);
    assert_eq!(
        numbers_after(&stdout, "energy:"),
        [
            num("it_energy_kwh"),
            num("it_energy_mj"),
            num("facility_energy_kwh")
        ]
    );
    assert_eq!(
        numbers_after(&stdout, "emissions marginal:"),
        [num("operational_co2e_g"), num("operational_it_co2e_g")]
    );
    let a = &fp["average"];
    assert_eq!(
        numbers_after(&stdout, "emissions average:"),
        [
            f64_of(&a["operational_co2e_g"]),
            f64_of(&a["operational_it_co2e_g"]),
            f64_of(&a["sci_g_per_unit"])
        ]
    );
    assert_eq!(
        numbers_after(&stdout, "embodied:"),
        [num("embodied_co2e_g")]
    );
    assert_eq!(numbers_after(&stdout, "SCI:"), [num("sci_g_per_unit")]);
    let (status, whatif) = server
        .get(&token, &format!("/v1/workloads/{id}/whatif"))
        .await;
    assert_eq!(status, 200, "{whatif}");
    let windows = whatif["flexible_start"].as_array().unwrap();
    assert_eq!(windows.len(), 4, "the paper's four windows");
    for f in windows {
        let got = numbers_after(
            &stdout,
            &format!("flexible start {} h:", f64_of(&f["window_hours"])),
        );
        assert_eq!(
            got[..4],
            [
                f64_of(&f["best_delay_minutes"]),
                f64_of(&f["best_co2e_g"]),
                f64_of(&f["actual_co2e_g"]),
                f64_of(&f["saving_co2e_g"])
            ],
            "{stdout}"
        );
    }
    for r in whatif["pause_resume"].as_array().unwrap() {
        let got = numbers_after(
            &stdout,
            &format!("pause and resume x{}:", f64_of(&r["factor"])),
        );
        assert_eq!(
            got[..3],
            [
                f64_of(&r["co2e_g"]),
                f64_of(&r["actual_co2e_g"]),
                f64_of(&r["saving_co2e_g"])
            ],
            "{stdout}"
        );
    }

    // The pytest suite: all pass, none skipped.
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"])
        .arg(sdk.join("tests"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "pytest failed:\n{report}");
    eprintln!("pytest: {}", report.lines().last().unwrap_or_default());
    assert!(report.contains(" passed"), "{report}");
    for word in ["skipped", "xfail", "xpass", "deselected"] {
        assert!(!report.contains(word), "pytest {word} tests:\n{report}");
    }
    server.stop();
}
