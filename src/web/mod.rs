//! The on-call web UI (`/`) and the public status page (`/status`).
//!
//! Server-rendered HTML made with maud, in the site's language, that
//! works on a phone held in one hand and without JavaScript: every action
//! is its own `<form method="post">` answered with a redirect (303). A
//! small script of ours (`/web/app.js`, the only script the pages may
//! run) only enhances: it listens to `/web/events` (server-sent events)
//! and swaps the changed parts of the page in without a reload.
//!
//! Logging in takes an API token with the `read` scope, through the same
//! failure limiter as the API; the session lives in [`session`]. Acting
//! needs `ack`. Every POST is checked three ways: the browser's `Origin`
//! and `Sec-Fetch-Site`, a form token signed by the session (CSRF), and
//! that token's one-time nonce, so a double tap acts once. GET never
//! changes anything.
//!
//! [`oncall`] renders the incident pages, [`status`] the status page,
//! [`text`] has the words.

mod oncall;
pub mod session;
mod status;
pub mod text;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::api::auth::{AuthError, Caller};
use crate::api::{ApiState, BODY_READ_TIMEOUT};
use crate::catalogue::Catalogue;
use crate::clock::wall_now;
use crate::config::Scope;
use crate::html::{DOCTYPE, Text};
use crate::store::Store;
use crate::words::fill;
use session::{
    COOKIE, Current, FormCheck, LOGIN_COOKIE, Sessions, cookie, same_origin, set_cookie,
};
use text::{Clock, Words, words};

/// Largest form body.
const FORM_LIMIT: usize = 16 * 1024;
/// Longest note or comment kept, in characters.
const TEXT_LIMIT: usize = 4000;
/// Event streams open at once; more are answered 503 and the page polls.
const MAX_STREAMS: usize = 64;
/// How often an event stream looks for a change that no commit announced.
const STREAM_EVERY: Duration = Duration::from_secs(5);
/// An event stream ends after this long; the browser opens a new one.
const STREAM_LIFETIME: Duration = Duration::from_secs(30 * 60);

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Scripts and styles only from us, no inline script, no framing, forms
/// only back to us.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                   base-uri 'none'";

/// What the web handlers share: the API's state and the sessions.
pub struct WebState<S: Store> {
    api: ApiState<S>,
    sessions: Arc<Sessions>,
    streams: Arc<Semaphore>,
    /// The last fingerprint of the on-call pages, shared by every live
    /// stream so that the store is read once per change, not once per tab.
    shown: Arc<tokio::sync::Mutex<Option<LastSeen>>>,
}

/// A fingerprint of what the on-call pages show, when and at which board
/// version it was read.
#[derive(Clone, Copy)]
struct LastSeen {
    at: tokio::time::Instant,
    board: u64,
    fingerprint: u64,
}

impl<S: Store + Clone> Clone for WebState<S> {
    fn clone(&self) -> Self {
        WebState {
            api: self.api.clone(),
            sessions: self.sessions.clone(),
            streams: self.streams.clone(),
            shown: self.shown.clone(),
        }
    }
}

/// Every route the daemon serves: the API's and the pages'.
pub fn app<S: Store + Clone + 'static>(api: ApiState<S>) -> Router {
    crate::api::router(api.clone()).merge(router(api))
}

/// The pages' routes.
fn router<S: Store + Clone + 'static>(api: ApiState<S>) -> Router {
    let st = WebState {
        api,
        sessions: Arc::new(Sessions::default()),
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        shown: Arc::default(),
    };
    Router::new()
        .route("/", get(oncall::home::<S>))
        .route("/login", get(login_form::<S>).post(login::<S>))
        .route("/logout", post(logout::<S>))
        .route("/i/{id}", get(oncall::incident::<S>))
        .route(
            "/i/{id}/crisis",
            get(oncall::crisis_confirm::<S>).post(oncall::post_crisis::<S>),
        )
        .route("/i/{id}/ack", post(oncall::post_ack::<S>))
        .route("/i/{id}/eta", post(oncall::post_eta::<S>))
        .route("/i/{id}/note", post(oncall::post_note::<S>))
        .route("/i/{id}/resolve", post(oncall::post_resolve::<S>))
        .route("/status", get(status::page::<S>))
        .route("/web/events", get(events::<S>))
        .route("/web/app.js", get(app_js))
        .route("/web/style.css", get(style_css))
        .with_state(st)
}

