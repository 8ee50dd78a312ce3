//! The roles a process runs, assembled from the settings: gateway, enricher and query API on
//! the configured store (SQLite or ClickHouse) and bus (in-process or Kafka), and replay or
//! NVML agents. The embedded deployment (`wattprint up`) runs every role in one process; the
//! distributed one (`wattprint gateway`, `enricher`, `query-api`, `agent`) runs one each.

use crate::config::{AttributionSettings, InGuestSource};
use crate::config::{BusSettings, SensorKind, Settings, StoreSettings};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use wattprint_agent::attribution::{libvirt::LibvirtHost, AttributionMode, CheckReport};
use wattprint_agent::replay::{ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::sensor::GpuSensor;
use wattprint_agent::tls::HostToken;
use wattprint_agent::{AgentConfig, AgentReport};
use wattprint_bus::kafka::{check_durability, create_topics};
use wattprint_bus::{memory_bus, BusProducer, KafkaConsumer, KafkaProducer, Metered};
use wattprint_core::UnixMillis;
use wattprint_ingest::enricher::EnricherReport;
use wattprint_ingest::gateway::{server_tls_config, ServerTlsConfig};
use wattprint_ingest::hosts::HostRegistry;
use wattprint_ingest::{Enricher, Gateway, GatewayLimits, InventoryIndex};
use wattprint_query_api::auth::Jwks;
use wattprint_query_api::{
    ApiState, AuthConfig, RateLimiter, TokenVerifier, UnauthenticatedLimiter,
};
use wattprint_runtime::Shutdown;
use wattprint_store::{ClickHouseStore, SqliteStore, Store, Traced};

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
    // Readable by its owner only: anyone who reads it can mint any tenant's token.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(secret)
}

/// The auth settings for the query API and for minting tokens. With a JWKS configured there is
/// no dev secret (none is read or created): HS256 tokens are neither minted nor accepted.
pub fn auth_config(settings: &Settings) -> anyhow::Result<AuthConfig> {
    let hs256_secret = if settings.api_auth.jwks.is_some() {
        String::new()
    } else {
        load_or_create_secret(&settings.secret_file)?
    };
    Ok(AuthConfig {
        hs256_secret,
        issuer: settings.issuer.clone(),
        audience: settings.audience.clone(),
        leeway_s: settings.api_auth.leeway_s,
        max_token_lifetime_s: settings.api_auth.max_token_lifetime_s,
    })
}

/// The query API's token verifier: the identity provider's JWKS when one is configured (read
/// now, so an unreadable set or a bad key stops the start with the reason), else the HS256
/// dev mode.
pub async fn token_verifier(
    settings: &Settings,
    auth: &AuthConfig,
) -> anyhow::Result<TokenVerifier> {
    match &settings.api_auth.jwks {
        Some(jwks) => {
            let keys = Jwks::load(jwks.clone()).await.with_context(|| {
                format!(
                    "loading the query API's token keys (query_api.jwks_file / jwks_url) from {}",
                    jwks.source
                )
            })?;
            Ok(TokenVerifier::with_jwks(auth, keys))
        }
        None => Ok(TokenVerifier::new(auth)),
    }
}

/// The query API's state over `store`: verifier, rate limit, limits, intensity.
pub async fn api_state(
    settings: &Settings,
    store: Arc<dyn Store>,
    auth: &AuthConfig,
) -> anyhow::Result<ApiState> {
    let mut state = ApiState::new(
        store,
        auth.clone(),
        settings.catalog.clone(),
        settings.api_limits,
    )
    .with_intensity(settings.intensity.clone())
    .with_statement_policy(settings.statements)
    .with_market_instruments(settings.market.clone())
    .with_portal_frame_ancestors(&settings.portal_frame_ancestors)
    .with_portal_oidc(settings.portal_oidc.clone())
    .with_verifier(token_verifier(settings, auth).await?);
    if let Some(limit) = settings.api_auth.rate_limit {
        state = state.with_rate_limiter(
            RateLimiter::new(limit).context("query_api.rate_limit_per_s / rate_limit_burst")?,
        );
    }
    if let Some(limit) = settings.api_auth.unauthenticated_rate_limit {
        state = state.with_unauthenticated_limiter(UnauthenticatedLimiter::new(limit).context(
            "query_api.unauthenticated_rate_limit_per_s / unauthenticated_rate_limit_burst",
        )?);
    }
    Ok(state)
}

