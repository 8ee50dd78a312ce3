//! The metrics listener: `/metrics` (Prometheus text), `/healthz` (liveness: the process's
//! main loops turn, see [`super::liveness`]) and `/readyz`
//! (readiness: every registered check passes, else 503 with a JSON body naming what is not).

use crate::Shutdown;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Check = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What `/readyz` checks: named checks, each `Ok` when that dependency is usable.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Readiness")
    }
}

impl Readiness {
    /// No checks yet: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an async check named `name` (e.g. `store`, `bus`, `intensity`).
    pub fn add<F, Fut>(&self, name: &str, check: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(check()));
        if let Ok(mut checks) = self.checks.lock() {
            checks.push((name.to_owned(), check));
        }
    }

    /// Adds a check that passes once the returned flag is set (a stream opened, a key set
    /// loaded); clearing it makes the process unready again.
    pub fn flag(&self, name: &str, why: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        self.add(name, move || {
            let ok = seen.load(Ordering::Relaxed);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(why.to_owned())
                }
            }
        });
        flag
    }

    /// Runs every check; the failures by name.
    pub async fn failures(&self) -> Vec<(String, String)> {
        let checks: Vec<(String, Check)> = match self.checks.lock() {
            Ok(c) => c.clone(),
            Err(_) => return vec![("readiness".into(), "poisoned".into())],
        };
        let mut failed = Vec::new();
        for (name, check) in checks {
            let outcome = tokio::time::timeout(std::time::Duration::from_secs(2), check()).await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failed.push((name, why)),
                Err(_) => failed.push((name, "check timed out".to_owned())),
            }
        }
        failed
    }
}

/// `/metrics`, `/healthz` and `/readyz`, the metrics listener's routes.
pub fn router(readiness: Readiness) -> Router {
    routes(readiness).route("/healthz", get(healthz))
}

/// Liveness: `ok`, or 503 naming the main loops that stopped turning ([`super::liveness`]).
async fn healthz() -> Response {
    match super::liveness::check() {
        Ok(()) => "ok".into_response(),
        Err(stale) => (StatusCode::SERVICE_UNAVAILABLE, stale).into_response(),
    }
}

/// `/metrics` and `/readyz` alone, to merge into a router that has its own `/healthz`.
pub fn routes(readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .with_state(readiness)
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        super::render(),
    )
        .into_response()
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let failed = readiness.failures().await;
    if failed.is_empty() {
        return (
            StatusCode::OK,
            axum::Json(serde_json::json!({"ready": true})),
        )
            .into_response();
    }
    let not_ready: serde_json::Map<String, serde_json::Value> = failed
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let body = serde_json::json!({"ready": false, "not_ready": not_ready});
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// Binds `listen` and serves [`router`] until `shutdown`; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    readiness: Readiness,
    shutdown: Shutdown,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "metrics listener up");
    let app = router(readiness);
    let stop = shutdown.wait();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(%error, "metrics listener failed");
        }
    });
    Ok(bound)
}
