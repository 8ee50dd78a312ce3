//! libvirt domain XML → which VM holds which passed-through GPU: realistic fixtures (a
//! persistent definition, `virsh dumpxml` of a running domain, `/run/libvirt/qemu` live state),
//! the rules for stopped and running domains, and errors that name the file and the problem.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns: a panic is a test failure

use std::path::{Path, PathBuf};
use std::sync::Arc;
use wattprint_agent::attribution::libvirt::{parse_domain, LibvirtError, LibvirtHost};
use wattprint_agent::attribution::{check, AttributionMode, GpuRule};
use wattprint_agent::replay::{Pacing, ReplayConfig, ReplaySensor};
use wattprint_core::{InstanceId, Milliwatts, UnixMillis};

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/libvirt")
        .join(dir)
}

fn fixture_text(dir: &str, file: &str) -> String {
    std::fs::read_to_string(fixtures(dir).join(file)).unwrap()
}

/// A temporary directory holding `files` (name, XML).
fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_err(files: &[(&str, &str)]) -> (String, LibvirtError, PathBuf) {
    let dir = dir_with(files);
    let err = LibvirtHost::load_dir(dir.path()).unwrap_err();
    (err.to_string(), err, dir.keep())
}

#[test]
fn host_pci_addresses_map_to_domain_uuids_or_the_wattprint_metadata_instance() {
    let host = LibvirtHost::load_dir(&fixtures("host")).unwrap();
    assert_eq!(host.domains().len(), 4);
    // Persistent definition with a Wattprint <metadata> instance id; the guest-side
    // <address> (bus 0x06) and the NIC's guest address (bus 0x01) are not host devices.
    let a = host.domain_for_pci("0000:01:00.0").unwrap();
    assert_eq!(a.name, "tenant-a-train");
    assert_eq!(a.instance, InstanceId::from("i-0a1b2c3d4e5f60718"));
    assert_eq!(a.uuid, "6f1c9a52-3d0e-4b7a-8c21-95e4d0a7b3f8");
    assert!(!a.running, "a definition does not say it runs");
    assert_eq!(a.pci_devices, ["00000000:01:00.0"]);
    // `virsh dumpxml` of a running domain (id='7'): two GPUs, the mdev hostdev skipped, the
    // instance id is the domain uuid. `spare` (stopped) also lists bus 0x02: the running one
    // holds it.
    let b = host.domain_for_pci("00000000:02:00.0").unwrap();
    assert_eq!(b.name, "tenant-b-infer");
    assert!(b.running);
    assert_eq!(
        b.instance,
        InstanceId::from("c3a8e0d4-91b2-4f6e-a7d5-0b8f2e6c4a19")
    );
    assert_eq!(b.pci_devices, ["00000000:02:00.0", "00000000:03:00.0"]);
    assert_eq!(
        host.domain_for_pci("03:00.0").unwrap().name,
        "tenant-b-infer"
    );
    assert!(
        host.domain_for_pci("0000:06:00.0").is_none(),
        "guest address"
    );
    assert!(
        host.domain_for_pci("0000:04:00.0").is_none(),
        "a disk's guest address"
    );
    assert_eq!(host.assigned_devices(), 3);

    // /run/libvirt/qemu live state: <domstatus> around the domain.
    let c = parse_domain(
        &fixture_text("run", "tenant-c-batch.xml"),
        Path::new("tenant-c-batch.xml"),
    )
    .unwrap();
    assert!(c.running);
    assert_eq!(c.pci_devices, ["00000000:C1:00.0"]);
    assert_eq!(
        c.instance,
        InstanceId::from("5e2d7c91-0a4b-4c8e-9f13-7b6a2d0e8c45")
    );
}

