//! The query API's section of the `wattprint` file (`[query_api]`): the serde type as written
//! and [`RawQueryApi::validate`], which applies the defaults and bounds and returns the
//! [`QueryApiSettings`] the API serves with. No file is read here: the dev secret and a JWKS
//! file are read when the API starts.

use crate::auth::{JwksConfig, JwksSource};
use crate::budget::{DEFAULT_WHATIF_BUDGET_CELLS, DEFAULT_WHATIF_PER_TENANT};
use crate::portal::PortalOidc;
use crate::{ApiLimits, RateLimit};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wattprint_core::config::{invalid, InvalidConfig};

/// `[query_api]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawQueryApi {
    /// HTTP listen address (default 127.0.0.1:8080).
    pub listen: Option<SocketAddr>,
    /// Token issuer (default `wattprint`).
    pub issuer: Option<String>,
    /// Token audience (default `wattprint-api`).
    pub audience: Option<String>,
    /// HS256 secret file for dev tokens (default `<data_dir>/dev-secret`, created if absent).
    /// Used only while no JWKS is configured (the embedded dev mode).
    pub hs256_secret_file: Option<PathBuf>,
    /// JWKS file with the identity provider's public keys (RS256, ES256, EdDSA tokens); turns
    /// the HS256 dev mode off. Re-read every `jwks_refresh_s`.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL (`https://…`, the IdP's `jwks_uri`); turns the HS256 dev mode off.
    pub jwks_url: Option<String>,
    /// Seconds after which the JWKS is read again (default 300, 10 to 86400). An unknown `kid`
    /// also triggers a read, at most once per 30 s.
    pub jwks_refresh_s: Option<u64>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (default 30, at most 300).
    pub leeway_s: Option<u64>,
    /// Longest token lifetime accepted (`exp` − `iat`), seconds, 60 to 31536000 (a year);
    /// absent: any. Tokens must then carry `iat`.
    pub max_token_lifetime_s: Option<u64>,
    /// Requests per second each tenant (and each operator) may make (default 50; 0 turns the
    /// limit off).
    pub rate_limit_per_s: Option<f64>,
    /// Requests a tenant may make at once on top of the rate (default 100).
    pub rate_limit_burst: Option<u32>,
    /// Answers given without a verified token (401s, health, OpenAPI) per client IP per second
    /// (default 20; 0 turns the limit off).
    pub unauthenticated_rate_limit_per_s: Option<f64>,
    /// Such answers a client IP may get at once on top of the rate (default 100).
    pub unauthenticated_rate_limit_burst: Option<u32>,
    /// Most search cells one what-if request may cost (default 250 000 000, ≈ 0.6 s of one
    /// core; the paper's defaults on a 31-day workload fit).
    pub whatif_budget_cells: Option<u64>,
    /// What-if requests one tenant may have computing at once (default 2).
    pub whatif_per_tenant: Option<u32>,
    /// Origins allowed to embed the portal in a frame (a cloud console), e.g.
    /// `["https://console.example.com"]`; default none beyond the API's own origin.
    pub portal_frame_ancestors: Option<Vec<String>>,
    /// The portal's own sign-in through the identity provider (`[query_api.portal_oidc]`):
    /// OIDC authorization code with PKCE, for users who do not come from a console.
    pub portal_oidc: Option<RawPortalOidc>,
}

/// `[query_api.portal_oidc]`: the identity provider the portal signs users in with. The
/// endpoints are written here (copied from the issuer's `/.well-known/openid-configuration`)
/// so the browser fetches no discovery document and the portal's CSP can name the token
/// endpoint alone.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPortalOidc {
    /// The issuer (`iss`): must be `query_api.issuer`, since the API checks its tokens' `iss`.
    pub issuer: String,
    /// The portal's client id at the IdP: a public client (no secret) allowed the redirect
    /// URI `<API origin>/portal/`.
    pub client_id: String,
    /// The IdP's `authorization_endpoint`.
    pub authorization_endpoint: String,
    /// The IdP's `token_endpoint` (the only other origin the portal may call).
    pub token_endpoint: String,
    /// The IdP's `end_session_endpoint`: sign-out also ends the IdP session when set.
    pub end_session_endpoint: Option<String>,
    /// Scopes requested (default `openid`).
    pub scopes: Option<String>,
    /// Resource indicator (RFC 8707) sent with the authorization and token requests, so the
    /// access token is issued for this API (its `aud`); none by default.
    pub resource: Option<String>,
}

