//! Public keys from a JSON Web Key Set (RFC 7517), read from a file or fetched over HTTP(S),
//! cached, and refreshed: when older than [`JwksConfig::refresh_every`], and when a token names
//! a `kid` the cache does not hold — at most once per [`JwksConfig::min_refetch_interval`], so a
//! flood of tokens with made-up key ids cannot hammer the identity provider. A refresh replaces
//! the whole set (keys the provider dropped are dropped); a failed refresh keeps the keys in
//! hand and is logged.
//!
//! Only signing keys this server verifies are taken: RSA (RS256, ≥ 2048 bits), EC P-256
//! (ES256) and OKP Ed25519 (EdDSA), each bound to that one algorithm. Keys for encryption
//! (`use: enc`), other algorithms or curves are skipped; symmetric (`oct`) keys are never taken
//! from a key set. A key of a supported type that is malformed makes the whole document an
//! error (a config error at start; a refresh keeps the previous set).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use thiserror::Error;

/// Largest key set document read, bytes.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Most keys taken from one document.
pub const MAX_KEYS: usize = 64;

/// Smallest RSA modulus accepted, bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Where the key set is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JSON file (re-read on every refresh, so rotating means rewriting it).
    File(PathBuf),
    /// An `https://` (or `http://`) URL, e.g. the IdP's `jwks_uri`.
    Url(String),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "file {}", p.display()),
            JwksSource::Url(u) => write!(f, "{u}"),
        }
    }
}

/// How the key set is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    /// Where it is read from.
    pub source: JwksSource,
    /// Age after which the set is read again (default 300 s).
    pub refresh_every: Duration,
    /// Least time between two refreshes not due to age (an unknown `kid`, or a retry after a
    /// failure) (default 30 s).
    pub min_refetch_interval: Duration,
    /// Timeout of one HTTP fetch (default 5 s).
    pub fetch_timeout: Duration,
}

impl JwksConfig {
    /// A config with the default periods.
    pub fn new(source: JwksSource) -> Self {
        Self {
            source,
            refresh_every: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a key set could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("cannot read JWKS {at}: {reason}")]
    Read {
        /// Where from.
        at: String,
        /// Why.
        reason: String,
    },
    /// The HTTP fetch failed or answered something other than 2xx.
    #[error("cannot fetch JWKS from {at}: {reason}")]
    Fetch {
        /// Where from.
        at: String,
        /// Why.
        reason: String,
    },
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("JWKS from {0} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge(String),
    /// The document is not a JSON object with a `keys` array.
    #[error("JWKS from {at} is not a JWK set: {reason}")]
    NotASet {
        /// Where from.
        at: String,
        /// Why.
        reason: String,
    },
    /// A key of a supported type is malformed.
    #[error("JWKS from {at}: key {kid} is unusable: {reason}")]
    BadKey {
        /// Where from.
        at: String,
        /// The key's `kid`, or its index.
        kid: String,
        /// Why.
        reason: String,
    },
    /// The set holds no key this server can verify with.
    #[error(
        "JWKS from {0} holds no usable signing key (RSA ≥ 2048 bits, EC P-256 or Ed25519 with \
         use \"sig\")"
    )]
    NoUsableKey(String),
}

/// One verification key of the set, bound to one algorithm.
#[derive(Clone)]
pub(crate) struct SetKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for SetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn b64url(field: &str, value: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|e| format!("{field} is not base64url: {e}"))
}

/// The algorithm a supported key verifies, after checking its parameters; `Ok(None)` for a
/// key of a type or algorithm this server does not take.
fn key_algorithm(jwk: &Jwk) -> Result<Option<Algorithm>, String> {
    let declared = jwk.common.key_algorithm;
    let only = |alg: Algorithm, key_alg: KeyAlgorithm| match declared {
        None => Some(alg),
        Some(a) if a == key_alg => Some(alg),
        Some(_) => None,
    };
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64url("n", &p.n)?;
            let e = b64url("e", &p.e)?;
            let bits = n
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| (n.len() - i) * 8 - n[i].leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA modulus of {bits} bits (at least {MIN_RSA_BITS} needed)"
                ));
            }
            if e.is_empty() || e.len() > 8 {
                return Err("RSA exponent is empty or longer than 8 bytes".into());
            }
            Ok(only(Algorithm::RS256, KeyAlgorithm::RS256))
        }
        AlgorithmParameters::EllipticCurve(p) => {
            if p.curve != EllipticCurve::P256 {
                return Ok(None);
            }
            if b64url("x", &p.x)?.len() != 32 || b64url("y", &p.y)?.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".into());
            }
            Ok(only(Algorithm::ES256, KeyAlgorithm::ES256))
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Ok(None);
            }
            if b64url("x", &p.x)?.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            Ok(only(Algorithm::EdDSA, KeyAlgorithm::EdDSA))
        }
        AlgorithmParameters::OctetKey(_) => Ok(None),
    }
}

