//! The distributed deployment as separate processes, for one test: `wattprint gateway`,
//! `wattprint enricher` and `wattprint query-api` on Kafka + ClickHouse, and replay agents, all
//! from one config file with a database, topics and consumer group of the test's own.

use crate::api::ApiClient;
use crate::process::{free_port, Node};
use std::path::PathBuf;
use std::time::Duration;
use wattprint_agent::replay::replay_gpu_uuid;
use wattprint_cli::config::RawConfig;
use wattprint_cli::local_cluster::{LocalCluster, LocalInstance};

/// How long a process may take to print `ready`.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// An instance of the test inventory: its GPUs are replay GPUs `(seed, 0..gpus)`.
#[derive(Debug, Clone)]
pub struct TestInstance {
    /// Owner.
    pub tenant: &'static str,
    /// Instance id.
    pub id: &'static str,
    /// Zip code (PG&E 95112 or SCE 92618 in the shipped tables).
    pub zip: &'static str,
    /// Replay seed of the agent that plays its GPUs.
    pub seed: u64,
    /// GPUs, `replay_gpu_uuid(seed, 0..gpus)`.
    pub gpus: u32,
}

/// A distributed Wattprint for one test.
pub struct Cluster {
    /// Logs, data directory, config.
    pub dir: tempfile::TempDir,
    config: PathBuf,
    /// The gateway's fixed port (a restarted gateway comes back on it).
    pub gateway_port: u16,
    /// The query API's port.
    pub api_port: u16,
    /// The gateway's and the enricher's metrics listener ports (agents: port 0, each its own).
    pub metrics_ports: (u16, u16),
    /// The ClickHouse database of this test.
    pub database: String,
    /// Running gateway, if started.
    pub gateway: Option<Node>,
    /// Running enricher, if started.
    pub enricher: Option<Node>,
    /// Running query API, if started.
    pub api: Option<Node>,
    instances: Vec<TestInstance>,
}

impl Cluster {
    /// Writes the config for `instances` on the given servers. `name` keeps databases, topics
    /// and groups apart between tests (a random suffix keeps reruns apart).
    pub fn new(
        name: &str,
        clickhouse_url: &str,
        kafka_brokers: &str,
        instances: &[TestInstance],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let unique = format!("{name}_{:08x}", rand::random::<u32>());
        let database = format!("wpe2e_{unique}");
        let (gateway_port, api_port) = (free_port(), free_port());
        let metrics_ports = (free_port(), free_port());
        let local = LocalCluster {
            data_dir: dir.path().join("data"),
            clickhouse_url: clickhouse_url.to_owned(),
            database: database.clone(),
            brokers: kafka_brokers.to_owned(),
            namespace: format!("e2e-{unique}"),
            partitions: 4,
            gateway: gateway_port,
            gateway_metrics: metrics_ports.0,
            enricher_metrics: metrics_ports.1,
            api: api_port,
        };
        let inventory: Vec<LocalInstance> = instances
            .iter()
            .map(|inst| LocalInstance {
                tenant: inst.tenant.to_owned(),
                id: inst.id.to_owned(),
                zip: inst.zip.to_owned(),
                host: format!("host-{}", inst.id),
                gpus: (0..inst.gpus)
                    .map(|i| replay_gpu_uuid(inst.seed, i))
                    .collect(),
            })
            .collect();
        let toml = local.toml(&inventory);
        let config = dir.path().join("wattprint.toml");
        std::fs::write(&config, toml).expect("config");
        let cluster = Cluster {
            dir,
            config,
            gateway_port,
            api_port,
            metrics_ports,
            database,
            gateway: None,
            enricher: None,
            api: None,
            instances: instances.to_vec(),
        };
        // Create the signing secret before any process starts, so none races to create it.
        wattprint_cli::roles::load_or_create_secret(&cluster.settings().secret_file)
            .expect("secret");
        cluster
    }

    /// The config as the processes read it.
    pub fn settings(&self) -> wattprint_cli::config::Settings {
        let env = Default::default();
        let raw: RawConfig =
            wattprint_runtime::load_config(Some(&self.config), &env, "WATTPRINT_").expect("config");
        raw.validate().expect("valid config")
    }

