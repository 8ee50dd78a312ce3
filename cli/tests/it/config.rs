//! The configuration surface: the shipped example validates, defaults build the demo, and
//! broken configs fail with a message naming the key.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::Path;
use wattprint_cli::config::{RawConfig, SensorKind};

fn load(text: &str, env: &[(&str, &str)]) -> Result<wattprint_cli::config::Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let env: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let raw: RawConfig = wattprint_runtime::load_config(Some(&path), &env, "WATTPRINT_")
        .map_err(|e| e.to_string())?;
    raw.validate().map_err(|e| e.to_string())
}

#[test]
fn the_shipped_example_config_is_valid_and_matches_the_defaults() {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/wattprint.example.toml"),
    )
    .unwrap();
    let from_example = load(&example, &[]).unwrap();
    let defaults = RawConfig::default().validate().unwrap();
    assert_eq!(from_example.gateway_listen, defaults.gateway_listen);
    assert_eq!(from_example.api_listen, defaults.api_listen);
    assert_eq!(from_example.agent.sensor, defaults.agent.sensor);
    assert_eq!(from_example.inventory, defaults.inventory);
    assert_eq!(from_example.pue, defaults.pue);
    assert_eq!(from_example.store, defaults.store);
    assert_eq!(from_example.bus, defaults.bus);
    assert_eq!(
        from_example.agent.config.spool_dir,
        defaults.agent.config.spool_dir
    );
    assert_eq!(
        (
            from_example.agent.config.energy_interval,
            from_example.agent.config.gauge_interval
        ),
        (
            defaults.agent.config.energy_interval,
            defaults.agent.config.gauge_interval
        )
    );
    assert_eq!(
        defaults.agent.config.gauge_interval,
        Some(std::time::Duration::from_millis(100))
    );
    assert_eq!(
        from_example.agent.config.spool_max_bytes,
        defaults.agent.config.spool_max_bytes
    );
    let mut regions: Vec<_> = from_example
        .intensity
        .snapshot()
        .regions()
        .map(|r| r.0.clone())
        .collect();
    regions.sort();
    assert_eq!(regions, ["CAISO_NORTH", "SGIP_CAISO_PGE", "SGIP_CAISO_SCE"]);
}

#[test]
fn the_default_demo_has_two_tenants_at_real_zip_codes_with_their_utilities_regions() {
    let s = RawConfig::default().validate().unwrap();
    assert!(matches!(
        s.agent.sensor,
        SensorKind::Replay {
            gpus: 4,
            instances: 2,
            ..
        }
    ));
    let placed: Vec<(&str, &str, usize)> = s
        .inventory
        .iter()
        .map(|i| (i.tenant.as_str(), i.region.as_str(), i.gpus.len()))
        .collect();
    assert_eq!(
        placed,
        vec![
            ("acme", "SGIP_CAISO_PGE", 2),
            ("globex", "SGIP_CAISO_SCE", 2)
        ]
    );
}

