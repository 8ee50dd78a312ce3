//! The agent's section of the `wattprint` file (`[agent]`, `[agent.tls]`, `[agent.replay]`,
//! `[agent.attribution]`): the serde types as written, and [`RawAgent::validate`], which
//! applies the defaults and bounds and returns [`AgentSettings`], whose [`AgentConfig`] is what
//! [`crate::run`] runs with. Defaults and bounds of every agent key live here and nowhere else;
//! no file is read (the trace, mapping, TLS and token files are opened when the agent starts).

use crate::attribution::{IdlePolicy, MigRule};
use crate::metadata::MetadataProvider;
use crate::replay::{MigProfile, Pacing, ReplayLayout, VgpuProfile};
use crate::tls::AgentTlsFiles;
use crate::AgentConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wattprint_core::config::{invalid, InvalidConfig};
use wattprint_core::sample::MAX_BATCH_SAMPLES;
use wattprint_core::{HostId, Milliwatts, UnixMillis};

/// `[agent.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentTls {
    /// PEM CA bundle that signed the gateway's certificate (the only roots trusted).
    pub ca: PathBuf,
    /// PEM client certificate chain of this agent.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// Name the gateway's certificate must carry (default: the host of `gateway_url`).
    pub domain: Option<String>,
}

/// `[agent]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Host id reported with every batch (default: the machine's hostname).
    pub host_id: Option<String>,
    /// Gateway URL (default `http://<gateway.listen>`).
    pub gateway_url: Option<String>,
    /// `replay` (default) or `nvml`.
    pub sensor: Option<String>,
    /// How often each GPU's energy counter is read, ms (default 1000).
    pub energy_interval_ms: Option<u64>,
    /// How often each GPU's power, utilisation, temperature and clock are read between energy
    /// reads, ms (default 100; 0: only with the energy). Less than `energy_interval_ms`.
    pub gauge_interval_ms: Option<u64>,
    /// GPU → instance mapping file (required for `nvml`).
    pub mapping_file: Option<PathBuf>,
    /// Whether the agent keeps a durable spool (default true; false holds unacked batches in
    /// memory only, and a restart does not bridge its downtime).
    pub spool: Option<bool>,
    /// Durable spool directory: unacked batches are fsynced there and survive kill -9 and
    /// reboots; the clock state a restart resumes from lives there too. Default:
    /// [`DEFAULT_SPOOL_DIR`] with the `nvml` sensor (a GPU host), `<data_dir>/spool/<host_id>` with
    /// `replay` (the embedded demo and tests).
    pub spool_dir: Option<PathBuf>,
    /// Most disk the spool may use, MiB (default 256, at least 1).
    pub spool_max_mib: Option<u64>,
    /// File holding this host's token, sent to the gateway on every stream (default none).
    pub host_token_file: Option<PathBuf>,
    /// Local metrics listener (`/metrics`, `/healthz`, `/readyz`; default 127.0.0.1:9466,
    /// empty: off). Validated with the other listeners in the CLI's config.
    pub metrics_listen: Option<String>,
    /// TLS to the gateway with a client certificate (default none: plaintext `http://`).
    pub tls: Option<RawAgentTls>,
    /// How GPUs are attributed to instances.
    #[serde(default)]
    pub attribution: RawAttribution,
    /// Replay settings.
    #[serde(default)]
    pub replay: RawReplay,
}

/// `[agent.replay]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    /// Trace file in the `h100-trace` format (default: the shipped H100 trace).
    pub trace: Option<PathBuf>,
    /// Virtual GPUs (default 4, at most 16384).
    pub gpus: Option<u32>,
    /// Instances they are spread over (default 2).
    pub instances: Option<u32>,
    /// Seed for GPU uuids and trace offsets (default 42).
    pub seed: Option<u64>,
    /// Replay as fast as the gateway acks instead of in real time (backfill, load tests;
    /// default false).
    pub unpaced: Option<bool>,
    /// Replay this many times faster than real time (default 1; needs `loops` and
    /// `start_at_ms` above 1).
    pub speed: Option<u32>,
    /// Play the trace this many times, then stop the agent (default: loop forever).
    pub loops: Option<u32>,
    /// Virtual time of the first reading, Unix ms (default: now).
    pub start_at_ms: Option<i64>,
    /// Make every replayed GPU MIG-enabled with these GPU instances (`["3g.40gb", "4g.40gb"]`,
    /// at most 7 slices); the demo inventory deals them over the instances.
    pub mig_profiles: Option<Vec<String>>,
    /// Make every replayed GPU a vGPU host with these vGPUs (`["H100-40C", "H100-20C"]`, at
    /// most 80 GB), each in its own VM; the demo inventory makes each VM an instance. Needs
    /// `agent.attribution.mode = "vgpu"`.
    pub vgpu_profiles: Option<Vec<String>>,
    /// `wattprint up` only: days of demo history replayed into the store on first start
    /// (default 7, at most [`MAX_BACKFILL_DAYS`]; 0: none).
    pub backfill_days: Option<u32>,
}