/// How the query API verifies tokens and limits request rates.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiAuthSettings {
    /// The identity provider's key set; `None` is the embedded dev mode (HS256 tokens signed
    /// with the secret file, minted by `wattprint token`).
    pub jwks: Option<JwksConfig>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    pub leeway_s: u64,
    /// Longest token lifetime accepted, seconds; `None`: any.
    pub max_token_lifetime_s: Option<u64>,
    /// Per-tenant rate limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// Per-client-IP limit of answers given without a verified token; `None` turns it off.
    pub unauthenticated_rate_limit: Option<RateLimit>,
}

impl Default for ApiAuthSettings {
    /// Dev mode, 30 s leeway, 50 requests/s with bursts of 100.
    fn default() -> Self {
        Self {
            jwks: None,
            leeway_s: DEFAULT_LEEWAY_S,
            max_token_lifetime_s: None,
            rate_limit: Some(RateLimit {
                per_second: DEFAULT_RATE_LIMIT_PER_S,
                burst: DEFAULT_RATE_LIMIT_BURST,
            }),
            unauthenticated_rate_limit: Some(RateLimit {
                per_second: DEFAULT_UNAUTHENTICATED_PER_S,
                burst: DEFAULT_UNAUTHENTICATED_BURST,
            }),
        }
    }
}

const DEFAULT_LEEWAY_S: u64 = 30;
const DEFAULT_RATE_LIMIT_PER_S: f64 = 50.0;
const DEFAULT_RATE_LIMIT_BURST: u32 = 100;
const DEFAULT_UNAUTHENTICATED_PER_S: f64 = 20.0;
const DEFAULT_UNAUTHENTICATED_BURST: u32 = 100;

/// A rate limit from its two keys (`<prefix>_per_s`, `<prefix>_burst`): `None` for a rate of 0.
fn rate_keys(
    prefix: &str,
    per_s: Option<f64>,
    burst: Option<u32>,
    defaults: (f64, u32),
) -> Result<Option<RateLimit>, InvalidConfig> {
    let per_second = per_s.unwrap_or(defaults.0);
    if !per_second.is_finite() || !(0.0..=1_000_000.0).contains(&per_second) {
        return Err(invalid(format!(
            "query_api.{prefix}_per_s = {per_second} must be 0 (off) to 1000000"
        )));
    }
    let burst = burst.unwrap_or(defaults.1);
    if burst == 0 || burst > 1_000_000 {
        return Err(invalid(format!(
            "query_api.{prefix}_burst = {burst} must be 1..=1000000"
        )));
    }
    Ok((per_second > 0.0).then_some(RateLimit { per_second, burst }))
}

