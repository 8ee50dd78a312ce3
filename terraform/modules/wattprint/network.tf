# Default deny, then what each part needs (as deploy/kubernetes/base/networkpolicies.yaml).

locals {
  # part => [ingress ports (open to all), egress ports (any destination)]
  policies = {
    gateway   = [[50051], [9092, 9093, 9094, 8123, 8443]]
    enricher  = [[], [9092, 9093, 9094, 8123, 8443, 443]]
    query-api = [[8080], [8123, 8443, 443]]
    agent     = [[], [50051]]
  }
}

resource "kubernetes_network_policy_v1" "default_deny" {
  metadata {
    name      = "default-deny"
    namespace = local.ns
  }
  spec {
    pod_selector {}
    policy_types = ["Ingress", "Egress"]
  }
}

resource "kubernetes_network_policy_v1" "dns_and_scrape" {
  metadata {
    name      = "allow-dns-and-scrape"
    namespace = local.ns
  }
  spec {
    pod_selector {}
    policy_types = ["Ingress", "Egress"]
    egress {
      to {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = "kube-system" }
        }
      }
      ports {
        protocol = "UDP"
        port     = "53"
      }
      ports {
        protocol = "TCP"
        port     = "53"
      }
    }
    ingress {
      from {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = "monitoring" }
        }
      }
      ports {
        protocol = "TCP"
        port     = "9464"
      }
      ports {
        protocol = "TCP"
        port     = "8080"
      }
    }
  }
}

resource "kubernetes_network_policy_v1" "part" {
  for_each = local.policies

  metadata {
    name      = "wattprint-${each.key}"
    namespace = local.ns
  }
  spec {
    pod_selector {
      match_labels = { "app.kubernetes.io/name" = "wattprint-${each.key}" }
    }
    policy_types = ["Ingress", "Egress"]
    dynamic "ingress" {
      for_each = length(each.value[0]) > 0 ? [1] : []
      content {
        dynamic "ports" {
          for_each = each.value[0]
          content {
            protocol = "TCP"
            port     = tostring(ports.value)
          }
        }
      }
    }
    egress {
      dynamic "ports" {
        for_each = each.value[1]
        content {
          protocol = "TCP"
          port     = tostring(ports.value)
        }
      }
    }
  }
}
