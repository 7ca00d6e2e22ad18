//! The HTTP API (SPEC §5): push ingest, incidents, acknowledgement links,
//! health and metrics.
//!
//! [`router`] builds the routes over an [`ApiState`]; handlers talk to the
//! core through its command channel (writes, answered after the commit)
//! and read incidents straight from the store. Errors are
//! `{"error": "..."}` with the status of SPEC §5; internal details are
//! logged, not shown. [`server::serve`] runs the routes.
//!
//! Nothing waits on a client or the core without a bound: a handler checks
//! the token before it reads a byte of the body, then reads the body up to
//! the route's limit within [`BODY_READ_TIMEOUT`], and gives up on the core
//! after [`CORE_TIMEOUT`].

pub mod actions;
pub mod auth;
pub mod incidents;
pub mod ingest;
pub mod links;
pub mod openapi;
pub mod server;
mod services;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::error;

use crate::catalogue::Catalogue;
use crate::config::{Config, Scope};
use crate::core::{CoreHandle, NoAnswer, Receipt, Refused, Status};
use crate::engine::{AlarmInput, AlarmSeverity, EngineError, Event, RejectReason, Source};
use crate::links::LinkSettings;
use crate::metrics::Metrics;
use crate::store::Store;

pub use auth::{Auth, token_hash};

/// Largest body of an alarm or a report.
const ALARM_BODY_LIMIT: usize = 64 * 1024;
/// Largest Alertmanager webhook body (it batches many alerts).
const ALERTMANAGER_BODY_LIMIT: usize = 1024 * 1024;
/// How long a client may take to send a body once its headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handler waits for the core to take a command and answer it
/// (a commit that keeps failing holds every answer back).
pub const CORE_TIMEOUT: Duration = crate::core::ANSWER_WITHIN;

/// What the handlers share.
pub struct ApiState<S: Store> {
    pub store: S,
    pub core: CoreHandle,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    /// The settings of the running config; a reload sends new ones.
    pub config: watch::Receiver<Arc<ApiConfig>>,
}

/// What the API reads of the config.
pub struct ApiConfig {
    pub catalogue: Arc<Catalogue>,
    pub auth: Auth,
    pub metrics_public: bool,
    pub links: Arc<LinkSettings>,
    /// Whether the listener serves HTTPS (`[server] tls_cert` and `tls_key`).
    pub tls: bool,
}

impl ApiConfig {
    pub fn new(config: &Config, catalogue: Arc<Catalogue>, links: Arc<LinkSettings>) -> ApiConfig {
        ApiConfig {
            catalogue,
            auth: Auth::new(&config.tokens),
            metrics_public: config.server.metrics_public,
            links,
            tls: config.server.tls_cert.is_some() && config.server.tls_key.is_some(),
        }
    }
}

impl<S: Store + Clone> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        ApiState {
            store: self.store.clone(),
            core: self.core.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            config: self.config.clone(),
        }
    }
}

/// The API's routes (the pages' join them in [`crate::web::app`]).
pub fn router<S: Store + Clone + 'static>(state: ApiState<S>) -> Router {
    Router::new()
        .route("/api/v1/alarms", post(post_alarm::<S>))
        .route("/api/v1/alertmanager", post(post_alertmanager::<S>))
        .route("/api/v1/reports", post(post_report::<S>))
        .route("/api/v1/incidents", get(list_incidents::<S>))
        .route("/api/v1/incidents/{id}", get(get_incident::<S>))
        .route(
            "/api/v1/incidents/{id}/ack",
            post(actions::routes::ack::<S>),
        )
        .route(
            "/api/v1/incidents/{id}/eta",
            post(actions::routes::eta::<S>),
        )
        .route(
            "/api/v1/incidents/{id}/notes",
            post(actions::routes::notes::<S>),
        )
        .route(
            "/api/v1/incidents/{id}/level",
            post(actions::routes::level::<S>),
        )
        .route(
            "/api/v1/incidents/{id}/resolve",
            post(actions::routes::resolve::<S>),
        )
        .route("/api/v1/services", get(services::list::<S>))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/a/{link}", get(links::show::<S>).post(links::follow::<S>))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .fallback(not_found)
        .with_state(state)
}

