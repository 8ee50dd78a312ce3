//! `wattprint`: GPU energy and carbon metering.
//!
//! `wattprint up` runs everything in one process on SQLite with replayed GPUs for two demo
//! tenants; the other subcommands run the parts separately.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wattprint_cli::backfill;
use wattprint_cli::config::{BusSettings, RawConfig, SensorKind, Settings, StoreSettings};
use wattprint_cli::roles::{self, Backend, Roles};
use wattprint_core::UnixMillis;
use wattprint_query_api::Role;
use wattprint_runtime::telemetry::{self, LogFormat, TelemetryConfig};
use wattprint_runtime::Shutdown;

#[derive(Parser, Debug)]
#[command(name = "wattprint", version, about = "GPU energy and carbon metering")]
struct Cli {
    /// TOML config file; `WATTPRINT_SECTION__KEY=value` variables override it.
    #[arg(long, short, global = true, env = "WATTPRINT_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    /// Export traces over OTLP/gRPC to this collector (e.g. http://127.0.0.1:4317).
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run agent(s), gateway, enricher and query API in one process (SQLite and the in-process
    /// bus unless the config names ClickHouse and Kafka).
    Up {
        /// Data directory (SQLite database, dev signing secret).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Replayed GPUs.
        #[arg(long)]
        gpus: Option<u32>,
        /// Instances the replayed GPUs are spread over (alternating between two demo tenants).
        #[arg(long)]
        instances: Option<u32>,
        /// Query API listen address.
        #[arg(long)]
        api_listen: Option<SocketAddr>,
        /// Gateway listen address.
        #[arg(long)]
        gateway_listen: Option<SocketAddr>,
        /// Days of replayed history stored on first start, before the live replay's start
        /// (agent.replay.backfill_days; default 7, at most 29; 0: none).
        #[arg(long)]
        backfill_days: Option<u32>,
    },
    /// Run one agent streaming to a gateway.
    Agent {
        /// Print the GPUs discovered and how each will be attributed, then exit (non-zero when
        /// one cannot be).
        #[arg(long)]
        check: bool,
        /// Attribution mode: mapping, libvirt, vgpu or in_guest (agent.attribution.mode).
        #[arg(long)]
        attribution: Option<String>,
        /// GPU → instance mapping file (agent.attribution.mapping_file).
        #[arg(long)]
        mapping_file: Option<PathBuf>,
        /// libvirt domain XML directory (agent.attribution.libvirt_dir).
        #[arg(long)]
        libvirt_dir: Option<PathBuf>,
        /// In-guest: this VM's instance id (agent.attribution.instance_id).
        #[arg(long)]
        instance_id: Option<String>,
        /// In-guest: read the instance id from aws, gcp or azure metadata
        /// (agent.attribution.metadata).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Run the gateway (with the in-process bus, its enricher runs beside it).
    Gateway,
    /// Run an enricher: a member of the Kafka consumer group writing the store.
    Enricher,
    /// Run the query API on the store.
    QueryApi,
    /// Grid intensity: coverage report, file import, provider backfill.
    Intensity {
        #[command(subcommand)]
        command: IntensityCommand,
    },
    /// Samples ingest refused: list them with their reasons, or replay them once the cause is
    /// fixed (a GPU added to the inventory late). Replay never counts a sample twice.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// The inventory: store the configured `[[instances]]` (running gateways and enrichers
    /// reload it within seconds, no restart), or show GPUs' placements in time.
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
    /// Load test of the distributed path on a test machine: N hosts × 8 GPUs at 1 Hz through a
    /// gateway, the Kafka broker, an enricher and ClickHouse (each a process of its own, in a
    /// database and topics of the run's own); prints samples/s offered, accepted and stored,
    /// CPU per process, enricher lag and freshness, and fails unless every tenant's stored
    /// energy equals what was sent.
    Loadgen {
        /// Simulated hosts.
        #[arg(long, default_value_t = 16)]
        hosts: u32,
        /// GPUs per host.
        #[arg(long, default_value_t = 8)]
        gpus_per_host: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Tenants the hosts are spread over (besides the freshness probe's tenant, host 0).
        #[arg(long, default_value_t = 4)]
        tenants: u32,
        /// ClickHouse HTTP URL.
        #[arg(long, default_value = "http://127.0.0.1:18123")]
        clickhouse_url: String,
        /// Kafka bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:19092")]
        brokers: String,
        /// Partitions of the run's topics.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Longest wait, seconds, after the load for every sample to be visible.
        #[arg(long, default_value_t = 120)]
        drain: u64,
        /// Keep the run's database, topics, config and logs.
        #[arg(long)]
        keep: bool,
        /// Write every sample sent to this CSV file.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Print an HS256 dev token (embedded dev mode only; with a JWKS configured, tokens come
    /// from the identity provider).
    Token {
        /// Tenant id (reader and admin tokens).
        #[arg(long, required_unless_present = "subject", conflicts_with = "subject")]
        tenant: Option<String>,
        /// Role granted: `reader` (GETs), `admin` (also creates, labels and closes workloads)
        /// or `operator` (cross-tenant `/v1/operator` routes; needs --subject, not --tenant).
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Role,
        /// Operator subject (operator tokens).
        #[arg(long)]
        subject: Option<String>,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
}

#[derive(Subcommand, Debug)]
enum InventoryCommand {
    /// Store the configured `[[instances]]`, effective now: samples taken before stay with
    /// the previous owner.
    Apply,
    /// Every GPU's placements in time, or one GPU's.
    History {
        /// Only this GPU.
        #[arg(long)]
        gpu: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum QuarantineCommand {
    /// The newest held records with their reasons, after a count per kind of reason.
    List {
        /// Most records shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put the newest held samples back through validation and into the store.
    Replay {
        /// Most records replayed.
        #[arg(long, default_value_t = 10_000)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
enum IntensityCommand {
    /// Per region: latest points, gaps in the marginal actuals, how the last day's intervals
    /// were joined (actual, nearest, forecast, fallback, missing).
    Status {
        /// Days of marginal actuals checked for gaps.
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Import intensity points from a file into the ledger, and restate what they improve.
    Import {
        /// The file.
        file: PathBuf,
        /// Its format.
        #[arg(long, value_enum, default_value = "ledger-csv")]
        format: wattprint_cli::intensity::ImportFormat,
    },
    /// Fetch a region's history from its configured providers, and restate.
    Backfill {
        /// Wattprint region.
        #[arg(long)]
        region: String,
        /// Start, UTC (e.g. 2026-11-01T00:00:00Z).
        #[arg(long, value_parser = parse_time)]
        from: UnixMillis,
        /// End (exclusive), UTC.
        #[arg(long, value_parser = parse_time)]
        to: UnixMillis,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn parse_time(s: &str) -> Result<UnixMillis, String> {
    wattprint_intensity::timefmt::parse_utc_timestamp(s)
        .ok_or_else(|| format!("{s:?} is not a UTC time like 2026-11-01T00:00:00Z"))
}

impl Command {
    /// The subcommand's name, used as the OpenTelemetry service name suffix.
    fn name(&self) -> &'static str {
        match self {
            Command::Up { .. } => "up",
            Command::Agent { .. } => "agent",
            Command::Gateway => "gateway",
            Command::Enricher => "enricher",
            Command::QueryApi => "query-api",
            Command::Intensity { .. } => "intensity",
            Command::Quarantine { .. } => "quarantine",
            Command::Inventory { .. } => "inventory",
            Command::Token { .. } => "token",
            Command::Loadgen { .. } => "loadgen",
        }
    }
}

/// `WATTPRINT_*` variables that are not config overrides: the config file's path, and what
/// the SDK examples read (`WATTPRINT_URL`, `WATTPRINT_TOKEN`, `WATTPRINT_FROM`, `WATTPRINT_TO`),
/// so a shell that exports them can still run `wattprint`.
const NOT_OVERRIDES: [&str; 5] = [
    "WATTPRINT_CONFIG",
    "WATTPRINT_URL",
    "WATTPRINT_TOKEN",
    "WATTPRINT_FROM",
    "WATTPRINT_TO",
];

fn load(cli: &Cli, patch: impl FnOnce(&mut RawConfig)) -> anyhow::Result<Settings> {
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !NOT_OVERRIDES.contains(&k.as_str()))
        .collect();
    let mut raw: RawConfig =
        wattprint_runtime::load_config(cli.config.as_deref(), &env, "WATTPRINT_")?;
    patch(&mut raw);
    Ok(raw.validate()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init_telemetry(&TelemetryConfig {
        default_filter: "info,h2=warn,tower=warn,hyper=warn".into(),
        format: if cli.log_json {
            LogFormat::Json
        } else {
            LogFormat::Text
        },
        otlp_endpoint: cli.otlp_endpoint.clone(),
        service_name: format!("wattprint-{}", cli.command.name()),
    })?;
    let process = cli.command.name().replace('-', "_");
    wattprint_runtime::metrics::init(&process, cli.otlp_endpoint.as_deref())?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    match &cli.command {
        Command::Up {
            data_dir,
            gpus,
            instances,
            api_listen,
            gateway_listen,
            backfill_days,
        } => {
            let settings = load(&cli, |raw| {
                raw.data_dir = data_dir.clone().or(raw.data_dir.take());
                raw.agent.replay.gpus = gpus.or(raw.agent.replay.gpus);
                raw.agent.replay.instances = instances.or(raw.agent.replay.instances);
                raw.query_api.listen = api_listen.or(raw.query_api.listen);
                raw.gateway.listen = gateway_listen.or(raw.gateway.listen);
                raw.agent.replay.backfill_days = backfill_days.or(raw.agent.replay.backfill_days);
            })?;
            up(settings, shutdown).await
        }
        Command::Agent {
            check,
            attribution,
            mapping_file,
            libvirt_dir,
            instance_id,
            metadata,
        } => {
            let settings = load(&cli, |raw| {
                let a = &mut raw.agent.attribution;
                a.mode = attribution.clone().or(a.mode.take());
                a.mapping_file = mapping_file.clone().or(a.mapping_file.take());
                a.libvirt_dir = libvirt_dir.clone().or(a.libvirt_dir.take());
                a.instance_id = instance_id.clone().or(a.instance_id.take());
                a.metadata = metadata.clone().or(a.metadata.take());
            })?;
            if *check {
                check_agent(&settings).await
            } else {
                agent(&settings, shutdown).await
            }
        }
        Command::Gateway => serve(&cli, Roles::GATEWAY, shutdown).await,
        Command::Enricher => serve(&cli, Roles::ENRICHER, shutdown).await,
        Command::QueryApi => serve(&cli, Roles::QUERY_API, shutdown).await,
        Command::Intensity { command } => intensity(&cli, command).await,
        Command::Quarantine { command } => quarantine(&cli, command).await,
        Command::Inventory { command } => inventory(&cli, command).await,
        Command::Loadgen {
            hosts,
            gpus_per_host,
            duration,
            tenants,
            clickhouse_url,
            brokers,
            partitions,
            drain,
            keep,
            record,
        } => {
            let args = wattprint_cli::loadgen::LoadgenArgs {
                hosts: *hosts,
                gpus_per_host: *gpus_per_host,
                duration: Duration::from_secs(*duration),
                tenants: *tenants,
                clickhouse_url: clickhouse_url.clone(),
                brokers: brokers.clone(),
                partitions: *partitions,
                drain: Duration::from_secs(*drain),
                keep: *keep,
                record: record.clone(),
            };
            wattprint_cli::loadgen::run(&args, shutdown).await
        }
        Command::Token {
            tenant,
            role,
            subject,
            ttl_hours,
        } => token(
            &cli,
            *role,
            tenant.as_deref(),
            subject.as_deref(),
            *ttl_hours,
        ),
    }
}

/// `wattprint agent --check`: the GPUs discovered and how each is attributed.
async fn check_agent(settings: &Settings) -> anyhow::Result<()> {
    let report = roles::check_agent(settings).await?;
    print!("{report}");
    let a = &settings.agent;
    println!(
        "reads: energy counter every {} ms; power, utilisation, temperature, clock {}",
        a.config.energy_interval.as_millis(),
        a.config.gauge_interval.map_or_else(
            || "with the energy only".to_owned(),
            |d| format!("every {} ms", d.as_millis())
        )
    );
    anyhow::ensure!(
        report.is_ok(),
        "attribution check failed: {}",
        report.problems().join("; ")
    );
    Ok(())
}

/// `wattprint agent`: one agent streaming to its gateway until a shutdown signal.
async fn agent(settings: &Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let readiness = wattprint_runtime::metrics::Readiness::new();
    readiness.add("gateway", || {
        let up = wattprint_agent::metrics::gateway_connected();
        async move {
            up.then_some(())
                .ok_or_else(|| "no stream to the gateway (the spool keeps data)".to_owned())
        }
    });
    let listen = settings.metrics.agent;
    if let Some(addr) = wattprint_cli::health::listen(listen, readiness, &shutdown).await? {
        println!("agent metrics on http://{addr}/metrics");
    }
    let report = roles::run_agent(
        settings,
        settings.agent.config.gateway_url.clone(),
        shutdown.wait(),
    )
    .await?;
    tracing::info!(?report, "agent stopped");
    println!(
        "agent stopped: sent {} acked {} rejected {} resent {} dropped {} replayed {} \
         refused {}",
        report.samples_sent,
        report.samples_acked,
        report.samples_rejected,
        report.batches_resent,
        report.samples_dropped,
        report.batches_replayed,
        report.auth_refusals
    );
    Ok(())
}

/// `wattprint intensity ...`.
async fn intensity(cli: &Cli, command: &IntensityCommand) -> anyhow::Result<()> {
    let settings = load(cli, |_| {})?;
    let store = roles::open_store(&settings).await?;
    let out = match command {
        IntensityCommand::Status { days } => {
            wattprint_cli::intensity::status(&settings, store.as_ref(), *days).await?
        }
        IntensityCommand::Import { file, format } => {
            wattprint_cli::intensity::import(&settings, store, file, *format).await?
        }
        IntensityCommand::Backfill { region, from, to } => {
            let region = wattprint_core::RegionId::new(region.clone());
            wattprint_cli::intensity::backfill(&settings, store, &region, *from, *to).await?
        }
    };
    println!("{out}");
    Ok(())
}

/// `wattprint quarantine ...`.
async fn quarantine(cli: &Cli, command: &QuarantineCommand) -> anyhow::Result<()> {
    let settings = load(cli, |_| {})?;
    let store = roles::open_store(&settings).await?;
    let out = match command {
        QuarantineCommand::List { limit } => {
            wattprint_cli::quarantine::list(store.as_ref(), *limit).await?
        }
        QuarantineCommand::Replay { limit } => {
            let report = wattprint_cli::quarantine::replay_held(&settings, store, *limit).await?;
            wattprint_cli::quarantine::describe(&report)
        }
    };
    println!("{out}");
    Ok(())
}

/// `wattprint inventory`: opening the store applies the configured inventory.
async fn inventory(cli: &Cli, command: &InventoryCommand) -> anyhow::Result<()> {
    let settings = load(cli, |_| {})?;
    let store = roles::open_store(&settings).await?;
    let history = store.placement_history().await?;
    match command {
        InventoryCommand::Apply => {
            let gpus: usize = settings.inventory.iter().map(|i| i.gpus.len()).sum();
            println!(
                "inventory applied: {} instances, {gpus} GPUs; running gateways and enrichers \
                 reload it within {} s",
                settings.inventory.len(),
                roles::INVENTORY_RELOAD_EVERY.as_secs()
            );
        }
        InventoryCommand::History { gpu } => {
            for v in history
                .iter()
                .filter(|v| gpu.as_ref().is_none_or(|g| v.gpu.as_str() == g))
            {
                println!("{}", wattprint_cli::inventory::describe_placement(v));
            }
        }
    }
    Ok(())
}

/// `wattprint token`: an HS256 dev token for a tenant or an operator.
fn token(
    cli: &Cli,
    role: Role,
    tenant: Option<&str>,
    subject: Option<&str>,
    ttl_hours: u64,
) -> anyhow::Result<()> {
    let settings = load(cli, |_| {})?;
    anyhow::ensure!(
        settings.api_auth.jwks.is_none(),
        "this configuration verifies tokens with the identity provider's keys \
         (query_api.jwks_file / jwks_url): dev tokens would be refused; get one from \
         the identity provider"
    );
    let name = match (role, tenant, subject) {
        (Role::Operator, None, Some(subject)) => subject,
        (Role::Operator, _, _) => {
            anyhow::bail!("an operator token names a --subject, not a --tenant")
        }
        (_, Some(tenant), None) => tenant,
        (_, _, _) => anyhow::bail!("a {role} token names a --tenant, not a --subject"),
    };
    let auth = roles::auth_config(&settings)?;
    let ttl = Duration::from_secs(ttl_hours.saturating_mul(3600));
    let token =
        wattprint_query_api::mint_role_token(&auth, role, name, std::time::SystemTime::now(), ttl)?;
    println!("{token}");
    Ok(())
}

/// Runs some parts of the backend until a shutdown signal.
async fn serve(cli: &Cli, roles: Roles, shutdown: Shutdown) -> anyhow::Result<()> {
    let settings = load(cli, |_| {})?;
    let store = roles::open_store(&settings).await?;
    let backend = Backend::start_roles(&settings, store, roles).await?;
    if let Some(addr) = backend.gateway_addr {
        println!(
            "gateway listening on grpc://{addr} ({})",
            describe_bus(&settings)
        );
    }
    if let Some(addr) = backend.api_addr {
        println!("query API listening on http://{addr}");
    }
    if let Some(addr) = backend.metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    if roles.enricher {
        println!(
            "enricher consuming ({}) into {}",
            describe_bus(&settings),
            describe_store(&settings)
        );
    }
    // Scripts wait for this line.
    println!("ready");
    shutdown.wait().await;
    let report = backend.shutdown().await?;
    tracing::info!(?report, "stopped cleanly");
    Ok(())
}

/// A backfill window's length in words: `7 days`, `1 day`.
fn days_of(window: backfill::Window) -> String {
    match (window.to.since(window.from) + 43_200_000) / 86_400_000 {
        1 => "1 day".to_owned(),
        n => format!("{n} days"),
    }
}

fn describe_store(settings: &Settings) -> String {
    match &settings.store {
        StoreSettings::Sqlite { path, .. } => format!("SQLite at {}", path.display()),
        StoreSettings::ClickHouse(ch) => {
            format!("ClickHouse database {} at {}", ch.database, ch.url)
        }
    }
}

fn describe_bus(settings: &Settings) -> String {
    match &settings.bus {
        BusSettings::Memory => "in-process bus".to_owned(),
        BusSettings::Kafka { config, .. } => {
            format!("Kafka {} topic {}", config.brokers, config.samples_topic)
        }
    }
}

async fn up(mut settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    // The live replay starts at a time fixed now, so that the demo history ends exactly there.
    let live_start = match &mut settings.agent.sensor {
        SensorKind::Replay { start_at, .. } => *start_at.get_or_insert_with(UnixMillis::now),
        SensorKind::Nvml => UnixMillis::now(),
    };
    let store = roles::open_store(&settings).await?;
    let backend = Backend::start(&settings, store).await?;
    let gateway_addr = backend.gateway_addr.context("the gateway runs")?;
    let api_addr = backend.api_addr.context("the query API runs")?;
    // The embedded agent speaks to its own gateway as configured: TLS on both sides or on none.
    anyhow::ensure!(
        settings.gateway_tls.is_some() == settings.agent.config.tls.is_some(),
        "wattprint up runs its own agent against its own gateway: set both [gateway.tls] and \
         [agent.tls], or neither"
    );
    let scheme = if settings.agent.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let gateway_url = format!("{scheme}://{gateway_addr}");
    let history = backfill::plan(&settings, backend.store.as_ref(), live_start).await?;
    let agent_stop = Shutdown::new();
    let agent = {
        let settings = settings.clone();
        let stop = agent_stop.wait();
        let gateway_url = gateway_url.clone();
        tokio::spawn(async move { roles::run_agent(&settings, gateway_url, stop).await })
    };
    let api = format!("http://{api_addr}");
    println!(
        "wattprint is up ({}, {})",
        describe_store(&settings),
        describe_bus(&settings)
    );
    println!("  query API   {api}  (GET {api}/v1/instances, {api}/healthz)");
    let portal_sign_in = if settings.portal_oidc.is_some() {
        "sign in there through the identity provider"
    } else {
        "open a tenant's portal URL below to sign in"
    };
    println!("  portal      {api}/portal/  ({portal_sign_in})");
    println!("  gateway     grpc://{gateway_addr}");
    println!("  metrics     {api}/metrics  (readiness {api}/readyz)");
    let gpus: usize = settings.inventory.iter().map(|i| i.gpus.len()).sum();
    println!(
        "  agent       {gpus} replayed GPUs on {} instances",
        settings.inventory.len()
    );
    match &history {
        backfill::Plan::Run { window, resumed } => println!(
            "  history     {}backfilling {} of replayed history ({} s samples) up to the \
             live start {}; progress below",
            if *resumed { "resuming: " } else { "" },
            days_of(*window),
            backfill::SPAN_MS / 1000,
            window.to
        ),
        backfill::Plan::Skip(why) => println!("  history     no backfill: {why}"),
    }
    let mut tenants: Vec<_> = settings
        .inventory
        .iter()
        .map(|i| i.tenant.clone())
        .collect();
    tenants.dedup();
    tenants.sort();
    tenants.dedup();
    if settings.api_auth.jwks.is_some() {
        println!("  tokens      from the identity provider (query_api.jwks_file / jwks_url)");
        tenants.clear();
    }
    for t in tenants {
        let token =
            wattprint_query_api::mint_token(&backend.auth, &t, Duration::from_secs(24 * 3600))?;
        println!("  token for tenant {t} (24 h, admin):\n    {token}");
        println!("    try: curl -H 'Authorization: Bearer {token}' {api}/v1/instances");
        // The fragment never reaches the server or a log; the page moves it to the tab's
        // sessionStorage and clears it from the address bar.
        println!("    portal: {api}/portal/#token={token}");
    }
    println!(
        "Ctrl-C stops; data is kept in {} and a restart resumes.",
        settings.data_dir.display()
    );
    // After the addresses, so that its progress lines follow them.
    let history_task = match &history {
        backfill::Plan::Run { window, .. } => {
            let settings = settings.clone();
            let store = backend.store.clone();
            let stop = agent_stop.wait();
            let window = *window;
            let days = days_of(window);
            Some(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let shown = days.clone();
                let progress = move |pct| println!("backfilling {shown}: {pct}%");
                let outcome = backfill::run(&settings, gateway_url, window, stop, progress).await;
                if outcome.as_ref().is_ok_and(|o| o.complete) {
                    // The enricher's loop keeps only recent hours' rollups fresh: bring the
                    // history's up to date, so that 30-day views read them at once.
                    let hour = UnixMillis::now().0.div_euclid(3_600_000) * 3_600_000;
                    if let Err(e) = store.refresh_rollups(window.from, UnixMillis(hour)).await {
                        tracing::warn!(error = %e, "refreshing the history's rollups failed");
                    }
                }
                match &outcome {
                    Ok(o) if o.complete => println!(
                        "backfill done: {} samples ({} refused) over {days} in {:.1} s; \
                         live from {}",
                        o.samples,
                        o.rejected,
                        started.elapsed().as_secs_f64(),
                        window.to
                    ),
                    Ok(o) => println!(
                        "backfill stopped after {} samples; the next start sends the rest",
                        o.samples
                    ),
                    Err(e) => println!("backfill failed: {e:#}"),
                }
                outcome
            }))
        }
        backfill::Plan::Skip(_) => None,
    };
    shutdown.wait().await;
    // Agents first, so their last batches are acked before the backend stops.
    agent_stop.trigger();
    match agent.await? {
        Ok(report) => tracing::info!(?report, "agent stopped"),
        Err(e) => tracing::error!(error = %e, "agent failed"),
    }
    if let Some(task) = history_task {
        if let Err(e) = task.await? {
            tracing::error!(error = %e, "backfill failed");
        }
    }
    let report = backend.shutdown().await?;
    tracing::info!(?report, "stopped cleanly");
    Ok(())
}
