//! What a verified token grants: roles, the tenant or operator it speaks for, and the axum
//! extractors handlers use to demand one or the other.
//!
//! Roles come from the token's `roles` claim (an array of strings: `reader`, `admin`,
//! `operator`) and from a space-separated `scope` claim whose `wattprint:reader`,
//! `wattprint:admin` and `wattprint:operator` entries count the same (IdPs that issue OAuth
//! scopes rather than role claims can be used as they are; other scopes are ignored, as are
//! unknown role names). A token with no recognised role is a tenant **reader**: the safest
//! default. `operator` wins over the tenant roles and makes the token cross-tenant: its
//! `tenant` claim, if any, is ignored.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use wattprint_core::{TenantId, TenantScope};

use super::AuthError;
use crate::error::ApiError;
use crate::ApiState;

/// Longest tenant id accepted in a token.
pub(crate) const MAX_TENANT_LEN: usize = 256;

/// Longest subject accepted in a token.
pub(crate) const MAX_SUBJECT_LEN: usize = 1024;

/// Most role entries (in `roles` plus `scope`) read from one token.
const MAX_ROLE_ENTRIES: usize = 64;

/// The prefix a `scope` entry carries to name a Wattprint role.
pub const SCOPE_PREFIX: &str = "wattprint:";

/// A role a token can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Tenant reader: every `GET` of its own tenant.
    Reader,
    /// Tenant admin: a reader that may also create, label and close workloads.
    Admin,
    /// Provider operator: cross-tenant, through the `/v1/operator` routes only.
    Operator,
}

impl Role {
    /// The claim value (`reader`, `admin`, `operator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            other => Err(format!(
                "unknown role {other:?} (expected reader, admin or operator)"
            )),
        }
    }
}

/// The claims the verifier reads beyond the registered ones (which `jsonwebtoken` checks).
#[derive(Debug, Deserialize)]
pub(crate) struct GrantClaims {
    pub(crate) sub: String,
    #[serde(default)]
    pub(crate) tenant: Option<String>,
    #[serde(default)]
    pub(crate) roles: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) scope: Option<String>,
    /// Expiry, Unix seconds (required and checked by the decoder).
    #[serde(default)]
    pub(crate) exp: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub(crate) iat: Option<u64>,
}

impl GrantClaims {
    /// The roles named by `roles` and by `wattprint:`-prefixed `scope` entries; unknown names
    /// are ignored.
    fn roles(&self) -> Result<Vec<Role>, AuthError> {
        let listed = self.roles.iter().flatten().map(String::as_str);
        let scoped = self
            .scope
            .iter()
            .flat_map(|s| s.split_ascii_whitespace())
            .filter_map(|s| s.strip_prefix(SCOPE_PREFIX));
        let names: Vec<&str> = listed.chain(scoped).take(MAX_ROLE_ENTRIES + 1).collect();
        if names.len() > MAX_ROLE_ENTRIES {
            return Err(AuthError::Invalid(format!(
                "more than {MAX_ROLE_ENTRIES} roles"
            )));
        }
        Ok(names.into_iter().filter_map(|n| n.parse().ok()).collect())
    }

    /// Whom the verified token speaks for.
    /// Refuses a token living longer than `max_s` seconds (`exp` − `iat`), or one without
    /// `iat`, which a maximum lifetime cannot be checked without.
    pub(crate) fn check_lifetime(&self, max_s: u64) -> Result<(), AuthError> {
        let (Some(exp), Some(iat)) = (self.exp, self.iat) else {
            return Err(AuthError::Invalid(
                "token has no iat claim, which the server's maximum token lifetime needs".into(),
            ));
        };
        let lifetime = exp.saturating_sub(iat);
        if lifetime > max_s {
            return Err(AuthError::Invalid(format!(
                "token lifetime of {lifetime} s exceeds the server's maximum of {max_s} s"
            )));
        }
        Ok(())
    }

