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

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, error};

/// How long a client may take to send a request line and its headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after accepting failed for
/// another reason than the one connection (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop` is cancelled, then stops
/// accepting, lets the requests in flight finish (connections close after
/// their current response) and returns when every connection is closed.
/// Handlers see the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
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
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let mut conn = pin!(
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            );
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
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
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