/// The client's address, when the server was given it.
pub struct Peer(Option<IpAddr>);

impl<St: Send + Sync> FromRequestParts<St> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The person (or token) logged in.
pub(crate) struct User {
    session: Current,
    caller: Caller,
    /// May act (`ack` scope).
    can_act: bool,
}

/// What every page needs: names, words, the clock, who is looking.
pub(crate) struct Ctx {
    cat: Arc<Catalogue>,
    /// The core's board as the request found it.
    board: Arc<crate::core::Board>,
    w: &'static Words,
    clock: Clock,
    user: Option<User>,
    /// Whether the site is served over TLS (the cookie's `Secure`).
    tls: bool,
    public_url: String,
}

impl<S: Store + Clone + 'static> WebState<S> {
    fn ctx(&self, headers: &HeaderMap) -> Ctx {
        let settings = self.api.settings();
        let cat = settings.catalogue.clone();
        let user = self.user(headers, &settings.auth);
        Ctx {
            w: words(cat.language),
            clock: Clock {
                lang: cat.language,
                tz: cat.tz.clone(),
                now: wall_now().to_timestamp(),
            },
            cat,
            board: self.api.status.board.borrow().clone(),
            user,
            tls: settings.tls || settings.links.public_url.starts_with("https://"),
            public_url: settings.links.public_url.clone(),
        }
    }

    /// The session's user, while its token is still in the config with
    /// the `read` scope; a session whose token is gone ends.
    fn user(&self, headers: &HeaderMap, auth: &crate::api::Auth) -> Option<User> {
        let id = cookie(headers, COOKIE)?;
        let session = self.sessions.get(id)?;
        let Ok(caller) = auth.check_hash(&session.token, Scope::Read) else {
            self.sessions.remove(id);
            return None;
        };
        let can_act = auth.check_hash(&session.token, Scope::Ack).is_ok();
        Some(User {
            session,
            caller,
            can_act,
        })
    }

    /// A one-time form token for the current session ("" without one).
    fn form_token(&self, ctx: &Ctx) -> String {
        ctx.user
            .as_ref()
            .map(|u| self.sessions.form_token(&u.session))
            .unwrap_or_default()
    }
}

impl Ctx {
    /// A person's name, or the id as given.
    fn person_name(&self, id: &str) -> String {
        self.cat
            .person_id(id)
            .map_or_else(|| id.to_owned(), |p| self.cat.person(p).name.clone())
    }

    /// A component's or service's name, or the id as given.
    fn node_name(&self, id: &str) -> String {
        self.cat.name_of(id)
    }

    fn user_name(&self) -> Option<String> {
        let u = self.user.as_ref()?;
        Some(match &u.caller.person {
            Some(p) => self.person_name(p),
            None => u.caller.name.clone(),
        })
    }

