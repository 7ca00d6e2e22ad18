//! Acknowledgement links: made for each message, checked when followed.
//! One click in an SMS or a mail acknowledges an incident as the person it
//! was sent to; the pages and handlers are in [`crate::api::links`].
//!
//! A token is the base64url (without padding) of
//!
//! ```text
//! [format: 1 byte] [incident: varint] [expiry, Unix seconds: varint] [person id: UTF-8] [MAC: 16 bytes]
//! ```
//!
//! The format byte names the layout and the action (1: acknowledge). The
//! MAC is HMAC-SHA256, under the key of `[server] secret_env`, over a label
//! and every byte before it, cut to its first 16 bytes; it is checked in
//! constant time before anything in the token is believed. A link's id, the
//! SHA-256 of its token, is what the core records as used, so each link
//! acknowledges once.
//!
//! [`make`] and [`url`] build links (the notifier appends one to each
//! message); [`check`] verifies one. [`LinkSettings`] holds the key, the
//! public address and how long a link works. No HTTP and no store here:
//! the time is passed in.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use tracing::{error, warn};

use crate::config::Config;
use crate::engine::Ts;

/// The first byte of a token: this layout, acknowledging.
const FORMAT_ACK_V1: u8 = 1;
/// Bytes of the HMAC-SHA256 kept in a token: 128 bits.
const MAC_LEN: usize = 16;
/// Signed before the token's bytes, so no other HMAC under the same key
/// can pass for a link.
const MAC_LABEL: &[u8] = b"beredskab ack link\0";
/// The shortest token: format, one-byte incident and expiry, a one-byte
/// person id, the MAC.
const MIN_BYTES: usize = 4 + MAC_LEN;
/// Longer tokens are refused before they are decoded.
const MAX_TOKEN_CHARS: usize = 512;

/// What a link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Ack,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ack => "ack",
        }
    }
}

/// A verified link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub incident: u64,
    /// The id of the person it was sent to (a config id).
    pub person: String,
    pub action: Action,
    /// When it stops working (whole seconds).
    pub expires: Ts,
    /// Its identity: the hex SHA-256 of the token, recorded when used.
    pub id: String,
}

/// Why a link does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("not an acknowledgement link, or part of it is missing")]
    Malformed,
    #[error("the link's signature does not match: it was changed, or made with another key")]
    Tampered,
    #[error("the link for incident {incident} expired at {}", .expired.to_timestamp())]
    Expired { incident: u64, expired: Ts },
}

