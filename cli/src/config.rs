//! The `wattprint` configuration file, composed: each section is validated by its crate's
//! `config.rs` (`[agent]`, `[store]`, `[bus]`, `[gateway]`, `[query_api]`, `[intensity]`),
//! then the data files are loaded and the inventory (`[[instances]]`, or the replay demo's) is
//! placed in its regions, giving [`Settings`]. Cross-section checks and demo defaults live here.

use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;
pub use wattprint_agent::config::{
    AgentSettings, AttributionSettings, InGuestSource, RawAgent, RawAgentTls, RawAttribution,
    RawReplay, SensorKind,
};
use wattprint_agent::replay::ReplayLayout;
pub use wattprint_bus::config::{BusSettings, RawBus};
use wattprint_core::config::InvalidConfig;
use wattprint_core::intensity::SharedJoin;
use wattprint_core::sci::HardwareCatalog;
use wattprint_core::{GpuUuid, HostId, InstanceId, Milliwatts, RegionId, TenantId};
pub use wattprint_ingest::config::{
    EnricherBatching, GatewaySettings, RawEnricher, RawGateway, RawGatewayTls,
};
use wattprint_ingest::gateway::GatewayTlsFiles;
pub use wattprint_intensity::config::{
    IntensityPolling, IntensitySettings, PolledRegion, ProviderKind, RawIntensity, RawPoll,
    RawProviderAccount, RawProviderAccountSettings, RawRegion, RawSite,
};
use wattprint_intensity::configured::{LoadError, LoadedIntensity};
use wattprint_intensity::files::MarginalFormat;
pub use wattprint_query_api::config::{
    ApiAuthSettings, QueryApiSettings, RawQueryApi, RawStatements,
};
use wattprint_query_api::statements::{MarketInstruments, StatementPolicy};
pub use wattprint_store::config::{RawStore, StoreSettings};
use wattprint_store::retention::RestatementRetention;
use wattprint_store::{GpuRecord, InstanceRecord, QuarantineRetention, SampleRetention};

/// The config schema version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Where the shipped data lives when the config does not say (the repository's `data/`).
pub fn default_data_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// The file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Schema version (1).
    pub version: Option<u32>,
    /// Directory for the SQLite database and the dev signing secret.
    pub data_dir: Option<PathBuf>,
    /// Root that relative data paths are resolved against (default: the shipped `data/`).
    pub data_root: Option<PathBuf>,
    /// Store section (default: SQLite under `data_dir`).
    #[serde(default)]
    pub store: RawStore,
    /// Bus section (default: in-process).
    #[serde(default)]
    pub bus: RawBus,
    /// Gateway section.
    #[serde(default)]
    pub gateway: RawGateway,
    /// Query API section.
    #[serde(default)]
    pub query_api: RawQueryApi,
    /// Monthly statements section.
    #[serde(default)]
    pub statements: RawStatements,
    /// Agent section.
    #[serde(default)]
    pub agent: RawAgent,
    /// Enricher section (its metrics listener).
    #[serde(default)]
    pub enricher: RawEnricher,
    /// Intensity section.
    #[serde(default)]
    pub intensity: Option<RawIntensity>,
    /// Hardware catalog file (embodied carbon per GPU model).
    pub hardware_catalog: Option<PathBuf>,
    /// Inventory: instances and their GPUs.
    #[serde(default)]
    pub instances: Vec<RawInstance>,
}

/// Where each process serves `/metrics`, `/healthz` and `/readyz` (`None`: not served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListeners {
    /// `gateway.metrics_listen`.
    pub gateway: Option<SocketAddr>,
    /// `enricher.metrics_listen`.
    pub enricher: Option<SocketAddr>,
    /// `agent.metrics_listen`.
    pub agent: Option<SocketAddr>,
}

impl MetricsListeners {
    fn validate(raw: &RawConfig) -> Result<Self, SettingsError> {
        let listen = |key: &str, value: &Option<String>, port: u16| {
            let default = SocketAddr::from(([127, 0, 0, 1], port));
            wattprint_runtime::metrics::parse_listen(key, value.as_deref(), default)
                .map_err(SettingsError::Invalid)
        };
        Ok(Self {
            gateway: listen("gateway.metrics_listen", &raw.gateway.metrics_listen, 9464)?,
            enricher: listen(
                "enricher.metrics_listen",
                &raw.enricher.metrics_listen,
                9465,
            )?,
            agent: listen("agent.metrics_listen", &raw.agent.metrics_listen, 9466)?,
        })
    }
}

