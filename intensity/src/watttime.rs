//! WattTime API v3 client: `GET /login` (HTTP basic auth, a token valid 30 minutes),
//! `/v3/historical`, `/v3/forecast/historical`, `/v3/forecast` and `/v3/region-from-loc`.
//!
//! Values come in `lbs_co2_per_mwh` and are converted exactly to g/kWh; `meta.model.date` is the
//! points' model version; `co2_moer` is [`Signal::Marginal`], `co2_aoer` [`Signal::Average`].

use crate::http::{HttpCore, RetryPolicy};
use crate::ledger::{self, Collector};
use crate::limiter::RateLimit;
use crate::timefmt::{self, to_iso};
use crate::{FetchRequest, Fetched, Provider, ProviderError};
use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use wattprint_core::intensity::{IntensityPoint, PointKind, Signal};
use wattprint_core::{GramsPerKwh, UnixMillis};

/// The public API.
pub const DEFAULT_BASE_URL: &str = "https://api.watttime.org";
/// Longest range one `/v3/historical` request may ask for.
pub const HISTORICAL_MAX_SPAN: Duration = Duration::from_secs(32 * 86_400);
/// Range of issue times asked per `/v3/forecast/historical` request (as WattTime's own client
/// does: a day of 5-minute runs is already a large answer).
pub const FORECAST_HISTORICAL_SPAN: Duration = Duration::from_secs(86_400);
/// Tokens are valid 30 minutes; a cached one is renewed a minute before.
const TOKEN_REUSE: Duration = Duration::from_secs(29 * 60);
/// The provider's name in errors and logs.
const NAME: &str = "watttime";

/// Settings of a [`WattTimeClient`].
#[derive(Clone)]
pub struct WattTimeConfig {
    /// API base URL (default [`DEFAULT_BASE_URL`]).
    pub base_url: String,
    /// Account name.
    pub username: String,
    /// Account password.
    pub password: String,
    /// Timeout of each HTTP request.
    pub timeout: Duration,
    /// Retries of HTTP 429.
    pub retry: RetryPolicy,
    /// Client-side request limit, shared by clones of the client (WattTime: 3,000 per rolling
    /// 5 minutes, login included).
    pub rate_limit: RateLimit,
    /// Longest range per `/v3/historical` request (at most [`HISTORICAL_MAX_SPAN`]).
    pub historical_span: Duration,
    /// Range of issue times per `/v3/forecast/historical` request.
    pub forecast_historical_span: Duration,
}

impl WattTimeConfig {
    /// The public API with this account and the documented limits.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            username: username.into(),
            password: password.into(),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate_limit: RateLimit::WATTTIME,
            historical_span: HISTORICAL_MAX_SPAN,
            forecast_historical_span: FORECAST_HISTORICAL_SPAN,
        }
    }
}

impl fmt::Debug for WattTimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WattTimeConfig")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("historical_span", &self.historical_span)
            .field("forecast_historical_span", &self.forecast_historical_span)
            .finish()
    }
}

/// The WattTime region containing a location (`/v3/region-from-loc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionLocation {
    /// Region abbreviation, e.g. `CAISO_NORTH`.
    pub region: String,
    /// Full name, when given.
    pub region_full_name: Option<String>,
    /// The signal the region was looked up for.
    pub signal_type: String,
}

/// WattTime API v3 client. Clones share the token and the rate limit.
#[derive(Clone)]
pub struct WattTimeClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpCore,
    username: String,
    password: String,
    token: Mutex<Option<(String, Instant)>>,
    historical_span_ms: i64,
    forecast_span_ms: i64,
}

impl fmt::Debug for WattTimeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WattTimeClient")
            .field("http", &self.inner.http)
            .field("username", &self.inner.username)
            .finish_non_exhaustive()
    }
}

/// WattTime's name for a signal.
fn signal_type(signal: Signal) -> &'static str {
    match signal {
        Signal::Marginal => "co2_moer",
        Signal::Average => "co2_aoer",
    }
}

