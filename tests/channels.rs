//! The channel senders against real servers on 127.0.0.1: an HTTP server
//! standing in for the SMS and call gateways and the chat webhooks, which
//! records every request and can be told (by path) to fail, hang or throttle;
//! and a real SMTP server (Python's aiosmtpd, tests/common/smtp_sink.py)
//! that writes every mail it accepts to a file. aiosmtpd is required: a
//! missing one fails these tests, it never skips them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use beredskab::catalogue::Person;
use beredskab::config::ChannelConfig;
use beredskab::notify::channel::{ChannelError, Delivery, SendError, Sender};
use serde_json::{Value, json};

mod common;

use common::smtp::SmtpSink;

const SITE: &str = "Eksempel Kommune – IT";
const LINK: &str = "https://beredskab.example.dk/ack/7?t=ab+c&x=1";
/// Quotes, a backslash, a line break and Danish letters: everything the
/// JSON escaping must get right.
const TEXT: &str =
    "KRITISK #7: Brand – \"serverrum\". Ramt: Omsorg\\Alarmer.\nForventes løst kl. 14:30.";
const SMS_KEY: &str = "7/0/expected > 30m/p-drift/sms";
const MAIL_KEY: &str = "7/0/expected > 30m/p-drift/mail";

fn person() -> Person {
    Person {
        id: "p-drift".into(),
        name: "Søren \"Drift\" Æbelø".into(),
        phone: Some("+4511111111".into()),
        email: Some("drift@example.dk".into()),
    }
}

fn delivery<'a>(key: &'a str, person: &'a Person, link: Option<&'a str>) -> Delivery<'a> {
    Delivery {
        key,
        incident: 7,
        person,
        role: Some("drift-leder"),
        reason: "expected > 30m",
        text: TEXT,
        link,
        site: SITE,
    }
}

fn channel(toml_text: &str) -> ChannelConfig {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("bad test channel: {e}\n{toml_text}"))
}

fn env(name: &str) -> Option<String> {
    match name {
        "SMS_TOKEN" => Some("Bearer s3cret".into()),
        "SMTP_PASSWORD" => Some("mail-secret".into()),
        "WRONG_PASSWORD" => Some("guess".into()),
        _ => None,
    }
}

fn sender(toml_text: &str) -> Sender {
    Sender::new(&channel(toml_text), &env).unwrap_or_else(|e| panic!("sender: {e}"))
}

