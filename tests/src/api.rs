//! A small client for the query API as a tenant sees it: real HTTP, real tokens.

use serde_json::{json, Value};
use std::time::Duration;
use wattprint_core::{TenantId, UnixMillis};
use wattprint_query_api::AuthConfig;

/// Talks to one query API with tokens minted for any tenant.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    auth: AuthConfig,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the API at `base` (`http://host:port`), minting tokens with `auth`.
    pub fn new(base: impl Into<String>, auth: AuthConfig) -> Self {
        Self {
            base: base.into(),
            auth,
            http: reqwest::Client::new(),
        }
    }

    /// A fresh 10-minute token for `tenant`.
    pub fn token(&self, tenant: &str) -> String {
        wattprint_query_api::mint_token(
            &self.auth,
            &TenantId::from(tenant),
            Duration::from_secs(600),
        )
        .expect("token")
    }

    /// `GET path` as `tenant`: status and JSON body (`Null` when there is none).
    pub async fn get(&self, tenant: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(self.token(tenant))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST /v1/workloads` over `instances` from `from` to `to` (Unix ms), R = 1.
    pub async fn create_workload(
        &self,
        tenant: &str,
        instances: &[&str],
        from: i64,
        to: i64,
    ) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/workloads", self.base))
            .bearer_auth(self.token(tenant))
            .json(&json!({
                "label": "phase",
                "instance_ids": instances,
                "from": UnixMillis(from).to_rfc3339(),
                "to": UnixMillis(to).to_rfc3339(),
                "functional_unit": "training run",
                "functional_units": 1.0,
            }))
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Creates a workload and returns its footprint.
    pub async fn footprint(&self, tenant: &str, instances: &[&str], from: i64, to: i64) -> Value {
        let (status, w) = self.create_workload(tenant, instances, from, to).await;
        assert_eq!(status, 201, "{w}");
        let id = w["id"].as_str().expect("workload id");
        let (status, body) = self.get(tenant, &format!("/v1/workloads/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body["footprint"].clone()
    }

    /// IT energy (mJ) stored for `instance` between `from` and `to`, summed from the 5-minute
    /// series (no workload is created).
    pub async fn series_energy(&self, tenant: &str, instance: &str, from: i64, to: i64) -> u64 {
        let (status, body) = self
            .get(
                tenant,
                &format!("/v1/instances/{instance}/series?from={from}&to={to}&step=5m"),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["energy_mj"].as_u64().expect("energy_mj"))
            .sum()
    }
}
