//! The query API's accept loop: hyper connections (HTTP/1.1 or HTTP/2 from the preface) over
//! the axum router, with the limits `axum::serve` lacks — at most `max_connections` open at
//! once (further ones wait in the listen backlog), a connection that sends no complete request
//! head within `header_read_timeout` is closed (slowloris), HTTP/2 keepalive pings drop
//! vanished peers — and graceful shutdown: stop accepting, let requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

use crate::routes::router;
use crate::ApiState;

/// Serves `state`'s router, with `extra` routes beside it, on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish their requests.
pub(crate) async fn run(
    listener: TcpListener,
    state: ApiState,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    // The peer address reaches the handlers (per-IP limits of unauthenticated answers).
    let mut make = router(state)
        .merge(extra)
        .into_make_service_with_connect_info::<SocketAddr>();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let svc = make.call(addr).await.unwrap_or_else(|e| match e {});
        let (stop_rx, open_rx) = (stop_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            serve_connection(io, TowerToHyperService::new(svc), limits, stop_rx).await;
            drop((permit, open_rx));
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    // Every connection task holds a receiver: closed once the last one is done.
    open_tx.closed().await;
    Ok(())
}

async fn serve_connection<S>(
    io: TcpStream,
    svc: S,
    limits: crate::ApiLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    // hyper's HTTP/1 header timeout starts once it knows the protocol; a peer that sends
    // nothing at all is closed here.
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.header_read_timeout, io.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        _ => {
            tracing::debug!("connection closed: no request within the header read timeout");
            return;
        }
    }
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}
