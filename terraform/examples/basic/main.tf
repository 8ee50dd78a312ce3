# Wattprint on an existing Kubernetes cluster with an existing Kafka and ClickHouse.
#   terraform init && terraform apply -var-file=wattprint.tfvars
# Credentials come from variables (a tfvars file kept out of git, or TF_VAR_* variables).

terraform {
  required_version = ">= 1.6"
  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.36.0"
    }
    kafka = {
      source  = "Mongey/kafka"
      version = "~> 0.12.1"
    }
    clickhousedbops = {
      source  = "ClickHouse/clickhousedbops"
      version = "~> 1.0.0"
    }
  }
}

provider "kubernetes" {
  config_path    = var.kubeconfig
  config_context = var.kube_context
}

provider "kafka" {
  bootstrap_servers = var.kafka_brokers
  tls_enabled       = true
  sasl_mechanism    = "scram-sha512"
  sasl_username     = var.kafka_username
  sasl_password     = var.kafka_password
}

provider "clickhousedbops" {
  protocol = "https"
  host     = var.clickhouse_host
  port     = 8443
  auth_config = {
    strategy = "basicauth"
    username = var.clickhouse_username
    password = var.clickhouse_password
  }
}

module "wattprint" {
  source = "../../modules/wattprint"

  image = var.image

  store = {
    url = "https://${var.clickhouse_host}:8443"
  }

  bus = {
    brokers           = var.kafka_brokers
    security_protocol = "SASL_SSL"
    sasl_mechanism    = "SCRAM-SHA-512"
    sasl_username     = var.kafka_username
    sasl_password     = var.kafka_password
  }

  identity_provider = {
    issuer   = "https://idp.example.net/"
    jwks_url = "https://idp.example.net/.well-known/jwks.json"
  }

  gateway_tls = {
    cert       = file("${path.root}/secrets/gateway.pem")
    key        = file("${path.root}/secrets/gateway.key")
    client_ca  = file("${path.root}/secrets/ca.pem")
    hosts_toml = file("${path.root}/secrets/hosts.toml")
  }

  agent = {
    attribution_mode = "libvirt"
  }
}

output "query_api_url" {
  value = module.wattprint.query_api_url
}

output "gateway_address" {
  value = module.wattprint.gateway_address
}