/// Validates the `[query_api]` keys about tokens and rate limits.
fn api_auth_settings(raw: &RawQueryApi) -> Result<ApiAuthSettings, InvalidConfig> {
    let source = match (&raw.jwks_file, &raw.jwks_url) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "query_api.jwks_file and query_api.jwks_url exclude each other",
            ))
        }
        (Some(file), None) => Some(JwksSource::File(file.clone())),
        (None, Some(url)) => {
            let url = url.trim();
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 9 {
                return Err(invalid(format!(
                    "query_api.jwks_url = {url:?} must be an https:// (or http://) URL"
                )));
            }
            if url.starts_with("http://") {
                tracing::warn!(
                    url,
                    "query_api.jwks_url is plain http: keys could be replaced in transit"
                );
            }
            Some(JwksSource::Url(url.to_owned()))
        }
        (None, None) => None,
    };
    let jwks = match source {
        Some(source) => {
            let refresh_s = raw.jwks_refresh_s.unwrap_or(300);
            if !(10..=86_400).contains(&refresh_s) {
                return Err(invalid(format!(
                    "query_api.jwks_refresh_s = {refresh_s} must be 10..=86400"
                )));
            }
            Some(JwksConfig {
                refresh_every: Duration::from_secs(refresh_s),
                ..JwksConfig::new(source)
            })
        }
        None => {
            if raw.jwks_refresh_s.is_some() {
                return Err(invalid(
                    "query_api.jwks_refresh_s needs query_api.jwks_file or query_api.jwks_url",
                ));
            }
            None
        }
    };
    let leeway_s = raw.leeway_s.unwrap_or(DEFAULT_LEEWAY_S);
    if leeway_s > 300 {
        return Err(invalid(format!(
            "query_api.leeway_s = {leeway_s} must be 0..=300"
        )));
    }
    if let Some(max) = raw.max_token_lifetime_s {
        if !(60..=31_536_000).contains(&max) {
            return Err(invalid(format!(
                "query_api.max_token_lifetime_s = {max} must be 60..=31536000 (a minute to a year)"
            )));
        }
    }
    let rate_limit = rate_keys(
        "rate_limit",
        raw.rate_limit_per_s,
        raw.rate_limit_burst,
        (DEFAULT_RATE_LIMIT_PER_S, DEFAULT_RATE_LIMIT_BURST),
    )?;
    let unauthenticated_rate_limit = rate_keys(
        "unauthenticated_rate_limit",
        raw.unauthenticated_rate_limit_per_s,
        raw.unauthenticated_rate_limit_burst,
        (DEFAULT_UNAUTHENTICATED_PER_S, DEFAULT_UNAUTHENTICATED_BURST),
    )?;
    Ok(ApiAuthSettings {
        jwks,
        leeway_s,
        max_token_lifetime_s: raw.max_token_lifetime_s,
        rate_limit,
        unauthenticated_rate_limit,
    })
}

/// Validated `[query_api]`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryApiSettings {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Token issuer.
    pub issuer: String,
    /// Token audience.
    pub audience: String,
    /// HS256 secret file.
    pub secret_file: PathBuf,
    /// Token verification (JWKS or dev mode) and rate limit.
    pub auth: ApiAuthSettings,
    /// Request limits, with the configured what-if budget.
    pub limits: ApiLimits,
    /// Origins allowed to frame the portal (its CSP `frame-ancestors`, beside `'self'`).
    pub portal_frame_ancestors: Vec<String>,
    /// The portal's sign-in through the identity provider, when configured.
    pub portal_oidc: Option<PortalOidc>,
}

/// An endpoint the browser is sent to or calls: `https://`, or `http://` on a loopback host
/// (development), with nothing that could end or widen a CSP directive.
fn is_endpoint(url: &str) -> bool {
    let rest = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => rest,
        (None, Some(rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or("");
            let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
            if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
                return false;
            }
            rest
        }
        _ => return false,
    };
    !rest.is_empty()
        && !rest.starts_with(['/', ':'])
        && rest.len() <= 2048
        && rest
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"' | '#'))
}

