//! Bearer-token authentication: JWTs carrying the tenant and roles, verified against a JWKS
//! (RS256, ES256, EdDSA) in production or an HS256 secret in the embedded dev mode, and the
//! axum extractors that turn a verified token into a [`TenantScope`] — the only place the API
//! creates one — or an operator's access.
//!
//! Every token is checked for size (at most [`MAX_TOKEN_BYTES`], refused before parsing),
//! algorithm (only the one its key is for; `none` never), signature, `iss`, `aud`, `exp`,
//! `nbf` (when present) with [`AuthConfig::leeway_s`] of clock skew, and a `sub`. See
//! [`access`] for roles.

pub mod access;
pub mod jwks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use wattprint_core::{TenantId, TenantScope};

pub use access::{
    AuthenticatedOperator, AuthenticatedTenant, OperatorAccess, Principal, Role, TenantAccess,
};
use access::{GrantClaims, MAX_SUBJECT_LEN, MAX_TENANT_LEN};
pub use jwks::{Jwks, JwksConfig, JwksError, JwksSource};

/// Largest bearer token accepted, bytes. Longer ones are refused (401) before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// How tokens are signed and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Shared HS256 secret of the embedded dev mode. Empty: no HS256 token is ever accepted,
    /// none can be minted.
    pub hs256_secret: String,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (default 30).
    pub leeway_s: u64,
    /// Longest lifetime (`exp` − `iat`) a token may have, seconds; `None` (the default)
    /// accepts any. With a maximum, a token must carry `iat`: a leaked long-lived token from a
    /// misconfigured issuer is refused instead of working for months.
    pub max_token_lifetime_s: Option<u64>,
}

impl AuthConfig {
    /// A config with the default 30 s leeway.
    pub fn new(
        hs256_secret: impl Into<String>,
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            hs256_secret: hs256_secret.into(),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_s: 30,
            max_token_lifetime_s: None,
        }
    }
}

impl Default for AuthConfig {
    /// Issuer `wattprint`, audience `wattprint-query-api`, leeway 30 s and no secret (so
    /// nothing verifies until one is set).
    fn default() -> Self {
        Self::new("", "wattprint", "wattprint-query-api")
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("hs256_secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("max_token_lifetime_s", &self.max_token_lifetime_s)
            .finish()
    }
}

/// The claims of a token Wattprint mints (dev mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Principal (for tenant tokens, the tenant id).
    pub sub: String,
    /// Tenant the bearer acts for; absent in operator tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Roles granted (`reader`, `admin`, `operator`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
}

/// Why a token was refused or could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    MissingToken,
    /// The header is not `Bearer <token>` (or appears twice).
    #[error("authorization header is not a single bearer token")]
    MalformedHeader,
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// The token's `alg` is not one this server accepts (`none`, HS256 outside the dev mode,
    /// anything but RS256/ES256/EdDSA from the key set), or not the one of its key.
    #[error("token algorithm is not accepted")]
    AlgorithmRefused(String),
    /// No key of the key set has the token's `kid` (even after a refresh), or the token has no
    /// `kid` and the set has several keys.
    #[error("token signing key is unknown")]
    UnknownKey(String),
    /// The token's `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// Bad signature, issuer, audience, shape or claims. The reason is logged, not told to
    /// the caller.
    #[error("invalid token")]
    Invalid(String),
    /// The server has no secret or key set configured, so nothing verifies.
    #[error("token verification is not configured")]
    NotConfigured,
    /// A token could not be minted.
    #[error("cannot mint token: {0}")]
    Mint(String),
}

