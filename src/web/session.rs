//! Sessions of the web UI: a random id in an HttpOnly cookie, kept in a
//! bounded map in memory (keyed by what a browser sends, so it can never
//! grow without end), expired when idle. Each session has its own key that
//! signs the one-time form tokens of its pages: a token proves the form
//! came from a page of this session (CSRF), and its nonce, remembered once
//! used, makes a double tap act once.
//!
//! A session keeps the SHA-256 of the token it logged in with, not the
//! token: every request looks that hash up in the running config, so a
//! token removed by a reload ends its sessions, and a scope taken away is
//! gone at once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The session cookie.
pub const COOKIE: &str = "bk_session";
/// The login form's own double-submit cookie, before there is a session.
pub const LOGIN_COOKIE: &str = "bk_login";
/// Sessions kept at most; when full, expired ones go first, then the one
/// seen least recently.
pub const MAX_SESSIONS: usize = 10_000;
/// A session not used for this long is over.
pub const IDLE: Duration = Duration::from_secs(24 * 3600);
/// A session is over this long after login, however busy.
pub const LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Used form nonces remembered per session; the oldest is forgotten first.
const MAX_USED: usize = 1024;
/// Bytes of a session id and of a form nonce.
const ID_BYTES: usize = 32;
pub const NONCE_BYTES: usize = 16;

struct Session {
    token: [u8; 32],
    key: hmac::Key,
    created: Instant,
    seen: Instant,
    used: HashSet<[u8; NONCE_BYTES]>,
    used_order: VecDeque<[u8; NONCE_BYTES]>,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.seen) >= IDLE
            || now.saturating_duration_since(self.created) >= LIFETIME
    }
}

/// What a request learns of its session.
#[derive(Clone)]
pub struct Current {
    pub id: String,
    /// SHA-256 of the token it logged in with.
    pub token: [u8; 32],
    key: hmac::Key,
}

/// A submitted form token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormCheck {
    /// Made by this session and not used before: act on it.
    Fresh,
    /// Made by this session and used already: a double submit.
    Repeat,
    /// Not made by this session (or not a token at all).
    Bad,
}

/// Every session, bounded.
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
    rng: SystemRandom,
    max: usize,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(MAX_SESSIONS)
    }
}

impl Sessions {
    pub fn new(max: usize) -> Sessions {
        Sessions {
            by_id: Mutex::new(HashMap::new()),
            rng: SystemRandom::new(),
            max: max.max(1),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Random bytes, hex.
    pub fn random_hex(&self, n: usize) -> String {
        hex::encode(self.random(n))
    }

    fn random(&self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.rng
            .fill(&mut b)
            .expect("the system's random source works");
        b
    }

    /// A new session for the token with this hash; the session `replacing`
    /// (the browser's old one, if any) ends. Returns the new id: a login
    /// always gets a fresh one.
    pub fn create(&self, token: [u8; 32], replacing: Option<&str>) -> String {
        let id = self.random_hex(ID_BYTES);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.random(32));
        let now = Instant::now();
        let mut map = self.map();
        if let Some(old) = replacing {
            map.remove(old);
        }
        if map.len() >= self.max {
            map.retain(|_, s| !s.expired(now));
        }
        while map.len() >= self.max {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                token,
                key,
                created: now,
                seen: now,
                used: HashSet::new(),
                used_order: VecDeque::new(),
            },
        );
        id
    }

    /// The live session with this id, marked as used now; an expired one
    /// is removed.
    pub fn get(&self, id: &str) -> Option<Current> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Current> {
        let mut map = self.map();
        let s = map.get_mut(id)?;
        if s.expired(now) {
            map.remove(id);
            return None;
        }
        s.seen = now;
        Some(Current {
            id: id.to_owned(),
            token: s.token,
            key: s.key.clone(),
        })
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// How many sessions are held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A one-time form token of this session: a nonce and its signature.
    pub fn form_token(&self, s: &Current) -> String {
        let nonce = self.random(NONCE_BYTES);
        let sig = hmac::sign(&s.key, &nonce);
        format!("{}.{}", hex::encode(&nonce), hex::encode(sig.as_ref()))
    }

    /// Checks a submitted form token and, when it is fresh, remembers it
    /// as used, so that the same form submitted again is a [`FormCheck::Repeat`].
    pub fn check_form(&self, s: &Current, token: &str) -> FormCheck {
        match self.verify(s, token) {
            None => FormCheck::Bad,
            Some(nonce) => self.consume(s, nonce),
        }
    }

    /// The nonce of a form token this session made, without using it up.
    pub fn verify(&self, s: &Current, token: &str) -> Option<[u8; NONCE_BYTES]> {
        let (nonce, sig) = token.split_once('.')?;
        let nonce = hex::decode(nonce).ok()?;
        let sig = hex::decode(sig).ok()?;
        let nonce = <[u8; NONCE_BYTES]>::try_from(nonce.as_slice()).ok()?;
        hmac::verify(&s.key, &nonce, &sig).ok()?;
        Some(nonce)
    }

    /// Uses a verified nonce up: [`FormCheck::Fresh`] the first time,
    /// [`FormCheck::Repeat`] after.
    pub fn consume(&self, s: &Current, nonce: [u8; NONCE_BYTES]) -> FormCheck {
        let mut map = self.map();
        let Some(session) = map.get_mut(&s.id) else {
            return FormCheck::Bad;
        };
        if !session.used.insert(nonce) {
            return FormCheck::Repeat;
        }
        session.used_order.push_back(nonce);
        while session.used_order.len() > MAX_USED {
            if let Some(old) = session.used_order.pop_front() {
                session.used.remove(&old);
            }
        }
        FormCheck::Fresh
    }
}

/// Whether two byte strings are equal, in a time that depends only on
/// their lengths.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim())
        })
}

