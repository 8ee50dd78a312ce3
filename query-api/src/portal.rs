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

/// The policy's directives before `frame-ancestors` (a macro, so the fallback below can be
/// a `'static` string too).
macro_rules! base_csp {
    () => {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'"
    };
}

/// The portal's Content-Security-Policy without its `frame-ancestors`: scripts, styles,
/// images and API calls from the portal's own origin only (no inline script, no CDN, no
/// `eval`); `data:`/`blob:` images for the favicon and statement downloads.
pub const PORTAL_CSP: &str = base_csp!();

/// [`PORTAL_CSP`] with `frame-ancestors 'self'` and `origins` (validated by the config:
/// `query_api.portal_frame_ancestors`), so only those pages may embed the portal.
pub fn csp(origins: &[String]) -> HeaderValue {
    let mut value = format!("{PORTAL_CSP}; frame-ancestors 'self'");
    for o in origins {
        value.push(' ');
        value.push_str(o);
    }
    // Unreachable with validated origins; were it reached, frame nowhere rather than anywhere.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(concat!(
        base_csp!(),
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
    asset!("vendor/uplot/uPlot.iife.min.js", JS),
    asset!("vendor/uplot/uPlot.min.css", CSS),
    asset!("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
];

/// The portal's routes: `/portal` (redirect), `/portal/` (the app) and its files. No token is
/// needed for the files; every number on the page comes from the tenant-scoped API.
pub(crate) fn portal_routes() -> Router<ApiState> {
    Router::new()
        .route("/portal", get(redirect))
        .route("/portal/", get(index))
        .route("/portal/{*path}", get(file))
}

async fn redirect() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/portal/")]).into_response()
}

async fn index(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    serve("index.html", &state.portal_csp, &headers).unwrap_or_else(|e| e.into_response())
}

async fn file(
    State(state): State<ApiState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&path, &state.portal_csp, &headers).unwrap_or_else(|e| e.into_response())
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
    h.insert(CONTENT_SECURITY_POLICY, csp.clone());
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The token travels in the fragment and sessionStorage, never in a Referer.
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Revalidate (cheap: 304 by entity tag): a new binary serves new files under the same
    // names.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_the_csp_and_its_media_type() {
        let policy = csp(&[]);
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
            assert!(serve(p, &csp(&[]), &HeaderMap::new()).is_err(), "{p}");
        }
    }

    #[test]
    fn a_current_copy_is_not_sent_again() {
        let policy = csp(&[]);
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
        let policy = csp(&["https://a.example\n".into()]);
        assert!(policy
            .to_str()
            .unwrap()
            .ends_with("; frame-ancestors 'none'"));
    }

    #[test]
    fn configured_origins_may_frame_the_portal() {
        let policy = csp(&["https://console.example.com".into()]);
        assert!(policy
            .to_str()
            .unwrap()
            .ends_with("; frame-ancestors 'self' https://console.example.com"));
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