    fn can_act(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.can_act)
    }

    /// A page of the on-call UI: never cached.
    fn page(&self, status: StatusCode, title: &str, body: Markup, extra: PageOpts) -> Response {
        let w = self.w;
        let site = Text(&self.cat.site_name);
        let logout_token = extra.logout_token.clone();
        let page = html! {
            (DOCTYPE)
            html lang=(w.lang) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="robots" content="noindex";
                    @if let Some(secs) = extra.refresh {
                        meta http-equiv="refresh" content=(secs);
                    }
                    title { (Text(title)) " – " (site) }
                    link rel="stylesheet" href="/web/style.css";
                    script src="/web/app.js" defer {}
                }
                body data-live=[extra.live] data-version=[extra.version.map(|v| v.to_string())] {
                    header.top {
                        a.site href=(if extra.public { "/status" } else { "/" }) { (site) }
                        @if let (Some(name), Some(token)) = (self.user_name(), logout_token) {
                            form.logout method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(token);
                                span.who { (Text(&fill(w.logged_in_as, &[("who", &name)]))) }
                                " "
                                button.link type="submit" { (Text(w.logout)) }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        };
        let cache = if extra.public { "no-cache" } else { "no-store" };
        html_response(status, cache, page.into_string())
    }

    /// A page that says what went wrong, with a way back.
    fn problem(&self, status: StatusCode, title: &str, text: &str, back: &str) -> Response {
        let w = self.w;
        let body = html! {
            h1.bad { (Text(title)) }
            p.box.bad { (Text(text)) }
            p { a.button.secondary href=(back) { (Text(w.all_incidents)) } }
        };
        self.page(status, title, body, PageOpts::default())
    }
}

/// What else a page carries.
#[derive(Default, Clone)]
pub(crate) struct PageOpts {
    /// `events`: follow `/web/events`; `poll`: fetch the page again now
    /// and then.
    live: Option<&'static str>,
    /// What the page shows, to compare with the events' version.
    version: Option<u64>,
    /// A public page (the status page): cached briefly, no session.
    public: bool,
    /// A timed refresh, only when asked for.
    refresh: Option<u32>,
    /// The form token of the logout button.
    logout_token: Option<String>,
}

/// HTML with the security headers every page of ours has.
fn html_response(status: StatusCode, cache: &'static str, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    security_headers(h, cache);
    resp
}

fn security_headers(h: &mut HeaderMap, cache: &'static str) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
}

/// 303 See Other to `to` (a path of ours).
fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    security_headers(resp.headers_mut(), "no-store");
    resp
}

/// A path of ours to go back to: it starts with one `/`, and nothing else
/// (no other site, no scheme).
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() < 512
                && p.chars().all(|c| c.is_ascii_graphic()) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// A submitted form, field by field (the last of repeated fields wins).
pub(crate) type Form = HashMap<String, String>;

/// Reads a urlencoded form of at most [`FORM_LIMIT`] bytes.
async fn read_form(body: Body) -> Result<Form, StatusCode> {
    let bytes = crate::api::read_limited(body, FORM_LIMIT, BODY_READ_TIMEOUT)
        .await
        .map_err(|e| match e {
            crate::api::BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            crate::api::BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
            crate::api::BodyError::Read(_) => StatusCode::BAD_REQUEST,
        })?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

/// A form's text field, trimmed, cut to [`TEXT_LIMIT`] characters;
/// `None` when empty.
fn text_field(form: &Form, name: &str) -> Option<String> {
    let t = form.get(name)?.trim();
    (!t.is_empty()).then(|| t.chars().take(TEXT_LIMIT).collect())
}

/// The checks every action's POST passes before it acts, in order:
/// logged in (else to the login page), from our own origin, a body that
/// reads, a form token of this session, the `ack` scope. Returns the user
/// and the form, or the answer to give. The nonce is used up by
/// [`WebState::once`] after the form was found valid.
pub(crate) async fn checked_post<S: Store + Clone + 'static>(
    st: &WebState<S>,
    ctx: &Ctx,
    headers: &HeaderMap,
    body: Body,
    back: &str,
) -> Result<(Form, [u8; session::NONCE_BYTES]), Response> {
    let w = ctx.w;
    let Some(user) = &ctx.user else {
        return Err(see_other(&format!("/login?next={}", urlencode(back))));
    };
    if !same_origin(headers, &ctx.public_url) {
        warn!("a web form was posted from another origin");
        return Err(ctx.problem(StatusCode::FORBIDDEN, w.stale_form, w.stale_form_text, back));
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(code) => return Err(ctx.problem(code, w.failed, w.failed_text, back)),
    };
    let token = form.get("csrf").map_or("", String::as_str);
    let Some(nonce) = st.sessions.verify(&user.session, token) else {
        warn!("a web form without a valid form token");
        return Err(ctx.problem(StatusCode::FORBIDDEN, w.stale_form, w.stale_form_text, back));
    };
    if !user.can_act {
        return Err(ctx.problem(StatusCode::FORBIDDEN, w.forbidden, w.forbidden_text, back));
    }
    Ok((form, nonce))
}