#[test]
fn environment_overrides_apply_and_bad_values_name_the_key() {
    let s = load(
        "",
        &[
            ("WATTPRINT_QUERY_API__LISTEN", "127.0.0.1:9999"),
            ("WATTPRINT_AGENT__REPLAY__GPUS", "8"),
        ],
    )
    .unwrap();
    assert_eq!(s.api_listen.port(), 9999);
    assert!(matches!(s.agent.sensor, SensorKind::Replay { gpus: 8, .. }));
    let s = load(
        "[store]\nkind = \"clickhouse\"\n[bus]\nkind = \"kafka\"",
        &[
            ("WATTPRINT_BUS__BROKERS", "k1:9092,k2:9092"),
            ("WATTPRINT_BUS__TOPIC_PREFIX", "staging."),
            ("WATTPRINT_STORE__DATABASE", "metering"),
        ],
    )
    .unwrap();
    assert_eq!(
        s.store,
        wattprint_cli::config::StoreSettings::ClickHouse(
            wattprint_store::clickhouse::ClickHouseSettings::new(
                "http://127.0.0.1:8123",
                "metering"
            )
        )
    );
    let wattprint_cli::config::BusSettings::Kafka {
        config, partitions, ..
    } = &s.bus
    else {
        panic!("kafka bus expected: {:?}", s.bus);
    };
    assert_eq!(config.brokers, "k1:9092,k2:9092");
    assert_eq!(config.samples_topic, "staging.wattprint.samples.v1");
    assert_eq!(config.dead_letter_topic, "staging.wattprint.dead-letter.v2");
    assert_eq!(*partitions, 12);

    let cases: &[(&str, &str)] = &[
        ("version = 2", "version = 2 is not supported"),
        ("[agent]\nsensor = \"magic\"", "agent.sensor = \"magic\""),
        ("[agent]\nsensor = \"nvml\"", "agent.mapping_file is required"),
        ("[agent]\nenergy_interval_ms = 5", "agent.energy_interval_ms = 5"),
        ("[agent]\ngauge_interval_ms = 1000", "less than agent.energy_interval_ms (1000)"),
        ("[agent]\ngauge_interval_ms = 5", "agent.gauge_interval_ms = 5 must be at least 10"),
        ("[agent.replay]\ngpus = 2\ninstances = 3", "agent.replay.instances = 3"),
        ("[gateway]\nlisten = \"nowhere\"", "invalid"),
        ("[store]\nkind = \"postgres\"", "store.kind = \"postgres\""),
        ("[store]\nkind = \"clickhouse\"\nurl = \"127.0.0.1:8123\"", "store.url = \"127.0.0.1:8123\" must be an http"),
        ("[store]\ndatabase = \"x\"", "apply to store.kind = \"clickhouse\" only"),
        ("[bus]\nkind = \"rabbit\"", "bus.kind = \"rabbit\""),
        ("[bus]\nbrokers = \"k:9092\"", "apply to bus.kind = \"kafka\" only"),
        ("[bus]\nkind = \"kafka\"\nbrokers = \" \"", "brokers is empty"),
        ("[bus]\nkind = \"kafka\"\npartitions = 0", "bus.partitions = 0"),
        ("[agent]\nspool_max_mib = 0", "agent.spool_max_mib = 0"),
        ("[agent.replay]\nloops = 0", "agent.replay.loops must be at least 1"),
        ("[agent.replay]\nspeed = 0", "agent.replay.speed must be at least 1"),
        ("[agent.replay]\nspeed = 20\nunpaced = true", "exclude each other"),
        ("[agent.replay]\nunpaced = true\nloops = 1", "agent.replay.unpaced or speed > 1 needs start_at_ms and loops"),
        ("[bus]\ngroup_instance_id = \"e-1\"", "apply to bus.kind = \"kafka\" only"),
        ("[gatway]\nlisten = \"127.0.0.1:1\"", "unknown field `gatway`"),
        (
            "[[instances]]\ntenant = \"t\"\nid = \"i\"\nzip_code = \"10001\"\ngpus = []",
            "zip code 10001 (utility \"Consolidated Edison Co-NY Inc\", eGRID NYCW) has no configured intensity region",
        ),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\nzip_code = \"00000\"\ngpus = []", "zip code 00000 is not in the zip table"),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\nregion = \"MARS\"\ngpus = []", "region MARS is not configured"),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\ncloud_region = \"aws:eu-west-1\"\ngpus = []", "cloud_region aws:eu-west-1"),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\ncloud_region = \"aws:us-nowhere-9\"\ngpus = []", "us-nowhere-9"),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\ncloud_region = \"ibm:us-south\"\ngpus = []", "cloud_region \"ibm:us-south\""),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\ncloud_region = \"us-west-1\"\ngpus = []", "must be provider:region"),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\ncloud_region = \"aws:us-west-1\"\nzip_code = \"95112\"\ngpus = []", "not both"),
        ("[[instances]]\ntenant = \"t\"\nid = \"i\"\ncloud_region = \"gcp:us-west1\"\ngpus = []", "zip code 97058 (utility \"Northern Wasco County PUD\", eGRID NWPP) has no configured intensity region"),
        (
            "[[instances]]\ntenant = \"t\"\nid = \"i\"\nregion = \"CAISO_NORTH\"\ngpus = [{uuid = \"G\", model = \"m\", power_limit_w = 0}]",
            "power_limit_w = 0",
        ),
    ];
    for (text, needle) in cases {
        let err = load(text, &[]).unwrap_err();
        assert!(
            err.contains(needle),
            "config {text:?}: error {err:?} lacks {needle:?}"
        );
    }
}

#[test]
fn cloud_regions_are_placed_at_zip_codes_and_operators_can_override_them() {
    let instance = "[[instances]]\ntenant = \"acme\"\nid = \"i-1\"\n\
                    cloud_region = \"aws:us-west-1\"\ngpus = []\n";
    // AWS us-west-1 is San Jose (95112, PG&E): the SGIP PG&E region of the default config.
    let s = load(instance, &[]).unwrap();
    let placed = |s: &wattprint_cli::config::Settings| {
        let i = &s.inventory[0];
        (i.region.as_str().to_owned(), i.zip_code.clone())
    };
    assert_eq!(
        placed(&s),
        ("SGIP_CAISO_PGE".to_owned(), Some("95112".to_owned()))
    );
    // An operator who knows the site is in SCE territory (Irvine, 92618) says so.
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/wattprint.example.toml"),
    )
    .unwrap();
    let site = |zip: &str| {
        format!("{example}\n{instance}[[intensity.sites]]\ncloud_region = \"aws:us-west-1\"\nzip_code = \"{zip}\"\n")
    };
    let s = load(&site("92618"), &[]).unwrap();
    assert_eq!(
        placed(&s),
        ("SGIP_CAISO_SCE".to_owned(), Some("92618".to_owned()))
    );
    let err = load(&site("00000"), &[]).unwrap_err();
    assert!(
        err.contains("zip code 00000 is not in the zip table"),
        "{err}"
    );
}

