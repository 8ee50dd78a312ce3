//! `wattprint inventory apply` and `history` as an operator runs them on the embedded store: a
//! GPU moved to another tenant's instance keeps its first placement and gains a dated one.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use crate::run;
use std::path::Path;

fn config(data: &Path, gpu_on: &str) -> String {
    let instance = |tenant: &str, id: &str| {
        let gpus = if id == gpu_on {
            "gpus = [{ uuid = \"GPU-1\", model = \"NVIDIA H100 80GB HBM3\", power_limit_w = 700 }]"
        } else {
            "gpus = []"
        };
        format!(
            "[[instances]]\ntenant = \"{tenant}\"\nid = \"{id}\"\nregion = \"CAISO_NORTH\"\n\
             host = \"gpu-host-1\"\n{gpus}\n"
        )
    };
    format!(
        "data_dir = {data:?}\n{}{}",
        instance("acme", "i-a"),
        instance("globex", "i-b")
    )
}

#[test]
fn applying_a_moved_gpu_dates_the_move_and_keeps_the_past() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("wattprint.toml");
    std::fs::write(&file, config(&data, "i-a")).unwrap();
    let (ok, out) = run(&file, &["inventory", "history"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("GPU-1  since always  acme/i-a on host gpu-host-1"),
        "{out}"
    );

    std::fs::write(&file, config(&data, "i-b")).unwrap();
    let (ok, out) = run(&file, &["inventory", "apply"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("inventory applied: 2 instances, 1 GPUs"),
        "{out}"
    );
    let (ok, out) = run(&file, &["inventory", "history", "--gpu", "GPU-1"]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("GPU-1")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("since always  acme/i-a"), "{out}");
    assert!(
        lines[1].contains(" from 20") && lines[1].contains("globex/i-b"),
        "{out}"
    );
    let (_, other) = run(&file, &["inventory", "history", "--gpu", "GPU-9"]);
    assert!(!other.contains("GPU-"), "{other}");
}
