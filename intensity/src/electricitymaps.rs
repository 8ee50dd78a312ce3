//! Electricity Maps API v3 client (header `auth-token`): `/v3/carbon-intensity/history` (the
//! last 24 hours), `/v3/carbon-intensity/past-range` (any past range, at most 10 days per
//! request) and `/v3/carbon-intensity/forecast`.
//!
//! Values are average (location-based) intensities in gCO2eq/kWh, one per hour. The emission
//! factor type (`lifecycle` or `direct`) and, for estimated values, the estimation method make
//! the points' model version (`lifecycle;estimated:TIME_SLICER_AVERAGE`). Electricity Maps has no
//! marginal signal: asking for one is [`ProviderError::Unsupported`].

use crate::http::{HttpCore, RetryPolicy};
use crate::ledger::{self, Collector};
use crate::limiter::RateLimit;
use crate::timefmt::{self, to_iso};
use crate::{FetchRequest, Fetched, Provider, ProviderError};
use async_trait::async_trait;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use wattprint_core::intensity::{IntensityPoint, PointKind, Signal};
use wattprint_core::{GramsPerKwh, UnixMillis};

/// The public API.
pub const DEFAULT_BASE_URL: &str = "https://api.electricitymap.org";
/// Longest range one `past-range` request may ask for at hourly granularity (240 hours).
pub const PAST_RANGE_MAX_SPAN: Duration = Duration::from_secs(240 * 3600);
/// What `history` covers: the last 24 hours.
pub const HISTORY_SPAN: Duration = Duration::from_secs(24 * 3600);
/// Every value is for one hour.
const HOUR_MS: i64 = 3_600_000;
/// The provider's name in errors and logs.
const NAME: &str = "electricitymaps";

/// Settings of an [`ElectricityMapsClient`].
#[derive(Clone)]
pub struct ElectricityMapsConfig {
    /// API base URL (default [`DEFAULT_BASE_URL`]).
    pub base_url: String,
    /// API token, sent as `auth-token`.
    pub token: String,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
    /// Retries of HTTP 429.
    pub retry: RetryPolicy,
    /// Client-side request limit, if the contract has one.
    pub rate_limit: Option<RateLimit>,
    /// Longest range per `past-range` request (at most [`PAST_RANGE_MAX_SPAN`]).
    pub past_range_span: Duration,
}

impl ElectricityMapsConfig {
    /// The public API with this token.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            token: token.into(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limit: None,
            past_range_span: PAST_RANGE_MAX_SPAN,
        }
    }
}

impl fmt::Debug for ElectricityMapsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElectricityMapsConfig")
            .field("base_url", &self.base_url)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("past_range_span", &self.past_range_span)
            .finish()
    }
}

/// Electricity Maps API v3 client. Clones share the connection pool and the rate limit.
#[derive(Clone)]
pub struct ElectricityMapsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpCore,
    token: String,
    past_range_span_ms: i64,
}

impl fmt::Debug for ElectricityMapsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElectricityMapsClient")
            .field("http", &self.inner.http)
            .finish_non_exhaustive()
    }
}

/// What every point of one response shares.
struct PointContext<'a> {
    req: &'a FetchRequest,
    provider: String,
    kind: PointKind,
    issued_at: Option<UnixMillis>,
    fetched_at: UnixMillis,
}

impl ElectricityMapsClient {
    /// A client for `config`. Nothing is sent until the first request.
    pub fn new(config: ElectricityMapsConfig) -> Result<Self, ProviderError> {
        let http = HttpCore::new(
            NAME,
            &config.base_url,
            config.timeout,
            config.retry,
            config.rate_limit,
        )?;
        let span = config.past_range_span.min(PAST_RANGE_MAX_SPAN);
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                token: config.token,
                past_range_span_ms: i64::try_from(span.as_millis()).unwrap_or(i64::MAX).max(1),
            }),
        })
    }

    fn http(&self) -> &HttpCore {
        &self.inner.http
    }

    /// Actuals in `[from, to)`: from `history` when the range lies in the last 24 hours (the
    /// endpoint every plan has), else from `past-range` in pieces of at most 10 days.
    async fn actuals(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let mut c = Collector::default();
        let recent = req.from.0 >= UnixMillis::now().0 - HISTORY_SPAN.as_millis() as i64;
        if recent {
            let what = "carbon-intensity/history";
            let v = self
                .get_json(
                    what,
                    "/v3/carbon-intensity/history",
                    &[("zone", req.provider_region.clone())],
                )
                .await?;
            let items = self.list(what, &v, req, "history")?;
            read_points(
                &mut c,
                what,
                items,
                &self.context(req, PointKind::Actual, None),
                |at| at >= req.from && at < req.to,
            );
        } else {
            let what = "carbon-intensity/past-range";
            for (start, end) in ledger::chunks(req.from, req.to, self.inner.past_range_span_ms) {
                let query = [
                    ("zone", req.provider_region.clone()),
                    ("start", to_iso(start)),
                    ("end", to_iso(end)),
                ];
                let v = self
                    .get_json(what, "/v3/carbon-intensity/past-range", &query)
                    .await?;
                let items = self.list(what, &v, req, "data")?;
                // Keep [start, end) so that pieces never overlap whatever the API's end means.
                read_points(
                    &mut c,
                    what,
                    items,
                    &self.context(req, PointKind::Actual, None),
                    |at| at >= start && at < end,
                );
            }
        }
        Ok(c.finish(PointKind::Actual, req.from, req.to))
    }

    /// The current forecast, issued at its `updatedAt`.
    async fn forecast(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let what = "carbon-intensity/forecast";
        let v = self
            .get_json(
                what,
                "/v3/carbon-intensity/forecast",
                &[("zone", req.provider_region.clone())],
            )
            .await?;
        let items = self.list(what, &v, req, "forecast")?;
        let issued_at = ledger::string(&v, "updatedAt")
            .ok_or_else(|| "field `updatedAt` missing".to_owned())
            .and_then(timefmt::parse_instant)
            .map_err(|e| {
                self.http()
                    .malformed(format!("{what}: body is not JSON: {e}"))
            })?;
        let mut c = Collector::default();
        read_points(
            &mut c,
            what,
            items,
            &self.context(req, PointKind::Forecast, Some(issued_at)),
            |_| true,
        );
        Ok(c.finish(PointKind::Forecast, req.from, req.to))
    }

    fn context<'a>(
        &self,
        req: &'a FetchRequest,
        kind: PointKind,
        issued_at: Option<UnixMillis>,
    ) -> PointContext<'a> {
        PointContext {
            req,
            provider: format!("{NAME}:{}", req.provider_region),
            kind,
            issued_at,
            fetched_at: UnixMillis::now(),
        }
    }

    /// The list under `key`, after checking the answer is for the zone asked.
    fn list<'v>(
        &self,
        what: &str,
        v: &'v Value,
        req: &FetchRequest,
        key: &str,
    ) -> Result<&'v [Value], ProviderError> {
        if let Some(zone) = ledger::string(v, "zone") {
            if zone != req.provider_region {
                return Err(self.http().malformed(format!(
                    "{what}: data is for zone {zone:?}, asked for {:?}",
                    req.provider_region
                )));
            }
        }
        v.get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                self.http()
                    .malformed(format!("{what}: field `{key}` missing or not a list"))
            })
    }

    async fn get_json(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ProviderError> {
        let url = self.http().url(path);
        let token = &self.inner.token;
        let reply = self
            .http()
            .send(what, |c| {
                c.get(&url).header("auth-token", token).query(query)
            })
            .await?;
        let body = self.http().body(what, reply)?;
        ledger::parse_json(&body).map_err(|e| {
            self.http()
                .malformed(format!("{what}: body is not JSON: {e}"))
        })
    }
}

