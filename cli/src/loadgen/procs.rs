//! The processes a load test runs and measures: `wattprint gateway`, `enricher` and `query-api`
//! spawned from this binary (so each has a pid of its own), and the servers found by name.
//! CPU is read from `/proc/<pid>/stat` (utime + stime, all threads), never estimated.

use anyhow::Context;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// A running `wattprint <role>`; killed when dropped if it was not stopped.
pub struct RoleProcess {
    /// The role (`gateway`, `enricher`, `query-api`).
    pub role: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
}

impl RoleProcess {
    /// Starts `exe <role>` with `WATTPRINT_CONFIG=config`, stderr to `<dir>/<role>.log`, and
    /// waits until it prints `ready`.
    pub fn start(
        exe: &Path,
        role: &'static str,
        config: &Path,
        dir: &Path,
        within: Duration,
    ) -> anyhow::Result<RoleProcess> {
        let log = dir.join(format!("{role}.log"));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg(role)
            .env("WATTPRINT_CONFIG", config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} {role}", exe.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let mut process = RoleProcess {
            role,
            child,
            lines,
            log,
        };
        process.wait_ready(within)?;
        Ok(process)
    }

    fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let ready = self
                .lines
                .lock()
                .map(|l| l.iter().any(|line| line == "ready"))
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "wattprint {} exited with {status} before it was ready; its log: {}\n{}",
                    self.role,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "wattprint {} not ready within {} s; its log: {}",
                self.role,
                within.as_secs(),
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ctrl-C (SIGINT), then SIGKILL if it has not stopped within `within`.
    pub fn stop(&mut self, within: Duration) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!(role = self.role, "did not stop after SIGINT; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// CPU seconds (user + system, all threads) a process has used so far; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The oldest process whose command name (`/proc/<pid>/comm`, 15 characters at most) starts
/// with `prefix`: the shared ClickHouse server or broker.
pub fn find_pid(prefix: &str) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// CPU use of a set of named processes over a window.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    start: Vec<(String, u32, f64)>,
    started: Instant,
}

impl CpuMeter {
    /// Starts measuring `(name, pid)`s; processes that cannot be read are left out.
    pub fn start(processes: &[(String, u32)]) -> CpuMeter {
        CpuMeter {
            start: processes
                .iter()
                .filter_map(|(name, pid)| Some((name.clone(), *pid, cpu_seconds(*pid)?)))
                .collect(),
            started: Instant::now(),
        }
    }

    /// Cores used by each process since the start: CPU seconds / wall seconds.
    pub fn cores(&self) -> Vec<(String, f64)> {
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        self.start
            .iter()
            .filter_map(|(name, pid, at_start)| {
                Some((name.clone(), (cpu_seconds(*pid)? - at_start) / wall))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu_and_is_found_by_name() {
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let pid = std::process::id();
        assert!(cpu_seconds(pid).expect("own stat") > 0.0);
        let comm = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let found = find_pid(comm.trim_end()).expect("found by name");
        assert!(found <= pid);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