/// Most days of demo history `wattprint up` backfills: the gateway refuses samples older than
/// 30 days ([`wattprint_core::sample::SampleLimits::max_age_ms`]), and a day of margin keeps
/// a slow backfill's oldest spans inside that limit.
pub const MAX_BACKFILL_DAYS: u32 = 29;

/// `[agent.attribution]`: how the agent attributes GPUs to instances (see
/// `wattprint_agent::attribution`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAttribution {
    /// `mapping` (default), `libvirt`, `vgpu` or `in_guest`.
    pub mode: Option<String>,
    /// mapping: GPU / MIG device → instance file (default `agent.mapping_file`; the replay
    /// sensor falls back to the inventory).
    pub mapping_file: Option<PathBuf>,
    /// mapping: how MIG GPUs are split, `by_slice_size` (default) or `by_utilisation`.
    pub mig_rule: Option<String>,
    /// libvirt: directory of domain XML (default `/etc/libvirt/qemu`).
    pub libvirt_dir: Option<PathBuf>,
    /// vgpu: how the idle floor is shared, `equal` (default) or `by_profile_size`.
    pub vgpu_idle_policy: Option<String>,
    /// vgpu: a GPU's idle power, W (default: the lowest power seen since the agent started).
    pub vgpu_idle_power_w: Option<u32>,
    /// in_guest: this VM's instance id.
    pub instance_id: Option<String>,
    /// in_guest: read the instance id from the `aws`, `gcp` or `azure` metadata service.
    pub metadata: Option<String>,
    /// in_guest: the metadata service's URL (default: the provider's own address).
    pub metadata_url: Option<String>,
    /// in_guest: timeout of each metadata request, ms (default 2000).
    pub metadata_timeout_ms: Option<u64>,
}

/// Validated `[agent.attribution]`.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributionSettings {
    /// Whole GPUs (and MIG devices) by mapping file, or by the inventory when `None`.
    Mapping {
        /// The mapping file.
        mapping_file: Option<PathBuf>,
        /// How MIG GPUs are split.
        mig_rule: MigRule,
    },
    /// Whole GPUs by libvirt domain XML.
    Libvirt {
        /// The directory of domain XML.
        dir: PathBuf,
    },
    /// vGPU host GPUs split between their VMs.
    Vgpu {
        /// How the idle floor is shared.
        idle_policy: IdlePolicy,
        /// Idle power (`None`: the lowest seen).
        idle_power: Option<Milliwatts>,
    },
    /// Every GPU to this VM's instance.
    InGuest(InGuestSource),
}

/// Where an in-guest agent's instance id comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum InGuestSource {
    /// Given in the config.
    Configured(String),
    /// Read from a cloud metadata service at start.
    Metadata {
        /// Which cloud.
        provider: MetadataProvider,
        /// Its URL, when not the cloud's own address.
        url: Option<String>,
        /// Timeout of each request.
        timeout: Duration,
    },
}

/// Which sensor the agent uses.
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// Replay the trace as virtual GPUs.
    Replay {
        /// Trace file.
        trace: PathBuf,
        /// Virtual GPUs.
        gpus: u32,
        /// Instances they are spread over.
        instances: u32,
        /// Seed.
        seed: u64,
        /// How fast the replay runs.
        pacing: Pacing,
        /// Passes over the trace before stopping (`None`: forever).
        loops: Option<u32>,
        /// Virtual start time (`None`: now).
        start_at: Option<UnixMillis>,
        /// MIG or vGPU partitions of every GPU.
        layout: ReplayLayout,
        /// Days of history `wattprint up` backfills on first start (0: none).
        backfill_days: u32,
    },
    /// Real GPUs through NVML.
    Nvml,
}

