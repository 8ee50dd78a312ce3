//! [`Client`]: HTTP plumbing (URLs, bearer token, JSON, problem documents) and one method per
//! endpoint.

use std::collections::{BTreeMap, HashSet};

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{problem_of, Error};
use crate::types::*;

/// Environment variable holding the API's base URL (e.g. `http://127.0.0.1:8080`).
pub const ENV_URL: &str = "WATTPRINT_URL";
/// Environment variable holding the bearer token.
pub const ENV_TOKEN: &str = "WATTPRINT_TOKEN";

/// A client of one Wattprint query API, acting with one token. Cheap to clone (the connection
/// pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: HeaderValue,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("auth", &"<redacted>")
            .finish()
    }
}

type Query = Vec<(&'static str, String)>;

impl Client {
    /// A client of the API at `base_url` (`http(s)://host:port`, optionally with a path
    /// prefix) using the bearer `token`.
    pub fn new(base_url: &str, token: &str) -> Result<Client, Error> {
        Self::with_http_client(base_url, token, reqwest::Client::new())
    }

    /// As [`Client::new`], with a `reqwest` client of the caller's (timeouts, proxies, TLS
    /// roots).
    pub fn with_http_client(
        base_url: &str,
        token: &str,
        http: reqwest::Client,
    ) -> Result<Client, Error> {
        let mut base = Url::parse(base_url)
            .map_err(|e| Error::InvalidArgument(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::InvalidArgument(format!(
                "base URL {base_url:?} must be http:// or https://"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                Error::InvalidArgument("token has characters a header cannot carry".into())
            })?;
        auth.set_sensitive(true);
        Ok(Client { http, base, auth })
    }

    /// A client from [`ENV_URL`] and [`ENV_TOKEN`].
    pub fn from_env() -> Result<Client, Error> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                Error::InvalidArgument(format!("environment variable {name} is not set"))
            })
        };
        Self::new(&var(ENV_URL)?, &var(ENV_TOKEN)?)
    }

    /// The API's base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Checked in the constructor: http(s) URLs are always bases.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends one request and decodes the JSON answer; an error status becomes
    /// [`Error::Api`].
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &Query,
        body: Option<&B>,
    ) -> Result<T, Error> {
        let (path, status, bytes) = self.fetch(method, segments, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode {
            path,
            status,
            source,
        })
    }

    /// Sends one request and returns the answer's path, status and bytes; an error status
    /// becomes [`Error::Api`].
    #[tracing::instrument(skip_all, fields(method = %method, path = tracing::field::Empty, status = tracing::field::Empty))]
    async fn fetch<B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &Query,
        body: Option<&B>,
    ) -> Result<(String, u16, Vec<u8>), Error> {
        let url = self.url(segments);
        let path = url.path().to_owned();
        let span = tracing::Span::current();
        span.record("path", path.as_str());
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "application/json, application/problem+json, */*");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let transport = |source| Error::Transport {
            path: path.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        span.record("status", status.as_u16());
        let retry_after_s = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            let problem = problem_of(
                status.as_u16(),
                status.canonical_reason().unwrap_or("HTTP error"),
                &bytes,
                retry_after_s,
            );
            tracing::debug!(%problem, "api refused the request");
            return Err(Error::Api(problem));
        }
        Ok((path, status.as_u16(), bytes.to_vec()))
    }

    async fn get<T: DeserializeOwned>(&self, segments: &[&str], query: &Query) -> Result<T, Error> {
        self.call::<(), T>(Method::GET, segments, query, None).await
    }

    // -----------------------------------------------------------------------------------------
    // Endpoints

    /// `GET /healthz` (no token needed).
    pub async fn health(&self) -> Result<Health, Error> {
        self.get(&["healthz"], &Query::new()).await
    }

    /// `GET /openapi.json`: the API's OpenAPI 3 document, as JSON.
    pub async fn openapi(&self) -> Result<serde_json::Value, Error> {
        self.get(&["openapi.json"], &Query::new()).await
    }

    /// `GET /v1/instances`: one page of the tenant's instances.
    pub async fn list_instances(&self, page: &PageRequest) -> Result<InstanceList, Error> {
        self.get(&["v1", "instances"], &page_query(page)).await
    }

    /// All the tenant's instances, following `next_cursor` page by page (`page_size` items a
    /// request; the server's default when `None`).
    pub async fn all_instances(&self, page_size: Option<u32>) -> Result<Vec<Instance>, Error> {
        let mut out = Vec::new();
        let mut pages = Cursors::new("/v1/instances");
        let mut page = PageRequest {
            limit: page_size,
            cursor: None,
        };
        loop {
            let list = self.list_instances(&page).await?;
            out.extend(list.instances);
            match pages.next(list.next_cursor)? {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/instances/{id}/series`: an instance's energy, power, intensity and emissions
    /// over time.
    pub async fn instance_series(
        &self,
        instance_id: &str,
        query: &SeriesQuery,
    ) -> Result<Series, Error> {
        let mut q = Query::new();
        push_time(&mut q, "from", query.from.as_ref());
        push_time(&mut q, "to", query.to.as_ref());
        if let Some(step) = query.step {
            q.push(("step", step.as_str().to_owned()));
        }
        self.get(&["v1", "instances", instance_id, "series"], &q)
            .await
    }

    /// `GET /v1/summary`: the tenant's usage per instance and in total over `[from, to)`.
    pub async fn summary(&self, from: &Timestamp, to: &Timestamp) -> Result<TenantSummary, Error> {
        self.get(&["v1", "summary"], &range_query(from, to)).await
    }

    /// `GET /v1/restatements`: intervals in `[from, to)` whose intensity was restated.
    pub async fn restatements(
        &self,
        from: &Timestamp,
        to: &Timestamp,
    ) -> Result<Restatements, Error> {
        self.get(&["v1", "restatements"], &range_query(from, to))
            .await
    }

    /// `GET /v1/statements`: the tenant's months, issued newest first, then the preliminary
    /// ones.
    pub async fn statements(&self) -> Result<StatementList, Error> {
        self.get(&["v1", "statements"], &Query::new()).await
    }

    /// `GET /v1/statements/{period}`: the tenant's statement of `period` (`YYYY-MM`), issued
    /// or preliminary.
    pub async fn statement(&self, period: &str) -> Result<Statement, Error> {
        self.get(&["v1", "statements", period], &Query::new()).await
    }

    /// The statement of `period` as a document to file: its bytes in `format` (`json` exactly
    /// as issued, `csv` or `pdf`).
    pub async fn statement_document(
        &self,
        period: &str,
        format: StatementFormat,
    ) -> Result<Vec<u8>, Error> {
        let name = format!("{period}.{}", format.extension());
        self.bytes(&["v1", "statements", &name]).await
    }

    /// `POST /v1/workloads`: creates a workload (201).
    pub async fn create_workload(&self, workload: &NewWorkload) -> Result<Workload, Error> {
        self.call(
            Method::POST,
            &["v1", "workloads"],
            &Query::new(),
            Some(workload),
        )
        .await
    }

    /// `GET /v1/workloads`: one page of the tenant's workloads, newest first; `status`
    /// filters on servers that have workload status.
    pub async fn list_workloads(
        &self,
        page: &PageRequest,
        status: Option<WorkloadStatus>,
    ) -> Result<WorkloadList, Error> {
        let mut q = page_query(page);
        if let Some(s) = status {
            q.push(("status", s.as_str().to_owned()));
        }
        self.get(&["v1", "workloads"], &q).await
    }

    /// All the tenant's workloads (with `status`), following `next_cursor` page by page
    /// (`page_size` items a request; the server's default when `None`).
    pub async fn all_workloads(
        &self,
        status: Option<WorkloadStatus>,
        page_size: Option<u32>,
    ) -> Result<Vec<Workload>, Error> {
        let mut out = Vec::new();
        let mut pages = Cursors::new("/v1/workloads");
        let mut page = PageRequest {
            limit: page_size,
            cursor: None,
        };
        loop {
            let list = self.list_workloads(&page, status).await?;
            out.extend(list.workloads);
            match pages.next(list.next_cursor)? {
                Some(cursor) => page.cursor = Some(cursor),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/workloads/{id}`: the workload with its footprint (energy, emissions, SCI).
    pub async fn workload(&self, id: &str) -> Result<WorkloadDetail, Error> {
        self.get(&["v1", "workloads", id], &Query::new()).await
    }

    /// `GET /v1/workloads/{id}/evidence`: the workload's energy evidence (measured vs
    /// estimated energy, facility energy, emissions, sources, method, content hash) to attach
    /// to model documentation.
    pub async fn workload_evidence(&self, id: &str) -> Result<WorkloadEvidence, Error> {
        self.get(&["v1", "workloads", id, "evidence"], &Query::new())
            .await
    }

    /// `PUT /v1/workloads/{id}/labels`: replaces the workload's labels.
    pub async fn set_labels(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Workload, Error> {
        let body = LabelsRequest {
            labels: labels.clone(),
        };
        self.call(
            Method::PUT,
            &["v1", "workloads", id, "labels"],
            &Query::new(),
            Some(&body),
        )
        .await
    }

    /// `POST /v1/workloads/{id}/close`: closes an open workload at `end` (server default:
    /// now).
    pub async fn close_workload(
        &self,
        id: &str,
        end: Option<Timestamp>,
    ) -> Result<Workload, Error> {
        let body = CloseRequest { end };
        self.call(
            Method::POST,
            &["v1", "workloads", id, "close"],
            &Query::new(),
            Some(&body),
        )
        .await
    }

    /// `GET /v1/workloads/{id}/whatif`: Flexible Start and Pause and Resume what-ifs.
    pub async fn whatif(&self, id: &str, query: &WhatIfQuery) -> Result<WhatIf, Error> {
        let mut q = Query::new();
        if !query.window_hours.is_empty() {
            q.push(("window_hours", join_numbers(&query.window_hours)));
        }
        if !query.factors.is_empty() {
            q.push(("factor", join_numbers(&query.factors)));
        }
        if let Some(b) = query.basis {
            q.push(("basis", b.as_str().to_owned()));
        }
        self.get(&["v1", "workloads", id, "whatif"], &q).await
    }

    /// `GET /v1/operator/tenants`: every tenant with its instance and GPU counts (operator
    /// tokens only; a tenant token gets 403).
    pub async fn operator_tenants(&self) -> Result<OperatorTenantList, Error> {
        self.get(&["v1", "operator", "tenants"], &Query::new())
            .await
    }

    /// `GET /v1/operator/tenants/{tenant}/summary`: a tenant's usage over `[from, to)`, the
    /// body the tenant gets from [`Client::summary`] (operator tokens only).
    pub async fn operator_tenant_summary(
        &self,
        tenant: &str,
        from: &Timestamp,
        to: &Timestamp,
    ) -> Result<TenantSummary, Error> {
        self.get(
            &["v1", "operator", "tenants", tenant, "summary"],
            &range_query(from, to),
        )
        .await
    }

    /// `GET /v1/operator/statements/{period}.{csv|parquet}`: every tenant's statement of
    /// `period` (`YYYY-MM`), one row per line, as a file (operator tokens only).
    pub async fn operator_statements_export(
        &self,
        period: &str,
        format: StatementExportFormat,
    ) -> Result<Vec<u8>, Error> {
        let name = format!("{period}.{}", format.extension());
        self.bytes(&["v1", "operator", "statements", &name]).await
    }

    /// The body of a GET without a query, as bytes (a document, not JSON).
    async fn bytes(&self, path: &[&str]) -> Result<Vec<u8>, Error> {
        let (_, _, bytes) = self
            .fetch::<()>(Method::GET, path, &Query::new(), None)
            .await?;
        Ok(bytes)
    }
}

fn page_query(page: &PageRequest) -> Query {
    let mut q = Query::new();
    if let Some(limit) = page.limit {
        q.push(("limit", limit.to_string()));
    }
    if let Some(cursor) = &page.cursor {
        q.push(("cursor", cursor.clone()));
    }
    q
}

fn push_time(q: &mut Query, name: &'static str, t: Option<&Timestamp>) {
    if let Some(t) = t {
        q.push((name, t.to_query()));
    }
}

fn range_query(from: &Timestamp, to: &Timestamp) -> Query {
    vec![("from", from.to_query()), ("to", to.to_query())]
}

fn join_numbers(xs: &[f64]) -> String {
    xs.iter().map(f64::to_string).collect::<Vec<_>>().join(",")
}

/// Follows a listing's cursors, refusing one handed out twice.
struct Cursors {
    path: &'static str,
    seen: HashSet<String>,
}

impl Cursors {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            seen: HashSet::new(),
        }
    }

    /// The cursor to ask with next, `None` at the end.
    fn next(&mut self, next_cursor: Option<String>) -> Result<Option<String>, Error> {
        match next_cursor.filter(|c| !c.is_empty()) {
            None => Ok(None),
            Some(c) if !self.seen.insert(c.clone()) => Err(Error::CursorLoop {
                path: self.path.to_owned(),
                cursor: c,
            }),
            Some(c) => Ok(Some(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_one_escaped_path_segment_under_the_base_path() {
        let c = Client::new("https://example.test/wattprint/", "t").unwrap();
        assert_eq!(
            c.url(&["v1", "workloads", "a/b c?", "whatif"]).as_str(),
            "https://example.test/wattprint/v1/workloads/a%2Fb%20c%3F/whatif"
        );
        let c = Client::new("http://127.0.0.1:8080", "t").unwrap();
        assert_eq!(
            c.url(&["healthz"]).as_str(),
            "http://127.0.0.1:8080/healthz"
        );
    }

    #[test]
    fn bad_base_urls_and_tokens_are_refused() {
        for url in ["127.0.0.1:8080", "ftp://x", "mailto:a@b", ""] {
            assert!(
                matches!(Client::new(url, "t"), Err(Error::InvalidArgument(_))),
                "{url}"
            );
        }
        assert!(matches!(
            Client::new("http://x", "a\nb"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(!format!("{:?}", Client::new("http://x", "secret").unwrap()).contains("secret"));
    }

    #[test]
    fn cursors_end_on_none_or_empty_and_refuse_a_loop() {
        let mut c = Cursors::new("/v1/x");
        assert_eq!(c.next(Some("a".into())).unwrap(), Some("a".into()));
        assert_eq!(c.next(Some("b".into())).unwrap(), Some("b".into()));
        assert!(matches!(
            c.next(Some("a".into())),
            Err(Error::CursorLoop { .. })
        ));
        assert_eq!(c.next(Some(String::new())).unwrap(), None);
        assert_eq!(c.next(None).unwrap(), None);
    }

    #[test]
    fn number_lists_are_comma_separated() {
        assert_eq!(join_numbers(&[6.0, 1.5, 24.0]), "6,1.5,24");
    }
}
