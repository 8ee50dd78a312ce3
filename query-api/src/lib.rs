//! Wattprint's query API: tenant-scoped REST and gRPC over the [`Store`], on one listener.
//!
//! Every tenant-facing route takes its [`TenantScope`](wattprint_core::TenantScope) from a
//! verified bearer token ([`auth`]) and from nowhere else. The logic lives in [`service`]
//! (pure-ish functions over the store); [`routes`] are thin axum handlers and [`grpc`] a thin
//! tonic adapter over the same functions; [`error`] maps every failure to one RFC 7807 problem
//! document (REST) or the matching gRPC status.
//!
//! Endpoints:
//! - `GET /healthz` (no auth)
//! - `GET /portal/` (no auth for its files): the tenant portal, a static page over the API
//!   below with the caller's token ([`portal`])
//! - `GET /openapi.json` (no auth): the OpenAPI 3.1 document of these routes ([`openapi`])
//! - `GET /v1/instances?limit=&cursor=` (a page at a time, [`workloads::paginate`])
//! - `GET /v1/instances/{id}/series?from=&to=&step=raw|5m|1h|1d` (marginal and [`average`])
//! - `POST /v1/workloads`, `GET /v1/workloads?limit=&cursor=&status=`, `GET /v1/workloads/{id}`
//!   (with footprint and SCI, marginal and average), `PUT /v1/workloads/{id}/labels`,
//!   `POST /v1/workloads/{id}/close` ([`workloads`]: open workloads, labels, closing)
//! - `GET /v1/workloads/{id}/whatif?window_hours=&factor=&basis=actual|forecast`: Flexible
//!   Start and Pause and Resume on the region's actual marginal intensity, or planned on the
//!   forecasts known at the start and judged on actuals ([`whatif`])
//! - `GET /v1/summary?from=&to=`: the tenant's energy and emissions per instance and in total
//!   (a month fits the default range limit)
//! - `GET /v1/restatements?from=&to=`: intervals whose intensity was replaced when better data
//!   arrived (a forecast, nearest actual or average by the actual), with the emissions each
//!   change made and their totals ([`restatements`])
//! - gRPC `wattprint.v1.TenantQuery/{ListInstances,GetInstanceSeries,ListWorkloads,
//!   CreateWorkload,SetWorkloadLabels,CloseWorkload,GetWorkloadFootprint,GetWorkloadWhatIf,
//!   GetTenantSummary,ListRestatements,ListStatements,GetStatement,GetWorkloadEvidence}`
//!   (HTTP/2 with prior knowledge, on the same port), token in the `authorization` metadata
//! - `GET /v1/operator/tenants`, `GET /v1/operator/tenants/{tenant}/summary?from=&to=`,
//!   `GET /v1/operator/statements/{YYYY-MM}.csv|.parquet` and gRPC
//!   `wattprint.v1.OperatorQuery/ExportStatements`: provider operators only, cross-tenant
//!   ([`operator`], [`grpc::operator`])
//!
//! Tokens grant a role ([`auth::access`]): tenant readers read, tenant admins also create,
//! label and close workloads, operators use the operator routes only (403 elsewhere). Each
//! tenant (and operator) has its own rate limit ([`ratelimit`]; 429 with `Retry-After`);
//! answers given without a verified token are limited per client IP ([`iplimit`]); what-ifs
//! have a compute budget per request and a cap per tenant ([`budget`]); [`serve`] caps
//! connections and closes those that send no request head in time.

#![forbid(unsafe_code)]

pub mod auth;
pub mod average;
pub mod budget;
pub mod config;
pub mod error;
pub mod evidence;
pub mod grpc;
pub mod iplimit;
mod metrics;
pub mod openapi;
pub mod operator;
pub mod portal;
pub mod ratelimit;
pub mod restatements;
pub mod routes;
mod server;
pub mod service;
pub mod statements;
pub mod time;
pub mod whatif;
pub mod workloads;

use std::future::Future;
use std::sync::Arc;

use wattprint_core::intensity::{IntensityJoin, SharedJoin};
use wattprint_core::sci::HardwareCatalog;
use wattprint_store::Store;

pub use auth::{
    mint_role_token, mint_token, mint_token_at, AuthConfig, AuthError, AuthenticatedOperator,
    AuthenticatedTenant, Claims, Principal, Role, TenantAccess, TokenVerifier,
};
pub use error::ApiError;
pub use grpc::operator::{operator_grpc_service, GrpcOperatorQuery};
pub use grpc::{grpc_service, GrpcTenantQuery};
pub use iplimit::UnauthenticatedLimiter;
pub use ratelimit::{RateLimit, RateLimiter};
pub use routes::router;

