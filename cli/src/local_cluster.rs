//! The config of a distributed Wattprint on one machine's servers: gateway, enricher and query
//! API on loopback ports, a ClickHouse database and Kafka topics and consumer group of its own
//! (so that it runs beside others on the same servers), and an inventory of hosts holding their
//! GPUs. `wattprint loadgen` and the end-to-end tests write theirs with it: both start the
//! same deployment.

use std::fmt::Write as _;
use std::path::PathBuf;
use wattprint_core::GpuUuid;

use crate::config::{REPLAY_MODEL, REPLAY_POWER_LIMIT};

/// Where the parts listen and what they use.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    /// Data directory (the dev signing secret).
    pub data_dir: PathBuf,
    /// ClickHouse HTTP URL.
    pub clickhouse_url: String,
    /// The ClickHouse database of this deployment.
    pub database: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The consumer group, and the topics' prefix (`{namespace}.`).
    pub namespace: String,
    /// Partitions of the topics.
    pub partitions: u32,
    /// Gateway gRPC port.
    pub gateway: u16,
    /// Gateway metrics port.
    pub gateway_metrics: u16,
    /// Enricher metrics port.
    pub enricher_metrics: u16,
    /// Query API port.
    pub api: u16,
}

/// An instance of the inventory: its tenant, zip code, host and GPUs (H100s).
#[derive(Debug, Clone)]
pub struct LocalInstance {
    /// Owner.
    pub tenant: String,
    /// Instance id.
    pub id: String,
    /// Zip code (PG&E 95112 or SCE 92618 in the shipped tables).
    pub zip: String,
    /// The host that holds its GPUs.
    pub host: String,
    /// Its GPUs.
    pub gpus: Vec<GpuUuid>,
}

impl LocalCluster {
    /// The topics' prefix.
    pub fn topic_prefix(&self) -> String {
        format!("{}.", self.namespace)
    }

    /// The TOML config of the deployment with `instances` as its inventory.
    pub fn toml(&self, instances: &[LocalInstance]) -> String {
        let mut toml = format!(
            r#"data_dir = "{data}"

[store]
kind = "clickhouse"
url = "{clickhouse}"
database = "{database}"

[bus]
kind = "kafka"
brokers = "{brokers}"
topic_prefix = "{prefix}"
group_id = "{group}"
partitions = {partitions}

[gateway]
listen = "127.0.0.1:{gateway}"
metrics_listen = "127.0.0.1:{gateway_metrics}"

[enricher]
metrics_listen = "127.0.0.1:{enricher_metrics}"

[query_api]
listen = "127.0.0.1:{api}"

[agent]
gateway_url = "http://127.0.0.1:{gateway}"
metrics_listen = "127.0.0.1:0"

[agent.replay]
instances = 1
"#,
            data = self.data_dir.display(),
            clickhouse = self.clickhouse_url,
            database = self.database,
            brokers = self.brokers,
            prefix = self.topic_prefix(),
            group = self.namespace,
            partitions = self.partitions,
            gateway = self.gateway,
            gateway_metrics = self.gateway_metrics,
            enricher_metrics = self.enricher_metrics,
            api = self.api,
        );
        for inst in instances {
            let _ = write!(
                toml,
                "\n[[instances]]\ntenant = \"{}\"\nid = \"{}\"\nzip_code = \"{}\"\nhost = \"{}\"\n",
                inst.tenant, inst.id, inst.zip, inst.host
            );
            for gpu in &inst.gpus {
                let _ = write!(
                    toml,
                    "[[instances.gpus]]\nuuid = \"{}\"\nmodel = \"{REPLAY_MODEL}\"\npower_limit_w = {}\n",
                    gpu.0,
                    REPLAY_POWER_LIMIT.0 / 1000
                );
            }
        }
        toml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_reads_back_with_its_namespace_and_inventory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = LocalCluster {
            data_dir: dir.path().join("data"),
            clickhouse_url: "http://127.0.0.1:18123".into(),
            database: "wp_x".into(),
            brokers: "127.0.0.1:19092".into(),
            namespace: "lg-1".into(),
            partitions: 4,
            gateway: 1001,
            gateway_metrics: 1002,
            enricher_metrics: 1003,
            api: 1004,
        };
        let gpus = vec![wattprint_agent::replay::replay_gpu_uuid(1, 0)];
        let inst = LocalInstance {
            tenant: "t".into(),
            id: "i".into(),
            zip: "95112".into(),
            host: "h".into(),
            gpus: gpus.clone(),
        };
        let path = dir.path().join("wattprint.toml");
        std::fs::write(&path, cluster.toml(&[inst])).expect("write");
        let raw: crate::config::RawConfig = wattprint_runtime::load_config(
            Some(&path),
            &std::collections::BTreeMap::new(),
            "WATTPRINT_",
        )
        .expect("parses");
        let settings = raw.validate().expect("valid");
        assert_eq!(settings.inventory.len(), 1);
        assert_eq!(settings.inventory[0].gpus[0].uuid, gpus[0]);
        assert_eq!(settings.gateway_listen.port(), 1001);
    }
}
