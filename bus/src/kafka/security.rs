//! How Kafka clients authenticate and encrypt: [`KafkaSecurity`] (plaintext, TLS, SASL with
//! SCRAM or PLAIN, over TLS or not), turned into librdkafka properties for producers,
//! consumers and admin clients alike. The password is a [`Secret`]: it goes to librdkafka and
//! nowhere else (`Debug` redacts it).

use rdkafka::config::ClientConfig;
use std::path::PathBuf;
use wattprint_core::config::Secret;

/// `security.protocol`: how the client talks to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// No encryption, no authentication (development, or a private network).
    #[default]
    Plaintext,
    /// TLS: the brokers' certificates are verified (against `ca_file` or the system roots);
    /// with `cert_file`/`key_file` the client authenticates by certificate (mTLS).
    Ssl,
    /// SASL authentication without encryption: only on a trusted network (PLAIN sends the
    /// password in clear; SCRAM does not, but the data still travels in clear).
    SaslPlaintext,
    /// SASL authentication over TLS: the production setting.
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses the config value (`plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`, any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "plaintext" => Some(Self::Plaintext),
            "ssl" => Some(Self::Ssl),
            "sasl_plaintext" => Some(Self::SaslPlaintext),
            "sasl_ssl" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is encrypted.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// SCRAM-SHA-256 (RFC 7677): the password never crosses the wire.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
    /// PLAIN: the password is sent as is; only over TLS.
    Plain,
}

impl SaslMechanism {
    /// Parses the config value (`SCRAM-SHA-256`, `SCRAM-SHA-512`, `PLAIN`, any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_uppercase().as_str() {
            "SCRAM-SHA-256" => Some(Self::ScramSha256),
            "SCRAM-SHA-512" => Some(Self::ScramSha512),
            "PLAIN" => Some(Self::Plain),
            _ => None,
        }
    }

    /// librdkafka's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::Plain => "PLAIN",
        }
    }
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct SaslCredentials {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password (redacted in `Debug`).
    pub password: Secret,
}

/// Transport security of every Kafka client Wattprint creates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KafkaSecurity {
    /// Protocol.
    pub protocol: SecurityProtocol,
    /// SASL credentials, set exactly when the protocol is a SASL one.
    pub sasl: Option<SaslCredentials>,
    /// CA bundle (PEM) the brokers' certificates must chain to; the system roots when unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mTLS.
    pub key_file: Option<PathBuf>,
}