/// Validated `[agent]`: what the agent runs with ([`AgentSettings::config`]) and what it is
/// built from when it starts (the sensor, the attribution, the host token file).
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The runtime configuration: host id, gateway URL, read intervals, spool, TLS files.
    /// Its `host_token` is `None` until the token file is read at start.
    pub config: AgentConfig,
    /// File holding the host token, if any.
    pub host_token_file: Option<PathBuf>,
    /// How GPUs are attributed.
    pub attribution: AttributionSettings,
    /// Sensor.
    pub sensor: SensorKind,
}

/// The spool directory of an agent reading real GPUs (`agent.sensor = "nvml"`) unless
/// `agent.spool_dir` says otherwise: systemd's `StateDirectory=wattprint`.
pub const DEFAULT_SPOOL_DIR: &str = "/var/lib/wattprint/spool";

/// The bounds of `agent.energy_interval_ms`.
pub const ENERGY_INTERVAL_MS: std::ops::RangeInclusive<u64> = 50..=60_000;
/// `host` as one path component: characters other than ASCII letters, digits, `.`, `_` and
/// `-` become `_`.
fn path_safe(host: &HostId) -> String {
    host.as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The bounds of `agent.spool_max_mib`.
pub const SPOOL_MAX_MIB: std::ops::RangeInclusive<u64> = 1..=1 << 20;

/// The most GPUs one replay agent plays: enough for the embedded mode's 10,000-GPU load
/// figure (docs/scale-model.md).
const MAX_REPLAYED_GPUS: u32 = 16_384;

impl RawAgent {
    /// Validates `[agent]` into the settings the agent runs with. `data` resolves a path
    /// relative to the data root (the default trace); `gateway_listen` is the local gateway,
    /// the default `gateway_url`; `data_dir` holds the replay sensor's default spool.
    pub fn validate(
        &self,
        data: &dyn Fn(&Path) -> PathBuf,
        gateway_listen: SocketAddr,
        data_dir: &Path,
    ) -> Result<AgentSettings, InvalidConfig> {
        let sensor = self.sensor_kind(data)?;
        let energy_interval_ms = self.energy_interval_ms.unwrap_or(1000);
        if !ENERGY_INTERVAL_MS.contains(&energy_interval_ms) {
            return Err(invalid(format!(
                "agent.energy_interval_ms = {energy_interval_ms} must be 50..=60000"
            )));
        }
        let gauge_interval_ms = match self.gauge_interval_ms {
            // The default, unless energy is read at least as often anyway.
            None => (energy_interval_ms > 100).then_some(100),
            Some(0) => None,
            Some(ms) if ms >= 10 && ms < energy_interval_ms => Some(ms),
            Some(ms) => {
                return Err(invalid(format!(
                    "agent.gauge_interval_ms = {ms} must be at least 10 and less than \
                     agent.energy_interval_ms ({energy_interval_ms}), or 0 to read gauges with \
                     the energy only"
                )))
            }
        };
        let spool_max_bytes = match self.spool_max_mib {
            None => crate::spool::DEFAULT_SPOOL_MAX_BYTES,
            Some(mib) if SPOOL_MAX_MIB.contains(&mib) => mib << 20,
            Some(mib) => {
                return Err(invalid(format!(
                    "agent.spool_max_mib = {mib} must be 1..=1048576"
                )))
            }
        };
        let host_id = HostId::new(self.host_id.clone().unwrap_or_else(default_host_id));
        let spool_dir = match (self.spool, &self.spool_dir) {
            (Some(false), Some(_)) => {
                return Err(invalid(
                    "agent.spool = false and agent.spool_dir are both set; remove one",
                ))
            }
            (Some(false), None) => None,
            (_, Some(dir)) => Some(dir.clone()),
            (_, None) => Some(match sensor {
                SensorKind::Nvml => PathBuf::from(DEFAULT_SPOOL_DIR),
                // One per host: replay agents of several hosts may share a data directory.
                SensorKind::Replay { .. } => data_dir.join("spool").join(path_safe(&host_id)),
            }),
        };
        let gateway_url = agent_gateway_url(self, gateway_listen)?;
        let defaults = AgentConfig::new(host_id, gateway_url);
        // A replay agent plays a whole fleet from one host: one batch a second carries every
        // GPU's sample, so a write per batch keeps up (one NVML host has a few GPUs).
        let batch_max_samples = match &sensor {
            SensorKind::Replay { gpus, .. } => usize::try_from(*gpus)
                .unwrap_or(MAX_BATCH_SAMPLES)
                .clamp(defaults.batch_max_samples, MAX_BATCH_SAMPLES),
            SensorKind::Nvml => defaults.batch_max_samples,
        };
        let config = AgentConfig {
            batch_max_samples,
            energy_interval: Duration::from_millis(energy_interval_ms),
            gauge_interval: gauge_interval_ms.map(Duration::from_millis),
            spool_dir,
            spool_max_bytes,
            tls: self.tls.as_ref().map(|t| AgentTlsFiles {
                ca: t.ca.clone(),
                cert: t.cert.clone(),
                key: t.key.clone(),
                domain: t.domain.clone(),
            }),
            ..defaults
        };
        Ok(AgentSettings {
            config,
            host_token_file: self.host_token_file.clone(),
            attribution: attribution_settings(self, &sensor)?,
            sensor,
        })
    }

    /// `agent.sensor` and, for `replay`, `[agent.replay]`.
    fn sensor_kind(&self, data: &dyn Fn(&Path) -> PathBuf) -> Result<SensorKind, InvalidConfig> {
        match self.sensor.as_deref().unwrap_or("replay") {
            "replay" => {
                let r = &self.replay;
                let gpus = r.gpus.unwrap_or(4);
                let instances = r.instances.unwrap_or(2);
                if gpus == 0 || gpus > MAX_REPLAYED_GPUS {
                    return Err(invalid(format!(
                        "agent.replay.gpus = {gpus} must be 1..={MAX_REPLAYED_GPUS}"
                    )));
                }
                if instances == 0 || instances > gpus {
                    return Err(invalid(format!(
                        "agent.replay.instances = {instances} must be 1..=gpus ({gpus})"
                    )));
                }
                Ok(SensorKind::Replay {
                    trace: data(
                        r.trace
                            .as_deref()
                            .unwrap_or(Path::new("h100-trace/h100_power_trace_50ms.csv")),
                    ),
                    gpus,
                    instances,
                    seed: r.seed.unwrap_or(42),
                    pacing: replay_pacing(r)?,
                    loops: match r.loops {
                        Some(0) => return Err(invalid("agent.replay.loops must be at least 1")),
                        l => l,
                    },
                    start_at: r.start_at_ms.map(UnixMillis),
                    layout: replay_layout(r)?,
                    backfill_days: match r.backfill_days.unwrap_or(7) {
                        d if d > MAX_BACKFILL_DAYS => {
                            return Err(invalid(format!(
                                "agent.replay.backfill_days = {d} must be 0..={MAX_BACKFILL_DAYS} \
                                 (the gateway refuses samples older than 30 days)"
                            )))
                        }
                        d => d,
                    },
                })
            }
            "nvml" => Ok(SensorKind::Nvml),
            other => Err(invalid(format!(
                "agent.sensor = {other:?} must be \"replay\" or \"nvml\""
            ))),
        }
    }
}

fn default_host_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn replay_layout(r: &RawReplay) -> Result<ReplayLayout, InvalidConfig> {
    match (&r.mig_profiles, &r.vgpu_profiles) {
        (Some(_), Some(_)) => Err(invalid(
            "agent.replay.mig_profiles and agent.replay.vgpu_profiles exclude each other",
        )),
        (Some(names), None) => {
            let profiles = names
                .iter()
                .map(|n| MigProfile::parse(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("agent.replay.mig_profiles: {e}")))?;
            let slices: u32 = profiles.iter().map(|p| u32::from(p.compute_slices)).sum();
            if profiles.is_empty() || slices > 7 {
                return Err(invalid(format!(
                    "agent.replay.mig_profiles must hold 1 to 7 compute slices in all, has {slices}"
                )));
            }
            Ok(ReplayLayout::Mig(profiles))
        }
        (None, Some(names)) => {
            let profiles = names
                .iter()
                .map(|n| VgpuProfile::parse(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("agent.replay.vgpu_profiles: {e}")))?;
            let fb: u64 = profiles.iter().map(|p| u64::from(p.framebuffer_mib)).sum();
            if profiles.is_empty() || fb > 80 * 1024 {
                return Err(invalid(format!(
                    "agent.replay.vgpu_profiles must hold 1 vGPU and at most 80 GB in all, has {fb} MiB"
                )));
            }
            Ok(ReplayLayout::Vgpu(profiles))
        }
        (None, None) => Ok(ReplayLayout::Whole),
    }
}

/// Validates `[agent.attribution]`: the mode, the keys it takes (a key of another mode is an
/// error), and the sensor it fits.
fn attribution_settings(
    agent: &RawAgent,
    sensor: &SensorKind,
) -> Result<AttributionSettings, InvalidConfig> {
    let a = &agent.attribution;
    let mode = a.mode.as_deref().unwrap_or("mapping");
    let given: [(&str, bool, &[&str]); 8] = [
        ("mapping_file", a.mapping_file.is_some(), &["mapping"]),
        ("mig_rule", a.mig_rule.is_some(), &["mapping"]),
        ("libvirt_dir", a.libvirt_dir.is_some(), &["libvirt"]),
        ("vgpu_idle_policy", a.vgpu_idle_policy.is_some(), &["vgpu"]),
        (
            "vgpu_idle_power_w",
            a.vgpu_idle_power_w.is_some(),
            &["vgpu"],
        ),
        ("instance_id", a.instance_id.is_some(), &["in_guest"]),
        ("metadata", a.metadata.is_some(), &["in_guest"]),
        (
            "metadata_url",
            a.metadata_url.is_some() || a.metadata_timeout_ms.is_some(),
            &["in_guest"],
        ),
    ];
    if !["mapping", "libvirt", "vgpu", "in_guest"].contains(&mode) {
        return Err(invalid(format!(
            "agent.attribution.mode = {mode:?} must be \"mapping\", \"libvirt\", \"vgpu\" or \"in_guest\""
        )));
    }
    for (key, set, modes) in given {
        if set && !modes.contains(&mode) {
            return Err(invalid(format!(
                "agent.attribution.{key} applies to mode = \"{}\" only (mode is \"{mode}\")",
                modes[0]
            )));
        }
    }
    if agent.mapping_file.is_some() && mode != "mapping" {
        return Err(invalid(format!(
            "agent.mapping_file applies to agent.attribution.mode = \"mapping\" only (mode is \"{mode}\")"
        )));
    }
    if let SensorKind::Replay { layout, .. } = sensor {
        let fits = match layout {
            ReplayLayout::Vgpu(_) => mode == "vgpu",
            ReplayLayout::Mig(_) | ReplayLayout::Whole => mode != "vgpu",
        };
        if !fits {
            return Err(invalid(format!(
                "agent.attribution.mode = \"vgpu\" goes with agent.replay.vgpu_profiles, and \
                 vgpu_profiles with mode \"vgpu\" (mode is \"{mode}\")"
            )));
        }
    }
    Ok(match mode {
        "mapping" => mapping_settings(agent, sensor)?,
        "libvirt" => AttributionSettings::Libvirt {
            dir: a
                .libvirt_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("/etc/libvirt/qemu")),
        },
        "vgpu" => vgpu_settings(a)?,
        _ => AttributionSettings::InGuest(in_guest_source(a)?),
    })
}

