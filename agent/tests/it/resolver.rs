//! The GPU → instance mapping file: matching rules and clear errors.

use wattprint_agent::resolver::{InstanceResolver, ResolverError};
use wattprint_agent::sensor::{GpuInfo, MigMode, Virtualization};
use wattprint_core::{GpuUuid, InstanceId, Milliwatts};

fn gpu(uuid: &str, pci: &str) -> GpuInfo {
    GpuInfo {
        uuid: GpuUuid::from(uuid),
        pci_bus_id: pci.into(),
        model: "NVIDIA H100 80GB HBM3".into(),
        power_limit: Milliwatts(700_000),
        mig_mode: MigMode::Disabled,
        virtualization: Virtualization::None,
        energy_counter: true,
    }
}

const FILE: &str = r#"
[[gpu]]
uuid = "GPU-5C8D2A6E-0c8b-4b53-9c1f-0e0f3d7f2a11"
instance = "i-abc"

[[gpu]]
pci_bus_id = "0000:00:06.0"
instance = "i-def"
"#;

#[test]
fn gpus_match_by_uuid_first_then_by_pci_bus_id_ignoring_case() {
    let r = InstanceResolver::from_toml_str(FILE).unwrap();
    assert_eq!(r.len(), 2);
    let by_uuid = gpu(
        "GPU-5c8d2a6e-0C8B-4b53-9c1f-0e0f3d7f2a11",
        "00000000:00:07.0",
    );
    assert_eq!(r.resolve(&by_uuid), Some(InstanceId::from("i-abc")));
    // NVML writes 8-digit domains; the file used lspci's 4-digit form.
    let by_pci = gpu("GPU-other", "00000000:00:06.0");
    assert_eq!(r.resolve(&by_pci), Some(InstanceId::from("i-def")));
    // Both match: the uuid wins.
    let both = gpu(
        "gpu-5c8d2a6e-0c8b-4b53-9c1f-0e0f3d7f2a11",
        "00000000:00:06.0",
    );
    assert_eq!(r.resolve(&both), Some(InstanceId::from("i-abc")));
    assert_eq!(r.resolve(&gpu("GPU-nope", "00000000:00:08.0")), None);
}

#[test]
fn a_mapping_file_is_read_from_disk_and_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gpus.toml");
    std::fs::write(&path, FILE).unwrap();
    let r = InstanceResolver::from_file(&path).unwrap();
    assert_eq!(
        r.resolve(&gpu("x", "0000:00:06.0")),
        Some(InstanceId::from("i-def"))
    );
    std::fs::write(&path, "[[gpu]]\ninstance = \"i-1\"\n").unwrap();
    let err = InstanceResolver::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains("gpus.toml") && err.contains("entry 1"),
        "{err}"
    );
    let missing = dir.path().join("missing.toml");
    let err = InstanceResolver::from_file(&missing).unwrap_err();
    assert!(matches!(err, ResolverError::Io { .. }));
    assert!(err.to_string().contains("missing.toml"));
}

