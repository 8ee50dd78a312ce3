//! Rate limits per client IP for answers given without a verified token: 401s (bad, missing or
//! unverifiable tokens, JWKS failures included, REST and gRPC), `/healthz`, `/openapi.json`
//! and unknown paths. A token-guessing flood is throttled before its guesses are verified.
//!
//! Each such answer spends one request of the client IP's bucket (GCRA, `governor`). When the
//! bucket is empty, that answer becomes a 429 with `Retry-After`, and every request from the IP
//! (valid tokens too: the server cannot tell a guess from a token without verifying it) is
//! answered 429 at once until the bucket has a request again. Authenticated answers spend
//! nothing here; they have the per-tenant limit ([`crate::ratelimit`]). The client IP is the
//! TCP peer ([`axum::extract::ConnectInfo`], set by [`crate::serve`]); a router served without
//! it is not limited here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::DefaultKeyedRateLimiter;

use crate::error::ApiError;
use crate::ratelimit::{retry_after_s, RateLimit, RateLimitError};

/// How often (in charges) idle buckets and expired blocks are dropped.
const SWEEP_EVERY: u64 = 4096;

/// The per-IP limiter of unauthenticated answers.
pub struct UnauthenticatedLimiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    charges: AtomicU64,
}

impl std::fmt::Debug for UnauthenticatedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnauthenticatedLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl UnauthenticatedLimiter {
    /// A limiter giving every client IP `limit` unauthenticated answers.
    pub fn new(limit: RateLimit) -> Result<Self, RateLimitError> {
        Ok(Self {
            buckets: DefaultKeyedRateLimiter::keyed(limit.quota()?),
            limit,
            blocked: Mutex::new(HashMap::new()),
            charges: AtomicU64::new(0),
        })
    }

    /// The configured rate.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Seconds (≥ 1) the IP must still wait, if it is blocked.
    fn blocked_for(&self, ip: IpAddr) -> Option<u64> {
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let until = *blocked.get(&ip)?;
        let left = until.checked_duration_since(Instant::now())?;
        Some((left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1))
    }

    /// Spends one unauthenticated answer of `ip`: `Ok`, or the seconds to wait, the IP then
    /// being blocked that long.
    fn charge(&self, ip: IpAddr) -> Result<(), u64> {
        let sweep = self.charges.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        if sweep {
            self.buckets.retain_recent();
            let now = Instant::now();
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            blocked.retain(|_, until| *until > now);
        }
        self.buckets.check_key(&ip).map_err(|not_until| {
            let wait = retry_after_s(&not_until);
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            blocked.insert(ip, Instant::now() + Duration::from_secs(wait));
            tracing::debug!(%ip, retry_after_s = wait, "unauthenticated requests over the limit");
            wait
        })
    }
}

/// Whether `resp` to a request for `path` was given without a verified token: a 401, a gRPC
/// `UNAUTHENTICATED`, or any answer outside the tenant routes (`/v1/…`) and gRPC methods.
fn unauthenticated(path: &str, grpc: bool, resp: &Response) -> bool {
    if resp.status() == StatusCode::UNAUTHORIZED {
        return true;
    }
    if grpc {
        // tonic answers an error "trailers-only": the status is in the headers.
        return resp
            .headers()
            .get("grpc-status")
            .is_some_and(|v| v.as_bytes() == b"16");
    }
    !path.starts_with("/v1/")
}

fn too_many(grpc: bool, retry_after_s: u64) -> Response {
    let err = ApiError::TooManyRequests { retry_after_s };
    if grpc {
        tonic::Status::from(err).into_http::<axum::body::Body>()
    } else {
        err.into_response()
    }
}

/// Middleware: refuses blocked IPs up front and charges unauthenticated answers to their IP.
pub(crate) async fn limit_unauthenticated(
    State(limiter): State<Arc<UnauthenticatedLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(ip) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return next.run(req).await;
    };
    let grpc = crate::grpc::is_grpc_request(req.headers());
    if let Some(wait) = limiter.blocked_for(ip) {
        return too_many(grpc, wait);
    }
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    if unauthenticated(&path, grpc, &resp) {
        if let Err(wait) = limiter.charge(ip) {
            return too_many(grpc, wait);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_is_blocked_once_its_burst_is_spent_and_others_are_not() {
        let l = UnauthenticatedLimiter::new(RateLimit {
            per_second: 0.01,
            burst: 2,
        })
        .unwrap();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        assert!(l.charge(a).is_ok() && l.charge(a).is_ok());
        assert!(l.blocked_for(a).is_none());
        let wait = l.charge(a).unwrap_err();
        assert!((90..=100).contains(&wait), "{wait}");
        assert!(l.blocked_for(a).is_some());
        assert!(l.blocked_for(b).is_none() && l.charge(b).is_ok());
    }
}
