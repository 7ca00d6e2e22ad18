//! A real HTTP server standing in for an SMS or call gateway. It records
//! every request (path, idempotency key, body, answer) and can be told to
//! fail: 500 for a few requests, hang past the timeout, 429 with
//! Retry-After, be down (503) until told otherwise, or hold requests
//! until released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::watch;

/// How the gateway answers the next requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Ok,
    /// 500 for this many more requests.
    Fail(u32),
    /// Never answer this many more requests.
    Hang(u32),
    /// 429 with `Retry-After: N` for one request.
    TooMany(u64),
}

/// One request the gateway saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub key: String,
    pub body: Value,
    /// The status answered; 0 for a request never answered.
    pub answered: u16,
}

#[derive(Clone)]
pub struct Gateway {
    mode: Arc<Mutex<Vec<Mode>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    down: Arc<AtomicBool>,
    /// While true, requests wait before they are answered.
    held: watch::Sender<bool>,
    /// Requests waiting now.
    waiting: Arc<AtomicUsize>,
}

impl Gateway {
    /// Starts on a free port; `modes` are used in order, then Ok.
    pub async fn start(modes: Vec<Mode>) -> (Gateway, u16) {
        let g = Gateway {
            mode: Arc::new(Mutex::new(modes)),
            seen: Arc::new(Mutex::new(Vec::new())),
            down: Arc::new(AtomicBool::new(false)),
            held: watch::channel(false).0,
            waiting: Arc::new(AtomicUsize::new(0)),
        };
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(answer))
            .with_state(g.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gateway");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (g, port)
    }

    /// While down, every request is answered 503 (a gateway outage).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Requests from now on wait, unanswered, until [`Gateway::release`].
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Answers the held requests (and later ones at once).
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// How many requests are held now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Keys the gateway accepted (2xx), with how often.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for s in self
            .seen()
            .iter()
            .filter(|s| (200..300).contains(&s.answered))
        {
            *m.entry(s.key.clone()).or_insert(0) += 1;
        }
        m
    }

    /// When each key was first accepted.
    pub fn delivered_at(&self) -> HashMap<String, Instant> {
        let mut m = HashMap::new();
        for s in self
            .seen()
            .iter()
            .filter(|s| (200..300).contains(&s.answered))
        {
            m.entry(s.key.clone()).or_insert(s.at);
        }
        m
    }
}

async fn answer(
    State(g): State<Gateway>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let arrived = Instant::now();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let record = |answered: u16| {
        g.seen.lock().expect("seen").push(Seen {
            at: arrived,
            path: uri.path().to_owned(),
            key: key.clone(),
            body: serde_json::from_str(&body).unwrap_or(Value::String(body.clone())),
            answered,
        });
    };
    if g.down.load(Ordering::SeqCst) {
        record(503);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut held = g.held.subscribe();
    if *held.borrow() {
        g.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = held.wait_for(|h| !*h).await;
        g.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    let mode = {
        let mut modes = g.mode.lock().expect("mode");
        match modes.first().copied() {
            None => Mode::Ok,
            Some(m) => {
                match m {
                    Mode::Fail(n) if n > 1 => modes[0] = Mode::Fail(n - 1),
                    Mode::Hang(n) if n > 1 => modes[0] = Mode::Hang(n - 1),
                    _ => {
                        modes.remove(0);
                    }
                }
                m
            }
        }
    };
    let (status, resp) = match mode {
        Mode::Ok => (200, StatusCode::OK.into_response()),
        Mode::Fail(_) => (500, StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Mode::TooMany(s) => (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", s.to_string())],
            )
                .into_response(),
        ),
        Mode::Hang(_) => (0, StatusCode::OK.into_response()),
    };
    record(status);
    if matches!(mode, Mode::Hang(_)) {
        std::future::pending::<()>().await;
    }
    resp
}