/// The parts of a JOSE header the verifier looks at before checking anything else.
#[derive(Debug, Deserialize)]
struct PeekedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Reads the token's header (`alg`, `kid`) without trusting it: it only picks the key, and
/// `jsonwebtoken` then checks the token with that key for that one algorithm.
fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Invalid("not three dot-separated parts".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| AuthError::Invalid(format!("header is not base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Invalid(format!("header is not a JOSE header: {e}")))
}

/// Verifies tokens: HS256 with the dev secret ([`TokenVerifier::new`]), or RS256, ES256 and
/// EdDSA with the keys of a JWKS ([`TokenVerifier::with_jwks`]) — never both, so an HS256
/// token is never checked against a public key.
pub struct TokenVerifier {
    issuer: String,
    audience: String,
    leeway_s: u64,
    max_lifetime_s: Option<u64>,
    hs256: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("jwks", &self.jwks)
            .field("iss", &self.issuer)
            .field("aud", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

impl TokenVerifier {
    /// The embedded dev mode's verifier: HS256 tokens signed with `auth.hs256_secret`, with the
    /// config's issuer, audience and leeway. No secret: nothing verifies.
    pub fn new(auth: &AuthConfig) -> Self {
        let hs256 = (!auth.hs256_secret.is_empty())
            .then(|| DecodingKey::from_secret(auth.hs256_secret.as_bytes()));
        Self {
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway_s: auth.leeway_s,
            max_lifetime_s: auth.max_token_lifetime_s,
            hs256,
            jwks: None,
        }
    }

    /// The production verifier: RS256, ES256 and EdDSA tokens checked with the keys of `jwks`,
    /// with the config's issuer, audience and leeway. HS256 tokens are refused
    /// (`auth.hs256_secret` is not used).
    pub fn with_jwks(auth: &AuthConfig, jwks: Jwks) -> Self {
        Self {
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway_s: auth.leeway_s,
            max_lifetime_s: auth.max_token_lifetime_s,
            hs256: None,
            jwks: Some(Arc::new(jwks)),
        }
    }

    /// Whether any token can verify (a dev secret or a key set is configured).
    pub fn is_configured(&self) -> bool {
        self.hs256.is_some() || self.jwks.is_some()
    }

    /// The key set, when this verifier uses one.
    pub fn jwks(&self) -> Option<&Jwks> {
        self.jwks.as_deref()
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway_s;
        validation
    }

    /// The key `token` must verify with, chosen by its header's `alg` and `kid`: the dev
    /// secret for HS256 (dev mode only), the set's key for RS256/ES256/EdDSA (whose own
    /// algorithm must be the token's), nothing for any other `alg` (`none` included).
    async fn key_for(&self, token: &str) -> Result<(Algorithm, DecodingKey), AuthError> {
        let header = peek_header(token)?;
        let alg = match header.alg.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            other => return Err(AuthError::AlgorithmRefused(format!("alg {other:?}"))),
        };
        if alg == Algorithm::HS256 {
            let key = self.hs256.clone().ok_or_else(|| {
                AuthError::AlgorithmRefused("HS256 is accepted only in the dev mode".into())
            })?;
            return Ok((alg, key));
        }
        let jwks = self.jwks.as_ref().ok_or_else(|| {
            AuthError::AlgorithmRefused(format!("{alg:?} without a key set configured"))
        })?;
        let want = match header.kid.as_deref() {
            Some(kid) => jwks::Lookup::Kid(kid),
            None => jwks::Lookup::Only,
        };
        let key = jwks.key(want).await.map_err(AuthError::UnknownKey)?;
        if key.alg != alg {
            return Err(AuthError::AlgorithmRefused(format!(
                "token alg {alg:?} but key {:?} is for {:?}",
                key.kid, key.alg
            )));
        }
        Ok((alg, key.key))
    }

    /// Verifies `token` and returns whom it speaks for.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        if !self.is_configured() {
            return Err(AuthError::NotConfigured);
        }
        let (alg, key) = self.key_for(token).await?;
        let data = jsonwebtoken::decode::<GrantClaims>(token, &key, &self.validation(alg))
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                other => AuthError::Invalid(format!("{other:?}")),
            })?;
        if let Some(max) = self.max_lifetime_s {
            data.claims.check_lifetime(max)?;
        }
        data.claims.into_principal()
    }

    /// Verifies a token and returns its tenant scope; operator tokens are refused.
    pub async fn verify_tenant(&self, token: &str) -> Result<TenantScope, AuthError> {
        match self.verify(token).await? {
            Principal::Tenant(t) => Ok(t.scope().clone()),
            Principal::Operator(_) => Err(AuthError::Invalid("an operator token".into())),
        }
    }

    /// Reads `Authorization: Bearer <token>` from request headers and verifies it.
    pub async fn verify_headers(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Principal, AuthError> {
        self.verify(bearer_token(headers)?).await
    }
}

/// The token of the one `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

fn unix_seconds(t: SystemTime) -> Result<u64, AuthError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| AuthError::Mint("time is before the Unix epoch".into()))
}