/// A token acknowledging `incident` as `person` (a config id, not empty)
/// until `expires`, signed with `key`. Expiry is kept in whole seconds, rounded
/// down; times before 1970 count as 1970.
pub fn make(key: &[u8], incident: u64, person: &str, expires: Ts) -> String {
    let mut bytes = Vec::with_capacity(24 + person.len() + MAC_LEN);
    bytes.push(FORMAT_ACK_V1);
    put_varint(&mut bytes, incident);
    put_varint(
        &mut bytes,
        u64::try_from(expires.0.div_euclid(1000)).unwrap_or(0),
    );
    bytes.extend_from_slice(person.as_bytes());
    let tag = signer(key, &bytes).finalize().into_bytes();
    bytes.extend_from_slice(&tag[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The link to put in a message: `public_url/a/TOKEN`, working for the
/// configured `ack_link_ttl` from `now`.
pub fn url(settings: &LinkSettings, incident: u64, person: &str, now: Ts) -> String {
    let token = make(&settings.key, incident, person, now.plus(settings.ttl));
    format!("{}/a/{token}", settings.public_url)
}

/// Verifies a token at `now`: first its MAC (in constant time), then its
/// contents, then its expiry.
pub fn check(key: &[u8], token: &str, now: Ts) -> Result<Link, LinkError> {
    // No key (the random source failed): nothing can be trusted.
    if key.is_empty() {
        return Err(LinkError::Tampered);
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(LinkError::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| LinkError::Malformed)?;
    if bytes.len() < MIN_BYTES {
        return Err(LinkError::Malformed);
    }
    let (signed, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    signer(key, signed)
        .verify_truncated_left(tag)
        .map_err(|_| LinkError::Tampered)?;
    let (&format, rest) = signed.split_first().ok_or(LinkError::Malformed)?;
    let action = match format {
        FORMAT_ACK_V1 => Action::Ack,
        _ => return Err(LinkError::Malformed),
    };
    let (incident, rest) = take_varint(rest).ok_or(LinkError::Malformed)?;
    let (expiry_s, rest) = take_varint(rest).ok_or(LinkError::Malformed)?;
    let person = std::str::from_utf8(rest).map_err(|_| LinkError::Malformed)?;
    if person.is_empty() {
        return Err(LinkError::Malformed);
    }
    let expires = i64::try_from(expiry_s)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .map(Ts)
        .ok_or(LinkError::Malformed)?;
    if now >= expires {
        return Err(LinkError::Expired {
            incident,
            expired: expires,
        });
    }
    Ok(Link {
        incident,
        person: person.to_owned(),
        action,
        expires,
        id: hex::encode(Sha256::digest(token.as_bytes())),
    })
}

/// An HMAC-SHA256 under `key` that has taken the label and `signed`.
fn signer(key: &[u8], signed: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts a key of any length (long ones are hashed), so this
    // never fails, whatever the configured secret is.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(MAC_LABEL);
    mac.update(signed);
    mac
}

/// LEB128: seven bits a byte, low first.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        let shift = 7 * i as u32;
        if shift == 63 && part > 1 {
            return None;
        }
        v |= part << shift;
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

/// How acknowledgement links are made and checked.
#[derive(Clone)]
pub struct LinkSettings {
    /// The HMAC key: the value of `[server] secret_env`.
    pub key: Vec<u8>,
    /// The base of links in messages, without a trailing `/`.
    pub public_url: String,
    /// How long a link works.
    pub ttl: Duration,
}

impl std::fmt::Debug for LinkSettings {
    // Never the key: settings end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSettings")
            .field("public_url", &self.public_url)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LinkSettings {
    /// From `[server]`, with the secret read through `env` (the process
    /// environment, in the daemon). Without `secret_env` set, a key is made
    /// for this run only (links then stop working at a restart), with a
    /// warning.
    pub fn from_config(config: &Config, env: impl Fn(&str) -> Option<String>) -> LinkSettings {
        let server = &config.server;
        let key = server
            .secret_env
            .as_ref()
            .and_then(|var| env(var))
            .filter(|k| !k.is_empty())
            .map(String::into_bytes);
        let key = key.unwrap_or_else(|| {
            warn!(
                "no secret for acknowledgement links ([server] secret_env unset or empty): \
                 links made now stop working when beredskab restarts"
            );
            random_key()
        });
        let public_url = server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", server.listen));
        LinkSettings {
            key,
            public_url: public_url.trim_end_matches('/').to_owned(),
            ttl: server.ack_link_ttl,
        }
    }
}

/// 32 bytes from the operating system's secure random source.
fn random_key() -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut key = vec![0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        // Without a secure source the links cannot be trusted; a link made
        // with an empty key is refused like a forged one.
        error!("no secure random source: acknowledgement links will not verify");
        key.clear();
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a test key that is long enough";
    const NOW: Ts = Ts(1_767_225_600_000); // 2026-01-01T00:00:00Z
    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    fn token(incident: u64, person: &str) -> String {
        make(KEY, incident, person, NOW.plus(DAY))
    }

    #[test]
    fn a_link_round_trips() {
        let t = token(12, "p-drift");
        let link = check(KEY, &t, NOW).expect("verifies");
        assert_eq!(link.incident, 12);
        assert_eq!(link.person, "p-drift");
        assert_eq!(link.action, Action::Ack);
        assert_eq!(link.expires, NOW.plus(DAY));
        assert_eq!(link.id, hex::encode(Sha256::digest(t.as_bytes())));
        assert_eq!(link.id.len(), 64);
        // Any person id survives, and large numbers too.
        let odd = "p-æ/ø å?&#.";
        let link = check(KEY, &make(KEY, u64::MAX, odd, NOW.plus(DAY)), NOW).expect("verifies");
        assert_eq!((link.incident, link.person.as_str()), (u64::MAX, odd));
    }

    #[test]
    fn tokens_are_url_safe_and_differ_per_link() {
        let t = token(7, "p-æ/ø å?&#.");
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
        assert_ne!(token(7, "p-drift"), token(8, "p-drift"));
        assert_ne!(
            check(KEY, &token(7, "p-drift"), NOW).map(|l| l.id),
            check(KEY, &token(8, "p-drift"), NOW).map(|l| l.id)
        );
    }

    #[test]
    fn a_changed_byte_anywhere_is_tampered() {
        let t = token(12, "p-drift");
        let bytes = URL_SAFE_NO_PAD.decode(&t).expect("base64url");
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut changed = bytes.clone();
                changed[i] ^= flip;
                assert_eq!(
                    check(KEY, &URL_SAFE_NO_PAD.encode(&changed), NOW),
                    Err(LinkError::Tampered),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
        // A changed character is refused too: tampered, or not base64url
        // when only the unused low bits of the last character change.
        for i in 0..t.len() {
            for c in ['A', 'z', '0', '-', '_'] {
                let mut changed: Vec<char> = t.chars().collect();
                if changed[i] == c {
                    continue;
                }
                changed[i] = c;
                let changed: String = changed.into_iter().collect();
                let got = check(KEY, &changed, NOW);
                assert!(
                    matches!(got, Err(LinkError::Tampered | LinkError::Malformed)),
                    "char {i} -> {c}: {got:?}"
                );
            }
        }
        // Another key, a shortened or lengthened token.
        assert_eq!(check(b"another key", &t, NOW), Err(LinkError::Tampered));
        assert!(check(KEY, &t[..t.len() - 1], NOW).is_err());
        assert!(check(KEY, &format!("{t}A"), NOW).is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        for t in [
            "",
            "abc",
            "not a link",
            "%41%42",
            "AAAA====",
            &"A".repeat(600),
        ] {
            assert_eq!(check(KEY, t, NOW), Err(LinkError::Malformed), "{t:?}");
        }
    }

    #[test]
    fn a_link_expires() {
        let t = token(3, "p-drift");
        assert!(check(KEY, &t, Ts(NOW.plus(DAY).0 - 1)).is_ok());
        assert_eq!(
            check(KEY, &t, NOW.plus(DAY)),
            Err(LinkError::Expired {
                incident: 3,
                expired: NOW.plus(DAY)
            })
        );
        let past = make(KEY, 3, "p-drift", Ts(NOW.0 - 3_600_000));
        assert!(matches!(
            check(KEY, &past, NOW),
            Err(LinkError::Expired { .. })
        ));
        // Expiry is signed: a link cannot be made to last longer.
        let mut bytes = URL_SAFE_NO_PAD.decode(&past).expect("base64url");
        bytes[3] = bytes[3].wrapping_add(1);
        assert_eq!(
            check(KEY, &URL_SAFE_NO_PAD.encode(&bytes), NOW),
            Err(LinkError::Tampered)
        );
    }

    #[test]
    fn a_link_does_not_verify_as_another() {
        let for_drift = token(12, "p-drift");
        let link = check(KEY, &for_drift, NOW).expect("verifies");
        assert_ne!(link.person, "p-chef");
        assert_ne!(link.incident, 13);
        // Splicing one link's MAC onto another's contents does not verify.
        let a = URL_SAFE_NO_PAD.decode(&for_drift).expect("base64url");
        let b = URL_SAFE_NO_PAD
            .decode(token(12, "p-chef"))
            .expect("base64url");
        let c = URL_SAFE_NO_PAD
            .decode(token(13, "p-drift"))
            .expect("base64url");
        for other in [&b, &c] {
            let mut spliced = other[..other.len() - MAC_LEN].to_vec();
            spliced.extend_from_slice(&a[a.len() - MAC_LEN..]);
            assert_eq!(
                check(KEY, &URL_SAFE_NO_PAD.encode(&spliced), NOW),
                Err(LinkError::Tampered)
            );
        }
    }

    #[test]
    fn a_link_fits_in_an_sms() {
        let settings = LinkSettings {
            key: KEY.to_vec(),
            public_url: "https://beredskab.kommune.dk/x".into(),
            ttl: DAY,
        };
        assert_eq!(settings.public_url.len(), 30);
        let url = url(&settings, 12_345, "p-drift", NOW);
        assert!(url.len() < 80, "{} chars: {url}", url.len());
        assert!(
            url.starts_with("https://beredskab.kommune.dk/x/a/"),
            "{url}"
        );
        let token = url.rsplit('/').next().expect("a token");
        let link = check(KEY, token, NOW).expect("verifies");
        assert_eq!(link.expires, NOW.plus(DAY));
    }

    /// A valid config with these lines in `[server]`.
    fn config(server: &str) -> Config {
        let text = format!(
            "[site]\nname = \"Enhedstest\"\nlanguage = \"en\"\ntimezone = \"Europe/Copenhagen\"\n\n\
             [server]\n{server}\n\
             [[component]]\nid = \"srv-1\"\nkind = \"server\"\nbuilding = \"raadhus\"\n"
        );
        crate::config::load_str("links.toml", &text)
            .expect("a valid config")
            .config
    }

    #[test]
    fn settings_come_from_the_config_and_the_environment() {
        let cfg = config(
            "secret_env = \"LINK_KEY\"\npublic_url = \"https://b.example/x/\"\nack_link_ttl = \"2h\"",
        );
        let env = |var: &str| (var == "LINK_KEY").then(|| "the link key".to_owned());
        let s = LinkSettings::from_config(&cfg, env);
        assert_eq!(s.key, b"the link key");
        assert_eq!(s.public_url, "https://b.example/x");
        assert_eq!(s.ttl, Duration::from_secs(7200));
        assert!(!format!("{s:?}").contains("the link key"), "{s:?}");
        // Unset or empty: a random key for this run, and the listen address.
        let empty = LinkSettings::from_config(&cfg, |_| Some(String::new()));
        let unset = config("");
        let unset_settings = LinkSettings::from_config(&unset, env);
        assert_eq!(empty.key.len(), 32);
        assert_eq!(unset_settings.key.len(), 32);
        assert_ne!(empty.key, unset_settings.key);
        assert_eq!(
            unset_settings.public_url,
            format!("http://{}", unset.server.listen)
        );
    }

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(take_varint(&out), Some((v, &[][..])), "{v}");
        }
        assert_eq!(take_varint(&[0x80; 11]), None);
        assert_eq!(
            take_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(take_varint(&[0x80]), None);
    }
}
