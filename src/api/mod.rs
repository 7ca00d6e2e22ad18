//! The HTTP API (SPEC §5): push ingest, incidents, acknowledgement links,
//! health and metrics.
//!
//! [`router`] builds the routes over an [`ApiState`]; handlers talk to the
//! core through its command channel (writes, answered after the commit)
//! and read incidents straight from the store. Errors are
//! `{"error": "..."}` with the status of SPEC §5; internal details are
//! logged, not shown.

pub mod auth;
mod incidents;
pub mod ingest;
pub mod links;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

use crate::config::Scope;
use crate::daemon::Shared;
use crate::daemon::core::{Command, Receipt, Status};
use crate::engine::{AlarmInput, AlarmSeverity, EngineError, Event, RejectReason, Source};
use crate::metrics::Metrics;
use crate::store::Store;

pub use auth::{Auth, token_hash};

/// Largest body of an alarm or a report.
const ALARM_BODY_LIMIT: usize = 64 * 1024;
/// Largest Alertmanager webhook body (it batches many alerts).
const ALERTMANAGER_BODY_LIMIT: usize = 1024 * 1024;

/// What the handlers share.
pub struct ApiState<S: Store> {
    pub store: S,
    pub core: mpsc::Sender<Command>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<Status>,
    pub shared: Arc<Shared>,
}

impl<S: Store + Clone> Clone for ApiState<S> {
    fn clone(&self) -> Self {
        ApiState {
            store: self.store.clone(),
            core: self.core.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            shared: self.shared.clone(),
        }
    }
}

/// The routes.
pub fn router<S: Store + Clone + 'static>(state: ApiState<S>) -> Router {
    Router::new()
        .route(
            "/api/v1/alarms",
            post(post_alarm::<S>).layer(DefaultBodyLimit::max(ALARM_BODY_LIMIT)),
        )
        .route(
            "/api/v1/alertmanager",
            post(post_alertmanager::<S>).layer(DefaultBodyLimit::max(ALERTMANAGER_BODY_LIMIT)),
        )
        .route(
            "/api/v1/reports",
            post(post_report::<S>).layer(DefaultBodyLimit::max(ALARM_BODY_LIMIT)),
        )
        .route("/api/v1/incidents", get(list_incidents::<S>))
        .route("/api/v1/incidents/{id}", get(get_incident::<S>))
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
        Ok(self.shared.auth().check(header, scope, from.0)?)
    }

    /// The body, or 413 for one over the route's limit (kept as rejected).
    async fn body(
        &self,
        body: Result<Bytes, BytesRejection>,
        source: Source,
    ) -> Result<Bytes, ApiError> {
        match body {
            Ok(b) => Ok(b),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let detail = "request body over the limit".to_owned();
                self.reject(source, RejectReason::Oversized, detail.clone(), Vec::new())
                    .await;
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, detail))
            }
            Err(e) => Err(ApiError::bad(format!("cannot read the body: {e}"))),
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

    /// Keeps and counts a rejection, waiting until it is stored.
    async fn reject(&self, source: Source, reason: RejectReason, detail: String, raw: Vec<u8>) {
        let (reply, done) = oneshot::channel();
        let sent = self
            .core
            .send(Command::Reject {
                source,
                reason,
                detail,
                raw,
                reply,
            })
            .await;
        if sent.is_ok() {
            let _ = done.await;
        }
    }

    /// Hands an event to the core; answers once it is committed.
    async fn input(&self, event: Event, source: Source) -> Result<Receipt, ApiError> {
        let (reply, done) = oneshot::channel();
        self.core
            .send(Command::Input {
                event,
                source,
                received: Instant::now(),
                reply,
            })
            .await
            .map_err(|_| ApiError::unavailable())?;
        match done.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(EngineError::UnknownIncident(id))) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no incident {id}"),
            )),
            Ok(Err(EngineError::Resolved(id))) => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("incident {id} is resolved"),
            )),
            Err(_) => Err(ApiError::unavailable()),
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such path")
}

async fn post_alarm<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    st.authorize(&headers, Scope::Ingest, &from)?;
    let body = st.body(body, Source::Http).await?;
    let alarm = st.parse(Source::Http, &body, ingest::parse_alarm).await?;
    let receipt = st.input(Event::Alarm(alarm), Source::Http).await?;
    if let Some((_, detail)) = receipt.rejected {
        return Err(ApiError::bad(detail));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": receipt.seq }))))
}

async fn post_alertmanager<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    st.authorize(&headers, Scope::Ingest, &from)?;
    let body = st.body(body, Source::Http).await?;
    let alerts = st
        .parse(Source::Http, &body, ingest::parse_alertmanager)
        .await?;
    let mut accepted = 0;
    let mut refused = Vec::new();
    for alert in alerts {
        match alert {
            Ok(a) => {
                let receipt = st.input(Event::Alarm(a), Source::Http).await?;
                match receipt.rejected {
                    None => accepted += 1,
                    Some((_, detail)) => refused.push(detail),
                }
            }
            Err(bad) => {
                st.reject(Source::Http, bad.reason, bad.detail.clone(), Vec::new())
                    .await;
                refused.push(bad.detail);
            }
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
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = st.authorize(&headers, Scope::Ingest, &from)?;
    let body = st.body(body, Source::Manual).await?;
    let report = st
        .parse(Source::Manual, &body, ingest::parse_report)
        .await?;
    let kind = {
        let cat = st.shared.catalogue();
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
    let (reply, done) = oneshot::channel();
    st.core
        .send(Command::Report {
            alarm,
            expected: report.expected,
            received: Instant::now(),
            reply,
        })
        .await
        .map_err(|_| ApiError::unavailable())?;
    let receipt = match done.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(ApiError::bad(e.to_string())),
        Err(_) => return Err(ApiError::unavailable()),
    };
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
    let engine = if st.status.running.load(Ordering::Relaxed) {
        "running"
    } else {
        "stopped"
    };
    let mqtt = match st.status.mqtt.load(Ordering::Relaxed) {
        Status::MQTT_NONE => "not configured",
        Status::MQTT_UP => "connected",
        _ => "disconnected",
    };
    let ready = store == "ok" && engine == "running" && mqtt != "disconnected";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({ "ready": ready, "store": store, "engine": engine, "mqtt": mqtt })),
    )
        .into_response()
}

async fn metrics<S: Store + Clone + 'static>(
    State(st): State<ApiState<S>>,
    from: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !st.shared.metrics_public() {
        st.authorize(&headers, Scope::Read, &from)?;
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
        .into_response())
}
