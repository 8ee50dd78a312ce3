//! Liveness of a process's main loops, for `/healthz`: each loop holds a [`Heartbeat`] and
//! beats it every time it turns (idle waits included); `/healthz` answers 503 while a loop
//! has not beaten for longer than its `max_silence`. A dropped heartbeat (its loop ended) is
//! no longer watched. Process-wide, like the metrics registry, so every listener of the
//! process (the metrics listener, the query API's own `/healthz`) sees the same loops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// How long a loop may stay silent by default before `/healthz` fails (`docs/metrics.md`).
pub const DEFAULT_MAX_SILENCE: Duration = Duration::from_secs(60);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
static LOOPS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

#[derive(Debug)]
struct Slot {
    name: String,
    max_silence: Duration,
    /// Milliseconds since [`EPOCH`] of the last beat.
    last_ms: AtomicU64,
}

fn now_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One watched loop; beat it each turn. Cloning shares the loop; dropping every clone stops
/// the watch.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<Slot>);

impl Heartbeat {
    /// Watches a loop named `name` (`enricher`, …), stale after `max_silence` without a beat.
    /// Counts as a beat.
    pub fn new(name: &str, max_silence: Duration) -> Self {
        let slot = Arc::new(Slot {
            name: name.to_owned(),
            max_silence,
            last_ms: AtomicU64::new(now_ms()),
        });
        let mut loops = LOOPS.lock().unwrap_or_else(PoisonError::into_inner);
        loops.retain(|w| w.strong_count() > 0);
        loops.push(Arc::downgrade(&slot));
        Self(slot)
    }

    /// The loop turned now.
    pub fn beat(&self) {
        self.0.last_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// The watched loops silent for longer than their `max_silence`: name and silence.
pub fn stale_loops() -> Vec<(String, Duration)> {
    let now = now_ms();
    let loops = LOOPS.lock().unwrap_or_else(PoisonError::into_inner);
    loops
        .iter()
        .filter_map(Weak::upgrade)
        .filter_map(|slot| {
            let silent =
                Duration::from_millis(now.saturating_sub(slot.last_ms.load(Ordering::Relaxed)));
            (silent > slot.max_silence).then(|| (slot.name.clone(), silent))
        })
        .collect()
}

/// What `/healthz` answers: `Ok` when every loop turns, else the stale loops in words.
pub fn check() -> Result<(), String> {
    let stale = stale_loops();
    if stale.is_empty() {
        return Ok(());
    }
    let words: Vec<String> = stale
        .iter()
        .map(|(name, silent)| format!("{name} loop silent for {} s", silent.as_secs()))
        .collect();
    Err(words.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_loop_is_stale_until_it_beats_or_ends() {
        let name = "liveness-unit-test";
        let mine = || stale_loops().into_iter().filter(|(n, _)| n == name).count();
        let heartbeat = Heartbeat::new(name, Duration::from_millis(30));
        assert_eq!(mine(), 0, "fresh");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(mine(), 1, "silent past its limit");
        assert!(check().unwrap_err().contains(name));
        heartbeat.beat();
        assert_eq!(mine(), 0, "beaten again");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(mine(), 1);
        drop(heartbeat);
        assert_eq!(mine(), 0, "an ended loop is not watched");
    }
}