#[test]
fn bad_entries_are_refused_with_the_entry_and_the_problem() {
    let cases = [
        (
            "[[gpu]]\nuuid = \"GPU-1\"\ninstance = \"i-1\"\n[[gpu]]\nuuid = \"GPU-2\"\npci_bus_id = \"00:06.0\"\ninstance = \"i-2\"\n",
            "entry 2: has both `uuid` and `pci_bus_id`",
        ),
        ("[[gpu]]\ninstance = \"i-1\"\n", "entry 1: has neither `uuid` nor `pci_bus_id`"),
        ("[[gpu]]\nuuid = \"GPU-1\"\ninstance = \"  \"\n", "entry 1: `instance` is empty"),
        (
            "[[gpu]]\nuuid = \"GPU-1\"\ninstance = \"i-1\"\n[[gpu]]\nuuid = \"gpu-1\"\ninstance = \"i-2\"\n",
            "entry 2: GPU gpu-1 is mapped twice (already to instance i-1)",
        ),
        (
            "[[gpu]]\npci_bus_id = \"0000:00:06.0\"\ninstance = \"i-1\"\n[[gpu]]\npci_bus_id = \"00000000:00:06.0\"\ninstance = \"i-2\"\n",
            "entry 2: GPU at PCI 00000000:00:06.0 is mapped twice",
        ),
        ("[[gpu]]\npci_bus_id = \"slot 6\"\ninstance = \"i-1\"\n", "entry 1: `pci_bus_id` \"slot 6\" is not a PCI bus id"),
        ("[[gpu]]\nuuid = \"\"\ninstance = \"i-1\"\n", "entry 1: `uuid` is empty"),
    ];
    for (text, want) in cases {
        let err = InstanceResolver::from_toml_str(text).unwrap_err();
        assert!(matches!(err, ResolverError::Entry { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("<string>") && msg.contains(want),
            "want {want:?} in {msg:?}"
        );
    }
}

#[test]
fn unknown_keys_and_bad_toml_are_parse_errors() {
    let err = InstanceResolver::from_toml_str(
        "[[gpu]]\nuuid = \"GPU-1\"\ninstance = \"i\"\nzone = \"a\"\n",
    )
    .unwrap_err();
    assert!(matches!(err, ResolverError::Parse { .. }));
    assert!(err.to_string().contains("zone"), "{err}");
    let err = InstanceResolver::from_toml_str("[[gpus]]\nuuid = \"GPU-1\"\n").unwrap_err();
    assert!(err.to_string().contains("gpus"), "{err}");
    let err = InstanceResolver::from_toml_str("[[gpu]]\nuuid = GPU-1\n").unwrap_err();
    assert!(matches!(err, ResolverError::Parse { .. }), "{err}");
    let err = InstanceResolver::from_toml_str("[[gpu]]\nuuid = \"GPU-1\"\n").unwrap_err();
    assert!(
        err.to_string().contains("instance"),
        "missing instance: {err}"
    );
    // An empty file maps nothing (and is not an error).
    assert!(InstanceResolver::from_toml_str("").unwrap().is_empty());
}

#[test]
fn pairs_map_uuids_case_insensitively_and_later_pairs_win() {
    let r = InstanceResolver::from_pairs(vec![
        (GpuUuid::from("GPU-AA"), InstanceId::from("i-1")),
        (GpuUuid::from("GPU-bb"), InstanceId::from("i-2")),
        (GpuUuid::from("gpu-aa"), InstanceId::from("i-3")),
    ]);
    assert_eq!(r.resolve(&gpu("GPU-aa", "")), Some(InstanceId::from("i-3")));
    assert_eq!(r.resolve(&gpu("GPU-BB", "")), Some(InstanceId::from("i-2")));
    assert_eq!(r.resolve(&gpu("GPU-cc", "")), None);
}

#[test]
fn mig_devices_are_mapped_by_their_own_uuid_only() {
    let r = InstanceResolver::from_toml_str(
        r#"
[[gpu]]
uuid = "MIG-8a1f6c0e-3c2d-5b7a-9e41-2f0c7d9b1a33"
instance = "i-slice"
"#,
    )
    .unwrap();
    let mig = GpuUuid::from("mig-8A1F6C0E-3c2d-5b7a-9e41-2f0c7d9b1a33");
    assert_eq!(r.resolve_uuid(&mig), Some(InstanceId::from("i-slice")));
    assert_eq!(r.resolve_uuid(&GpuUuid::from("MIG-other")), None);
    // PCI pairs (libvirt) go through the same canonical form.
    let p = InstanceResolver::from_pci_pairs(vec![("0000:3b:00.0".into(), "i-vm".into())]).unwrap();
    assert_eq!(
        p.resolve(&gpu("GPU-x", "00000000:3B:00.0")),
        Some(InstanceId::from("i-vm"))
    );
    let bad = InstanceResolver::from_pci_pairs(vec![("3b:00".into(), "i-vm".into())]);
    assert_eq!(bad.unwrap_err(), "3b:00");
}
