//! What a restarted agent resumes from: each GPU's counter chain position (the end of the last
//! span it handed to the sender, and the counter there) and the run's sequence epoch, in a
//! small text file in the spool directory, replaced atomically (temp file, fsync, rename).
//!
//! On restart each GPU's chain resumes there, so the first reading bridges the downtime with
//! the counter delta ([`crate::clock`]); a counter below the stored one means the driver
//! reloaded, and the chain restarts without a bridge. The next run's sequence epoch is above
//! the stored one even when the wall clock went back across the restart, so its sequence
//! numbers stay above every number already sent.
//!
//! The file is rewritten after every round of readings (without fsync, which a process crash
//! does not need) and fsynced at most every [`FSYNC_EVERY`] and at exit. After a power loss it
//! may be that old: the bridge then starts before spans already sent, and the store refuses it
//! as an overlap (energy lost, never doubled). Unpaced sensors (a replay in virtual time, which
//! reads back to back) write it at most every [`UNPACED_WRITE_EVERY`] and at exit, so only a
//! crash of such a replay can leave it behind what was sent.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;
use wattprint_core::{GpuUuid, Millijoules, UnixMillis};

/// The state file's name inside the spool directory.
pub const STATE_FILE: &str = "clock-state";

/// Longest time between two fsyncs of the state file.
pub const FSYNC_EVERY: Duration = Duration::from_secs(10);

/// Shortest time between two writes for an unpaced sensor.
pub const UNPACED_WRITE_EVERY: Duration = Duration::from_millis(250);

const HEADER: &str = "wattprint-agent-clock-state 1";

/// Why the state file could not be read or written.
#[derive(Debug, Error)]
pub enum ClockStateError {
    /// Reading, writing or renaming failed.
    #[error("cannot {action} the agent's clock state {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("the agent's clock state {}, line {line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One GPU's chain position: the end of the last span sent and the counter there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMark {
    /// The GPU.
    pub gpu: GpuUuid,
    /// End of the last span handed to the sender.
    pub end: UnixMillis,
    /// The GPU's energy counter at that end.
    pub counter: Millijoules,
}

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClockState {
    /// The sequence epoch of the run that wrote it ([`wattprint_core::sample::seq_of`]).
    pub run_epoch_secs: u64,
    /// Each GPU's position.
    pub gpus: Vec<GpuMark>,
}

impl ClockState {
    /// Reads the state from `dir` (`None`: no file, a first start).
    pub fn load(dir: &Path) -> Result<Option<ClockState>, ClockStateError> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ClockStateError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        let bad = |line: usize, message: String| ClockStateError::Malformed {
            path: path.clone(),
            line,
            message,
        };
        let mut state = ClockState::default();
        for (i, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let num = |w: &str| {
                w.parse::<i64>()
                    .map_err(|e| bad(i + 1, format!("{w:?}: {e}")))
            };
            match words.as_slice() {
                _ if i == 0 && line != HEADER => {
                    return Err(bad(1, format!("expected the header {HEADER:?}")))
                }
                _ if i == 0 => {}
                ["run_epoch_secs", secs] => state.run_epoch_secs = num(secs)?.max(0) as u64,
                ["gpu", uuid, end, counter] => state.gpus.push(GpuMark {
                    gpu: GpuUuid::new((*uuid).to_owned()),
                    end: UnixMillis(num(end)?),
                    counter: Millijoules(num(counter)?.max(0) as u64),
                }),
                [] => {}
                _ => return Err(bad(i + 1, format!("unexpected line {line:?}"))),
            }
        }
        Ok(Some(state))
    }

    /// The stored position of `gpu`.
    pub fn mark(&self, gpu: &GpuUuid) -> Option<&GpuMark> {
        self.gpus.iter().find(|m| &m.gpu == gpu)
    }

    /// Replaces the file in `dir` atomically (temp file, rename); with `fsync`, durably.
    pub fn save(&self, dir: &Path, fsync: bool) -> Result<(), ClockStateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let mut text = format!("{HEADER}\nrun_epoch_secs {}\n", self.run_epoch_secs);
        for m in &self.gpus {
            text.push_str(&format!("gpu {} {} {}\n", m.gpu, m.end.0, m.counter.0));
        }
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| ClockStateError::Io {
                action,
                path,
                source,
            }
        };
        let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        file.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
        if fsync {
            file.sync_all().map_err(io("fsync", &tmp))?;
        }
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io("replace", &path))?;
        if fsync {
            #[cfg(unix)]
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("fsync", dir))?;
        }
        Ok(())
    }
}