/// A `Set-Cookie` value: HttpOnly, for the whole site, `Secure` when the
/// site is served over TLS. `max_age` 0 removes it.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: Duration,
    same_site: &str,
    secure: bool,
) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite={same_site}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a POST comes from our own pages, as far as the browser says:
/// `Sec-Fetch-Site` must be `same-origin` (or `none`, typed by the user),
/// and `Origin` must be this site, as the configured public URL or the
/// `Host` the request was sent to names it. Under `Referrer-Policy:
/// no-referrer` a browser sends `Origin: null` even to its own site; that
/// passes only when `Sec-Fetch-Site` vouches for it. A client that sends
/// neither header (not a browser) is left to the form token.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let mut vouched = false;
    if let Some(site) = headers.get("sec-fetch-site") {
        let Ok(site) = site.to_str() else {
            return false;
        };
        if site != "same-origin" && site != "none" {
            return false;
        }
        vouched = true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if origin == "null" {
        return vouched;
    }
    let origin = origin.trim_end_matches('/');
    if origin.eq_ignore_ascii_case(origin_of(public_url)) {
        return true;
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    ["http://", "https://"].iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|o| o.eq_ignore_ascii_case(host))
    })
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |i| after_scheme + i);
    &url[..end]
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_form_token_acts_once_and_only_in_its_session() {
        let sessions = Sessions::default();
        let a = sessions.get(&sessions.create([1; 32], None)).unwrap();
        let b = sessions.get(&sessions.create([1; 32], None)).unwrap();
        let token = sessions.form_token(&a);
        assert_eq!(sessions.check_form(&b, &token), FormCheck::Bad);
        assert_eq!(sessions.check_form(&a, &token), FormCheck::Fresh);
        assert_eq!(sessions.check_form(&a, &token), FormCheck::Repeat);
        assert_eq!(sessions.check_form(&a, ""), FormCheck::Bad);
        let (nonce, _) = token.split_once('.').unwrap();
        assert_eq!(
            sessions.check_form(&a, &format!("{nonce}.{}", "0".repeat(64))),
            FormCheck::Bad
        );
        let other = sessions.form_token(&a);
        assert_ne!(other, token);
        assert_eq!(sessions.check_form(&a, &other), FormCheck::Fresh);
    }

    #[test]
    fn login_rotates_the_id_and_the_map_stays_bounded() {
        let sessions = Sessions::new(3);
        let first = sessions.create([1; 32], None);
        let second = sessions.create([1; 32], Some(&first));
        assert_ne!(first, second);
        assert!(sessions.get(&first).is_none(), "the old id is gone");
        assert!(sessions.get(&second).is_some());
        for _ in 0..10 {
            sessions.create([2; 32], None);
        }
        assert_eq!(sessions.len(), 3);
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::default();
        let id = sessions.create([1; 32], None);
        let later = Instant::now() + IDLE + Duration::from_secs(1);
        assert!(sessions.get_at(&id, later).is_none());
        assert!(sessions.is_empty(), "an expired session is removed");
    }

    #[test]
    fn cookies_are_read_and_set_with_their_flags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; bk_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let set = set_cookie(COOKIE, "abc", Duration::from_secs(60), "Lax", true);
        assert_eq!(
            set,
            "bk_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(!set_cookie(COOKIE, "x", Duration::ZERO, "Lax", false).contains("Secure"));
    }

    #[test]
    fn only_our_own_origin_may_post() {
        let url = "https://beredskab.example.dk/";
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&with(&[]), url), "no browser headers");
        assert!(same_origin(
            &with(&[("origin", "https://beredskab.example.dk")]),
            url
        ));
        assert!(same_origin(
            &with(&[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080")
            ]),
            url
        ));
        assert!(!same_origin(
            &with(&[
                ("origin", "https://evil.example"),
                ("host", "beredskab.example.dk")
            ]),
            url
        ));
        assert!(!same_origin(&with(&[("origin", "null")]), url));
        assert!(same_origin(
            &with(&[("origin", "null"), ("sec-fetch-site", "same-origin")]),
            url
        ));
        assert!(!same_origin(
            &with(&[("origin", "null"), ("sec-fetch-site", "cross-site")]),
            url
        ));
        assert!(!same_origin(
            &with(&[("sec-fetch-site", "cross-site")]),
            url
        ));
        assert!(!same_origin(&with(&[("sec-fetch-site", "same-site")]), url));
        assert!(same_origin(
            &with(&[("sec-fetch-site", "same-origin")]),
            url
        ));
        assert_eq!(origin_of("http://a:1/x/y"), "http://a:1");
        assert_eq!(origin_of("http://a:1"), "http://a:1");
    }
}
