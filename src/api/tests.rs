//! The routes over a real core and a real SQLite store in a temp
//! folder, called without a server; bodies that trickle or never come
//! are made by hand.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::task::{Context, Poll};

use axum::http::Request;
use hyper::body::{Frame, SizeHint};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use super::*;
use crate::catalogue::Catalogue;
use crate::config::load_str;
use crate::core::{Core, Inbox, wall_now};
use crate::store::{RejectedRow, SqliteStore};

const INGEST: &str = "unit-ingest-token";
const ONCALL: &str = "unit-oncall-token";
const VIEWER: &str = "unit-viewer-token";

fn config() -> String {
    format!(
        r#"
[site]
name = "Enhedstest"
language = "en"
timezone = "Europe/Copenhagen"

[[token]]
name = "sensors"
sha256 = "{}"
scopes = ["ingest"]

[[token]]
name = "vagttelefon"
sha256 = "{}"
scopes = ["read", "ack"]

[[token]]
name = "skaerm"
sha256 = "{}"
scopes = ["read"]

[[component]]
id = "srv-1"
kind = "server"
building = "raadhus"

[[service]]
id = "web"
name = "Borgerportal"
criticality = "critical"
depends_on = ["srv-1"]

[[meeting_place]]
name = "C335"
building = "raadhus"
priority = 1

[[meeting_place]]
name = "Annexet"
building = "annex"
priority = 2
"#,
        token_hash(INGEST),
        token_hash(ONCALL),
        token_hash(VIEWER),
    )
}

/// A temp folder, removed at the end of the test (the core's tests use
/// it too).
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "beredskab-unit-test-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Harness {
    pub(crate) state: ApiState<SqliteStore>,
    stop: CancellationToken,
    core: JoinHandle<Result<(), crate::core::CoreError>>,
    _dir: TempDir,
}

impl Harness {
    /// A running core on a new store, as the daemon starts it.
    pub(crate) async fn start() -> Harness {
        let loaded = load_str("unit.toml", &config()).expect("the test config is valid");
        let cat = Arc::new(Catalogue::build(&loaded.config).expect("resolves"));
        let dir = TempDir::new();
        let store = SqliteStore::open(dir.0.join("beredskab.db"))
            .await
            .expect("open the store");
        let metrics = Arc::new(Metrics::new());
        let status = Arc::new(Status::default());
        let core = Core::start(
            cat.clone(),
            store.clone(),
            metrics.clone(),
            status.clone(),
            Arc::new(Notify::new()),
        )
        .await
        .expect("the core starts");
        let (tx, commands) = CoreHandle::channel(16);
        let (_, mqtt) = mpsc::channel(1);
        let (_, probes) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let core = tokio::spawn(core.run(
            Box::new(Inbox {
                commands,
                mqtt,
                probes,
                forwarded: tokio::sync::mpsc::channel(1).1,
            }),
            stop.clone(),
        ));
        let state = ApiState {
            store,
            core: tx,
            metrics,
            status,
            config: watch::channel(Arc::new(ApiConfig::new(
                &loaded.config,
                cat,
                Arc::new(LinkSettings::from_config(&loaded.config, |_| None)),
            )))
            .1,
        };
        Harness {
            state,
            stop,
            core,
            _dir: dir,
        }
    }

    /// The same routes over a core channel `core` instead.
    fn with_core(&self, core: CoreHandle) -> ApiState<SqliteStore> {
        ApiState {
            core,
            ..self.state.clone()
        }
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.core.await;
    }
}

/// A body that sends nothing and never ends, declaring `declared`
/// bytes; it notes whether it was ever read.
struct Silent {
    declared: Option<u64>,
    read: Arc<AtomicBool>,
}

impl HttpBody for Silent {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.read.store(true, Ordering::Relaxed);
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        self.declared
            .map_or_else(SizeHint::new, SizeHint::with_exact)
    }
}

/// A body of endless 16 KiB chunks, with no declared length.
struct Endless {
    sent: Arc<AtomicUsize>,
}

impl HttpBody for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.sent.fetch_add(16 * 1024, Ordering::Relaxed);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; 16 * 1024])))))
    }
}

