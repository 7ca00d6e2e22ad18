//! The channel senders: one [`Sender`] per `[[channel]]`, built once from
//! its config, that delivers one [`Delivery`] at a time.
//!
//! `sms-http`, `call-http` and `webhook` talk HTTP to a gateway or a chat
//! service (`http.rs`); `smtp` hands mail to a relay (`smtp.rs`); `log`
//! delivers nothing here, because the outbox worker logs every delivery
//! itself. A sender never retries on its own: it says whether trying again
//! may help ([`SendError::Retry`]) or not ([`SendError::Permanent`]), and
//! the worker decides when, and when to fall back.

use std::fmt;
use std::time::Duration;

use crate::catalogue::Person;
use crate::config::{ChannelConfig, ChannelKind};

use super::http::HttpSender;
use super::smtp::SmtpSender;

/// The longest mail subject or chat summary taken from a text, in
/// characters, before the site's name.
pub(super) const HEADLINE_CHARS: usize = 60;

/// One notification to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The idempotency key (unique per notification).
    pub key: &'a str,
    pub incident: u64,
    pub person: &'a Person,
    pub role: Option<&'a str>,
    /// The step's `on` text, or deputy, status, recovery, crisis, severity.
    pub reason: &'a str,
    /// The message without the link (fits one SMS where possible).
    pub text: &'a str,
    /// The acknowledgement link URL, if any.
    pub link: Option<&'a str>,
    /// `[site] name`, for mail subjects and webhooks.
    pub site: &'a str,
}

impl Delivery<'_> {
    /// The text, then a space and the link when there is one: what an SMS
    /// or a chat message says.
    pub fn text_with_link(&self) -> String {
        match self.link {
            Some(link) => format!("{} {link}", self.text),
            None => self.text.to_owned(),
        }
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying (timeout, connection error, 5xx, 429); `retry_after`
    /// from a Retry-After header (seconds or HTTP date).
    #[error("{error}")]
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (a 4xx other than 408/429, no phone/email for
    /// the person, a bad address): the worker goes to the fallback at once.
    #[error("{0}")]
    Permanent(String),
}

impl SendError {
    /// A retryable failure without a hint of when.
    pub(super) fn retry(error: impl Into<String>) -> SendError {
        SendError::Retry {
            error: error.into(),
            retry_after: None,
        }
    }
}

/// Why a channel's config cannot make a sender.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("channel {channel:?}: {problem}")]
    Invalid { channel: String, problem: String },
    #[error("channel {channel:?}: secret {var} ({what}) is not set in the environment")]
    MissingSecret {
        channel: String,
        var: String,
        what: String,
    },
    #[error("channel {channel:?}: cannot build the http client: {detail}")]
    Client { channel: String, detail: String },
    #[error("channel {channel:?}: cannot set up tls: {detail}")]
    Tls { channel: String, detail: String },
}

impl ChannelError {
    pub(super) fn invalid(channel: &ChannelConfig, problem: impl Into<String>) -> ChannelError {
        ChannelError::Invalid {
            channel: channel.id.clone(),
            problem: problem.into(),
        }
    }
}

/// A channel, ready to deliver.
pub enum Sender {
    /// `sms-http`, `call-http` and `webhook`.
    Http(HttpSender),
    Smtp(SmtpSender),
    /// Delivers nothing: the worker's log line is the delivery.
    Log,
}

impl fmt::Debug for Sender {
    // The inner clients hold secrets (headers, SMTP credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Http(h) => write!(f, "Sender::Http({:?})", h.channel()),
            Sender::Smtp(s) => write!(f, "Sender::Smtp({:?})", s.channel()),
            Sender::Log => f.write_str("Sender::Log"),
        }
    }
}

