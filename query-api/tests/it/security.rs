//! Token security with keys from a JWKS, as an identity provider issues them: RS256, ES256 and
//! EdDSA keys generated here, served from a file and from a local HTTP server speaking the
//! JWKS format. Every hostile token of the list is refused with 401 and a problem document
//! (gRPC: `UNAUTHENTICATED`); keys rotate, unknown key ids trigger one bounded refresh, a
//! failed refresh keeps the keys in hand.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tonic::Code;
use wattprint_proto::v1::tenant_query_client::TenantQueryClient;
use wattprint_proto::v1::ListInstancesRequest;
use wattprint_query_api::auth::{Jwks, JwksConfig, JwksError, JwksSource, MAX_TOKEN_BYTES};
use wattprint_query_api::{router, ApiLimits, ApiState, AuthConfig, TokenVerifier};

const ISS: &str = "https://idp.example/";
const AUD: &str = "wattprint-query-api";

/// A signing key and the public JWK of it.
struct Key {
    kid: String,
    alg: Algorithm,
    signing: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One 2048-bit RSA key per test binary (generating one takes a while in a debug build).
fn rsa_key() -> &'static Key {
    static KEY: OnceLock<Key> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        Key {
            kid: "rsa-1".into(),
            alg: Algorithm::RS256,
            signing: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256",
                "n": b64(&private.n().to_bytes_be()), "e": b64(&private.e().to_bytes_be()),
            }),
        }
    })
}

fn ec_key(kid: &str) -> Key {
    use p256::pkcs8::EncodePrivateKey;
    let signing = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
    let point = signing.verifying_key().to_encoded_point(false);
    Key {
        kid: kid.into(),
        alg: Algorithm::ES256,
        signing: EncodingKey::from_ec_der(signing.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
        }),
    }
}

