//! Per-tenant request rate limits, applied right after authentication to REST and gRPC alike
//! (see [`crate::auth::access`]): a token bucket (GCRA, the `governor` crate) per tenant, and
//! per subject for operator tokens. A request over the limit gets 429 with `Retry-After`
//! (gRPC `RESOURCE_EXHAUSTED`); other tenants are unaffected.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use thiserror::Error;

use crate::auth::Principal;
use crate::error::ApiError;

/// How often (in checks) buckets that have refilled completely are dropped, so memory follows
/// the tenants active recently rather than every tenant ever seen.
const SWEEP_EVERY: u64 = 4096;

/// A rate: sustained requests per second and the burst allowed on top.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second (may be fractional: 0.5 is one request every 2 s).
    pub per_second: f64,
    /// Requests a caller may make at once after being idle.
    pub burst: u32,
}

impl RateLimit {
    /// The `governor` quota of this rate.
    pub(crate) fn quota(&self) -> Result<Quota, RateLimitError> {
        let rate = self.per_second;
        if !rate.is_finite() || rate <= 0.0 || rate > 1e9 {
            return Err(RateLimitError::Rate(rate.to_string()));
        }
        let burst = NonZeroU32::new(self.burst).ok_or(RateLimitError::Burst)?;
        Ok(Quota::with_period(Duration::from_secs_f64(1.0 / rate))
            .ok_or_else(|| RateLimitError::Rate(rate.to_string()))?
            .allow_burst(burst))
    }
}

/// Whole seconds (at least 1) until `not_until` allows a request.
pub(crate) fn retry_after_s(
    not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>,
) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Why a [`RateLimit`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RateLimitError {
    /// The rate is not a positive finite number of at most one per nanosecond.
    #[error("rate limit of {0} requests per second must be positive and finite")]
    Rate(String),
    /// The burst is zero.
    #[error("rate limit burst must be at least 1")]
    Burst,
}

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RateKey {
    Tenant(String),
    Operator(String),
}

/// The keyed limiter shared by every request of a server.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: DefaultKeyedRateLimiter<RateKey>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("keys", &self.buckets.len())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter giving every tenant (and operator) `limit`.
    pub fn new(limit: RateLimit) -> Result<Self, RateLimitError> {
        let quota = limit.quota()?;
        Ok(Self {
            limit,
            buckets: DefaultKeyedRateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        })
    }

    /// The configured rate.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Spends one request of `principal`'s budget: `Ok`, or 429 with the whole seconds (at
    /// least 1) until the next request would be accepted.
    pub fn check(&self, principal: &Principal) -> Result<(), ApiError> {
        let key = match principal {
            Principal::Tenant(t) => RateKey::Tenant(t.tenant().to_string()),
            Principal::Operator(o) => RateKey::Operator(o.subject().to_owned()),
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.buckets.retain_recent();
        }
        self.buckets.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let retry_after_s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::debug!(retry_after_s, "rate limit exceeded");
            ApiError::TooManyRequests {
                retry_after_s: retry_after_s.max(1),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rates_are_refused() {
        for per_second in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateLimiter::new(RateLimit {
                per_second,
                burst: 1
            })
            .is_err());
        }
        assert_eq!(
            RateLimiter::new(RateLimit {
                per_second: 1.0,
                burst: 0
            })
            .unwrap_err(),
            RateLimitError::Burst
        );
    }
}
