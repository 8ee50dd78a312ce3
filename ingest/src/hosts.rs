//! The gateway's host registry: which agents may stream, proved by a host token and, for hosts
//! that name one, by the client certificate of the mTLS connection.
//!
//! # File
//!
//! ```toml
//! version = 1
//!
//! [[hosts]]
//! id = "gpu-host-017"                      # the agent's host_id
//! token_sha256 = "9f86d081884c7d65…"       # SHA-256 of the host token, 64 hex digits
//! cert_name = "gpu-host-017.agents.example" # optional: a DNS name the client certificate
//!                                           # must carry (subjectAltName)
//!
//! [[hosts]]
//! id = "guest-i-0a12"                      # an in_guest agent, inside a tenant's VM
//! token_sha256 = "…"
//! instance = "i-0a12"                      # bound: it may report this instance only
//! ```
//!
//! A credential bound to an instance (`instance`) is the tenant's own agent: the gateway
//! refuses its samples for any other instance and marks every one it accepts
//! `guest_reported`, whatever the agent sent, so the tenant's word is never billed as the
//! provider's measurement.
//!
//! Only hashes are stored: a leaked registry does not let anyone stream as a host. A presented
//! token is hashed and compared in constant time.
//!
//! # Checks, per stream (before any batch is read)
//!
//! | what is wrong | status |
//! | --- | --- |
//! | no `x-wattprint-host-id` metadata, or a host id not in the registry | `UNAUTHENTICATED` |
//! | no `authorization: Bearer <token>`, or a token that is not this host's | `UNAUTHENTICATED` |
//! | the host has a `cert_name` and the connection has no client certificate, or one not issued for that name | `PERMISSION_DENIED` |
//! | a batch naming another host than the stream authenticated as | `PERMISSION_DENIED` |
//!
//! Each message says what is wrong (operators read them in the agent's log). Nothing of a
//! refused stream is published, not even as a dead letter.

use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tonic::metadata::MetadataMap;
use tonic::Status;
use wattprint_core::{HostId, InstanceId};

/// Metadata key carrying the agent's host id on every stream.
pub const HOST_ID_HEADER: &str = "x-wattprint-host-id";

/// The registry file format this build reads.
pub const HOSTS_FILE_VERSION: u32 = 1;

/// Why a host registry cannot be loaded.
#[derive(Debug, Error)]
pub enum HostsError {
    /// The file cannot be read.
    #[error("cannot read host registry {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the registry's shape, or an entry is invalid.
    #[error("host registry {}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    version: Option<u32>,
    #[serde(default)]
    hosts: Vec<RawHost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    id: String,
    token_sha256: String,
    cert_name: Option<String>,
    instance: Option<String>,
}

#[derive(Debug, Clone)]
struct HostEntry {
    token_sha256: [u8; 32],
    cert_name: Option<ServerName<'static>>,
    instance: Option<InstanceId>,
}

/// Who a stream proved to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The host.
    pub host: HostId,
    /// The one instance an `in_guest` credential may report (`None`: a provider host).
    pub instance: Option<InstanceId>,
}

/// The hosts allowed to stream, with their token hashes.
#[derive(Debug, Clone, Default)]
pub struct HostRegistry {
    hosts: HashMap<String, HostEntry>,
}

/// The SHA-256 of a host token as 64 lowercase hex digits, as the registry stores it.
pub fn token_sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl HostRegistry {
    /// Loads and checks a registry file.
    pub fn load(path: &Path) -> Result<Self, HostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| HostsError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and checks a registry from its TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let raw: RawRegistry = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(v) = raw.version {
            if v != HOSTS_FILE_VERSION {
                return Err(format!(
                    "version = {v} is not supported (this build reads {HOSTS_FILE_VERSION})"
                ));
            }
        }
        let mut hosts = HashMap::new();
        for h in raw.hosts {
            if h.id.is_empty()
                || h.id.len() > wattprint_proto::MAX_ID_LEN
                || !h.id.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(format!(
                    "host id {:?} must be 1 to {} visible ASCII characters",
                    h.id,
                    wattprint_proto::MAX_ID_LEN
                ));
            }
            let token_sha256 = parse_hex32(&h.token_sha256).ok_or_else(|| {
                format!(
                    "host {}: token_sha256 must be 64 hex digits (the SHA-256 of the token, \
                     e.g. `sha256sum host.token`)",
                    h.id
                )
            })?;
            let cert_name = match h.cert_name {
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                    format!(
                        "host {}: cert_name {name:?} is not a DNS name or IP address",
                        h.id
                    )
                })?),
                None => None,
            };
            let instance = match h.instance {
                Some(i) if i.is_empty() || i.len() > wattprint_proto::MAX_ID_LEN => {
                    return Err(format!(
                        "host {}: instance must be 1 to {} bytes",
                        h.id,
                        wattprint_proto::MAX_ID_LEN
                    ))
                }
                other => other.map(InstanceId::new),
            };
            let id = h.id.clone();
            if hosts
                .insert(
                    h.id,
                    HostEntry {
                        token_sha256,
                        cert_name,
                        instance,
                    },
                )
                .is_some()
            {
                return Err(format!("host {id} is listed twice"));
            }
        }
        Ok(Self { hosts })
    }

    /// Number of registered hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host is registered (then every stream is refused).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Checks a stream's credentials: its metadata and the client certificate chain of its
    /// connection (leaf first; `None` without TLS client auth). Returns the credential it
    /// proves, or the status to refuse it with (see the module docs).
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer_certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Credential, Status> {
        let host = metadata
            .get(HOST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "no {HOST_ID_HEADER} metadata: this gateway accepts registered hosts only; \
                     the agent must send its host_id"
                ))
            })?;
        let Some(entry) = self.hosts.get(host) else {
            return Err(Status::unauthenticated(format!(
                "unknown host {host:?}: not in the gateway's host registry"
            )));
        };
        let token = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "host {host:?} sent no host token (authorization: Bearer <token>); set the \
                     agent's host_token_file"
                ))
            })?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !bool::from(presented.ct_eq(&entry.token_sha256)) {
            return Err(Status::unauthenticated(format!(
                "wrong host token for host {host:?}: it does not match the token registered for \
                 this host"
            )));
        }
        if let Some(name) = &entry.cert_name {
            let leaf = peer_certs.and_then(|c| c.first()).ok_or_else(|| {
                Status::permission_denied(format!(
                    "host {host:?} must present a client certificate for {} (mTLS); the \
                     connection has none",
                    name.to_str()
                ))
            })?;
            check_cert_name(leaf, name).map_err(|presented| {
                Status::permission_denied(format!(
                    "the client certificate is not host {host:?}'s: it is issued for {presented}, \
                     the registry expects {}",
                    name.to_str()
                ))
            })?;
        }
        Ok(Credential {
            host: HostId::new(host.to_owned()),
            instance: entry.instance.clone(),
        })
    }
}

