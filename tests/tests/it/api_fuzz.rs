//! Property-based fuzzing of the REST API: `schemathesis` (pinned in `scripts/test-all.sh`'s
//! venv) generates requests from a real `wattprint up`'s own `/openapi.json`, valid and
//! invalid, sends them with a tenant admin's token, and fails on any 5xx, on any response
//! whose body does not match the schema the document gives for its status, and on any request
//! the document calls valid that the server refuses, except for the rules a schema cannot
//! state and the document gives in words ([`RULES_BEYOND_THE_SCHEMA`]).
//!
//! The interpreter is `$WPTEST_PYTHON` (see `python_sdk.rs`); without it, or without
//! schemathesis in it, the test skips, or fails when `WPTEST_REQUIRE_SERVERS` is set. The
//! number of examples per operation and the seed are fixed, so a run is bounded (well under a
//! minute) and a finding reproduces.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::Server;
use wattprint_tests::servers_required;

/// Examples per operation and phase; with the coverage phase's own cases, a few hundred
/// requests in all.
const MAX_EXAMPLES: &str = "10";
/// Fixed, so that a finding reproduces (`--seed` on the command line the failure prints).
const SEED: &str = "20261123";

/// Refusals of schema-valid requests that are expected: rules JSON Schema cannot express (one
/// parameter against another, state, steps of 1/12), each stated in the parameter's
/// description. Any other refusal of a schema-valid request fails the test.
const RULES_BEYOND_THE_SCHEMA: &[&str] = &[
    "is not a position in this list", // a cursor must come from the previous page
    "exceeds the limit of",           // `to` − `from` at most the range limit
    "must be after from",             // `to` after `from`
    "in whole 5-minute steps",        // window_hours in twelfths of an hour
];

/// The findings of a schemathesis report that are not expected refusals: each finding's title
/// line (`- ST202 Schema-valid request rejected`) with the problem detail that followed it.
fn unexpected_findings(report: &str) -> Vec<String> {
    let lines: Vec<&str> = report.lines().collect();
    let mut unexpected = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(title) = line.strip_prefix("- ") else {
            continue;
        };
        let detail = lines[i + 1..]
            .iter()
            .take_while(|l| !l.starts_with("- "))
            .find(|l| l.contains("\"detail\""))
            .copied()
            .unwrap_or("");
        let expected = title.contains("Schema-valid request rejected")
            && RULES_BEYOND_THE_SCHEMA.iter().any(|r| detail.contains(r));
        if !expected {
            unexpected.push(format!("{title}: {}", detail.trim()));
        }
    }
    unexpected
}

/// `$WPTEST_PYTHON`'s `schemathesis` executable, or `None` (skip) when not configured and not
/// required.
fn schemathesis() -> Option<PathBuf> {
    let skip = |why: String| {
        if servers_required() {
            panic!("WPTEST_REQUIRE_SERVERS is set but {why}: scripts/test-all.sh installs it");
        }
        eprintln!("skipped: {why} (see scripts/test-all.sh)");
        None
    };
    let Some(python) = std::env::var_os("WPTEST_PYTHON").map(PathBuf::from) else {
        return skip("WPTEST_PYTHON is not set".into());
    };
    let bin = python.with_file_name("schemathesis");
    if !bin.is_file() {
        return skip(format!("{} does not exist", bin.display()));
    }
    Some(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let server = Server::start();
    // A tenant of its own: its rate-limit budget is not another test's.
    let token = server.token(&["--tenant", "fuzz"]);
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(&schemathesis)
        .args(["run", &format!("{}/openapi.json", server.url)])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,positive_data_acceptance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        // One worker: hypothesis 6.x describing strategies from two threads at once has raised
        // a KeyError inside schemathesis (an error, not a finding).
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .current_dir(work.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", schemathesis.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = report
        .lines()
        .filter(|l| l.contains(" generated, ") || l.trim_start().starts_with("Tested:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    eprintln!("schemathesis in {:?}: {summary}", started.elapsed());
    let unexpected = unexpected_findings(&report);
    assert!(
        unexpected.is_empty(),
        "schemathesis found problems: {unexpected:#?}\n{report}"
    );
    // A failed run with no finding is an error of the run itself (schema not loaded, …).
    assert!(
        out.status.success() || report.contains("\n- "),
        "schemathesis did not run:\n{report}"
    );
    // Every operation the document has was tested.
    let tested = report
        .lines()
        .find(|l| l.trim_start().starts_with("Tested:"));
    let selected = report
        .lines()
        .find(|l| l.trim_start().starts_with("Selected:"));
    assert_eq!(
        tested.map(|l| l.split_whitespace().last()),
        selected.map(|l| l
            .split_whitespace()
            .last()
            .and_then(|n| n.split('/').next())),
        "{report}"
    );
    server.stop();
}
