//! `wattprint loadgen`: a load test of the distributed path on real servers. N hosts × 8 GPUs
//! send a sample per GPU per second through `wattprint gateway` (gRPC) → the Kafka-protocol
//! broker → `wattprint enricher` → ClickHouse, read back through `wattprint query-api`, each a
//! process of its own; it reports samples/s offered, acked and stored, CPU per process, the
//! enricher's lag and freshness (sample end → visible in `/v1/summary`).
//!
//! - **Real data.** Each GPU's samples are 1 s spans of the H100 trace (the replay's exact
//!   counter deltas), per-GPU `seq` from 1, from hosts that hold their GPUs in the inventory.
//! - **Its own namespace.** A database, topics and consumer group with a random suffix,
//!   dropped at the end unless `--keep`; the shared servers are only read for their CPU.
//! - **Exact or failing.** After the load, every tenant's summary must hold exactly the energy
//!   sent to it (to the mJ) within `--drain`, else the run fails.

mod procs;
mod watch;

use crate::backfill::span_sample;
use crate::config::{RawConfig, SensorKind, REPLAY_MODEL, REPLAY_POWER_LIMIT};
use crate::local_cluster::{LocalCluster, LocalInstance};
use anyhow::Context;
use procs::{free_port, CpuMeter, RoleProcess};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument as _;
use watch::{metric_sum, Freshness, Watcher};
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::sensor::GpuSensor as _;
use wattprint_agent::AgentConfig;
use wattprint_core::sample::seq_of;
use wattprint_core::{HostId, InstanceId, UnixMillis};
use wattprint_runtime::Shutdown;

/// The tenant whose summary the freshness probe reads: it holds host 0 alone.
pub const PROBE_TENANT: &str = "lg-probe";

/// Replay seed of the simulated fleet's GPUs.
const SEED: u64 = 16;

/// Span of a sample: the agent's default energy interval.
const SPAN_MS: i64 = 1000;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadgenArgs {
    /// Simulated hosts.
    pub hosts: u32,
    /// GPUs per host.
    pub gpus_per_host: u32,
    /// How long the load runs.
    pub duration: Duration,
    /// Tenants the hosts after host 0 are spread over (host 0 is [`PROBE_TENANT`]'s).
    pub tenants: u32,
    /// ClickHouse HTTP URL.
    pub clickhouse_url: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Partitions of the run's topics.
    pub partitions: u32,
    /// Longest wait after the load for every sample to be visible.
    pub drain: Duration,
    /// Keep the database, topics and directory (config, logs) at the end.
    pub keep: bool,
    /// Write every sample sent to this CSV (`tenant,instance,gpu,seq,start_ms,end_ms,energy_mj`).
    pub record: Option<PathBuf>,
}

/// One simulated host: its id, instance, tenant and GPUs (indices of the replay).
#[derive(Debug, Clone)]
struct Host {
    id: HostId,
    instance: InstanceId,
    tenant: String,
    gpus: std::ops::Range<usize>,
}

fn fleet(args: &LoadgenArgs) -> Vec<Host> {
    let per = args.gpus_per_host as usize;
    (0..args.hosts)
        .map(|h| Host {
            id: HostId::from(format!("lg-host-{h}").as_str()),
            instance: InstanceId::from(format!("lg-h{h}").as_str()),
            tenant: match h {
                0 => PROBE_TENANT.to_owned(),
                h => format!("lg-t{}", (h - 1) % args.tenants.max(1)),
            },
            gpus: h as usize * per..(h as usize + 1) * per,
        })
        .collect()
}

/// The run's deployment and where its config and logs are.
struct Layout {
    dir: PathBuf,
    config: PathBuf,
    cluster: LocalCluster,
}

