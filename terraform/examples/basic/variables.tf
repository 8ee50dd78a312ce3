variable "kubeconfig" {
  description = "Path to the kubeconfig."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "The kubeconfig context of the target cluster."
  type        = string
}

variable "image" {
  description = "The wattprint image, by digest."
  type        = string
}

variable "kafka_brokers" {
  description = "Kafka bootstrap servers (host:port)."
  type        = list(string)
}

variable "kafka_username" {
  description = "Kafka SASL/SCRAM user for Terraform and Wattprint."
  type        = string
}

variable "kafka_password" {
  description = "Its password."
  type        = string
  sensitive   = true
}

variable "clickhouse_host" {
  description = "ClickHouse host (HTTPS on 8443)."
  type        = string
}

variable "clickhouse_username" {
  description = "ClickHouse user allowed to create the database."
  type        = string
}

variable "clickhouse_password" {
  description = "Its password."
  type        = string
  sensitive   = true
}