/// Mints an HS256 dev token making the bearer **admin** of `tenant`, valid from now for `ttl`
/// (used by `wattprint up`, whose printed tokens create workloads).
pub fn mint_token(
    auth: &AuthConfig,
    tenant: &TenantId,
    ttl: Duration,
) -> Result<String, AuthError> {
    mint_token_at(auth, tenant, SystemTime::now(), ttl)
}

/// [`mint_token`] as if issued at `issued_at` (`nbf = iat = issued_at`, `exp = issued_at +
/// ttl`). A past `issued_at` gives an already expired token, which tests use.
pub fn mint_token_at(
    auth: &AuthConfig,
    tenant: &TenantId,
    issued_at: SystemTime,
    ttl: Duration,
) -> Result<String, AuthError> {
    mint_role_token(auth, Role::Admin, tenant.as_str(), issued_at, ttl)
}

/// Mints an HS256 dev token with `role`. For `reader` and `admin`, `name` is the tenant (and
/// the subject); for `operator`, it is the subject and the token names no tenant.
pub fn mint_role_token(
    auth: &AuthConfig,
    role: Role,
    name: &str,
    issued_at: SystemTime,
    ttl: Duration,
) -> Result<String, AuthError> {
    if auth.hs256_secret.is_empty() {
        return Err(AuthError::Mint("no HS256 secret configured".into()));
    }
    let max = match role {
        Role::Operator => MAX_SUBJECT_LEN,
        Role::Reader | Role::Admin => MAX_TENANT_LEN,
    };
    if name.is_empty() || name.len() > max || name.chars().any(char::is_control) {
        return Err(AuthError::Mint(format!(
            "a {} token's name must be 1 to {max} bytes without control characters",
            role
        )));
    }
    let iat = unix_seconds(issued_at)?;
    let exp = iat
        .checked_add(ttl.as_secs())
        .ok_or_else(|| AuthError::Mint("ttl overflows the expiry time".into()))?;
    let claims = Claims {
        sub: name.to_owned(),
        tenant: (role != Role::Operator).then(|| name.to_owned()),
        roles: vec![role],
        iss: auth.issuer.clone(),
        aud: auth.audience.clone(),
        exp,
        nbf: iat,
        iat,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(auth.hs256_secret.as_bytes()),
    )
    .map_err(|e| AuthError::Mint(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig::new(
            "test-secret-that-is-long-enough",
            "wattprint",
            "wattprint-query-api",
        )
    }

    fn tenant_of(p: Principal) -> TenantId {
        match p {
            Principal::Tenant(t) => t.tenant().clone(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_maximum_lifetime_refuses_longer_tokens_and_tokens_without_iat() {
        let auth = AuthConfig {
            max_token_lifetime_s: Some(3600),
            ..config()
        };
        let v = TokenVerifier::new(&auth);
        let tenant = TenantId::from("acme");
        let at_max = mint_token(&auth, &tenant, Duration::from_secs(3600)).unwrap();
        assert_eq!(tenant_of(v.verify(&at_max).await.unwrap()), tenant);
        let longer = mint_token(&auth, &tenant, Duration::from_secs(3601)).unwrap();
        assert_eq!(
            v.verify(&longer).await.unwrap_err(),
            AuthError::Invalid(
                "token lifetime of 3601 s exceeds the server's maximum of 3600 s".into()
            )
        );
        // Without a maximum the same token is fine.
        assert!(TokenVerifier::new(&config()).verify(&longer).await.is_ok());
        // A token without `iat` cannot show its lifetime.
        let now = unix_seconds(SystemTime::now()).unwrap();
        let claims = serde_json::json!({
            "sub": "acme", "tenant": "acme", "roles": ["admin"], "iss": auth.issuer,
            "aud": auth.audience, "exp": now + 60,
        });
        let no_iat = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(auth.hs256_secret.as_bytes()),
        )
        .unwrap();
        assert!(TokenVerifier::new(&config()).verify(&no_iat).await.is_ok());
        assert!(matches!(
            v.verify(&no_iat).await,
            Err(AuthError::Invalid(m)) if m.contains("no iat claim")
        ));
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_tenant_as_admin() {
        let c = config();
        let t = mint_token(&c, &TenantId::from("acme"), Duration::from_secs(60)).unwrap();
        let p = TokenVerifier::new(&c).verify(&t).await.unwrap();
        let Principal::Tenant(access) = p else {
            panic!("{p:?}")
        };
        assert_eq!(access.tenant(), &TenantId::from("acme"));
        assert_eq!(access.role(), Role::Admin);
    }

    #[tokio::test]
    async fn role_tokens_carry_their_role() {
        let c = config();
        let v = TokenVerifier::new(&c);
        let now = SystemTime::now();
        let ttl = Duration::from_secs(60);
        let reader = mint_role_token(&c, Role::Reader, "acme", now, ttl).unwrap();
        match v.verify(&reader).await.unwrap() {
            Principal::Tenant(t) => assert_eq!(t.role(), Role::Reader),
            other => panic!("{other:?}"),
        }
        let op = mint_role_token(&c, Role::Operator, "ops@provider", now, ttl).unwrap();
        match v.verify(&op).await.unwrap() {
            Principal::Operator(o) => assert_eq!(o.subject(), "ops@provider"),
            other => panic!("{other:?}"),
        }
        assert!(v.verify_tenant(&op).await.is_err());
        assert!(mint_role_token(&c, Role::Admin, "", now, ttl).is_err());
    }

    #[tokio::test]
    async fn expiry_nbf_issuer_audience_and_secret_are_checked() {
        let c = config();
        let tenant = TenantId::from("acme");
        let v = TokenVerifier::new(&c);
        let past = SystemTime::now() - Duration::from_secs(3600);
        let expired = mint_token_at(&c, &tenant, past, Duration::from_secs(60)).unwrap();
        assert_eq!(v.verify(&expired).await.unwrap_err(), AuthError::Expired);
        // Within the leeway: still accepted.
        let just = mint_token_at(
            &c,
            &tenant,
            SystemTime::now() - Duration::from_secs(70),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(tenant_of(v.verify(&just).await.unwrap()), tenant);
        let future = mint_token_at(
            &c,
            &tenant,
            SystemTime::now() + Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(v.verify(&future).await.unwrap_err(), AuthError::NotYetValid);
        for other in [
            AuthConfig {
                issuer: "evil".into(),
                ..config()
            },
            AuthConfig {
                audience: "other-api".into(),
                ..config()
            },
            AuthConfig {
                hs256_secret: "another-secret".into(),
                ..config()
            },
        ] {
            let t = mint_token(&other, &tenant, Duration::from_secs(60)).unwrap();
            assert!(
                matches!(v.verify(&t).await, Err(AuthError::Invalid(_))),
                "{other:?}"
            );
        }
        assert!(matches!(
            v.verify("garbage").await,
            Err(AuthError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn an_empty_secret_verifies_and_mints_nothing() {
        let c = AuthConfig::default();
        assert!(mint_token(&c, &TenantId::from("acme"), Duration::from_secs(60)).is_err());
        // A token signed with an empty key must not pass either.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "x".into(),
                tenant: Some("acme".into()),
                roles: vec![Role::Admin],
                iss: c.issuer.clone(),
                aud: c.audience.clone(),
                exp: u64::MAX / 2,
                nbf: 0,
                iat: 0,
            },
            &EncodingKey::from_secret(b""),
        )
        .unwrap();
        assert_eq!(
            TokenVerifier::new(&c).verify(&t).await.unwrap_err(),
            AuthError::NotConfigured
        );
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert!(!format!("{:?}", config()).contains("test-secret"));
    }

    #[tokio::test]
    async fn oversized_tokens_are_refused_before_parsing() {
        let v = TokenVerifier::new(&config());
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(v.verify(&big).await.unwrap_err(), AuthError::TooLarge);
    }

    #[test]
    fn header_parsing_requires_one_bearer_token() {
        let c = config();
        let t = mint_token(&c, &TenantId::from("acme"), Duration::from_secs(60)).unwrap();
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(bearer_token(&h), Err(AuthError::MissingToken));
        h.insert(AUTHORIZATION, format!("Basic {t}").parse().unwrap());
        assert_eq!(bearer_token(&h), Err(AuthError::MalformedHeader));
        h.insert(AUTHORIZATION, format!("bearer {t}").parse().unwrap());
        assert_eq!(bearer_token(&h), Ok(t.as_str()));
        h.append(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        assert_eq!(bearer_token(&h), Err(AuthError::MalformedHeader));
    }
}
