//! Acknowledgement links against the real daemon (`beredskab run` with a
//! real Mosquitto): a link made with the daemon's secret shows a page on
//! GET without changing anything, acknowledges once on POST, and every
//! useless link (used, expired, changed, for an unknown or resolved
//! incident) gets a page that says so, with a fitting status.

mod common;

use std::time::Duration;

use beredskab::clock::wall_now;
use beredskab::engine::Ts;
use beredskab::links::{self, LinkSettings};
use common::broker::{Broker, client_id};
use common::daemon::{
    Daemon, INGEST_TOKEN, READ_TOKEN, config, count, eventually, get, http, post,
};
use serde_json::Value;

/// How long any one expected outcome may take (tests run side by side on
/// two cores).
const PATIENCE: Duration = Duration::from_secs(60);
const SECRET_ENV: &str = "BEREDSKAB_TEST_SECRET";
const SECRET: &str = "the ack link secret of the link tests";
/// A site name that must come out as text (a TOML string).
const SITE_WITH_MARKUP: &str = r#"Kommune <script>alert('x')</script> & \"IT\""#;

/// The daemon for one test, with the link secret in its environment and
/// the site called `site` in `language`.
fn start(name: &str, site: &str, language: &str) -> (Broker, Daemon) {
    let broker = Broker::start(name);
    let base = config(broker.port, &client_id(name));
    assert!(
        base.contains("[server]\n")
            && base.contains("language = \"en\"\n")
            && base.contains("name = \"Testkommune IT\"\n")
    );
    let config = base
        .replace(
            "[server]\n",
            &format!("[server]\nsecret_env = \"{SECRET_ENV}\"\n"),
        )
        .replace(
            "language = \"en\"\n",
            &format!("language = \"{language}\"\n"),
        )
        .replace(
            "name = \"Testkommune IT\"\n",
            &format!("name = \"{site}\"\n"),
        );
    let daemon = Daemon::start_with_env(name, &config, &[(SECRET_ENV, SECRET)]);
    (broker, daemon)
}

/// Links as the daemon makes them: its secret, its address.
fn settings(d: &Daemon) -> LinkSettings {
    LinkSettings {
        key: SECRET.as_bytes().to_vec(),
        public_url: d.url(""),
        ttl: Duration::from_secs(3600),
    }
}

/// A page: status, headers and HTML.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// A page of ours: HTML, never cached, never a referrer, no scripts.
    fn assert_ours(&self) {
        assert!(
            self.header("content-type").starts_with("text/html"),
            "{}",
            self.header("content-type")
        );
        assert_eq!(self.header("cache-control"), "no-store");
        assert_eq!(self.header("referrer-policy"), "no-referrer");
        assert!(self.html.starts_with("<!doctype html>"), "{}", self.html);
        assert!(!self.html.contains("<script"), "{}", self.html);
        assert!(!self.html.contains("src="), "{}", self.html);
    }
}

