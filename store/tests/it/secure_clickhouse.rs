//! The ClickHouse store over TLS with a password user, against a ClickHouse server of the
//! test's own ([`SecureClickHouse`]): Debian's `clickhouse-server` (18.16 here) with a
//! `users.xml` holding only a password user and an `https_port` serving a certificate made by
//! rcgen, signed by a CA of the test.
//!
//! Runs where the shared server runs (`WPTEST_CLICKHOUSE_URL` set); fails, rather than skips,
//! when `CI` or `WPTEST_REQUIRE_SERVERS` is set and the server binary is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::conformance::{enrich, intervals, sample, seed, total, T0};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wattprint_core::config::Secret;
use wattprint_store::clickhouse::{ClickHouseSettings, InsertDurability};
use wattprint_store::{ClickHouseStore, Store, StoreError};

const SERVER: &str = "/usr/sbin/clickhouse-server";
const USER: &str = "wattprint";
const PASSWORD: &str = "a password the test made up";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the test should run: where the ClickHouse tests run and the server binary exists.
fn should_run(test: &str) -> bool {
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some();
    let wanted = std::env::var_os("WPTEST_CLICKHOUSE_URL").is_some();
    let present = Path::new(SERVER).exists();
    assert!(
        present || !required,
        "{SERVER} is missing, and CI/WPTEST_REQUIRE_SERVERS requires the ClickHouse tests"
    );
    if !(wanted && present) {
        eprintln!("secure_clickhouse::{test} was NOT run: no ClickHouse server here");
    }
    wanted && present
}