/// Parses a JWK set document into the keys this server verifies with.
pub(crate) fn parse_key_set(source: &str, bytes: &[u8]) -> Result<Vec<SetKey>, JwksError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let not_a_set = |reason: String| JwksError::NotASet {
        at: source.to_owned(),
        reason,
    };
    let raw: RawSet = serde_json::from_slice(bytes).map_err(|e| not_a_set(e.to_string()))?;
    let mut keys = Vec::new();
    let mut kids = HashSet::new();
    for (i, value) in raw.keys.into_iter().enumerate() {
        let label = value
            .get("kid")
            .and_then(|k| k.as_str())
            .map_or_else(|| format!("#{i}"), |k| format!("{k:?}"));
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let ours = match field("kty").as_deref() {
            Some("RSA") => true,
            Some("EC") => field("crv").as_deref() == Some("P-256"),
            Some("OKP") => field("crv").as_deref() == Some("Ed25519"),
            _ => false,
        };
        let for_signing = value.get("use").is_none() || field("use").as_deref() == Some("sig");
        if !ours || !for_signing {
            tracing::debug!(key = %label, "JWKS key of another type, curve or use skipped");
            continue;
        }
        let bad = |reason: String| JwksError::BadKey {
            at: source.to_owned(),
            kid: label.clone(),
            reason,
        };
        let jwk: Jwk = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let Some(alg) = key_algorithm(&jwk).map_err(bad)? else {
            tracing::debug!(key = %label, "JWKS key of an unsupported algorithm skipped");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        if let Some(kid) = &kid {
            if !kids.insert(kid.clone()) {
                return Err(bad("kid appears twice".into()));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
        keys.push(SetKey { kid, alg, key });
        if keys.len() > MAX_KEYS {
            return Err(not_a_set(format!("more than {MAX_KEYS} usable keys")));
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(source.to_owned()));
    }
    Ok(keys)
}

/// The keys in hand and when they were read.
struct Cached {
    keys: Arc<Vec<SetKey>>,
    fetched_at: Instant,
}

/// A cached, refreshed key set.
pub struct Jwks {
    config: JwksConfig,
    http: reqwest::Client,
    cached: RwLock<Cached>,
    /// Serialises refreshes; holds when the last refresh (not the first read) was tried.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.config.source.to_string())
            .field("keys", &self.keys().len())
            .finish_non_exhaustive()
    }
}

/// What a lookup wants.
pub(crate) enum Lookup<'a> {
    /// The key with this `kid`.
    Kid(&'a str),
    /// The only key of the set (a token without `kid`).
    Only,
}

impl Jwks {
    /// Reads the set once; an unreadable document or one without a usable key is an error.
    pub async fn load(config: JwksConfig) -> Result<Self, JwksError> {
        // An https key set is never fetched over plain http, not even through a redirect.
        let https = matches!(&config.source, JwksSource::Url(u) if u.starts_with("https://"));
        let http = reqwest::Client::builder()
            .timeout(config.fetch_timeout)
            .https_only(https)
            .build()
            .map_err(|e| JwksError::Fetch {
                at: config.source.to_string(),
                reason: e.to_string(),
            })?;
        let jwks = Self {
            config,
            http,
            cached: RwLock::new(Cached {
                keys: Arc::new(Vec::new()),
                fetched_at: Instant::now(),
            }),
            refreshing: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        };
        let keys = jwks.fetch().await;
        crate::metrics::jwks_fetched(keys.is_ok());
        jwks.store(keys?);
        tracing::info!(source = %jwks.config.source, keys = jwks.keys().len(), "JWKS loaded");
        Ok(jwks)
    }

    /// Where the set comes from.
    pub fn source(&self) -> &JwksSource {
        &self.config.source
    }

    /// How many times the set has been read (first read and refreshes, failed or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The `kid`s of the keys in hand.
    pub fn key_ids(&self) -> Vec<Option<String>> {
        self.keys().iter().map(|k| k.kid.clone()).collect()
    }

    fn keys(&self) -> Arc<Vec<SetKey>> {
        match self.cached.read() {
            Ok(c) => c.keys.clone(),
            Err(poisoned) => poisoned.into_inner().keys.clone(),
        }
    }

    fn age(&self) -> Duration {
        match self.cached.read() {
            Ok(c) => c.fetched_at.elapsed(),
            Err(poisoned) => poisoned.into_inner().fetched_at.elapsed(),
        }
    }

    fn store(&self, keys: Vec<SetKey>) {
        let fresh = Cached {
            keys: Arc::new(keys),
            fetched_at: Instant::now(),
        };
        match self.cached.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    async fn fetch(&self) -> Result<Vec<SetKey>, JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let source = self.config.source.to_string();
        let bytes = match &self.config.source {
            JwksSource::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_capped(&path))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map_err(|reason| JwksError::Read {
                        at: source.clone(),
                        reason,
                    })?
            }
            JwksSource::Url(url) => self.get(url).await?,
        };
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge(source));
        }
        parse_key_set(&source, &bytes)
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            at: url.to_owned(),
            reason,
        };
        let mut resp = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge(url.to_owned()));
            }
        }
        Ok(body)
    }

    /// Reads the set again if `due` still holds once this task has the refresh lock (another
    /// may have refreshed meanwhile). A failure keeps the keys in hand.
    async fn refresh_if(&self, due: impl Fn(&Self, Option<Instant>) -> bool) {
        let mut last_try = self.refreshing.lock().await;
        if !due(self, *last_try) {
            return;
        }
        *last_try = Some(Instant::now());
        let fetched = self.fetch().await;
        crate::metrics::jwks_fetched(fetched.is_ok());
        match fetched {
            Ok(keys) => {
                tracing::info!(source = %self.config.source, keys = keys.len(), "JWKS refreshed");
                self.store(keys);
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys in hand");
            }
        }
    }

    fn may_refetch(&self, last_try: Option<Instant>) -> bool {
        last_try.is_none_or(|t| t.elapsed() >= self.config.min_refetch_interval)
    }

    fn find(&self, want: &Lookup<'_>) -> Result<Option<SetKey>, String> {
        let keys = self.keys();
        match want {
            Lookup::Kid(kid) => Ok(keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(*kid))
                .cloned()),
            Lookup::Only => match keys.as_slice() {
                [only] => Ok(Some(only.clone())),
                _ => Err(format!(
                    "token has no kid and the key set holds {} keys",
                    keys.len()
                )),
            },
        }
    }

    /// The key a token must verify with: refreshed first when the set is older than
    /// `refresh_every`, and once more (rate-limited) when the token's `kid` is unknown.
    pub(crate) async fn key(&self, want: Lookup<'_>) -> Result<SetKey, String> {
        if self.age() >= self.config.refresh_every {
            self.refresh_if(|me, last| me.age() >= me.config.refresh_every && me.may_refetch(last))
                .await;
        }
        if let Some(key) = self.find(&want)? {
            return Ok(key);
        }
        if let Lookup::Kid(kid) = want {
            self.refresh_if(|me, last| {
                me.may_refetch(last) && matches!(me.find(&Lookup::Kid(kid)), Ok(None))
            })
            .await;
            if let Some(key) = self.find(&want)? {
                return Ok(key);
            }
            return Err(format!("no key with kid {kid:?}"));
        }
        Err("no key".into())
    }
}