    /// A query API client minting tokens with this cluster's secret.
    pub fn api_client(&self) -> ApiClient {
        let auth = wattprint_cli::roles::auth_config(&self.settings()).expect("auth");
        ApiClient::new(format!("http://127.0.0.1:{}", self.api_port), auth)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(
            "WATTPRINT_CONFIG".to_owned(),
            self.config.display().to_string(),
        )]
    }

    /// Starts `wattprint <role>` and waits until it is ready. The enricher is a dynamic member
    /// of its group: tansu 0.6 strands a restarted static member (see `distributed_faults`).
    pub fn start(&self, role: &str) -> Node {
        let env = self.env();
        let mut node = Node::spawn(role, &[role], &env, self.dir.path());
        node.wait_for_line("ready", READY_WITHIN);
        node
    }

    /// Starts gateway, enricher and query API, in that order.
    pub fn start_all(&mut self) {
        self.gateway = Some(self.start("gateway"));
        self.enricher = Some(self.start("enricher"));
        self.api = Some(self.start("query-api"));
    }

    /// Starts the replay agent of `instance`: its GPUs play the trace `loops` times from
    /// virtual time `start_at_ms`, as fast as acks allow (`speed` `None`) or `speed` times
    /// faster than real time, reading every 200 ms; the agent exits when all is acked.
    pub fn agent(&self, instance: &str, loops: u32, start_at_ms: i64, speed: Option<u32>) -> Node {
        let inst = self
            .instances
            .iter()
            .find(|i| i.id == instance)
            .expect("known instance");
        let mut env = self.env();
        for (k, v) in [
            ("WATTPRINT_AGENT__HOST_ID", format!("host-{}", inst.id)),
            // Agents run side by side: each its own spool (a spool directory takes one agent).
            (
                "WATTPRINT_AGENT__SPOOL_DIR",
                self.dir
                    .path()
                    .join(format!("spool-{}", inst.id))
                    .display()
                    .to_string(),
            ),
            ("WATTPRINT_AGENT__REPLAY__SEED", inst.seed.to_string()),
            ("WATTPRINT_AGENT__REPLAY__GPUS", inst.gpus.to_string()),
            ("WATTPRINT_AGENT__REPLAY__LOOPS", loops.to_string()),
            match speed {
                None => ("WATTPRINT_AGENT__REPLAY__UNPACED", "true".to_owned()),
                Some(x) => ("WATTPRINT_AGENT__REPLAY__SPEED", x.to_string()),
            },
            ("WATTPRINT_AGENT__ENERGY_INTERVAL_MS", "200".to_owned()),
            (
                "WATTPRINT_AGENT__REPLAY__START_AT_MS",
                start_at_ms.to_string(),
            ),
        ] {
            env.push((k.to_owned(), v));
        }
        Node::spawn(
            &format!("agent-{}", inst.id),
            &["agent"],
            &env,
            self.dir.path(),
        )
    }
}

/// The counts an agent prints when it stops: `agent stopped: sent N acked N rejected N …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentSummary {
    /// Samples sent.
    pub sent: u64,
    /// Samples acked.
    pub acked: u64,
    /// Samples rejected by the gateway.
    pub rejected: u64,
    /// Batches resent after a reconnect.
    pub resent: u64,
}

/// Waits for an agent to finish and returns its summary line's counts.
pub fn agent_summary(agent: &mut Node, within: Duration) -> AgentSummary {
    let status = agent.wait(within);
    assert!(
        status.success(),
        "agent exited with {status}; stderr:\n{}",
        agent.stderr_tail()
    );
    let line = agent.wait_for_line("agent stopped:", Duration::from_secs(5));
    let mut s = AgentSummary::default();
    let words: Vec<&str> = line.split_whitespace().collect();
    for w in words.windows(2) {
        let n = || w[1].trim_end_matches(',').parse::<u64>().expect("count");
        match w[0] {
            "sent" => s.sent = n(),
            "acked" => s.acked = n(),
            "rejected" => s.rejected = n(),
            "resent" => s.resent = n(),
            _ => {}
        }
    }
    s
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the processes' logs for the failure's diagnosis.
            if let Ok(spare) = tempfile::tempdir() {
                let dir = std::mem::replace(&mut self.dir, spare);
                eprintln!("cluster logs kept in {}", dir.keep().display());
            }
        }
    }
}
