//! The start-up check of how durable the bus topics are: every partition's replication
//! factor (from the cluster metadata) and the topic's `min.insync.replicas` (from
//! DescribeConfigs) against the configured minimums. With the producer's `acks=all`, an
//! acknowledged record is on `min.insync.replicas` brokers; with replication 1 it is on one
//! disk of one broker, however the producer is configured.

use super::{client_err, ErrorCapture, KafkaBusConfig, KafkaBusError, TracingContext};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::producer::{BaseProducer, Producer as _};
use std::time::Duration;

/// What to do when a topic is less durable than required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnWeakDurability {
    /// Refuse to start (the default: a misconfigured production cluster is found at once).
    #[default]
    Refuse,
    /// Log a warning and go on.
    Warn,
}

/// The minimums the topics must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurabilityPolicy {
    /// Least replicas per partition (`bus.min_replication`; 1 in development, 3 recommended).
    pub min_replication: i32,
    /// Least `min.insync.replicas` (`bus.min_insync_replicas`; 1 in development, 2
    /// recommended with replication 3).
    pub min_insync_replicas: i32,
    /// What a shortfall does.
    pub on_weak: OnWeakDurability,
}

impl Default for DurabilityPolicy {
    fn default() -> Self {
        Self {
            min_replication: 1,
            min_insync_replicas: 1,
            on_weak: OnWeakDurability::Refuse,
        }
    }
}

/// What the cluster reported for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDurability {
    /// The topic.
    pub topic: String,
    /// Fewest replicas of any of its partitions.
    pub replication: i32,
    /// Its `min.insync.replicas`, when the broker answered DescribeConfigs.
    pub min_insync_replicas: Option<i32>,
}

impl TopicDurability {
    /// What falls short of `policy`, one sentence each (empty when it complies).
    pub fn shortfalls(&self, policy: &DurabilityPolicy) -> Vec<String> {
        let mut out = Vec::new();
        let topic = &self.topic;
        if self.replication < policy.min_replication {
            out.push(format!(
                "topic {topic} has replication factor {} but bus.min_replication = {} \
                 (an acknowledged record is on fewer brokers than required)",
                self.replication, policy.min_replication
            ));
        }
        match self.min_insync_replicas {
            Some(n) if n < policy.min_insync_replicas => out.push(format!(
                "topic {topic} has min.insync.replicas = {n} but bus.min_insync_replicas = {} \
                 (acks=all would be satisfied by fewer brokers than required)",
                policy.min_insync_replicas
            )),
            None if policy.min_insync_replicas > 1 => out.push(format!(
                "the broker did not report min.insync.replicas of topic {topic}, and \
                 bus.min_insync_replicas = {} must be checked",
                policy.min_insync_replicas
            )),
            _ => {}
        }
        out
    }
}

/// Reads the durability of the bus topics and applies `policy`: `Ok` with what was found
/// when they comply (or when `policy` says to warn; each shortfall is then logged),
/// [`KafkaBusError::WeakDurability`] naming every shortfall otherwise. A topic that does not
/// exist is an error whatever the policy.
pub async fn check_durability(
    config: &KafkaBusConfig,
    policy: &DurabilityPolicy,
) -> Result<Vec<TopicDurability>, KafkaBusError> {
    let found = describe_topics(config).await?;
    let shortfalls: Vec<String> = found.iter().flat_map(|t| t.shortfalls(policy)).collect();
    for t in &found {
        if t.replication > 1 && t.min_insync_replicas.is_some_and(|n| n >= t.replication) {
            tracing::warn!(topic = %t.topic, replication = t.replication, min_insync_replicas = ?t.min_insync_replicas,
                "min.insync.replicas is not below the replication factor: one broker down stops every publish");
        }
    }
    if shortfalls.is_empty() {
        tracing::info!(topics = ?found, "kafka topic durability checked");
        return Ok(found);
    }
    match policy.on_weak {
        OnWeakDurability::Refuse => Err(KafkaBusError::WeakDurability(shortfalls.join("; "))),
        OnWeakDurability::Warn => {
            for s in &shortfalls {
                tracing::warn!("kafka durability below the configured minimum: {s}");
            }
            Ok(found)
        }
    }
}