fn write_config(args: &LoadgenArgs, hosts: &[Host]) -> anyhow::Result<Layout> {
    let unique = format!("{:08x}", rand::random::<u32>());
    let dir = std::env::temp_dir().join(format!("wattprint-loadgen-{unique}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cluster = LocalCluster {
        data_dir: dir.join("data"),
        clickhouse_url: args.clickhouse_url.clone(),
        database: format!("wp_loadgen_{unique}"),
        brokers: args.brokers.clone(),
        namespace: format!("loadgen-{unique}"),
        partitions: args.partitions,
        gateway: free_port()?,
        gateway_metrics: free_port()?,
        enricher_metrics: free_port()?,
        api: free_port()?,
    };
    let instances: Vec<LocalInstance> = hosts
        .iter()
        .map(|host| LocalInstance {
            tenant: host.tenant.clone(),
            id: host.instance.to_string(),
            zip: "95112".into(),
            host: host.id.to_string(),
            gpus: host
                .gpus
                .clone()
                .map(|g| replay_gpu_uuid(SEED, g as u32))
                .collect(),
        })
        .collect();
    let config = dir.join("wattprint.toml");
    std::fs::write(&config, cluster.toml(&instances))
        .with_context(|| format!("writing {}", config.display()))?;
    Ok(Layout {
        dir,
        config,
        cluster,
    })
}

fn settings_of(config: &Path) -> anyhow::Result<crate::config::Settings> {
    let raw: RawConfig =
        wattprint_runtime::load_config(Some(config), &BTreeMap::new(), "WATTPRINT_")?;
    Ok(raw.validate()?)
}

/// A sample sent: its tenant, instance, GPU, seq, span and energy.
#[derive(Debug, Clone)]
struct Sent {
    tenant: Arc<str>,
    sample: wattprint_core::sample::EnergySample,
}

/// What the senders share: every sample sent, and the probe tenant's freshness probes.
#[derive(Default)]
struct Ledger {
    sent: Vec<Sent>,
    probe_energy_mj: u64,
}

/// Plays one host: its GPUs' 1 s spans of `[from, to]`, each sent once the wall clock passes
/// its end, on the host's own gRPC stream. Returns the agent stream's report.
async fn run_host(
    host: Host,
    sensor: Arc<ReplaySensor>,
    (from, to): (UnixMillis, UnixMillis),
    gateway_url: String,
    ledger: Arc<Mutex<Ledger>>,
    freshness: Arc<Mutex<Freshness>>,
    stop: Shutdown,
) -> anyhow::Result<wattprint_agent::AgentReport> {
    let epoch = u64::try_from(from.0.div_euclid(1000)).unwrap_or(0);
    let mut samples = Vec::new();
    for g in host.gpus.clone() {
        let uuid = &sensor.gpus()[g].uuid;
        for (k, span) in sensor
            .history(g, from, to, SPAN_MS)?
            .into_iter()
            .enumerate()
        {
            let seq = seq_of(epoch, k as u64 + 1);
            samples.push(span_sample(
                &host.id,
                uuid,
                &host.instance,
                seq,
                span,
                k == 0,
            ));
        }
    }
    samples.sort_by_key(|s| (s.end, s.gpu.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel(samples.len().max(1));
    let config = AgentConfig::new(host.id.clone(), gateway_url);
    let stream = tokio::spawn(async move {
        let stopped = stop.wait();
        wattprint_agent::send_samples(&config, rx, stopped).await
    });
    let tenant: Arc<str> = host.tenant.as_str().into();
    let probe = host.tenant == PROBE_TENANT;
    let mut pending = samples.into_iter().peekable();
    while let Some(next) = pending.peek() {
        let wait = next.end.since(UnixMillis::now());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        let now = UnixMillis::now();
        let mut newest = None;
        while let Some(s) = pending.next_if(|s| s.end <= now) {
            {
                let mut l = ledger
                    .lock()
                    .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
                if probe {
                    l.probe_energy_mj += s.energy.0;
                    newest = Some((s.end, l.probe_energy_mj));
                }
                l.sent.push(Sent {
                    tenant: tenant.clone(),
                    sample: s.clone(),
                });
            }
            if tx.send(s).await.is_err() {
                anyhow::bail!("the stream of {} stopped early", host.id);
            }
        }
        if let (Some((end, energy)), Ok(mut f)) = (newest, freshness.lock()) {
            f.note(end, energy);
        }
    }
    drop(tx);
    Ok(stream.await??)
}

/// Per second of the run: samples stored (enricher metric), samples accepted (gateway
/// metric), enricher lag in records.
#[derive(Debug, Default, Clone, Copy)]
struct Reading {
    stored: f64,
    accepted: f64,
    lag: f64,
}

async fn read_metrics(watcher: &Watcher, layout: &Layout) -> Reading {
    let enricher = watcher
        .scrape(&format!("127.0.0.1:{}", layout.cluster.enricher_metrics))
        .await
        .unwrap_or_default();
    let gateway = watcher
        .scrape(&format!("127.0.0.1:{}", layout.cluster.gateway_metrics))
        .await
        .unwrap_or_default();
    Reading {
        stored: metric_sum(
            &enricher,
            "wattprint_store_rows_written_total",
            &[("table", "samples")],
        ),
        lag: metric_sum(
            &enricher,
            "wattprint_enricher_lag_records",
            &[("topic", "samples")],
        ),
        accepted: metric_sum(&gateway, "wattprint_gateway_samples_accepted_total", &[]),
    }
}

/// Runs the load test and prints its report; fails when a tenant's stored energy differs from
/// what was sent once the drain is over.
pub async fn run(args: &LoadgenArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.hosts >= 1 && args.gpus_per_host >= 1,
        "loadgen needs at least one host with one GPU"
    );
    let hosts = fleet(args);
    let layout = write_config(args, &hosts)?;
    println!(
        "loadgen: database {}, topics {}*, config and logs in {}",
        layout.cluster.database,
        layout.cluster.topic_prefix(),
        layout.dir.display()
    );
    let outcome = run_in(args, &hosts, &layout, shutdown).await;
    cleanup(args, &layout).await;
    outcome
}

async fn run_in(
    args: &LoadgenArgs,
    hosts: &[Host],
    layout: &Layout,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let settings = settings_of(&layout.config)?;
    let auth = crate::roles::auth_config(&settings)?;
    let SensorKind::Replay { trace, .. } = &settings.agent.sensor else {
        anyhow::bail!("the loadgen config has no replay trace");
    };
    let exe = std::env::current_exe().context("finding the wattprint binary")?;
    let ready_within = Duration::from_secs(120);
    let mut roles = Vec::new();
    for role in ["gateway", "enricher", "query-api"] {
        let (exe, config, dir) = (exe.clone(), layout.config.clone(), layout.dir.clone());
        let started = tokio::task::spawn_blocking(move || {
            RoleProcess::start(&exe, role, &config, &dir, ready_within)
        })
        .await??;
        roles.push(started);
    }
    let mut measured: Vec<(String, u32)> =
        roles.iter().map(|r| (r.role.to_owned(), r.pid())).collect();
    for (name, comm) in [("clickhouse", "clickhouse-serv"), ("broker", "tansu")] {
        match procs::find_pid(comm) {
            Some(pid) => measured.push((name.to_owned(), pid)),
            None => println!("cpu: no process named {comm}* on this machine; not measured"),
        }
    }
    measured.push(("loadgen".to_owned(), std::process::id()));

    let gpus = args.hosts * args.gpus_per_host;
    let sensor = Arc::new(ReplaySensor::new(ReplayConfig {
        trace_path: trace.clone(),
        gpus,
        seed: SEED,
        start_at: UnixMillis::now(),
        pacing: Pacing::AsFastAsPossible,
        loops: None,
        model: REPLAY_MODEL.into(),
        power_limit: REPLAY_POWER_LIMIT,
    })?);
    let watcher = Watcher::new(format!("http://127.0.0.1:{}", layout.cluster.api), auth);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let freshness = Arc::new(Mutex::new(Freshness::default()));
    let stop = Shutdown::new();
    let duration_ms = args.duration.as_millis() as i64;
    // Hosts end a second apart spread evenly, as agents started at different times do.
    let load_start = UnixMillis(UnixMillis::now().0 + 1000);
    let load_end = UnixMillis(load_start.0 + duration_ms);
    let gateway_url = format!("http://127.0.0.1:{}", layout.cluster.gateway);
    let mut senders = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        let phase = (h as i64 * 1000) / i64::from(args.hosts);
        let window = (
            UnixMillis(load_start.0 - phase),
            UnixMillis(load_end.0 - phase),
        );
        let span = tracing::info_span!("loadgen_host", host = %host.id);
        senders.push(tokio::spawn(
            run_host(
                host.clone(),
                sensor.clone(),
                window,
                gateway_url.clone(),
                ledger.clone(),
                freshness.clone(),
                stop.clone(),
            )
            .instrument(span),
        ));
    }
    let baseline = read_metrics(&watcher, layout).await;
    let cpu = CpuMeter::start(&measured);
    let range = (
        UnixMillis(load_start.0 - 3_600_000),
        UnixMillis(load_end.0 + 3_600_000),
    );

    // The load: metrics every second, the probe tenant's summary twice a second.
    // The steady rates leave the first quarter out: the first batches, group joins, ramp-up.
    let started = Instant::now();
    let steady_from = started + args.duration / 4;
    let (mut max_lag, mut steady) = (0f64, None);
    let mut next_metrics = started;
    while UnixMillis::now() < load_end && !shutdown.is_triggered() {
        if Instant::now() >= next_metrics {
            let r = read_metrics(&watcher, layout).await;
            max_lag = max_lag.max(r.lag);
            if steady.is_none() && Instant::now() >= steady_from {
                steady = Some((Instant::now(), r));
            }
            next_metrics += Duration::from_secs(1);
        }
        probe(&watcher, &freshness, range).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cores = cpu.cores();
    let end_reading = read_metrics(&watcher, layout).await;
    let (steady_at, steady_start) = steady.unwrap_or((started, baseline));
    let steady_secs = steady_at.elapsed().as_secs_f64().max(1e-3);
    max_lag = max_lag.max(end_reading.lag);
    let load_secs = args.duration.as_secs_f64();

    // The drain: senders finish (every batch acked), then every tenant's energy is complete.
    let drain_deadline = Instant::now() + args.drain;
    let stopper = {
        let stop = stop.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep_until(drain_deadline.into()) => {}
                () = shutdown.wait() => {}
            }
            stop.trigger();
        })
    };
    let (mut sent, mut acked, mut rejected) = (0u64, 0u64, 0u64);
    for s in senders {
        let report = s.await??;
        sent += report.samples_sent;
        acked += report.samples_acked;
        rejected += report.samples_rejected;
    }
    let drained_at = Instant::now();
    let expected = expected_energy(&ledger)?;
    let mut stored = BTreeMap::new();
    let mut last_lag;
    loop {
        probe(&watcher, &freshness, range).await;
        for tenant in expected.keys() {
            match watcher.tenant_energy(tenant, range).await {
                Ok(mj) => _ = stored.insert(tenant.clone(), mj),
                Err(e) => tracing::warn!(error = %e, "summary read failed; reading again"),
            }
        }
        last_lag = read_metrics(&watcher, layout).await.lag;
        if stored == expected || Instant::now() >= drain_deadline || shutdown.is_triggered() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stopper.abort();
    let all_stored_after = drained_at.elapsed().as_secs_f64();

    let offered = f64::from(gpus) * 1000.0 / SPAN_MS as f64;
    println!(
        "loadgen: {} hosts × {} GPUs, {} s: offered {offered:.1} samples/s, accepted {:.1} \
         samples/s, stored {:.1} samples/s (steady, last {:.0} s)",
        args.hosts,
        args.gpus_per_host,
        args.duration.as_secs(),
        (end_reading.accepted - steady_start.accepted) / steady_secs,
        (end_reading.stored - steady_start.stored) / steady_secs,
        steady_secs,
    );
    println!(
        "whole run: accepted {:.1} samples/s, stored {:.1} samples/s over {load_secs:.0} s",
        (end_reading.accepted - baseline.accepted) / load_secs,
        (end_reading.stored - baseline.stored) / load_secs,
    );
    println!("samples: sent {sent}, acked {acked}, rejected {rejected}");
    let cpu_line: Vec<String> = cores
        .iter()
        .map(|(name, c)| format!("{name} {c:.3} cores"))
        .collect();
    println!("cpu: {}", cpu_line.join(", "));
    println!("lag: max {max_lag:.0} records, end {last_lag:.0}");
    println!("{}", describe_freshness(&freshness)?);
    for (tenant, want) in &expected {
        let got = stored.get(tenant).copied().unwrap_or(0);
        println!("energy {tenant}: sent {want} mJ, stored {got} mJ");
    }
    if let Some(path) = &args.record {
        write_record(path, &ledger)?;
    }
    anyhow::ensure!(
        !shutdown.is_triggered(),
        "stopped by a signal before the end"
    );
    anyhow::ensure!(
        stored == expected,
        "stored energy differs from what was sent {:.0} s after the load ended",
        all_stored_after
    );
    println!("drain: every tenant's energy complete {all_stored_after:.1} s after the last ack");
    for mut r in roles {
        tokio::task::spawn_blocking(move || r.stop(Duration::from_secs(30))).await?;
    }
    Ok(())
}