fn ed_key(kid: &str) -> Key {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use rsa::rand_core::RngCore;
    let mut seed = [0u8; 32];
    rsa::rand_core::OsRng.fill_bytes(&mut seed);
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    Key {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        signing: EncodingKey::from_ed_der(signing.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": b64(signing.verifying_key().as_bytes()),
        }),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims of a reader token for `tenant`, valid for ten minutes.
fn claims(tenant: &str) -> Value {
    let now = now_s();
    json!({"sub": format!("user@{tenant}"), "tenant": tenant, "iss": ISS, "aud": AUD,
           "iat": now, "nbf": now, "exp": now + 600})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn sign_as(key: &Key, header: Header, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, &key.signing).unwrap()
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    sign_as(key, header, claims)
}

fn set(keys: &[&Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// A local server answering `GET /jwks.json` with whatever status and body it is given, and
/// counting the requests.
struct JwksServer {
    url: String,
    answer: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(body: &Value) -> Self {
        let answer = Arc::new(Mutex::new((StatusCode::OK, body.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (a, h) = (answer.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (a, h) = (a.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = a.lock().unwrap().clone();
                    (
                        status,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, answer, hits }
    }

    fn serve(&self, status: StatusCode, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_owned());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwks_auth() -> AuthConfig {
    // No dev secret: HS256 is refused.
    AuthConfig::new("", ISS, AUD)
}

/// The harness's store behind a router whose verifier uses `jwks`.
fn app_with(h: &Harness, jwks: Jwks) -> axum::Router {
    router(state_with(h, jwks))
}

/// [`app_with`] over the key set at `url`, cached an hour (no time-driven refresh in a test).
async fn app_from_url(h: &Harness, url: &str) -> axum::Router {
    let config = url_config(url, Duration::from_secs(3600), Duration::from_secs(3600));
    app_with(h, Jwks::load(config).await.unwrap())
}

fn state_with(h: &Harness, jwks: Jwks) -> ApiState {
    let store: Arc<dyn wattprint_store::Store> = h.store.clone();
    ApiState::new(store, jwks_auth(), catalog(), ApiLimits::default())
        .with_verifier(TokenVerifier::with_jwks(&jwks_auth(), jwks))
}

fn url_config(url: &str, refresh_every: Duration, min_refetch: Duration) -> JwksConfig {
    JwksConfig {
        refresh_every,
        min_refetch_interval: min_refetch,
        ..JwksConfig::new(JwksSource::Url(url.to_owned()))
    }
}

/// Instance ids the API lists for a token, or the status and problem it answered.
async fn instances(app: &axum::Router, token: &str) -> Result<Vec<String>, String> {
    let r = get(app, "/v1/instances", Some(token)).await;
    if r.status != StatusCode::OK {
        return Err(format!("{}: {}", r.status, r.text));
    }
    Ok(r.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap().to_owned())
        .collect())
}

async fn assert_refused(app: &axum::Router, token: &str, detail: &str, case: &str) {
    let r = get(app, "/v1/instances", Some(token)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{case}: {}", r.text);
    r.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["detail"], detail, "{case}");
    let challenge = r.headers.get(WWW_AUTHENTICATE).unwrap().to_str().unwrap();
    assert!(challenge.contains("invalid_token"), "{case}: {challenge}");
}

/// The hostile tokens of the security list, each with the detail it must be refused with.
fn hostile_tokens(rsa: &Key, ec: &Key) -> Vec<(&'static str, String, &'static str)> {
    let acme = claims("acme");
    let now = now_s();
    let header_b64 = |h: Value| b64(h.to_string().as_bytes());
    let payload_b64 = |c: &Value| b64(c.to_string().as_bytes());
    let valid = sign(rsa, &acme);
    let parts: Vec<&str> = valid.split('.').collect();
    // A copy of acme's valid token whose payload now names globex, signature kept.
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        payload_b64(&with(acme.clone(), "tenant", json!("globex"))),
        parts[2]
    );
    // HS256 "signed" with the RSA public key (as its JWK JSON, as the raw modulus, and as
    // the base64 text of n): the classic key-confusion attack.
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(rsa.kid.clone());
    let n_b64 = rsa.jwk["n"].as_str().unwrap().to_owned();
    let confusion = |secret: &[u8]| {
        jsonwebtoken::encode(&hs_header, &acme, &EncodingKey::from_secret(secret)).unwrap()
    };
    let n_raw = URL_SAFE_NO_PAD.decode(&n_b64).unwrap();
    // ES256 header with the RSA key's kid (a key of another algorithm).
    let mut es_with_rsa_kid = Header::new(Algorithm::ES256);
    es_with_rsa_kid.kid = Some(rsa.kid.clone());
    // A token signed by a key the IdP never published, under a published kid.
    let impostor = ec_key(&ec.kid);
    let mut no_kid = Header::new(Algorithm::ES256);
    no_kid.kid = None;
    vec![
        (
            "alg none, no signature",
            format!(
                "{}.{}.",
                header_b64(json!({"alg": "none", "typ": "JWT"})),
                payload_b64(&acme)
            ),
            "token algorithm is not accepted",
        ),
        (
            "alg none with the RSA signature",
            format!(
                "{}.{}.{}",
                header_b64(json!({"alg": "none", "kid": rsa.kid})),
                parts[1],
                parts[2]
            ),
            "token algorithm is not accepted",
        ),
        (
            "alg NONE",
            format!(
                "{}.{}.",
                header_b64(json!({"alg": "NONE"})),
                payload_b64(&acme)
            ),
            "token algorithm is not accepted",
        ),
        (
            "HS/RS confusion: JWK JSON as HMAC secret",
            confusion(rsa.jwk.to_string().as_bytes()),
            "token algorithm is not accepted",
        ),
        (
            "HS/RS confusion: modulus as HMAC secret",
            confusion(&n_raw),
            "token algorithm is not accepted",
        ),
        (
            "HS/RS confusion: base64 modulus as HMAC secret",
            confusion(n_b64.as_bytes()),
            "token algorithm is not accepted",
        ),
        (
            "HS512 (not accepted at all)",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS512),
                &acme,
                &EncodingKey::from_secret(b"x"),
            )
            .unwrap(),
            "token algorithm is not accepted",
        ),
        (
            "ES256 header on the RSA key's kid",
            sign_as(ec, es_with_rsa_kid, &acme),
            "token algorithm is not accepted",
        ),
        (
            "expired an hour ago",
            sign(
                rsa,
                &with(
                    with(acme.clone(), "exp", json!(now - 3600)),
                    "nbf",
                    json!(now - 4000),
                ),
            ),
            "token expired",
        ),
        (
            "not valid for another hour",
            sign(rsa, &with(acme.clone(), "nbf", json!(now + 3600))),
            "token not yet valid",
        ),
        (
            "wrong issuer",
            sign(
                rsa,
                &with(acme.clone(), "iss", json!("https://evil.example/")),
            ),
            "invalid token",
        ),
        (
            "wrong audience",
            sign(rsa, &with(acme.clone(), "aud", json!("another-api"))),
            "invalid token",
        ),
        (
            "no expiry",
            sign(rsa, &{
                let mut c = acme.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "invalid token",
        ),
        ("tampered tenant claim", tampered, "invalid token"),
        (
            "signature stripped",
            format!("{}.{}.", parts[0], parts[1]),
            "invalid token",
        ),
        (
            "signed by an unpublished key under a published kid",
            sign(&impostor, &acme),
            "invalid token",
        ),
        (
            "unknown key id",
            sign(&ec_key("never-published"), &acme),
            "token signing key is unknown",
        ),
        (
            "no kid while the set holds several keys",
            sign_as(ec, no_kid, &acme),
            "token signing key is unknown",
        ),
        (
            "oversized",
            sign(
                rsa,
                &with(acme.clone(), "pad", json!("x".repeat(MAX_TOKEN_BYTES))),
            ),
            "token is larger than 8192 bytes",
        ),
        (
            "roles not an array",
            sign(rsa, &with(acme.clone(), "roles", json!("admin"))),
            "invalid token",
        ),
        (
            "no tenant and no operator role",
            sign(rsa, &{
                let mut c = acme.clone();
                c.as_object_mut().unwrap().remove("tenant");
                c
            }),
            "invalid token",
        ),
        ("not a JWT", "a.b".to_owned(), "invalid token"),
    ]
}

#[tokio::test]
async fn every_hostile_token_is_refused_with_401_on_rest_and_grpc() {
    let h = harness().await;
    let (rsa, ec, ed) = (rsa_key(), ec_key("ec-1"), ed_key("ed-1"));
    let server = JwksServer::start(&set(&[rsa, &ec, &ed])).await;
    let config = url_config(
        &server.url,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    );
    let app = app_with(&h, Jwks::load(config.clone()).await.unwrap());
    // The valid token the hostile ones are variations of is accepted.
    assert_eq!(
        instances(&app, &sign(rsa, &claims("acme"))).await.unwrap(),
        ["i-a1", "i-a2"]
    );
    let cases = hostile_tokens(rsa, &ec);
    for (case, token, detail) in &cases {
        assert_refused(&app, token, detail, case).await;
    }

    // The same over gRPC on a real server.
    let state = state_with(&h, Jwks::load(config).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(wattprint_query_api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let mut client = TenantQueryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    for (case, token, detail) in &cases {
        let mut req = tonic::Request::new(ListInstancesRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let status = client.list_instances(req).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}");
        assert_eq!(status.message(), *detail, "{case}");
    }
    let mut req = tonic::Request::new(ListInstancesRequest::default());
    let good = sign(&ed, &claims("globex"));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {good}").parse().unwrap());
    let ids: Vec<String> = client
        .list_instances(req)
        .await
        .unwrap()
        .into_inner()
        .instances
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(ids, ["i-b1"]);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    // Refusals never fetched the set again: no kid was unknown except one, once.
    assert_eq!(
        server.hits(),
        4,
        "two loads, each with one unknown-kid refresh"
    );
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_verify_and_scope_the_tenant() {
    let h = harness().await;
    let (rsa, ec, ed) = (rsa_key(), ec_key("ec-1"), ed_key("ed-1"));
    let server = JwksServer::start(&set(&[rsa, &ec, &ed])).await;
    let jwks = Jwks::load(url_config(
        &server.url,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ))
    .await
    .unwrap();
    assert_eq!(jwks.key_ids().len(), 3);
    let app = app_with(&h, jwks);
    for key in [rsa, &ec, &ed] {
        assert_eq!(
            instances(&app, &sign(key, &claims("acme"))).await.unwrap(),
            ["i-a1", "i-a2"],
            "{:?}",
            key.alg
        );
        assert_eq!(
            instances(&app, &sign(key, &claims("globex")))
                .await
                .unwrap(),
            ["i-b1"]
        );
    }
    // An aud array holding ours, and no nbf at all (many IdPs omit it), are fine.
    let mut c = with(claims("acme"), "aud", json!(["other", AUD]));
    c.as_object_mut().unwrap().remove("nbf");
    assert_eq!(instances(&app, &sign(&ed, &c)).await.unwrap().len(), 2);
    // Within the leeway (30 s): expired 10 s ago still passes.
    let now = now_s();
    let late = with(
        with(claims("acme"), "exp", json!(now - 10)),
        "nbf",
        json!(now - 600),
    );
    assert!(instances(&app, &sign(&ec, &late)).await.is_ok());
    // The cache served every verification: one fetch in all.
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_token_without_kid_is_accepted_only_from_a_single_key_set() {
    let h = harness().await;
    let ed = ed_key("only");
    let server = JwksServer::start(&set(&[&ed])).await;
    let app = app_from_url(&h, &server.url).await;
    let token = sign_as(&ed, Header::new(Algorithm::EdDSA), &claims("acme"));
    assert_eq!(instances(&app, &token).await.unwrap(), ["i-a1", "i-a2"]);
    // The same kid-less token against a set of two keys: refused.
    let server2 = JwksServer::start(&set(&[&ed, &ec_key("other")])).await;
    let app2 = app_from_url(&h, &server2.url).await;
    assert_refused(&app2, &token, "token signing key is unknown", "no kid").await;
}

#[tokio::test]
async fn rotation_fetches_the_new_key_and_drops_the_old_one() {
    let h = harness().await;
    let (old, new) = (ec_key("2026-11-a"), ed_key("2026-11-b"));
    let server = JwksServer::start(&set(&[&old])).await;
    let app = app_from_url(&h, &server.url).await;
    let old_token = sign(&old, &claims("acme"));
    assert!(instances(&app, &old_token).await.is_ok());
    // The IdP rotates: only the new key is published.
    server.serve(StatusCode::OK, &set(&[&new]).to_string());
    let new_token = sign(&new, &claims("acme"));
    assert_eq!(instances(&app, &new_token).await.unwrap(), ["i-a1", "i-a2"]);
    assert_eq!(server.hits(), 2, "the unknown kid triggered one refresh");
    // The old key went with the refresh: its tokens are refused, without another fetch.
    assert_refused(&app, &old_token, "token signing key is unknown", "old kid").await;
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_fetches_the_set_at_most_once() {
    let h = harness().await;
    let ec = ec_key("real");
    let server = JwksServer::start(&set(&[&ec])).await;
    let app = app_from_url(&h, &server.url).await;
    let acme = claims("acme");
    for i in 0..50 {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(format!("bogus-{i}"));
        let token = sign_as(&ec, header, &acme);
        assert_refused(&app, &token, "token signing key is unknown", "bogus kid").await;
    }
    assert_eq!(
        server.hits(),
        2,
        "one load, one refresh for the first bogus kid"
    );
    // Real tokens kept working throughout.
    assert!(instances(&app, &sign(&ec, &acme)).await.is_ok());
}

#[tokio::test]
async fn a_stale_set_is_read_again_and_a_failed_refresh_keeps_the_keys() {
    let h = harness().await;
    let (k1, k2) = (ed_key("k1"), ed_key("k2"));
    let server = JwksServer::start(&set(&[&k1])).await;
    // Always stale, refetch allowed at once: every request reads the set again.
    let app = app_with(
        &h,
        Jwks::load(url_config(&server.url, Duration::ZERO, Duration::ZERO))
            .await
            .unwrap(),
    );
    let t1 = sign(&k1, &claims("acme"));
    for _ in 0..3 {
        assert!(instances(&app, &t1).await.is_ok());
    }
    assert_eq!(server.hits(), 4);
    // The IdP fails or answers garbage: the keys in hand still verify.
    for (status, body) in [
        (StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned()),
        (StatusCode::OK, "<html>".to_owned()),
        (StatusCode::OK, json!({"keys": []}).to_string()),
    ] {
        server.serve(status, &body);
        assert!(instances(&app, &t1).await.is_ok(), "{status} {body}");
    }
    assert_eq!(server.hits(), 7);
    // The set changes without any unknown kid: the age-based refresh alone drops k1.
    server.serve(StatusCode::OK, &set(&[&k2]).to_string());
    assert_refused(&app, &t1, "token signing key is unknown", "dropped").await;
    assert!(instances(&app, &sign(&k2, &claims("acme"))).await.is_ok());
}

#[tokio::test]
async fn a_jwks_file_is_read_and_re_read_when_stale() {
    let h = harness().await;
    let dir = tempfile_dir();
    let path = dir.join("jwks.json");
    let (rsa, ed) = (rsa_key(), ed_key("file-2"));
    std::fs::write(&path, set(&[rsa]).to_string()).unwrap();
    let config = JwksConfig {
        refresh_every: Duration::ZERO,
        min_refetch_interval: Duration::ZERO,
        ..JwksConfig::new(JwksSource::File(path.clone()))
    };
    let app = app_with(&h, Jwks::load(config).await.unwrap());
    let t_rsa = sign(rsa, &claims("globex"));
    assert_eq!(instances(&app, &t_rsa).await.unwrap(), ["i-b1"]);
    std::fs::write(&path, set(&[&ed]).to_string()).unwrap();
    assert_refused(&app, &t_rsa, "token signing key is unknown", "rotated").await;
    assert_eq!(
        instances(&app, &sign(&ed, &claims("globex")))
            .await
            .unwrap(),
        ["i-b1"]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wattprint-jwks-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn unusable_key_sets_are_clear_errors_at_load() {
    let dir = tempfile_dir();
    let load = |source: JwksSource| async move { Jwks::load(JwksConfig::new(source)).await };
    let missing = load(JwksSource::File(dir.join("absent.json")))
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, JwksError::Read { .. }) && missing.to_string().contains("absent.json"),
        "{missing}"
    );
    let server = JwksServer::start(&json!({})).await;
    server.serve(StatusCode::NOT_FOUND, "no");
    let err = load(JwksSource::Url(server.url.clone())).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    for (doc, needle) in [
        (
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]}),
            "no usable signing key",
        ),
        (
            json!({"keys": [{"kty": "RSA", "kid": "weak", "n": b64(&[0xcb; 128]), "e": "AQAB"}]}),
            "RSA modulus of 1024 bits",
        ),
        (
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "bent", "x": "AAAA", "y": "AAAA"}]}),
            "key \"bent\" is unusable",
        ),
        (json!({"not_keys": []}), "is not a JWK set"),
    ] {
        server.serve(StatusCode::OK, &doc.to_string());
        let err = load(JwksSource::Url(server.url.clone())).await.unwrap_err();
        assert!(err.to_string().contains(needle), "{doc}: {err}");
    }
    // Nothing listens there.
    let err = load(JwksSource::Url("http://127.0.0.1:1/jwks.json".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, JwksError::Fetch { .. }), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn dev_hs256_tokens_are_refused_once_a_key_set_is_configured() {
    let h = harness().await;
    let server = JwksServer::start(&set(&[&ed_key("k")])).await;
    let app = app_from_url(&h, &server.url).await;
    // A dev token signed with the harness's HS256 secret, and one with the right iss/aud.
    let dev = token("acme");
    assert_refused(&app, &dev, "token algorithm is not accepted", "dev token").await;
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("acme"),
        &EncodingKey::from_secret(b"an-hs256-secret-for-tests-only"),
    )
    .unwrap();
    assert_refused(&app, &hs, "token algorithm is not accepted", "hs256").await;
    // And the dev mode's router refuses IdP tokens.
    let rs = sign(rsa_key(), &claims("acme"));
    let r = get(&h.app, "/v1/instances", Some(&rs)).await;
    r.assert_problem(StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["detail"], "token algorithm is not accepted");
}