/// An error answer: `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// The answer's status (the web UI words its own pages).
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// Logs the details; the client learns only that it failed.
    fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
        error!(error = %e, "{what}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    fn unavailable() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "beredskab is shutting down; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<auth::AuthError> for ApiError {
    fn from(e: auth::AuthError) -> ApiError {
        let status = match e {
            auth::AuthError::Missing | auth::AuthError::Unknown => StatusCode::UNAUTHORIZED,
            auth::AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            auth::AuthError::TooMany => StatusCode::TOO_MANY_REQUESTS,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The client's address, when the server was given it.
pub struct ClientAddr(Option<IpAddr>);

impl<St: Send + Sync> FromRequestParts<St> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

impl From<NoAnswer> for ApiError {
    fn from(e: NoAnswer) -> ApiError {
        match e {
            NoAnswer::Stopped => ApiError::unavailable(),
            NoAnswer::TimedOut => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the engine did not answer within {} s; what was sent may still be \
                     taken in, so check before sending it again",
                    CORE_TIMEOUT.as_secs()
                ),
            ),
        }
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge,
    TimedOut,
    Read(axum::Error),
}

/// Reads a body of at most `limit` bytes within `within`. A declared
/// length over the limit is refused before anything is read.
pub(crate) async fn read_limited(
    body: Body,
    limit: usize,
    within: Duration,
) -> Result<Bytes, BodyError> {
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    if body.size_hint().lower() > limit_u64 {
        return Err(BodyError::TooLarge);
    }
    let read = async move {
        let mut body = body;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
                continue; // trailers
            };
            if buf.len().saturating_add(data.len()) > limit {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

impl<S: Store> ApiState<S> {
    /// The newest settings.
    pub(crate) fn settings(&self) -> Arc<ApiConfig> {
        self.config.borrow().clone()
    }
}

impl<S: Store + Clone + 'static> ApiState<S> {
    fn authorize(
        &self,
        headers: &HeaderMap,
        scope: Scope,
        from: &ClientAddr,
    ) -> Result<auth::Caller, ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(self.settings().auth.check(header, scope, from.0)?)
    }

    /// Reads the body of a request already let in: 413 for one over
    /// `limit` (kept as rejected), 408 for one that does not arrive within
    /// [`BODY_READ_TIMEOUT`].
    async fn body(&self, body: Body, limit: usize, source: Source) -> Result<Bytes, ApiError> {
        match read_limited(body, limit, BODY_READ_TIMEOUT).await {
            Ok(b) => Ok(b),
            Err(BodyError::TooLarge) => {
                let detail = format!("request body over the limit of {limit} bytes");
                self.reject(source, RejectReason::Oversized, detail.clone(), Vec::new())
                    .await;
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, detail))
            }
            Err(BodyError::TimedOut) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            )),
            Err(BodyError::Read(e)) => Err(ApiError::bad(format!("cannot read the body: {e}"))),
        }
    }

    /// Parses a body; bad input is kept as rejected and answered 400 with
    /// what was wrong.
    async fn parse<T>(
        &self,
        source: Source,
        body: &Bytes,
        parse: impl FnOnce(&[u8]) -> Result<T, ingest::BadInput>,
    ) -> Result<T, ApiError> {
        match parse(body) {
            Ok(v) => Ok(v),
            Err(bad) => {
                self.reject(source, bad.reason, bad.detail.clone(), body.to_vec())
                    .await;
                Err(ApiError::bad(bad.detail))
            }
        }
    }

    /// Keeps and counts a rejection, waiting (a bounded time) until it is
    /// stored. The client's answer does not depend on it.
    async fn reject(&self, source: Source, reason: RejectReason, detail: String, raw: Vec<u8>) {
        let refused = Refused {
            source,
            reason,
            detail,
            raw,
        };
        let _ = self.core.reject(refused).await;
    }

    /// Hands an event to the core; answers once it is committed.
    async fn input(&self, event: Event, source: Source) -> Result<Receipt, ApiError> {
        self.core.input(event, source).await?.map_err(engine_error)
    }
}

