//! The HTTP server under the routes: HTTP/1.1 over hyper, with a header
//! read timeout, the client's address for each request, and a graceful
//! stop.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout never runs
//! there and a client that sends half a request line holds its connection
//! for as long as it likes. Here every connection gets
//! [`HEADER_READ_TIMEOUT`] for each request head, including the wait for
//! the next request on a kept-alive connection; bodies are bounded by the
//! handlers (`super::BODY_READ_TIMEOUT`).
//!
//! With a TLS configuration the listener serves HTTPS only (rustls): each
//! connection's handshake must finish within [`TLS_HANDSHAKE_TIMEOUT`], and
//! a failed one is logged at debug and ends that connection only. The
//! certificate is read from the configuration's resolver at each
//! handshake, so a reload that replaces it takes effect for the
//! connections after it.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::middleware::AddExtension;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, error};

/// How long a client may take to send a request line and its headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after accepting failed for
/// another reason than the one connection (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop` is cancelled, then stops
/// accepting, lets the requests in flight finish (connections close after
/// their current response) and returns when every connection is closed.
/// Handlers see the client's address as `ConnectInfo<SocketAddr>`.
/// With `tls`, every connection is HTTPS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) {
    let tls = tls.map(TlsAcceptor::from);
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => {
                    debug!(error = %e, "a connection failed before it was accepted");
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "cannot accept connections; trying again");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    }
                }
            },
        };
        let Ok(service) = make.call(peer).await;
        let stop = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(stream, service, peer, stop).await;
            };
            let handshake = tokio::select! {
                () = stop.cancelled() => return,
                h = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)) => h,
            };
            match handshake {
                Ok(Ok(stream)) => serve_connection(stream, service, peer, stop).await,
                Ok(Err(e)) => debug!(client = %peer, error = %e, "tls handshake failed"),
                Err(_) => debug!(
                    client = %peer,
                    "tls handshake not done within {TLS_HANDSHAKE_TIMEOUT:?}; closed"
                ),
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// The router as one connection sees it: with the client's address.
type PerConnection = AddExtension<Router, ConnectInfo<SocketAddr>>;

/// Serves HTTP/1.1 on one connection, plain or TLS, until the client
/// closes it or `stop` asks it to finish its current response.
async fn serve_connection<I>(
    io: I,
    service: PerConnection,
    peer: SocketAddr,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let mut conn =
        pin!(builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)));
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(client = %peer, error = %e, "http connection ended with an error");
    }
}

/// Errors of one incoming connection, not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