/// Limits that keep one request from reading unbounded amounts of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Longest `to − from` accepted by series queries, summaries, restatements and workloads
    /// (default 31 days).
    pub max_range_ms: i64,
    /// Most points one series response may hold (default 20 000); beyond it the caller is told
    /// to use a coarser step.
    pub max_points: usize,
    /// Most restatement records one response may hold (default 50 000, about a month of one
    /// 8-GPU instance restated forecast → actual, some 30 MB of JSON); beyond it the caller is
    /// told to ask for a shorter range. Never truncated: totals over a partial list would lie.
    pub max_restatements: usize,
    /// Longest a request may take before it is answered `408 Request Timeout` (default 30 s),
    /// so a slow query never holds a connection and a worker indefinitely.
    pub request_timeout: std::time::Duration,
    /// Largest request body accepted (default 64 KiB); a larger one is answered `413`
    /// before it is read.
    pub max_body_bytes: usize,
    /// Most search cells one what-if request may cost ([`budget::whatif_cost_cells`], default
    /// [`budget::DEFAULT_WHATIF_BUDGET_CELLS`]); a costlier one is refused with 422 before
    /// any search runs.
    pub whatif_budget_cells: u64,
    /// What-if requests one tenant may have computing at once (default
    /// [`budget::DEFAULT_WHATIF_PER_TENANT`]); one more is answered 429.
    pub whatif_per_tenant: u32,
    /// How long [`serve`] waits for a connection's request head (default 10 s) before closing
    /// it, so idle or trickling connections (slowloris) cannot pile up.
    pub header_read_timeout: std::time::Duration,
    /// Most connections [`serve`] holds open at once (default 4096); further ones wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_range_ms: 31 * 24 * 3600 * 1000,
            max_points: 20_000,
            max_restatements: 50_000,
            request_timeout: std::time::Duration::from_secs(30),
            max_body_bytes: 64 << 10,
            whatif_budget_cells: budget::DEFAULT_WHATIF_BUDGET_CELLS,
            whatif_per_tenant: budget::DEFAULT_WHATIF_PER_TENANT,
            header_read_timeout: std::time::Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// Shared state of the API: the store, the token verifier, the hardware catalog and limits.
/// Cheap to clone (everything behind `Arc`).
#[derive(Clone)]
pub struct ApiState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) verifier: Arc<TokenVerifier>,
    pub(crate) catalog: Arc<HardwareCatalog>,
    pub(crate) limits: ApiLimits,
    pub(crate) intensity: Option<SharedJoin>,
    pub(crate) rate_limiter: Option<Arc<RateLimiter>>,
    pub(crate) statements: statements::StatementPolicy,
    pub(crate) market: Option<Arc<statements::MarketInstruments>>,
    pub(crate) searches: Arc<budget::TenantSearches>,
    pub(crate) unauthenticated: Option<Arc<UnauthenticatedLimiter>>,
    pub(crate) portal: Arc<portal::PortalSetup>,
}

impl ApiState {
    /// Builds the state. An `auth` with an empty secret verifies no token at all (every
    /// tenant route answers 401) rather than accepting tokens signed with an empty key.
    pub fn new(
        store: Arc<dyn Store>,
        auth: AuthConfig,
        catalog: HardwareCatalog,
        limits: ApiLimits,
    ) -> Self {
        Self {
            store,
            verifier: Arc::new(TokenVerifier::new(&auth)),
            catalog: Arc::new(catalog),
            limits,
            intensity: None,
            rate_limiter: None,
            statements: statements::StatementPolicy::default(),
            market: None,
            searches: Arc::new(budget::TenantSearches::new(limits.whatif_per_tenant)),
            unauthenticated: None,
            portal: Arc::new(portal::PortalSetup::new(vec![], None)),
        }
    }

    /// Lets pages of `origins` (validated origins, e.g. a cloud console) embed the portal in
    /// a frame: its CSP `frame-ancestors`, beside `'self'`.
    pub fn with_portal_frame_ancestors(mut self, origins: &[String]) -> Self {
        let oidc = self.portal.oidc.clone();
        self.portal = Arc::new(portal::PortalSetup::new(origins.to_vec(), oidc));
        self
    }

    /// Lets the portal sign users in through `oidc` (a validated identity provider), and
    /// call its token endpoint (CSP `connect-src`).
    pub fn with_portal_oidc(mut self, oidc: Option<portal::PortalOidc>) -> Self {
        let origins = self.portal.frame_ancestors.clone();
        self.portal = Arc::new(portal::PortalSetup::new(origins, oidc));
        self
    }

