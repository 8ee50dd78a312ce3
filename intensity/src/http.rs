//! HTTP shared by the API clients: the rate limit, bounded retries on 429 honouring
//! `Retry-After`, and the mapping of transport errors and statuses to [`ProviderError`].

use crate::limiter::{RateLimit, RateLimiter};
use crate::ProviderError;
use reqwest::{header, RequestBuilder, StatusCode};
use std::time::Duration;

/// How a client retries HTTP 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first 429; then [`ProviderError::RateLimited`].
    pub max_retries: u32,
    /// Wait when the 429 has no usable `Retry-After`, doubled on each retry.
    pub default_wait: Duration,
    /// Longest wait the client sleeps through; a longer `Retry-After` is returned at once as
    /// [`ProviderError::RateLimited`] for the caller to schedule.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            default_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// A response that is not 429 or 5xx.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

/// One provider's HTTP client.
#[derive(Debug)]
pub(crate) struct HttpCore {
    client: reqwest::Client,
    base_url: String,
    provider: String,
    retry: RetryPolicy,
    limiter: Option<RateLimiter>,
}

impl HttpCore {
    pub(crate) fn new(
        provider: &str,
        base_url: &str,
        timeout: Duration,
        retry: RetryPolicy,
        rate_limit: Option<RateLimit>,
    ) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::Unavailable {
                provider: provider.to_owned(),
                detail: format!("cannot build an HTTP client: {}", error_chain(&e)),
            })?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            provider: provider.to_owned(),
            retry,
            limiter: rate_limit.map(RateLimiter::new),
        })
    }

    /// `base_url` + `path` (`path` starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends the request `build` makes (once per attempt), waiting for the rate limit, retrying
    /// 429 within the policy. Transport errors and 5xx are [`ProviderError::Unavailable`].
    pub(crate) async fn send(
        &self,
        what: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Reply, ProviderError> {
        let mut retries = 0u32;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.acquire().await;
            }
            let resp = build(&self.client)
                .send()
                .await
                .map_err(|e| self.unavailable(format!("{what}: {}", error_chain(&e))))?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(resp.headers()).unwrap_or_else(|| {
                    self.retry
                        .default_wait
                        .saturating_mul(2u32.saturating_pow(retries))
                });
                if retries >= self.retry.max_retries || wait > self.retry.max_wait {
                    return Err(ProviderError::RateLimited {
                        provider: self.provider.clone(),
                        retry_after: wait,
                        detail: format!("{what}: HTTP 429 after {} retries", retries),
                    });
                }
                tracing::warn!(
                    provider = %self.provider,
                    what,
                    wait_ms = wait.as_millis() as u64,
                    "rate limited by the provider, retrying"
                );
                tokio::time::sleep(wait).await;
                retries += 1;
                continue;
            }
            let body = resp.text().await.map_err(|e| {
                self.unavailable(format!("{what}: reading the body: {}", error_chain(&e)))
            })?;
            if status.is_server_error() {
                return Err(self.unavailable(format!("{what}: HTTP {status}: {}", snippet(&body))));
            }
            return Ok(Reply { status, body });
        }
    }

    /// The body of a 2xx reply; 401/403 are [`ProviderError::Auth`], other statuses
    /// [`ProviderError::Unsupported`] (the provider refused the request as asked).
    pub(crate) fn body(&self, what: &str, reply: Reply) -> Result<String, ProviderError> {
        let status = reply.status;
        if status.is_success() {
            return Ok(reply.body);
        }
        let detail = format!("{what}: HTTP {status}: {}", snippet(&reply.body));
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            Err(ProviderError::Auth {
                provider: self.provider.clone(),
                detail,
            })
        } else {
            Err(ProviderError::Unsupported {
                provider: self.provider.clone(),
                detail,
            })
        }
    }

    pub(crate) fn malformed(&self, detail: String) -> ProviderError {
        ProviderError::Malformed {
            provider: self.provider.clone(),
            detail,
        }
    }

    fn unavailable(&self, detail: String) -> ProviderError {
        ProviderError::Unavailable {
            provider: self.provider.clone(),
            detail,
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these APIs and falls back to the
/// policy's wait).
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The error and its causes on one line (reqwest puts the useful part in the sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The start of a body, for error messages.
fn snippet(body: &str) -> String {
    const MAX: usize = 200;
    let mut s: String = body.chars().take(MAX).collect();
    if body.chars().nth(MAX).is_some() {
        s.push('…');
    }
    s
}
