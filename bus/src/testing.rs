//! Helpers for tests against a real Kafka-protocol broker (feature `testing`): the broker from
//! `WPTEST_KAFKA_BROKERS` and topics and a group of the test's own.

use crate::kafka::{create_topics, KafkaBusConfig};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The broker list, or `None` (the test does not run) when `WPTEST_KAFKA_BROKERS` is absent.
///
/// # Panics
/// When it is absent but `CI` or `WPTEST_REQUIRE_SERVERS` is set: a skipped test fails there.
pub fn brokers() -> Option<String> {
    match std::env::var("WPTEST_KAFKA_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ => {
            let required = std::env::var_os("CI").is_some()
                || std::env::var_os("WPTEST_REQUIRE_SERVERS").is_some();
            assert!(
                !required,
                "WPTEST_KAFKA_BROKERS is not set, but CI / WPTEST_REQUIRE_SERVERS requires \
                 the Kafka tests: run `source scripts/servers.sh start` first"
            );
            eprintln!(
                "kafka test NOT RUN: WPTEST_KAFKA_BROKERS is not set \
                 (run `source scripts/servers.sh start` to start a broker)"
            );
            None
        }
    }
}

/// A name no other test run uses: process id, time and a counter.
pub fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A config with fresh topics (created with `partitions`) and a fresh group, or `None` when
/// no broker is configured (see [`brokers`]).
///
/// # Panics
/// When the topics cannot be created.
pub async fn fresh_topics(partitions: i32) -> Option<KafkaBusConfig> {
    let id = unique();
    let mut config = KafkaBusConfig::new(brokers()?)
        .with_topic_prefix(&format!("test-{id}."))
        .with_group_id(format!("test-group-{id}"));
    config.session_timeout = Duration::from_secs(6);
    config.delivery_timeout = Duration::from_secs(20);
    #[allow(clippy::unwrap_used)] // a test helper: fail loudly
    create_topics(&config, partitions, 1)
        .await
        .map_err(|e| format!("creating the test topics through the admin API: {e}"))
        .unwrap();
    Some(config)
}

/// `config` with a consumer group no member has joined yet.
pub fn fresh_group(config: &KafkaBusConfig) -> KafkaBusConfig {
    config
        .clone()
        .with_group_id(format!("test-group-{}", unique()))
}
