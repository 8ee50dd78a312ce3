//! The RFC 7807 problem document, the body of every failure.

use serde::{Deserialize, Serialize};

/// An RFC 7807 problem document (`application/problem+json`): the body of every failure.
// Reading one tolerates missing fields (a proxy's error page is `about:blank`); the server
// always sends all four, so the schema keeps them required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ProblemDocument)]
pub struct Problem {
    /// Stable URI of the kind of problem, `urn:wattprint:problem:<kind>`.
    #[serde(rename = "type", default = "about_blank")]
    #[schema(required = true, value_type = String, example = "urn:wattprint:problem:not-found")]
    pub kind: String,
    /// Short summary of the kind of problem, the same for every problem of that type.
    #[serde(default)]
    #[schema(required = true, value_type = String, example = "Not found")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 404)]
    pub status: u16,
    /// What went wrong with this request, in words.
    #[serde(default)]
    #[schema(required = true, example = "workload w-1 not found")]
    pub detail: String,
    /// Seconds to wait before retrying, from the `Retry-After` header (429, 503); never in
    /// the body.
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}