/// Writes the state as the sampling loop goes: after each round, fsyncing at most every
/// [`FSYNC_EVERY`]. A failure is logged once per kind and never stops sampling.
#[derive(Debug)]
pub struct StateWriter {
    dir: PathBuf,
    state: ClockState,
    /// Where each GPU's mark is in `state.gpus` (a replay agent plays thousands).
    index: HashMap<GpuUuid, usize>,
    last_fsync: Option<Instant>,
    last_write: Option<Instant>,
    /// Shortest time between two writes that are not forced.
    write_every: Duration,
    failing: bool,
}

impl StateWriter {
    /// A writer of the state of run `run_epoch_secs` into `dir`.
    pub fn new(dir: PathBuf, run_epoch_secs: u64) -> Self {
        Self {
            dir,
            state: ClockState {
                run_epoch_secs,
                gpus: Vec::new(),
            },
            index: HashMap::new(),
            last_fsync: None,
            last_write: None,
            write_every: Duration::ZERO,
            failing: false,
        }
    }

    /// Writes at most every `every` unless forced (unpaced sensors).
    pub fn with_write_every(mut self, every: Duration) -> Self {
        self.write_every = every;
        self
    }

    /// Records `gpu`'s position (in memory; [`StateWriter::flush`] writes it).
    pub fn set(&mut self, gpu: &GpuUuid, end: UnixMillis, counter: Millijoules) {
        match self.index.get(gpu) {
            Some(&i) => {
                let m = &mut self.state.gpus[i];
                (m.end, m.counter) = (end, counter);
            }
            None => {
                self.index.insert(gpu.clone(), self.state.gpus.len());
                self.state.gpus.push(GpuMark {
                    gpu: gpu.clone(),
                    end,
                    counter,
                });
            }
        }
    }

    /// Writes the state; `durable` forces an fsync (at exit).
    pub fn flush(&mut self, durable: bool) {
        if !durable
            && self
                .last_write
                .is_some_and(|t| t.elapsed() < self.write_every)
        {
            return;
        }
        self.last_write = Some(Instant::now());
        let fsync = durable || self.last_fsync.is_none_or(|t| t.elapsed() >= FSYNC_EVERY);
        match self.state.save(&self.dir, fsync) {
            Ok(()) => {
                if fsync {
                    self.last_fsync = Some(Instant::now());
                }
                if std::mem::take(&mut self.failing) {
                    tracing::info!("clock state written again");
                }
            }
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "cannot write the clock state; a restart will not bridge its downtime");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_replaces_the_file_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ClockState::load(dir.path()).expect("load"), None);
        let mut w = StateWriter::new(dir.path().to_owned(), 1_800_000_000);
        w.set(&GpuUuid::from("GPU-a"), UnixMillis(5), Millijoules(7));
        w.set(&GpuUuid::from("GPU-b"), UnixMillis(6), Millijoules(8));
        w.set(&GpuUuid::from("GPU-a"), UnixMillis(9), Millijoules(10));
        w.flush(true);
        let state = ClockState::load(dir.path()).expect("load").expect("state");
        assert_eq!(state.run_epoch_secs, 1_800_000_000);
        assert_eq!(
            state.mark(&GpuUuid::from("GPU-a")),
            Some(&GpuMark {
                gpu: GpuUuid::from("GPU-a"),
                end: UnixMillis(9),
                counter: Millijoules(10)
            })
        );
        assert_eq!(state.gpus.len(), 2);
        assert!(!dir.path().join(format!("{STATE_FILE}.tmp")).exists());
        std::fs::write(dir.path().join(STATE_FILE), "something else\n").expect("write");
        let err = ClockState::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