fn span_ms(d: Duration, max: Duration) -> i64 {
    i64::try_from(d.min(max).as_millis())
        .unwrap_or(i64::MAX)
        .max(1)
}

/// What the `meta` of a data response says about its points.
struct Meta {
    to_grams: fn(f64) -> GramsPerKwh,
    period_ms: i64,
    model_version: Option<String>,
    generated_at: Option<UnixMillis>,
}

/// What every point of one response shares.
struct PointContext<'a> {
    req: &'a FetchRequest,
    provider: String,
    meta: &'a Meta,
    kind: PointKind,
    issued_at: Option<UnixMillis>,
    fetched_at: UnixMillis,
}

impl WattTimeClient {
    /// A client for `config`. Nothing is sent until the first request.
    pub fn new(config: WattTimeConfig) -> Result<Self, ProviderError> {
        let http = HttpCore::new(
            NAME,
            &config.base_url,
            config.timeout,
            config.retry,
            Some(config.rate_limit),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                username: config.username,
                password: config.password,
                token: Mutex::new(None),
                historical_span_ms: span_ms(config.historical_span, HISTORICAL_MAX_SPAN),
                forecast_span_ms: span_ms(config.forecast_historical_span, Duration::MAX),
            }),
        })
    }

    /// The region containing (`latitude`, `longitude`) for `signal`.
    #[tracing::instrument(skip(self), fields(provider = NAME))]
    pub async fn region_from_loc(
        &self,
        latitude: f64,
        longitude: f64,
        signal: Signal,
    ) -> Result<RegionLocation, ProviderError> {
        let what = "region-from-loc";
        let v = self
            .get_json(
                what,
                "/v3/region-from-loc",
                &[
                    ("latitude", latitude.to_string()),
                    ("longitude", longitude.to_string()),
                    ("signal_type", signal_type(signal).to_owned()),
                ],
            )
            .await?;
        let region = ledger::string(&v, "region").ok_or_else(|| {
            self.http()
                .malformed(format!("{what}: field `region` missing"))
        })?;
        Ok(RegionLocation {
            region: region.to_owned(),
            region_full_name: ledger::string(&v, "region_full_name").map(str::to_owned),
            signal_type: ledger::string(&v, "signal_type")
                .unwrap_or(signal_type(signal))
                .to_owned(),
        })
    }

    /// The current forecast (`/v3/forecast`) for `req`'s region and signal; `req`'s range is
    /// not used (the endpoint has none).
    #[tracing::instrument(skip_all, fields(provider = NAME, region = %req.provider_region))]
    pub async fn current_forecast(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let what = "forecast";
        let st = signal_type(req.signal);
        let v = self
            .get_json(
                what,
                "/v3/forecast",
                &[
                    ("region", req.provider_region.clone()),
                    ("signal_type", st.to_owned()),
                ],
            )
            .await?;
        let meta = self.meta(what, &v, req)?;
        let generated_at = meta.generated_at.ok_or_else(|| {
            self.http()
                .malformed(format!("{what}: field `meta.generated_at` missing"))
        })?;
        let data = self.data(what, &v)?;
        let mut c = Collector::default();
        let ctx = PointContext {
            req,
            provider: format!("{NAME}:{}", req.provider_region),
            meta: &meta,
            kind: PointKind::Forecast,
            issued_at: Some(generated_at),
            fetched_at: UnixMillis::now(),
        };
        read_points(&mut c, what, data, &ctx, |_| true);
        Ok(c.finish(PointKind::Forecast, req.from, req.to))
    }

    /// `/v3/historical` over `[from, to)`, in requests of at most the configured span.
    async fn historical(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let what = "historical";
        let mut c = Collector::default();
        for (start, end) in ledger::chunks(req.from, req.to, self.inner.historical_span_ms) {
            let v = self
                .get_json(what, "/v3/historical", &self.range_query(req, start, end))
                .await?;
            let meta = self.meta(what, &v, req)?;
            let data = self.data(what, &v)?;
            let ctx = PointContext {
                req,
                provider: format!("{NAME}:{}", req.provider_region),
                meta: &meta,
                kind: PointKind::Actual,
                issued_at: None,
                fetched_at: UnixMillis::now(),
            };
            // The API's end is inclusive: keep [start, end) so pieces do not overlap.
            read_points(&mut c, what, data, &ctx, |at| at >= start && at < end);
        }
        Ok(c.finish(PointKind::Actual, req.from, req.to))
    }

    /// `/v3/forecast/historical`: the forecast runs generated in `[from, to)`.
    async fn historical_forecasts(&self, req: &FetchRequest) -> Result<Fetched, ProviderError> {
        let what = "forecast/historical";
        let mut c = Collector::default();
        for (start, end) in ledger::chunks(req.from, req.to, self.inner.forecast_span_ms) {
            let v = self
                .get_json(
                    what,
                    "/v3/forecast/historical",
                    &self.range_query(req, start, end),
                )
                .await?;
            let meta = self.meta(what, &v, req)?;
            let runs = self.data(what, &v)?;
            let fetched_at = UnixMillis::now();
            for (i, run) in runs.iter().enumerate() {
                let generated_at = match ledger::string(run, "generated_at")
                    .ok_or_else(|| "generated_at missing".to_owned())
                    .and_then(timefmt::parse_instant)
                {
                    Ok(t) => t,
                    Err(e) => {
                        c.reject(format!(
                            "{NAME}:{} {what} data[{i}]: {e}; the run is refused",
                            req.provider_region
                        ));
                        continue;
                    }
                };
                if generated_at < start || generated_at >= end || c.has_run(generated_at) {
                    continue;
                }
                let Some(points) = run.get("forecast").and_then(Value::as_array) else {
                    c.reject(format!(
                        "{NAME}:{} {what} run generated at {generated_at}: field `forecast` missing",
                        req.provider_region
                    ));
                    continue;
                };
                let ctx = PointContext {
                    req,
                    provider: format!("{NAME}:{}", req.provider_region),
                    meta: &meta,
                    kind: PointKind::Forecast,
                    issued_at: Some(generated_at),
                    fetched_at,
                };
                read_points(&mut c, what, points, &ctx, |_| true);
            }
        }
        Ok(c.finish(PointKind::Forecast, req.from, req.to))
    }

    fn range_query(
        &self,
        req: &FetchRequest,
        start: UnixMillis,
        end: UnixMillis,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("region", req.provider_region.clone()),
            ("start", to_iso(start)),
            ("end", to_iso(end)),
            ("signal_type", signal_type(req.signal).to_owned()),
        ]
    }

    fn http(&self) -> &HttpCore {
        &self.inner.http
    }

    /// Reads `meta`: units (known ones only), period, model, and that the data is for the
    /// region and signal asked.
    fn meta(&self, what: &str, v: &Value, req: &FetchRequest) -> Result<Meta, ProviderError> {
        let bad = |detail: String| self.http().malformed(format!("{what}: {detail}"));
        let meta = v
            .get("meta")
            .filter(|m| m.is_object())
            .ok_or_else(|| bad("field `meta` missing".to_owned()))?;
        let units = ledger::string(meta, "units")
            .ok_or_else(|| bad("field `meta.units` missing".to_owned()))?;
        let to_grams: fn(f64) -> GramsPerKwh = match units {
            "lbs_co2_per_mwh" => GramsPerKwh::from_lb_per_mwh,
            other => {
                return Err(bad(format!(
                    "unknown units {other:?} in `meta.units` (expected \"lbs_co2_per_mwh\")"
                )))
            }
        };
        let period_s = meta
            .get("data_point_period_seconds")
            .and_then(Value::as_i64)
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                bad(
                    "field `meta.data_point_period_seconds` missing or not a positive integer"
                        .to_owned(),
                )
            })?;
        if let Some(region) = ledger::string(meta, "region") {
            if region != req.provider_region {
                return Err(bad(format!(
                    "data is for region {region:?}, asked for {:?}",
                    req.provider_region
                )));
            }
        }
        let st = signal_type(req.signal);
        if let Some(got) = ledger::string(meta, "signal_type") {
            if got != st {
                return Err(bad(format!("data is for signal {got:?}, asked for {st:?}")));
            }
        }
        let generated_at = match ledger::string(meta, "generated_at") {
            Some(s) => Some(
                timefmt::parse_instant(s).map_err(|e| bad(format!("`meta.generated_at`: {e}")))?,
            ),
            None => None,
        };
        Ok(Meta {
            to_grams,
            period_ms: period_s.saturating_mul(1000),
            model_version: meta
                .get("model")
                .and_then(|m| ledger::string(m, "date"))
                .map(str::to_owned),
            generated_at,
        })
    }

    fn data<'v>(&self, what: &str, v: &'v Value) -> Result<&'v [Value], ProviderError> {
        v.get("data")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .ok_or_else(|| {
                self.http()
                    .malformed(format!("{what}: field `data` missing or not a list"))
            })
    }

    /// GET with the bearer token; a 401 logs in again once (tokens expire after 30 minutes).
    async fn get_json(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ProviderError> {
        let url = self.http().url(path);
        let mut logged_in_again = false;
        loop {
            let token = self.token().await?;
            let reply = self
                .http()
                .send(what, |c| c.get(&url).bearer_auth(&token).query(query))
                .await?;
            if reply.status == StatusCode::UNAUTHORIZED && !logged_in_again {
                tracing::info!(provider = NAME, what, "token refused, logging in again");
                self.forget_token(&token).await;
                logged_in_again = true;
                continue;
            }
            let body = self.http().body(what, reply)?;
            return ledger::parse_json(&body).map_err(|e| {
                self.http()
                    .malformed(format!("{what}: body is not JSON: {e}"))
            });
        }
    }

    /// The cached token, or a new one.
    async fn token(&self) -> Result<String, ProviderError> {
        let mut cached = self.inner.token.lock().await;
        if let Some((token, at)) = cached.as_ref() {
            if at.elapsed() < TOKEN_REUSE {
                return Ok(token.clone());
            }
        }
        let what = "login";
        let url = self.http().url("/login");
        let reply = self
            .http()
            .send(what, |c| {
                c.get(&url)
                    .basic_auth(&self.inner.username, Some(&self.inner.password))
            })
            .await?;
        let body = self.http().body(what, reply)?;
        let v = ledger::parse_json(&body).map_err(|e| {
            self.http()
                .malformed(format!("{what}: body is not JSON: {e}"))
        })?;
        let token = ledger::string(&v, "token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::Auth {
                provider: NAME.to_owned(),
                detail: "login: the answer has no token".to_owned(),
            })?
            .to_owned();
        tracing::debug!(provider = NAME, "logged in");
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Drops the cached token if it is still `refused` (another request may have renewed it).
    async fn forget_token(&self, refused: &str) {
        let mut cached = self.inner.token.lock().await;
        if cached.as_ref().is_some_and(|(t, _)| t == refused) {
            *cached = None;
        }
    }
}

/// Builds the points of `items` (`{point_time, value}`) that `keep` wants; a point without a
/// usable time or value is refused with the reason.
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
            &format!("data[{i}]"),
            item,
            ("point_time", "value"),
            &keep,
        ) else {
            continue;
        };
        c.accept(IntensityPoint {
            region: ctx.req.region.clone(),
            at,
            duration_ms: ctx.meta.period_ms,
            value: (ctx.meta.to_grams)(value),
            signal: ctx.req.signal,
            kind: ctx.kind,
            issued_at: ctx.issued_at,
            provider: ctx.provider.clone(),
            model_version: ctx.meta.model_version.clone(),
            fetched_at: ctx.fetched_at,
        });
    }
}

#[async_trait]
impl Provider for WattTimeClient {
    fn name(&self) -> &str {
        NAME
    }

    /// Actuals from `/v3/historical`; forecasts from `/v3/forecast/historical` (the runs
    /// generated in the range; the latest run is also [`WattTimeClient::current_forecast`]).
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
        let fetched = match req.kind {
            PointKind::Actual => self.historical(req).await?,
            PointKind::Forecast => self.historical_forecasts(req).await?,
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