async fn page(client: &reqwest::Client, method: reqwest::Method, url: &str) -> Page {
    let resp = client
        .request(method.clone(), url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let html = resp.text().await.unwrap_or_default();
    let p = Page {
        status,
        headers,
        html,
    };
    p.assert_ours();
    p
}

async fn show(client: &reqwest::Client, url: &str) -> Page {
    page(client, reqwest::Method::GET, url).await
}

async fn follow(client: &reqwest::Client, url: &str) -> Page {
    page(client, reqwest::Method::POST, url).await
}

/// Pushes a firing (or cleared) server alarm.
async fn alarm(client: &reqwest::Client, d: &Daemon, component: &str, state: &str) {
    let (status, body) = post(
        client,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        format!(r#"{{"component":"{component}","kind":"server","state":"{state}"}}"#),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

async fn incident(client: &reqwest::Client, d: &Daemon, id: u64) -> (u16, Value) {
    get(
        client,
        &d.url(&format!("/api/v1/incidents/{id}")),
        Some(READ_TOKEN),
    )
    .await
}

/// Waits until incident `id` is in `state`.
async fn wait_state(client: &reqwest::Client, d: &Daemon, id: u64, state: &str) -> Value {
    eventually(&format!("incident {id} is {state}"), PATIENCE, || async {
        let (status, inc) = incident(client, d, id).await;
        (status == 200 && inc["state"] == state).then_some(inc)
    })
    .await
}

fn acks(inc: &Value) -> usize {
    inc["timeline"]
        .as_array()
        .map_or(0, |t| t.iter().filter(|e| e["type"] == "ack").count())
}

/// The on-call leader opens the link from the SMS: the page says what
/// will be acknowledged and as whom, and only the button acknowledges.
/// The same link again is refused, and nothing is acknowledged twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_shows_first_and_acknowledges_once() {
    let (_broker, mut d) = start("links-ack", "Testkommune IT", "en");
    let client = http();
    alarm(&client, &d, "srv-2", "firing").await;
    let opened = wait_state(&client, &d, 1, "open").await;
    assert_eq!(opened["root"], "srv-2");

    let url = links::url(&settings(&d), 1, "p-drift", wall_now());
    assert!(url.starts_with(&d.url("/a/")), "{url}");

    // Previewers and mail scanners fetch the link: nothing changes.
    for _ in 0..2 {
        let p = show(&client, &url).await;
        assert_eq!(p.status, 200, "{}", p.html);
        assert!(p.html.contains("Acknowledge incident #1"), "{}", p.html);
        assert!(p.html.contains("srv-2"), "the root: {}", p.html);
        assert!(p.html.contains("Case systems"), "the service: {}", p.html);
        assert!(
            p.html.contains("Leder af Drift (p-drift)"),
            "as whom: {}",
            p.html
        );
        assert!(p.html.contains("<form method=\"post\">"), "{}", p.html);
        assert!(p.html.contains(">Acknowledge</button>"), "{}", p.html);
    }
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(inc["state"], "open", "GET changed the incident: {inc}");
    assert_eq!(acks(&inc), 0, "{inc}");

    let p = follow(&client, &url).await;
    assert_eq!(p.status, 200, "{}", p.html);
    assert!(p.html.contains("Acknowledged – thank you"), "{}", p.html);
    assert!(
        p.html
            .contains("Incident #1 is acknowledged as Leder af Drift (p-drift)"),
        "{}",
        p.html
    );
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(inc["state"], "acknowledged", "{inc}");
    assert_eq!(inc["acknowledged_by"], "p-drift", "{inc}");
    assert_eq!(acks(&inc), 1, "{inc}");

    // Replayed: refused, and the page says by whom it was acknowledged.
    let again = follow(&client, &url).await;
    assert_eq!(again.status, 409, "{}", again.html);
    assert!(
        again.html.contains("This link has already been used"),
        "{}",
        again.html
    );
    assert!(again.html.contains("Leder af Drift"), "{}", again.html);
    let seen = show(&client, &url).await;
    assert_eq!(seen.status, 409, "{}", seen.html);
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(acks(&inc), 1, "still one ack: {inc}");
    assert_eq!(count(&d.db(), "SELECT count(*) FROM used_links").await, 1);

    // A link of its own for another person still acknowledges (recorded).
    let chef = links::url(&settings(&d), 1, "p-chef", wall_now());
    let p = follow(&client, &chef).await;
    assert_eq!(p.status, 200, "{}", p.html);
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(acks(&inc), 2, "{inc}");
    assert_eq!(
        inc["acknowledged_by"], "p-drift",
        "the first one stands: {inc}"
    );

    // After a crash and a restart the used link is still refused.
    d.kill9();
    d.spawn();
    let p = follow(&client, &url).await;
    assert_eq!(p.status, 409, "{}", p.html);
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(acks(&inc), 2, "{inc}");
}

/// Links that cannot be used get a page saying why and what to do, in the
/// site's language (Danish here), and change nothing; the good one still
/// works after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn useless_links_get_a_page_that_says_why() {
    let (_broker, d) = start("links-refused", SITE_WITH_MARKUP, "da");
    let client = http();
    let s = settings(&d);
    let now = wall_now();
    let key = SECRET.as_bytes();
    alarm(&client, &d, "srv-4", "firing").await;
    wait_state(&client, &d, 1, "open").await;

    // Expired an hour ago.
    let expired = d.url(&format!(
        "/a/{}",
        links::make(key, 1, "p-drift", Ts(now.0 - 3_600_000))
    ));
    for p in [
        show(&client, &expired).await,
        follow(&client, &expired).await,
    ] {
        assert_eq!(p.status, 410, "{}", p.html);
        assert!(p.html.contains("Linket er udløbet"), "{}", p.html);
        assert!(p.html.contains("webgrænsefladen"), "{}", p.html);
        assert!(p.html.contains("<html lang=\"da\">"), "{}", p.html);
        assert!(
            p.html.contains(
                "Kommune &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;IT&quot;"
            ),
            "the site name is escaped: {}",
            p.html
        );
    }

    // One character changed in the middle of a good link.
    let good = links::make(key, 1, "p-drift", now.plus(s.ttl));
    let mut chars: Vec<char> = good.chars().collect();
    let mid = chars.len() / 2;
    chars[mid] = if chars[mid] == 'A' { 'B' } else { 'A' };
    let changed: String = chars.into_iter().collect();
    let tampered = d.url(&format!("/a/{changed}"));
    for p in [
        show(&client, &tampered).await,
        follow(&client, &tampered).await,
    ] {
        assert_eq!(p.status, 403, "{}", p.html);
        assert!(p.html.contains("Linket kan ikke bruges"), "{}", p.html);
    }
    // Made with another key.
    let foreign = d.url(&format!(
        "/a/{}",
        links::make(b"not the secret", 1, "p-drift", now.plus(s.ttl))
    ));
    let p = follow(&client, &foreign).await;
    assert_eq!(p.status, 403, "{}", p.html);

    // Not a link at all.
    for path in ["/a/not-a-link", "/a/%FF%FE", "/a/AAAA"] {
        let p = follow(&client, &d.url(path)).await;
        assert_eq!(p.status, 400, "{path}: {}", p.html);
        assert!(p.html.contains("Linket er ufuldstændigt"), "{}", p.html);
    }

    // For a person no longer in the plan.
    let gone = links::url(&s, 1, "p-left-in-june", now);
    let p = follow(&client, &gone).await;
    assert_eq!(p.status, 403, "{}", p.html);
    assert!(p.html.contains("p-left-in-june"), "{}", p.html);

    // For an incident there is not.
    let unknown = links::url(&s, 99, "p-drift", now);
    for p in [
        show(&client, &unknown).await,
        follow(&client, &unknown).await,
    ] {
        assert_eq!(p.status, 404, "{}", p.html);
        assert!(p.html.contains("Hændelsen findes ikke"), "{}", p.html);
    }

    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(inc["state"], "open", "{inc}");
    assert_eq!(acks(&inc), 0, "{inc}");

    // The good link, in Danish.
    let good = d.url(&format!("/a/{good}"));
    let p = show(&client, &good).await;
    assert_eq!(p.status, 200, "{}", p.html);
    assert!(p.html.contains("Kvittér for hændelse #1"), "{}", p.html);
    assert!(p.html.contains("Du kvitterer som"), "{}", p.html);
    let p = follow(&client, &good).await;
    assert_eq!(p.status, 200, "{}", p.html);
    assert!(p.html.contains("Kvitteret – tak"), "{}", p.html);
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(inc["acknowledged_by"], "p-drift", "{inc}");
    assert_eq!(acks(&inc), 1, "{inc}");

    // For an incident that is resolved.
    alarm(&client, &d, "srv-4", "cleared").await;
    wait_state(&client, &d, 1, "resolved").await;
    let resolved = links::url(&s, 1, "p-vagt2", now);
    for p in [
        show(&client, &resolved).await,
        follow(&client, &resolved).await,
    ] {
        assert_eq!(p.status, 409, "{}", p.html);
        assert!(p.html.contains("Hændelsen er allerede løst"), "{}", p.html);
    }
    let (_, inc) = incident(&client, &d, 1).await;
    assert_eq!(acks(&inc), 1, "{inc}");
    assert_eq!(count(&d.db(), "SELECT count(*) FROM used_links").await, 1);
}
