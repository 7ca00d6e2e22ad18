//! API tokens: `Authorization: Bearer TOKEN`, looked up by its SHA-256
//! (the config stores only the hash), with scopes, and a limit on failed
//! attempts per client address so tokens cannot be guessed quickly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{Scope, TokenConfig};

/// Failed authentications a client address may make per window…
const MAX_FAILURES: u32 = 20;
/// …of this length, before it gets 429 until the window ends.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; the oldest window is forgotten first.
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
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
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
            failures: Mutex::new(HashMap::new()),
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

    fn blocked(&self, ip: IpAddr) -> bool {
        let map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, ip: IpAddr) {
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                return;
            }
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
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
}
