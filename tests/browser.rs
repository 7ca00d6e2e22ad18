//! The web UI and the status page against the real daemon (`beredskab
//! run` on a real Mosquitto): in a real headless Chromium, as the person
//! on call uses them on a phone and at a desk, and over plain HTTP for
//! what a browser does not show (cookies, headers, forged and repeated
//! forms, pages without JavaScript).

mod common;

use std::time::Duration;

use common::broker::{Broker, Publisher, client_id};
use common::browser::{Browser, DESKTOP, PATIENCE, PHONE};
use common::daemon::{
    ACK_TOKEN, Daemon, INGEST_TOKEN, READ_TOKEN, config, eventually, get, http, post,
};
use serde_json::Value;

/// Meeting places: the town hall (where the fire is) and the fire station.
const CRISIS: &str = r#"
[[meeting_place]]
name = "Mødelokale 1, Rådhuset"
building = "raadhus"
priority = 1
[[meeting_place]]
name = "Beredskabsrummet, Brandstationen"
building = "brandstation"
priority = 2

[crisis]
staff = ["role:it-chef"]
via = ["sms"]
"#;

/// The daemon of one test, in `language`, with meeting places.
fn start(name: &str, language: &str) -> (Broker, Daemon) {
    let broker = Broker::start(name);
    let base = config(broker.port, &client_id(name));
    assert!(base.contains("language = \"en\"\n"));
    let config = base.replace(
        "language = \"en\"\n",
        &format!("language = \"{language}\"\n"),
    ) + CRISIS;
    let daemon = Daemon::start(name, &config);
    (broker, daemon)
}

