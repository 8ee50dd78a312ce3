output "namespace" {
  description = "The namespace Wattprint runs in."
  value       = kubernetes_namespace_v1.this.metadata[0].name
}

output "gateway_address" {
  description = "In-cluster address agents stream to (gRPC over mTLS)."
  value       = "${kubernetes_service_v1.this["gateway"].metadata[0].name}.${local.ns}.svc:50051"
}

output "query_api_url" {
  description = "In-cluster URL of the query API (put an Ingress or a gateway in front)."
  value       = "http://${kubernetes_service_v1.this["query-api"].metadata[0].name}.${local.ns}.svc:8080"
}

output "kafka_topics" {
  description = "The topics Wattprint uses."
  value       = [for t in local.topics : t.name]
}

output "clickhouse_database" {
  description = "The ClickHouse database Wattprint uses."
  value       = nonsensitive(var.store.database)
}
