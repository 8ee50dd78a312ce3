//! The README's first command, for real: `wattprint up` as a child process. It must print a
//! working URL and tokens, serve metered data, stop cleanly on Ctrl-C (SIGINT), and resume
//! with its data after a restart.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Up {
    child: Child,
    api: String,
    tokens: Vec<(String, String)>,
}

fn start(data_dir: &std::path::Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wattprint"))
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(data_dir.with_extension("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut api, mut tokens, mut tenant) = (None, vec![], None);
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["query", "API", url, ..] => api = Some((*url).to_owned()),
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
    std::thread::spawn(move || lines.for_each(drop));
    let Some(api) = api else {
        let status = child.wait().unwrap();
        let stderr = std::fs::read_to_string(data_dir.with_extension("stderr.log")).unwrap();
        panic!("wattprint up printed no API URL and exited with {status}; stderr:\n{stderr}");
    };
    Up { child, api, tokens }
}

fn interrupt_and_wait(mut up: Up) {
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

async fn get(url: &str, token: &str) -> (u16, Value) {
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_stop = energy_mj(&up, &acme, &instance).await;
    assert!(before_stop > first);
    interrupt_and_wait(up);

    // Restart on the same data: the energy metered before is still there, and more arrives.
    let up = start(dir.path());
    let acme = up.tokens[0].1.clone();
    let after_restart = energy_mj(&up, &acme, &instance).await;
    assert!(
        after_restart >= before_stop,
        "lost data across restart: {after_restart} < {before_stop}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(energy_mj(&up, &acme, &instance).await > after_restart);
    interrupt_and_wait(up);
}
