//! Private server processes for tests that stop or kill them (a broker restart, ClickHouse
//! down for 30 s) without disturbing the shared servers other tests use. Same binaries and
//! command lines as `scripts/servers.sh`.

use crate::process::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not come up within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("log file")
}

fn stop(child: &mut Option<Child>, signal: &str) {
    if let Some(mut c) = child.take() {
        let _ = Command::new("kill")
            .args([signal, &c.id().to_string()])
            .status();
        let _ = c.wait();
    }
}

/// A tansu broker of one test, on sqlite storage so it keeps its data across restarts.
pub struct PrivateTansu {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateTansu {
    /// Starts a broker with its state under `dir`. Needs `WPTEST_TANSU_BIN` (set by
    /// `scripts/servers.sh`).
    pub fn start(dir: &Path) -> PrivateTansu {
        std::fs::create_dir_all(dir).expect("tansu dir");
        let mut t = PrivateTansu {
            dir: dir.to_owned(),
            port: free_port(),
            child: None,
        };
        t.restart();
        t
    }

    /// `host:port` of the broker.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) on the same port and storage.
    pub fn restart(&mut self) {
        let bin = std::env::var("WPTEST_TANSU_BIN")
            .expect("WPTEST_TANSU_BIN (source scripts/servers.sh start)");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("broker.log")))
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        let addr = ([127, 0, 0, 1], self.port).into();
        wait_until("tansu", Duration::from_secs(30), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        stop(&mut self.child, "-KILL");
    }
}

impl Drop for PrivateTansu {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A ClickHouse server of one test.
pub struct PrivateClickHouse {
    dir: PathBuf,
    http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    child: Option<Child>,
}

impl PrivateClickHouse {
    /// Starts `clickhouse-server` with its data under `dir`.
    pub fn start(dir: &Path) -> PrivateClickHouse {
        std::fs::create_dir_all(dir).expect("clickhouse dir");
        let mut c = PrivateClickHouse {
            dir: dir.to_owned(),
            http_port: free_port(),
            tcp_port: free_port(),
            interserver_port: free_port(),
            child: None,
        };
        c.restart();
        c
    }

    /// Its HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Starts the server (again) on the same ports and data.
    pub fn restart(&mut self) {
        let d = |sub: &str| format!("{}/", self.dir.join(sub).display());
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--http_port={}", self.http_port))
            .arg(format!("--tcp_port={}", self.tcp_port))
            .arg(format!("--interserver_http_port={}", self.interserver_port))
            .arg(format!("--path={}", d("data")))
            .arg(format!("--tmp_path={}", d("tmp")))
            .arg(format!("--user_files_path={}", d("user_files")))
            .arg(format!("--format_schema_path={}", d("schemas")))
            .arg(format!(
                "--logger.log={}",
                self.dir.join("server.log").display()
            ))
            .arg(format!(
                "--logger.errorlog={}",
                self.dir.join("error.log").display()
            ))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir.join("stderr.log")))
            .spawn()
            .expect("starting clickhouse-server");
        self.child = Some(child);
        let ping = format!("{}/ping", self.url());
        wait_until("clickhouse", Duration::from_secs(60), || {
            http::ping_ok(&ping)
        });
    }

    /// SIGTERM and wait: the server is down until [`PrivateClickHouse::restart`].
    pub fn stop(&mut self) {
        stop(&mut self.child, "-TERM");
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        stop(&mut self.child, "-KILL");
    }
}

mod http {
    /// Whether `GET url` answers 200, over a plain blocking TCP request (no runtime needed).
    pub fn ping_ok(url: &str) -> bool {
        use std::io::{Read, Write};
        let Some(rest) = url.strip_prefix("http://") else {
            return false;
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Ok(mut s) = std::net::TcpStream::connect(host) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        if write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
            return false;
        }
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200")
    }
}