/// An action the engine refused, as an answer.
fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::UnknownIncident(id) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("no incident {id}"))
        }
        EngineError::LinkUsed(id) => ApiError::new(
            StatusCode::CONFLICT,
            format!("this link was used before on incident {id}"),
        ),
        EngineError::Resolved(id) => {
            ApiError::new(StatusCode::CONFLICT, format!("incident {id} is resolved"))
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such path")
}

// The push handlers take the body unread: the token is checked first, so
// a client without one is answered at once, whatever it sends or holds back.

async fn post_alarm<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    st.authorize(&headers, Scope::Ingest, &from)?;
    let body = st.body(body, ALARM_BODY_LIMIT, Source::Http).await?;
    let alarm = st.parse(Source::Http, &body, ingest::parse_alarm).await?;
    let receipt = st.input(Event::Alarm(alarm), Source::Http).await?;
    if let Some((_, detail)) = receipt.rejected {
        return Err(ApiError::bad(detail));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": receipt.seq }))))
}

/// Every alert of a body goes to the core in one command, so they are
/// committed together; alerts that cannot be used are kept as rejected.
/// The answer lists why each refused alert was refused, in body order.
async fn post_alertmanager<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    st.authorize(&headers, Scope::Ingest, &from)?;
    let body = st.body(body, ALERTMANAGER_BODY_LIMIT, Source::Http).await?;
    let alerts = st
        .parse(Source::Http, &body, ingest::parse_alertmanager)
        .await?;
    // Per alert, in order: why it was refused, or None when it went to
    // the engine (whose answers come in the same order).
    let mut unusable: Vec<Option<String>> = Vec::with_capacity(alerts.len());
    let mut bad_alerts = Vec::new();
    let mut events = Vec::new();
    for alert in alerts {
        match alert {
            Ok(a) => {
                unusable.push(None);
                events.push(Event::Alarm(a));
            }
            Err(bad) => {
                unusable.push(Some(bad.detail.clone()));
                bad_alerts.push(bad);
            }
        }
    }
    // The refused alerts and the others go to the core as one command,
    // into one commit.
    let refused = bad_alerts
        .into_iter()
        .map(|bad| Refused {
            source: Source::Http,
            reason: bad.reason,
            detail: bad.detail,
            raw: Vec::new(),
        })
        .collect();
    let results = st.core.inputs(events, refused, Source::Http).await?;
    let mut results = results.into_iter();
    let mut accepted = 0u64;
    let mut refused = Vec::new();
    for why in unusable {
        let outcome = match why {
            Some(detail) => Err(detail),
            None => match results.next() {
                Some(Ok(Receipt { rejected: None, .. })) => Ok(()),
                Some(Ok(Receipt {
                    rejected: Some((_, detail)),
                    ..
                })) => Err(detail),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("the engine gave no answer for this alert".to_owned()),
            },
        };
        match outcome {
            Ok(()) => accepted += 1,
            Err(detail) => refused.push(detail),
        }
    }
    let mut answer = json!({ "accepted": accepted });
    if !refused.is_empty() {
        answer["rejected"] = json!(refused);
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

async fn post_report<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = st.authorize(&headers, Scope::Ingest, &from)?;
    let body = st.body(body, ALARM_BODY_LIMIT, Source::Manual).await?;
    let report = st
        .parse(Source::Manual, &body, ingest::parse_report)
        .await?;
    let kind = {
        let cat = st.settings().catalogue.clone();
        cat.node_id(&report.target)
            .map(|n| cat.node(n).probe_alarm_kind())
    };
    let Some(kind) = kind else {
        let detail = format!("unknown service or component {:?}", report.target);
        st.reject(
            Source::Manual,
            RejectReason::UnknownComponent,
            detail.clone(),
            body.to_vec(),
        )
        .await;
        return Err(ApiError::bad(detail));
    };
    let alarm = AlarmInput {
        component: report.target,
        kind,
        state: crate::engine::AlarmState::Firing,
        severity: AlarmSeverity::Critical,
        source: Source::Manual,
        message: Some(format!(
            "{} ({}): {}",
            report.source_type,
            caller.actor(),
            report.message
        )),
        key: Some(format!("report:{}", report.source_type)),
    };
    let receipt = st
        .core
        .report(alarm, report.expected)
        .await?
        .map_err(|e| ApiError::bad(e.to_string()))?;
    if let Some((_, detail)) = receipt.rejected {
        return Err(ApiError::bad(detail));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": receipt.seq, "incident": receipt.incident })),
    ))
}

