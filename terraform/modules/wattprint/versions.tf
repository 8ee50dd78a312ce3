terraform {
  required_version = ">= 1.6"

  # Pinned to a patch series; `terraform init` records the exact builds in .terraform.lock.hcl,
  # which the root module (see ../../examples) commits.
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
