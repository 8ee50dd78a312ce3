//! The tenant portal: a static single-page app served at `/portal/` by the query API itself,
//! so it shares the API's origin, token and tenant scope (the page calls `/v1/…` with the
//! tenant's bearer token; it has no access of its own). Its files (`query-api/portal/`) are
//! embedded in the binary, the chart library (uPlot) vendored with its licence; nothing is
//! fetched from elsewhere at run time, which the Content-Security-Policy also enforces.

use axum::extract::{Path, State};
use std::sync::OnceLock;

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::ApiState;

/// The policy's directives before `connect-src` and after it, before `frame-ancestors` (macros,
/// so the fallback below can be a `'static` string too).
macro_rules! csp_head {
    () => {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'"
    };
}
macro_rules! csp_tail {
    () => {
        "; base-uri 'none'; form-action 'none'"
    };
}

/// The portal's Content-Security-Policy without its `frame-ancestors` and without an identity
/// provider: scripts, styles, images and API calls from the portal's own origin only (no
/// inline script, no CDN, no `eval`); `data:`/`blob:` images for the favicon and statement
/// downloads.
pub const PORTAL_CSP: &str = concat!(csp_head!(), csp_tail!());

/// The identity provider the portal signs users in with (validated by the config,
/// `[query_api.portal_oidc]`); the page reads it from `/portal/config.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortalOidc {
    /// The issuer the API verifies (`query_api.issuer`).
    pub issuer: String,
    /// The portal's public client id.
    pub client_id: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the page exchanges the code (with the PKCE verifier) for tokens.
    pub token_endpoint: String,
    /// Where sign-out sends the browser to end the IdP session, if anywhere.
    pub end_session_endpoint: Option<String>,
    /// Scopes requested, space-separated (`openid` among them).
    pub scopes: String,
    /// Resource indicator (RFC 8707) for the access token, if any.
    pub resource: Option<String>,
}

/// What the portal is served with: its CSP and the configuration the page reads.
#[derive(Debug, Clone)]
pub(crate) struct PortalSetup {
    pub(crate) frame_ancestors: Vec<String>,
    pub(crate) oidc: Option<PortalOidc>,
    pub(crate) csp: HeaderValue,
    pub(crate) config_json: Vec<u8>,
}

impl PortalSetup {
    pub(crate) fn new(frame_ancestors: Vec<String>, oidc: Option<PortalOidc>) -> Self {
        let csp = csp(
            &frame_ancestors,
            oidc.as_ref().map(|o| o.token_endpoint.as_str()),
        );
        let config_json = serde_json::to_vec(&serde_json::json!({ "oidc": oidc }))
            .unwrap_or_else(|_| br#"{"oidc":null}"#.to_vec());
        Self {
            frame_ancestors,
            oidc,
            csp,
            config_json,
        }
    }
}

/// [`PORTAL_CSP`] with the IdP's `token_endpoint` (the only other address the page may call,
/// when sign-in is configured) and `frame-ancestors 'self'` and `origins` (validated by the
/// config: `query_api.portal_frame_ancestors`), so only those pages may embed the portal.
pub fn csp(origins: &[String], token_endpoint: Option<&str>) -> HeaderValue {
    let mut value = String::from(csp_head!());
    if let Some(endpoint) = token_endpoint {
        value.push(' ');
        value.push_str(endpoint);
    }
    value.push_str(csp_tail!());
    value.push_str("; frame-ancestors 'self'");
    for o in origins {
        value.push(' ');
        value.push_str(o);
    }
    // Unreachable with validated values; were it reached, frame nowhere and call nothing else.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(concat!(
        csp_head!(),
        csp_tail!(),
        "; frame-ancestors 'none'"
    )))
}

/// One embedded file: its path under `/portal/`, media type and bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $media:expr) => {
        Asset {
            path: $path,
            media_type: $media,
            body: include_bytes!(concat!("../portal/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("portal.css", CSS),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/format.js", JS),
    asset!("js/charts.js", JS),
    asset!("js/views.js", JS),
    asset!("js/signin.js", JS),
    asset!("vendor/uplot/uPlot.iife.min.js", JS),
    asset!("vendor/uplot/uPlot.min.css", CSS),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    asset!("vendor/oidc-client-ts/oidc-client-ts.min.js", JS),
    asset!("vendor/oidc-client-ts/LICENSE", "text/plain; charset=utf-8"),
    asset!(
        "vendor/oidc-client-ts/LICENSE-jwt-decode",
        "text/plain; charset=utf-8"
    ),
];

/// The portal's routes: `/portal` (redirect), `/portal/` (the app) and its files. No token is
/// needed for the files; every number on the page comes from the tenant-scoped API.
pub(crate) fn portal_routes() -> Router<ApiState> {
    Router::new()
        .route("/portal", get(redirect))
        .route("/portal/", get(index))
        .route("/portal/config.json", get(config))
        .route("/portal/{*path}", get(file))
}

async fn redirect() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/portal/")]).into_response()
}

