//! The embedded deployment: gateway + enricher (in-process bus) + query API on SQLite, and
//! replay or NVML agents, wired together in one process.

use crate::config::{SensorKind, Settings};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wattprint_agent::replay::{Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sensor::GpuSensor;
use wattprint_agent::{AgentConfig, AgentReport};
use wattprint_core::{HostId, UnixMillis};
use wattprint_ingest::enricher::EnricherReport;
use wattprint_ingest::{memory_bus, Enricher, Gateway, GatewayLimits, InventoryIndex};
use wattprint_query_api::{ApiLimits, ApiState, AuthConfig};
use wattprint_runtime::Shutdown;
use wattprint_store::{SqliteStore, Store};

/// Reads the HS256 dev secret, creating a random one on first use (so tokens survive restarts).
pub fn load_or_create_secret(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        anyhow::ensure!(
            s.len() >= 32,
            "secret file {} holds fewer than 32 characters",
            path.display()
        );
        return Ok(s);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::write(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// The auth settings for the query API and for minting tokens.
pub fn auth_config(settings: &Settings) -> anyhow::Result<AuthConfig> {
    Ok(AuthConfig {
        hs256_secret: load_or_create_secret(&settings.secret_file)?,
        issuer: settings.issuer.clone(),
        audience: settings.audience.clone(),
        leeway_s: 30,
    })
}

/// Opens the SQLite store under the data directory and loads the configured inventory into it.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<SqliteStore>> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
    let path = settings.data_dir.join("wattprint.db");
    let store = SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    store
        .upsert_inventory(&settings.inventory)
        .await
        .context("loading the inventory")?;
    Ok(Arc::new(store))
}

/// A running backend: gateway, enricher and query API.
pub struct Backend {
    /// Where the gateway listens.
    pub gateway_addr: SocketAddr,
    /// Where the query API listens.
    pub api_addr: SocketAddr,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Auth settings (for minting tokens).
    pub auth: AuthConfig,
    gateway: JoinHandle<Result<(), BoxError>>,
    enricher: JoinHandle<EnricherReport>,
    api: JoinHandle<std::io::Result<()>>,
    stop: Shutdown,
}

/// The gateway task's error (a tonic transport error, boxed).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Backend {
    /// Starts gateway + enricher + query API. Listeners are bound by the caller's settings
    /// (port 0 picks a free port).
    pub async fn start(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<Backend> {
        let auth = auth_config(settings)?;
        let inventory = Arc::new(InventoryIndex::new(&store.inventory().await?));
        let (producer, consumer) = memory_bus(64);
        let stop = Shutdown::new();
        let enricher = Enricher::new(
            store.clone(),
            settings.intensity.clone(),
            inventory.clone(),
            settings.pue.clone(),
        );
        let enricher = tokio::spawn(enricher.run(consumer, stop.wait()));
        let gateway = Gateway::new(Arc::new(producer), inventory, GatewayLimits::default());
        let gw_listener = TcpListener::bind(settings.gateway_listen)
            .await
            .with_context(|| format!("binding the gateway to {}", settings.gateway_listen))?;
        let gateway_addr = gw_listener.local_addr()?;
        let gw_stop = stop.wait();
        let gateway = tokio::spawn(async move {
            wattprint_ingest::gateway::serve(gw_listener, gateway, gw_stop)
                .await
                .map_err(Into::into)
        });
        let api_listener = TcpListener::bind(settings.api_listen)
            .await
            .with_context(|| format!("binding the query API to {}", settings.api_listen))?;
        let api_addr = api_listener.local_addr()?;
        let state = ApiState::new(
            store.clone(),
            auth.clone(),
            settings.catalog.clone(),
            ApiLimits::default(),
        );
        let api = tokio::spawn(wattprint_query_api::serve(api_listener, state, stop.wait()));
        tracing::info!(%gateway_addr, %api_addr, "backend started");
        Ok(Backend {
            gateway_addr,
            api_addr,
            store,
            auth,
            gateway,
            enricher,
            api,
            stop,
        })
    }

    /// Stops accepting, finishes the message in hand, and waits for every task.
    pub async fn shutdown(self) -> anyhow::Result<EnricherReport> {
        self.stop.trigger();
        self.gateway
            .await?
            .map_err(|e| anyhow::anyhow!("gateway: {e}"))?;
        self.api.await?.context("query API")?;
        Ok(self.enricher.await?)
    }
}

/// Builds the agent's sensor and resolver from settings. Replay GPUs start at `now`.
pub fn build_sensor(
    settings: &Settings,
    pacing: Pacing,
    start_at: UnixMillis,
) -> anyhow::Result<(Box<dyn GpuSensor>, InstanceResolver)> {
    match &settings.agent.sensor {
        SensorKind::Replay {
            trace, gpus, seed, ..
        } => {
            let sensor = ReplaySensor::new(ReplayConfig {
                trace_path: trace.clone(),
                gpus: *gpus,
                seed: *seed,
                start_at,
                pacing,
                loops: None,
                model: crate::config::REPLAY_MODEL.into(),
                power_limit: crate::config::REPLAY_POWER_LIMIT,
            })?;
            let pairs = settings
                .inventory
                .iter()
                .flat_map(|i| {
                    i.gpus
                        .iter()
                        .map(move |g| (g.uuid.clone(), i.instance.clone()))
                })
                .collect();
            Ok((Box::new(sensor), InstanceResolver::from_pairs(pairs)))
        }
        SensorKind::Nvml { mapping_file } => {
            let sensor = wattprint_agent::nvml::NvmlSensor::init()?;
            let resolver = InstanceResolver::from_file(mapping_file)?;
            Ok((Box::new(sensor), resolver))
        }
    }
}

/// The agent's runtime settings.
pub fn agent_config(settings: &Settings, gateway_url: String) -> AgentConfig {
    AgentConfig {
        energy_interval: Duration::from_millis(settings.agent.energy_interval_ms),
        spool_dir: settings.agent.spool_dir.clone(),
        spool_max_bytes: settings.agent.spool_max_bytes,
        ..AgentConfig::new(HostId::new(settings.agent.host_id.clone()), gateway_url)
    }
}

/// Runs an agent until `shutdown`.
pub async fn run_agent(
    settings: &Settings,
    gateway_url: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<AgentReport> {
    let (sensor, resolver) =
        build_sensor(settings, Pacing::RealTime, wattprint_ingest::gateway::now())?;
    let config = agent_config(settings, gateway_url);
    Ok(wattprint_agent::run(config, sensor, resolver, shutdown).await?)
}
