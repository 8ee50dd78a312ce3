variable "namespace" {
  description = "Kubernetes namespace to create and deploy into."
  type        = string
  default     = "wattprint"
}

variable "image" {
  description = "The wattprint image, by digest in production (registry/wattprint@sha256:...)."
  type        = string
}

variable "replicas" {
  description = "Replicas of the gateway, enricher and query API."
  type = object({
    gateway   = optional(number, 2)
    enricher  = optional(number, 2)
    query_api = optional(number, 2)
  })
  default = {}
}

variable "store" {
  description = "ClickHouse: its HTTP(S) URL for Wattprint and the database to create and use."
  type = object({
    url      = string
    database = optional(string, "wattprint")
  })
  sensitive = true
}

variable "bus" {
  description = "Kafka: brokers, topic naming and sizing, and optional SASL credentials (librdkafka properties)."
  type = object({
    brokers           = list(string)
    topic_prefix      = optional(string, "")
    partitions        = optional(number, 12)
    replication       = optional(number, 3)
    retention_ms      = optional(number, 604800000)
    security_protocol = optional(string)
    sasl_mechanism    = optional(string)
    sasl_username     = optional(string)
    sasl_password     = optional(string)
  })
  sensitive = true
}

variable "identity_provider" {
  description = "The query API's JWT issuer and audience, and the identity provider's key set: jwks_url, or the JWKS document itself."
  type = object({
    issuer    = string
    audience  = optional(string, "wattprint-api")
    jwks_url  = optional(string)
    jwks_json = optional(string)
  })

  validation {
    condition     = (var.identity_provider.jwks_url == null) != (var.identity_provider.jwks_json == null)
    error_message = "Set exactly one of identity_provider.jwks_url and identity_provider.jwks_json."
  }
}

variable "gateway_tls" {
  description = "The agent link's mTLS: the gateway's certificate and key, the agents' CA, and the host registry (hosts.toml)."
  type = object({
    cert       = string
    key        = string
    client_ca  = string
    hosts_toml = string
  })
  sensitive = true
}

variable "agent" {
  description = "The agent DaemonSet on GPU nodes: whether to run it, its attribution mode, where it runs."
  type = object({
    enabled          = optional(bool, true)
    attribution_mode = optional(string, "mapping")
    node_selector    = optional(map(string), { "nvidia.com/gpu.present" = "true" })
    runtime_class    = optional(string, "nvidia")
  })
  default = {}

  validation {
    condition     = contains(["mapping", "libvirt", "vgpu", "in_guest"], var.agent.attribution_mode)
    error_message = "agent.attribution_mode is one of mapping, libvirt, vgpu, in_guest."
  }
}

variable "inventory_toml" {
  description = "[[instances]] TOML appended to the shared config (or manage it with `wattprint inventory`)."
  type        = string
  default     = ""
}

variable "create_kafka_topics" {
  description = "Create the samples and dead-letter topics (else Wattprint creates them if it may)."
  type        = bool
  default     = true
}

variable "create_clickhouse_database" {
  description = "Create the ClickHouse database (else Wattprint creates it at start if it may)."
  type        = bool
  default     = true
}
