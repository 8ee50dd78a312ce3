//! Bearer-token authentication: HS256 JWTs carrying the tenant, and the axum extractor that
//! turns a verified token into a [`TenantScope`] — the only place the API creates one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use wattprint_core::{TenantId, TenantScope};

use crate::error::ApiError;
use crate::ApiState;

/// Longest tenant id accepted in a token.
const MAX_TENANT_LEN: usize = 256;

/// How tokens are signed and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Shared HS256 secret. Empty: no token is ever accepted, none can be minted.
    pub hs256_secret: String,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, seconds (default 30).
    pub leeway_s: u64,
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
            .finish()
    }
}

/// The claims of a Wattprint token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Principal (for dev tokens, the tenant id).
    pub sub: String,
    /// Tenant the bearer acts for.
    pub tenant: String,
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
    /// The token's `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// Bad signature, algorithm, issuer, audience, shape or claims. The reason is logged, not
    /// told to the caller.
    #[error("invalid token")]
    Invalid(String),
    /// The server has no secret configured, so nothing verifies.
    #[error("token verification is not configured")]
    NotConfigured,
    /// A token could not be minted.
    #[error("cannot mint token: {0}")]
    Mint(String),
}

/// Verifies tokens against one [`AuthConfig`].
pub struct TokenVerifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("configured", &self.key.is_some())
            .field("iss", &self.validation.iss)
            .field("aud", &self.validation.aud)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier for HS256 tokens with the config's issuer, audience and leeway; `exp`,
    /// `nbf`, `iss`, `aud` and `sub` are required.
    pub fn new(auth: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[auth.issuer.as_str()]);
        validation.set_audience(&[auth.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = auth.leeway_s;
        let key = (!auth.hs256_secret.is_empty())
            .then(|| DecodingKey::from_secret(auth.hs256_secret.as_bytes()));
        if key.is_none() {
            tracing::warn!(
                "no token secret configured: every authenticated request will be refused"
            );
        }
        Self { key, validation }
    }

    /// Verifies `token` and returns the scope of the tenant it names.
    pub fn verify(&self, token: &str) -> Result<TenantScope, AuthError> {
        let key = self.key.as_ref().ok_or(AuthError::NotConfigured)?;
        let data =
            jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    other => AuthError::Invalid(format!("{other:?}")),
                }
            })?;
        let tenant = data.claims.tenant;
        if tenant.is_empty()
            || tenant.len() > MAX_TENANT_LEN
            || tenant.chars().any(char::is_control)
        {
            return Err(AuthError::Invalid(
                "tenant claim is empty, too long or has control characters".into(),
            ));
        }
        Ok(TenantScope::from_verified(TenantId::new(tenant)))
    }

    /// Reads `Authorization: Bearer <token>` from request headers and verifies it.
    pub fn verify_headers(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<TenantScope, AuthError> {
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
        self.verify(token)
    }
}

fn unix_seconds(t: SystemTime) -> Result<u64, AuthError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| AuthError::Mint("time is before the Unix epoch".into()))
}

/// Mints an HS256 dev token for `tenant`, valid from now for `ttl` (used by `wattprint token`
/// and `wattprint up`).
pub fn mint_token(
    auth: &AuthConfig,
    tenant: &TenantId,
    ttl: Duration,
) -> Result<String, AuthError> {
    mint_token_at(auth, tenant, SystemTime::now(), ttl)
}

/// Mints a token as if issued at `issued_at` (`nbf = iat = issued_at`, `exp = issued_at + ttl`).
/// A past `issued_at` gives an already expired token, which tests use.
pub fn mint_token_at(
    auth: &AuthConfig,
    tenant: &TenantId,
    issued_at: SystemTime,
    ttl: Duration,
) -> Result<String, AuthError> {
    if auth.hs256_secret.is_empty() {
        return Err(AuthError::Mint("no HS256 secret configured".into()));
    }
    if tenant.as_str().is_empty() || tenant.as_str().len() > MAX_TENANT_LEN {
        return Err(AuthError::Mint("tenant id must be 1 to 256 bytes".into()));
    }
    let iat = unix_seconds(issued_at)?;
    let exp = iat
        .checked_add(ttl.as_secs())
        .ok_or_else(|| AuthError::Mint("ttl overflows the expiry time".into()))?;
    let claims = Claims {
        sub: tenant.to_string(),
        tenant: tenant.to_string(),
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

/// Extractor: the tenant scope from a verified `Authorization: Bearer …` token, and from
/// nothing else. Rejects with 401.
#[derive(Debug, Clone)]
pub struct AuthenticatedTenant(pub TenantScope);

impl<S> FromRequestParts<S> for AuthenticatedTenant
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ApiState::from_ref(state);
        match state.verifier.verify_headers(&parts.headers) {
            Ok(scope) => Ok(AuthenticatedTenant(scope)),
            Err(err) => {
                tracing::debug!(reason = ?err, "token refused");
                Err(ApiError::Unauthorized(err))
            }
        }
    }
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

    #[test]
    fn a_minted_token_verifies_to_its_tenant() {
        let c = config();
        let t = mint_token(&c, &TenantId::from("acme"), Duration::from_secs(60)).unwrap();
        let scope = TokenVerifier::new(&c).verify(&t).unwrap();
        assert_eq!(scope.tenant(), &TenantId::from("acme"));
    }

    #[test]
    fn expiry_nbf_issuer_audience_and_secret_are_checked() {
        let c = config();
        let tenant = TenantId::from("acme");
        let v = TokenVerifier::new(&c);
        let past = SystemTime::now() - Duration::from_secs(3600);
        let expired = mint_token_at(&c, &tenant, past, Duration::from_secs(60)).unwrap();
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        // Within the leeway: still accepted.
        let just = mint_token_at(
            &c,
            &tenant,
            SystemTime::now() - Duration::from_secs(70),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(v.verify(&just).is_ok());
        let future = mint_token_at(
            &c,
            &tenant,
            SystemTime::now() + Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(v.verify(&future), Err(AuthError::NotYetValid));
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
                matches!(v.verify(&t), Err(AuthError::Invalid(_))),
                "{other:?}"
            );
        }
        assert!(matches!(v.verify("garbage"), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn an_empty_secret_verifies_and_mints_nothing() {
        let c = AuthConfig::default();
        assert!(mint_token(&c, &TenantId::from("acme"), Duration::from_secs(60)).is_err());
        // A token signed with an empty key must not pass either.
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "x".into(),
                tenant: "acme".into(),
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
            TokenVerifier::new(&c).verify(&t),
            Err(AuthError::NotConfigured)
        );
    }

    #[test]
    fn the_secret_is_not_printed() {
        assert!(!format!("{:?}", config()).contains("test-secret"));
    }

    #[test]
    fn header_parsing_requires_one_bearer_token() {
        let c = config();
        let v = TokenVerifier::new(&c);
        let t = mint_token(&c, &TenantId::from("acme"), Duration::from_secs(60)).unwrap();
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(v.verify_headers(&h), Err(AuthError::MissingToken));
        h.insert(AUTHORIZATION, format!("Basic {t}").parse().unwrap());
        assert_eq!(v.verify_headers(&h), Err(AuthError::MalformedHeader));
        h.insert(AUTHORIZATION, format!("bearer {t}").parse().unwrap());
        assert!(v.verify_headers(&h).is_ok());
        h.append(AUTHORIZATION, format!("Bearer {t}").parse().unwrap());
        assert_eq!(v.verify_headers(&h), Err(AuthError::MalformedHeader));
    }
}
