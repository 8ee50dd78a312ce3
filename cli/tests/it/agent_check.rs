//! `wattprint agent --check` through the binary with the replay sensor: what it prints for
//! whole, MIG, vGPU, libvirt and in-guest attribution (config file, environment and flags),
//! and a non-zero exit naming the reason when a GPU cannot be attributed or the config is
//! broken.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use wattprint_agent::replay::{replay_gpu_uuid, replay_part_uuid, replay_vm_uuid, ReplayLayout};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `wattprint agent --check` with `config` (TOML), extra `args` and `env`.
fn check(config: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wattprint.toml");
    std::fs::write(
        &path,
        format!("data_dir = {:?}\n{config}", dir.path().join("data")),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wattprint"));
    cmd.arg("--config")
        .arg(&path)
        .args(["agent", "--check"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Never inherit overrides from the test's own environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("WATTPRINT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_default_demo_attributes_every_replayed_gpu_to_its_inventory_instance() {
    let r = check("", &[], &[]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(out.contains("4 GPU(s) discovered"), "{out}");
    for g in 0..4u32 {
        let uuid = replay_gpu_uuid(42, g);
        assert!(
            out.contains(&format!(
                "GPU {g}: {uuid}  PCI 00000000:0{}:00.0  NVIDIA H100 80GB HBM3  power limit 700 W",
                g + 1
            )),
            "{out}"
        );
    }
    assert!(
        out.contains(
            "MIG disabled, virtualization none (bare metal), energy from the counter (exact)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "reads: energy counter every 1000 ms; power, utilisation, temperature, clock every 100 ms"
        ),
        "{out}"
    );
    // Dealt round-robin over the two demo instances.
    assert_eq!(
        out.matches("exclusive → instance acme-gpu-vm-1 (the configured inventory)")
            .count(),
        2,
        "{out}"
    );
    assert_eq!(
        out.matches("exclusive → instance globex-gpu-vm-1").count(),
        2
    );
    assert!(
        out.contains("check passed: every GPU is attributed"),
        "{out}"
    );
}

#[test]
fn mig_and_vgpu_replays_show_their_parts_and_targets() {
    let r = check(
        "[agent.replay]\ngpus = 1\ninstances = 1\nmig_profiles = [\"3g.40gb\", \"4g.40gb\"]\n\
         [agent.attribution]\nmig_rule = \"by_utilisation\"\n",
        &[],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let layout = ReplayLayout::Mig(vec![]);
    let mig0 = replay_part_uuid(42, 0, 0, &layout).unwrap();
    assert!(r.stdout.contains("MIG enabled"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("apportioned-mig by slices × utilisation between 2 MIG device(s):"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "{mig0} 3g.40gb (3 slices, 40960 MiB) → instance acme-gpu-vm-1"
        )),
        "{}",
        r.stdout
    );

    // vGPU: the environment picks the mode, each vGPU goes to its VM.
    let r = check(
        "[agent.replay]\ngpus = 1\ninstances = 1\nvgpu_profiles = [\"H100-40C\", \"H100-20C\"]\n",
        &[],
        &[
            ("WATTPRINT_AGENT__ATTRIBUTION__MODE", "vgpu"),
            ("WATTPRINT_AGENT__ATTRIBUTION__VGPU_IDLE_POWER_W", "70"),
        ],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let vm1 = replay_vm_uuid(42, 0, 1);
    assert!(
        r.stdout.contains(
            "apportioned-vgpu between 2 vGPU(s): idle floor 70 W shared equally, the rest by \
             utilisation:"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "H100-20C (20480 MiB) in VM {vm1} → instance {vm1}"
        )),
        "{}",
        r.stdout
    );
}

#[test]
fn an_unmapped_gpu_fails_the_check_with_its_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("gpus.toml");
    std::fs::write(
        &mapping,
        format!(
            "[[gpu]]\nuuid = \"{}\"\ninstance = \"i-one\"\n",
            replay_gpu_uuid(42, 0)
        ),
    )
    .unwrap();
    let r = check(
        "[agent.replay]\ngpus = 2\ninstances = 1\n",
        &["--mapping-file", mapping.to_str().unwrap()],
        &[],
    );
    assert!(!r.ok);
    assert!(
        r.stdout.contains(&format!(
            "exclusive → instance i-one (mapping file {})",
            mapping.display()
        )),
        "{}",
        r.stdout
    );
    let missing = replay_gpu_uuid(42, 1);
    let want = format!(
        "GPU {missing} (PCI 00000000:02:00.0) is not in mapping file {}: add a [[gpu]] entry",
        mapping.display()
    );
    assert!(
        r.stdout.contains("check failed: 1 problem(s)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains(&format!("attribution check failed: {want}")),
        "{}",
        r.stderr
    );
    // A broken mapping file stops the check with the file's own error.
    std::fs::write(&mapping, "[[gpu]]\ninstance = \"i-one\"\n").unwrap();
    let r = check("", &["--mapping-file", mapping.to_str().unwrap()], &[]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("[[gpu]] entry 1: has neither `uuid` nor `pci_bus_id`"),
        "{}",
        r.stderr
    );
}

#[test]
fn libvirt_and_in_guest_modes_from_flags() {
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/libvirt/host");
    let r = check(
        "[agent.replay]\ngpus = 3\n",
        &[
            "--attribution",
            "libvirt",
            "--libvirt-dir",
            fixtures.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("exclusive → instance i-0a1b2c3d4e5f60718 (libvirt domain tenant-a-train"),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .contains("attribution: libvirt: 4 domain(s) with 3 passed-through PCI device(s)"));

    let r = check(
        "[agent.replay]\ngpus = 2\n",
        &["--attribution", "in_guest", "--instance-id", "i-guest"],
        &[],
    );
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout
            .matches("exclusive → instance i-guest (in-guest instance id from agent.attribution.instance_id)")
            .count(),
        2,
        "{}",
        r.stdout
    );

    // The metadata service does not answer: the check stops with the reason.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = check(
        &format!(
            "[agent.attribution]\nmode = \"in_guest\"\nmetadata = \"gcp\"\nmetadata_url = \"http://{closed}\"\n"
        ),
        &[],
        &[],
    );
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&format!(
            "cannot reach GCP metadata server at http://{closed}/computeMetadata/v1/instance/id"
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn broken_attribution_config_names_the_key() {
    for (config, env, want) in [
        (
            "[agent.attribution]\nmode = \"guess\"\n",
            vec![],
            "agent.attribution.mode = \"guess\" must be",
        ),
        (
            "[agent.attribution]\nmode = \"in_guest\"\n",
            vec![],
            "needs instance_id, or metadata",
        ),
        (
            "[agent.attribution]\nmode = \"vgpu\"\nlibvirt_dir = \"/tmp\"\n",
            vec![],
            "agent.attribution.libvirt_dir applies to mode = \"libvirt\" only",
        ),
        (
            "",
            vec![("WATTPRINT_AGENT__ATTRIBUTION__MIG_RULE", "by_vibes")],
            "agent.attribution.mig_rule = \"by_vibes\" must be",
        ),
        (
            "[agent.replay]\nvgpu_profiles = [\"H100-20C\"]\n",
            vec![],
            "vgpu_profiles with mode \"vgpu\"",
        ),
        (
            "[agent.replay]\nmig_profiles = [\"4g.40gb\", \"4g.40gb\"]\n",
            vec![],
            "agent.replay.mig_profiles must hold 1 to 7 compute slices in all, has 8",
        ),
        (
            "[agent.attribution]\nmode = \"in_guest\"\nmetadata = \"ibm\"\n",
            vec![],
            "agent.attribution.metadata = \"ibm\" must be \"aws\", \"gcp\" or \"azure\"",
        ),
        (
            "[agent.attribution]\nmode = \"libvirt\"\nlibvirt_dir = \"/nonexistent/qemu\"\n",
            vec![],
            "cannot list libvirt domain XML directory /nonexistent/qemu",
        ),
        (
            "[agent.attribution]\nmodes = \"mapping\"\n",
            vec![],
            "unknown field `modes`",
        ),
    ] {
        let r = check(config, &[], &env);
        assert!(!r.ok, "{config}: {}", r.stdout);
        assert!(
            r.stderr.contains(want),
            "{config}: want {want:?} in\n{}",
            r.stderr
        );
    }
}
