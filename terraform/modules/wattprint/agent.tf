# The agent DaemonSet on GPU nodes: NVML through the NVIDIA runtime, the spool and the node's
# own credentials and GPU mapping on the node (/var/lib/wattprint/spool, /etc/wattprint, made
# when the node is provisioned, owned by uid 10001), libvirt's domain XML read-only.

resource "kubernetes_daemon_set_v1" "agent" {
  count = var.agent.enabled ? 1 : 0

  metadata {
    name      = "wattprint-agent"
    namespace = local.ns
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "wattprint-agent" })
  }

  spec {
    selector {
      match_labels = { "app.kubernetes.io/name" = "wattprint-agent" }
    }

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "wattprint-agent" })
        annotations = {
          "wattprint.dev/config-sha256" = sha256(kubernetes_config_map_v1.config.data["wattprint.toml"])
        }
      }

      spec {
        service_account_name             = kubernetes_service_account_v1.this["agent"].metadata[0].name
        automount_service_account_token  = false
        runtime_class_name               = var.agent.runtime_class
        node_selector                    = var.agent.node_selector
        termination_grace_period_seconds = 30

        toleration {
          key      = "nvidia.com/gpu"
          operator = "Exists"
          effect   = "NoSchedule"
        }

        security_context {
          run_as_non_root = true
          run_as_user     = 10001
          run_as_group    = 10001
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        container {
          name              = "agent"
          image             = var.image
          image_pull_policy = "Always"
          args              = ["agent"]

          env {
            name  = "WATTPRINT_CONFIG"
            value = "/etc/wattprint/wattprint.toml"
          }
          env {
            name = "WATTPRINT_AGENT__HOST_ID"
            value_from {
              field_ref {
                field_path = "spec.nodeName"
              }
            }
          }
          env {
            name  = "NVIDIA_VISIBLE_DEVICES"
            value = "all"
          }
          env {
            name  = "NVIDIA_DRIVER_CAPABILITIES"
            value = "utility"
          }

          port {
            name           = "metrics"
            container_port = 9464
          }

          liveness_probe {
            http_get {
              path = "/healthz"
              port = "metrics"
            }
            period_seconds = 20
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = "metrics"
            }
            period_seconds = 10
          }

          resources {
            requests = { cpu = "50m", memory = "64Mi" }
            limits   = { cpu = "200m", memory = "256Mi" }
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
            name       = "host-config"
            mount_path = "/etc/wattprint/host"
            read_only  = true
          }
          volume_mount {
            name       = "spool"
            mount_path = "/var/lib/wattprint/spool"
          }
          volume_mount {
            name       = "libvirt"
            mount_path = "/host/etc/libvirt/qemu"
            read_only  = true
          }
          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "config"
          config_map {
            name = kubernetes_config_map_v1.config.metadata[0].name
          }
        }
        volume {
          name = "host-config"
          host_path {
            path = "/etc/wattprint"
            type = "Directory"
          }
        }
        volume {
          name = "spool"
          host_path {
            path = "/var/lib/wattprint/spool"
            type = "Directory"
          }
        }
        volume {
          name = "libvirt"
          host_path {
            path = "/etc/libvirt/qemu"
          }
        }
        volume {
          name = "tmp"
          empty_dir {
            size_limit = "16Mi"
          }
        }
      }
    }
  }
}
