//! The command line's integration tests, one binary: configuration, `wattprint up`, the agent
//! check, environment overrides, intensity commands, the corpus and the portal in a browser.

mod agent_check;
mod backfill;
mod config;
mod corpus;
mod env;
mod intensity;
mod inventory;
mod metrics;
mod portal;
mod portal_oidc;
mod up;

use std::path::Path;
use std::process::Command;

/// Runs `wattprint --config CONFIG ARGS…`: whether it succeeded, and stdout then stderr.
#[allow(clippy::unwrap_used)] // tests fail loudly by design
fn run(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wattprint"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