/// Opens the configured store (SQLite under the data directory, or ClickHouse), traced (a span
/// per operation), and loads the configured inventory into it.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match &settings.store {
        StoreSettings::Sqlite { path, synchronous } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating data directory {}", dir.display()))?;
            }
            Arc::new(Traced::new(
                SqliteStore::open_with(path, *synchronous)
                    .with_context(|| format!("opening {}", path.display()))?,
            ))
        }
        StoreSettings::ClickHouse(ch) => Arc::new(Traced::new(
            ClickHouseStore::connect_with(ch).await.with_context(|| {
                format!("opening ClickHouse database {} at {}", ch.database, ch.url)
            })?,
        )),
    };
    store
        .upsert_inventory(&settings.inventory)
        .await
        .context("loading the inventory")?;
    Ok(store)
}

/// Which parts a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The gRPC ingest gateway.
    pub gateway: bool,
    /// The enricher (bus → store). With the in-process bus it always runs beside a gateway.
    pub enricher: bool,
    /// The query API.
    pub query_api: bool,
}

impl Roles {
    /// Everything (`wattprint up`).
    pub const ALL: Roles = Roles {
        gateway: true,
        enricher: true,
        query_api: true,
    };
    /// The gateway alone (`wattprint gateway`; with the in-process bus, its enricher too).
    pub const GATEWAY: Roles = Roles {
        gateway: true,
        enricher: false,
        query_api: false,
    };
    /// An enricher alone (`wattprint enricher`).
    pub const ENRICHER: Roles = Roles {
        gateway: false,
        enricher: true,
        query_api: false,
    };
    /// The query API alone (`wattprint query-api`).
    pub const QUERY_API: Roles = Roles {
        gateway: false,
        enricher: false,
        query_api: true,
    };
}

/// A running backend: some of gateway, enricher and query API.
pub struct Backend {
    /// Where the gateway listens, if it runs.
    pub gateway_addr: Option<SocketAddr>,
    /// Where the query API listens, if it runs.
    pub api_addr: Option<SocketAddr>,
    /// Where a gateway or enricher serves `/metrics`, `/healthz` and `/readyz` (the query API
    /// and `up` serve them on `api_addr`).
    pub metrics_addr: Option<SocketAddr>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// Auth settings (for minting tokens).
    pub auth: AuthConfig,
    gateway: Option<JoinHandle<Result<(), BoxError>>>,
    enricher: Option<JoinHandle<EnricherReport>>,
    rollups: Option<JoinHandle<()>>,
    inventory_reload: Option<JoinHandle<()>>,
    statements: Option<JoinHandle<()>>,
    quarantine: Option<JoinHandle<()>>,
    intensity: JoinHandle<()>,
    api: Option<JoinHandle<std::io::Result<()>>>,
    stop: Shutdown,
}

/// How often an enricher brings the store's hourly rollups up to date
/// ([`wattprint_store::rollups::keep_fresh`]).
const ROLLUP_REFRESH_EVERY: Duration = Duration::from_secs(600);

