//! Reading PEM files for TLS (the agent's client identity, the gateway's server identity and
//! client CA): checked when loaded, so a wrong file is a configuration error naming the file
//! and what it should hold, not a failed handshake later.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a PEM file cannot be used.
#[derive(Debug, Error)]
pub enum PemError {
    /// The file cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What the file is, e.g. "gateway.tls.cert".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold what it should (no PEM block of the right kind, bad base64).
    #[error("{what} {}: {message}", path.display())]
    Bad {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads a PEM file of certificates; at least one `CERTIFICATE` block is required. `what`
/// names the file in errors (its setting, e.g. `agent.tls.ca`).
pub fn read_certificates(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = read(what, path)?;
    let bad = |message: String| PemError::Bad {
        what,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM CERTIFICATE block".into()));
    }
    Ok(pem)
}

/// Reads a PEM private key file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    let pem = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| PemError::Bad {
        what,
        path: path.to_owned(),
        message: format!("holds no usable PEM private key: {e}"),
    })?;
    Ok(pem)
}