/// A CA and the server certificate it signed for `127.0.0.1` and `localhost`, as PEM files.
fn make_pki(dir: &Path, ca_name: &str) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params
        .signed_by(&key, &rcgen::Issuer::new(ca_params, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

/// A `clickhouse-server` of one test: only user [`USER`] with [`PASSWORD`] (no passwordless
/// `default`), HTTP and HTTPS on ports of its own, data under a temporary directory.
pub struct SecureClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    https_port: u16,
    child: Option<Child>,
}

impl SecureClickHouse {
    /// Starts the server and waits until its HTTPS port answers.
    pub fn start() -> SecureClickHouse {
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path(), "wattprint test ClickHouse CA");
        std::fs::write(
            dir.path().join("users.xml"),
            format!(
                "<yandex>\n  <profiles><default></default></profiles>\n  <users>\n    \
                 <{USER}>\n      <password>{PASSWORD}</password>\n      \
                 <networks><ip>::/0</ip></networks>\n      <profile>default</profile>\n      \
                 <quota>default</quota>\n    </{USER}>\n  </users>\n  \
                 <quotas><default></default></quotas>\n</yandex>\n"
            ),
        )
        .unwrap();
        let (http_port, https_port) = (free_port(), free_port());
        let d = |sub: &str| dir.path().join(sub).display().to_string();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(SERVER)
            .arg("--config-file=/etc/clickhouse-server/config.xml")
            .arg("--")
            .arg(format!("--http_port={http_port}"))
            .arg(format!("--https_port={https_port}"))
            .arg(format!("--tcp_port={}", free_port()))
            .arg(format!("--interserver_http_port={}", free_port()))
            .arg(format!("--path={}/", d("data")))
            .arg(format!("--tmp_path={}/", d("tmp")))
            .arg(format!("--user_files_path={}/", d("user_files")))
            .arg(format!("--format_schema_path={}/", d("schemas")))
            .arg(format!("--logger.log={}", d("server.log")))
            .arg(format!("--logger.errorlog={}", d("error.log")))
            .arg(format!("--users_config={}", d("users.xml")))
            .arg(format!(
                "--openSSL.server.certificateFile={}",
                d("server.pem")
            ))
            .arg(format!(
                "--openSSL.server.privateKeyFile={}",
                d("server.key")
            ))
            // No DH parameters: rustls negotiates ECDHE only.
            .arg("--openSSL.server.dhParamsFile=")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting clickhouse-server");
        let server = SecureClickHouse {
            dir,
            http_port,
            https_port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = ([127, 0, 0, 1], https_port).into();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the test's clickhouse-server did not open its HTTPS port; see {}",
                server.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    /// `https://127.0.0.1:<port>`.
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.https_port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Settings for the test's user over HTTPS, trusting the test's CA.
    pub fn settings(&self, database: &str) -> ClickHouseSettings {
        ClickHouseSettings {
            user: Some(USER.into()),
            password: Some(Secret::new(PASSWORD)),
            ca_file: Some(self.ca_file()),
            ..ClickHouseSettings::new(self.https_url(), database)
        }
    }
}

impl Drop for SecureClickHouse {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Connects, expecting a refusal; its message.
async fn refused(settings: &ClickHouseSettings) -> String {
    match ClickHouseStore::connect_with(settings).await {
        Ok(_) => panic!("connected with {settings:?}"),
        Err(e @ (StoreError::Backend { .. } | StoreError::Invalid(_))) => {
            // The client's error chain: the TLS or HTTP reason is in the sources.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_over_tls_with_a_password_and_refuses_wrong_ones() {
    if !should_run("the_store_works_over_tls_with_a_password_and_refuses_wrong_ones") {
        return;
    }
    let server = SecureClickHouse::start();
    let settings = server.settings("wp_secure");

    // The right user, password and CA: migrations, writes and reads over TLS.
    let store = ClickHouseStore::connect_with(&settings).await.unwrap();
    assert!(store.server_version().starts_with(char::is_numeric));
    seed(&store).await;
    let samples = [
        enrich(sample("GPU-A1", "i-a", 1, T0, T0 + 1_000, 250_000), "acme"),
        enrich(
            sample("GPU-A1", "i-a", 2, T0 + 1_000, T0 + 2_000, 260_000),
            "acme",
        ),
    ];
    let out = store.write_samples(&samples).await.unwrap();
    assert_eq!(out.inserted, 2);
    assert_eq!(total(&intervals(&store, "acme", "i-a").await), 510_000);

    let wrong_password = ClickHouseSettings {
        password: Some(Secret::new("not the password")),
        ..settings.clone()
    };
    let text = refused(&wrong_password).await;
    eprintln!("wrong password: {text}");
    assert!(text.contains("Wrong password for user wattprint"), "{text}");
    assert!(!text.contains("not the password"), "{text}");

    let no_password = ClickHouseSettings {
        user: None,
        password: None,
        ..settings.clone()
    };
    let text = refused(&no_password).await;
    assert!(text.contains("Unknown user default"), "{text}");

    let other_dir = tempfile::tempdir().unwrap();
    make_pki(other_dir.path(), "another CA");
    let unknown_ca = ClickHouseSettings {
        ca_file: Some(other_dir.path().join("ca.pem")),
        ..settings.clone()
    };
    let text = refused(&unknown_ca).await;
    eprintln!("unknown CA: {text}");
    assert!(text.contains("UnknownIssuer"), "{text}");

    // No private CA configured: the Mozilla roots do not know the test's CA either.
    let text = refused(&ClickHouseSettings {
        ca_file: None,
        ..settings.clone()
    })
    .await;
    assert!(text.contains("UnknownIssuer"), "{text}");

    // The same credentials work over plain HTTP too: TLS is the URL's choice.
    let plain = ClickHouseSettings {
        ca_file: None,
        ..ClickHouseSettings::new(server.http_url(), "wp_secure")
    };
    let plain = ClickHouseSettings {
        user: settings.user.clone(),
        password: settings.password.clone(),
        ..plain
    };
    let again = ClickHouseStore::connect_with(&plain).await.unwrap();
    assert_eq!(total(&intervals(&again, "acme", "i-a").await), 510_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_durability_settings_are_applied_or_refused_by_server_version() {
    if !should_run("insert_durability_settings_are_applied_or_refused_by_server_version") {
        return;
    }
    let server = SecureClickHouse::start();
    let quorum = ClickHouseSettings {
        durability: InsertDurability {
            insert_quorum: Some(2),
            insert_quorum_timeout_ms: Some(5_000),
            fsync_after_insert: None,
        },
        ..server.settings("wp_quorum")
    };
    // A single server with non-replicated tables: the quorum is accepted (and ignored by the
    // server, which the store logs); writes still succeed.
    let store = ClickHouseStore::connect_with(&quorum).await.unwrap();
    seed(&store).await;
    let s = enrich(sample("GPU-A1", "i-a", 1, T0, T0 + 1_000, 250_000), "acme");
    assert_eq!(store.write_samples(&[s]).await.unwrap().inserted, 1);

    let fsync = ClickHouseSettings {
        durability: InsertDurability {
            fsync_after_insert: Some(true),
            ..InsertDurability::default()
        },
        ..server.settings("wp_fsync")
    };
    let outcome = ClickHouseStore::connect_with(&fsync).await;
    let modern = wattprint_store::clickhouse::supports_modern(store.server_version());
    match outcome {
        Ok(_) => assert!(modern, "fsync accepted by {}", store.server_version()),
        Err(e) => {
            assert!(!modern, "{e}");
            let text = e.to_string();
            assert!(
                text.contains("store.fsync_after_insert needs ClickHouse 23.8 or later"),
                "{text}"
            );
        }
    }
    // Off is what an old server does anyway: accepted everywhere.
    let off = ClickHouseSettings {
        durability: InsertDurability {
            fsync_after_insert: Some(false),
            ..InsertDurability::default()
        },
        ..server.settings("wp_fsync")
    };
    ClickHouseStore::connect_with(&off).await.unwrap();
}