/// The model version of one point: the emission factor type, and the estimation method when
/// the value is estimated.
fn model_version(item: &Value) -> Option<String> {
    let factor = ledger::string(item, "emissionFactorType");
    let estimated = item
        .get("isEstimated")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let estimation = estimated.then(|| {
        format!(
            "estimated:{}",
            ledger::string(item, "estimationMethod").unwrap_or("unknown")
        )
    });
    match (factor, estimation) {
        (Some(f), Some(e)) => Some(format!("{f};{e}")),
        (Some(f), None) => Some(f.to_owned()),
        (None, e) => e,
    }
}

/// Builds the points of `items` (`{datetime, carbonIntensity, …}`) that `keep` wants; a point
/// without a usable time or value is refused with the reason.
fn read_points(
    c: &mut Collector,
    what: &str,
    items: &[Value],
    ctx: &PointContext<'_>,
    keep: impl Fn(UnixMillis) -> bool,
) {
    for (i, item) in items.iter().enumerate() {
        let Some((at, value)) = ledger::time_and_value(
            c,
            &ctx.provider,
            what,
            &format!("[{i}]"),
            item,
            ("datetime", "carbonIntensity"),
            &keep,
        ) else {
            continue;
        };
        c.accept(IntensityPoint {
            region: ctx.req.region.clone(),
            at,
            duration_ms: HOUR_MS,
            value: GramsPerKwh(value),
            signal: Signal::Average,
            kind: ctx.kind,
            issued_at: ctx.issued_at,
            provider: ctx.provider.clone(),
            model_version: model_version(item),
            fetched_at: ctx.fetched_at,
        });
    }
}

#[async_trait]
impl Provider for ElectricityMapsClient {
    fn name(&self) -> &str {
        NAME
    }

    /// Actuals from `history` or `past-range`; forecasts are the current forecast (the API
    /// keeps no past forecasts), whatever the range.
    #[tracing::instrument(
        name = "intensity_fetch",
        skip_all,
        fields(
            provider = NAME,
            region = %req.provider_region,
            signal = req.signal.as_str(),
            kind = req.kind.as_str(),
        )
    )]
    async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        if req.signal == Signal::Marginal {
            return Err(ProviderError::Unsupported {
                provider: NAME.to_owned(),
                detail: format!(
                    "zone {}: Electricity Maps publishes average intensity only, not marginal",
                    req.provider_region
                ),
            });
        }
        let fetched = match req.kind {
            PointKind::Actual => self.actuals(req).await?,
            PointKind::Forecast => self.forecast(req).await?,
        };
        tracing::debug!(
            points = fetched.points.len(),
            rejected = fetched.rejected.len(),
            gaps = fetched.gaps.len(),
            "fetched"
        );
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_version_names_factor_and_estimation() {
        let measured = json!({"emissionFactorType": "lifecycle", "isEstimated": false});
        assert_eq!(model_version(&measured).as_deref(), Some("lifecycle"));
        let estimated = json!({"emissionFactorType": "lifecycle", "isEstimated": true,
            "estimationMethod": "TIME_SLICER_AVERAGE"});
        assert_eq!(
            model_version(&estimated).as_deref(),
            Some("lifecycle;estimated:TIME_SLICER_AVERAGE")
        );
        assert_eq!(
            model_version(&json!({"isEstimated": true})).as_deref(),
            Some("estimated:unknown")
        );
        assert_eq!(model_version(&json!({})), None);
    }
}