/// `[[instances]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    /// Owner.
    pub tenant: String,
    /// Instance id.
    pub id: String,
    /// Datacenter zip code (resolved to a region through its utility).
    pub zip_code: Option<String>,
    /// Cloud region as `provider:region` (e.g. `aws:us-west-1`, `azure:westus2`), placed at a
    /// zip code by the shipped table or an `[[intensity.sites]]` override.
    pub cloud_region: Option<String>,
    /// Region, when given directly.
    pub region: Option<String>,
    /// The GPU host (hypervisor) whose agent reports this instance's GPUs: the gateway
    /// accepts their samples from that host only. Default: `agent.host_id`, the one host of
    /// the embedded deployment; a distributed deployment names it per instance.
    pub host: Option<String>,
    /// GPUs.
    pub gpus: Vec<RawGpu>,
}

/// A GPU of an instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpu {
    /// NVML uuid.
    pub uuid: String,
    /// Model name.
    pub model: String,
    /// Power limit, watts.
    pub power_limit_w: u32,
}

/// Configuration errors, each naming the offending key.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// A value is invalid.
    #[error("config: {0}")]
    Invalid(String),
    /// A data file failed to load.
    #[error("config: {0}")]
    Data(String),
}

fn invalid(msg: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(msg.into())
}

impl From<InvalidConfig> for SettingsError {
    fn from(e: InvalidConfig) -> Self {
        SettingsError::Invalid(e.0)
    }
}

impl From<LoadError> for SettingsError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Invalid(e) => e.into(),
            LoadError::Data(msg) => SettingsError::Data(msg),
        }
    }
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Store.
    pub store: StoreSettings,
    /// How long and how much the quarantine keeps (`store.quarantine_*`).
    pub quarantine: QuarantineRetention,
    /// How long raw samples are kept (`store.sample_retention_days`).
    pub samples: SampleRetention,
    /// How long restatement records are kept (`store.restatement_retention_days`).
    pub restatements: RestatementRetention,
    /// Bus.
    pub bus: BusSettings,
    /// Gateway listen address.
    pub gateway_listen: SocketAddr,
    /// Gateway TLS files (`None`: plaintext).
    pub gateway_tls: Option<GatewayTlsFiles>,
    /// Gateway host registry file (`None`: any host may stream).
    pub gateway_hosts_file: Option<PathBuf>,
    /// How the Kafka enricher batches its store writes (`[enricher]`).
    pub enricher_batching: EnricherBatching,
    /// Query API listen address.
    pub api_listen: SocketAddr,
    /// Token issuer.
    pub issuer: String,
    /// Token audience.
    pub audience: String,
    /// HS256 secret file.
    pub secret_file: PathBuf,
    /// Query API token verification (JWKS or dev mode) and rate limit.
    pub api_auth: ApiAuthSettings,
    /// When monthly statements are issued.
    pub statements: StatementPolicy,
    /// Contractual instruments for market-based emissions (no regions: not configured).
    pub market: MarketInstruments,
    /// Query API request limits (what-if budget included).
    pub api_limits: wattprint_query_api::ApiLimits,
    /// Origins allowed to embed the portal in a frame.
    pub portal_frame_ancestors: Vec<String>,
    /// The portal's sign-in through the identity provider.
    pub portal_oidc: Option<wattprint_query_api::portal::PortalOidc>,
    /// Agent.
    pub agent: AgentSettings,
    /// Intensity regions and the zip table, loaded.
    pub intensity: SharedJoin,
    /// Which providers to poll for which regions, and how often.
    pub polling: IntensityPolling,
    /// PUE per region.
    pub pue: HashMap<RegionId, f64>,
    /// Hardware catalog.
    pub catalog: HardwareCatalog,
    /// Inventory (configured instances, or the replay demo's).
    pub inventory: Vec<InstanceRecord>,
    /// Metrics listeners of the distributed processes (`up` serves on the API's listener).
    pub metrics: MetricsListeners,
}

