//! The gateway's section of the `wattprint` file (`[gateway]`, `[gateway.tls]`): the serde
//! types as written and [`RawGateway::validate`], which applies the defaults and returns the
//! [`GatewaySettings`] the gateway serves with. No file is read here: the TLS files and the
//! host registry are loaded when the gateway starts, each error naming its file.

use crate::gateway::GatewayTlsFiles;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use wattprint_core::config::InvalidConfig;

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    /// gRPC listen address (default 127.0.0.1:50051).
    pub listen: Option<SocketAddr>,
    /// TLS (default none: plaintext, for the embedded mode and localhost dev only).
    pub tls: Option<RawGatewayTls>,
    /// Host registry: the agents allowed to stream, with their token hashes (default none:
    /// any host may stream). See `wattprint_ingest::hosts`.
    pub hosts_file: Option<PathBuf>,
    /// Metrics listener (`/metrics`, `/healthz`, `/readyz`; default 127.0.0.1:9464, empty:
    /// off). Validated with the other listeners in the CLI's config.
    pub metrics_listen: Option<String>,
}

/// `[gateway.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayTls {
    /// PEM certificate chain of the gateway.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA bundle whose client certificates are accepted; when set, agents must present
    /// one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Validated `[gateway]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// TLS files (`None`: plaintext).
    pub tls: Option<GatewayTlsFiles>,
    /// Host registry file (`None`: any host may stream).
    pub hosts_file: Option<PathBuf>,
}

/// The default gateway listen address.
pub const DEFAULT_GATEWAY_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 50051);

impl RawGateway {
    /// Validates `[gateway]`.
    pub fn validate(&self) -> Result<GatewaySettings, InvalidConfig> {
        Ok(GatewaySettings {
            listen: self.listen.unwrap_or(DEFAULT_GATEWAY_LISTEN.into()),
            tls: self.tls.as_ref().map(|t| GatewayTlsFiles {
                cert: t.cert.clone(),
                key: t.key.clone(),
                client_ca: t.client_ca.clone(),
            }),
            hosts_file: self.hosts_file.clone(),
        })
    }
}
