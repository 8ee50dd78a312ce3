//! Sharing a [`Spool`] with async code: its blocking file I/O runs on tokio's blocking pool.
//!
//! Invariant: one operation at a time holds the spool (a mutex), so records are never
//! interleaved.

use super::{Spool, SpoolError};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A [`Spool`] shared with blocking tasks: every operation runs on tokio's blocking pool, so
/// file I/O and fsync never stall the async runtime.
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    dir: PathBuf,
}

impl SharedSpool {
    /// Wraps an open spool.
    pub fn new(spool: Spool) -> Self {
        let dir = spool.dir().to_owned();
        Self {
            inner: Arc::new(Mutex::new(spool)),
            dir,
        }
    }

    /// Runs `f` on the spool in a blocking task and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, SpoolError>
    where
        F: FnOnce(&mut Spool) -> Result<R, SpoolError> + Send + 'static,
        R: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half-written record behind (writes
            // are cut back on failure), so a poisoned lock is still usable.
            let mut spool = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut spool)
        })
        .await
        .map_err(|e| SpoolError::Worker {
            path: self.dir.clone(),
            message: e.to_string(),
        })?
    }
}