/// `[query_api.portal_oidc]`, checked: endpoints are URLs ([`is_endpoint`]), the issuer is the
/// one the API verifies, and tokens are verified by the IdP's key set.
fn portal_oidc(raw: &RawQueryApi, issuer: &str) -> Result<Option<PortalOidc>, InvalidConfig> {
    let Some(o) = &raw.portal_oidc else {
        return Ok(None);
    };
    if raw.jwks_url.is_none() && raw.jwks_file.is_none() {
        return Err(invalid(
            "query_api.portal_oidc needs query_api.jwks_url (or jwks_file): the IdP's tokens \
             are verified with its keys",
        ));
    }
    if o.issuer != issuer {
        return Err(invalid(format!(
            "query_api.portal_oidc.issuer = {:?} must equal query_api.issuer = {issuer:?}: \
             the API refuses tokens of any other issuer",
            o.issuer
        )));
    }
    let endpoints = [
        ("issuer", Some(&o.issuer)),
        ("authorization_endpoint", Some(&o.authorization_endpoint)),
        ("token_endpoint", Some(&o.token_endpoint)),
        ("end_session_endpoint", o.end_session_endpoint.as_ref()),
    ];
    for (key, url) in endpoints {
        if let Some(url) = url.filter(|u| !is_endpoint(u)) {
            return Err(invalid(format!(
                "query_api.portal_oidc.{key} = {url:?} must be an https:// URL (http:// only \
                 on localhost), without quotes, ';', ',' or '#'"
            )));
        }
    }
    let printable = |key: &str, v: &str| {
        if v.is_empty() || v.len() > 512 || !v.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
            Err(invalid(format!(
                "query_api.portal_oidc.{key} = {v:?} must be 1 to 512 printable ASCII characters"
            )))
        } else {
            Ok(())
        }
    };
    printable("client_id", &o.client_id)?;
    let scopes = o.scopes.clone().unwrap_or_else(|| "openid".into());
    printable("scopes", &scopes)?;
    if !scopes.split(' ').any(|s| s == "openid") {
        return Err(invalid(format!(
            "query_api.portal_oidc.scopes = {scopes:?} must include openid"
        )));
    }
    if let Some(r) = &o.resource {
        printable("resource", r)?;
    }
    Ok(Some(PortalOidc {
        issuer: o.issuer.clone(),
        client_id: o.client_id.clone(),
        authorization_endpoint: o.authorization_endpoint.clone(),
        token_endpoint: o.token_endpoint.clone(),
        end_session_endpoint: o.end_session_endpoint.clone(),
        scopes,
        resource: o.resource.clone(),
    }))
}

/// `query_api.portal_frame_ancestors`: at most 16 origins ([`is_origin`]), nothing that could
/// end or widen the Content-Security-Policy directive they go into.
fn portal_frame_ancestors(raw: &RawQueryApi) -> Result<Vec<String>, InvalidConfig> {
    let origins = raw.portal_frame_ancestors.clone().unwrap_or_default();
    if origins.len() > 16 {
        return Err(invalid(
            "query_api.portal_frame_ancestors: at most 16 origins",
        ));
    }
    for o in &origins {
        if !is_origin(o) {
            return Err(invalid(format!(
                "query_api.portal_frame_ancestors: {o:?} is not an origin like \
                 https://console.example.com (or http://localhost:PORT)"
            )));
        }
    }
    Ok(origins)
}

/// `https://host[:port]` (letters, digits, `.`, `-`, a `*` wildcard label) or
/// `http://localhost[:port]`: no path, space, quote or `;`.
fn is_origin(o: &str) -> bool {
    let host_port = match (o.strip_prefix("https://"), o.strip_prefix("http://")) {
        (Some(rest), _) => rest,
        (None, Some(rest)) if rest == "localhost" || rest.starts_with("localhost:") => rest,
        _ => return false,
    };
    !host_port.is_empty()
        && !host_port.starts_with(':')
        && host_port
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*'))
}

/// The request limits: the defaults with the configured what-if budget and per-tenant cap.
fn api_limits(raw: &RawQueryApi) -> Result<ApiLimits, InvalidConfig> {
    let cells = raw
        .whatif_budget_cells
        .unwrap_or(DEFAULT_WHATIF_BUDGET_CELLS);
    if !(1_000..=1_000_000_000_000).contains(&cells) {
        return Err(invalid(format!(
            "query_api.whatif_budget_cells = {cells} must be 1000..=1000000000000"
        )));
    }
    let per_tenant = raw.whatif_per_tenant.unwrap_or(DEFAULT_WHATIF_PER_TENANT);
    if !(1..=1_000).contains(&per_tenant) {
        return Err(invalid(format!(
            "query_api.whatif_per_tenant = {per_tenant} must be 1..=1000"
        )));
    }
    Ok(ApiLimits {
        whatif_budget_cells: cells,
        whatif_per_tenant: per_tenant,
        ..ApiLimits::default()
    })
}

