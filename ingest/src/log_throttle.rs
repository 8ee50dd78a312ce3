//! Per-host throttling of rejection logs. A host sending a flood of bad samples (a
//! misconfigured inventory: thousands of unknown GPUs a second) must not flood the log and
//! drown everything else in it. Each host may log [`LogThrottle::per_window`] rejections per
//! window; the rest are counted, and the host's first line of a later window says how many were
//! not logged. Only log lines are throttled: every refusal still goes to the ack and the
//! quarantine.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use wattprint_core::{HostId, UnixMillis};

/// Hosts tracked at most; beyond, windows that have ended are forgotten first.
const MAX_HOSTS: usize = 10_000;

/// What to do with one rejection's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// Log it.
    Log,
    /// Log it, after a line saying this many of the host's rejections were not logged in its
    /// earlier window.
    LogAfterSuppressed(u64),
    /// Do not log it (counted for the next window's line).
    Suppress,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: UnixMillis,
    logged: u32,
    suppressed: u64,
}

/// Rejection log budget per host and window.
#[derive(Debug)]
pub struct LogThrottle {
    per_window: u32,
    window_ms: i64,
    hosts: Mutex<HashMap<HostId, Window>>,
}

impl Default for LogThrottle {
    /// 20 lines per host per 10 s.
    fn default() -> Self {
        Self::new(20, 10_000)
    }
}

impl LogThrottle {
    /// At most `per_window` lines per host per `window_ms` milliseconds.
    pub fn new(per_window: u32, window_ms: i64) -> Self {
        Self {
            per_window,
            window_ms: window_ms.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The lines a host may log per window.
    pub fn per_window(&self) -> u32 {
        self.per_window
    }

    /// Whether `host`'s rejection at `now` is logged.
    pub fn admit(&self, host: &HostId, now: UnixMillis) -> LogVerdict {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
            let window_ms = self.window_ms;
            hosts.retain(|_, w| now.since(w.start) < window_ms);
            if hosts.len() >= MAX_HOSTS {
                // Every tracked host is within its window: a new host logs unthrottled
                // rather than evicting one that is being throttled.
                return LogVerdict::Log;
            }
        }
        let window = hosts.entry(host.clone()).or_insert(Window {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        let mut earlier_suppressed = 0;
        if now.since(window.start) >= self.window_ms {
            earlier_suppressed = window.suppressed;
            *window = Window {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if window.logged >= self.per_window {
            window.suppressed += 1;
            return LogVerdict::Suppress;
        }
        window.logged += 1;
        if earlier_suppressed > 0 {
            LogVerdict::LogAfterSuppressed(earlier_suppressed)
        } else {
            LogVerdict::Log
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_host_logs_its_budget_then_a_count_and_others_are_untouched() {
        let t = LogThrottle::new(3, 1000);
        let (a, b) = (HostId::from("a"), HostId::from("b"));
        let verdicts: Vec<_> = (0..10).map(|i| t.admit(&a, UnixMillis(i))).collect();
        assert_eq!(&verdicts[..3], &[LogVerdict::Log; 3]);
        assert!(verdicts[3..].iter().all(|v| *v == LogVerdict::Suppress));
        assert_eq!(t.admit(&b, UnixMillis(10)), LogVerdict::Log, "another host");
        // The next window starts with the count of what was not logged, once.
        assert_eq!(
            t.admit(&a, UnixMillis(1000)),
            LogVerdict::LogAfterSuppressed(7)
        );
        assert_eq!(t.admit(&a, UnixMillis(1001)), LogVerdict::Log);
        // A quiet window after an unthrottled one reports nothing.
        assert_eq!(t.admit(&a, UnixMillis(5000)), LogVerdict::Log);
    }

    #[test]
    fn tracked_hosts_are_bounded() {
        let t = LogThrottle::new(1, 1000);
        for i in 0..MAX_HOSTS {
            t.admit(&HostId::new(format!("h{i}")), UnixMillis(0));
        }
        // All windows open: a new host logs without being tracked.
        assert_eq!(
            t.admit(&HostId::from("new"), UnixMillis(1)),
            LogVerdict::Log
        );
        assert_eq!(
            t.admit(&HostId::from("new"), UnixMillis(2)),
            LogVerdict::Log
        );
        // Once they ended they are forgotten for it.
        assert_eq!(
            t.admit(&HostId::from("new"), UnixMillis(5000)),
            LogVerdict::Log
        );
        assert_eq!(
            t.admit(&HostId::from("new"), UnixMillis(5001)),
            LogVerdict::Suppress
        );
        assert!(t.hosts.lock().unwrap().len() <= MAX_HOSTS);
    }
}