/// How often a gateway or enricher reloads the inventory from the store, so changes made by
/// `wattprint inventory apply` take effect without a restart
/// ([`wattprint_ingest::inventory::keep_current`]).
pub const INVENTORY_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The gateway task's error (a tonic transport error, boxed).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Backend {
    /// Starts gateway + enricher + query API on the configured bus. Listeners are bound by the
    /// settings (port 0 picks a free port).
    pub async fn start(settings: &Settings, store: Arc<dyn Store>) -> anyhow::Result<Backend> {
        Self::start_roles(settings, store, Roles::ALL).await
    }

    /// Starts the parts `roles` names. With the in-process bus a gateway brings its enricher
    /// and an enricher alone is an error (there is nothing to consume).
    pub async fn start_roles(
        settings: &Settings,
        store: Arc<dyn Store>,
        roles: Roles,
    ) -> anyhow::Result<Backend> {
        let auth = auth_config(settings)?;
        let inventory = Arc::new(InventoryIndex::from_history(
            &store.placement_history().await?,
        ));
        let stop = Shutdown::new();
        let enricher = Enricher::new(
            store.clone(),
            settings.intensity.clone(),
            inventory.clone(),
            settings.pue.clone(),
        );
        let (producer, enricher) = start_bus(settings, roles, enricher, &stop).await?;
        let (gateway, gateway_addr) = match producer {
            Some(producer) => {
                let (task, addr) =
                    start_gateway(settings, producer, inventory.clone(), &stop).await?;
                (Some(task), Some(addr))
            }
            None => (None, None),
        };
        let readiness = crate::health::readiness(settings, &store, roles);
        let (api, statements, api_addr) = if roles.query_api {
            let (task, issuer, addr) =
                start_query_api(settings, store.clone(), &auth, &stop, readiness.clone()).await?;
            (Some(task), Some(issuer), Some(addr))
        } else {
            (None, None, None)
        };
        let inventory_reload = (roles.gateway || enricher.is_some()).then(|| {
            tokio::spawn(wattprint_ingest::inventory::keep_current(
                store.clone(),
                inventory.clone(),
                INVENTORY_RELOAD_EVERY,
                stop.wait(),
            ))
        });
        let rollups = enricher.is_some().then(|| {
            tokio::spawn(wattprint_store::rollups::keep_fresh(
                store.clone(),
                ROLLUP_REFRESH_EVERY,
                stop.wait(),
            ))
        });
        // Where refusals are quarantined, the quarantine is kept bounded.
        let quarantine = enricher.is_some().then(|| {
            tokio::spawn(wattprint_store::retention::keep_bounded(
                store.clone(),
                settings.quarantine,
                settings.samples,
                settings.restatements,
                wattprint_store::retention::PRUNE_EVERY,
                stop.wait(),
            ))
        });
        // Where refusals are quarantined, the quarantine's size is a metric.
        if enricher.is_some() {
            drop(tokio::spawn(wattprint_ingest::quarantine::keep_counted(
                store.clone(),
                wattprint_ingest::quarantine::COUNT_EVERY,
                stop.wait(),
            )));
        }
        // Providers are polled where samples are enriched; every process reloads the ledger.
        let intensity = crate::intensity::start_keeping_current(
            settings,
            store.clone(),
            enricher.is_some(),
            stop.wait(),
        )
        .await?;
        // `up` and the query API serve metrics on the API's listener; the others on their own.
        let metrics_listen = match (roles.query_api, roles.gateway) {
            (true, _) => None,
            (false, true) => settings.metrics.gateway,
            (false, false) => settings.metrics.enricher,
        };
        let metrics_addr = crate::health::listen(metrics_listen, readiness, &stop).await?;
        // Intensity coverage where intervals are joined or served.
        if enricher.is_some() || roles.query_api {
            drop(crate::health::keep_coverage(settings, &stop));
        }
        tracing::info!(
            ?gateway_addr,
            ?api_addr,
            ?metrics_addr,
            enricher = enricher.is_some(),
            "backend started"
        );
        Ok(Backend {
            gateway_addr,
            api_addr,
            metrics_addr,
            store,
            auth,
            gateway,
            enricher,
            rollups,
            inventory_reload,
            statements,
            quarantine,
            intensity,
            api,
            stop,
        })
    }

    /// Stops accepting, finishes the batch in hand (committing its offsets), and waits for
    /// every task. Returns the enricher's report when one ran.
    pub async fn shutdown(self) -> anyhow::Result<Option<EnricherReport>> {
        self.stop.trigger();
        if let Some(gateway) = self.gateway {
            gateway
                .await?
                .map_err(|e| anyhow::anyhow!("gateway: {e}"))?;
        }
        if let Some(api) = self.api {
            api.await?.context("query API")?;
        }
        if let Some(rollups) = self.rollups {
            rollups.await?;
        }
        if let Some(reload) = self.inventory_reload {
            reload.await?;
        }
        if let Some(issuer) = self.statements {
            issuer.await?;
        }
        if let Some(quarantine) = self.quarantine {
            quarantine.await?;
        }
        self.intensity.await?;
        Ok(match self.enricher {
            Some(enricher) => Some(enricher.await?),
            None => None,
        })
    }
}

/// The bus side of `roles`: the producer a gateway publishes to (when one runs) and the
/// enricher task consuming it (when one runs here).
async fn start_bus(
    settings: &Settings,
    roles: Roles,
    enricher: Enricher,
    stop: &Shutdown,
) -> anyhow::Result<(
    Option<Arc<dyn BusProducer>>,
    Option<JoinHandle<EnricherReport>>,
)> {
    Ok(match &settings.bus {
        BusSettings::Memory => {
            anyhow::ensure!(
                roles.gateway || !roles.enricher,
                "the in-process bus has no enricher of its own: it runs inside the gateway \
                 (`wattprint gateway` or `wattprint up`); a separate enricher needs bus.kind = \"kafka\""
            );
            if roles.gateway {
                let (producer, consumer) = memory_bus(64);
                let task = tokio::spawn(enricher.run(consumer, stop.wait()));
                let producer = Metered::new(producer, None);
                (Some(Arc::new(producer) as Arc<dyn BusProducer>), Some(task))
            } else {
                (None, None)
            }
        }
        BusSettings::Kafka {
            config,
            partitions,
            replication,
            durability,
        } => {
            if roles.gateway || roles.enricher {
                create_topics(config, *partitions, *replication)
                    .await
                    .with_context(|| format!("creating topics on {}", config.brokers))?;
                check_durability(config, durability)
                    .await
                    .with_context(|| format!("checking the topics on {}", config.brokers))?;
            }
            let producer = if roles.gateway {
                let producer =
                    Metered::new(KafkaProducer::new(config)?, Some(config.max_in_flight));
                Some(Arc::new(producer) as Arc<dyn BusProducer>)
            } else {
                None
            };
            let task = if roles.enricher {
                let consumer = KafkaConsumer::new(config)?;
                let batching = settings.enricher_batching;
                let enricher = enricher.with_batching(batching.max_records, batching.linger);
                Some(tokio::spawn(enricher.run(consumer, stop.wait())))
            } else {
                None
            };
            (producer, task)
        }
    })
}