    pub(crate) fn into_principal(self) -> Result<Principal, AuthError> {
        if self.sub.is_empty()
            || self.sub.len() > MAX_SUBJECT_LEN
            || self.sub.chars().any(char::is_control)
        {
            return Err(AuthError::Invalid(
                "sub claim is empty, too long or has control characters".into(),
            ));
        }
        let roles = self.roles()?;
        if roles.contains(&Role::Operator) {
            return Ok(Principal::Operator(OperatorAccess { subject: self.sub }));
        }
        let role = if roles.contains(&Role::Admin) {
            Role::Admin
        } else {
            Role::Reader
        };
        let tenant = self.tenant.unwrap_or_default();
        if tenant.is_empty()
            || tenant.len() > MAX_TENANT_LEN
            || tenant.chars().any(char::is_control)
        {
            return Err(AuthError::Invalid(
                "tenant claim is missing, empty, too long or has control characters".into(),
            ));
        }
        Ok(Principal::Tenant(TenantAccess {
            scope: TenantScope::from_verified(TenantId::new(tenant)),
            role,
            subject: self.sub,
        }))
    }
}

/// Whom a verified token speaks for.
#[derive(Debug, Clone)]
pub enum Principal {
    /// One tenant, as reader or admin.
    Tenant(TenantAccess),
    /// A provider operator (cross-tenant).
    Operator(OperatorAccess),
}

impl Principal {
    /// The tenant access, or 403 for an operator (operators use the operator routes only).
    pub fn into_tenant(self) -> Result<TenantAccess, ApiError> {
        match self {
            Principal::Tenant(t) => Ok(t),
            Principal::Operator(_) => Err(ApiError::Forbidden(
                "operator tokens are not accepted on tenant routes; use /v1/operator".into(),
            )),
        }
    }

    /// The operator access, or 403 for a tenant token.
    pub fn into_operator(self) -> Result<OperatorAccess, ApiError> {
        match self {
            Principal::Operator(o) => Ok(o),
            Principal::Tenant(_) => Err(ApiError::Forbidden(
                "this route needs the operator role".into(),
            )),
        }
    }
}

/// A tenant's verified access: its [`TenantScope`] and role. Dereferences to the scope, so it
/// can be passed wherever `&TenantScope` is asked for.
#[derive(Debug, Clone)]
pub struct TenantAccess {
    scope: TenantScope,
    role: Role,
    subject: String,
}

impl TenantAccess {
    /// The scope every store read of this request is confined to.
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    /// `Reader` or `Admin`.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The token's `sub`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// `Ok` for a tenant admin; a 403 problem for a reader. Every handler that creates,
    /// changes or closes something calls it first.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::Forbidden(
                "this request needs the tenant admin role; the token grants reader".into(),
            )),
        }
    }
}

impl Deref for TenantAccess {
    type Target = TenantScope;

    fn deref(&self) -> &TenantScope {
        &self.scope
    }
}

/// A provider operator's verified access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorAccess {
    subject: String,
}

impl OperatorAccess {
    /// The token's `sub` (operators are rate-limited by it).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// Verifies the request's bearer token, then spends one request of the caller's rate limit
/// (tenant tokens by tenant, operator tokens by subject). 401 for a bad token, 429 when the
/// budget is spent. REST extractors and the gRPC adapter both come through here.
pub(crate) async fn authenticate(
    state: &ApiState,
    headers: &axum::http::HeaderMap,
) -> Result<Principal, ApiError> {
    let principal = state
        .verifier
        .verify_headers(headers)
        .await
        .map_err(|err| {
            tracing::debug!(reason = ?err, "token refused");
            crate::metrics::auth_refused(&err);
            ApiError::Unauthorized(err)
        })?;
    if let Some(limiter) = &state.rate_limiter {
        limiter.check(&principal).inspect_err(|_| {
            crate::metrics::rate_limited(match &principal {
                Principal::Tenant(t) => t.role().as_str(),
                Principal::Operator(_) => Role::Operator.as_str(),
            });
        })?;
    }
    Ok(principal)
}

/// Extractor: the tenant access from a verified `Authorization: Bearer …` token, and from
/// nothing else. 401 without a valid token, 403 for an operator token, 429 when the tenant's
/// rate limit is spent.
///
/// `.0` is a [`TenantAccess`], which dereferences to the [`TenantScope`] handlers pass to the
/// service layer.
#[derive(Debug, Clone)]
pub struct AuthenticatedTenant(pub TenantAccess);

impl AuthenticatedTenant {
    /// The tenant scope.
    pub fn scope(&self) -> &TenantScope {
        self.0.scope()
    }

    /// `Reader` or `Admin`.
    pub fn role(&self) -> Role {
        self.0.role()
    }

