//! How the store reaches ClickHouse and how durable an acknowledged insert is:
//! [`ClickHouseSettings`] (URL, user and password, the CA an `https://` server must chain to)
//! and [`InsertDurability`] (`insert_quorum`, fsync of inserted parts).
//!
//! - Credentials travel in the `X-ClickHouse-User` / `X-ClickHouse-Key` headers, never in the
//!   URL; the password is a [`Secret`] (`Debug` redacts it).
//! - `https://` is verified by rustls against `ca_file` alone when set (a private CA), or the
//!   Mozilla roots otherwise. There is no way to turn verification off.
//! - `insert_quorum` is sent with every query: an `INSERT` then returns only once that many
//!   replicas hold the part. ClickHouse applies it to `Replicated*` tables only; on others it
//!   is silently ignored, so [`check_quorum`] warns when the tables are not replicated.
//! - `fsync_after_insert` sets the MergeTree settings `fsync_after_insert` and
//!   `fsync_part_directory` on every table, so an acknowledged insert is on disk. Servers
//!   older than 23.8 (the 18.16 test server) do not have them: asking for them there is an
//!   error at connect, not a silent no-op.

use super::ch_err;
use crate::StoreError;
use ::clickhouse::sql::Identifier;
use ::clickhouse::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::config::Secret;

/// Where the ClickHouse store is and how it connects.
#[derive(Debug, Clone, PartialEq)]
pub struct ClickHouseSettings {
    /// HTTP(S) URL, e.g. `https://clickhouse.example.net:8443`.
    pub url: String,
    /// Database, created if absent.
    pub database: String,
    /// User (ClickHouse's `default` when unset).
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<Secret>,
    /// CA bundle (PEM) an `https://` server's certificate must chain to; the Mozilla roots
    /// when unset.
    pub ca_file: Option<PathBuf>,
    /// How durable an acknowledged insert is.
    pub durability: InsertDurability,
}

impl ClickHouseSettings {
    /// `url` and `database`, no credentials, default durability.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            ca_file: None,
            durability: InsertDurability::default(),
        }
    }
}

/// How durable an acknowledged insert is (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsertDurability {
    /// Replicas that must hold an insert before it is acknowledged (`insert_quorum`); unset
    /// or 0: the server's default (off).
    pub insert_quorum: Option<u32>,
    /// How long an insert waits for its quorum (`insert_quorum_timeout`, ms).
    pub insert_quorum_timeout_ms: Option<u64>,
    /// Sets the tables' `fsync_after_insert` and `fsync_part_directory` (ClickHouse ≥ 23.8);
    /// unset leaves them as they are.
    pub fsync_after_insert: Option<bool>,
}

/// Keep-alive of the connections to ClickHouse, as the client's default has it.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// ClickHouse closes idle connections after 3 s; the pool drops them first.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `settings`, not yet connected: URL, credentials, TLS roots, quorum options.
pub(crate) fn client(settings: &ClickHouseSettings) -> Result<Client, StoreError> {
    let url = &settings.url;
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        if rest
            .split('/')
            .next()
            .is_some_and(|authority| authority.contains('@'))
        {
            return Err(StoreError::Invalid(
                "the ClickHouse URL must not carry credentials: set store.user and \
                 store.password_file or store.password_env"
                    .into(),
            ));
        }
    }
    let https = url.starts_with("https://");
    if settings.ca_file.is_some() && !https {
        return Err(StoreError::Invalid(format!(
            "a CA file is set for ClickHouse but {url} is not an https:// URL"
        )));
    }
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.enforce_http(false);
    let mut base = if https {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(settings)?)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Client::with_http_client(
            HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build(connector),
        )
    } else {
        Client::with_http_client(
            HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .build(http),
        )
    }
    .with_url(url);
    if let Some(user) = &settings.user {
        base = base.with_user(user);
    }
    if let Some(password) = &settings.password {
        base = base.with_password(password.expose());
    }
    let d = settings.durability;
    if let Some(q) = d.insert_quorum {
        base = base.with_option("insert_quorum", q.to_string());
    }
    if let Some(ms) = d.insert_quorum_timeout_ms {
        base = base.with_option("insert_quorum_timeout", ms.to_string());
    }
    Ok(base)
}