impl KafkaSecurity {
    /// Checks that the settings fit together; the message names the `bus.*` keys.
    pub fn check(&self) -> Result<(), String> {
        let p = self.protocol;
        if p.sasl() != self.sasl.is_some() {
            return Err(if p.sasl() {
                format!(
                    "bus.security_protocol = \"{}\" needs bus.sasl_mechanism, bus.sasl_username \
                     and bus.sasl_password_file or bus.sasl_password_env",
                    p.as_str()
                )
            } else {
                format!(
                    "bus.sasl_* apply to bus.security_protocol = \"sasl_ssl\" or \
                     \"sasl_plaintext\", not \"{}\"",
                    p.as_str()
                )
            });
        }
        if let Some(s) = &self.sasl {
            if s.username.is_empty() {
                return Err("bus.sasl_username is empty".into());
            }
            if s.mechanism == SaslMechanism::Plain && !p.tls() {
                return Err(
                    "bus.sasl_mechanism = \"PLAIN\" sends the password in clear: use it with \
                     bus.security_protocol = \"sasl_ssl\" only"
                        .into(),
                );
            }
        }
        let tls_files =
            self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some();
        if tls_files && !p.tls() {
            return Err(format!(
                "bus.tls_ca, bus.tls_cert and bus.tls_key apply to bus.security_protocol = \
                 \"ssl\" or \"sasl_ssl\", not \"{}\"",
                p.as_str()
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("bus.tls_cert and bus.tls_key go together: set both or neither".into());
        }
        for (key, path) in [
            ("bus.tls_ca", &self.ca_file),
            ("bus.tls_cert", &self.cert_file),
            ("bus.tls_key", &self.key_file),
        ] {
            if let Some(path) = path {
                check_pem(key, path)?;
            }
        }
        Ok(())
    }

    /// Sets the librdkafka properties of these settings on `c`.
    pub(crate) fn apply(&self, c: &mut ClientConfig) {
        c.set("security.protocol", self.protocol.as_str());
        if let Some(s) = &self.sasl {
            c.set("sasl.mechanism", s.mechanism.as_str())
                .set("sasl.username", &s.username)
                .set("sasl.password", s.password.expose());
        }
        if self.protocol.tls() {
            // Hostname verification is librdkafka's default since 2.0; said here so that no
            // override can be mistaken for it.
            c.set("ssl.endpoint.identification.algorithm", "https");
        }
        for (key, path) in [
            ("ssl.ca.location", &self.ca_file),
            ("ssl.certificate.location", &self.cert_file),
            ("ssl.key.location", &self.key_file),
        ] {
            if let Some(path) = path {
                c.set(key, path.display().to_string());
            }
        }
    }
}

/// `path` must be readable and hold a PEM block, so a wrong path stops the start with its name
/// instead of failing every connection later.
fn check_pem(key: &str, path: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key} = {}: cannot read it: {e}", path.display()))?;
    if text.contains("-----BEGIN ") {
        Ok(())
    } else {
        Err(format!("{key} = {}: no PEM block in it", path.display()))
    }
}

/// librdkafka properties whose values are credentials: redacted wherever a config is printed.
pub(crate) fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".key.pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl(mechanism: SaslMechanism) -> Option<SaslCredentials> {
        Some(SaslCredentials {
            mechanism,
            username: "wattprint".into(),
            password: Secret::new("pw"),
        })
    }

    #[test]
    fn settings_must_fit_together() {
        let ok = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            sasl: sasl(SaslMechanism::ScramSha512),
            ..KafkaSecurity::default()
        };
        assert_eq!(ok.check(), Ok(()));
        let err = |s: KafkaSecurity| s.check().unwrap_err();
        assert!(err(KafkaSecurity {
            sasl: None,
            ..ok.clone()
        })
        .contains("needs bus.sasl_mechanism"));
        assert!(err(KafkaSecurity {
            protocol: SecurityProtocol::Ssl,
            ..ok.clone()
        })
        .contains("bus.sasl_* apply to"));
        assert!(err(KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: sasl(SaslMechanism::Plain),
            ..ok.clone()
        })
        .contains("in clear"));
        assert!(err(KafkaSecurity {
            protocol: SecurityProtocol::Plaintext,
            sasl: None,
            ca_file: Some("/ca.pem".into()),
            ..ok.clone()
        })
        .contains("bus.tls_ca"));
        assert!(err(KafkaSecurity {
            cert_file: Some("/c.pem".into()),
            ..ok.clone()
        })
        .contains("go together"));
        assert!(err(KafkaSecurity {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ok
        })
        .contains("bus.tls_ca = /nonexistent/ca.pem: cannot read it"));
    }

    #[test]
    fn the_password_reaches_librdkafka_but_not_debug() {
        let s = KafkaSecurity {
            protocol: SecurityProtocol::SaslPlaintext,
            sasl: sasl(SaslMechanism::ScramSha256),
            ..KafkaSecurity::default()
        };
        let mut c = ClientConfig::new();
        s.apply(&mut c);
        assert_eq!(c.get("sasl.password"), Some("pw"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        let printed = format!("{s:?}");
        assert!(!printed.contains("\"pw\""), "{printed}");
        assert!(printed.contains("[redacted]"), "{printed}");
    }

    #[test]
    fn names_parse_in_any_case() {
        assert_eq!(
            SecurityProtocol::parse("SASL_SSL"),
            Some(SecurityProtocol::SaslSsl)
        );
        assert_eq!(SecurityProtocol::parse("tls"), None);
        assert_eq!(
            SaslMechanism::parse("scram-sha-512"),
            Some(SaslMechanism::ScramSha512)
        );
        assert_eq!(SaslMechanism::parse("GSSAPI"), None);
    }
}
