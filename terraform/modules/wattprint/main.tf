# Wattprint's distributed deployment on a Kubernetes cluster, the same shape as
# deploy/kubernetes (see its README for the reasoning behind each part).

locals {
  ns     = kubernetes_namespace_v1.this.metadata[0].name
  labels = { "app.kubernetes.io/part-of" = "wattprint" }

  kafka_env = { for k, v in {
    "WATTPRINT_BUS__BROKERS"                              = join(",", var.bus.brokers)
    "WATTPRINT_BUS__CLIENT_PROPERTIES__SECURITY.PROTOCOL" = var.bus.security_protocol
    "WATTPRINT_BUS__CLIENT_PROPERTIES__SASL.MECHANISM"    = var.bus.sasl_mechanism
    "WATTPRINT_BUS__CLIENT_PROPERTIES__SASL.USERNAME"     = var.bus.sasl_username
    "WATTPRINT_BUS__CLIENT_PROPERTIES__SASL.PASSWORD"     = var.bus.sasl_password
  } : k => v if v != null }

  # The backend parts: which secrets each reads, its ports, probes and size.
  components = {
    gateway = {
      replicas = var.replicas.gateway
      secrets  = ["wattprint-store", "wattprint-kafka"]
      ports    = { grpc = 50051, metrics = 9464 }
      probe    = "metrics"
      cpu      = ["250m", "1"]
      memory   = ["256Mi", "512Mi"]
    }
    enricher = {
      replicas = var.replicas.enricher
      secrets  = ["wattprint-store", "wattprint-kafka"]
      ports    = { metrics = 9464 }
      probe    = "metrics"
      cpu      = ["500m", "2"]
      memory   = ["512Mi", "1Gi"]
    }
    query-api = {
      replicas = var.replicas.query_api
      secrets  = ["wattprint-store"]
      ports    = { http = 8080 }
      probe    = "http"
      cpu      = ["250m", "1"]
      memory   = ["256Mi", "512Mi"]
    }
  }
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = var.namespace
    # The agent's host paths are beyond baseline: enforce none, warn and audit at restricted
    # (which every other pod meets). See deploy/kubernetes/base/namespace.yaml.
    labels = merge(local.labels, {
      "pod-security.kubernetes.io/enforce" = "privileged"
      "pod-security.kubernetes.io/warn"    = "restricted"
      "pod-security.kubernetes.io/audit"   = "restricted"
    })
  }
}

resource "kubernetes_config_map_v1" "config" {
  metadata {
    name      = "wattprint-config"
    namespace = local.ns
    labels    = local.labels
  }
  data = {
    "wattprint.toml" = templatefile("${path.module}/templates/wattprint.toml.tftpl", {
      namespace        = local.ns
      database         = nonsensitive(var.store.database)
      topic_prefix     = nonsensitive(var.bus.topic_prefix)
      partitions       = nonsensitive(var.bus.partitions)
      replication      = nonsensitive(var.bus.replication)
      issuer           = var.identity_provider.issuer
      audience         = var.identity_provider.audience
      jwks_url         = var.identity_provider.jwks_url
      attribution_mode = var.agent.attribution_mode
      inventory        = var.inventory_toml
    })
  }
}

resource "kubernetes_secret_v1" "store" {
  metadata {
    name      = "wattprint-store"
    namespace = local.ns
    labels    = local.labels
  }
  data = { "WATTPRINT_STORE__URL" = var.store.url }
}

resource "kubernetes_secret_v1" "kafka" {
  metadata {
    name      = "wattprint-kafka"
    namespace = local.ns
    labels    = local.labels
  }
  data = local.kafka_env
}

resource "kubernetes_secret_v1" "gateway_tls" {
  metadata {
    name      = "wattprint-gateway-tls"
    namespace = local.ns
    labels    = local.labels
  }
  data = {
    "tls.crt"    = var.gateway_tls.cert
    "tls.key"    = var.gateway_tls.key
    "ca.crt"     = var.gateway_tls.client_ca
    "hosts.toml" = var.gateway_tls.hosts_toml
  }
}

resource "kubernetes_secret_v1" "jwks" {
  metadata {
    name      = "wattprint-jwks"
    namespace = local.ns
    labels    = local.labels
  }
  data = { "jwks.json" = coalesce(var.identity_provider.jwks_json, "{\"keys\":[]}") }
}

resource "kubernetes_service_account_v1" "this" {
  for_each = toset(concat(keys(local.components), ["agent"]))
  metadata {
    name      = "wattprint-${each.key}"
    namespace = local.ns
    labels    = local.labels
  }
  automount_service_account_token = false
}