/// Mode "mapping": the mapping file (required with NVML) and the MIG rule.
fn mapping_settings(
    agent: &RawAgent,
    sensor: &SensorKind,
) -> Result<AttributionSettings, InvalidConfig> {
    let a = &agent.attribution;
    let mapping_file = a
        .mapping_file
        .clone()
        .or_else(|| agent.mapping_file.clone());
    if mapping_file.is_none() && matches!(sensor, SensorKind::Nvml) {
        return Err(invalid(
            "agent.mapping_file is required with agent.sensor = \"nvml\" in attribution \
             mode \"mapping\" (or set agent.attribution.mapping_file)",
        ));
    }
    let mig_rule = match a.mig_rule.as_deref().unwrap_or("by_slice_size") {
        "by_slice_size" => MigRule::BySliceSize,
        "by_utilisation" => MigRule::ByUtilisation,
        other => {
            return Err(invalid(format!(
                "agent.attribution.mig_rule = {other:?} must be \"by_slice_size\" or \"by_utilisation\""
            )))
        }
    };
    Ok(AttributionSettings::Mapping {
        mapping_file,
        mig_rule,
    })
}

/// Mode "vgpu": the idle policy and the optional configured idle power.
fn vgpu_settings(a: &RawAttribution) -> Result<AttributionSettings, InvalidConfig> {
    Ok(AttributionSettings::Vgpu {
    idle_policy: match a.vgpu_idle_policy.as_deref().unwrap_or("equal") {
        "equal" => IdlePolicy::Equal,
        "by_profile_size" => IdlePolicy::ByProfileSize,
        other => {
            return Err(invalid(format!(
                "agent.attribution.vgpu_idle_policy = {other:?} must be \"equal\" or \"by_profile_size\""
            )))
        }
    },
    idle_power: match a.vgpu_idle_power_w {
        None => None,
        Some(w) if (1..=5000).contains(&w) => Some(Milliwatts(w * 1000)),
        Some(w) => {
            return Err(invalid(format!(
                "agent.attribution.vgpu_idle_power_w = {w} must be 1..=5000"
            )))
        }
    },
    })
}

