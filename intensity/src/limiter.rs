//! A client-side limit on requests per rolling window, shared by clones of a client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// At most `max_requests` requests in any rolling `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window (at least one is always allowed).
    pub max_requests: usize,
    /// Length of the rolling window.
    pub window: Duration,
}

impl RateLimit {
    /// WattTime's documented limit: 3,000 requests in any 5-minute rolling window.
    pub const WATTTIME: RateLimit = RateLimit {
        max_requests: 3_000,
        window: Duration::from_secs(300),
    };
}

/// Sliding-log limiter: remembers when the last `max_requests` requests were sent; a request
/// beyond the limit waits until the oldest of them leaves the window. Waiters are served in
/// order (the lock is fair).
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    sent: Arc<Mutex<VecDeque<Instant>>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit: RateLimit {
                max_requests: limit.max_requests.max(1),
                window: limit.window,
            },
            sent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Waits until one more request fits in the window, and counts it.
    pub(crate) async fn acquire(&self) {
        let mut sent = self.sent.lock().await;
        loop {
            let now = Instant::now();
            while sent
                .front()
                .is_some_and(|&t| now.duration_since(t) >= self.limit.window)
            {
                sent.pop_front();
            }
            if sent.len() < self.limit.max_requests {
                sent.push_back(now);
                return;
            }
            match sent.front() {
                Some(&oldest) => {
                    tracing::debug!(
                        wait_ms = (oldest + self.limit.window - now).as_millis() as u64,
                        "request waits for the rate limit"
                    );
                    tokio::time::sleep_until(oldest + self.limit.window).await;
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_limit_wait_for_the_window() {
        let limiter = RateLimiter::new(RateLimit {
            max_requests: 3,
            window: Duration::from_secs(300),
        });
        let clone = limiter.clone();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "within the limit: no wait");
        tokio::time::advance(Duration::from_secs(100)).await;
        // The clone shares the count: the fourth request waits until the first leaves.
        clone.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(300));
        // The three sent at 0 s have left the window: two more go at once, the next waits
        // until the three sent at 300 s leave.
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(300));
        limiter.acquire().await;
        assert_eq!(t0.elapsed(), Duration::from_secs(600));
    }
}
