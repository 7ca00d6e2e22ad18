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

use super::probe::{MAX_BODY, body_too_long, error_text, failed};
use crate::USER_AGENT;
use crate::engine::ProbeResult;

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