/// Binds and serves the gateway, publishing to `producer`.
async fn start_gateway(
    settings: &Settings,
    producer: Arc<dyn BusProducer>,
    inventory: Arc<InventoryIndex>,
    stop: &Shutdown,
) -> anyhow::Result<(JoinHandle<Result<(), BoxError>>, SocketAddr)> {
    let gateway = Gateway::new(producer, inventory, GatewayLimits::default());
    let (gateway, tls) = secure_gateway(settings, gateway)?;
    let listener = TcpListener::bind(settings.gateway_listen)
        .await
        .with_context(|| format!("binding the gateway to {}", settings.gateway_listen))?;
    let addr = listener.local_addr()?;
    let gw_stop = stop.wait();
    let task = tokio::spawn(async move {
        wattprint_ingest::gateway::serve_tls(listener, gateway, tls, gw_stop)
            .await
            .map_err(Into::into)
    });
    Ok((task, addr))
}

/// Binds and serves the query API on `store`.
async fn start_query_api(
    settings: &Settings,
    store: Arc<dyn Store>,
    auth: &AuthConfig,
    stop: &Shutdown,
    readiness: wattprint_runtime::metrics::Readiness,
) -> anyhow::Result<(JoinHandle<std::io::Result<()>>, JoinHandle<()>, SocketAddr)> {
    if settings.api_auth.jwks.is_none() && !settings.api_listen.ip().is_loopback() {
        tracing::warn!(
            listen = %settings.api_listen,
            "the query API listens beyond loopback with dev HS256 tokens: anyone who \
             reads the secret file can mint any tenant's token; configure \
             query_api.jwks_url or jwks_file for production"
        );
    }
    let listener = TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("binding the query API to {}", settings.api_listen))?;
    let addr = listener.local_addr()?;
    let state = api_state(settings, store, auth).await?;
    let issuer = tokio::spawn(wattprint_query_api::statements::keep_issuing(
        state.statement_inputs(),
        STATEMENTS_CHECKED_EVERY,
        stop.wait(),
    ));
    let extra = wattprint_runtime::metrics::routes(readiness);
    let task = tokio::spawn(wattprint_query_api::serve_with(
        listener,
        state,
        extra,
        stop.wait(),
    ));
    Ok((task, issuer, addr))
}

/// How often a query API looks for months due to be issued (every replica does; the store
/// keeps the first issue of each month).
const STATEMENTS_CHECKED_EVERY: Duration = Duration::from_secs(300);

/// Builds the agent's sensor from settings. Replay GPUs start at the configured time, or now.
pub fn build_sensor(settings: &Settings) -> anyhow::Result<Box<dyn GpuSensor>> {
    match &settings.agent.sensor {
        SensorKind::Replay {
            trace,
            gpus,
            seed,
            pacing,
            loops,
            start_at,
            layout,
            ..
        } => {
            let sensor = ReplaySensor::new(ReplayConfig {
                trace_path: trace.clone(),
                gpus: *gpus,
                seed: *seed,
                start_at: start_at.unwrap_or_else(UnixMillis::now),
                pacing: *pacing,
                loops: *loops,
                model: crate::config::REPLAY_MODEL.into(),
                power_limit: crate::config::REPLAY_POWER_LIMIT,
            })?
            .with_layout(layout.clone())?;
            Ok(Box::new(sensor))
        }
        SensorKind::Nvml => Ok(Box::new(wattprint_agent::nvml::NvmlSensor::init()?)),
    }
}