async fn index(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    serve("index.html", &state.portal.csp, &headers).unwrap_or_else(|e| e.into_response())
}

/// `/portal/config.json`: how the page signs users in (`{"oidc": null}` without an identity
/// provider). Public: it holds the client id and endpoints, no secret.
async fn config(State(state): State<ApiState>) -> Response {
    let mut resp = (StatusCode::OK, state.portal.config_json.clone()).into_response();
    secure_headers(&mut resp, &state.portal.csp);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn file(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&path, &state.portal.csp, &headers).unwrap_or_else(|e| e.into_response())
}

/// Each asset's entity tag: a hash of its bytes, computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    })
}

/// The embedded file at `path`, with the portal's security headers and its entity tag (`304`
/// when the browser's copy is current); 404 for any other path.
fn serve(path: &str, csp: &HeaderValue, request: &HeaderMap) -> Result<Response, ApiError> {
    let (i, asset) = ASSETS
        .iter()
        .enumerate()
        .find(|(_, a)| a.path == path)
        .ok_or_else(|| ApiError::NotFound("no such portal file".into()))?;
    let etag = &etags()[i];
    let current = request
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, asset.body).into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
    secure_headers(&mut resp, csp);
    Ok(resp)
}

/// The headers every portal response carries.
fn secure_headers(resp: &mut Response, csp: &HeaderValue) {
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The token travels in the fragment and sessionStorage, never in a Referer; the sign-in
    // code is in the query only until the page removes it.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidate (cheap: 304 by entity tag): a new binary serves new files under the same
    // names.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_the_csp_and_its_media_type() {
        let policy = csp(&[], None);
        assert!(policy
            .to_str()
            .unwrap()
            .ends_with("; frame-ancestors 'self'"));
        for a in ASSETS {
            let resp = serve(a.path, &policy, &HeaderMap::new()).unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{}", a.path);
            let h = resp.headers();
            assert_eq!(h[CONTENT_SECURITY_POLICY], policy);
            assert_eq!(h[CONTENT_TYPE], a.media_type);
            assert!(!a.body.is_empty(), "{}", a.path);
            if a.path.ends_with(".js") {
                assert_eq!(a.media_type, JS);
            }
            if a.path.ends_with(".css") {
                assert_eq!(a.media_type, CSS);
            }
        }
    }

    #[test]
    fn unknown_and_traversing_paths_are_not_found() {
        for p in ["nope.js", "../Cargo.toml", "vendor/../index.html", ""] {
            assert!(serve(p, &csp(&[], None), &HeaderMap::new()).is_err(), "{p}");
        }
    }

    #[test]
    fn a_current_copy_is_not_sent_again() {
        let policy = csp(&[], None);
        let first = serve("js/app.js", &policy, &HeaderMap::new()).unwrap();
        let tag = first.headers()[ETAG].clone();
        let mut request = HeaderMap::new();
        request.insert(IF_NONE_MATCH, tag.clone());
        let again = serve("js/app.js", &policy, &request).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[ETAG], tag);
        assert_eq!(again.headers()[CONTENT_SECURITY_POLICY], policy);
        // Another file's tag does not match.
        let other = serve("index.html", &policy, &request).unwrap();
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[test]
    fn an_origin_that_is_not_a_header_value_frames_nowhere() {
        let policy = csp(&["https://a.example\n".into()], None);
        assert!(policy
            .to_str()
            .unwrap()
            .ends_with("; frame-ancestors 'none'"));
    }

    #[test]
    fn configured_origins_may_frame_the_portal() {
        let policy = csp(&["https://console.example.com".into()], None);
        assert!(policy
            .to_str()
            .unwrap()
            .ends_with("; frame-ancestors 'self' https://console.example.com"));
    }

    #[test]
    fn the_token_endpoint_is_the_only_other_address_called() {
        let policy = csp(&[], Some("https://idp.example/oauth/token"));
        let text = policy.to_str().unwrap();
        assert!(
            text.contains("; connect-src 'self' https://idp.example/oauth/token; base-uri"),
            "{text}"
        );
        assert!(!csp(&[], None).to_str().unwrap().contains("idp.example"));
        let setup = PortalSetup::new(vec![], None);
        assert_eq!(setup.config_json, br#"{"oidc":null}"#);
    }

    #[test]
    fn the_page_loads_nothing_from_another_origin() {
        for a in ASSETS.iter().filter(|a| !a.path.starts_with("vendor/")) {
            // The SVG namespace is a name, not an address the page loads.
            let text = std::str::from_utf8(a.body)
                .unwrap()
                .replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://"), "{}", a.path);
            assert!(!text.contains("https://"), "{}", a.path);
        }
    }
}