/// The freshness line: percentiles of the probes seen, and how many were not.
fn describe_freshness(freshness: &Mutex<Freshness>) -> anyhow::Result<String> {
    let f = freshness
        .lock()
        .map_err(|_| anyhow::anyhow!("freshness poisoned"))?;
    Ok(match (f.percentile(50.0), f.percentile(95.0)) {
        (Some(p50), Some(p95)) => format!(
            "freshness: p50 {p50:.1} s, p95 {p95:.1} s (n = {}, {} not seen)",
            f.seen_after_s.len(),
            f.pending()
        ),
        _ => format!("freshness: no probe seen ({} pending)", f.pending()),
    })
}

/// One summary read of the probe tenant, resolving the probes it covers.
async fn probe(watcher: &Watcher, freshness: &Mutex<Freshness>, range: (UnixMillis, UnixMillis)) {
    match watcher.tenant_energy(PROBE_TENANT, range).await {
        Ok(stored) => {
            if let Ok(mut f) = freshness.lock() {
                f.observe(UnixMillis::now(), stored);
            }
        }
        Err(e) => tracing::warn!(error = %e, "freshness probe failed"),
    }
}

fn expected_energy(ledger: &Mutex<Ledger>) -> anyhow::Result<BTreeMap<String, u64>> {
    let l = ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    let mut by_tenant = BTreeMap::new();
    for s in &l.sent {
        *by_tenant.entry(s.tenant.to_string()).or_default() += s.sample.energy.0;
    }
    Ok(by_tenant)
}