impl Sender {
    /// Builds the sender for one channel. `env` reads an environment
    /// variable (tests pass their own); a secret it does not have is an
    /// error here, not at the first alarm.
    pub fn new(
        channel: &ChannelConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Sender, ChannelError> {
        match channel.kind {
            ChannelKind::SmsHttp | ChannelKind::CallHttp | ChannelKind::Webhook => {
                Ok(Sender::Http(HttpSender::new(channel, env)?))
            }
            ChannelKind::Smtp => Ok(Sender::Smtp(SmtpSender::new(channel, env)?)),
            ChannelKind::Log => Ok(Sender::Log),
        }
    }

    /// Delivers one notification, once.
    pub async fn send(&self, d: &Delivery<'_>) -> Result<(), SendError> {
        match self {
            Sender::Http(h) => h.send(d).await,
            Sender::Smtp(s) => s.send(d).await,
            Sender::Log => Ok(()),
        }
    }
}

/// Reads a secret through `env`; an empty value counts as missing, as in
/// `check`'s warning.
pub(super) fn secret(
    channel: &ChannelConfig,
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    what: &str,
) -> Result<String, ChannelError> {
    env(var)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ChannelError::MissingSecret {
            channel: channel.id.clone(),
            var: var.to_owned(),
            what: what.to_owned(),
        })
}

/// The first sentence of a text, or its first words up to
/// [`HEADLINE_CHARS`] with an ellipsis; whitespace (newlines too) folded
/// to single spaces, so it is safe on one header line.
pub(super) fn headline(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let sentence = flat
        .char_indices()
        .find(|&(i, c)| matches!(c, '.' | '!' | '?') && flat[i + c.len_utf8()..].starts_with([' ']))
        .map_or(flat.as_str(), |(i, c)| &flat[..i + c.len_utf8()]);
    if sentence.chars().count() <= HEADLINE_CHARS {
        return sentence.to_owned();
    }
    let cut = sentence
        .char_indices()
        .nth(HEADLINE_CHARS)
        .map_or(sentence.len(), |(i, _)| i);
    let head = &sentence[..cut];
    // Cut at the last word boundary, unless the first word alone is longer.
    let head = match head.rfind(' ') {
        Some(space) if space > 0 => &head[..space],
        _ => head,
    };
    format!("{}…", head.trim_end_matches([' ', ',', ':', ';', '–', '-']))
}

/// The first line of an error chain, then each cause after a colon.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let next = err.to_string();
        // Some errors repeat their cause in their own message.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headline_is_the_first_sentence() {
        assert_eq!(
            headline("KRITISK #3: Brand – serverrum. Ramt: Omsorg. Forventes løst kl. 14:30."),
            "KRITISK #3: Brand – serverrum."
        );
        assert_eq!(headline("RESOLVED #2: back."), "RESOLVED #2: back.");
        assert_eq!(headline("no full stop"), "no full stop");
        // A dot inside a word does not end the sentence.
        assert_eq!(
            headline("srv-01.example.dk down. x"),
            "srv-01.example.dk down."
        );
    }

    #[test]
    fn a_long_headline_is_cut_at_a_word() {
        let text = "CRITICAL #12: Power failure – mains feed of the town hall and the \
                    library annex. Affected: all.";
        let h = headline(text);
        assert_eq!(
            h,
            "CRITICAL #12: Power failure – mains feed of the town hall…"
        );
        assert!(h.chars().count() <= HEADLINE_CHARS + 1);
        let one_word = "x".repeat(100);
        assert_eq!(headline(&one_word).chars().count(), HEADLINE_CHARS + 1);
    }

    #[test]
    fn headline_folds_line_breaks() {
        assert_eq!(
            headline("a\r\nBcc: evil@example.com"),
            "a Bcc: evil@example.com"
        );
    }

    #[test]
    fn a_missing_or_empty_secret_names_the_channel_and_variable() {
        let config: ChannelConfig =
            toml::from_str("id = \"sms\"\nkind = \"sms-http\"").expect("config");
        let env = |v: &str| (v == "EMPTY").then(String::new);
        let err = secret(&config, &env, "EMPTY", "header Authorization").unwrap_err();
        assert_eq!(
            err.to_string(),
            "channel \"sms\": secret EMPTY (header Authorization) is not set in the environment"
        );
    }
}
