//! `wattprint up`'s demo history: on first start, the replayed GPUs' past (default the last 7
//! days, `agent.replay.backfill_days`) is computed from the trace and sent through the gateway
//! like any agent's samples, so the portal's 30-day views and the month's statement have
//! curves at once.
//!
//! - **One timeline per GPU.** The history of each GPU is the looped trace played up to the
//!   position its live replay starts at, and ends exactly at the live start (`to`): history
//!   and live touch, never overlap ([`wattprint_agent::replay::ReplaySensor::history`]).
//! - **Coarse, exact spans.** History samples span [`SPAN_MS`] (one minute) instead of the
//!   live agent's second; each carries the trace counter's exact delta over its span.
//! - **Same path, same rules.** Samples go to the gateway over gRPC with the agent's host id,
//!   TLS and token ([`wattprint_agent::send_samples`]): inventory, physics, lateness, storage
//!   and the timeline rule all apply, and the enricher joins intensity as for live samples.
//! - **Never twice.** Sequence numbers are `seq_of(from_secs, k)` for the `k`-th span of a
//!   GPU's window, deterministic for a window. The window is recorded in `demo-backfill` in the
//!   data directory before anything is sent and marked done once every batch is acked: a
//!   restart after it sends nothing; a restart before it (a crash, Ctrl-C) sends the same
//!   window again under the same keys, and the store counts what it already holds as
//!   duplicates. A data directory that already holds energy and has no record (made before
//!   this existed) is not backfilled: its history would overlap what it holds.

use crate::config::{SensorKind, Settings};
use anyhow::Context;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use wattprint_agent::replay::{HistorySpan, Pacing, ReplayConfig, ReplayLayout, ReplaySensor};
use wattprint_agent::sensor::GpuSensor as _;
use wattprint_core::sample::{seq_of, Attribution, EnergySample, EnergySource};
use wattprint_core::{GpuUuid, InstanceId, TenantScope, UnixMillis};
use wattprint_store::Store;

/// The record of the backfill, in the data directory.
pub const MARKER_FILE: &str = "demo-backfill";

/// Span of a history sample.
pub const SPAN_MS: i64 = 60_000;

const DAY_MS: i64 = 86_400_000;

/// Samples older than this are not sent: the gateway refuses samples older than 30 days, and a
/// resumed backfill may be days older than when it was planned.
const OLDEST_MS: i64 = 30 * DAY_MS - 3_600_000;

const HEADER: &str = "wattprint-demo-backfill 1";

/// The history a backfill covers: `[from, to]`, `to` being the live replay's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start of the history.
    pub from: UnixMillis,
    /// End of the history: where the live replay started.
    pub to: UnixMillis,
}

/// The record in [`MARKER_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The window.
    pub window: Window,
    /// Whether every sample of it was acked.
    pub done: bool,
}

impl Record {
    /// Reads the record in `data_dir` (`None`: there is none).
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Record>> {
        let path = data_dir.join(MARKER_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let bad = || anyhow::anyhow!("{} is not a demo backfill record", path.display());
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad());
        }
        let (mut from, mut to, mut done) = (None, None, None);
        for line in lines {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["from_ms", v] => from = v.parse().ok().map(UnixMillis),
                ["to_ms", v] => to = v.parse().ok().map(UnixMillis),
                ["state", "started"] => done = Some(false),
                ["state", "done"] => done = Some(true),
                [] => {}
                _ => return Err(bad()),
            }
        }
        match (from, to, done) {
            (Some(from), Some(to), Some(done)) => Ok(Some(Record {
                window: Window { from, to },
                done,
            })),
            _ => Err(bad()),
        }
    }

    /// Replaces the record in `data_dir` (temp file, fsync, rename).
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = data_dir.join(MARKER_FILE);
        let tmp = data_dir.join(format!("{MARKER_FILE}.tmp"));
        let text = format!(
            "{HEADER}\nfrom_ms {}\nto_ms {}\nstate {}\n",
            self.window.from.0,
            self.window.to.0,
            if self.done { "done" } else { "started" }
        );
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("writing {}", path.display()))
    }
}

/// What `up` does about history at this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing, and why (for the start-up message).
    Skip(String),
    /// Send the history over the window; `resumed` when an earlier start began it.
    Run {
        /// The history.
        window: Window,
        /// Whether an earlier start began it.
        resumed: bool,
    },
}

