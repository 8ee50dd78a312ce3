//! What a load test reads while it runs: the enricher's and the gateway's `/metrics`
//! (Prometheus text) and a tenant's `GET /v1/summary` energy, as any operator or client would.

use anyhow::Context;
use std::time::Duration;
use wattprint_core::{TenantId, UnixMillis};
use wattprint_query_api::AuthConfig;

/// Sum of the samples of `name` whose labels contain every `key="value"` of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// Reads `/metrics` listeners and tenants' summaries over HTTP.
#[derive(Clone)]
pub struct Watcher {
    http: reqwest::Client,
    api: String,
    auth: AuthConfig,
}

impl Watcher {
    /// A watcher of the query API at `api` (`http://host:port`), minting tokens with `auth`.
    pub fn new(api: String, auth: AuthConfig) -> Watcher {
        Watcher {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            api,
            auth,
        }
    }

    /// The Prometheus text of the listener at `addr` (`host:port`).
    pub async fn scrape(&self, addr: &str) -> anyhow::Result<String> {
        let url = format!("http://{addr}/metrics");
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        anyhow::ensure!(r.status().is_success(), "GET {url}: {}", r.status());
        Ok(r.text().await?)
    }

    /// `tenant`'s total IT energy over `[from, to)` from `GET /v1/summary`, millijoules.
    pub async fn tenant_energy(
        &self,
        tenant: &str,
        (from, to): (UnixMillis, UnixMillis),
    ) -> anyhow::Result<u64> {
        let token = wattprint_query_api::mint_token(
            &self.auth,
            &TenantId::from(tenant),
            Duration::from_secs(600),
        )?;
        let url = format!("{}/v1/summary?from={}&to={}", self.api, from.0, to.0);
        let r = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "GET {url}: {status} {body}");
        body["totals"]["it_energy_mj"]
            .as_u64()
            .with_context(|| format!("GET {url}: no totals.it_energy_mj in {body}"))
    }
}

/// Freshness probes: the newest sample end and the tenant's cumulative energy sent by then;
/// a probe is visible once the tenant's summary holds at least that energy.
#[derive(Debug, Default)]
pub struct Freshness {
    pending: std::collections::VecDeque<(UnixMillis, u64)>,
    /// Seconds from a probe's sample end to the first summary that included it.
    pub seen_after_s: Vec<f64>,
}

impl Freshness {
    /// Notes that the tenant's samples up to the one ending at `end` add up to `energy_mj`.
    pub fn note(&mut self, end: UnixMillis, energy_mj: u64) {
        self.pending.push_back((end, energy_mj));
    }

    /// A summary read at `at` showed `stored_mj`: every probe it covers is visible.
    pub fn observe(&mut self, at: UnixMillis, stored_mj: u64) {
        while let Some(&(end, energy)) = self.pending.front() {
            if energy > stored_mj {
                break;
            }
            self.seen_after_s.push(at.since(end) as f64 / 1000.0);
            self.pending.pop_front();
        }
    }

    /// Probes not seen yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The `p`-th percentile (0–100, nearest rank) of the probes seen.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut v = self.seen_after_s.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_filter_by_name_and_labels() {
        let text = "# HELP x\n\
            wattprint_enricher_lag_records{partition=\"0\",topic=\"samples\"} 5\n\
            wattprint_enricher_lag_records{partition=\"1\",topic=\"samples\"} 7\n\
            wattprint_enricher_lag_records{partition=\"0\",topic=\"dead_letter\"} 100\n\
            wattprint_enricher_lag_records_total 1000\n\
            wattprint_gateway_samples_accepted_total 42\n";
        let lag = metric_sum(
            text,
            "wattprint_enricher_lag_records",
            &[("topic", "samples")],
        );
        assert_eq!(lag, 12.0);
        assert_eq!(
            metric_sum(text, "wattprint_enricher_lag_records", &[]),
            112.0
        );
        assert_eq!(
            metric_sum(text, "wattprint_gateway_samples_accepted_total", &[]),
            42.0
        );
        assert_eq!(metric_sum(text, "absent", &[]), 0.0);
    }

    #[test]
    fn a_probe_is_seen_once_the_summary_holds_its_energy() {
        let mut f = Freshness::default();
        f.note(UnixMillis(1_000), 10);
        f.note(UnixMillis(2_000), 25);
        f.note(UnixMillis(3_000), 40);
        f.observe(UnixMillis(2_500), 9);
        assert_eq!(f.pending(), 3);
        f.observe(UnixMillis(3_500), 25);
        assert_eq!(f.seen_after_s, [2.5, 1.5]);
        f.observe(UnixMillis(6_000), 40);
        assert_eq!(f.seen_after_s, [2.5, 1.5, 3.0]);
        assert_eq!(f.pending(), 0);
        assert_eq!(f.percentile(50.0), Some(2.5));
        assert_eq!(f.percentile(95.0), Some(3.0));
        assert_eq!(Freshness::default().percentile(50.0), None);
    }
}
