//! Real `wattprint` processes for the end-to-end tests: spawned from the built binary, their
//! stdout collected line by line, their stderr logged to a file, stopped with SIGINT or SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `wattprint` binary, built (or found up to date) once per test process with the same
/// cargo and profile that built the tests.
pub fn wattprint_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "wattprint", "--bin", "wattprint"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build -p wattprint failed");
        // This test binary is target/<profile>/deps/<name>; the binary is target/<profile>/.
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        profile_dir.join("wattprint")
    })
}

/// A running `wattprint` subcommand.
pub struct Node {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_log: PathBuf,
}

impl Node {
    /// Starts `wattprint <args>` with `env` added, logging stderr to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, args: &[&str], env: &[(String, String)], log_dir: &Path) -> Node {
        let stderr_log = log_dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .expect("stderr log");
        let mut child = Command::new(wattprint_bin())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            // An error exit shows its message, not a backtrace filling the stderr tail.
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        Node {
            name: name.to_owned(),
            child,
            lines,
            stderr_log,
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns it; fails the test with the
    /// process's stderr if it exits or `within` passes first.
    pub fn wait_for_line(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.starts_with(prefix))
            {
                return l.clone();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited with {status} before printing {prefix:?}; stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} printed no {prefix:?} within {within:?}; stderr:\n{}",
                self.name,
                self.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 4 KB of the process's stderr log.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let cut = text.len().saturating_sub(4096);
        let cut = (cut..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[cut..].to_owned()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT (Ctrl-C), then waits for a successful exit.
    pub fn interrupt(&mut self, within: Duration) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT");
        assert!(sent.success(), "kill -INT {pid}");
        let status = self.wait(within);
        assert!(
            status.success(),
            "{} exited with {status} after Ctrl-C; stderr:\n{}",
            self.name,
            self.stderr_tail()
        );
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; stderr:\n{}",
                self.name,
                self.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill9();
        }
    }
}

/// A TCP port free right now on 127.0.0.1 (for processes that must come back on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
