//! The bus's section of the `wattprint` file (`[bus]`): the serde type as written and
//! [`RawBus::validate`], which applies the defaults and bounds and returns the
//! [`BusSettings`] gateways and enrichers connect with. Defaults live here; nothing connects.

use crate::KafkaBusConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use wattprint_core::config::{invalid, InvalidConfig};

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
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …).
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
        /// Client settings.
        config: KafkaBusConfig,
        /// Partitions for topics Wattprint creates.
        partitions: i32,
        /// Replication factor for topics Wattprint creates.
        replication: i32,
    },
}

impl RawBus {
    /// Validates `[bus]`.
    pub fn validate(&self) -> Result<BusSettings, InvalidConfig> {
        let raw = self;
        match raw.kind.as_deref().unwrap_or("memory") {
            "memory" => {
                if raw.brokers.is_some()
                    || raw.topic_prefix.is_some()
                    || raw.group_id.is_some()
                    || raw.group_instance_id.is_some()
                {
                    return Err(invalid(
                        "bus.brokers, bus.topic_prefix, bus.group_id and bus.group_instance_id apply to bus.kind = \"kafka\" only",
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
                Ok(BusSettings::Kafka {
                    config,
                    partitions,
                    replication,
                })
            }
            other => Err(invalid(format!(
                "bus.kind = {other:?} must be \"memory\" or \"kafka\""
            ))),
        }
    }
}
