//! HTTP channels: `sms-http` and `call-http` send a request rendered from
//! the channel's `body` template (parsed by `config::template`) to a
//! gateway; `webhook` posts the notification as JSON in one of the shapes
//! chat services take.
//!
//! Every request carries the notification's key as `Idempotency-Key`, so a
//! gateway that honours it sends once even when the worker retries.

use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Method, Response, StatusCode, Url};
use serde_json::json;

use crate::USER_AGENT;
use crate::config::template::{DEFAULT_BODY, Piece, Template, Var};
use crate::config::{ChannelConfig, ChannelKind, WebhookFormat};

use super::channel::{ChannelError, Delivery, SendError, error_chain, headline, secret};

/// The header that carries the notification's key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// How much of an error response's body goes into the error message.
const ERROR_BODY_BYTES: usize = 300;

/// A sender for one `sms-http`, `call-http` or `webhook` channel.
pub struct HttpSender {
    channel: String,
    client: Client,
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Body,
    /// SMS and calls go to a phone number: a person without one cannot be
    /// reached this way.
    needs_phone: bool,
}

/// What a request says.
enum Body {
    Template(Template),
    Webhook(WebhookFormat),
}

impl HttpSender {
    pub(super) fn new(
        c: &ChannelConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpSender, ChannelError> {
        let url_text = c
            .url
            .as_deref()
            .ok_or_else(|| ChannelError::invalid(c, format!("{} needs a url", c.kind.as_str())))?;
        let url = Url::parse(url_text)
            .map_err(|e| ChannelError::invalid(c, format!("url {url_text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ChannelError::invalid(
                c,
                format!("url {url_text:?} is not an http:// or https:// url with a host"),
            ));
        }
        let method = match c.method.as_deref() {
            None => Method::POST,
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| ChannelError::invalid(c, format!("method {m:?} is not valid")))?,
        };
        let body = match (c.kind, &c.body, c.format) {
            (ChannelKind::Webhook, Some(_), Some(_)) => {
                return Err(ChannelError::invalid(
                    c,
                    "a webhook takes either a body template or a format, not both",
                ));
            }
            (ChannelKind::Webhook, None, format) => Body::Webhook(format.unwrap_or_default()),
            (_, Some(body), _) => Body::Template(
                Template::parse(body).map_err(|problem| ChannelError::invalid(c, problem))?,
            ),
            // SPEC §2 does not require a body: the common gateway shape.
            (_, None, _) => Body::Template(
                Template::parse(DEFAULT_BODY)
                    .map_err(|problem| ChannelError::invalid(c, problem))?,
            ),
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &c.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ChannelError::invalid(c, format!("{name:?} is not a header name")))?;
            let (value, sensitive) = match value.strip_prefix("env:") {
                Some(var) => (secret(c, env, var, &format!("header {name}"))?, true),
                None => (value.clone(), false),
            };
            // The value itself stays out of the message: it may be a secret.
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                ChannelError::invalid(
                    c,
                    format!("header {name:?} has a value that is not allowed"),
                )
            })?;
            value.set_sensitive(sensitive);
            headers.append(header, value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        crate::tls::install_provider();
        // Gateways are outside the site's network, so a proxy from the
        // environment is honoured. Redirects are not followed: a POST that
        // a redirect turns into a GET would be lost silently.
        let client = Client::builder()
            .user_agent(USER_AGENT)
            .timeout(c.timeout())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChannelError::Client {
                channel: c.id.clone(),
                detail: error_chain(&e),
            })?;
        Ok(HttpSender {
            channel: c.id.clone(),
            client,
            method,
            url,
            headers,
            body,
            needs_phone: matches!(c.kind, ChannelKind::SmsHttp | ChannelKind::CallHttp),
        })
    }

    pub(super) fn channel(&self) -> &str {
        &self.channel
    }

    pub(super) async fn send(&self, d: &Delivery<'_>) -> Result<(), SendError> {
        let phone = d.person.phone.as_deref().filter(|p| !p.trim().is_empty());
        if self.needs_phone && phone.is_none() {
            return Err(SendError::Permanent(format!(
                "person {} has no phone number",
                d.person.id
            )));
        }
        let body = match &self.body {
            Body::Template(t) => render(t, d, phone)?,
            Body::Webhook(format) => webhook_body(*format, d).to_string(),
        };
        let key = HeaderValue::from_str(&header_safe_key(d.key))
            .map_err(|_| SendError::Permanent(format!("key {:?} cannot be a header", d.key)))?;
        let response = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .header(IDEMPOTENCY_KEY, key)
            .body(body)
            .send()
            .await
            // The URL may carry a gateway's API key in its query.
            .map_err(|e| SendError::retry(error_chain(&e.without_url())))?;
        outcome(response, SystemTime::now()).await
    }
}