fn request(path: &str, token: Option<&str>, body: Body) -> Request<Body> {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(body).expect("a request")
}

/// The status and the JSON body of a call, which must come within
/// `within`.
async fn call(
    state: &ApiState<SqliteStore>,
    req: Request<Body>,
    within: Duration,
) -> (StatusCode, Value) {
    call_app(router(state.clone()), req, within).await
}

/// The status and the JSON body of a call to `app`.
pub(crate) async fn call_app(
    mut app: Router,
    req: Request<Body>,
    within: Duration,
) -> (StatusCode, Value) {
    let resp = tokio::time::timeout(within, app.call(req))
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
        .expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("the answer's body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The codes of SPEC §5 through the router alone: a token without
/// the scope is 403, a body that does not parse is 400 with what was
/// wrong (and kept), an unknown path or incident is 404, a good alarm
/// is 202 once committed.
#[tokio::test]
async fn the_routes_answer_with_the_codes_of_the_contract() {
    let h = Harness::start().await;
    let within = Duration::from_secs(20);
    let get = |path: &str, token: &str| {
        Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("a request")
    };
    let (status, json) = call(&h.state, get("/api/v1/incidents", INGEST), within).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("read")),
        "{json}"
    );
    let bad = request("/api/v1/alarms", Some(INGEST), Body::from("{not json"));
    let (status, json) = call(&h.state, bad, within).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert!(
        json["error"].as_str().is_some_and(|e| e.contains("JSON")),
        "{json}"
    );
    assert_eq!(rejected(&h.state.store).await.len(), 1, "kept as rejected");
    let (status, _) = call(&h.state, get("/no/such/path", INGEST), within).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let alarm = r#"{"component":"srv-1","kind":"server","state":"firing"}"#;
    let (status, json) = call(
        &h.state,
        request("/api/v1/alarms", Some(INGEST), Body::from(alarm)),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    assert!(json["id"].as_u64().is_some(), "{json}");
    h.stop().await;
}

async fn rejected(store: &SqliteStore) -> Vec<RejectedRow> {
    store.rejected(100, None).await.expect("read rejected")
}

/// A wrong or missing token is answered at once, without the body
/// being read, even when the body never comes.
#[tokio::test]
async fn a_caller_without_a_token_is_refused_before_the_body_is_read() {
    let h = Harness::start().await;
    for token in [Some("wrong"), None] {
        for path in ["/api/v1/alarms", "/api/v1/alertmanager", "/api/v1/reports"] {
            let read = Arc::new(AtomicBool::new(false));
            let body = Body::new(Silent {
                declared: Some(1000),
                read: read.clone(),
            });
            let (status, json) =
                call(&h.state, request(path, token, body), Duration::from_secs(5)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}: {json}");
            assert!(json["error"].is_string(), "{json}");
            assert!(
                !read.load(Ordering::Relaxed),
                "{path} {token:?}: the body was read before the token was checked"
            );
        }
    }
    h.stop().await;
}

/// A body declared over the route's limit is refused without reading
/// it; one that does not say its length is read only up to the limit.
/// Both are 413 and kept as rejected.
#[tokio::test]
async fn a_body_over_the_limit_is_413_and_read_no_further_than_the_limit() {
    let h = Harness::start().await;
    let read = Arc::new(AtomicBool::new(false));
    let declared = Body::new(Silent {
        declared: Some(100 * 1024),
        read: read.clone(),
    });
    let (status, json) = call(
        &h.state,
        request("/api/v1/alarms", Some(INGEST), declared),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(!read.load(Ordering::Relaxed), "a declared length suffices");

    let sent = Arc::new(AtomicUsize::new(0));
    let endless = Body::new(Endless { sent: sent.clone() });
    let (status, json) = call(
        &h.state,
        request("/api/v1/alertmanager", Some(INGEST), endless),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains(&ALERTMANAGER_BODY_LIMIT.to_string())),
        "{json}"
    );
    let read = sent.load(Ordering::Relaxed);
    assert!(
        read <= ALERTMANAGER_BODY_LIMIT + 16 * 1024,
        "{read} bytes read"
    );
    let kept = rejected(&h.state.store).await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().all(|r| r.reason == RejectReason::Oversized));
    h.stop().await;
}