/// Decides from the settings, the record in the data directory and whether the store already
/// holds energy for the demo tenants. `live_start` is where the live replay starts.
pub async fn plan(
    settings: &Settings,
    store: &dyn Store,
    live_start: UnixMillis,
) -> anyhow::Result<Plan> {
    let SensorKind::Replay {
        backfill_days,
        layout,
        ..
    } = &settings.agent.sensor
    else {
        return Ok(Plan::Skip("no replayed GPUs".into()));
    };
    if *backfill_days == 0 {
        return Ok(Plan::Skip("off (backfill days 0)".into()));
    }
    if *layout != ReplayLayout::Whole {
        return Ok(Plan::Skip(
            "not for MIG or vGPU replays (whole GPUs only)".into(),
        ));
    }
    let dir = &settings.data_dir;
    match Record::load(dir)? {
        Some(r) if r.done => {
            return Ok(Plan::Skip(format!(
                "already stored ({} to {}, {})",
                r.window.from,
                r.window.to,
                dir.join(MARKER_FILE).display()
            )))
        }
        Some(r) => {
            return Ok(Plan::Run {
                window: r.window,
                resumed: true,
            })
        }
        None => {}
    }
    let now = UnixMillis::now();
    let mut tenants: Vec<_> = settings
        .inventory
        .iter()
        .map(|i| i.tenant.clone())
        .collect();
    tenants.sort();
    tenants.dedup();
    for tenant in tenants {
        let scope = TenantScope::from_verified(tenant);
        let summary = store
            .tenant_summary(&scope, UnixMillis(now.0 - 31 * DAY_MS), now)
            .await?;
        if summary.totals.energy.0 > 0 {
            return Ok(Plan::Skip(
                "this data directory already holds energy from earlier runs".into(),
            ));
        }
    }
    let window = Window {
        from: UnixMillis(live_start.0 - i64::from(*backfill_days) * DAY_MS),
        to: live_start,
    };
    Record {
        window,
        done: false,
    }
    .save(dir)?;
    Ok(Plan::Run {
        window,
        resumed: false,
    })
}

/// The replayed fleet's history, one GPU at a time (so that memory holds one GPU's spans,
/// whatever the fleet): built from the settings' replay, each GPU with its instance.
pub struct History {
    sensor: ReplaySensor,
    /// Replayed GPU index and its instance, for the GPUs of the inventory.
    gpus: Vec<(usize, InstanceId)>,
    host: wattprint_core::HostId,
    window: Window,
    not_before: UnixMillis,
}

impl History {
    /// The history over `window` of the settings' replayed GPUs, spans ending before
    /// `not_before` left out (their keys are kept). `None` without a replay sensor.
    pub fn new(
        settings: &Settings,
        window: Window,
        not_before: UnixMillis,
    ) -> anyhow::Result<Option<History>> {
        let SensorKind::Replay {
            trace, gpus, seed, ..
        } = &settings.agent.sensor
        else {
            return Ok(None);
        };
        let sensor = ReplaySensor::new(ReplayConfig {
            trace_path: trace.clone(),
            gpus: *gpus,
            seed: *seed,
            start_at: window.to,
            pacing: Pacing::AsFastAsPossible,
            loops: None,
            model: crate::config::REPLAY_MODEL.into(),
            power_limit: crate::config::REPLAY_POWER_LIMIT,
        })?;
        let instance_of: HashMap<&GpuUuid, &InstanceId> = settings
            .inventory
            .iter()
            .flat_map(|i| i.gpus.iter().map(move |g| (&g.uuid, &i.instance)))
            .collect();
        let gpus = sensor
            .gpus()
            .iter()
            .enumerate()
            .filter_map(|(i, info)| instance_of.get(&info.uuid).map(|&inst| (i, inst.clone())))
            .collect();
        Ok(Some(History {
            gpus,
            sensor,
            host: settings.agent.config.host_id.clone(),
            window,
            not_before,
        }))
    }

    /// How many GPUs have history.
    pub fn gpu_count(&self) -> usize {
        self.gpus.len()
    }

    /// The samples of the `n`-th GPU with history, in time order. Deterministic: sequence
    /// numbers are `seq_of(from_secs, k)` for the GPU's `k`-th span of the window.
    pub fn samples(&self, n: usize) -> anyhow::Result<Vec<EnergySample>> {
        let Some((index, instance)) = self.gpus.get(n) else {
            return Ok(Vec::new());
        };
        let uuid = &self.sensor.gpus()[*index].uuid;
        let epoch = u64::try_from(self.window.from.0.div_euclid(1000)).unwrap_or(0);
        let spans = self
            .sensor
            .history(*index, self.window.from, self.window.to, SPAN_MS)?;
        Ok(spans
            .into_iter()
            .enumerate()
            .filter(|(_, span)| span.end >= self.not_before)
            .map(|(k, span)| {
                let seq = seq_of(epoch, k as u64 + 1);
                span_sample(&self.host, uuid, instance, seq, span, k == 0)
            })
            .collect())
    }
}

