//! API tokens: `Authorization: Bearer TOKEN`, looked up by its SHA-256
//! (the config stores only the hash), with scopes, and a limit on failed
//! attempts per client address so tokens cannot be guessed quickly.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Scope, TokenConfig};

/// Failed authentications a client address may make per window…
const MAX_FAILURES: u32 = 20;
/// …of this length, before it gets 429 until the window ends.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; when full, the address whose window
/// started first is forgotten, so a new address is always counted.
const MAX_TRACKED: usize = 10_000;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The person the token acts as.
    pub person: Option<String>,
}

impl Caller {
    /// Who an action is recorded as: the token's person, else its name.
    pub fn actor(&self) -> String {
        self.person.clone().unwrap_or_else(|| self.name.clone())
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer TOKEN`")]
    Missing,
    #[error("unknown token")]
    Unknown,
    #[error("this token lacks the `{0}` scope")]
    Forbidden(&'static str),
    #[error("too many failed attempts from this address; try again in a minute")]
    TooMany,
}

struct Token {
    caller: Caller,
    scopes: Vec<Scope>,
}

/// The tokens of a config.
pub struct Auth {
    by_hash: HashMap<[u8; 32], Token>,
    failures: Mutex<Failures>,
}

/// Failed attempts per client address, at most [`MAX_TRACKED`] of them.
#[derive(Default)]
struct Failures {
    /// Failures in the current window, and when that window started.
    by_ip: HashMap<IpAddr, (u32, Instant)>,
    /// The same windows ordered by start: the first is forgotten first.
    by_start: BTreeSet<(Instant, IpAddr)>,
}

impl Failures {
    fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_ip.get(&ip).is_some_and(|(n, since)| {
            *n >= MAX_FAILURES && now.saturating_duration_since(*since) < FAILURE_WINDOW
        })
    }

    fn failed(&mut self, ip: IpAddr, now: Instant) {
        match self.by_ip.get_mut(&ip) {
            Some((n, since)) if now.saturating_duration_since(*since) < FAILURE_WINDOW => {
                *n = n.saturating_add(1);
                return;
            }
            Some((_, since)) => {
                // The window is over: a new one starts, last in line.
                self.by_start.remove(&(*since, ip));
                self.by_ip.remove(&ip);
            }
            None => {}
        }
        // Ended windows are the oldest, so they go first; when every
        // window is still running the oldest goes anyway.
        while self.by_ip.len() >= MAX_TRACKED
            || self
                .by_start
                .first()
                .is_some_and(|(since, _)| now.saturating_duration_since(*since) >= FAILURE_WINDOW)
        {
            let Some((_, old)) = self.by_start.pop_first() else {
                break;
            };
            self.by_ip.remove(&old);
        }
        self.by_ip.insert(ip, (1, now));
        self.by_start.insert((now, ip));
    }
}

pub fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Read => "read",
        Scope::Ack => "ack",
        Scope::Ingest => "ingest",
        Scope::Admin => "admin",
    }
}

/// SHA-256 of a token, in lower-case hex: what `[[token]] sha256` holds.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Auth {
    /// Tokens whose `sha256` is not 64 hex digits are skipped (validation
    /// reports them).
    pub fn new(tokens: &[TokenConfig]) -> Auth {
        let mut by_hash = HashMap::new();
        for t in tokens {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(t.sha256.trim().to_ascii_lowercase(), &mut hash).is_err() {
                continue;
            }
            by_hash.insert(
                hash,
                Token {
                    caller: Caller {
                        name: t.name.clone(),
                        person: t.person.clone(),
                    },
                    scopes: t.scopes.clone(),
                },
            );
        }
        Auth {
            by_hash,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Checks an `Authorization` header value for `scope`. `admin` holds
    /// every scope.
    pub fn check(
        &self,
        header: Option<&str>,
        scope: Scope,
        from: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        if let Some(ip) = from
            && self.blocked(ip)
        {
            return Err(AuthError::TooMany);
        }
        let result = self.lookup(header, scope);
        if let (Err(AuthError::Missing | AuthError::Unknown), Some(ip)) = (&result, from) {
            self.failed(ip);
        }
        result
    }

    fn lookup(&self, header: Option<&str>, scope: Scope) -> Result<Caller, AuthError> {
        let token = header
            .and_then(|h| {
                let (scheme, rest) = h.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let t = self.by_hash.get(&hash).ok_or(AuthError::Unknown)?;
        if t.scopes.contains(&scope) || t.scopes.contains(&Scope::Admin) {
            Ok(t.caller.clone())
        } else {
            Err(AuthError::Forbidden(scope_name(scope)))
        }
    }

    /// For a web session, which keeps the hash of the token it logged in
    /// with: the caller, when that token is still in the config and holds
    /// `scope`. Not counted as a failed attempt (the session was let in).
    pub(crate) fn check_hash(&self, hash: &[u8; 32], scope: Scope) -> Result<Caller, AuthError> {
        let t = self.by_hash.get(hash).ok_or(AuthError::Unknown)?;
        if t.scopes.contains(&scope) || t.scopes.contains(&Scope::Admin) {
            Ok(t.caller.clone())
        } else {
            Err(AuthError::Forbidden(scope_name(scope)))
        }
    }

    fn blocked(&self, ip: IpAddr) -> bool {
        self.failures().blocked(ip, Instant::now())
    }

    fn failed(&self, ip: IpAddr) {
        self.failures().failed(ip, Instant::now());
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(&[
            TokenConfig {
                name: "vagt".into(),
                sha256: token_hash("secret-read"),
                scopes: vec![Scope::Read, Scope::Ack],
                person: Some("p-drift".into()),
            },
            TokenConfig {
                name: "root".into(),
                sha256: token_hash("secret-admin").to_uppercase(),
                scopes: vec![Scope::Admin],
                person: None,
            },
        ])
    }

    #[test]
    fn tokens_are_checked_by_hash_and_scope() {
        let a = auth();
        let ok = a
            .check(Some("Bearer secret-read"), Scope::Read, None)
            .unwrap();
        assert_eq!(ok.actor(), "p-drift");
        assert_eq!(
            a.check(Some("Bearer secret-read"), Scope::Ingest, None),
            Err(AuthError::Forbidden("ingest"))
        );
        assert_eq!(
            a.check(Some("bearer  secret-admin "), Scope::Ingest, None)
                .unwrap()
                .actor(),
            "root"
        );
        assert_eq!(
            a.check(Some("Bearer nope"), Scope::Read, None),
            Err(AuthError::Unknown)
        );
        assert_eq!(a.check(None, Scope::Read, None), Err(AuthError::Missing));
        assert_eq!(
            a.check(Some("Basic abc"), Scope::Read, None),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn repeated_failures_from_one_address_are_refused() {
        let a = auth();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                a.check(Some("Bearer guess"), Scope::Read, Some(ip)),
                Err(AuthError::Unknown)
            );
        }
        assert_eq!(
            a.check(Some("Bearer secret-read"), Scope::Read, Some(ip)),
            Err(AuthError::TooMany),
            "even a right token waits out the window"
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(
            a.check(Some("Bearer secret-read"), Scope::Read, Some(other))
                .is_ok()
        );
    }

    #[test]
    fn a_full_table_forgets_the_oldest_and_still_counts_a_new_address() {
        let a = auth();
        let first: IpAddr = "10.0.0.0".parse().unwrap();
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(
                a.check(Some("Bearer guess"), Scope::Read, Some(ip)),
                Err(AuthError::Unknown)
            );
        }
        // The table is full of running windows; a new address is counted
        // all the same, and is refused after its 20th failure.
        let attacker: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                a.check(Some("Bearer guess"), Scope::Read, Some(attacker)),
                Err(AuthError::Unknown)
            );
        }
        assert_eq!(
            a.check(Some("Bearer secret-read"), Scope::Read, Some(attacker)),
            Err(AuthError::TooMany)
        );
        let f = a.failures();
        assert_eq!(f.by_ip.len(), MAX_TRACKED, "bounded");
        assert_eq!(f.by_start.len(), MAX_TRACKED);
        assert!(
            !f.by_ip.contains_key(&first),
            "the address whose window started first is forgotten"
        );
    }

    #[test]
    fn a_blocked_address_stays_blocked_while_new_ones_come_and_go() {
        let mut f = Failures::default();
        let t0 = Instant::now();
        let blocked: IpAddr = "192.0.2.1".parse().unwrap();
        // The blocked address starts its window after the first few others.
        for i in 0..10u32 {
            f.failed(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), t0);
        }
        let later = t0 + Duration::from_secs(1);
        for _ in 0..MAX_FAILURES {
            f.failed(blocked, later);
        }
        assert!(f.blocked(blocked, later));
        // Ten more than fit, later still: the ten that started before it go.
        let latest = later + Duration::from_secs(1);
        for i in 0..MAX_TRACKED as u32 - 1 {
            f.failed(
                IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)),
                latest,
            );
        }
        assert_eq!(f.by_ip.len(), MAX_TRACKED);
        assert!(!f.by_ip.contains_key(&"10.0.0.9".parse().unwrap()));
        assert!(f.blocked(blocked, latest), "still blocked in its window");
        // Its window ends; then it is counted afresh.
        let after = later + FAILURE_WINDOW;
        assert!(!f.blocked(blocked, after));
        f.failed(blocked, after);
        assert_eq!(f.by_ip.get(&blocked), Some(&(1, after)));
        assert_eq!(f.by_ip.len(), f.by_start.len());
    }
}