/// Connects with `config`'s settings and reads the cluster metadata: the fewest replicas of
/// any partition of each of `topics` (`None` for a topic that does not exist). A client the
/// brokers refuse (authentication, TLS) gets [`KafkaBusError::Unreachable`] with librdkafka's
/// reason. The metadata covers all topics, so asking never creates one.
pub(crate) async fn topic_replication(
    config: &KafkaBusConfig,
    topics: &[String],
) -> Result<Vec<Option<i32>>, KafkaBusError> {
    const OP: &str = "reading the kafka cluster metadata";
    let context = ErrorCapture::default();
    // A producer, not an admin client: polling it delivers librdkafka's logs and errors.
    let client: BaseProducer<ErrorCapture> = config
        .with_overrides(config.client_config())
        .create_with_context(context.clone())
        .map_err(client_err("creating the kafka metadata client"))?;
    let topics = topics.to_vec();
    // The calls block: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        let metadata = client
            .client()
            .fetch_metadata(None, Duration::from_secs(15));
        client.poll(Duration::from_millis(100));
        let metadata = metadata.map_err(context.unreachable(OP))?;
        Ok(topics
            .iter()
            .map(|name| {
                metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| {
                        t.partitions()
                            .iter()
                            .map(|p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX))
                            .min()
                            .unwrap_or(0)
                    })
            })
            .collect())
    })
    .await
    .map_err(|e| KafkaBusError::Config(format!("{OP}: the metadata task failed: {e}")))?
}

/// The replication factor and `min.insync.replicas` of both bus topics.
async fn describe_topics(config: &KafkaBusConfig) -> Result<Vec<TopicDurability>, KafkaBusError> {
    config.validate()?;
    let topics = [
        config.samples_topic.clone(),
        config.dead_letter_topic.clone(),
    ];
    let replication = topic_replication(config, &topics).await?;
    let mut found = Vec::with_capacity(topics.len());
    for (topic, replication) in topics.iter().zip(replication) {
        let replication = replication.ok_or_else(|| KafkaBusError::MissingTopic(topic.clone()))?;
        found.push(TopicDurability {
            topic: topic.clone(),
            replication,
            min_insync_replicas: None,
        });
    }
    let admin: AdminClient<TracingContext> = config
        .with_overrides(config.client_config())
        .create_with_context(TracingContext)
        .map_err(client_err("creating the kafka admin client"))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    match admin.describe_configs(&specs, &options).await {
        Ok(results) => {
            for (t, result) in found.iter_mut().zip(results) {
                match result {
                    Ok(resource) => {
                        t.min_insync_replicas = resource
                            .get("min.insync.replicas")
                            .and_then(|e| e.value.as_deref())
                            .and_then(|v| v.parse().ok());
                    }
                    Err(code) => {
                        tracing::warn!(topic = %t.topic, %code, "the broker did not describe the topic's configuration");
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "the broker did not answer DescribeConfigs; min.insync.replicas unknown");
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(replication: i32, insync: Option<i32>) -> TopicDurability {
        TopicDurability {
            topic: "t".into(),
            replication,
            min_insync_replicas: insync,
        }
    }

    #[test]
    fn shortfalls_name_what_is_missing() {
        let prod = DurabilityPolicy {
            min_replication: 3,
            min_insync_replicas: 2,
            on_weak: OnWeakDurability::Refuse,
        };
        assert!(topic(3, Some(2)).shortfalls(&prod).is_empty());
        let s = topic(1, Some(1)).shortfalls(&prod);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].contains("replication factor 1 but bus.min_replication = 3"));
        assert!(s[1].contains("min.insync.replicas = 1 but bus.min_insync_replicas = 2"));
        let unknown = topic(3, None).shortfalls(&prod);
        assert!(unknown[0].contains("did not report"), "{unknown:?}");
        assert!(topic(1, None)
            .shortfalls(&DurabilityPolicy::default())
            .is_empty());
    }
}
