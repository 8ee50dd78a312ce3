//! `WATTPRINT_*` variables through the real binary: config overrides apply and unknown ones are
//! refused by name, but the SDK's variables (`WATTPRINT_URL`, `WATTPRINT_TOKEN`, …) are left
//! alone so a shell that exports them for the SDK examples can still run `wattprint`.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn token(envs: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wattprint"))
        .current_dir(dir.path())
        .args(["token", "--tenant", "acme"])
        .envs(envs.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_sdk_variables_are_not_config_overrides_but_others_are() {
    let (ok, text) = token(&[
        ("WATTPRINT_URL", "http://127.0.0.1:8080"),
        ("WATTPRINT_TOKEN", "eyJhbGciOi.x.y"),
        ("WATTPRINT_FROM", "2026-11-23T00:00:00Z"),
        ("WATTPRINT_TO", "2026-11-23T01:00:00Z"),
    ]);
    assert!(ok, "{text}");
    assert!(text.trim().starts_with("ey"), "a JWT: {text}");
    let (ok, text) = token(&[("WATTPRINT_NOPE", "1")]);
    assert!(!ok && text.contains("unknown field `nope`"), "{text}");
    let (ok, text) = token(&[("WATTPRINT_QUERY_API__LEEWAY_S", "soon")]);
    assert!(!ok && text.contains("leeway_s"), "{text}");
}
