//! The spool directory: segment file names, listing, opening for append, making creations
//! and deletions durable, and the advisory lock that keeps one agent per spool.
//!
//! Invariant: segment names sort by their first `batch_seq` (20 zero-padded digits), so the
//! directory listing is the segments' order.

use super::error::io_err;
use super::{SpoolError, LOCK_WAIT};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(super) const LOCK_FILE: &str = "LOCK";
pub(super) const SEGMENT_PREFIX: &str = "seg-";
pub(super) const SEGMENT_SUFFIX: &str = ".log";

pub(super) fn segment_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The segment files in `dir`, by first `batch_seq`.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let seq = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn open_append(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err("open", path))
}

/// Makes file creations and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Takes the spool's advisory lock, waiting up to [`LOCK_WAIT`] (a previous instance may still
/// be finishing its last write). The lock goes with the process, so a killed agent never
/// leaves it behind.
pub(super) fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let began = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if began.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    path: dir.to_owned(),
                    waited: began.elapsed(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
    }
}
