//! The instance id of the VM the agent runs in, from the cloud's instance metadata service
//! (in-guest attribution, see [`crate::attribution`]).
//!
//! - **AWS** (IMDSv2): `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`,
//!   then `GET /latest/meta-data/instance-id` with `X-aws-ec2-metadata-token` → `i-0abc…`.
//! - **GCP**: `GET /computeMetadata/v1/instance/id` with `Metadata-Flavor: Google` → the
//!   numeric instance id; the answer must carry `Metadata-Flavor: Google` too.
//! - **Azure** (IMDS): `GET /metadata/instance/compute/vmId?api-version=2021-02-01&format=text`
//!   with `Metadata: true` → the VM's uuid.
//!
//! Requests never go through a proxy, and each has a timeout (default 2 s): outside the cloud
//! the service does not answer, and the error says to set the instance id in the config.

use std::time::Duration;
use thiserror::Error;
use wattprint_core::InstanceId;

/// Default timeout of one metadata request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// A cloud's instance metadata service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataProvider {
    /// AWS EC2 IMDSv2.
    Aws,
    /// Google Compute Engine metadata server.
    Gcp,
    /// Azure Instance Metadata Service.
    Azure,
}

impl MetadataProvider {
    /// Parses `aws`, `gcp` or `azure`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aws" => Some(Self::Aws),
            "gcp" => Some(Self::Gcp),
            "azure" => Some(Self::Azure),
            _ => None,
        }
    }

    /// The service's address inside the cloud.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Aws | Self::Azure => "http://169.254.169.254",
            Self::Gcp => "http://metadata.google.internal",
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aws => "AWS instance metadata (IMDSv2)",
            Self::Gcp => "GCP metadata server",
            Self::Azure => "Azure IMDS",
        }
    }
}

/// Why the instance id could not be fetched.
#[derive(Debug, Error)]
pub enum MetadataError {
    /// No answer within the timeout.
    #[error(
        "{} at {url} did not answer within {timeout_ms} ms; is the agent running inside such a \
         VM? Otherwise set agent.attribution.instance_id",
        provider.name()
    )]
    Timeout {
        /// The service.
        provider: MetadataProvider,
        /// The URL asked.
        url: String,
        /// The timeout.
        timeout_ms: u128,
    },
    /// The service could not be reached.
    #[error(
        "cannot reach {} at {url}: {message}; is the agent running inside such a VM? Otherwise \
         set agent.attribution.instance_id",
        provider.name()
    )]
    Unreachable {
        /// The service.
        provider: MetadataProvider,
        /// The URL asked.
        url: String,
        /// The transport error.
        message: String,
    },
    /// The service answered with an error status.
    #[error("{} at {url} answered HTTP {status}: {body}", provider.name())]
    Status {
        /// The service.
        provider: MetadataProvider,
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The answer is not an instance id.
    #[error("{} at {url}: {problem}", provider.name())]
    Invalid {
        /// The service.
        provider: MetadataProvider,
        /// The URL asked.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The base URL is not an http URL.
    #[error("metadata URL {0:?} must be an http:// URL")]
    BadUrl(String),
}

/// Fetches this VM's instance id from `provider`'s metadata service at `base_url` (its
/// default address when `None`), each request bounded by `timeout`.
#[tracing::instrument(skip_all, fields(provider = provider.name()))]
pub async fn fetch_instance_id(
    provider: MetadataProvider,
    base_url: Option<&str>,
    timeout: Duration,
) -> Result<InstanceId, MetadataError> {
    let base = base_url
        .unwrap_or(provider.default_base_url())
        .trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(MetadataError::BadUrl(base.to_owned()));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| MetadataError::Unreachable {
            provider,
            url: base.to_owned(),
            message: e.to_string(),
        })?;
    let ask = Ask { provider, timeout };
    let id = match provider {
        MetadataProvider::Aws => {
            let url = format!("{base}/latest/api/token");
            let token = ask
                .send(
                    &url,
                    client
                        .put(&url)
                        .header("X-aws-ec2-metadata-token-ttl-seconds", "60"),
                )
                .await?;
            let token = token.text.trim();
            if token.is_empty() {
                return Err(ask.invalid(&url, "the session token is empty"));
            }
            let url = format!("{base}/latest/meta-data/instance-id");
            ask.send(
                &url,
                client.get(&url).header("X-aws-ec2-metadata-token", token),
            )
            .await?
        }
        MetadataProvider::Gcp => {
            let url = format!("{base}/computeMetadata/v1/instance/id");
            let answer = ask
                .send(&url, client.get(&url).header("Metadata-Flavor", "Google"))
                .await?;
            if answer.flavor.as_deref() != Some("Google") {
                return Err(ask.invalid(
                    &url,
                    "the answer lacks the `Metadata-Flavor: Google` header: this is not the GCP \
                     metadata server",
                ));
            }
            answer
        }
        MetadataProvider::Azure => {
            let url =
                format!("{base}/metadata/instance/compute/vmId?api-version=2021-02-01&format=text");
            ask.send(&url, client.get(&url).header("Metadata", "true"))
                .await?
        }
    };
    let text = id.text.trim();
    let printable = text.chars().all(|c| c.is_ascii_graphic());
    if text.is_empty() || text.len() > 128 || !printable {
        return Err(ask.invalid(
            &id.url,
            &format!("{text:?} is not an instance id (1 to 128 printable characters)"),
        ));
    }
    tracing::info!(instance = %text, "instance id from the metadata service");
    Ok(InstanceId::new(text))
}

struct Answer {
    url: String,
    text: String,
    flavor: Option<String>,
}

struct Ask {
    provider: MetadataProvider,
    timeout: Duration,
}

impl Ask {
    fn invalid(&self, url: &str, problem: &str) -> MetadataError {
        MetadataError::Invalid {
            provider: self.provider,
            url: url.to_owned(),
            problem: problem.to_owned(),
        }
    }

    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Answer, MetadataError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                MetadataError::Timeout {
                    provider: self.provider,
                    url: url.to_owned(),
                    timeout_ms: self.timeout.as_millis(),
                }
            } else {
                MetadataError::Unreachable {
                    provider: self.provider,
                    url: url.to_owned(),
                    message: error_chain(&e),
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let flavor = response
            .headers()
            .get("Metadata-Flavor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.map_err(transport)?;
        if !status.is_success() {
            let mut body: String = text.trim().chars().take(200).collect();
            if body.is_empty() {
                body = "(empty body)".to_owned();
            }
            return Err(MetadataError::Status {
                provider: self.provider,
                url: url.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        Ok(Answer {
            url: url.to_owned(),
            text,
            flavor,
        })
    }
}

/// An error and its sources, `: `-separated (reqwest's own message omits the cause).
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
