//! The `http://` probes' client: hyper-util's pooled client straight, not
//! through reqwest.
//!
//! On loopback a probe's request costs less than reqwest's layers around it
//! (its request builder, header merging, redirect and timeout wrappers, the
//! URL re-parsed into a URI on every send); with thousands of probes those
//! layers were a fifth of the daemon's CPU. Underneath reqwest sits the
//! same client, so the connections behave as before: kept alive and reused
//! per host and port, idle ones dropped after 90 s, and a request that a
//! reused connection lost before it was sent (the server had closed it)
//! sent again on a fresh one instead of failing the probe.
//!
//! What the plain client does not do goes to reqwest, as before: `https://`
//! (rustls), URLs with credentials (reqwest turns them into basic
//! authentication), and redirects (reqwest follows them with its policy,
//! Referer and loop detection; a redirecting target is asked once more
//! through reqwest, so its outcome is exactly reqwest's).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::Url;
use url::Position;

use crate::USER_AGENT;
use crate::engine::ProbeResult;

/// The most of a response body a probe reads; a longer body is an error.
pub const MAX_BODY: usize = 1024 * 1024;

/// The pooled client for `http://` probes.
pub(super) type Plain = Client<HttpConnector, Empty<Bytes>>;

/// What reqwest sets by default, so that the endpoints see the same
/// connections: no Nagle delay, TCP keep-alive after 15 s idle, idle
/// connections closed after 90 s.
pub(super) fn client() -> Plain {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(15)));
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// The URI the plain client sends to, for a URL it can serve alone: an
/// `http://` one without credentials. The fragment is the client's own
/// and never sent.
pub(super) fn plain_uri(url: &Url) -> Option<Uri> {
    if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url[..Position::AfterQuery].parse().ok()
}

/// Statuses reqwest follows when they carry a Location.
fn redirects(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// Why a plain request did not end in a probe result: the target
/// redirects, and reqwest is to follow it.
pub(super) struct Redirect;

/// A GET of `uri`, its body read up to [`MAX_BODY`], as
/// `probe::fetch_unbounded` does it through reqwest: the same headers
/// (User-Agent, `Accept: */*`, Host from the URI), the same results and
/// error texts.
pub(super) async fn fetch(
    client: &Plain,
    uri: &Uri,
    needs_body: bool,
) -> Result<ProbeResult, Redirect> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = uri.clone();
    let headers = request.headers_mut();
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(e) => return Ok(failed(None, error_text(&e, e.is_connect(), false))),
    };
    if redirects(response.status()) && response.headers().contains_key(header::LOCATION) {
        return Err(Redirect);
    }
    let status = Some(response.status().as_u16());
    let too_long = |status| {
        Ok(if needs_body {
            failed(status, body_too_long())
        } else {
            ProbeResult {
                status,
                ..ProbeResult::default()
            }
        })
    };
    let mut body = response.into_body();
    if hyper::body::Body::size_hint(&body)
        .exact()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return too_long(status);
    }
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                // Trailers are not body: reqwest skips them too.
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                if read.len().saturating_add(chunk.len()) > MAX_BODY {
                    return too_long(status);
                }
                read.extend_from_slice(&chunk);
            }
            Err(e) => {
                return Ok(failed(
                    status,
                    format!("reading body: {}", error_text(&e, false, false)),
                ));
            }
        }
    }
    Ok(ProbeResult {
        status,
        body: Some(read),
        ..ProbeResult::default()
    })
}

pub(super) fn failed(status: Option<u16>, error: String) -> ProbeResult {
    ProbeResult {
        status,
        ..ProbeResult::failed(error)
    }
}

pub(super) fn body_too_long() -> String {
    format!("body over {}", byte_size(MAX_BODY))
}

/// `1 MiB`, `64 KiB` or `100 bytes`.
pub(super) fn byte_size(n: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// The text of a failed request, for an error of either client: the known kind of the
/// deepest I/O error in the chain, else the last error of the chain (the
/// one that says what went wrong), marked as a connect or redirect error.
pub(super) fn error_text(
    e: &(dyn std::error::Error + 'static),
    connect: bool,
    redirect: bool,
) -> String {
    if let Some(io) = innermost::<io::Error>(e) {
        let known = match io.kind() {
            io::ErrorKind::ConnectionRefused => Some("connection refused"),
            io::ErrorKind::ConnectionReset => Some("connection reset"),
            io::ErrorKind::ConnectionAborted => Some("connection aborted"),
            io::ErrorKind::HostUnreachable => Some("host unreachable"),
            io::ErrorKind::NetworkUnreachable => Some("network unreachable"),
            io::ErrorKind::UnexpectedEof => Some("connection closed"),
            _ => None,
        };
        if let Some(text) = known {
            return text.to_owned();
        }
    }
    let cause = root_cause(e);
    if redirect {
        format!("redirect: {cause}")
    } else if connect {
        format!("connect: {cause}")
    } else {
        cause
    }
}

/// The deepest error of type `T` in the chain, `e` included.
fn innermost<'e, T: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e T> {
    let mut found = None;
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<T>() {
            found = Some(t);
        }
        source = err.source();
    }
    found
}

/// The last error in the chain, `e` itself when it has no source.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(err) = last.source() {
        last = err;
    }
    last.to_string()
}
