//! The bus's section of the `wattprint` file (`[bus]`): the serde type as written and
//! [`RawBus::validate`], which applies the defaults and bounds and returns the
//! [`BusSettings`] gateways and enrichers connect with. Defaults live here; nothing connects.

use crate::kafka::{
    DurabilityPolicy, KafkaSecurity, OnWeakDurability, SaslCredentials, SaslMechanism,
    SecurityProtocol,
};
use crate::KafkaBusConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use wattprint_core::config::{invalid, read_secret, InvalidConfig};

/// librdkafka properties set by the typed `bus.*` keys, refused in `bus.client_properties`:
/// one place for each setting, and the password never in the file.
const TYPED_PROPERTIES: &[&str] = &[
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
];

/// `[bus]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBus {
    /// `memory` (default: in-process, gateway and enricher share the process) or `kafka`.
    pub kind: Option<String>,
    /// Kafka bootstrap brokers, `host:port[,host:port…]` (default `127.0.0.1:9092`).
    pub brokers: Option<String>,
    /// Prefix of both topic names (default none: `wattprint.samples.v1`, …).
    pub topic_prefix: Option<String>,
    /// Enricher consumer group (default `wattprint-enricher`).
    pub group_id: Option<String>,
    /// Static group membership of this enricher (Kafka `group.instance.id`): a stable name,
    /// unique among running enrichers (e.g. the pod name). A restarted enricher with the same
    /// name takes its partitions back at once instead of after the session timeout.
    pub group_instance_id: Option<String>,
    /// Partitions of the topics when Wattprint creates them (default 12).
    pub partitions: Option<i32>,
    /// Replication factor of the topics when Wattprint creates them (default 1).
    pub replication: Option<i32>,
    /// Most publishes in flight per gateway before its streams wait (default 64).
    pub max_in_flight: Option<usize>,
    /// Least replication factor the topics must have at start (default 1; 3 recommended).
    pub min_replication: Option<i32>,
    /// Least `min.insync.replicas` the topics must have at start (default 1; 2 recommended).
    pub min_insync_replicas: Option<i32>,
    /// `refuse` (default) or `warn`: what a topic below the minimums does at start.
    pub durability_check: Option<String>,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: Option<String>,
    /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN` (SASL protocols only).
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    pub sasl_username: Option<String>,
    /// File holding the SASL password.
    pub sasl_password_file: Option<PathBuf>,
    /// Environment variable holding the SASL password.
    pub sasl_password_env: Option<String>,
    /// CA bundle (PEM) the brokers' certificates must chain to (TLS protocols; default: the
    /// system roots).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS.
    pub tls_key: Option<PathBuf>,
    /// Extra librdkafka properties (`linger.ms`, …).
    #[serde(default)]
    pub client_properties: BTreeMap<String, String>,
}

/// What carries samples from gateways to enrichers.
#[derive(Debug, Clone, PartialEq)]
pub enum BusSettings {
    /// In-process: the enricher runs beside the gateway.
    Memory,
    /// Kafka: gateways produce, a consumer group of enrichers consumes.
    Kafka {
        /// Client settings (boxed: the in-process variant holds nothing).
        config: Box<KafkaBusConfig>,
        /// Partitions for topics Wattprint creates.
        partitions: i32,
        /// Replication factor for topics Wattprint creates.
        replication: i32,
        /// What the topics must meet at start.
        durability: DurabilityPolicy,
    },
}

impl RawBus {
    /// Validates `[bus]`, reading the SASL password from its file or the process environment.
    pub fn validate(&self) -> Result<BusSettings, InvalidConfig> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }

    /// Validates `[bus]`, reading environment variables through `env`.
    pub fn validate_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<BusSettings, InvalidConfig> {
        let raw = self;
        match raw.kind.as_deref().unwrap_or("memory") {
            "memory" => {
                if raw.brokers.is_some()
                    || raw.topic_prefix.is_some()
                    || raw.group_id.is_some()
                    || raw.group_instance_id.is_some()
                    || raw.security_protocol.is_some()
                    || raw.min_replication.is_some()
                {
                    return Err(invalid(
                        "bus.brokers, bus.topic_prefix, bus.group_id, bus.group_instance_id, \
                         bus.security_protocol and bus.min_replication apply to bus.kind = \"kafka\" only",
                    ));
                }
                Ok(BusSettings::Memory)
            }
            "kafka" => {
                let mut config =
                    KafkaBusConfig::new(raw.brokers.as_deref().unwrap_or("127.0.0.1:9092"))
                        .with_topic_prefix(raw.topic_prefix.as_deref().unwrap_or(""));
                if let Some(g) = &raw.group_id {
                    config = config.with_group_id(g.clone());
                }
                if let Some(n) = raw.max_in_flight {
                    config.max_in_flight = n;
                }
                config.security = raw.security(env)?;
                if let Some(key) = raw
                    .client_properties
                    .keys()
                    .find(|k| TYPED_PROPERTIES.contains(&k.as_str()))
                {
                    return Err(invalid(format!(
                        "bus.client_properties.{key:?}: set TLS and SASL with bus.security_protocol, \
                         bus.sasl_* and bus.tls_* (checked at start, the password kept out of the file)"
                    )));
                }
                config.client_properties = raw.client_properties.clone();
                if let Some(id) = &raw.group_instance_id {
                    if id.is_empty() || id.len() > 249 {
                        return Err(invalid("bus.group_instance_id must be 1 to 249 characters"));
                    }
                    config
                        .client_properties
                        .insert("group.instance.id".into(), id.clone());
                }
                config
                    .validate()
                    .map_err(|e| invalid(format!("[bus]: {e}")))?;
                let partitions = raw.partitions.unwrap_or(12);
                let replication = raw.replication.unwrap_or(1);
                if !(1..=10_000).contains(&partitions) || !(1..=16).contains(&replication) {
                    return Err(invalid(format!(
                        "bus.partitions = {partitions} must be 1..=10000 and bus.replication = {replication} 1..=16"
                    )));
                }
                let durability = raw.durability()?;
                Ok(BusSettings::Kafka {
                    config: Box::new(config),
                    partitions,
                    replication,
                    durability,
                })
            }
            other => Err(invalid(format!(
                "bus.kind = {other:?} must be \"memory\" or \"kafka\""
            ))),
        }
    }

    fn durability(&self) -> Result<DurabilityPolicy, InvalidConfig> {
        let min_replication = self.min_replication.unwrap_or(1);
        let min_insync_replicas = self.min_insync_replicas.unwrap_or(1);
        if !(1..=16).contains(&min_replication) || !(1..=16).contains(&min_insync_replicas) {
            return Err(invalid(format!(
                "bus.min_replication = {min_replication} and bus.min_insync_replicas = \
                 {min_insync_replicas} must be 1..=16"
            )));
        }
        if min_insync_replicas > min_replication {
            return Err(invalid(format!(
                "bus.min_insync_replicas = {min_insync_replicas} cannot exceed \
                 bus.min_replication = {min_replication}"
            )));
        }
        let on_weak = match self.durability_check.as_deref() {
            None | Some("refuse") => OnWeakDurability::Refuse,
            Some("warn") => OnWeakDurability::Warn,
            Some(other) => {
                return Err(invalid(format!(
                    "bus.durability_check = {other:?} must be \"refuse\" or \"warn\""
                )))
            }
        };
        Ok(DurabilityPolicy {
            min_replication,
            min_insync_replicas,
            on_weak,
        })
    }

    fn security(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<KafkaSecurity, InvalidConfig> {
        let protocol = match self.security_protocol.as_deref() {
            None => SecurityProtocol::Plaintext,
            Some(p) => SecurityProtocol::parse(p).ok_or_else(|| {
                invalid(format!(
                    "bus.security_protocol = {p:?} must be \"plaintext\", \"ssl\", \
                     \"sasl_plaintext\" or \"sasl_ssl\""
                ))
            })?,
        };
        let password = read_secret(
            "bus.sasl_password",
            self.sasl_password_file.as_deref(),
            self.sasl_password_env.as_deref(),
            env,
        )?;
        let sasl = match (&self.sasl_mechanism, &self.sasl_username, password) {
            (None, None, None) => None,
            (Some(m), Some(username), Some(password)) => Some(SaslCredentials {
                mechanism: SaslMechanism::parse(m).ok_or_else(|| {
                    invalid(format!(
                        "bus.sasl_mechanism = {m:?} must be \"SCRAM-SHA-256\", \
                         \"SCRAM-SHA-512\" or \"PLAIN\""
                    ))
                })?,
                username: username.clone(),
                password,
            }),
            _ => {
                return Err(invalid(
                    "bus.sasl_mechanism, bus.sasl_username and a password \
                     (bus.sasl_password_file or bus.sasl_password_env) go together",
                ))
            }
        };
        let security = KafkaSecurity {
            protocol,
            sasl,
            ca_file: self.tls_ca.clone(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
        };
        security.check().map_err(invalid)?;
        Ok(security)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(extra: &str) -> RawBus {
        toml::from_str(&format!("kind = \"kafka\"\n{extra}")).unwrap()
    }

    fn env(name: &str) -> Option<String> {
        (name == "KAFKA_PW").then(|| "s3cret".to_owned())
    }

    #[test]
    fn sasl_ssl_is_read_with_the_password_from_the_environment() {
        let raw = kafka(
            "security_protocol = \"SASL_SSL\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             sasl_username = \"wp\"\nsasl_password_env = \"KAFKA_PW\"\n\
             min_replication = 3\nmin_insync_replicas = 2",
        );
        let BusSettings::Kafka {
            config, durability, ..
        } = raw.validate_with_env(&env).unwrap()
        else {
            panic!("kafka expected");
        };
        let sasl = config.security.sasl.as_ref().unwrap();
        assert_eq!(config.security.protocol, SecurityProtocol::SaslSsl);
        assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
        assert_eq!(sasl.password.expose(), "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert_eq!(durability.min_replication, 3);
        assert_eq!(durability.min_insync_replicas, 2);
        assert_eq!(durability.on_weak, OnWeakDurability::Refuse);
    }

    #[test]
    fn bad_security_settings_are_refused_by_key() {
        let cases = [
            ("security_protocol = \"tls\"", "bus.security_protocol = \"tls\""),
            (
                "security_protocol = \"sasl_ssl\"",
                "needs bus.sasl_mechanism",
            ),
            (
                "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"GSSAPI\"\nsasl_username = \"u\"\nsasl_password_env = \"KAFKA_PW\"",
                "bus.sasl_mechanism = \"GSSAPI\"",
            ),
            (
                "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"",
                "go together",
            ),
            (
                "security_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\nsasl_password_env = \"UNSET\"",
                "bus.sasl_password_env = \"UNSET\"",
            ),
            (
                "client_properties = { \"sasl.password\" = \"x\" }",
                "bus.client_properties.\"sasl.password\"",
            ),
            ("min_replication = 2\nmin_insync_replicas = 3", "cannot exceed"),
            ("durability_check = \"ignore\"", "bus.durability_check"),
        ];
        for (extra, expected) in cases {
            let err = kafka(extra)
                .validate_with_env(&env)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{extra}: {err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