/// The model name replayed GPUs report (the trace's GPU).
pub const REPLAY_MODEL: &str = "NVIDIA H100 80GB HBM3";
/// The power limit replayed GPUs report (the trace's GPU), mW.
pub const REPLAY_POWER_LIMIT: Milliwatts = Milliwatts(700_000);
/// Demo tenants and the real zip codes their instances sit at: San Jose (PG&E) and Irvine (SCE).
pub const DEMO_TENANTS: [(&str, &str); 2] = [("acme", "95112"), ("globex", "92618")];

/// The default config: shipped data, two demo tenants on replayed H100s in California.
pub fn default_raw_config() -> RawConfig {
    let region = |id: &str, file: &str, format, utilities: &[&str]| RawRegion {
        id: id.into(),
        marginal_file: Some(PathBuf::from(file)),
        format: Some(format),
        replay: true,
        egrid_subregion: Some("CAMX".into()),
        pue: Some(1.2),
        utilities: utilities.iter().map(|u| (*u).to_owned()).collect(),
        watttime_region: None,
        electricitymaps_zone: None,
    };
    RawConfig {
        intensity: Some(RawIntensity {
            zip_table: "locations/epa_egrid2023_zip_to_subregion.csv".into(),
            egrid_rates: "locations/epa_egrid2023_subregion_output_rates.csv".into(),
            max_staleness_minutes: None,
            sites: vec![],
            watttime: None,
            electricitymaps: None,
            poll: None,
            regions: vec![
                region(
                    "SGIP_CAISO_PGE",
                    "moer/SGIP_CAISO_PGE_2020-08.csv.gz",
                    MarginalFormat::Sgip,
                    &["Pacific Gas & Electric Co."],
                ),
                region(
                    "SGIP_CAISO_SCE",
                    "moer/SGIP_CAISO_SCE_2020-08.csv.gz",
                    MarginalFormat::Sgip,
                    &["Southern California Edison Co"],
                ),
                region(
                    "CAISO_NORTH",
                    "moer/watttime2023_caiso-north_actual.csv",
                    MarginalFormat::WattTimeCsv,
                    &[],
                ),
            ],
        }),
        hardware_catalog: Some("hardware-catalog.toml".into()),
        ..RawConfig::default()
    }
}

impl RawConfig {
    /// Fills unset sections from [`default_raw_config`].
    pub fn with_defaults(mut self) -> Self {
        let d = default_raw_config();
        if self.intensity.is_none() {
            self.intensity = d.intensity;
        }
        if self.hardware_catalog.is_none() {
            self.hardware_catalog = d.hardware_catalog;
        }
        self
    }

    /// Validates into [`Settings`]: every section first, then the data files they name are
    /// loaded (each error naming its file) and the inventory is placed in their regions.
    pub fn validate(self) -> Result<Settings, SettingsError> {
        let raw = self.with_defaults();
        if let Some(v) = raw.version {
            if v != CONFIG_VERSION {
                return Err(invalid(format!(
                    "version = {v} is not supported (this build reads {CONFIG_VERSION})"
                )));
            }
        }
        let data_root = raw.data_root.clone().unwrap_or_else(default_data_root);
        let data = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                data_root.join(p)
            }
        };
        let data_dir = raw
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".wattprint"));
        let store = raw.store.validate(&data_dir)?;
        let quarantine = raw.store.quarantine_retention()?;
        let samples = raw.store.sample_retention()?;
        let restatements = raw.store.restatement_retention()?;
        let bus = raw.bus.validate()?;
        let gateway = raw.gateway.validate()?;
        let enricher_batching = raw.enricher.batching()?;
        let intensity = raw
            .intensity
            .as_ref()
            .ok_or_else(|| invalid("[intensity] missing"))?
            .validate(&data)?;
        let agent = raw.agent.validate(&data, gateway.listen, &data_dir)?;
        let api = raw.query_api.validate(&data_dir)?;
        let statements = raw.statements.validate()?;
        let market = raw.statements.market(&data)?;
        let metrics = MetricsListeners::validate(&raw)?;

        // Every section is valid: load the files they name.
        let loaded = intensity.load()?;
        let catalog = load_catalog(raw.hardware_catalog.as_deref(), &data)?;
        let cloud_sites = loaded.cloud_sites(
            &intensity.zip_table,
            raw.instances.iter().filter_map(|i| i.cloud_region.as_ref()),
        )?;
        let raw_instances = if raw.instances.is_empty() {
            match &agent.sensor {
                SensorKind::Replay {
                    gpus,
                    instances,
                    seed,
                    layout,
                    ..
                } => demo_instances_with(*gpus, *instances, *seed, layout),
                SensorKind::Nvml => vec![],
            }
        } else {
            raw.instances.clone()
        };
        let inventory = inventory_records(&raw_instances, &agent.config.host_id, &|inst| {
            place(inst, &loaded, &cloud_sites)
        })?;
        let LoadedIntensity { join, pue, .. } = loaded;
        Ok(Settings {
            data_dir,
            store,
            quarantine,
            samples,
            restatements,
            bus,
            gateway_listen: gateway.listen,
            gateway_tls: gateway.tls,
            gateway_hosts_file: gateway.hosts_file,
            enricher_batching,
            api_listen: api.listen,
            issuer: api.issuer,
            audience: api.audience,
            secret_file: api.secret_file,
            api_auth: api.auth,
            statements,
            market,
            api_limits: api.limits,
            portal_frame_ancestors: api.portal_frame_ancestors,
            portal_oidc: api.portal_oidc,
            agent,
            intensity: SharedJoin::new(join),
            polling: intensity.polling,
            pue,
            catalog,
            inventory,
            metrics,
        })
    }
}