/// rustls with `ca_file`'s certificates as the only roots, or the Mozilla roots.
fn tls_config(settings: &ClickHouseSettings) -> Result<rustls::ClientConfig, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            let unreadable = |e: &dyn std::fmt::Display| {
                StoreError::Invalid(format!(
                    "ClickHouse CA file {}: cannot read it: {e}",
                    path.display()
                ))
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| unreadable(&e))?
                .collect::<Result<_, _>>()
                .map_err(|e| unreadable(&e))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StoreError::Invalid(format!(
                    "ClickHouse CA file {}: no certificate in it",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Invalid(format!("TLS to ClickHouse: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Sets `fsync_after_insert` and `fsync_part_directory` on every table when configured; an
/// error on a server that lacks them (`modern` false), naming its version.
pub(crate) async fn apply_fsync(
    client: &Client,
    durability: &InsertDurability,
    modern: bool,
    server_version: &str,
) -> Result<(), StoreError> {
    const OP: &str = "setting fsync of ClickHouse inserts";
    let Some(on) = durability.fsync_after_insert else {
        return Ok(());
    };
    if !modern {
        if !on {
            return Ok(()); // Off is what such a server does anyway.
        }
        return Err(StoreError::Invalid(format!(
            "store.fsync_after_insert needs ClickHouse 23.8 or later; the server is \
             {server_version}"
        )));
    }
    let v = u8::from(on);
    let tables: Vec<String> = client
        .query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() \
             AND engine LIKE '%MergeTree'",
        )
        .fetch_all()
        .await
        .map_err(ch_err(OP))?;
    for table in &tables {
        client
            .query(&format!(
                "ALTER TABLE ? MODIFY SETTING fsync_after_insert = {v}, fsync_part_directory = {v}"
            ))
            .bind(Identifier(table.as_str()))
            .execute()
            .await
            .map_err(ch_err(OP))?;
    }
    tracing::info!(fsync = on, "fsync of inserted parts set on every table");
    Ok(())
}

/// Warns when `insert_quorum` above 1 is set but the samples table is not replicated (the
/// server then ignores the quorum).
pub(crate) async fn check_quorum(
    client: &Client,
    durability: &InsertDurability,
) -> Result<(), StoreError> {
    let Some(quorum) = durability.insert_quorum.filter(|q| *q > 1) else {
        return Ok(());
    };
    let engine: String = client
        .query("SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'samples'")
        .fetch_one()
        .await
        .map_err(ch_err("reading the engine of the samples table"))?;
    if engine.starts_with("Replicated") || engine.starts_with("Shared") {
        tracing::info!(quorum, %engine, "inserts wait for their quorum");
    } else {
        tracing::warn!(quorum, %engine,
            "store.insert_quorum has no effect: ClickHouse applies it to Replicated tables only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &ClickHouseSettings) -> String {
        match client(s) {
            Ok(_) => panic!("{s:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn credentials_stay_out_of_urls_and_tls_files_need_https() {
        let mut s = ClickHouseSettings::new("https://u:pw@ch.example.net:8443", "wp");
        let err = refused(&s);
        assert!(
            err.contains("must not carry credentials") && !err.contains("pw@"),
            "{err}"
        );
        s.url = "http://ch.example.net:8123".into();
        s.ca_file = Some("/etc/ca.pem".into());
        assert!(refused(&s).contains("not an https:// URL"));
        s.url = "https://ch.example.net:8443".into();
        s.ca_file = Some("/nonexistent/ca.pem".into());
        let err = refused(&s);
        assert!(err.contains("/nonexistent/ca.pem: cannot read it"), "{err}");
        s.ca_file = None;
        assert!(client(&s).is_ok());
    }

    #[test]
    fn the_password_is_redacted() {
        let mut s = ClickHouseSettings::new("http://127.0.0.1:8123", "wp");
        s.password = Some(Secret::new("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