/// Builds the agent's attribution from settings: reads the mapping file or the libvirt domain
/// XML, or asks the cloud's metadata service for this VM's instance id.
pub async fn build_attribution(settings: &Settings) -> anyhow::Result<AttributionMode> {
    Ok(match &settings.agent.attribution {
        AttributionSettings::Mapping {
            mapping_file,
            mig_rule,
        } => {
            let (resolver, source) = match mapping_file {
                Some(file) => (
                    InstanceResolver::from_file(file)?,
                    format!("mapping file {}", file.display()),
                ),
                None => {
                    let pairs = settings
                        .inventory
                        .iter()
                        .flat_map(|i| {
                            i.gpus
                                .iter()
                                .map(move |g| (g.uuid.clone(), i.instance.clone()))
                        })
                        .collect();
                    (
                        InstanceResolver::from_pairs(pairs),
                        "the configured inventory".to_owned(),
                    )
                }
            };
            AttributionMode::Mapping {
                resolver: Arc::new(resolver),
                source,
                mig_rule: *mig_rule,
            }
        }
        AttributionSettings::Libvirt { dir } => {
            let dir = dir.clone();
            let host = tokio::task::spawn_blocking(move || LibvirtHost::load_dir(&dir)).await??;
            AttributionMode::Libvirt(Arc::new(host))
        }
        AttributionSettings::Vgpu {
            idle_policy,
            idle_power,
        } => AttributionMode::Vgpu {
            idle_policy: *idle_policy,
            idle_power: *idle_power,
        },
        AttributionSettings::InGuest(InGuestSource::Configured(id)) => AttributionMode::InGuest {
            instance: wattprint_core::InstanceId::new(id.clone()),
            source: "agent.attribution.instance_id".to_owned(),
        },
        AttributionSettings::InGuest(InGuestSource::Metadata {
            provider,
            url,
            timeout,
        }) => AttributionMode::InGuest {
            instance: wattprint_agent::metadata::fetch_instance_id(
                *provider,
                url.as_deref(),
                *timeout,
            )
            .await?,
            source: provider.name().to_owned(),
        },
    })
}

/// `wattprint agent --check`: what the sensor discovers and how each GPU will be attributed.
pub async fn check_agent(settings: &Settings) -> anyhow::Result<CheckReport> {
    let mode = build_attribution(settings).await?;
    let mut sensor = build_sensor(settings)?;
    Ok(wattprint_agent::attribution::check(sensor.as_mut(), &mode))
}

/// The agent's runtime settings, streaming to `gateway_url`.
pub fn agent_config(settings: &Settings, gateway_url: String) -> AgentConfig {
    AgentConfig {
        gateway_url,
        ..settings.agent.config.clone()
    }
}

/// The host token from `agent.host_token_file`, if one is configured.
pub fn host_token(settings: &Settings) -> anyhow::Result<Option<HostToken>> {
    settings
        .agent
        .host_token_file
        .as_deref()
        .map(HostToken::from_file)
        .transpose()
        .context("agent.host_token_file")
}

/// Applies `[gateway.tls]` and `gateway.hosts_file`: loads and checks the files now, so that a
/// bad one stops the start with its name. Plaintext or an open gateway on an address other
/// than loopback is allowed (dev setups) but logged: production uses both.
fn secure_gateway(
    settings: &Settings,
    gateway: Gateway,
) -> anyhow::Result<(Gateway, Option<ServerTlsConfig>)> {
    let exposed = !settings.gateway_listen.ip().is_loopback();
    let tls = match &settings.gateway_tls {
        Some(files) => Some(server_tls_config(files).context("[gateway.tls]")?),
        None => {
            if exposed {
                tracing::warn!(listen = %settings.gateway_listen, "the gateway serves plaintext beyond loopback; production uses [gateway.tls] with client_ca (mTLS)");
            }
            None
        }
    };
    let gateway = match &settings.gateway_hosts_file {
        Some(path) => {
            let hosts = HostRegistry::load(path).context("gateway.hosts_file")?;
            tracing::info!(hosts = hosts.len(), file = %path.display(), "the gateway accepts registered hosts only");
            gateway.with_hosts(Arc::new(hosts))
        }
        None => {
            if exposed {
                tracing::warn!(listen = %settings.gateway_listen, "the gateway accepts any host; production uses gateway.hosts_file");
            }
            gateway
        }
    };
    Ok((gateway, tls))
}

/// Runs an agent until `shutdown`.
pub async fn run_agent(
    settings: &Settings,
    gateway_url: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<AgentReport> {
    let attribution = build_attribution(settings).await?;
    let sensor = build_sensor(settings)?;
    let mut config = agent_config(settings, gateway_url);
    config.host_token = host_token(settings)?;
    Ok(wattprint_agent::run(config, sensor, attribution, shutdown).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_dev_secret_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data").join("dev-secret");
        let secret = load_or_create_secret(&path).expect("created");
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(secret.len(), 64);
        assert_eq!(load_or_create_secret(&path).expect("read"), secret);
    }
}
