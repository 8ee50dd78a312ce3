//! How the agent proves who it is to the gateway: TLS with a client certificate (mTLS) and a
//! host token.
//!
//! - [`AgentTlsFiles`]: the CA bundle that signed the gateway's certificate (the only roots
//!   trusted: no system roots), the agent's client certificate chain and its private key, and
//!   optionally the name to expect in the gateway's certificate (SNI; default: the URL's host).
//!   The files are read and parsed up front ([`client_tls_config`]) so that a missing file or
//!   bad PEM is a configuration error naming the file, not a failed handshake later.
//! - [`HostToken`]: a secret shared with the gateway's host registry (which stores only its
//!   SHA-256). It is sent on every stream as `authorization: Bearer <token>`, beside the host
//!   id in `x-wattprint-host-id`.
//!
//! Plaintext (`http://` gateway URL, no TLS files) stays available for the embedded
//! single-process mode and localhost development; production uses `https://` with mTLS and a
//! host token (see `docs/deployment.md`, "Securing the agent ↔ gateway link").

use std::path::{Path, PathBuf};
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use wattprint_runtime::pem::{read_certificates, read_private_key, PemError};

/// Metadata key carrying the agent's host id on every stream.
pub const HOST_ID_HEADER: &str = "x-wattprint-host-id";

/// Shortest host token accepted: 16 characters (a token is a secret, not a password).
pub const MIN_TOKEN_LEN: usize = 16;

/// The files of the agent's TLS identity and trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTlsFiles {
    /// PEM bundle of the CA certificate(s) that signed the gateway's certificate.
    pub ca: PathBuf,
    /// PEM certificate chain of this agent (leaf first), signed by the CA the gateway trusts.
    pub cert: PathBuf,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Name the gateway's certificate must carry (default: the host of the gateway URL).
    pub domain: Option<String>,
}

/// Why the agent's TLS files or host token cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A TLS file cannot be read or does not hold what it should.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// The host token file cannot be read.
    #[error("cannot read host token file {}: {source}", path.display())]
    ReadToken {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The files parse but do not make a TLS configuration (e.g. key and certificate differ).
    #[error("agent TLS configuration rejected: {0}")]
    Config(String),
    /// The host token file is empty, too short or not a valid header value.
    #[error("host token file {}: {message}", path.display())]
    BadToken {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Loads and checks the files into tonic's client TLS settings: only `ca` is trusted, the
/// agent presents `cert` with `key`, and the gateway must be `domain` when set.
pub fn client_tls_config(files: &AgentTlsFiles) -> Result<ClientTlsConfig, TlsError> {
    let ca = read_certificates("agent.tls.ca", &files.ca)?;
    let cert = read_certificates("agent.tls.cert", &files.cert)?;
    let key = read_private_key("agent.tls.key", &files.key)?;
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .assume_http2(true);
    if let Some(domain) = &files.domain {
        config = config.domain_name(domain.clone());
    }
    Ok(config)
}

/// Applies the agent's TLS settings to `endpoint` (an `https://` URL).
pub fn apply(endpoint: Endpoint, files: &AgentTlsFiles) -> Result<Endpoint, TlsError> {
    let config = client_tls_config(files)?;
    endpoint
        .tls_config(config)
        .map_err(|e| TlsError::Config(error_chain(&e)))
}

/// The secret a host proves itself with. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct HostToken(String);

impl std::fmt::Debug for HostToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostToken(<redacted>)")
    }
}

impl HostToken {
    /// A token from its text (surrounding whitespace removed). It must be at least
    /// [`MIN_TOKEN_LEN`] visible ASCII characters.
    pub fn new(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token has {} characters, fewer than {MIN_TOKEN_LEN}",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be visible ASCII characters (no spaces)".into());
        }
        Ok(Self(token.to_owned()))
    }

    /// Reads the token from a file holding it (whitespace around it is ignored).
    pub fn from_file(path: &Path) -> Result<Self, TlsError> {
        let text = std::fs::read_to_string(path).map_err(|source| TlsError::ReadToken {
            path: path.to_owned(),
            source,
        })?;
        Self::new(&text).map_err(|message| TlsError::BadToken {
            path: path.to_owned(),
            message,
        })
    }

    /// The token itself (to put on the wire).
    pub fn secret(&self) -> &str {
        &self.0
    }
}

/// An error with its sources, `a: b: c`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let t = HostToken::new("  0123456789abcdef\n").unwrap();
        assert_eq!(t.secret(), "0123456789abcdef");
        assert_eq!(format!("{t:?}"), "HostToken(<redacted>)");
        assert!(HostToken::new("short")
            .unwrap_err()
            .contains("fewer than 16"));
        assert!(HostToken::new("0123456789 abcdef")
            .unwrap_err()
            .contains("visible ASCII"));
    }

    #[test]
    fn missing_and_non_pem_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("wp-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let err = read_certificates("agent.tls.ca", &junk).unwrap_err();
        assert!(
            err.to_string()
                .contains("junk.pem: holds no PEM CERTIFICATE block"),
            "{err}"
        );
        let err = read_private_key("agent.tls.key", &junk).unwrap_err();
        assert!(
            err.to_string().contains("holds no usable PEM private key"),
            "{err}"
        );
        let missing = dir.join("missing.pem");
        let err = read_certificates("agent.tls.cert", &missing).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read agent.tls.cert "),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