fn write_record(path: &Path, ledger: &Mutex<Ledger>) -> anyhow::Result<()> {
    let l = ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    let mut out = String::from("tenant,instance,gpu,seq,start_ms,end_ms,energy_mj\n");
    for s in &l.sent {
        let x = &s.sample;
        writeln!(
            out,
            "{},{},{},{},{},{},{}",
            s.tenant, x.instance, x.gpu, x.seq, x.start.0, x.end.0, x.energy.0
        )?;
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Drops the run's database and topics and removes its directory, unless `--keep`.
async fn cleanup(args: &LoadgenArgs, layout: &Layout) {
    if args.keep {
        println!(
            "kept: database {}, topics {}*, {}",
            layout.cluster.database,
            layout.cluster.topic_prefix(),
            layout.dir.display()
        );
        return;
    }
    let drop_db = reqwest::Client::new()
        .post(&args.clickhouse_url)
        .body(format!(
            "DROP DATABASE IF EXISTS {}",
            layout.cluster.database
        ))
        .send()
        .await;
    match drop_db {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => println!(
            "cleanup: dropping {}: {}",
            layout.cluster.database,
            r.status()
        ),
        Err(e) => println!("cleanup: dropping {}: {e}", layout.cluster.database),
    }
    let topics = wattprint_bus::KafkaBusConfig::new(args.brokers.clone())
        .with_topic_prefix(&layout.cluster.topic_prefix());
    if let Err(e) = wattprint_bus::kafka::delete_topics(&topics).await {
        println!(
            "cleanup: deleting topics {}*: {e}",
            layout.cluster.topic_prefix()
        );
    }
    if let Err(e) = std::fs::remove_dir_all(&layout.dir) {
        println!("cleanup: removing {}: {e}", layout.dir.display());
    }
}
