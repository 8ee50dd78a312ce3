//! The README's first command, for real: `wattprint up` as a child process. It must print a
//! working URL and tokens, serve metered data, stop cleanly on Ctrl-C (SIGINT), and resume
//! with its data after a restart.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Up {
    pub(crate) child: Child,
    pub(crate) api: String,
    /// The gateway's `grpc://` URL.
    pub(crate) gateway: String,
    pub(crate) tokens: Vec<(String, String)>,
    /// Every line printed so far (kept as the child goes on printing).
    pub(crate) output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Up {
    /// Waits up to `timeout` for a printed line starting with `prefix`.
    pub(crate) fn wait_for_line(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line {prefix:?} within {timeout:?}; printed:\n{}",
                self.output.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn start(data_dir: &std::path::Path) -> Up {
    start_with(data_dir, None)
}

/// `wattprint up` on `data_dir`, with a config file when given, without demo history (so
/// tests see only what they replay).
pub(crate) fn start_with(data_dir: &std::path::Path, config: Option<&std::path::Path>) -> Up {
    start_args(data_dir, config, &["--backfill-days", "0"])
}

/// `wattprint up` on `data_dir` with `extra` arguments (the API on a free port unless they
/// name `--api-listen`).
pub(crate) fn start_args(
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
    extra: &[&str],
) -> Up {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wattprint"));
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--gateway-listen", "127.0.0.1:0"])
        .args(if extra.contains(&"--api-listen") {
            &[][..]
        } else {
            &["--api-listen", "127.0.0.1:0"][..]
        })
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data_dir.with_extension("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut tokens, mut tenant) = (None, vec![], None);
    let mut gateway = String::new();
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        output.lock().unwrap().push(line.clone());
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["query", "API", url, ..] => api = Some((*url).to_owned()),
            ["gateway", url] => gateway = (*url).to_owned(),
            ["token", "for", "tenant", t, ..] => tenant = Some((*t).to_owned()),
            [token] if tenant.is_some() && token.starts_with("ey") => {
                tokens.push((tenant.take().unwrap(), (*token).to_owned()))
            }
            _ => {}
        }
        if line.starts_with("Ctrl-C stops") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    let kept = output.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    let Some(api) = api else {
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(data_dir.with_extension("stderr.log")).unwrap();
        panic!("wattprint up printed no API URL and exited with {status}; stderr:\n{stderr}");
    };
    Up {
        child,
        api,
        gateway,
        tokens,
        output,
    }
}

pub(crate) fn interrupt_and_wait(mut up: Up) {
    let pid = up.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            assert!(status.success(), "wattprint up exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wattprint up did not stop within 20 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) async fn get(url: &str, token: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Energy the instance has in the last ten minutes, exact.
async fn energy_mj(up: &Up, token: &str, instance: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let url = format!(
        "{}/v1/instances/{instance}/series?from={}&to={}&step=5m",
        up.api,
        now - 600_000,
        now + 1000
    );
    let (status, body) = get(&url, token).await;
    assert_eq!(status, 200, "{body}");
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["energy_mj"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn up_serves_metered_data_stops_on_ctrl_c_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = start(dir.path());
    let tenants: Vec<&str> = up.tokens.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tenants, ["acme", "globex"]);
    let acme = up.tokens[0].1.clone();
    let (status, body) = get(&format!("{}/healthz", up.api), "").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, list) = get(&format!("{}/v1/instances", up.api), &acme).await;
    assert_eq!(status, 200, "{list}");
    let instance = list["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        list["instances"].as_array().unwrap().len(),
        1,
        "acme sees only its own instance"
    );

    // Replayed GPUs report every second: energy appears and grows.
    let mut first = 0;
    for _ in 0..100 {
        first = energy_mj(&up, &acme, &instance).await;
        if first > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first > 0, "no energy metered within 10 s");
    let before_stop = energy_growing_past(&up, &acme, &instance, first).await;
    interrupt_and_wait(up);

    // Restart on the same data: the energy metered before is still there, and more arrives.
    let up = start(dir.path());
    let acme = up.tokens[0].1.clone();
    let after_restart = energy_mj(&up, &acme, &instance).await;
    assert!(
        after_restart >= before_stop,
        "lost data across restart: {after_restart} < {before_stop}"
    );
    energy_growing_past(&up, &acme, &instance, after_restart).await;
    interrupt_and_wait(up);
}

/// The instance's energy once it has grown past `mj`, waiting up to 20 s: a busy machine (a
/// CI build beside it) can take more than a second or two to store the next samples.
async fn energy_growing_past(up: &Up, token: &str, instance: &str, mj: u64) -> u64 {
    let mut now = mj;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = energy_mj(up, token, instance).await;
        if now > mj {
            return now;
        }
    }
    panic!("energy did not grow past {mj} mJ within 20 s (now {now} mJ)");
}

/// Energy of `instance` over `[from, to)`, and the highest coverage of any 5-minute point.
async fn energy_between(up: &Up, token: &str, instance: &str, from: i64, to: i64) -> (u64, f64) {
    let url = format!(
        "{}/v1/instances/{instance}/series?from={from}&to={to}&step=5m",
        up.api
    );
    let (status, body) = get(&url, token).await;
    assert_eq!(status, 200, "{body}");
    let points = body["points"].as_array().unwrap();
    (
        points
            .iter()
            .map(|p| p["energy_mj"].as_u64().unwrap())
            .sum(),
        points
            .iter()
            .map(|p| p["coverage"].as_f64().unwrap())
            .fold(0.0, f64::max),
    )
}

/// The documented backfill set-up (a replay at a fixed start, as fast as acks allow) run
/// twice on the same data directory: the second run's samples cover time already stored, so
/// they are held as overlaps and no total changes.
#[tokio::test]
async fn restarting_a_fixed_start_replay_changes_no_total() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let start_at = (now - 3_600_000).div_euclid(300_000) * 300_000;
    let (from, to) = (start_at - 300_000, start_at + 1_800_000);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("backfill.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n\n[agent.replay]\ngpus = 1\ninstances = 1\nloops = 1\n\
             unpaced = true\nstart_at_ms = {start_at}\n",
            data.display().to_string()
        ),
    )
    .unwrap();

    // Waits until the replay is wholly stored: the total stops growing.
    async fn settled(up: &Up, token: &str, instance: &str, from: i64, to: i64) -> (u64, f64) {
        let mut last = (0, 0.0);
        let mut stable = 0;
        for _ in 0..300 {
            let now = energy_between(up, token, instance, from, to).await;
            stable = if now.0 == last.0 && now.0 > 0 {
                stable + 1
            } else {
                0
            };
            last = now;
            if stable == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(stable >= 20, "the replay never settled: {last:?}");
        last
    }

    let up = start_with(&data, Some(&config));
    let acme = up.tokens[0].1.clone();
    let (_, list) = get(&format!("{}/v1/instances", up.api), &acme).await;
    let instance = list["instances"][0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (first, coverage) = settled(&up, &acme, &instance, from, to).await;
    assert!(coverage <= 1.0, "{coverage}");
    interrupt_and_wait(up);

    let up = start_with(&data, Some(&config));
    let acme = up.tokens[0].1.clone();
    let (second, coverage) = settled(&up, &acme, &instance, from, to).await;
    assert_eq!(
        second, first,
        "a second run of the same replay changed the total"
    );
    assert!(coverage <= 1.0, "{coverage}");
    interrupt_and_wait(up);

    // The second run did send its samples: they are held as overlaps, with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_wattprint"))
        .arg("--config")
        .arg(&config)
        .args(["quarantine", "list", "--limit", "100000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let overlaps: usize = text
        .lines()
        .next()
        .and_then(|l| l.split("overlap: ").nth(1))
        .and_then(|n| n.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(overlaps >= 100, "{text:.2000}");
}
