//! The client's one error type. A refusal by the server arrives as [`Error::Api`] carrying the
//! RFC 7807 problem document it sent, so callers match on its status (401, 403, 404, 429, …).

use thiserror::Error;

pub use wattprint_api_types::Problem;

/// Everything a call can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The server answered with an error status and this problem document.
    #[error("wattprint API error {0}")]
    Api(Problem),
    /// The request could not be sent or its response not read (connection, TLS, timeout).
    #[error("request to {path} failed: {source}")]
    Transport {
        /// API path of the request.
        path: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A success response whose body is not the JSON this client expects.
    #[error("response of {path} (status {status}) is not the expected JSON: {source}")]
    Decode {
        /// API path of the request.
        path: String,
        /// HTTP status of the response.
        status: u16,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An argument cannot be sent (a base URL that is not http(s), a token with control
    /// characters, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A paginated listing handed back a cursor it had already given: following it would never
    /// end.
    #[error("pagination of {path} repeated cursor {cursor:?}")]
    CursorLoop {
        /// API path of the listing.
        path: String,
        /// The repeated cursor.
        cursor: String,
    },
}

impl Error {
    /// The problem document, when the server refused the request.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api(p) => Some(p),
            _ => None,
        }
    }

    /// HTTP status of the response, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(p) => Some(p.status),
            Error::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 401: no token, or one the server does not accept (expired, wrong signature).
    pub fn is_unauthorized(&self) -> bool {
        self.status() == Some(401) && self.problem().is_some()
    }

    /// 403: the token is valid but not allowed this (e.g. a tenant token on operator routes).
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403) && self.problem().is_some()
    }

    /// 404: does not exist, or belongs to another tenant (the server does not say which).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404) && self.problem().is_some()
    }

    /// 429: rate limited; [`Problem::retry_after_s`] says how long to wait when the server
    /// said.
    pub fn is_rate_limited(&self) -> bool {
        self.status() == Some(429) && self.problem().is_some()
    }
}

/// Builds the problem of an error response: its problem document when it has one, else an
/// `about:blank` problem with the status's reason and the start of the body as detail.
pub(crate) fn problem_of(
    status: u16,
    reason: &str,
    body: &[u8],
    retry_after_s: Option<u64>,
) -> Problem {
    let mut problem = serde_json::from_slice::<Problem>(body)
        .ok()
        .filter(|p| p.status == status)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let detail: String = text.chars().take(300).collect();
            Problem {
                kind: "about:blank".to_owned(),
                title: reason.to_owned(),
                status,
                detail,
                retry_after_s: None,
            }
        });
    problem.retry_after_s = retry_after_s;
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_document_is_read_as_sent() {
        let body = br#"{"type":"urn:wattprint:problem:not-found","title":"Not found","status":404,"detail":"workload w-1 not found"}"#;
        let p = problem_of(404, "Not Found", body, None);
        assert_eq!(p.kind, "urn:wattprint:problem:not-found");
        assert_eq!(p.detail, "workload w-1 not found");
        let e = Error::Api(p);
        assert!(e.is_not_found() && !e.is_unauthorized());
        assert_eq!(
            e.to_string(),
            "wattprint API error 404 Not found: workload w-1 not found"
        );
    }

    #[test]
    fn another_body_becomes_an_about_blank_problem_with_the_status() {
        let p = problem_of(502, "Bad Gateway", b"<html>upstream down</html>", Some(7));
        assert_eq!(
            (p.kind.as_str(), p.title.as_str(), p.status, p.retry_after_s),
            ("about:blank", "Bad Gateway", 502, Some(7))
        );
        assert!(p.detail.contains("upstream down"));
        // A problem document whose status disagrees with the response's is not trusted.
        let p = problem_of(429, "Too Many Requests", br#"{"status":200}"#, Some(3));
        assert_eq!((p.status, p.kind.as_str()), (429, "about:blank"));
        assert!(Error::Api(p).is_rate_limited());
    }
}