fn new_error(toml_text: &str) -> String {
    match Sender::new(&channel(toml_text), &env) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

fn expect_retry(r: Result<(), SendError>) -> (String, Option<Duration>) {
    match r {
        Err(SendError::Retry { error, retry_after }) => (error, retry_after),
        other => panic!("expected Retry, got {other:?}"),
    }
}

fn expect_permanent(r: Result<(), SendError>) -> String {
    match r {
        Err(SendError::Permanent(e)) => e,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The HTTP gateway

/// One request as the gateway saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

#[derive(Clone, Default)]
struct Gateway {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Gateway {
    async fn start() -> (Gateway, SocketAddr) {
        let gateway = Gateway::default();
        let app = Router::new().fallback(answer).with_state(gateway.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (gateway, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("gateway lock").clone()
    }

    fn only(&self) -> Seen {
        let seen = self.seen();
        assert_eq!(seen.len(), 1, "expected exactly one request: {seen:#?}");
        seen[0].clone()
    }
}

/// Records the request, then answers as its path says.
async fn answer(
    State(g): State<Gateway>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    g.seen.lock().expect("gateway lock").push(Seen {
        method,
        path: uri.path().to_owned(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    match uri.path() {
        "/500" => (StatusCode::INTERNAL_SERVER_ERROR, "gateway\nbroke").into_response(),
        "/429" => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "slow down",
        )
            .into_response(),
        "/503-date" => {
            let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", at)], "").into_response()
        }
        "/502" => (StatusCode::BAD_GATEWAY, "ø".repeat(2000)).into_response(),
        "/408" => StatusCode::REQUEST_TIMEOUT.into_response(),
        "/400" => (StatusCode::BAD_REQUEST, "unknown recipient").into_response(),
        "/401" => StatusCode::UNAUTHORIZED.into_response(),
        "/302" => (StatusCode::FOUND, [("location", "/ok")]).into_response(),
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        _ => (StatusCode::OK, "{\"queued\":true}").into_response(),
    }
}

fn sms_channel(addr: SocketAddr, path: &str) -> String {
    format!(
        r#"id = "sms"
kind = "sms-http"
url = "http://{addr}{path}"
body = '{{"recipient":"{{{{phone}}}}","message":"{{{{text}}}}","link":"{{{{link}}}}","incident":{{{{incident}}}},"name":"{{{{name}}}}"}}'
headers = {{ Authorization = "env:SMS_TOKEN", X-Client = "beredskab-test" }}
timeout = "1s"
"#
    )
}

// ---------------------------------------------------------------------------
// sms-http and call-http

#[tokio::test]
async fn sms_renders_the_template_with_secrets_and_the_key() {
    let (gw, addr) = Gateway::start().await;
    let sms = sender(&sms_channel(addr, "/send"));
    let p = person();
    sms.send(&delivery(SMS_KEY, &p, Some(LINK)))
        .await
        .expect("sent");

    let req = gw.only();
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, "/send");
    assert_eq!(req.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(req.header("x-client"), Some("beredskab-test"));
    assert_eq!(req.header("idempotency-key"), Some(SMS_KEY));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "recipient": "+4511111111",
            "message": format!("{TEXT} {LINK}"),
            "link": LINK,
            "incident": 7,
            "name": "Søren \"Drift\" Æbelø",
        })
    );
    // The escaping is JSON's, done by the sender, not a re-encoding here.
    assert!(req.body.contains(r#"\"serverrum\""#), "{}", req.body);
    assert!(
        req.body.contains(r"Omsorg\\Alarmer.\nForventes"),
        "{}",
        req.body
    );
}

#[tokio::test]
async fn call_uses_the_method_and_a_text_without_link_has_no_trailing_space() {
    let (gw, addr) = Gateway::start().await;
    let call = sender(&format!(
        r#"id = "call"
kind = "call-http"
url = "http://{addr}/call?account=9"
method = "PUT"
body = '{{"to":"{{{{phone}}}}","say":"{{{{text}}}}","link":"{{{{link}}}}"}}'
"#
    ));
    let p = person();
    call.send(&delivery("7/1/crisis/p-drift/call", &p, None))
        .await
        .expect("sent");
    let req = gw.only();
    assert_eq!(req.method, Method::PUT);
    assert_eq!(req.path, "/call");
    assert_eq!(
        req.header("idempotency-key"),
        Some("7/1/crisis/p-drift/call")
    );
    assert_eq!(
        req.json(),
        json!({ "to": "+4511111111", "say": TEXT, "link": "" })
    );
}

#[tokio::test]
async fn a_person_without_a_phone_is_permanent_and_nothing_is_sent() {
    let (gw, addr) = Gateway::start().await;
    let sms = sender(&sms_channel(addr, "/send"));
    let mut p = person();
    p.phone = None;
    let e = expect_permanent(sms.send(&delivery(SMS_KEY, &p, Some(LINK))).await);
    assert_eq!(e, "person p-drift has no phone number");
    p.phone = Some("  ".into());
    expect_permanent(sms.send(&delivery(SMS_KEY, &p, Some(LINK))).await);
    assert!(gw.seen().is_empty());
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried() {
    let (gw, addr) = Gateway::start().await;
    let p = person();
    let d = delivery(SMS_KEY, &p, Some(LINK));

    let (error, after) = expect_retry(sender(&sms_channel(addr, "/500")).send(&d).await);
    assert_eq!(error, "HTTP 500 Internal Server Error: gateway broke");
    assert_eq!(after, None);

    let (error, after) = expect_retry(sender(&sms_channel(addr, "/429")).send(&d).await);
    assert_eq!(error, "HTTP 429 Too Many Requests: slow down");
    assert_eq!(after, Some(Duration::from_secs(2)));

    let (_, after) = expect_retry(sender(&sms_channel(addr, "/503-date")).send(&d).await);
    let after = after.expect("retry_after from an HTTP date");
    // The date has whole seconds: 89–90 s from when the gateway wrote it.
    assert!(
        (Duration::from_secs(85)..=Duration::from_secs(90)).contains(&after),
        "{after:?}"
    );

    let (error, _) = expect_retry(sender(&sms_channel(addr, "/408")).send(&d).await);
    assert_eq!(error, "HTTP 408 Request Timeout");

    // A long error page is cut short for the log.
    let (error, _) = expect_retry(sender(&sms_channel(addr, "/502")).send(&d).await);
    assert_eq!(error, format!("HTTP 502 Bad Gateway: {}…", "ø".repeat(300)));

    // Each attempt carried the same key, so the gateway can drop repeats.
    let keys: Vec<_> = gw
        .seen()
        .iter()
        .map(|s| s.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys, vec![Some(SMS_KEY.to_owned()); 5]);
}

#[tokio::test]
async fn client_errors_and_redirects_are_permanent() {
    let (gw, addr) = Gateway::start().await;
    let p = person();
    let d = delivery(SMS_KEY, &p, Some(LINK));
    let e = expect_permanent(sender(&sms_channel(addr, "/400")).send(&d).await);
    assert_eq!(e, "HTTP 400 Bad Request: unknown recipient");
    let e = expect_permanent(sender(&sms_channel(addr, "/401")).send(&d).await);
    assert_eq!(e, "HTTP 401 Unauthorized");
    let e = expect_permanent(sender(&sms_channel(addr, "/302")).send(&d).await);
    assert_eq!(e, "HTTP 302 Found to /ok (redirects are not followed)");
    let paths: Vec<_> = gw.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        ["/400", "/401", "/302"],
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn a_gateway_that_hangs_past_the_timeout_is_retried() {
    let (gw, addr) = Gateway::start().await;
    let sms = sender(&sms_channel(addr, "/hang"));
    let p = person();
    let started = Instant::now();
    let (error, after) = expect_retry(sms.send(&delivery(SMS_KEY, &p, Some(LINK))).await);
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "timeout = 1s, took {took:?}"
    );
    assert!(
        error.contains("timed out") || error.contains("timeout"),
        "{error}"
    );
    // The URL stays out of the message (gateways put API keys in it).
    assert!(!error.contains("127.0.0.1"), "{error}");
    assert_eq!(after, None);
    assert_eq!(gw.seen().len(), 1);
}

#[tokio::test]
async fn a_gateway_that_is_down_is_retried() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let p = person();
    let (error, after) = expect_retry(
        sender(&sms_channel(addr, "/send"))
            .send(&delivery(SMS_KEY, &p, Some(LINK)))
            .await,
    );
    assert!(!error.is_empty());
    assert_eq!(after, None);
}

#[tokio::test]
async fn non_ascii_keys_reach_the_gateway_percent_encoded() {
    let (gw, addr) = Gateway::start().await;
    let p = person();
    sender(&sms_channel(addr, "/send"))
        .send(&delivery("7/0/open/p-søren/sms", &p, None))
        .await
        .expect("sent");
    assert_eq!(
        gw.only().header("idempotency-key"),
        Some("7/0/open/p-s%C3%B8ren/sms")
    );
}

// ---------------------------------------------------------------------------
// webhook

async fn webhook(format: &str) -> Seen {
    let (gw, addr) = Gateway::start().await;
    let hook = sender(&format!(
        "id = \"chat\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nformat = \"{format}\"\n"
    ));
    // A webhook needs neither phone nor mail.
    let mut p = person();
    p.phone = None;
    p.email = None;
    hook.send(&delivery("7/0/open/p-drift/chat", &p, Some(LINK)))
        .await
        .expect("sent");
    let req = gw.only();
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("idempotency-key"), Some("7/0/open/p-drift/chat"));
    req
}

#[tokio::test]
async fn webhook_json_carries_the_whole_notification() {
    assert_eq!(
        webhook("json").await.json(),
        json!({
            "incident": 7,
            "reason": "expected > 30m",
            "person": { "id": "p-drift", "name": "Søren \"Drift\" Æbelø" },
            "role": "drift-leder",
            "text": TEXT,
            "link": LINK,
            "site": SITE,
            "key": "7/0/open/p-drift/chat",
        })
    );
}

#[tokio::test]
async fn webhook_teams_is_a_message_card() {
    assert_eq!(
        webhook("teams").await.json(),
        json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "summary": format!("[{SITE}] KRITISK #7: Brand – \"serverrum\"."),
            "title": SITE,
            "text": format!("{TEXT} {LINK}"),
        })
    );
}

#[tokio::test]
async fn webhook_slack_and_mattermost_post_text() {
    assert_eq!(
        webhook("slack").await.json(),
        json!({ "text": format!("[{SITE}] {TEXT} <https://beredskab.example.dk/ack/7?t=ab+c&amp;x=1>") })
    );
    assert_eq!(
        webhook("mattermost").await.json(),
        json!({ "text": format!("[{SITE}] {TEXT} {LINK}") })
    );
}

#[tokio::test]
async fn webhook_defaults_to_json_and_can_take_a_template() {
    let json = webhook_default_body().await;
    assert_eq!(json["site"], SITE);
    let (gw, addr) = Gateway::start().await;
    sender(&format!(
        "id = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/h\"\nbody = '{{\"msg\":\"{{{{text}}}}\"}}'\n"
    ))
    .send(&delivery("k", &person(), None))
    .await
    .expect("sent");
    assert_eq!(gw.only().json(), json!({ "msg": TEXT }));
}

async fn webhook_default_body() -> Value {
    let (gw, addr) = Gateway::start().await;
    sender(&format!(
        "id = \"hook\"\nkind = \"webhook\"\nurl = \"http://{addr}/h\"\n"
    ))
    .send(&delivery("k", &person(), None))
    .await
    .expect("sent");
    gw.only().json()
}

// ---------------------------------------------------------------------------
// log and configs that cannot make a sender

#[tokio::test]
async fn log_delivers_nothing_itself() {
    let log = sender("id = \"log\"\nkind = \"log\"\n");
    let mut p = person();
    p.phone = None;
    p.email = None;
    log.send(&delivery("k", &p, Some(LINK))).await.expect("ok");
}

#[test]
fn configs_that_cannot_make_a_sender_say_why() {
    let sms = |rest: &str| format!("id = \"sms\"\nkind = \"sms-http\"\n{rest}");
    assert_eq!(
        new_error(&sms(
            "url = \"http://127.0.0.1:9/s\"\nbody = \"x\"\nheaders = { Authorization = \"env:NOT_SET\" }"
        )),
        "channel \"sms\": secret NOT_SET (header Authorization) is not set in the environment"
    );
    assert_eq!(
        new_error(&sms(
            "url = \"http://127.0.0.1:9/s\"\nbody = '{\"t\":\"{{txt}}\"}'"
        )),
        "channel \"sms\": body: unknown placeholder {{txt}} (known: phone, text, link, incident, name)"
    );
    // Without a body, the common gateway shape is sent (DEFAULT_BODY).
    assert!(Sender::new(&channel(&sms("url = \"http://127.0.0.1:9/s\"")), &env).is_ok());
    assert_eq!(
        new_error(&sms("body = \"x\"")),
        "channel \"sms\": sms-http needs a url"
    );
    assert_eq!(
        new_error(&sms("url = \"ftp://127.0.0.1/s\"\nbody = \"x\"")),
        "channel \"sms\": url \"ftp://127.0.0.1/s\" is not an http:// or https:// url with a host"
    );
    assert_eq!(
        new_error(
            "id = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nbody = \"x\"\nformat = \"slack\""
        ),
        "channel \"hook\": a webhook takes either a body template or a format, not both"
    );
    let mail = |rest: &str| format!("id = \"mail\"\nkind = \"smtp\"\n{rest}");
    assert_eq!(
        new_error(&mail("url = \"smtp://127.0.0.1:25\"")),
        "channel \"mail\": smtp needs from"
    );
    assert!(
        new_error(&mail(
            "url = \"smtp://127.0.0.1:25\"\nfrom = \"not an address\""
        ))
        .starts_with("channel \"mail\": from \"not an address\" is not a mail address")
    );
    assert_eq!(
        new_error(&mail(
            "url = \"smtp://127.0.0.1:25\"\nfrom = \"a@b.dk\"\nusername = \"u\"\npassword_env = \"NOT_SET\""
        )),
        "channel \"mail\": secret NOT_SET (password_env) is not set in the environment"
    );
    assert_eq!(
        new_error(&mail(
            "url = \"smtp://127.0.0.1:25\"\nfrom = \"a@b.dk\"\nusername = \"u\""
        )),
        "channel \"mail\": username needs password_env"
    );
    assert_eq!(
        new_error(&mail(
            "url = \"smtps://127.0.0.1\"\nfrom = \"a@b.dk\"\ntls = \"starttls\""
        )),
        "channel \"mail\": an smtps:// url is TLS from the start: leave tls out or set it to \"tls\""
    );
    assert_eq!(
        new_error(&mail("url = \"smtp://u:p@127.0.0.1\"\nfrom = \"a@b.dk\"")),
        "channel \"mail\": credentials go in username and password_env, not in the url"
    );
    // TLS set-up (with the system's roots) works for both TLS modes.
    sender(&mail("url = \"smtps://127.0.0.1\"\nfrom = \"a@b.dk\""));
    sender(&mail(
        "url = \"smtp://[::1]:2525\"\nfrom = \"Beredskab <a@b.dk>\"",
    ));
    // ChannelError is a type the integrator can match on.
    let e = Sender::new(&channel(&sms("body = \"x\"")), &env).unwrap_err();
    assert!(matches!(e, ChannelError::Invalid { .. }));
}

// ---------------------------------------------------------------------------
// smtp against aiosmtpd

fn header<'a>(mail: &'a Value, name: &str) -> Vec<&'a str> {
    mail["headers"][name]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn smtp_delivers_a_plain_text_mail_with_the_key_as_message_id() {
    let sink = SmtpSink::start("plain");
    let mail = sender(&sink.channel("tls = \"none\""));
    let p = person();
    mail.send(&delivery(MAIL_KEY, &p, Some(LINK)))
        .await
        .expect("sent");

    let m = sink.only();
    assert_eq!(m["mail_from"], "beredskab@example.dk");
    assert_eq!(m["rcpt_tos"], json!(["drift@example.dk"]));
    assert_eq!(m["login"], Value::Null);
    assert_eq!(header(&m, "from"), ["beredskab@example.dk"]);
    assert_eq!(
        header(&m, "to"),
        [r#""Søren \"Drift\" Æbelø" <drift@example.dk>"#]
    );
    assert_eq!(
        header(&m, "subject"),
        [format!("[{SITE}] KRITISK #7: Brand – \"serverrum\".")]
    );
    assert_eq!(
        header(&m, "message-id"),
        ["<7/0/expected=20=3E=2030m/p-drift/mail@beredskab>"]
    );
    assert_eq!(header(&m, "auto-submitted"), ["auto-generated"]);
    assert_eq!(header(&m, "date").len(), 1);
    assert_eq!(m["content_type"], "text/plain");
    assert_eq!(m["charset"], "utf-8");
    let body = m["body"].as_str().expect("body").replace("\r\n", "\n");
    // The last line break is the one SMTP ends the data with.
    assert_eq!(body, format!("{TEXT}\n\n{LINK}\n"));
}

#[tokio::test]
async fn smtp_without_a_link_sends_just_the_text() {
    let sink = SmtpSink::start("nolink");
    let p = person();
    sender(&sink.channel("tls = \"none\""))
        .send(&delivery(MAIL_KEY, &p, None))
        .await
        .expect("sent");
    let body = sink.only()["body"]
        .as_str()
        .expect("body")
        .replace("\r\n", "\n");
    assert_eq!(body, format!("{TEXT}\n"));
}

#[tokio::test]
async fn smtp_alarm_text_cannot_add_headers_or_recipients() {
    let sink = SmtpSink::start("inject");
    let mut p = person();
    p.name = "Eve\r\nBcc: evil@example.com".into();
    let text = "Brand\r\nBcc: evil@example.com\r\n\r\nfake body. More.";
    let d = Delivery {
        text,
        site: "Site\nX-Evil: 1",
        ..delivery(MAIL_KEY, &p, None)
    };
    sender(&sink.channel("tls = \"none\""))
        .send(&d)
        .await
        .expect("sent");
    let m = sink.only();
    assert_eq!(m["rcpt_tos"], json!(["drift@example.dk"]));
    assert!(header(&m, "bcc").is_empty(), "{m:#?}");
    assert!(header(&m, "x-evil").is_empty(), "{m:#?}");
    let subject = header(&m, "subject");
    assert_eq!(subject.len(), 1);
    assert!(!subject[0].contains('\n'), "{subject:?}");
}

#[tokio::test]
async fn smtp_logs_in_with_the_password_from_the_environment() {
    let sink = SmtpSink::start("auth");
    let p = person();
    sender(
        &sink.channel("tls = \"none\"\nusername = \"beredskab\"\npassword_env = \"SMTP_PASSWORD\""),
    )
    .send(&delivery(MAIL_KEY, &p, Some(LINK)))
    .await
    .expect("sent");
    assert_eq!(sink.only()["login"], "beredskab");

    // A wrong password is the relay's 535: retrying will not fix it.
    let e = expect_permanent(
        sender(&sink.channel(
            "tls = \"none\"\nusername = \"beredskab\"\npassword_env = \"WRONG_PASSWORD\"",
        ))
        .send(&delivery(MAIL_KEY, &p, Some(LINK)))
        .await,
    );
    assert!(e.contains("535"), "{e}");
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn smtp_4xx_is_retried_and_5xx_is_permanent() {
    let sink = SmtpSink::start("codes");
    let mail = sender(&sink.channel("tls = \"none\""));
    let mut p = person();
    p.email = Some("tempfail@example.dk".into());
    let (error, after) = expect_retry(mail.send(&delivery(MAIL_KEY, &p, None)).await);
    assert!(error.contains("451"), "{error}");
    assert_eq!(after, None);
    p.email = Some("reject@example.dk".into());
    let e = expect_permanent(mail.send(&delivery(MAIL_KEY, &p, None)).await);
    assert!(e.contains("550"), "{e}");
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn smtp_without_an_address_is_permanent() {
    let sink = SmtpSink::start("noaddr");
    let mail = sender(&sink.channel("tls = \"none\""));
    let mut p = person();
    p.email = None;
    assert_eq!(
        expect_permanent(mail.send(&delivery(MAIL_KEY, &p, None)).await),
        "person p-drift has no mail address"
    );
    p.email = Some("drift at example.dk".into());
    let e = expect_permanent(mail.send(&delivery(MAIL_KEY, &p, None)).await);
    assert!(
        e.starts_with("person p-drift: \"drift at example.dk\" is not a mail address"),
        "{e}"
    );
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn smtp_starttls_is_required_not_hoped_for() {
    // The sink offers no STARTTLS: the mail must not go out in the clear.
    let sink = SmtpSink::start("starttls");
    let p = person();
    let r = sender(&sink.channel("tls = \"starttls\""))
        .send(&delivery(MAIL_KEY, &p, None))
        .await;
    expect_retry(r);
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn smtp_relay_down_is_retried() {
    let sink = SmtpSink::start("down");
    let config = sink.channel("tls = \"none\"");
    drop(sink);
    let p = person();
    let (error, _) = expect_retry(sender(&config).send(&delivery(MAIL_KEY, &p, None)).await);
    assert!(!error.is_empty());
}
