//! Why a spool operation fails.
//!
//! Every error names the file or directory concerned, so an operator can act on the log line
//! alone; [`io_err`] is the one way an I/O error becomes a [`SpoolError`].

use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Why a spool operation failed. Every variant names the file or directory concerned.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// A file system call failed.
    #[error("spool: cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "fsync".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or a still-running previous instance) holds the spool.
    #[error("spool directory {path} is locked by another agent (waited {waited:?})")]
    Locked {
        /// The spool directory.
        path: PathBuf,
        /// How long the lock was waited for.
        waited: Duration,
    },
    /// A record read back does not match its checksum or does not decode.
    #[error("spool record at {path} offset {offset} is damaged: {reason}")]
    Damaged {
        /// The segment file.
        path: PathBuf,
        /// Offset of the record's header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The batch is not (or no longer) in the spool.
    #[error("batch {batch_seq} is not in the spool at {path}")]
    NotFound {
        /// The spool directory.
        path: PathBuf,
        /// The batch asked for.
        batch_seq: u64,
    },
    /// A batch too large for one record.
    #[error("batch {batch_seq} ({bytes} bytes) is too large for the spool at {path}")]
    TooLarge {
        /// The spool directory.
        path: PathBuf,
        /// The batch.
        batch_seq: u64,
        /// Its encoded size.
        bytes: usize,
    },
    /// The blocking task running a spool operation failed (panicked).
    #[error("spool at {path}: the I/O task failed: {message}")]
    Worker {
        /// The spool directory.
        path: PathBuf,
        /// The task's failure.
        message: String,
    },
}

pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}
