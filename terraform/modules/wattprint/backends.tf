# What Wattprint needs on its Kafka and ClickHouse: the two topics and the database. The
# providers are configured by the root module (see ../../examples/basic). Wattprint creates
# them itself at start where its credentials may; these make them explicit and reviewable.

locals {
  topics = {
    samples = {
      name = "${nonsensitive(var.bus.topic_prefix)}wattprint.samples.v1"
      # Samples are replayable from agents' spools only until acked: keep a week for re-enrichment.
      config = { "retention.ms" = tostring(nonsensitive(var.bus.retention_ms)), "min.insync.replicas" = "2" }
    }
    dead_letter = {
      name   = "${nonsensitive(var.bus.topic_prefix)}wattprint.dead-letter.v2"
      config = { "retention.ms" = tostring(nonsensitive(var.bus.retention_ms)), "min.insync.replicas" = "2" }
    }
  }
}

resource "kafka_topic" "this" {
  for_each = var.create_kafka_topics ? local.topics : {}

  name               = each.value.name
  partitions         = nonsensitive(var.bus.partitions)
  replication_factor = nonsensitive(var.bus.replication)
  config             = each.value.config
}

resource "clickhousedbops_database" "this" {
  count = var.create_clickhouse_database ? 1 : 0

  name    = nonsensitive(var.store.database)
  comment = "Wattprint: GPU energy and carbon (migrated by Wattprint at start)"
}