/// Mode "in_guest": the instance id, configured or from a cloud metadata endpoint.
fn in_guest_source(a: &RawAttribution) -> Result<InGuestSource, InvalidConfig> {
    Ok(match (&a.instance_id, &a.metadata) {
    (Some(id), None) => {
        let id = id.trim();
        if id.is_empty() || id.len() > 128 {
            return Err(invalid(
                "agent.attribution.instance_id must be 1 to 128 characters",
            ));
        }
        if a.metadata_url.is_some() || a.metadata_timeout_ms.is_some() {
            return Err(invalid(
                "agent.attribution.metadata_url and metadata_timeout_ms go with metadata, not instance_id",
            ));
        }
        InGuestSource::Configured(id.to_owned())
    }
    (None, Some(provider)) => {
        let provider = MetadataProvider::parse(provider).ok_or_else(|| {
            invalid(format!(
                "agent.attribution.metadata = {provider:?} must be \"aws\", \"gcp\" or \"azure\""
            ))
        })?;
        if let Some(url) = &a.metadata_url {
            if !url.starts_with("http://") {
                return Err(invalid(format!(
                    "agent.attribution.metadata_url = {url:?} must be an http:// URL"
                )));
            }
        }
        let timeout_ms = a.metadata_timeout_ms.unwrap_or(2000);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(invalid(format!(
                "agent.attribution.metadata_timeout_ms = {timeout_ms} must be 1..=60000"
            )));
        }
        InGuestSource::Metadata {
            provider,
            url: a.metadata_url.clone(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }
    (Some(_), Some(_)) => {
        return Err(invalid(
            "agent.attribution: set instance_id or metadata, not both",
        ))
    }
    (None, None) => {
        return Err(invalid(
            "agent.attribution.mode = \"in_guest\" needs instance_id, or metadata = \"aws\", \"gcp\" or \"azure\"",
        ))
    }
})
}

fn replay_pacing(r: &RawReplay) -> Result<Pacing, InvalidConfig> {
    let pacing = match (r.unpaced.unwrap_or(false), r.speed.unwrap_or(1)) {
        (true, 1) => Pacing::AsFastAsPossible,
        (true, _) => {
            return Err(invalid(
                "agent.replay.unpaced and agent.replay.speed exclude each other",
            ))
        }
        (false, 0) => return Err(invalid("agent.replay.speed must be at least 1")),
        (false, 1) => Pacing::RealTime,
        (false, x) => Pacing::Accelerated(x),
    };
    if pacing != Pacing::RealTime && (r.start_at_ms.is_none() || r.loops.is_none()) {
        return Err(invalid(
            "agent.replay.unpaced or speed > 1 needs start_at_ms and loops: a replay faster than \
             real time from now, or without end, runs into the future and the gateway refuses \
             samples from the future",
        ));
    }
    Ok(pacing)
}

/// The agent's gateway URL: as configured, or the local gateway (`https://` with
/// `[agent.tls]`, else `http://`). The scheme must match: `https://` exactly when
/// `[agent.tls]` is set, so that plaintext is always an explicit choice.
fn agent_gateway_url(agent: &RawAgent, listen: SocketAddr) -> Result<String, InvalidConfig> {
    let tls = agent.tls.is_some();
    let url = match &agent.gateway_url {
        Some(url) => url.trim().to_owned(),
        None if tls => format!("https://{listen}"),
        None => format!("http://{listen}"),
    };
    match (tls, url.starts_with("https://"), url.starts_with("http://")) {
        (true, true, _) | (false, _, true) => Ok(url),
        (true, false, _) => Err(invalid(format!(
            "agent.gateway_url = {url:?} must be https:// when [agent.tls] is set"
        ))),
        (false, true, _) => Err(invalid(format!(
            "agent.gateway_url = {url:?} is https:// but [agent.tls] (ca, cert, key) is missing"
        ))),
        (false, false, false) => Err(invalid(format!(
            "agent.gateway_url = {url:?} must be an http:// or https:// URL"
        ))),
    }
}

#[cfg(test)]
mod link_security_tests {
    use super::*;

    fn agent(toml_text: &str) -> RawAgent {
        toml::from_str(toml_text).expect("agent section")
    }

    #[test]
    fn a_replay_batch_carries_every_gpus_second_up_to_the_gateways_limit() {
        let listen: SocketAddr = ([127, 0, 0, 1], 50051).into();
        let data = |p: &Path| Path::new("/data").join(p);
        let batch = |text: &str| {
            agent(text)
                .validate(&data, listen, Path::new("/state"))
                .map(|s| s.config.batch_max_samples)
                .unwrap()
        };
        let default = AgentConfig::new(HostId::from("h"), String::new()).batch_max_samples;
        assert_eq!(batch("[replay]\ngpus = 4"), default);
        assert_eq!(batch("[replay]\ngpus = 5000\ninstances = 10"), 5000);
        assert_eq!(
            batch("[replay]\ngpus = 16384\ninstances = 10"),
            MAX_BATCH_SAMPLES
        );
    }

    #[test]
    fn the_spool_is_on_by_default_where_the_sensor_belongs() {
        let listen: SocketAddr = ([127, 0, 0, 1], 50051).into();
        let data = |p: &Path| Path::new("/data").join(p);
        let dir = |text: &str| {
            agent(text)
                .validate(&data, listen, Path::new("/state"))
                .map(|s| s.config.spool_dir)
        };
        assert_eq!(
            dir("host_id = \"gpu-17\"").unwrap(),
            Some(PathBuf::from("/state/spool/gpu-17"))
        );
        assert_eq!(
            dir("host_id = \"a/b c\"").unwrap(),
            Some(PathBuf::from("/state/spool/a_b_c"))
        );
        assert_eq!(
            dir("spool_dir = \"/x\"").unwrap(),
            Some(PathBuf::from("/x"))
        );
        assert_eq!(dir("spool = false").unwrap(), None);
        let err = dir("spool = false\nspool_dir = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("agent.spool"), "{err}");
        let nvml = "sensor = \"nvml\"\nmapping_file = \"/m.toml\"";
        assert_eq!(dir(nvml).unwrap(), Some(PathBuf::from(DEFAULT_SPOOL_DIR)));
    }

    #[test]
    fn the_url_scheme_follows_agent_tls() {
        let listen: SocketAddr = ([127, 0, 0, 1], 50051).into();
        let tls = "[tls]\nca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";
        assert_eq!(
            agent_gateway_url(&agent(""), listen).unwrap(),
            "http://127.0.0.1:50051"
        );
        assert_eq!(
            agent_gateway_url(&agent(tls), listen).unwrap(),
            "https://127.0.0.1:50051"
        );
        let err = agent_gateway_url(
            &agent(&format!("gateway_url = \"http://gw:50051\"\n{tls}")),
            listen,
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be https://"), "{err}");
        let err =
            agent_gateway_url(&agent("gateway_url = \"https://gw:50051\""), listen).unwrap_err();
        assert!(err.to_string().contains("[agent.tls]"), "{err}");
        let err = toml::from_str::<RawAgent>("[tls]\nca = \"ca.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("missing field `cert`"), "{err}");
    }
}