/// A client with the right token that sends its headers and then no
/// body is answered 408 once [`BODY_READ_TIMEOUT`] has passed.
#[tokio::test]
async fn a_body_that_never_comes_is_408_after_the_body_timeout() {
    let h = Harness::start().await;
    let body = Body::new(Silent {
        declared: Some(1000),
        read: Arc::new(AtomicBool::new(false)),
    });
    let started = std::time::Instant::now();
    let (status, json) = call(
        &h.state,
        request("/api/v1/alarms", Some(INGEST), body),
        BODY_READ_TIMEOUT + Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{json}");
    assert_eq!(
        json["error"], "the request body did not arrive within 10 s",
        "{json}"
    );
    assert!(started.elapsed() >= BODY_READ_TIMEOUT);
    h.stop().await;
}

/// A core that takes no commands (its channel full) or takes one and
/// never answers: the request is answered 503 with the reason after
/// [`CORE_TIMEOUT`], not held for ever.
#[tokio::test]
async fn a_core_that_does_not_answer_is_503_after_the_core_timeout() {
    let h = Harness::start().await;
    // Full: one command queued that no one takes.
    let (full, mut full_rx) = CoreHandle::channel(1);
    let filler = full.clone();
    let cat = h.state.settings().catalogue.clone();
    let filling = tokio::spawn(async move { filler.reload(cat).await });
    // Taking commands, never answering.
    let (deaf, mut deaf_rx) = CoreHandle::channel(16);
    let kept = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = deaf_rx.recv().await {
            held.push(c);
        }
    });
    let alarm = r#"{"component":"srv-1","kind":"server","state":"firing"}"#;
    let within = CORE_TIMEOUT + Duration::from_secs(20);
    let full_state = h.with_core(full);
    let deaf_state = h.with_core(deaf);
    let ((s1, j1), (s2, j2)) = tokio::join!(
        call(
            &full_state,
            request("/api/v1/alarms", Some(INGEST), Body::from(alarm)),
            within
        ),
        call(
            &deaf_state,
            request("/api/v1/alarms", Some(INGEST), Body::from(alarm)),
            within
        ),
    );
    for (status, json) in [(s1, j1), (s2, j2)] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("the engine did not answer within 10 s")),
            "{json}"
        );
    }
    full_rx.close();
    filling.abort();
    drop(deaf_state);
    drop(full_state);
    kept.abort();
    h.stop().await;
}

/// `/readyz` is 503 once the core's channel is closed (a core that
/// died), even though the core never said it stopped.
#[tokio::test]
async fn readyz_is_503_when_the_core_no_longer_takes_commands() {
    let h = Harness::start().await;
    let ready = |state: &ApiState<SqliteStore>| {
        let state = state.clone();
        async move {
            let req = Request::get("/readyz")
                .body(Body::empty())
                .expect("request");
            call(&state, req, Duration::from_secs(10)).await
        }
    };
    // The core sets `running` as it starts.
    let mut running = false;
    for _ in 0..200 {
        running = h.state.status.running.load(Ordering::Relaxed);
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "the core did not start");
    let (status, json) = ready(&h.state).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["engine"], "running");

    let (dead, rx) = CoreHandle::channel(1);
    drop(rx);
    let (status, json) = ready(&h.with_core(dead)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["engine"], "stopped", "{json}");
    assert!(h.state.status.running.load(Ordering::Relaxed));
    h.stop().await;
}

pub(crate) fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(Body::empty()).expect("a request")
}