fn read_capped(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn ed(kid: &str) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&[7u8; 32])})
    }

    fn parse(v: serde_json::Value) -> Result<Vec<SetKey>, JwksError> {
        parse_key_set("test", v.to_string().as_bytes())
    }

    /// The JWKS metrics follow loads and refreshes: a success counts and stamps the time, a
    /// failed refresh counts as an error and keeps the time (the only test here that fetches).
    #[tokio::test]
    async fn loads_and_refreshes_are_counted_and_stamped() {
        use wattprint_runtime::metrics::parse::{parse_text, value};
        let scrape = || {
            let m = parse_text(&wattprint_runtime::metrics::render()).unwrap();
            (
                value(&m, "wattprint_api_jwks_refreshes_total", &[]),
                value(&m, "wattprint_api_jwks_refresh_errors_total", &[]),
                value(&m, "wattprint_api_jwks_last_refresh_timestamp_seconds", &[]),
            )
        };
        let dir = std::env::temp_dir().join(format!(
            "wattprint-jwks-metrics-{}-{}",
            std::process::id(),
            wattprint_runtime::metrics::unix_now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        std::fs::write(&path, serde_json::json!({"keys": [ed("a")]}).to_string()).unwrap();
        let (ok0, err0, _) = scrape();
        let before = wattprint_runtime::metrics::unix_now();
        let jwks = Jwks::load(JwksConfig {
            refresh_every: Duration::from_secs(3600),
            min_refetch_interval: Duration::ZERO,
            ..JwksConfig::new(JwksSource::File(path.clone()))
        })
        .await
        .unwrap();
        let (ok1, err1, stamped) = scrape();
        assert_eq!((ok1 - ok0, err1 - err0), (1.0, 0.0));
        assert!(stamped >= before.floor(), "{stamped} < {before}");
        // An unknown kid refetches; the file is broken: an error, the time stays.
        std::fs::write(&path, "not json").unwrap();
        assert!(jwks.key(Lookup::Kid("b")).await.is_err());
        let (ok2, err2, stamped2) = scrape();
        assert_eq!((ok2 - ok1, err2 - err1), (0.0, 1.0));
        assert_eq!(stamped2, stamped);
        // Fixed and rotated: a success again.
        std::fs::write(&path, serde_json::json!({"keys": [ed("b")]}).to_string()).unwrap();
        assert!(jwks.key(Lookup::Kid("b")).await.is_ok());
        let (ok3, err3, stamped3) = scrape();
        assert_eq!((ok3 - ok2, err3 - err2), (1.0, 0.0));
        assert!(stamped3 >= stamped);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn supported_keys_are_bound_to_their_algorithm() {
        let keys = parse(serde_json::json!({"keys": [
            ed("a"),
            {"kty": "EC", "crv": "P-256", "kid": "b", "use": "sig",
             "x": b64(&[1u8; 32]), "y": b64(&[2u8; 32])},
            {"kty": "RSA", "kid": "c", "alg": "RS256", "n": b64(&[0xc1u8; 256]), "e": "AQAB"},
        ]}))
        .unwrap();
        let algs: Vec<_> = keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.alg))
            .collect();
        assert_eq!(
            algs,
            [
                ("a".to_owned(), Algorithm::EdDSA),
                ("b".to_owned(), Algorithm::ES256),
                ("c".to_owned(), Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn keys_not_ours_are_skipped_and_symmetric_keys_never_taken() {
        let keys = parse(serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": b64(b"secret")},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": b64(&[0xc1u8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": b64(&[0xc1u8; 256]), "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": b64(&[1u8; 48]), "y": b64(&[2u8; 48])},
            {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": b64(&[1u8; 32]), "y": b64(&[2u8; 32])},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": b64(&[1u8; 32])},
            ed("ok"),
        ]}))
        .unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ok"));
        assert!(matches!(
            parse(serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})),
            Err(JwksError::NoUsableKey(_))
        ));
    }

    #[test]
    fn malformed_keys_and_documents_are_errors() {
        let short_rsa = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "weak", "n": b64(&[0xc1u8; 128]), "e": "AQAB"}]});
        let err = parse(short_rsa).unwrap_err();
        assert!(err.to_string().contains("1024 bits"), "{err}");
        let bad_x = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": b64(&[1u8; 31])}]});
        assert!(matches!(parse(bad_x), Err(JwksError::BadKey { .. })));
        let not_b64 = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "***"}]});
        assert!(matches!(parse(not_b64), Err(JwksError::BadKey { .. })));
        let twice = serde_json::json!({"keys": [ed("a"), ed("a")]});
        assert!(matches!(parse(twice), Err(JwksError::BadKey { .. })));
        for doc in ["[]", "{}", "not json", r#"{"keys": 1}"#] {
            assert!(matches!(
                parse_key_set("t", doc.as_bytes()),
                Err(JwksError::NotASet { .. })
            ));
        }
        assert!(matches!(
            parse(serde_json::json!({"keys": []})),
            Err(JwksError::NoUsableKey(_))
        ));
    }
}