#[test]
fn quarantine_bounds_default_parse_and_bad_values_name_the_key() {
    let s = load("", &[]).unwrap();
    assert_eq!((s.quarantine.days, s.quarantine.max_per_host), (30, None));
    let s = load(
        "[store]\nquarantine_retention_days = 7\nquarantine_max_per_host = 5000",
        &[],
    )
    .unwrap();
    assert_eq!(
        (s.quarantine.days, s.quarantine.max_per_host),
        (7, Some(5000))
    );
    let s = load("", &[("WATTPRINT_STORE__QUARANTINE_RETENTION_DAYS", "90")]).unwrap();
    assert_eq!(s.quarantine.days, 90);
    for (text, key) in [
        (
            "quarantine_retention_days = 0",
            "store.quarantine_retention_days = 0",
        ),
        (
            "quarantine_retention_days = -3",
            "store.quarantine_retention_days = -3",
        ),
        (
            "quarantine_retention_days = 100000",
            "store.quarantine_retention_days = 100000",
        ),
        (
            "quarantine_max_per_host = 0",
            "store.quarantine_max_per_host = 0",
        ),
    ] {
        let e = load(&format!("[store]\n{text}"), &[]).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
    }
    let e = load("[store]\nquarantine_retention_days = \"a month\"", &[]).unwrap_err();
    assert!(e.contains("quarantine_retention_days"), "{e}");
}

/// The configs the deployment artefacts write (the Kubernetes ConfigMaps, compose, the
/// Terraform template) parse, with every process's metrics listener set where they say.
#[test]
fn the_deployment_configs_parse_with_their_metrics_listeners() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in [
        "deploy/kubernetes/base/wattprint.toml",
        "deploy/kubernetes/overlays/dev/wattprint.toml",
        "deploy/compose/wattprint.toml",
        "terraform/modules/wattprint/templates/wattprint.toml.tftpl",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // Terraform interpolations (`${...}`) become plain values for the parse.
        let text = fill_terraform_variables(&text);
        let raw: RawConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (key, value) in [
            ("gateway", &raw.gateway.metrics_listen),
            ("enricher", &raw.enricher.metrics_listen),
            ("agent", &raw.agent.metrics_listen),
        ] {
            assert_eq!(value.as_deref(), Some("0.0.0.0:9464"), "{file}: {key}");
        }
    }
    // Compose's config validates whole (its data files are the shipped ones).
    let compose = std::fs::read_to_string(root.join("deploy/compose/wattprint.toml")).unwrap();
    let data_root = root.join("data");
    let settings = load(
        &compose,
        &[("WATTPRINT_DATA_ROOT", data_root.to_str().unwrap())],
    )
    .unwrap();
    let all: std::net::SocketAddr = "0.0.0.0:9464".parse().unwrap();
    assert_eq!(settings.metrics.gateway, Some(all));
    assert_eq!(settings.metrics.enricher, Some(all));
    assert_eq!(settings.metrics.agent, Some(all));
}

#[test]
fn metrics_listeners_default_turn_off_when_empty_and_name_the_key() {
    let defaults = load("", &[]).unwrap().metrics;
    assert_eq!(defaults.gateway, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(defaults.enricher, Some("127.0.0.1:9465".parse().unwrap()));
    assert_eq!(defaults.agent, Some("127.0.0.1:9466".parse().unwrap()));
    let off = load("[agent]\nmetrics_listen = \"\"\n", &[])
        .unwrap()
        .metrics;
    assert_eq!(off.agent, None);
    let err = load("[enricher]\nmetrics_listen = \"nope\"\n", &[]).unwrap_err();
    assert!(err.contains("enricher.metrics_listen"), "{err}");
}

/// The Terraform template with its directives (`%{ if }` lines: both branches kept) dropped and
/// its interpolations filled with plain values.
fn fill_terraform_variables(text: &str) -> String {
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("%{"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        out.push_str(match &rest[start..end] {
            "${partitions}" | "${replication}" => "3",
            "${inventory}" => "",
            _ => "x",
        });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