async fn incident(client: &reqwest::Client, d: &Daemon, id: u64) -> Value {
    let (status, body) = get(
        client,
        &d.url(&format!("/api/v1/incidents/{id}")),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The person on call, on a phone: logs in from a link, sees the fire
/// that an MQTT alarm opened appear without a reload, acknowledges, gives
/// an ETA, writes a decision, raises the crisis level through the
/// confirmation that names the meeting place (pinned afterwards), sees a
/// note written elsewhere appear in the timeline without a reload, and
/// logs out. Then the status page: the service down with its expected
/// return, and up again when the alarm clears. Screenshots of each step
/// on a phone and on a desktop go to target/screenshots/.
#[tokio::test]
async fn the_person_on_call_handles_a_fire_in_a_real_browser() {
    let (broker, d) = start("browser-flow", "da");
    let client = http();
    common::daemon::wait_ready(&client, &d).await;
    let publisher = Publisher::start(broker.port, &client_id("browser-flow-pub"));
    let b = Browser::start("flow", PHONE).await;

    // The demo's login link fills the form in; one tap logs in.
    b.goto(&d.url(&format!("/login?token={ACK_TOKEN}"))).await;
    b.wait_text("the login page", &["Log ind", "udfyldt fra linket"])
        .await;
    assert_eq!(b.path().await, "/login", "a GET never logs in by itself");
    b.screenshot("phone-01-login").await;
    b.click("form.login button[type=submit]").await;
    b.wait_text(
        "logged in, nothing open",
        &[
            "Åbne hændelser",
            "Ingen åbne hændelser",
            "Logget ind som IT-chef",
        ],
    )
    .await;
    assert_eq!(b.path().await, "/");

    // A fire alarm through Mosquitto opens an incident; the open page
    // shows it by itself.
    b.mark_document().await;
    publisher
        .publish("site/serverrum/fire", "fire-1", "ALARM")
        .await;
    let text = b
        .wait_text(
            "the incident appears without a reload",
            &[
                "KRITISK",
                "#1",
                "Ikke kvitteret",
                "Care alarms",
                "siden kl. ",
            ],
        )
        .await;
    assert!(b.same_document().await, "the page was reloaded:\n{text}");
    assert!(text.contains("forventet retur ca."), "{text}");
    b.screenshot("phone-02-incident-open").await;

    // Acknowledge: the primary button, with a comment.
    b.type_into("form.primary input[name=note]", "Jeg er på vej")
        .await;
    b.click("form.primary button[type=submit]").await;
    b.wait_text("acknowledged", &["Kvitteret af IT-chef kl. ", "Afslut"])
        .await;
    b.screenshot("phone-03-acknowledged").await;

    // The incident page: an ETA and a decision.
    b.click("article.card h2 a").await;
    b.wait_text(
        "the incident page",
        &["Hændelse #1", "Tidslinje", "Hvem er underrettet"],
    )
    .await;
    assert_eq!(b.path().await, "/i/1");
    b.click("#eta input[name=in][value='7200']").await;
    b.click("#eta button[type=submit]").await;
    b.wait_text("the ETA", &["skøn fra IT-chef", "opdateret kl. "])
        .await;
    b.type_into("#note-text", "Driften flyttes til nødstrøm")
        .await;
    b.click("#note input[name=kind][value=decision]").await;
    b.click("#note button[type=submit]").await;
    let text = b
        .wait_text(
            "the decision",
            &["Beslutning", "Driften flyttes til nødstrøm"],
        )
        .await;
    assert!(text.contains("Kvitteret: Jeg er på vej"), "{text}");

    // Raising to crisis asks first and names the meeting place: not the
    // town hall, where the fire is.
    b.click("a[href='/i/1/crisis']").await;
    let text = b
        .wait_text(
            "the crisis confirmation",
            &[
                "Hæv hændelse #1 til kriseniveau?",
                "Beredskabsrummet, Brandstationen",
            ],
        )
        .await;
    assert!(!text.contains("Mødelokale 1"), "{text}");
    b.screenshot("phone-04-crisis-confirm").await;
    b.click("form.primary button[type=submit]").await;
    b.wait_text(
        "the meeting place pinned",
        &["KRISE · hændelse #1 · krisestaben mødes: Beredskabsrummet, Brandstationen"],
    )
    .await;
    assert_eq!(b.path().await, "/i/1");
    b.screenshot("phone-05-crisis-pinned").await;
    // Who was told, by which channel, and whether it went out.
    let text = b.text().await;
    assert!(text.contains("Hvem er underrettet"), "{text}");
    b.scroll_to("#escalation").await;
    b.screenshot("phone-05b-escalation").await;

    // A note written elsewhere (the JSON API) shows up in the open page's
    // timeline without a reload.
    b.mark_document().await;
    let (status, body) = post(
        &client,
        &d.url("/api/v1/incidents/1/notes"),
        Some(ACK_TOKEN),
        r#"{"text":"Leverandøren er på vej med en ny UPS","kind":"event"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    b.wait_text(
        "the timeline without a reload",
        &["Leverandøren er på vej med en ny UPS"],
    )
    .await;
    assert!(b.same_document().await, "the page was reloaded");
    b.scroll_to("#timeline").await;
    b.screenshot("phone-06-timeline-live").await;
    // The engine's own entries read in the page's language.
    let text = b.text().await;
    assert!(
        text.contains("Eskalering: trin «open» i politikken standard"),
        "{text}"
    );

    // The filter is a plain link.
    b.click("a[href='/i/1?vis=beslutninger#timeline']").await;
    let text = b
        .wait_text("the decisions only", &["Driften flyttes til nødstrøm"])
        .await;
    assert!(
        !text.contains("Leverandøren er på vej"),
        "an event among the decisions:\n{text}"
    );

    // The same on a desktop.
    b.resize(DESKTOP).await;
    b.goto(&d.url("/i/1")).await;
    b.wait_text("the desktop page", &["Hændelse #1", "Beredskabsrummet"])
        .await;
    b.screenshot("desktop-01-incident").await;
    b.goto(&d.url("/")).await;
    b.wait_text("the desktop list", &["Åbne hændelser", "KRISE"])
        .await;
    b.screenshot("desktop-02-incidents").await;

    // Log out: the pages ask for a login again.
    b.click("form.logout button[type=submit]").await;
    b.wait_text("logged out", &["Log ind"]).await;
    b.goto(&d.url("/i/1")).await;
    b.wait_text("back at the login", &["Adgangsnøgle"]).await;
    assert_eq!(b.path().await, "/login");

    // The status page, public: the care alarms are down, with the
    // expected return; up again once the alarm clears.
    b.resize(PHONE).await;
    b.goto(&d.url("/status")).await;
    let text = b
        .wait_text(
            "the status page",
            &[
                "Nogle tjenester er nede",
                "Care alarms",
                "Nede",
                "forventet retur ca.",
            ],
        )
        .await;
    assert!(text.contains("alle tider er dansk tid"), "{text}");
    b.screenshot("phone-07-status-down").await;
    b.resize(DESKTOP).await;
    b.screenshot("desktop-03-status-down").await;
    publisher
        .publish("site/serverrum/fire", "fire-1-clear", "OK")
        .await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        b.goto(&d.url("/status")).await;
        let text = b.text().await;
        if text.contains("Alle tjenester kører") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the care alarms did not come back up:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    b.resize(PHONE).await;
    b.screenshot("phone-08-status-up").await;
    b.close().await;
}

// ---------------------------------------------------------------------------
// Plain HTTP

/// A client that does not follow redirects, so that 303s can be seen.
fn raw_client() -> reqwest::Client {
    beredskab::tls::install_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A urlencoded form body.
fn form_body<K: AsRef<str>, V: AsRef<str>>(fields: &[(K, V)]) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k.as_ref(), v.as_ref());
    }
    f.finish()
}