/// Whether `cert` is valid for `name` (subjectAltName); on failure, the names it carries.
fn check_cert_name(cert: &CertificateDer<'_>, name: &ServerName<'_>) -> Result<(), String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("no name (the certificate does not parse: {e})"))?;
    if parsed.verify_is_valid_for_subject_name(name).is_ok() {
        return Ok(());
    }
    let names: Vec<&str> = parsed.valid_dns_names().collect();
    Err(if names.is_empty() {
        "no DNS name".to_owned()
    } else {
        format!("[{}]", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn registry() -> HostRegistry {
        HostRegistry::from_toml(&format!(
            "version = 1\n[[hosts]]\nid = \"h-1\"\ntoken_sha256 = \"{}\"\n",
            token_sha256_hex(TOKEN)
        ))
        .unwrap()
    }

    fn metadata(host: Option<&str>, auth: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(h) = host {
            m.insert(HOST_ID_HEADER, MetadataValue::try_from(h).unwrap());
        }
        if let Some(a) = auth {
            m.insert("authorization", MetadataValue::try_from(a).unwrap());
        }
        m
    }

    #[test]
    fn the_token_hash_is_sha256_hex() {
        // The SHA-256 of "test", as `printf test | sha256sum` prints it.
        assert_eq!(
            token_sha256_hex("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn each_credential_failure_has_its_own_status_and_message() {
        let r = registry();
        let ok = r.authenticate(
            &metadata(Some("h-1"), Some(&format!("Bearer {TOKEN}"))),
            None,
        );
        assert_eq!(ok.unwrap().host.as_str(), "h-1");
        let cases = [
            (metadata(None, None), "no x-wattprint-host-id metadata"),
            (
                metadata(Some("h-2"), Some(&format!("Bearer {TOKEN}"))),
                "unknown host \"h-2\"",
            ),
            (metadata(Some("h-1"), None), "sent no host token"),
            (metadata(Some("h-1"), Some(TOKEN)), "sent no host token"),
            (
                metadata(Some("h-1"), Some("Bearer 0123456789abcdef0123456789abcdeX")),
                "wrong host token for host \"h-1\"",
            ),
        ];
        for (m, expected) in cases {
            let status = r.authenticate(&m, None).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains(expected), "{status:?}");
        }
    }

    #[test]
    fn bad_registry_files_say_what_is_wrong() {
        let bad = |text: &str| HostRegistry::from_toml(text).unwrap_err();
        assert!(bad("[[hosts]]\nid = \"a\"\ntoken_sha256 = \"abc\"\n").contains("64 hex digits"));
        let h = token_sha256_hex(TOKEN);
        let twice = format!(
            "[[hosts]]\nid = \"a\"\ntoken_sha256 = \"{h}\"\n[[hosts]]\nid = \"a\"\ntoken_sha256 = \"{h}\"\n"
        );
        assert!(bad(&twice).contains("host a is listed twice"));
        assert!(bad("version = 2\n").contains("version = 2 is not supported"));
        assert!(bad("[[hosts]]\nid = \"a\"\n").contains("token_sha256"));
        assert!(bad(&format!(
            "[[hosts]]\nid = \"a\"\ntoken_sha256 = \"{h}\"\ncert_name = \"not a name!\"\n"
        ))
        .contains("cert_name"));
        assert!(bad(&format!(
            "[[hosts]]\nid = \"a b\"\ntoken_sha256 = \"{h}\"\n"
        ))
        .contains("visible ASCII"));
    }
}