impl RawQueryApi {
    /// Validates `[query_api]`; the dev secret defaults to `<data_dir>/dev-secret`.
    pub fn validate(&self, data_dir: &Path) -> Result<QueryApiSettings, InvalidConfig> {
        let issuer = self.issuer.clone().unwrap_or_else(|| "wattprint".into());
        Ok(QueryApiSettings {
            listen: self.listen.unwrap_or(([127, 0, 0, 1], 8080).into()),
            portal_oidc: portal_oidc(self, &issuer)?,
            issuer,
            audience: self
                .audience
                .clone()
                .unwrap_or_else(|| "wattprint-api".into()),
            secret_file: self
                .hs256_secret_file
                .clone()
                .unwrap_or_else(|| data_dir.join("dev-secret")),
            auth: api_auth_settings(self)?,
            limits: api_limits(self)?,
            portal_frame_ancestors: portal_frame_ancestors(self)?,
        })
    }
}

#[cfg(test)]
mod api_auth_tests {
    use super::*;

    fn auth(toml_text: &str) -> Result<ApiAuthSettings, String> {
        let raw: RawQueryApi = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        api_auth_settings(&raw).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_dev_mode_with_a_rate_limit() {
        let a = auth("").unwrap();
        assert_eq!(a, ApiAuthSettings::default());
        assert_eq!(a.jwks, None);
        assert_eq!(a.leeway_s, 30);
        assert_eq!(
            a.rate_limit,
            Some(RateLimit {
                per_second: 50.0,
                burst: 100
            })
        );
    }

    #[test]
    fn jwks_leeway_and_rate_keys_are_read() {
        let a = auth(
            "jwks_url = \"https://idp.example/.well-known/jwks.json\"\njwks_refresh_s = 60\n\
             leeway_s = 5\nrate_limit_per_s = 2\nrate_limit_burst = 4",
        )
        .unwrap();
        let jwks = a.jwks.unwrap();
        assert_eq!(
            jwks.source,
            JwksSource::Url("https://idp.example/.well-known/jwks.json".into())
        );
        assert_eq!(jwks.refresh_every, Duration::from_secs(60));
        assert_eq!(a.leeway_s, 5);
        assert_eq!(
            a.rate_limit,
            Some(RateLimit {
                per_second: 2.0,
                burst: 4
            })
        );
        let f = auth("jwks_file = \"keys.json\"\nrate_limit_per_s = 0").unwrap();
        assert_eq!(
            f.jwks.map(|j| j.source),
            Some(JwksSource::File("keys.json".into()))
        );
        assert_eq!(f.rate_limit, None);
    }

    #[test]
    fn a_maximum_token_lifetime_is_read_within_its_bounds() {
        assert_eq!(auth("").unwrap().max_token_lifetime_s, None);
        assert_eq!(
            auth("max_token_lifetime_s = 86400")
                .unwrap()
                .max_token_lifetime_s,
            Some(86_400)
        );
        for bad in [59, 31_536_001] {
            let err = auth(&format!("max_token_lifetime_s = {bad}")).unwrap_err();
            assert!(
                err.contains(&format!("query_api.max_token_lifetime_s = {bad} must be")),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, needle) in [
            (
                "jwks_file = \"a\"\njwks_url = \"https://x/y\"",
                "exclude each other",
            ),
            ("jwks_url = \"ftp://idp/keys\"", "query_api.jwks_url"),
            ("jwks_url = \"idp.example/keys\"", "query_api.jwks_url"),
            ("jwks_refresh_s = 60", "needs query_api.jwks_file"),
            (
                "jwks_file = \"a\"\njwks_refresh_s = 1",
                "query_api.jwks_refresh_s = 1",
            ),
            ("leeway_s = 3600", "query_api.leeway_s = 3600"),
            ("rate_limit_per_s = -1", "query_api.rate_limit_per_s = -1"),
            ("rate_limit_per_s = nan", "query_api.rate_limit_per_s = NaN"),
            ("rate_limit_burst = 0", "query_api.rate_limit_burst = 0"),
            (
                "unauthenticated_rate_limit_per_s = -2",
                "query_api.unauthenticated_rate_limit_per_s = -2",
            ),
            (
                "unauthenticated_rate_limit_burst = 0",
                "query_api.unauthenticated_rate_limit_burst = 0",
            ),
        ] {
            let err = auth(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn unauthenticated_limits_and_whatif_budget_are_read() {
        let a = auth("").unwrap();
        assert_eq!(
            a.unauthenticated_rate_limit,
            Some(RateLimit {
                per_second: 20.0,
                burst: 100
            })
        );
        let off = auth("unauthenticated_rate_limit_per_s = 0").unwrap();
        assert_eq!(off.unauthenticated_rate_limit, None);
        let raw: RawQueryApi =
            toml::from_str("whatif_budget_cells = 5000\nwhatif_per_tenant = 3").unwrap();
        let limits = api_limits(&raw).unwrap();
        assert_eq!(
            (limits.whatif_budget_cells, limits.whatif_per_tenant),
            (5000, 3)
        );
        assert_eq!(
            api_limits(&RawQueryApi::default()).unwrap(),
            ApiLimits::default()
        );
        for text in ["whatif_budget_cells = 10", "whatif_per_tenant = 0"] {
            let raw: RawQueryApi = toml::from_str(text).unwrap();
            let err = api_limits(&raw).unwrap_err().to_string();
            assert!(err.contains(text.split(' ').next().unwrap()), "{err}");
        }
    }
}

/// `[statements]`: when monthly statements are issued and how far back they adjust.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStatements {
    /// Hours after a month's end before it is issued (default 6: late samples and actual
    /// intensity come in; statements come out on day 1), 0 to 240.
    pub grace_hours: Option<u32>,
    /// Issued months before a statement whose corrections it carries as adjustments
    /// (default 3), 0 to 24.
    pub adjustment_months: Option<u32>,
    /// `[statements.market.<region>]`: the provider's contractual instruments per region, for
    /// market-based emissions. None: statements say `not_configured`.
    #[serde(default)]
    pub market: std::collections::BTreeMap<String, RawMarketRegion>,
}

/// `[statements.market.<region>]`: one region's contractual instruments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMarketRegion {
    /// CSV of hourly volumes (`hour_start,kwh`); relative paths are under the data root.
    pub instruments: PathBuf,
    /// The instruments' emission factor, g/kWh (default 0: renewable certificates, PPAs).
    pub instrument_g_per_kwh: Option<f64>,
    /// Residual mix for unmatched energy, g/kWh (default: each interval's grid average).
    pub residual_mix_g_per_kwh: Option<f64>,
}

impl RawStatements {
    /// Validates `[statements]`.
    pub fn validate(&self) -> Result<crate::statements::StatementPolicy, InvalidConfig> {
        let default = crate::statements::StatementPolicy::default();
        let grace_hours = self.grace_hours.unwrap_or(6);
        if grace_hours > 240 {
            return Err(invalid(format!(
                "statements.grace_hours = {grace_hours} must be 0 to 240 (ten days)"
            )));
        }
        let adjustment_months = self.adjustment_months.unwrap_or(default.adjustment_months);
        if adjustment_months > 24 {
            return Err(invalid(format!(
                "statements.adjustment_months = {adjustment_months} must be 0 to 24"
            )));
        }
        Ok(crate::statements::StatementPolicy {
            grace_ms: i64::from(grace_hours) * 3_600_000,
            adjustment_months,
        })
    }

    /// Validates `[statements.market]` and reads every instruments file (`data` resolves a
    /// relative path), so a bad file fails at startup with its line.
    pub fn market(
        &self,
        data: &dyn Fn(&Path) -> PathBuf,
    ) -> Result<crate::statements::MarketInstruments, InvalidConfig> {
        let mut regions = std::collections::BTreeMap::new();
        for (region, raw) in &self.market {
            let factor = |key: &str, v: Option<f64>| match v {
                Some(g) if !g.is_finite() || !(0.0..=5_000.0).contains(&g) => Err(invalid(
                    format!("statements.market.{region}.{key} = {g} must be 0 to 5000 g/kWh"),
                )),
                _ => Ok(v),
            };
            let instruments = crate::statements::RegionInstruments {
                instruments: data(&raw.instruments),
                instrument_g_per_kwh: factor("instrument_g_per_kwh", raw.instrument_g_per_kwh)?
                    .unwrap_or(0.0),
                residual_mix_g_per_kwh: factor(
                    "residual_mix_g_per_kwh",
                    raw.residual_mix_g_per_kwh,
                )?,
            };
            instruments
                .read()
                .map_err(|e| invalid(format!("statements.market.{region}: {e}")))?;
            regions.insert(wattprint_core::RegionId::new(region.as_str()), instruments);
        }
        Ok(crate::statements::MarketInstruments { regions })
    }
}

#[cfg(test)]
mod statements_tests {
    use super::*;

    #[test]
    fn statement_keys_default_and_are_bounded() {
        let parse = |t: &str| {
            toml::from_str::<RawStatements>(t)
                .map_err(|e| e.to_string())
                .and_then(|r| r.validate().map_err(|e| e.to_string()))
        };
        assert_eq!(
            parse("").unwrap(),
            crate::statements::StatementPolicy::default()
        );
        let p = parse("grace_hours = 0\nadjustment_months = 12").unwrap();
        assert_eq!((p.grace_ms, p.adjustment_months), (0, 12));
        assert!(parse("grace_hours = 241").unwrap_err().contains("0 to 240"));
        assert!(parse("adjustment_months = 25")
            .unwrap_err()
            .contains("0 to 24"));
        assert!(parse("grace = 1").unwrap_err().contains("unknown field"));
    }

    #[test]
    fn market_instruments_are_read_and_checked_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("eac.csv"),
            "hour_start,kwh\n2026-11-01T00:00:00Z,12.5\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.csv"), "hour_start,kwh\nsoon,1\n").unwrap();
        let data = |p: &Path| dir.path().join(p);
        let market = |t: &str| {
            toml::from_str::<RawStatements>(t)
                .map_err(|e| e.to_string())
                .and_then(|r| r.market(&data).map_err(|e| e.to_string()))
        };
        assert!(market("").unwrap().regions.is_empty());
        let m =
            market("[market.CAISO_NORTH]\ninstruments = \"eac.csv\"\nresidual_mix_g_per_kwh = 410")
                .unwrap();
        let r = &m.regions[&wattprint_core::RegionId::new("CAISO_NORTH")];
        assert_eq!(r.instruments, dir.path().join("eac.csv"));
        assert_eq!(
            (r.instrument_g_per_kwh, r.residual_mix_g_per_kwh),
            (0.0, Some(410.0))
        );
        for (t, want) in [
            (
                "[market.X]\ninstruments = \"bad.csv\"",
                "statements.market.X: instruments file",
            ),
            ("[market.X]\ninstruments = \"none.csv\"", "none.csv"),
            (
                "[market.X]\ninstruments = \"eac.csv\"\ninstrument_g_per_kwh = -1",
                "instrument_g_per_kwh = -1 must be 0 to 5000",
            ),
            ("[market.X]\nfile = \"eac.csv\"", "unknown field"),
        ] {
            let err = market(t).unwrap_err();
            assert!(err.contains(want), "{t}: {err}");
        }
    }
}