    /// `Ok` for a tenant admin; a 403 problem otherwise.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.0.require_admin()
    }
}

impl<S> FromRequestParts<S> for AuthenticatedTenant
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ApiState::from_ref(state);
        let access = authenticate(&state, &parts.headers).await?.into_tenant()?;
        Ok(AuthenticatedTenant(access))
    }
}

/// Extractor: a verified provider-operator token. 401 without a valid token, 403 for a tenant
/// token, 429 when the operator's rate limit is spent.
#[derive(Debug, Clone)]
pub struct AuthenticatedOperator(pub OperatorAccess);

impl<S> FromRequestParts<S> for AuthenticatedOperator
where
    ApiState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = ApiState::from_ref(state);
        let access = authenticate(&state, &parts.headers)
            .await?
            .into_operator()?;
        Ok(AuthenticatedOperator(access))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(tenant: Option<&str>, roles: Option<&[&str]>, scope: Option<&str>) -> GrantClaims {
        GrantClaims {
            sub: "someone".into(),
            tenant: tenant.map(Into::into),
            roles: roles.map(|r| r.iter().map(|s| s.to_string()).collect()),
            scope: scope.map(Into::into),
            exp: None,
            iat: None,
        }
    }

    fn tenant_role(c: GrantClaims) -> Role {
        match c.into_principal().unwrap() {
            Principal::Tenant(t) => t.role(),
            Principal::Operator(_) => Role::Operator,
        }
    }

    #[test]
    fn a_token_without_roles_is_a_reader() {
        assert_eq!(tenant_role(claims(Some("acme"), None, None)), Role::Reader);
        assert_eq!(
            tenant_role(claims(Some("acme"), Some(&[]), None)),
            Role::Reader
        );
        assert_eq!(
            tenant_role(claims(Some("acme"), Some(&["owner", "ADMIN"]), None)),
            Role::Reader
        );
    }

    #[test]
    fn roles_come_from_the_roles_claim_and_prefixed_scopes() {
        assert_eq!(
            tenant_role(claims(Some("acme"), Some(&["reader", "admin"]), None)),
            Role::Admin
        );
        assert_eq!(
            tenant_role(claims(Some("acme"), None, Some("openid wattprint:admin"))),
            Role::Admin
        );
        // A bare "admin" scope is someone else's.
        assert_eq!(
            tenant_role(claims(Some("acme"), None, Some("openid admin"))),
            Role::Reader
        );
        assert_eq!(
            tenant_role(claims(None, Some(&["operator"]), None)),
            Role::Operator
        );
    }

    #[test]
    fn operators_ignore_the_tenant_claim_and_tenants_need_one() {
        match claims(Some("acme"), Some(&["admin", "operator"]), None)
            .into_principal()
            .unwrap()
        {
            Principal::Operator(o) => assert_eq!(o.subject(), "someone"),
            other => panic!("{other:?}"),
        }
        for tenant in [None, Some(""), Some("a\u{0}b")] {
            assert!(matches!(
                claims(tenant, Some(&["admin"]), None).into_principal(),
                Err(AuthError::Invalid(_))
            ));
        }
        let many: Vec<&str> = std::iter::repeat_n("x", MAX_ROLE_ENTRIES + 1).collect();
        assert!(claims(Some("acme"), Some(&many), None)
            .into_principal()
            .is_err());
    }

    #[test]
    fn only_admins_pass_require_admin_and_operators_are_kept_apart() {
        let reader = claims(Some("acme"), None, None)
            .into_principal()
            .unwrap()
            .into_tenant()
            .unwrap();
        assert_eq!(
            reader.require_admin().unwrap_err().status(),
            axum::http::StatusCode::FORBIDDEN
        );
        assert_eq!(reader.tenant(), &TenantId::from("acme"));
        let admin = claims(Some("acme"), Some(&["admin"]), None)
            .into_principal()
            .unwrap();
        assert!(admin.clone().into_tenant().unwrap().require_admin().is_ok());
        assert_eq!(
            admin.into_operator().unwrap_err().status(),
            axum::http::StatusCode::FORBIDDEN
        );
        let op = claims(None, Some(&["operator"]), None)
            .into_principal()
            .unwrap();
        assert_eq!(
            op.into_tenant().unwrap_err().status(),
            axum::http::StatusCode::FORBIDDEN
        );
    }
}
