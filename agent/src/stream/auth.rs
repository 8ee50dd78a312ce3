//! The credentials every stream carries, and telling a refusal of them from an outage.
//!
//! Invariant: a refusal (bad host id, token, certificate) is a configuration error: it is
//! logged and counted, never treated as a transient failure to retry quickly.

use crate::tls::{error_chain, HostToken, HOST_ID_HEADER};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::Code;
use wattprint_core::HostId;

/// The metadata every stream carries: the host id and, when configured, the host token.
#[derive(Debug, Clone)]
pub struct StreamAuth {
    host: AsciiMetadataValue,
    bearer: Option<AsciiMetadataValue>,
}

impl StreamAuth {
    /// The metadata for `host` with `token`. The host id must be visible ASCII to travel as
    /// metadata.
    pub fn new(host: &HostId, token: Option<&HostToken>) -> Result<Self, String> {
        let host = AsciiMetadataValue::try_from(host.as_str())
            .ok()
            .filter(|_| host.as_str().bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                format!(
                    "host_id {:?} must be visible ASCII characters to be sent to the gateway",
                    host.as_str()
                )
            })?;
        let bearer = match token {
            Some(t) => {
                let mut v = AsciiMetadataValue::try_from(format!("Bearer {}", t.secret()))
                    .map_err(|_| "the host token is not a valid header value".to_owned())?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Self { host, bearer })
    }

    pub(super) fn apply(&self, metadata: &mut MetadataMap) {
        metadata.insert(HOST_ID_HEADER, self.host.clone());
        if let Some(b) = &self.bearer {
            metadata.insert("authorization", b.clone());
        }
    }
}

/// Whether a status means the gateway refused the agent's credentials: a configuration
/// error, retried only at the longest backoff.
pub fn is_auth_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unauthenticated | Code::PermissionDenied
    )
}

/// Whether a connection failed because TLS refused one side's certificate: the gateway sent
/// an alert (no client certificate, one from a CA it does not trust, …) or the agent could
/// not verify the gateway's certificate. `chain` is the error with its sources.
pub fn is_tls_refusal(chain: &str) -> bool {
    chain.contains("fatal alert") || chain.contains("invalid peer certificate")
}

/// Whether `status` refuses the agent's credentials or TLS settings.
pub(super) fn credentials_refused(status: &tonic::Status) -> bool {
    is_auth_refusal(status) || is_tls_refusal(&error_chain(status))
}

/// What to log of a refusal: the gateway's reason, or the transport error's chain.
pub(super) fn refusal_reason(status: &tonic::Status) -> String {
    if is_auth_refusal(status) {
        status.message().to_owned()
    } else {
        error_chain(status)
    }
}
