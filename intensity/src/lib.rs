//! Grid carbon-intensity providers behind one trait, [`Provider`], each yielding the ledger's
//! [`IntensityPoint`]s with their provenance:
//!
//! - [`watttime::WattTimeClient`]: WattTime API v3 (marginal `co2_moer` and average `co2_aoer`;
//!   history, historical forecasts, the current forecast, region from a location);
//! - [`electricitymaps::ElectricityMapsClient`]: Electricity Maps API v3 (average intensity;
//!   history and the current forecast);
//! - [`files::FileProvider`]: files imported by air-gapped operators (the ledger's own CSV and
//!   JSON, WattTime's and Electricity Maps' CSV exports), served through the same trait.
//!
//! Every point returned passes [`IntensityPoint::validate`]; a point that does not goes to
//! [`Fetched::rejected`] with the reason, never silently dropped, and nothing is invented:
//! periods of the requested range that the provider did not cover are listed in
//! [`Fetched::gaps`]. Values are converted exactly to g/kWh (`lbs_co2_per_mwh` × 0.45359237).
//!
//! These APIs cannot be reached from the machine this crate was written on: the clients are
//! tested against a local HTTP server (`tests/`) answering in the providers' documented formats,
//! built from the real shipped data (`data/moer/`, `data/grid-average/`).

#![forbid(unsafe_code)]

use async_trait::async_trait;
use std::time::Duration;
use thiserror::Error;
use wattprint_core::intensity::{IntensityPoint, PointKind, Signal};
use wattprint_core::{RegionId, UnixMillis};

pub mod cloud_regions;
pub mod config;
pub mod configured;
pub mod electricitymaps;
pub mod files;
mod http;
mod ledger;
mod limiter;
pub mod locations;
pub mod timefmt;
pub mod watttime;

pub use http::RetryPolicy;
pub use limiter::RateLimit;

/// What to fetch from a provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// Wattprint region the points are for.
    pub region: RegionId,
    /// The provider's name for the region (WattTime region, Electricity Maps zone).
    pub provider_region: String,
    /// Marginal or average.
    pub signal: Signal,
    /// [`PointKind::Actual`]: the history in `[from, to)`. [`PointKind::Forecast`]: the
    /// forecasts issued in `[from, to)`, or the current forecast where the API has only that.
    pub kind: PointKind,
    /// Start of the range (inclusive).
    pub from: UnixMillis,
    /// End of the range (exclusive).
    pub to: UnixMillis,
}

/// What a provider returned for one [`FetchRequest`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fetched {
    /// Valid points, sorted by issue time then period start.
    pub points: Vec<IntensityPoint>,
    /// Points refused, each saying which point and why (e.g. [`IntensityPoint::validate`]'s
    /// error).
    pub rejected: Vec<String>,
    /// Periods with no valid point, `[start, end)`: for actuals, the parts of the requested range
    /// the provider did not return (or returned only refused points for); for forecasts, the
    /// holes inside each returned forecast run. Never filled in.
    pub gaps: Vec<(UnixMillis, UnixMillis)>,
}

/// Why a fetch failed as a whole. Each variant names the provider and what it was doing.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ProviderError {
    /// Credentials refused (HTTP 401/403), or a login that gave no token.
    #[error("{provider}: authentication failed: {detail}")]
    Auth {
        /// Provider name.
        provider: String,
        /// What was refused.
        detail: String,
    },
    /// Still HTTP 429 after the client's own bounded retries.
    #[error("{provider}: rate limited, retry after {retry_after:?}: {detail}")]
    RateLimited {
        /// Provider name.
        provider: String,
        /// How long the provider asked to wait (its last `Retry-After`).
        retry_after: Duration,
        /// Which request.
        detail: String,
    },
    /// A body that cannot be used: not JSON, a missing field, an unknown unit, data for another
    /// region.
    #[error("{provider}: malformed response: {detail}")]
    Malformed {
        /// Provider name.
        provider: String,
        /// Which field or what is wrong.
        detail: String,
    },
    /// The provider cannot be reached: connection refused, timeout, HTTP 5xx.
    #[error("{provider}: unavailable: {detail}")]
    Unavailable {
        /// Provider name.
        provider: String,
        /// The transport error or status.
        detail: String,
    },
    /// The provider does not offer this (a signal it does not publish), or refused the request
    /// as invalid (other HTTP 4xx).
    #[error("{provider}: unsupported: {detail}")]
    Unsupported {
        /// Provider name.
        provider: String,
        /// What is not offered.
        detail: String,
    },
}

impl ProviderError {
    /// The provider the error came from.
    pub fn provider(&self) -> &str {
        match self {
            ProviderError::Auth { provider, .. }
            | ProviderError::RateLimited { provider, .. }
            | ProviderError::Malformed { provider, .. }
            | ProviderError::Unavailable { provider, .. }
            | ProviderError::Unsupported { provider, .. } => provider,
        }
    }
}

/// A source of grid-intensity points.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Stable name, used in errors and logs (e.g. `watttime`).
    fn name(&self) -> &str;

    /// Fetches the points for `req`. Partial data is returned with its gaps; only a failure of
    /// the whole request is an error.
    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError>;
}
