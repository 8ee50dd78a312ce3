//! The gateway's section of the `wattprint` file (`[gateway]`, `[gateway.tls]`): the serde
//! types as written and [`RawGateway::validate`], which applies the defaults and returns the
//! [`GatewaySettings`] the gateway serves with. No file is read here: the TLS files and the
//! host registry are loaded when the gateway starts, each error naming its file.

use crate::gateway::GatewayTlsFiles;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use wattprint_core::config::{invalid, InvalidConfig};

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

/// `[enricher]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEnricher {
    /// Metrics listener (`/metrics`, `/healthz`, `/readyz`; default 127.0.0.1:9465, empty:
    /// off). Validated with the other listeners in the CLI's config.
    pub metrics_listen: Option<String>,
    /// Most bus records (one GPU's samples of one agent batch each) per store write (default
    /// 65536; 1 to 65536). Kafka enricher only.
    pub batch_max_records: Option<usize>,
    /// How long a write waits for more records once the first arrived, in ms (default 1000;
    /// at most 10000). Kafka enricher only.
    pub batch_linger_ms: Option<u64>,
}

/// Validated `[enricher]` batching: how many records one store write takes, and how long it
/// waits for them. ClickHouse pays a fixed cost per insert (a part per table), so at fleet
/// scale a write of thousands of samples costs a fraction per sample of one of hundreds
/// (docs/scale-model.md); the linger bounds what that adds to freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnricherBatching {
    /// Most records per write.
    pub max_records: usize,
    /// Wait for more once the first arrived.
    pub linger: std::time::Duration,
}

impl Default for EnricherBatching {
    fn default() -> Self {
        Self {
            // The largest: a write's fixed cost (a part per table and view) is then spread the
            // most while catching up; in steady state the linger closes batches long before.
            max_records: MAX_BATCH_RECORDS,
            linger: std::time::Duration::from_millis(1_000),
        }
    }
}

/// The largest `enricher.batch_max_records`.
const MAX_BATCH_RECORDS: usize = 65_536;
/// The longest `enricher.batch_linger_ms`: freshness is promised within 10 s.
const MAX_BATCH_LINGER_MS: u64 = 10_000;

impl RawEnricher {
    /// Validates the batching of `[enricher]`.
    pub fn batching(&self) -> Result<EnricherBatching, InvalidConfig> {
        let default = EnricherBatching::default();
        let max_records = match self.batch_max_records {
            None => default.max_records,
            Some(n) if (1..=MAX_BATCH_RECORDS).contains(&n) => n,
            Some(n) => {
                return Err(invalid(format!(
                    "enricher.batch_max_records = {n}: must be 1 to {MAX_BATCH_RECORDS}"
                )))
            }
        };
        let linger = match self.batch_linger_ms {
            None => default.linger,
            Some(ms) if ms <= MAX_BATCH_LINGER_MS => std::time::Duration::from_millis(ms),
            Some(ms) => {
                return Err(invalid(format!(
                    "enricher.batch_linger_ms = {ms}: at most {MAX_BATCH_LINGER_MS} (samples \
                     must be visible within seconds)"
                )))
            }
        };
        Ok(EnricherBatching {
            max_records,
            linger,
        })
    }
}

#[cfg(test)]
mod enricher_tests {
    use super::*;

    #[test]
    fn batching_defaults_and_bounds() {
        let raw = |n, ms| RawEnricher {
            batch_max_records: n,
            batch_linger_ms: ms,
            ..RawEnricher::default()
        };
        assert_eq!(
            raw(None, None).batching().unwrap(),
            EnricherBatching::default()
        );
        let b = raw(Some(512), Some(200)).batching().unwrap();
        assert_eq!(
            (b.max_records, b.linger),
            (512, std::time::Duration::from_millis(200))
        );
        let e = raw(Some(0), None).batching().unwrap_err().to_string();
        assert!(e.contains("enricher.batch_max_records = 0"), "{e}");
        assert!(raw(Some(70_000), None).batching().is_err());
        let e = raw(None, Some(60_000)).batching().unwrap_err().to_string();
        assert!(e.contains("enricher.batch_linger_ms = 60000"), "{e}");
    }
}