/// The sample a replayed GPU's history span makes: counted energy, the whole GPU attributed
/// to `instance`; `chain_start` for the first sample of the GPU's run.
pub fn span_sample(
    host: &wattprint_core::HostId,
    gpu: &GpuUuid,
    instance: &InstanceId,
    seq: u64,
    span: HistorySpan,
    chain_start: bool,
) -> EnergySample {
    EnergySample {
        host: host.clone(),
        gpu: gpu.clone(),
        instance: instance.clone(),
        seq,
        start: span.start,
        end: span.end,
        energy: span.energy,
        power: span.power,
        power_max: span.power_max,
        util_gpu_pct: span.util_gpu_pct,
        mem_used_bytes: span.mem_used_bytes,
        temp_c: span.temp_c,
        sm_clock_mhz: span.sm_clock_mhz,
        chain_start,
        energy_source: EnergySource::Counter,
        attribution: Attribution::Exclusive,
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Samples sent.
    pub samples: u64,
    /// Samples the gateway refused (each logged by the agent's stream).
    pub rejected: u64,
    /// Whether every sample was acked (false: stopped by shutdown first).
    pub complete: bool,
}

/// Sends the history over `window` to the gateway at `gateway_url` with the agent's settings,
/// calling `progress(percent)` at each tenth as samples go out, and records it done in the
/// data directory once every batch is acked. Stops early at `shutdown` (the record stays
/// "started", so the next start sends the window again).
pub async fn run(
    settings: &Settings,
    gateway_url: String,
    window: Window,
    shutdown: impl Future<Output = ()> + Send,
    mut progress: impl FnMut(u32) + Send + 'static,
) -> anyhow::Result<Outcome> {
    let not_before = UnixMillis(UnixMillis::now().0 - OLDEST_MS);
    let Some(history) = History::new(settings, window, not_before)? else {
        return Ok(Outcome {
            samples: 0,
            rejected: 0,
            complete: true,
        });
    };
    let mut config = crate::roles::agent_config(settings, gateway_url);
    config.host_token = crate::roles::host_token(settings)?;
    // Few batches in flight, so that what has gone out is close to what is stored.
    config.batch_max_samples = 500;
    config.max_unacked_batches = 4;
    config.batch_max_wait = std::time::Duration::from_millis(100);
    let (tx, rx) = tokio::sync::mpsc::channel(500);
    // One GPU after another; progress counts GPUs' shares of the whole.
    let feeder = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<u64>> {
        let gpus = history.gpu_count().max(1);
        let (mut fed, mut shown) = (0u64, 0usize);
        for n in 0..history.gpu_count() {
            let samples = history.samples(n)?;
            let len = samples.len().max(1);
            for (i, s) in samples.into_iter().enumerate() {
                if tx.blocking_send(s).is_err() {
                    return Ok(None);
                }
                fed += 1;
                let pct = (n * 100 + (i + 1) * 100 / len) / gpus;
                if pct / 10 > shown / 10 && pct < 100 {
                    shown = pct;
                    progress(pct as u32);
                }
            }
        }
        Ok(Some(fed))
    });
    let report = wattprint_agent::send_samples(&config, rx, shutdown).await?;
    // Done, or stopped by shutdown: then the receiver is gone and the feeder ends at its
    // next send, with `None`.
    let fed = feeder.await??;
    let complete = fed.is_some_and(|total| {
        report.samples_sent == total && report.samples_acked + report.samples_rejected == total
    });
    if complete {
        Record { window, done: true }.save(&settings.data_dir)?;
    }
    Ok(Outcome {
        samples: report.samples_sent,
        rejected: report.samples_rejected,
        complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Record::load(dir.path()).expect("load"), None);
        let record = Record {
            window: Window {
                from: UnixMillis(1_795_991_458_859),
                to: UnixMillis(1_796_596_258_859),
            },
            done: false,
        };
        record.save(dir.path()).expect("save");
        assert_eq!(Record::load(dir.path()).expect("load"), Some(record));
        let done = Record {
            done: true,
            ..record
        };
        done.save(dir.path()).expect("save");
        assert_eq!(Record::load(dir.path()).expect("load"), Some(done));
        assert!(!dir.path().join(format!("{MARKER_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(MARKER_FILE), "something else\n").expect("write");
        assert!(Record::load(dir.path()).is_err());
    }
}