#[cfg(test)]
mod portal_tests {
    use super::*;

    fn ancestors(toml_text: &str) -> Result<Vec<String>, String> {
        let raw: RawQueryApi = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        portal_frame_ancestors(&raw).map_err(|e| e.to_string())
    }

    #[test]
    fn portal_frame_ancestors_are_origins_only() {
        assert_eq!(ancestors("").unwrap(), Vec::<String>::new());
        let ok = "portal_frame_ancestors = [\"https://console.example.com\", \
                  \"https://*.example.net:8443\", \"http://localhost:3000\"]";
        assert_eq!(ancestors(ok).unwrap().len(), 3);
        for bad in [
            "http://console.example.com",
            "https://a.example.com/path",
            "https://a.example.com; script-src *",
            "*",
            "'unsafe-inline'",
            "https://",
            "http://localhost.evil.example",
        ] {
            assert!(
                ancestors(&format!("portal_frame_ancestors = [{bad:?}]")).is_err(),
                "{bad}"
            );
        }
    }

    fn oidc(extra: &str) -> Result<Option<PortalOidc>, String> {
        let text = format!(
            "issuer = \"https://idp.example\"\njwks_url = \"https://idp.example/jwks\"\n\
             [portal_oidc]\nissuer = \"https://idp.example\"\nclient_id = \"portal\"\n\
             authorization_endpoint = \"https://idp.example/auth\"\n{extra}"
        );
        let raw: RawQueryApi = toml::from_str(&text).map_err(|e| e.to_string())?;
        portal_oidc(&raw, raw.issuer.as_deref().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn portal_oidc_is_checked() {
        let ok = oidc("token_endpoint = \"https://idp.example/token\"")
            .unwrap()
            .unwrap();
        assert_eq!(ok.scopes, "openid");
        assert_eq!(ok.token_endpoint, "https://idp.example/token");
        let local = oidc("token_endpoint = \"http://localhost:9000/token\"\nscopes = \"openid wattprint:reader\"");
        assert!(local.unwrap().is_some());
        for (bad, says) in [
            (
                "token_endpoint = \"http://idp.example/token\"",
                "token_endpoint",
            ),
            (
                "token_endpoint = \"https://idp.example/t; script-src *\"",
                "token_endpoint",
            ),
            (
                "token_endpoint = \"https://idp.example/t',x\"",
                "token_endpoint",
            ),
            (
                "token_endpoint = \"http://localhost.evil/t\"",
                "token_endpoint",
            ),
            (
                "token_endpoint = \"https://idp.example/t\"\nscopes = \"profile\"",
                "openid",
            ),
            (
                "token_endpoint = \"https://idp.example/t\"\nclient_id2 = 1",
                "unknown field",
            ),
        ] {
            let e = oidc(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let other_issuer = "issuer = \"https://other\"\njwks_url = \"https://idp.example/jwks\"\n\
            [portal_oidc]\nissuer = \"https://idp.example\"\nclient_id = \"p\"\n\
            authorization_endpoint = \"https://idp.example/a\"\ntoken_endpoint = \"https://idp.example/t\"";
        let raw: RawQueryApi = toml::from_str(other_issuer).unwrap();
        assert!(portal_oidc(&raw, "https://other")
            .unwrap_err()
            .to_string()
            .contains("must equal"));
        let no_keys = "[portal_oidc]\nissuer = \"wattprint\"\nclient_id = \"p\"\n\
            authorization_endpoint = \"https://i/a\"\ntoken_endpoint = \"https://i/t\"";
        let raw: RawQueryApi = toml::from_str(no_keys).unwrap();
        assert!(portal_oidc(&raw, "wattprint")
            .unwrap_err()
            .to_string()
            .contains("jwks_url"));
    }
}
