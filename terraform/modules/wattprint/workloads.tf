# Gateway, enricher and query API Deployments with their Services and PodDisruptionBudgets.

resource "kubernetes_deployment_v1" "this" {
  # Requests, limits and the image are set (from local.components and var.image), but checkov
  # does not resolve values of a for_each map or an input, so it reports them missing:
  # checkov:skip=CKV_K8S_10:requests.cpu is set per part from local.components
  # checkov:skip=CKV_K8S_11:limits.cpu is set per part from local.components
  # checkov:skip=CKV_K8S_12:limits.memory is set per part from local.components
  # checkov:skip=CKV_K8S_13:requests.memory is set per part from local.components
  # checkov:skip=CKV_K8S_14:the image is var.image (a digest in production), not resolvable statically
  for_each = local.components

  metadata {
    name      = "wattprint-${each.key}"
    namespace = local.ns
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "wattprint-${each.key}" })
  }

  spec {
    replicas = each.value.replicas
    selector {
      match_labels = { "app.kubernetes.io/name" = "wattprint-${each.key}" }
    }
    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_unavailable = 0
        max_surge       = 1
      }
    }

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "wattprint-${each.key}" })
        annotations = {
          # Roll the pods when the shared config changes.
          "wattprint.dev/config-sha256" = sha256(kubernetes_config_map_v1.config.data["wattprint.toml"])
        }
      }

      spec {
        service_account_name             = kubernetes_service_account_v1.this[each.key].metadata[0].name
        automount_service_account_token  = false
        termination_grace_period_seconds = 60

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = each.key
          image             = var.image
          image_pull_policy = "Always"
          args              = [each.key]

          env {
            name  = "WATTPRINT_CONFIG"
            value = "/etc/wattprint/wattprint.toml"
          }

          dynamic "env_from" {
            for_each = each.value.secrets
            content {
              secret_ref {
                name = env_from.value
              }
            }
          }

          dynamic "port" {
            for_each = each.value.ports
            content {
              name           = port.key
              container_port = port.value
            }
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = each.value.probe
            }
            period_seconds    = 20
            failure_threshold = 3
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = each.value.probe
            }
            period_seconds = 10
          }

          resources {
            requests = { cpu = each.value.cpu[0], memory = each.value.memory[0] }
            limits   = { cpu = each.value.cpu[1], memory = each.value.memory[1] }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "config"
            mount_path = "/etc/wattprint/wattprint.toml"
            sub_path   = "wattprint.toml"
            read_only  = true
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
          volume_mount {
            name       = "gateway-tls"
            mount_path = "/etc/wattprint/gateway"
            read_only  = true
          }
          volume_mount {
            name       = "jwks"
            mount_path = "/etc/wattprint/jwks"
            read_only  = true
          }
        }

        volume {
          name = "config"
          config_map {
            name = kubernetes_config_map_v1.config.metadata[0].name
          }
        }
        volume {
          name = "tmp"
          empty_dir {
            size_limit = "64Mi"
          }
        }
        volume {
          name = "gateway-tls"
          secret {
            secret_name = kubernetes_secret_v1.gateway_tls.metadata[0].name
          }
        }
        volume {
          name = "jwks"
          secret {
            secret_name = kubernetes_secret_v1.jwks.metadata[0].name
          }
        }
      }
    }
  }
}

resource "kubernetes_service_v1" "this" {
  for_each = local.components

  metadata {
    name      = "wattprint-${each.key}"
    namespace = local.ns
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "wattprint-${each.key}" })
  }
  spec {
    selector = { "app.kubernetes.io/name" = "wattprint-${each.key}" }
    dynamic "port" {
      for_each = each.value.ports
      content {
        name        = port.key
        port        = port.value
        target_port = port.key
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "this" {
  for_each = local.components

  metadata {
    name      = "wattprint-${each.key}"
    namespace = local.ns
    labels    = local.labels
  }
  spec {
    max_unavailable = "1"
    selector {
      match_labels = { "app.kubernetes.io/name" = "wattprint-${each.key}" }
    }
  }
}