#[derive(Deserialize)]
struct ListParams {
    state: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

async fn list_incidents<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    st.authorize(&headers, Scope::Read, &from)?;
    let filter = incidents::parse_filter(p.state.as_deref()).map_err(ApiError::bad)?;
    let limit = match p.limit.as_deref() {
        None => incidents::DEFAULT_LIMIT,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=incidents::MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(format!(
                    "limit {l:?} is not a number from 1 to {}",
                    incidents::MAX_LIMIT
                )));
            }
        },
    };
    let before = match p.before.as_deref() {
        None => None,
        Some(b) => Some(
            b.parse::<u64>()
                .map_err(|_| ApiError::bad(format!("before {b:?} is not an incident id")))?,
        ),
    };
    let rows = st
        .store
        .incidents(filter, limit, before)
        .await
        .map_err(|e| ApiError::internal("listing incidents", e))?;
    Ok(Json(rows.iter().map(incidents::incident_json).collect()))
}

async fn get_incident<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    st.authorize(&headers, Scope::Read, &from)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad(format!("{id:?} is not an incident id")))?;
    match st.store.incident(id).await {
        Ok(Some(d)) => {
            let deliveries = st
                .store
                .deliveries(id)
                .await
                .map_err(|e| ApiError::internal("reading deliveries", e))?;
            Ok(Json(incidents::detail_json(
                &d.incident,
                &d.timeline,
                &deliveries,
            )))
        }
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no incident {id}"),
        )),
        Err(e) => Err(ApiError::internal("reading an incident", e)),
    }
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz<S: Store + Clone + 'static>(State(st): State<ApiState<S>>) -> Response {
    let store = match st.store.ping().await {
        Ok(()) if st.status.store_ok.load(Ordering::Relaxed) => "ok".to_owned(),
        Ok(()) => "commits failing".to_owned(),
        Err(e) => format!("unreachable: {e}"),
    };
    // A core that died leaves `running` as it was, but its channel closes.
    let engine = if st.status.running.load(Ordering::Relaxed) && !st.core.is_closed() {
        "running"
    } else {
        "stopped"
    };
    let mqtt = match st.status.mqtt.load(Ordering::Relaxed) {
        Status::MQTT_NONE => "not configured",
        Status::MQTT_UP => "connected",
        Status::MQTT_SUBSCRIBING => "subscribing",
        _ => "disconnected",
    };
    let ready =
        store == "ok" && engine == "running" && matches!(mqtt, "connected" | "not configured");
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "ready": ready,
            "store": store,
            "engine": engine,
            "mqtt": mqtt,
            "role": match st.status.role.load(Ordering::Relaxed) {
                Status::LEADER => "leader",
                Status::FOLLOWER => "follower",
                _ => "alone",
            },
            "leader": st.status.leads(),
            // Bounded by what is open: resolved incidents live in the store.
            "incidents_in_memory": st.status.incidents_held.load(Ordering::Relaxed),
        })),
    )
        .into_response()
}

async fn metrics<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !st.settings().metrics_public {
        st.authorize(&headers, Scope::Read, &from)?;
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response())
}

#[cfg(test)]
pub(crate) mod tests;