    /// Issues statements by `policy` instead of the default (6 h grace, 3 months of
    /// adjustments).
    pub fn with_statement_policy(mut self, policy: statements::StatementPolicy) -> Self {
        self.statements = policy;
        self
    }

    /// Computes market-based emissions from the provider's contractual instruments (checked:
    /// [`statements::MarketInstruments::check`]); without them the column says
    /// `not_configured`.
    pub fn with_market_instruments(mut self, market: statements::MarketInstruments) -> Self {
        self.market = (!market.regions.is_empty()).then(|| Arc::new(market));
        self
    }

    /// What statements are computed from, for the issuer task.
    pub fn statement_inputs(&self) -> statements::StatementInputs {
        statements::StatementInputs {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            join: self.intensity.clone(),
            policy: self.statements,
            market: self.market.clone(),
        }
    }

    /// Replaces the dev-mode verifier built from the `AuthConfig` (e.g. by one checking tokens
    /// against a JWKS, [`TokenVerifier::with_jwks`]).
    pub fn with_verifier(mut self, verifier: TokenVerifier) -> Self {
        self.verifier = Arc::new(verifier);
        self
    }

    /// Limits every tenant (and operator) to `limiter`'s rate, after authentication, on REST
    /// and gRPC alike. Without one, requests are not rate-limited.
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.rate_limiter = Some(Arc::new(limiter));
        self
    }

    /// Limits answers given without a verified token (401s, health, OpenAPI, unknown paths)
    /// per client IP ([`iplimit`]); needs the connection's address, which [`serve`] provides.
    /// Without one, they are not limited.
    pub fn with_unauthenticated_limiter(mut self, limiter: UnauthenticatedLimiter) -> Self {
        self.unauthenticated = Some(Arc::new(limiter));
        self
    }

    /// Adds the intensity join the what-ifs run on (the enricher's: same regions, same rule).
    /// Without one, `/v1/workloads/{id}/whatif` answers 503.
    pub fn with_intensity(mut self, join: impl Into<SharedJoin>) -> Self {
        self.intensity = Some(join.into());
        self
    }

    /// The store behind the API.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The token verifier.
    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// The hardware catalog used for embodied emissions.
    pub fn catalog(&self) -> &HardwareCatalog {
        &self.catalog
    }

    /// The intensity join of the what-ifs as it is now; 503 when the server has none.
    pub fn intensity_join(&self) -> Result<Arc<IntensityJoin>, ApiError> {
        self.intensity
            .as_ref()
            .map(SharedJoin::snapshot)
            .ok_or_else(|| {
                ApiError::Unavailable("this query API has no intensity sources configured".into())
            })
    }

    /// What statements are computed from: the store, the catalog and `join` (a snapshot of
    /// [`Self::intensity_join`], `None` without intensity sources).
    pub(crate) fn statement_sources<'a>(
        &'a self,
        join: Option<&'a IntensityJoin>,
    ) -> statements::Sources<'a> {
        statements::Sources {
            store: self.store.as_ref(),
            catalog: &self.catalog,
            join,
            market: self.market.as_deref(),
        }
    }

    /// The request limits.
    pub fn limits(&self) -> ApiLimits {
        self.limits
    }
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("catalog_models", &self.catalog.models.len())
            .field("limits", &self.limits)
            .field("intensity", &self.intensity.is_some())
            .field("rate_limit", &self.rate_limiter.as_ref().map(|l| l.limit()))
            .field(
                "unauthenticated_limit",
                &self.unauthenticated.as_ref().map(|l| l.limit()),
            )
            .finish_non_exhaustive()
    }
}

/// Serves the API on `listener` until `shutdown` resolves (graceful: stops accepting, lets
/// requests in flight finish, then returns). Each connection speaks HTTP/1.1 or HTTP/2
/// (detected from its preface, so gRPC clients using cleartext HTTP/2 with prior knowledge
/// work); REST and gRPC share the port. At most [`ApiLimits::max_connections`] are open at
/// once, and one without a request head within [`ApiLimits::header_read_timeout`] is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, axum::Router::new(), shutdown).await
}

/// [`serve`], with `extra` routes (the process's `/metrics` and `/readyz`) beside the API's.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: ApiState,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "query api listening");
    }
    if !state.verifier.is_configured() {
        tracing::warn!(
            "no token secret or key set configured: every authenticated request will be refused"
        );
    }
    server::run(listener, state, extra, shutdown).await?;
    tracing::info!("query api stopped");
    Ok(())
}