/// Sorts a response into sent, worth retrying, or not.
async fn outcome(mut response: Response, now: SystemTime) -> Result<(), SendError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after = retry_after(response.headers(), now);
    let mut error = format!("HTTP {status}");
    if status.is_redirection()
        && let Some(to) = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
    {
        error.push_str(&format!(" to {to} (redirects are not followed)"));
    }
    let detail = error_body(&mut response).await;
    if !detail.is_empty() {
        error.push_str(": ");
        error.push_str(&detail);
    }
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Err(SendError::Retry { error, retry_after })
    } else {
        Err(SendError::Permanent(error))
    }
}

/// The start of an error response's body, on one line, for the log.
async fn error_body(response: &mut Response) -> String {
    let mut bytes = Vec::new();
    let mut ended = false;
    while bytes.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            // A body that cannot be read changes nothing about the status.
            Ok(None) | Err(_) => {
                ended = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let flat: Vec<char> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let mut shown: String = flat.iter().take(ERROR_BODY_BYTES).collect();
    if !ended || flat.len() > ERROR_BODY_BYTES {
        shown.push('…');
    }
    shown
}

/// A Retry-After header as a duration from `now`: delay-seconds or an
/// HTTP date (a date in the past means at once).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The key as a header value: visible ASCII and spaces stay, anything else
/// (and `%`) is percent-encoded, so distinct keys stay distinct.
fn header_safe_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if (b == b' ' || b.is_ascii_graphic()) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a webhook posts, by format.
fn webhook_body(format: WebhookFormat, d: &Delivery<'_>) -> serde_json::Value {
    match format {
        WebhookFormat::Json => json!({
            "incident": d.incident,
            "reason": d.reason,
            "person": { "id": d.person.id, "name": d.person.name },
            "role": d.role,
            "text": d.text,
            "link": d.link,
            "site": d.site,
            "key": d.key,
        }),
        // An Office 365 connector card; Teams turns the bare URL into a link.
        WebhookFormat::Teams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": format!("[{}] {}", d.site, headline(d.text)),
            "title": d.site,
            "text": d.text_with_link(),
        }),
        // Slack reads `&`, `<` and `>` as markup and wants links in `<…>`.
        WebhookFormat::Slack => {
            let mut text = format!("[{}] {}", slack_escape(d.site), slack_escape(d.text));
            if let Some(link) = d.link {
                text.push_str(&format!(" <{}>", slack_escape(link)));
            }
            json!({ "text": text })
        }
        WebhookFormat::Mattermost => {
            json!({ "text": format!("[{}] {}", d.site, d.text_with_link()) })
        }
    }
}

fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Fills in a body template's values, each JSON-escaped, in one pass: a
/// value that contains `{{…}}` itself stays as it is.
fn render(template: &Template, d: &Delivery<'_>, phone: Option<&str>) -> Result<String, SendError> {
    let mut out = String::new();
    for piece in template.pieces() {
        match piece {
            Piece::Literal(s) => out.push_str(s),
            Piece::Var(Var::Phone) => {
                let phone = phone.ok_or_else(|| {
                    SendError::Permanent(format!("person {} has no phone number", d.person.id))
                })?;
                json_escape_into(&mut out, phone);
            }
            Piece::Var(Var::Text) => json_escape_into(&mut out, &d.text_with_link()),
            Piece::Var(Var::Link) => json_escape_into(&mut out, d.link.unwrap_or("")),
            Piece::Var(Var::Incident) => out.push_str(&d.incident.to_string()),
            Piece::Var(Var::Name) => json_escape_into(&mut out, &d.person.name),
        }
    }
    Ok(out)
}

