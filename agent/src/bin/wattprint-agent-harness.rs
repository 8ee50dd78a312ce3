//! Test-only harness: runs the agent on a replayed trace with a spool, so that tests can
//! `kill -9` a real agent process and restart it (see `tests/spool.rs`). Not for production.
//!
//! Usage: `wattprint-agent-harness GATEWAY_URL SPOOL_DIR TRACE_CSV SEED BATCH_MAX_SAMPLES`
//!
//! Replays one GPU (uuid from `SEED`, mapped to instance `i-0`) once, as fast as possible, and
//! exits when every batch is acked, printing the report as `report: {:?}` on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use wattprint_agent::replay::{replay_gpu_uuid, Pacing, ReplayConfig, ReplaySensor};
use wattprint_agent::resolver::InstanceResolver;
use wattprint_agent::{run, AgentConfig};
use wattprint_core::{HostId, InstanceId, UnixMillis};

fn main() -> ExitCode {
    match harness() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wattprint-agent-harness: {e}");
            ExitCode::FAILURE
        }
    }
}

fn harness() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, spool, trace, seed, batch] = args.as_slice() else {
        return Err(
            "usage: wattprint-agent-harness GATEWAY_URL SPOOL_DIR TRACE_CSV SEED BATCH_MAX_SAMPLES"
                .into(),
        );
    };
    let seed: u64 = seed.parse().map_err(|e| format!("SEED: {e}"))?;
    let batch: usize = batch
        .parse()
        .map_err(|e| format!("BATCH_MAX_SAMPLES: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let mut replay = ReplayConfig::new(PathBuf::from(trace));
    replay.seed = seed;
    replay.pacing = Pacing::AsFastAsPossible;
    replay.loops = Some(1);
    replay.start_at = UnixMillis(i64::try_from(now.as_millis()).map_err(|e| e.to_string())?);
    let sensor = ReplaySensor::new(replay).map_err(|e| e.to_string())?;
    let resolver =
        InstanceResolver::from_pairs(vec![(replay_gpu_uuid(seed, 0), InstanceId::from("i-0"))]);
    let mut config = AgentConfig::new(HostId::from("host-harness"), url.clone());
    config.batch_max_samples = batch;
    config.batch_max_wait = Duration::from_millis(100);
    config.reconnect_backoff_max = Duration::from_millis(400);
    config.spool_dir = Some(PathBuf::from(spool));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let report = runtime
        .block_on(run(
            config,
            Box::new(sensor),
            resolver,
            std::future::pending::<()>(),
        ))
        .map_err(|e| e.to_string())?;
    println!("report: {report:?}");
    Ok(())
}