impl<S: Store + Clone + 'static> WebState<S> {
    /// Uses the form's nonce up: `None` the first time (act), the answer
    /// to a double submit otherwise (back to the page, acting no more).
    fn once(&self, ctx: &Ctx, nonce: [u8; session::NONCE_BYTES], back: &str) -> Option<Response> {
        let user = ctx.user.as_ref()?;
        match self.sessions.consume(&user.session, nonce) {
            FormCheck::Fresh => None,
            FormCheck::Repeat => {
                info!("a web form submitted again; acted on once");
                Some(see_other(back))
            }
            FormCheck::Bad => Some(see_other("/login")),
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ---------------------------------------------------------------------------
// Login and logout

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
    next: Option<String>,
}

/// `GET /login`: the form. `?token=` fills it in (a demo link) but never
/// logs in by itself.
async fn login_form<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let ctx = st.ctx(&headers);
    let next = local_path(q.next.as_deref());
    if ctx.user.is_some() && q.token.is_none() {
        return see_other(&next);
    }
    login_page(
        &st,
        &ctx,
        &headers,
        StatusCode::OK,
        q.token.as_deref(),
        &next,
        None,
    )
}

fn login_page<S: Store + Clone + 'static>(
    st: &WebState<S>,
    ctx: &Ctx,
    headers: &HeaderMap,
    status: StatusCode,
    token: Option<&str>,
    next: &str,
    error: Option<&str>,
) -> Response {
    let w = ctx.w;
    // The login form's double-submit value, kept in a cookie of its own.
    let existing = cookie(headers, LOGIN_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let value = existing
        .clone()
        .unwrap_or_else(|| st.sessions.random_hex(32));
    let body = html! {
        h1 { (Text(w.login)) }
        @if let Some(e) = error {
            p.box.bad role="alert" { (Text(e)) }
        }
        form.login method="post" action="/login" {
            input type="hidden" name="csrf" value=(value);
            input type="hidden" name="next" value=(next);
            label for="token" { (Text(w.token)) }
            input #token type="password" name="token" required autocomplete="current-password"
                value=[token];
            @if token.is_some() {
                p.note { (Text(w.login_prefilled)) }
            } @else {
                p.note { (Text(w.login_hint)) }
            }
            button.primary type="submit" { (Text(w.login_button)) }
        }
        p { a href="/status" { (Text(w.status_link)) } }
    };
    let mut resp = ctx.page(status, w.login, body, PageOpts::default());
    if existing.is_none() {
        let c = set_cookie(
            LOGIN_COOKIE,
            &value,
            Duration::from_secs(3600),
            "Strict",
            ctx.tls,
        );
        if let Ok(v) = HeaderValue::from_str(&c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// `POST /login`: a token with the `read` scope starts a new session
/// (a new id, the old session ended). Failed attempts count in the API's
/// limiter, so guessing is as slow here as there.
async fn login<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = st.ctx(&headers);
    let w = ctx.w;
    if !same_origin(&headers, &ctx.public_url) {
        return ctx.problem(
            StatusCode::FORBIDDEN,
            w.stale_form,
            w.stale_form_text,
            "/login",
        );
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(code) => return ctx.problem(code, w.failed, w.failed_text, "/login"),
    };
    let next = local_path(form.get("next").map(String::as_str));
    let sent = form.get("csrf").map_or("", String::as_str);
    let kept = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if kept.is_empty() || !session::same_bytes(kept.as_bytes(), sent.as_bytes()) {
        return login_page(
            &st,
            &ctx,
            &headers,
            StatusCode::FORBIDDEN,
            None,
            &next,
            Some(w.stale_form_text),
        );
    }
    let token = form.get("token").map_or("", |t| t.trim());
    let settings = st.api.settings();
    let checked = settings
        .auth
        .check(Some(&format!("Bearer {token}")), Scope::Read, peer.0);
    match checked {
        Ok(caller) => {
            use sha2::Digest;
            let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
            let old = cookie(&headers, COOKIE);
            let id = st.sessions.create(hash, old);
            info!(token = %caller.name, "web login");
            let mut resp = see_other(&next);
            let h = resp.headers_mut();
            for c in [
                set_cookie(COOKIE, &id, session::LIFETIME, "Lax", ctx.tls),
                set_cookie(LOGIN_COOKIE, "", Duration::ZERO, "Strict", ctx.tls),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    h.append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(AuthError::TooMany) => login_page(
            &st,
            &ctx,
            &headers,
            StatusCode::TOO_MANY_REQUESTS,
            None,
            &next,
            Some(w.too_many),
        ),
        Err(e) => {
            info!(error = %e, "web login refused");
            let status = match e {
                AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_page(
                &st,
                &ctx,
                &headers,
                status,
                None,
                &next,
                Some(w.unknown_token),
            )
        }
    }
}

/// `POST /logout`: ends the session.
async fn logout<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = st.ctx(&headers);
    let w = ctx.w;
    let Some(user) = &ctx.user else {
        return see_other("/login");
    };
    if !same_origin(&headers, &ctx.public_url) {
        return ctx.problem(StatusCode::FORBIDDEN, w.stale_form, w.stale_form_text, "/");
    }
    let form = match read_form(body).await {
        Ok(f) => f,
        Err(code) => return ctx.problem(code, w.failed, w.failed_text, "/"),
    };
    let token = form.get("csrf").map_or("", String::as_str);
    if st.sessions.verify(&user.session, token).is_none() {
        return ctx.problem(StatusCode::FORBIDDEN, w.stale_form, w.stale_form_text, "/");
    }
    st.sessions.remove(&user.session.id);
    let mut resp = see_other("/login");
    let c = set_cookie(COOKIE, "", Duration::ZERO, "Lax", ctx.tls);
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

// ---------------------------------------------------------------------------
// Live updates

/// `GET /web/events`: server-sent events for a logged-in page. A
/// `version` event carries a fingerprint of what the on-call pages show,
/// at once and whenever it changes; the page fetches itself again when it
/// differs from the version it was rendered with.
impl<S: Store + Clone + 'static> WebState<S> {
    /// What the on-call pages show, as one number: read from the store at
    /// most once per [`STREAM_EVERY`] for one board version, whatever the
    /// number of open tabs (a commit changes the board version; deliveries,
    /// which the notifier records, are seen within `STREAM_EVERY`).
    async fn fingerprint(&self) -> Result<u64, crate::store::StoreError> {
        let board = self.api.status.board.borrow().version;
        let mut shown = self.shown.lock().await;
        if let Some(s) = *shown
            && s.board == board
            && s.at.elapsed() < STREAM_EVERY
        {
            return Ok(s.fingerprint);
        }
        let fingerprint = oncall::fingerprint(&self.api.store).await?;
        *shown = Some(LastSeen {
            at: tokio::time::Instant::now(),
            board,
            fingerprint,
        });
        Ok(fingerprint)
    }
}

async fn events<S: Store + Clone + 'static>(
    State(st): State<WebState<S>>,
    headers: HeaderMap,
) -> Response {
    let ctx = st.ctx(&headers);
    let Some(user) = ctx.user else {
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    };
    let Ok(permit) = st.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many live pages").into_response();
    };
    let started = tokio::time::Instant::now();
    let st_board = st.api.status.board.subscribe();
    let live = Live {
        st,
        id: user.session.id,
        last: None,
        first: true,
        board: st_board,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(live, move |mut live| async move {
        loop {
            if !live.first {
                // A commit wakes the stream at once; deliveries, which the
                // notifier records outside the core, are seen within a while.
                tokio::select! {
                    changed = live.board.changed() => if changed.is_err() {
                        tokio::time::sleep(STREAM_EVERY).await;
                    },
                    () = tokio::time::sleep(STREAM_EVERY) => {}
                }
            }
            live.first = false;
            if started.elapsed() >= STREAM_LIFETIME || live.st.sessions.get(&live.id).is_none() {
                return None;
            }
            let version = match live.st.fingerprint().await {
                Ok(v) => v,
                Err(e) => {
                    error!(error = %e, "reading incidents for a live page");
                    return None;
                }
            };
            if live.last != Some(version) {
                live.last = Some(version);
                let event = SseEvent::default()
                    .event("version")
                    .data(version.to_string());
                return Some((Ok::<_, std::convert::Infallible>(event), live));
            }
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    let h = resp.headers_mut();
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One event stream's state.
struct Live<S: Store> {
    st: WebState<S>,
    /// The session it serves: the stream ends with it.
    id: String,
    /// The version last sent.
    last: Option<u64>,
    first: bool,
    board: tokio::sync::watch::Receiver<Arc<crate::core::Board>>,
    /// Its place among [`MAX_STREAMS`].
    _permit: tokio::sync::OwnedSemaphorePermit,
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    security_headers(h, "max-age=300");
    resp
}

/// The 404 page of an incident that does not exist.
fn no_incident(ctx: &Ctx) -> Response {
    ctx.problem(
        StatusCode::NOT_FOUND,
        ctx.w.not_found,
        ctx.w.not_found_text,
        "/",
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};

    use super::*;
    use crate::api::tests::{Harness, call_app, get};

    #[test]
    fn only_our_own_paths_are_followed_after_login() {
        assert_eq!(local_path(Some("/i/7")), "/i/7");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    /// The OpenAPI document is OpenAPI 3.1 and lists every route the router
    /// serves, with every method it answers: each listed operation reaches a
    /// handler (not the fallback, not 405), each method not listed on a path
    /// is 405, and every path given to `.route(` in the source is listed.
    #[tokio::test]
    async fn the_openapi_document_lists_every_route() {
        let h = Harness::start().await;
        let within = Duration::from_secs(20);
        let app = || app(h.state.clone());
        let (status, doc) = call_app(app(), get("/api/v1/openapi.json", None), within).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let methods = ["get", "post", "put", "patch", "delete"];
        let concrete = |p: &str| p.replace("{id}", "1").replace("{link}", "x");
        for (path, item) in paths {
            for m in methods {
                let req = Request::builder()
                    .method(m.to_uppercase().as_str())
                    .uri(concrete(path))
                    .body(Body::empty())
                    .expect("a request");
                let (status, json) = call_app(app(), req, within).await;
                if item.get(m).is_some() {
                    assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
                    assert_ne!(json["error"], "no such path", "{m} {path} is not routed");
                } else {
                    assert_eq!(
                        status,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{m} {path} is served but not in the document"
                    );
                }
            }
        }
        // Every route in the source of the daemon's HTTP server (the demo's
        // simulated sensors serve their own).
        let mut routed = Vec::new();
        for dir in ["src/api", "src/web"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            if dir.exists() {
                collect_routes(&dir, &mut routed);
            }
        }
        assert!(routed.len() >= 15, "{routed:?}");
        for p in &routed {
            assert!(
                paths.contains_key(p),
                "{p} is routed but not in the OpenAPI document"
            );
        }
        h.stop().await;
    }

    /// The paths given to the `route` calls in the Rust files under `dir`,
    /// outside their test modules.
    fn collect_routes(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                collect_routes(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
                let text = std::fs::read_to_string(&path).expect("read a source file");
                // Routes are made outside the test modules.
                let text = text.split("#[cfg(test)]").next().unwrap_or_default();
                for part in text.split(".route(").skip(1) {
                    if let Some(rest) = part.trim_start().strip_prefix('"')
                        && let Some(end) = rest.find('"')
                    {
                        out.push(rest[..end].to_owned());
                    }
                }
            }
        }
    }
}