/// Region and zip code of an instance: `region` as given, else through its zip code (given,
/// or its cloud region's, from `cloud_sites`) and the zip's utility.
fn place(
    inst: &RawInstance,
    loaded: &LoadedIntensity,
    cloud_sites: &HashMap<String, String>,
) -> Result<(RegionId, Option<String>), SettingsError> {
    let zip = match (&inst.zip_code, &inst.cloud_region) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "instance {}: set zip_code or cloud_region, not both",
                inst.id
            )))
        }
        (Some(zip), None) => Some(zip.clone()),
        (None, Some(cloud)) => cloud_sites.get(cloud).cloned(),
        (None, None) => None,
    };
    match (&inst.region, zip) {
        (Some(r), zip) => {
            let id = RegionId::new(r.clone());
            if !loaded.join.knows(&id) {
                return Err(invalid(format!(
                    "instance {}: region {r} is not configured",
                    inst.id
                )));
            }
            Ok((id, zip))
        }
        (None, Some(zip)) => {
            let loc = loaded.zips.get(&zip).ok_or_else(|| {
                invalid(format!(
                    "instance {}: zip code {zip} is not in the zip table",
                    inst.id
                ))
            })?;
            let region = loaded.utility_regions.get(&loc.utility).cloned().ok_or_else(|| {
                invalid(format!(
                    "instance {}: zip code {zip} (utility {:?}, eGRID {}) has no configured intensity region; set `region` or add the utility to a region",
                    inst.id, loc.utility, loc.subregion
                ))
            })?;
            Ok((region, Some(zip)))
        }
        (None, None) => Err(invalid(format!(
            "instance {}: set zip_code, cloud_region or region",
            inst.id
        ))),
    }
}

/// An instance's region and zip code.
type Placer<'a> = dyn Fn(&RawInstance) -> Result<(RegionId, Option<String>), SettingsError> + 'a;

/// The inventory: every instance checked (ids, host, GPUs listed once, power limits) and
/// placed in its region by `place`; GPUs default to `default_host`, the embedded agent's.
fn inventory_records(
    raw_instances: &[RawInstance],
    default_host: &HostId,
    place: &Placer<'_>,
) -> Result<Vec<InstanceRecord>, SettingsError> {
    let mut inventory = Vec::new();
    let mut seen_gpus = std::collections::HashSet::new();
    for inst in raw_instances {
        if inst.tenant.is_empty() || inst.id.is_empty() {
            return Err(invalid("instances: tenant and id must be non-empty"));
        }
        let host = match &inst.host {
            Some(h) if h.is_empty() || h.len() > wattprint_proto::MAX_ID_LEN => {
                return Err(invalid(format!(
                    "instance {}: host must be 1 to {} bytes",
                    inst.id,
                    wattprint_proto::MAX_ID_LEN
                )))
            }
            Some(h) => HostId::new(h.clone()),
            None => default_host.clone(),
        };
        let mut gpus = Vec::new();
        for g in &inst.gpus {
            if !seen_gpus.insert(g.uuid.clone()) {
                return Err(invalid(format!(
                    "instance {}: GPU {} is listed twice",
                    inst.id, g.uuid
                )));
            }
            if g.power_limit_w == 0 || g.power_limit_w > 5000 {
                return Err(invalid(format!(
                    "instance {}: GPU {} power_limit_w = {} must be 1..=5000",
                    inst.id, g.uuid, g.power_limit_w
                )));
            }
            gpus.push(GpuRecord {
                uuid: GpuUuid::new(g.uuid.clone()),
                model: g.model.clone(),
                power_limit: Milliwatts(g.power_limit_w * 1000),
                host: host.clone(),
            });
        }
        let (region, zip_code) = place(inst)?;
        inventory.push(InstanceRecord {
            tenant: TenantId::new(inst.tenant.clone()),
            instance: InstanceId::new(inst.id.clone()),
            region,
            zip_code,
            gpus,
        });
    }
    Ok(inventory)
}