/// A response's status, headers and text.
struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The `Set-Cookie` for `name`, whole.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// The form token of the form posting to `action`.
    fn form_token(&self, action: &str) -> String {
        let at = self
            .text
            .find(&format!("action=\"{action}\""))
            .unwrap_or_else(|| panic!("no form to {action}:\n{}", self.text));
        let rest = &self.text[at..];
        let key = "name=\"csrf\" value=\"";
        let v = rest.find(key).expect("a csrf field") + key.len();
        rest[v..v + rest[v..].find('"').expect("a value")].to_owned()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Got {
    let resp = req.send().await.expect("a request");
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap_or_default(),
    }
}

/// The value part of a `Set-Cookie`.
fn cookie_value(set: &str) -> &str {
    set.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map_or("", |(_, v)| v)
}

/// Logs in with `token`, sending `old` as the current session; returns
/// the answer to the POST.
async fn login_with(c: &reqwest::Client, d: &Daemon, token: &str, old: Option<&str>) -> Got {
    let page = send(c.get(d.url("/login"))).await;
    assert_eq!(page.status, 200);
    let pre = page
        .set_cookie("bk_login")
        .expect("the login form sets its own cookie");
    let pre = cookie_value(&pre).to_owned();
    let csrf = page.form_token("/login");
    assert_eq!(csrf, pre, "the form carries the cookie's value");
    let mut cookies = format!("bk_login={pre}");
    if let Some(old) = old {
        cookies.push_str(&format!("; bk_session={old}"));
    }
    send(
        c.post(d.url("/login"))
            .header("cookie", cookies)
            .header("origin", d.url(""))
            .header("content-type", FORM)
            .body(form_body(&[
                ("csrf", csrf.as_str()),
                ("token", token),
                ("next", "/"),
            ])),
    )
    .await
}

/// Logs in; returns the session id.
async fn login(c: &reqwest::Client, d: &Daemon, token: &str) -> String {
    let got = login_with(c, d, token, None).await;
    assert_eq!(got.status, 303, "{}", got.text);
    let set = got.set_cookie("bk_session").expect("a session cookie");
    cookie_value(&set).to_owned()
}

async fn page(c: &reqwest::Client, d: &Daemon, session: &str, path: &str) -> Got {
    send(
        c.get(d.url(path))
            .header("cookie", format!("bk_session={session}")),
    )
    .await
}

async fn submit(
    c: &reqwest::Client,
    d: &Daemon,
    session: &str,
    path: &str,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> Got {
    let mut req = c
        .post(d.url(path))
        .header("cookie", format!("bk_session={session}"))
        .header("content-type", FORM)
        .body(form_body(form));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req).await
}

/// Every page's security headers.
fn assert_secure(g: &Got) {
    let csp = g.header("content-security-policy");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(g.header("referrer-policy"), "no-referrer");
    assert_eq!(g.header("x-content-type-options"), "nosniff");
    assert!(
        !g.text.contains("<script>"),
        "an inline script:\n{}",
        g.text
    );
}

