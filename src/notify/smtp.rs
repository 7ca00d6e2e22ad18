//! The `smtp` channel: one plain-text mail per notification, handed to the
//! configured relay with lettre over rustls (ring).
//!
//! Messages are built only with lettre's builders, so alarm text can never
//! add a header. The notification's key is the mail's Message-ID: a mail
//! sent twice (SMTP cannot tell whether a connection lost after the final
//! dot delivered) carries the same id both times, for receivers and
//! archives that deduplicate on it.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use reqwest::Url;

use crate::config::{ChannelConfig, SmtpTls};

use super::channel::{ChannelError, Delivery, SendError, error_chain, headline, secret};

/// Ports by transport security when the url names none (RFC 8314).
const PORT_PLAIN: u16 = 25;
const PORT_STARTTLS: u16 = 587;
const PORT_TLS: u16 = 465;
/// The right-hand side of every Message-ID.
const MESSAGE_ID_DOMAIN: &str = "beredskab";

/// A sender for one `smtp` channel.
pub struct SmtpSender {
    channel: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpSender {
    pub(super) fn new(
        c: &ChannelConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SmtpSender, ChannelError> {
        let url_text = c
            .url
            .as_deref()
            .ok_or_else(|| ChannelError::invalid(c, "smtp needs a url"))?;
        let url = Url::parse(url_text)
            .map_err(|e| ChannelError::invalid(c, format!("url {url_text:?}: {e}")))?;
        let tls = match (url.scheme(), c.tls) {
            ("smtp", tls) => tls.unwrap_or_default(),
            ("smtps", None | Some(SmtpTls::Tls)) => SmtpTls::Tls,
            ("smtps", Some(_)) => {
                return Err(ChannelError::invalid(
                    c,
                    "an smtps:// url is TLS from the start: leave tls out or set it to \"tls\"",
                ));
            }
            _ => {
                return Err(ChannelError::invalid(
                    c,
                    format!("url {url_text:?} is not an smtp:// or smtps:// url"),
                ));
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ChannelError::invalid(
                c,
                "credentials go in username and password_env, not in the url",
            ));
        }
        // lettre resolves the host itself and wants IPv6 without brackets.
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(|| ChannelError::invalid(c, format!("url {url_text:?} has no host")))?;
        let port = url.port().unwrap_or(match tls {
            SmtpTls::None => PORT_PLAIN,
            SmtpTls::Starttls => PORT_STARTTLS,
            SmtpTls::Tls => PORT_TLS,
        });
        let from_text = c
            .from
            .as_deref()
            .ok_or_else(|| ChannelError::invalid(c, "smtp needs from"))?;
        let from: Mailbox = from_text.parse().map_err(|e| {
            ChannelError::invalid(c, format!("from {from_text:?} is not a mail address: {e}"))
        })?;
        let from = Mailbox::new(from.name.as_deref().and_then(display_name), from.email);

        crate::tls::install_provider();
        let params = || {
            TlsParameters::new(host.clone()).map_err(|e| ChannelError::Tls {
                channel: c.id.clone(),
                detail: error_chain(&e),
            })
        };
        let tls = match tls {
            SmtpTls::None => Tls::None,
            // Required, not opportunistic: a relay that stops offering
            // STARTTLS must not get the credentials in the clear.
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(c.timeout()));
        match (&c.username, &c.password_env) {
            (Some(user), Some(var)) => {
                let password = secret(c, env, var, "password_env")?;
                builder = builder.credentials(Credentials::new(user.clone(), password));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ChannelError::invalid(c, "username needs password_env"));
            }
            (None, Some(_)) => {
                return Err(ChannelError::invalid(c, "password_env needs username"));
            }
        }
        Ok(SmtpSender {
            channel: c.id.clone(),
            transport: builder.build(),
            from,
        })
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) async fn send(&self, d: &Delivery<'_>) -> Result<(), SendError> {
        let message = self.message(d)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the relay refused this mail for good (a bad recipient, a
            // policy); anything else, a 4xx or a lost connection, may pass
            // later.
            Err(e) if e.is_permanent() => Err(SendError::Permanent(error_chain(&e))),
            Err(e) => Err(SendError::retry(error_chain(&e))),
        }
    }

    fn message(&self, d: &Delivery<'_>) -> Result<Message, SendError> {
        let email = d
            .person
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .ok_or_else(|| {
                SendError::Permanent(format!("person {} has no mail address", d.person.id))
            })?;
        let address: Address = email.parse().map_err(|e| {
            SendError::Permanent(format!(
                "person {}: {email:?} is not a mail address: {e}",
                d.person.id
            ))
        })?;
        let mut body = d.text.to_owned();
        if let Some(link) = d.link {
            body.push_str("\n\n");
            body.push_str(link);
        }
        Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(display_name(&d.person.name), address))
            .subject(one_line(&format!("[{}] {}", d.site, headline(d.text))))
            .message_id(Some(message_id(d.key)))
            // RFC 3834: keeps vacation replies away from the sender.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| SendError::Permanent(format!("cannot build the mail: {e}")))
    }
}

/// A person's name as a mailbox's display name: lettre cannot encode a
/// line break there (its `to` panics on one), so names are put on one line.
fn display_name(name: &str) -> Option<String> {
    let name = one_line(name);
    (!name.is_empty()).then_some(name)
}

/// Whitespace runs folded to one space, other control characters dropped.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<key@beredskab>` with the key made a dot-atom: letters, digits, `-`,
/// `_` and `/` stay, every other byte becomes `=XX`, so distinct keys stay
/// distinct.
fn message_id(key: &str) -> String {
    let mut id = String::with_capacity(key.len() + 16);
    id.push('<');
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("={b:02X}"));
        }
    }
    id.push('@');
    id.push_str(MESSAGE_ID_DOMAIN);
    id.push('>');
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_dot_atoms() {
        assert_eq!(
            message_id("7/0/expected > 30m/p-drift/mail"),
            "<7/0/expected=20=3E=2030m/p-drift/mail@beredskab>"
        );
        assert_eq!(message_id("a=b"), "<a=3Db@beredskab>");
        assert_eq!(message_id("p-ø.x"), "<p-=C3=B8=2Ex@beredskab>");
    }

    #[test]
    fn names_and_subjects_go_on_one_line() {
        assert_eq!(one_line(" Eve\r\nBcc:\u{7}  x\t"), "Eve Bcc: x");
        assert_eq!(display_name("\r\n"), None);
        assert_eq!(display_name("Søren Æbelø").as_deref(), Some("Søren Æbelø"));
    }
}