/// Opens an incident on `srv-1` (and so on the service `web`) and returns
/// its id.
async fn open_incident(state: &ApiState<SqliteStore>) -> u64 {
    let alarm = r#"{"component":"srv-1","kind":"server","state":"firing"}"#;
    let (status, json) = call(
        state,
        request("/api/v1/alarms", Some(INGEST), Body::from(alarm)),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{json}");
    let (status, list) = call(
        state,
        get("/api/v1/incidents", Some(VIEWER)),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list[0]["id"].as_u64().expect("an open incident")
}

/// Every action route of SPEC §5 through the router: each acts, is
/// stored and answers the incident as it is now; who acted is the
/// token's name unless the body says otherwise; a resolved incident is
/// 409 to every action.
#[tokio::test]
async fn the_incident_actions_act_and_answer_the_incident() {
    let h = Harness::start().await;
    let within = Duration::from_secs(20);
    let id = open_incident(&h.state).await;
    let post = |action: &str, body: &str| {
        request(
            &format!("/api/v1/incidents/{id}/{action}"),
            Some(ONCALL),
            Body::from(body.to_owned()),
        )
    };

    let (status, inc) = call(&h.state, post("ack", ""), within).await;
    assert_eq!(status, StatusCode::OK, "{inc}");
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "vagttelefon", "the token's name");

    let (status, inc) = call(
        &h.state,
        post("ack", r#"{"by": "Anna", "note": "again"}"#),
        within,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "acknowledging again is allowed: {inc}"
    );

    let before = wall_now().to_timestamp();
    let (status, inc) = call(&h.state, post("eta", r#"{"remaining": "2h"}"#), within).await;
    assert_eq!(status, StatusCode::OK, "{inc}");
    assert_eq!(inc["expected_basis"], "manual");
    let end: jiff::Timestamp = inc["expected_end"].as_str().unwrap().parse().unwrap();
    let from_now = end.as_second() - before.as_second();
    assert!(
        (7190..=7210).contains(&from_now),
        "2 h from now, not from opening: {from_now} s"
    );
    let (status, inc) = call(&h.state, post("eta", r#"{"expected": "3h"}"#), within).await;
    assert_eq!(status, StatusCode::OK, "{inc}");
    assert_eq!(inc["expected_s"], 3 * 3600, "{inc}");

    let (status, _) = call(
        &h.state,
        post(
            "notes",
            r#"{"text": "Leverandør på vej", "kind": "decision", "public": true}"#,
        ),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &h.state,
        post(
            "notes",
            r#"{"text": "Ringede til driften", "kind": "event"}"#,
        ),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, inc) = call(&h.state, post("level", r#"{"level": "crisis"}"#), within).await;
    assert_eq!(status, StatusCode::OK, "{inc}");
    assert_eq!(inc["level"], "crisis");
    assert_eq!(
        inc["meeting_place"], "C335",
        "no fire in the town hall: {inc}"
    );

    let (status, services) = call(&h.state, get("/api/v1/services", Some(VIEWER)), within).await;
    assert_eq!(status, StatusCode::OK, "{services}");
    let web = &services[0];
    assert_eq!(web["id"], "web");
    assert_eq!(web["name"], "Borgerportal");
    assert_eq!(web["criticality"], "critical");
    assert_eq!(web["state"], "down", "{web}");
    assert!(web["since"].is_string(), "{web}");
    assert_eq!(web["incident"]["id"], id, "{web}");
    assert_eq!(web["incident"]["level"], "crisis", "{web}");

    let (status, detail) = call(
        &h.state,
        get(&format!("/api/v1/incidents/{id}"), Some(VIEWER)),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let timeline = detail["timeline"].as_array().unwrap();
    let decision = timeline
        .iter()
        .find(|e| e["type"] == "decision")
        .unwrap_or_else(|| panic!("no decision in {detail}"));
    assert_eq!(decision["text"], "Leverandør på vej");
    assert_eq!(decision["by"], "vagttelefon");
    assert_eq!(decision["public"], true);
    let event = timeline
        .iter()
        .find(|e| e["type"] == "event")
        .expect("the event");
    assert!(event.get("public").is_none(), "{event}");
    assert!(
        timeline
            .iter()
            .any(|e| e["type"] == "ack" && e["by"] == "Anna"),
        "the second acknowledgement is recorded as Anna: {detail}"
    );

    let (status, inc) = call(
        &h.state,
        post("resolve", r#"{"note": "Strømmen er tilbage"}"#),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{inc}");
    assert_eq!(inc["state"], "resolved");
    assert_eq!(inc["resolved_by"], "vagttelefon");

    for (action, body) in [
        ("ack", ""),
        ("eta", r#"{"remaining": "1h"}"#),
        ("notes", r#"{"text": "x", "kind": "event"}"#),
        ("level", r#"{"level": "department"}"#),
        ("resolve", ""),
    ] {
        let (status, json) = call(&h.state, post(action, body), within).await;
        assert_eq!(status, StatusCode::CONFLICT, "{action}: {json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("resolved")),
            "{action}: {json}"
        );
    }
    h.stop().await;
}

/// The errors of the action routes, each with its reason: 400 for a bad
/// body or id, 401 without a token, 403 without the `ack` scope, 404 for
/// an incident that never was (kept as rejected `unknown_incident`), 413
/// for a body over the limit, 429 after too many failed tokens.
#[tokio::test]
async fn the_incident_actions_refuse_with_the_codes_of_the_contract() {
    let h = Harness::start().await;
    let within = Duration::from_secs(20);
    let id = open_incident(&h.state).await;
    let path = |action: &str| format!("/api/v1/incidents/{id}/{action}");

    for (action, body, says) in [
        ("eta", r#"{"remaining": "soon"}"#, "not a duration"),
        (
            "eta",
            r#"{"expected": "500 years"}"#,
            "longer than 100 years",
        ),
        ("eta", "{}", "needs one of"),
        (
            "notes",
            r#"{"text": "x", "kind": "rumour"}"#,
            "not one of event, decision",
        ),
        (
            "level",
            r#"{"level": "panic"}"#,
            "not one of crisis, department",
        ),
        ("ack", "{not json", "invalid acknowledgement JSON"),
        ("resolve", r#"{"note": 5}"#, "invalid resolve JSON"),
    ] {
        let (status, json) = call(
            &h.state,
            request(&path(action), Some(ONCALL), Body::from(body)),
            within,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} {body}: {json}");
        assert!(
            json["error"].as_str().is_some_and(|e| e.contains(says)),
            "{action} {body}: {json}"
        );
    }
    let (status, json) = call(
        &h.state,
        request("/api/v1/incidents/first/ack", Some(ONCALL), Body::empty()),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");

    let (status, json) = call(&h.state, request(&path("ack"), None, Body::empty()), within).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{json}");
    for token in [VIEWER, INGEST] {
        let (status, json) = call(
            &h.state,
            request(&path("resolve"), Some(token), Body::empty()),
            within,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
        assert!(
            json["error"]
                .as_str()
                .is_some_and(|e| e.contains("`ack` scope")),
            "{json}"
        );
    }
    let (status, json) = call(&h.state, get("/api/v1/services", Some(INGEST)), within).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");

    let (status, json) = call(
        &h.state,
        request("/api/v1/incidents/999/ack", Some(ONCALL), Body::empty()),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    assert_eq!(json["error"], "no incident 999");
    let kept = rejected(&h.state.store).await;
    assert!(
        kept.iter()
            .any(|r| r.reason == RejectReason::UnknownIncident && r.detail.contains("999")),
        "counted as rejected unknown_incident: {kept:?}"
    );
    let unknown = h.state.metrics.render().lines().any(|l| {
        l.starts_with("beredskab_alarms_rejected_total")
            && l.contains("unknown_incident")
            && l.ends_with(" 1")
    });
    assert!(unknown, "the rejection is counted");

    let big = format!(
        r#"{{"text": "{}", "kind": "event"}}"#,
        "x".repeat(ALARM_BODY_LIMIT)
    );
    let (status, json) = call(
        &h.state,
        request(&path("notes"), Some(ONCALL), Body::from(big)),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");

    // Failed tokens from one address: the limiter answers 429 before
    // looking at the token, the right one included.
    let from = |req: Request<Body>| {
        let mut req = req;
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 9], 4000))));
        req
    };
    let mut codes = Vec::new();
    for _ in 0..25 {
        let (status, _) = call(
            &h.state,
            from(request(&path("ack"), Some("guess"), Body::empty())),
            within,
        )
        .await;
        codes.push(status);
    }
    assert_eq!(codes[0], StatusCode::UNAUTHORIZED);
    assert_eq!(codes[24], StatusCode::TOO_MANY_REQUESTS, "{codes:?}");
    let (status, json) = call(
        &h.state,
        from(request(&path("ack"), Some(ONCALL), Body::empty())),
        within,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many")),
        "{json}"
    );
    h.stop().await;
}
