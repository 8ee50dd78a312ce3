//! A real `wattprint up` for the SDK tests: the embedded server on free ports with a temp data
//! dir, its agent replaying the shipped H100 trace once, as fast as acks allow, starting at a
//! fixed time in the past — so the data stops growing and every GPU ends with exactly the
//! trace's own energy. Shared by `client/tests/live.rs` and `tests/tests/it/python_sdk.rs` (which
//! includes this file by path); it uses only `wattprint-tests`, `reqwest` and `serde_json`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each includer uses a part

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wattprint_tests::process::{wattprint_bin, Node};
use wattprint_tests::{now_ms, read_trace, BUCKET_MS};

/// Replayed GPUs and instances: one GPU per instance, two instances per demo tenant.
pub const GPUS: u32 = 4;
/// Instances, alternating between the demo tenants `acme` and `globex`.
pub const INSTANCES: u32 = 4;

/// Sustained requests per second per tenant the test server allows.
pub const RATE_PER_S: u32 = 2;
/// Requests per tenant it allows at once.
pub const RATE_BURST: u32 = 400;

/// A running `wattprint up` whose replay is in the past.
pub struct Server {
    /// Base URL of the query API.
    pub url: String,
    /// Virtual start of every GPU's replay, Unix ms (100 s before a bucket edge, 3 h ago).
    pub start_at_ms: i64,
    /// Start of a range holding the whole replay (a bucket edge), Unix ms.
    pub from_ms: i64,
    /// End (exclusive) of that range, Unix ms.
    pub to_ms: i64,
    node: Node,
    dir: tempfile::TempDir,
}

/// Energy one GPU meters over one pass of the trace: the counter's last minus first reading,
/// read from the CSV here (not through Wattprint).
pub fn trace_energy_mj() -> u64 {
    let rows = read_trace();
    rows.last().unwrap().counter_mj - rows[0].counter_mj
}

impl Server {
    /// Starts `wattprint up` and waits for its `Ctrl-C stops` line (all URLs printed).
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let edge = (now_ms() - 3 * 3_600_000).div_euclid(BUCKET_MS) * BUCKET_MS;
        let start_at_ms = edge - 100_000;
        let env: Vec<(String, String)> = [
            ("WATTPRINT_AGENT__REPLAY__UNPACED", "true".to_owned()),
            ("WATTPRINT_AGENT__REPLAY__LOOPS", "1".to_owned()),
            (
                "WATTPRINT_AGENT__REPLAY__START_AT_MS",
                start_at_ms.to_string(),
            ),
            // A burst no test spends on one tenant, so a test exhausts it only on purpose.
            (
                "WATTPRINT_QUERY_API__RATE_LIMIT_PER_S",
                RATE_PER_S.to_string(),
            ),
            (
                "WATTPRINT_QUERY_API__RATE_LIMIT_BURST",
                RATE_BURST.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let data = dir.path().join("data");
        let (gpus, instances) = (GPUS.to_string(), INSTANCES.to_string());
        let args = [
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--gpus",
            &gpus,
            "--instances",
            &instances,
            // Energy is checked against the trace from the replay's start: no demo history.
            "--backfill-days",
            "0",
        ];
        let mut node = Node::spawn("up", &args, &env, dir.path());
        let line = node.wait_for_line("  query API", Duration::from_secs(180));
        let url = line.split_whitespace().nth(2).unwrap().to_owned();
        assert!(url.starts_with("http://"), "{line}");
        node.wait_for_line("Ctrl-C stops", Duration::from_secs(30));
        Server {
            url,
            start_at_ms,
            from_ms: edge - BUCKET_MS,
            to_ms: edge + BUCKET_MS,
            node,
            dir,
        }
    }

    /// The data directory (`--data-dir`).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// A token from `wattprint token <args>` on this server's data dir (e.g. `--tenant acme
    /// --role reader`; `--tenant T` alone is an admin of T).
    pub fn token(&self, args: &[&str]) -> String {
        let out = Command::new(wattprint_bin())
            .arg("token")
            .args(args)
            .env("WATTPRINT_DATA_DIR", self.data_dir())
            .env_remove("WATTPRINT_URL")
            .env_remove("WATTPRINT_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "wattprint token {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// GETs `path_and_query` with `token`: (status, JSON body).
    pub async fn get(&self, token: &str, path_and_query: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .get(format!("{}{path_and_query}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the tenant's summary over the replay range holds exactly `gpus` passes of
    /// the trace (the replay is finite, so this is the final state), and returns that energy.
    pub async fn wait_for_replay(&self, token: &str) -> u64 {
        let (status, list) = self.get(token, "/v1/instances").await;
        assert_eq!(status, 200, "{list}");
        let gpus: u64 = list["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["gpus"].as_array().unwrap().len() as u64)
            .sum();
        let expected = gpus * trace_energy_mj();
        let path = format!("/v1/summary?from={}&to={}", self.from_ms, self.to_ms);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let (status, body) = self.get(token, &path).await;
            assert_eq!(status, 200, "{body}");
            let got = body["totals"]["it_energy_mj"].as_u64().unwrap();
            if got == expected {
                return expected;
            }
            assert!(
                got < expected,
                "more energy than the trace has: {got} > {expected}"
            );
            assert!(
                Instant::now() < deadline,
                "replay incomplete: {got} of {expected} mJ; stderr:\n{}",
                self.node.stderr_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Ctrl-C, and a clean exit.
    pub fn stop(mut self) {
        self.node.interrupt(Duration::from_secs(30));
    }
}

/// The static average intensity of the demo regions' eGRID subregion (CAMX), g/kWh, read
/// from the shipped table here: CO2e lb/MWh × 0.45359237 (exact lb → g, MWh → kWh).
pub fn camx_average_g_per_kwh() -> f64 {
    let path =
        wattprint_tests::data_dir().join("locations/epa_egrid2023_subregion_output_rates.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "co2e_lb_per_mwh").unwrap();
    let row: Vec<&str> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r[0] == "CAMX")
        .unwrap();
    row[col].parse::<f64>().unwrap() * 0.453_592_37
}

/// PUE of the demo regions (`default_raw_config`).
pub const DEMO_PUE: f64 = 1.2;

/// `path` relative to the repository root.
pub fn repo_path(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The rest of the line starting with `prefix`.
pub fn line_after(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
        .trim()
        .to_owned()
}

/// The numbers on the line starting with `prefix`, in order (words that parse as numbers once
/// stripped of `(`, `)`, `+`, `%` and `,`).
pub fn numbers_after(text: &str, prefix: &str) -> Vec<f64> {
    line_after(text, prefix)
        .split_whitespace()
        .filter_map(|w| {
            w.trim_matches(|c| matches!(c, '(' | ')' | '+' | '%' | ','))
                .parse::<f64>()
                .ok()
        })
        .collect()
}