#[test]
fn replayed_gpus_are_attributed_through_libvirt_and_an_unassigned_one_fails_the_check() {
    let host = Arc::new(LibvirtHost::load_dir(&fixtures("host")).unwrap());
    let mut sensor = ReplaySensor::new(ReplayConfig {
        trace_path: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/h100-trace/h100_power_trace_50ms.csv"),
        gpus: 4,
        seed: 7,
        start_at: UnixMillis(1_800_000_000_000),
        pacing: Pacing::AsFastAsPossible,
        loops: Some(1),
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: Milliwatts(700_000),
    })
    .unwrap();
    let mode = AttributionMode::Libvirt(host);
    let report = check(&mut sensor, &mode);
    let instances: Vec<Option<String>> = report
        .gpus
        .iter()
        .map(|g| match &g.rule {
            Ok(GpuRule::Exclusive { instance, .. }) => Some(instance.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        instances,
        [
            Some("i-0a1b2c3d4e5f60718".to_owned()),
            Some("c3a8e0d4-91b2-4f6e-a7d5-0b8f2e6c4a19".to_owned()),
            Some("c3a8e0d4-91b2-4f6e-a7d5-0b8f2e6c4a19".to_owned()),
            None,
        ]
    );
    assert!(!report.is_ok());
    let problems = report.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("PCI 00000000:04:00.0")
            && problems[0].contains("no <hostdev> of the 4 libvirt domain(s)"),
        "{}",
        problems[0]
    );
    let text = report.to_string();
    assert!(
        text.contains("exclusive → instance i-0a1b2c3d4e5f60718 (libvirt domain tenant-a-train"),
        "{text}"
    );
    assert!(text.contains("check failed: 1 problem(s)"), "{text}");
}

#[test]
fn a_gpu_in_two_running_domains_is_an_error_naming_both() {
    let live_a = fixture_text("host", "tenant-b-infer.xml");
    let live_b = fixture_text("run", "tenant-c-batch.xml").replace("bus='0xc1'", "bus='0x03'");
    let (msg, err, _) = load_err(&[("b.xml", &live_a), ("c.xml", &live_b)]);
    assert!(
        matches!(err, LibvirtError::GpuInTwoRunningDomains { ref pci, .. } if pci == "00000000:03:00.0"),
        "{err:?}"
    );
    assert!(
        msg.contains("tenant-b-infer") && msg.contains("tenant-c-batch") && msg.contains("b.xml"),
        "{msg}"
    );
}

#[test]
fn a_gpu_only_in_stopped_definitions_is_ambiguous() {
    let a = fixture_text("host", "spare.xml");
    let b = fixture_text("host", "spare.xml")
        .replace("<name>spare</name>", "<name>spare-2</name>")
        .replace(
            "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a",
            "1d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a",
        );
    let (msg, err, _) = load_err(&[("spare.xml", &a), ("spare-2.xml", &b)]);
    assert!(matches!(err, LibvirtError::AmbiguousGpu { .. }), "{err:?}");
    assert!(
        msg.contains("00000000:02:00.0")
            && msg.contains("2 defined domains")
            && msg.contains("/run/libvirt/qemu"),
        "{msg}"
    );
}

#[test]
fn broken_files_are_refused_with_the_file_and_the_problem() {
    let good = fixture_text("host", "tenant-a-train.xml");
    // Not XML at all (a truncated copy): the parser's position is kept.
    let (msg, _, dir) = load_err(&[("a.xml", &good[..good.len() / 2])]);
    assert!(
        msg.starts_with(&format!(
            "libvirt domain XML {} is not valid XML:",
            dir.join("a.xml").display()
        )),
        "{msg}"
    );
    // Missing <uuid>.
    let no_uuid = good.replace("<uuid>6f1c9a52-3d0e-4b7a-8c21-95e4d0a7b3f8</uuid>", "");
    let (msg, _, _) = load_err(&[("a.xml", &no_uuid)]);
    assert!(
        msg.contains("a.xml: domain tenant-a-train has no <uuid>"),
        "{msg}"
    );
    // A uuid that is not one.
    let bad_uuid = good.replace("6f1c9a52-3d0e-4b7a-8c21-95e4d0a7b3f8", "not-a-uuid");
    let (msg, _, _) = load_err(&[("a.xml", &bad_uuid)]);
    assert!(
        msg.contains("<uuid>not-a-uuid</uuid> is not a UUID"),
        "{msg}"
    );
    // A malformed host address: named with its attribute and line.
    let bad_bus = good.replace(
        "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>",
        "<address domain='0x0000' bus='0x1zz' slot='0x00' function='0x0'/>",
    );
    let (msg, _, _) = load_err(&[("a.xml", &bad_bus)]);
    assert!(
        msg.contains("domain tenant-a-train: <hostdev> #1 (line 58): source <address> bus='0x1zz' is not a number ≤ 0xff"),
        "{msg}"
    );
    let no_slot = good.replace(
        "<address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>",
        "<address domain='0x0000' bus='0x01' function='0x0'/>",
    );
    let (msg, _, _) = load_err(&[("a.xml", &no_slot)]);
    assert!(
        msg.contains("source <address> has no slot= attribute"),
        "{msg}"
    );
    let no_source = good.replace(
        "<source>\n        <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>\n      </source>",
        "",
    );
    let (msg, _, _) = load_err(&[("a.xml", &no_source)]);
    assert!(msg.contains("has no <source><address>"), "{msg}");
    // Another XML document.
    let (msg, _, _) = load_err(&[("net.xml", "<network><name>default</name></network>")]);
    assert!(
        msg.contains("net.xml: the root element is <network>, not <domain>"),
        "{msg}"
    );
    // The same domain twice (a definition and a dump of it side by side).
    let (msg, _, _) = load_err(&[("a.xml", &good), ("a-dump.xml", &good)]);
    assert!(
        msg.contains("6f1c9a52-3d0e-4b7a-8c21-95e4d0a7b3f8 is described twice"),
        "{msg}"
    );
    // An empty or missing directory.
    let (msg, _, _) = load_err(&[("notes.txt", "hello")]);
    assert!(msg.contains("holds no *.xml file"), "{msg}");
    let err = LibvirtHost::load_dir(Path::new("/nonexistent/libvirt/qemu")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot list libvirt domain XML directory /nonexistent/libvirt/qemu:"),
        "{err}"
    );
    // A bad Wattprint metadata element.
    let empty_instance = good.replace(">i-0a1b2c3d4e5f60718<", "><");
    let (msg, _, _) = load_err(&[("a.xml", &empty_instance)]);
    assert!(
        msg.contains("<metadata> <instance> \"\" must be 1 to 128 characters"),
        "{msg}"
    );
}