/// Loads and checks the hardware catalog (default: empty).
fn load_catalog(
    path: Option<&Path>,
    data: &dyn Fn(&Path) -> PathBuf,
) -> Result<HardwareCatalog, SettingsError> {
    Ok(match path {
        Some(p) => {
            let path = data(p);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                SettingsError::Data(format!(
                    "cannot read hardware catalog {}: {e}",
                    path.display()
                ))
            })?;
            let c: HardwareCatalog = toml::from_str(&text).map_err(|e| {
                SettingsError::Data(format!("hardware catalog {}: {e}", path.display()))
            })?;
            c.validate().map_err(|e| {
                SettingsError::Data(format!("hardware catalog {}: {e}", path.display()))
            })?;
            c
        }
        None => HardwareCatalog::default(),
    })
}

/// The demo inventory: `gpus` replayed GPUs dealt round-robin over `instances` instances,
/// which alternate between the two demo tenants.
pub fn demo_instances(gpus: u32, instances: u32, seed: u64) -> Vec<RawInstance> {
    let mut out: Vec<RawInstance> = (0..instances)
        .map(|i| {
            let (tenant, zip) = DEMO_TENANTS[(i % 2) as usize];
            RawInstance {
                tenant: tenant.into(),
                id: format!("{tenant}-gpu-vm-{}", i / 2 + 1),
                zip_code: Some(zip.into()),
                cloud_region: None,
                region: None,
                host: None,
                gpus: vec![],
            }
        })
        .collect();
    for g in 0..gpus {
        out[(g % instances) as usize].gpus.push(RawGpu {
            uuid: wattprint_agent::replay::replay_gpu_uuid(seed, g).0,
            model: REPLAY_MODEL.into(),
            power_limit_w: REPLAY_POWER_LIMIT.0 / 1000,
        });
    }
    out
}

/// [`demo_instances`] for partitioned replay GPUs: MIG devices are dealt round-robin over the
/// instances like GPUs; every vGPU is its own VM, so its own instance (named by the VM uuid),
/// alternating between the demo tenants.
pub fn demo_instances_with(
    gpus: u32,
    instances: u32,
    seed: u64,
    layout: &ReplayLayout,
) -> Vec<RawInstance> {
    let parts = match layout {
        ReplayLayout::Whole => return demo_instances(gpus, instances, seed),
        ReplayLayout::Mig(p) => p.len(),
        ReplayLayout::Vgpu(p) => p.len(),
    };
    let part = |g: u32, k: usize| RawGpu {
        uuid: wattprint_agent::replay::replay_part_uuid(seed, g, k, layout)
            .map(|u| u.0)
            .unwrap_or_default(),
        model: REPLAY_MODEL.into(),
        power_limit_w: REPLAY_POWER_LIMIT.0 / 1000,
    };
    let mut out = demo_instances(0, instances, seed);
    if matches!(layout, ReplayLayout::Vgpu(_)) {
        out.clear();
    }
    let mut n = 0usize;
    for g in 0..gpus {
        for k in 0..parts {
            match layout {
                ReplayLayout::Vgpu(_) => {
                    let (tenant, zip) = DEMO_TENANTS[n % 2];
                    out.push(RawInstance {
                        tenant: tenant.into(),
                        id: wattprint_agent::replay::replay_vm_uuid(seed, g, k),
                        zip_code: Some(zip.into()),
                        cloud_region: None,
                        region: None,
                        host: None,
                        gpus: vec![part(g, k)],
                    });
                }
                _ => out[n % instances as usize].gpus.push(part(g, k)),
            }
            n += 1;
        }
    }
    out
}