/// Appends `s` escaped for the inside of a JSON string, as serde_json
/// escapes it.
fn json_escape_into(out: &mut String, s: &str) {
    // A JSON string's Display is the quoted, escaped text; the template
    // supplies the quotes.
    let quoted = serde_json::Value::from(s).to_string();
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted);
    out.push_str(inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue::Person;

    fn person() -> Person {
        Person {
            id: "p-drift".into(),
            name: "Søren \"Drift\" Æbelø".into(),
            phone: Some("+4511111111".into()),
            email: None,
        }
    }

    fn delivery<'a>(person: &'a Person, text: &'a str, link: Option<&'a str>) -> Delivery<'a> {
        Delivery {
            key: "7/0/expected > 30m/p-drift/sms",
            incident: 7,
            person,
            role: Some("drift-leder"),
            reason: "expected > 30m",
            text,
            link,
            site: "Eksempel Kommune – IT",
        }
    }

    #[test]
    fn templates_escape_every_value_for_json() {
        let t = Template::parse(
            r#"{"to":"{{phone}}","msg":"{{ text }}","l":"{{link}}","n":{{incident}},"who":"{{name}}"}"#,
        )
        .expect("template");
        let p = person();
        let d = delivery(
            &p,
            "Line \"one\"\nback\\slash {{phone}}",
            Some("https://x/a?b=1&c=2"),
        );
        let body = render(&t, &d, Some("+4511111111")).expect("render");
        let v: serde_json::Value = serde_json::from_str(&body).expect("valid json");
        assert_eq!(v["to"], "+4511111111");
        assert_eq!(
            v["msg"],
            "Line \"one\"\nback\\slash {{phone}} https://x/a?b=1&c=2"
        );
        assert_eq!(v["l"], "https://x/a?b=1&c=2");
        assert_eq!(v["n"], 7);
        assert_eq!(v["who"], "Søren \"Drift\" Æbelø");
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        json_escape_into(&mut out, "a\u{1}b\u{7f}");
        assert_eq!(out, "a\\u0001b\u{7f}");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(120)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:50:07 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }

    #[test]
    fn keys_become_header_values_without_collisions() {
        assert_eq!(
            header_safe_key("7/0/expected > 30m/p-drift/sms"),
            "7/0/expected > 30m/p-drift/sms"
        );
        assert_eq!(
            header_safe_key("1/0/open/p-søren/sms"),
            "1/0/open/p-s%C3%B8ren/sms"
        );
        assert_eq!(header_safe_key("a%C3"), "a%25C3");
        assert!(HeaderValue::from_str(&header_safe_key("x\r\ny: z")).is_ok());
    }

    #[test]
    fn webhook_shapes() {
        let p = person();
        let d = delivery(
            &p,
            "KRITISK #7: Brand – serverrum. Ramt: Omsorg.",
            Some("https://b/a/1"),
        );
        let json = webhook_body(WebhookFormat::Json, &d);
        assert_eq!(json["incident"], 7);
        assert_eq!(json["person"]["id"], "p-drift");
        assert_eq!(json["role"], "drift-leder");
        assert_eq!(json["link"], "https://b/a/1");
        let teams = webhook_body(WebhookFormat::Teams, &d);
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(
            teams["text"],
            "KRITISK #7: Brand – serverrum. Ramt: Omsorg. https://b/a/1"
        );
        let d = delivery(&p, "expected > 30m & more", Some("https://b/a?x=1&y=2"));
        assert_eq!(
            webhook_body(WebhookFormat::Slack, &d)["text"],
            "[Eksempel Kommune – IT] expected &gt; 30m &amp; more <https://b/a?x=1&amp;y=2>"
        );
        assert_eq!(
            webhook_body(WebhookFormat::Mattermost, &d)["text"],
            "[Eksempel Kommune – IT] expected > 30m & more https://b/a?x=1&y=2"
        );
    }
}