/// What a browser does not show: the session cookie's flags and a new id
/// at every login, the security headers, CSRF (no token, a wrong origin,
/// a cross-site fetch: 403), a read-only token that sees no buttons and
/// is refused a forged form, a form submitted twice that acts once,
/// forms that post and redirect without JavaScript, a status page with
/// nothing internal on it, and failed logins counted by the limiter.
#[tokio::test]
async fn web_forms_are_guarded_and_work_without_javascript() {
    let (_broker, d) = start("web-http", "en");
    let api = http();
    let c = raw_client();
    common::daemon::wait_ready(&api, &d).await;

    // Not logged in: to the login page. A login link fills the form in
    // and does not log in.
    let got = send(c.get(d.url("/"))).await;
    assert_eq!(got.status, 303);
    assert!(got.header("location").starts_with("/login"));
    let got = send(c.get(d.url(&format!("/login?token={ACK_TOKEN}")))).await;
    assert_eq!(got.status, 200);
    assert!(got.set_cookie("bk_session").is_none(), "a GET logged in");
    assert!(got.text.contains(&format!("value=\"{ACK_TOKEN}\"")));
    assert_secure(&got);

    // The session cookie: HttpOnly, SameSite=Lax, not Secure over plain
    // HTTP; a new id at every login, and the old one ends.
    let got = login_with(&c, &d, ACK_TOKEN, None).await;
    assert_eq!(got.status, 303, "{}", got.text);
    assert_eq!(got.header("location"), "/");
    let set = got.set_cookie("bk_session").expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let first = cookie_value(&set).to_owned();
    let got = login_with(&c, &d, ACK_TOKEN, Some(&first)).await;
    let ack = cookie_value(&got.set_cookie("bk_session").expect("a cookie")).to_owned();
    assert_ne!(ack, first, "login rotates the session id");
    assert_eq!(
        page(&c, &d, &first, "/").await.status,
        303,
        "the old id ended"
    );
    let home = page(&c, &d, &ack, "/").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.header("cache-control"), "no-store");
    assert_secure(&home);

    // An incident to act on.
    let (status, body) = post(
        &api,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        r#"{"component":"srv-1","kind":"server","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    eventually("incident 1 opens", PATIENCE, || async {
        let (s, _) = get(&api, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
        (s == 200).then_some(())
    })
    .await;

    // CSRF: no token, a wrong origin, a cross-site fetch.
    let p = page(&c, &d, &ack, "/i/1").await;
    assert_eq!(p.status, 200, "{}", p.text);
    let token = p.form_token("/i/1/note");
    let origin = d.url("");
    let note = |text: &'static str, csrf: &str| {
        [("text", text), ("kind", "event"), ("csrf", csrf)].map(|(k, v)| (k, v.to_owned()))
    };
    let send_note = |headers: Vec<(&'static str, String)>, fields: [(&'static str, String); 3]| {
        let c = c.clone();
        let url = d.url("/i/1/note");
        let session = ack.clone();
        async move {
            let mut req = c
                .post(url)
                .header("cookie", format!("bk_session={session}"))
                .header("content-type", FORM)
                .body(form_body(&fields));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            send(req).await
        }
    };
    let got = send_note(vec![], note("without a token", "")).await;
    assert_eq!(got.status, 403, "{}", got.text);
    let got = send_note(
        vec![("origin", "https://evil.example".to_owned())],
        note("from elsewhere", &token),
    )
    .await;
    assert_eq!(got.status, 403, "{}", got.text);
    let got = send_note(
        vec![("sec-fetch-site", "cross-site".to_owned())],
        note("cross-site", &token),
    )
    .await;
    assert_eq!(got.status, 403, "{}", got.text);

    // The same form twice: one note. Without JavaScript a form posts and
    // is answered 303 back to the page.
    for _ in 0..2 {
        let got = send_note(
            vec![
                ("origin", origin.clone()),
                ("sec-fetch-site", "same-origin".to_owned()),
            ],
            note("Nødstrømmen er tjekket", &token),
        )
        .await;
        assert_eq!(got.status, 303, "{}", got.text);
        assert_eq!(got.header("location"), "/i/1");
    }
    let inc = incident(&api, &d, 1).await;
    let notes = inc["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter(|e| e["text"] == "Nødstrømmen er tjekket")
        .count();
    assert_eq!(notes, 1, "{inc}");
    let refused = inc["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter(|e| {
            ["without a token", "from elsewhere", "cross-site"]
                .contains(&e["text"].as_str().unwrap_or(""))
        })
        .count();
    assert_eq!(refused, 0, "a refused form acted: {inc}");

    // A read-only token sees the page without buttons, and a form forged
    // with its own session's token is refused.
    let read = login(&c, &d, READ_TOKEN).await;
    let p = page(&c, &d, &read, "/i/1").await;
    assert_eq!(p.status, 200);
    assert!(!p.text.contains("action=\"/i/1/ack\""), "{}", p.text);
    assert!(p.text.contains("You can look but not act"), "{}", p.text);
    let own = p.form_token("/logout");
    let got = submit(&c, &d, &read, "/i/1/ack", &[], &[("csrf", own.as_str())]).await;
    assert_eq!(got.status, 403, "{}", got.text);
    assert_eq!(incident(&api, &d, 1).await["state"], "open");

    // Acknowledge without JavaScript: post, 303, the page says so.
    let p = page(&c, &d, &ack, "/").await;
    let token = p.form_token("/i/1/ack");
    let got = submit(
        &c,
        &d,
        &ack,
        "/i/1/ack",
        &[("origin", origin.as_str())],
        &[("csrf", token.as_str()), ("back", "/"), ("note", "")],
    )
    .await;
    assert_eq!(got.status, 303, "{}", got.text);
    assert_eq!(got.header("location"), "/");
    let p = page(&c, &d, &ack, "/").await;
    assert!(p.text.contains("Acknowledged by IT-chef"), "{}", p.text);

    // A public note goes on the status page; nothing internal does.
    let p = page(&c, &d, &ack, "/i/1").await;
    let token = p.form_token("/i/1/note");
    let got = submit(
        &c,
        &d,
        &ack,
        "/i/1/note",
        &[("origin", origin.as_str())],
        &[
            ("csrf", token.as_str()),
            ("text", "The case systems are being restarted"),
            ("kind", "event"),
            ("public", "on"),
        ],
    )
    .await;
    assert_eq!(got.status, 303, "{}", got.text);
    let status = send(c.get(d.url("/status"))).await;
    assert_eq!(status.status, 200);
    assert_eq!(status.header("cache-control"), "no-cache");
    assert_secure(&status);
    for wanted in [
        "Some services are down",
        "Case systems",
        "Down",
        "The case systems are being restarted",
        "expected back about",
        "Refresh",
    ] {
        if !status.text.contains(wanted) {
            panic!(
                "{wanted}:\n{}\n{}",
                status.text,
                incident(&api, &d, 1).await
            );
        }
    }
    for secret in [
        "Leder af Drift",
        "Anden vagt",
        "IT-chef",
        "p-drift",
        "p-chef",
        "+45",
        "srv-1",
        "serverrum",
        "power-mains",
        "Nødstrømmen er tjekket",
        "#1",
    ] {
        assert!(
            !status.text.contains(secret),
            "the status page shows {secret:?}:\n{}",
            status.text
        );
    }
    assert!(status.text.len() < 50_000, "{} bytes", status.text.len());
    assert!(!status.text.contains("http-equiv=\"refresh\""));
    let wall = send(c.get(d.url("/status?refresh=60"))).await;
    assert!(wall.text.contains("http-equiv=\"refresh\" content=\"60\""));

    // Log out: the session ends.
    let p = page(&c, &d, &ack, "/").await;
    let token = p.form_token("/logout");
    let got = submit(
        &c,
        &d,
        &ack,
        "/logout",
        &[("origin", origin.as_str())],
        &[("csrf", token.as_str())],
    )
    .await;
    assert_eq!(got.status, 303);
    assert_eq!(page(&c, &d, &ack, "/").await.status, 303);

    // Failed logins count like failed API calls: 429 after 20.
    let mut last = 0;
    for _ in 0..21 {
        last = login_with(&c, &d, "not-a-token", None).await.status;
        if last == 429 {
            break;
        }
        assert_eq!(last, 401);
    }
    assert_eq!(last, 429);
}
