//! Notifications that arrive: the daemon against a real HTTP server standing
//! in for the SMS gateway, which records every request and can be told to
//! fail (500 for a while, hang past the timeout, 429 with Retry-After).
//! Checked by idempotency key: after the gateway recovers every
//! notification has arrived exactly once; after the channel's attempts the
//! fallback is used; a crash between decision and delivery sends once.

mod common;

use std::time::Duration;

use common::broker::{Broker, Publisher, client_id};
use common::daemon::{
    Daemon, INGEST_TOKEN, READ_TOKEN, config_with, eventually, get, http, metric, post,
};
use common::gateway::{Gateway, Mode, Seen};

const PATIENCE: Duration = Duration::from_secs(60);

/// The test config with SMS through the gateway: `sms` (the given
/// attempts and timeout, falling back to `sms2`), and `sms2`.
fn sms_config(broker: u16, gateway: u16, name: &str, attempts: u32, timeout: &str) -> String {
    let channels = format!(
        r#"[[channel]]
id = "sms"
kind = "sms-http"
url = "http://127.0.0.1:{gateway}/sms"
body = '{{"to":"{{{{phone}}}}","text":"{{{{text}}}}","link":"{{{{link}}}}","incident":"{{{{incident}}}}"}}'
timeout = "{timeout}"
attempts = {attempts}
fallback = "sms2"
[[channel]]
id = "sms2"
kind = "sms-http"
url = "http://127.0.0.1:{gateway}/backup"
body = '{{"to":"{{{{phone}}}}","text":"{{{{text}}}}"}}'
"#
    );
    config_with(broker, &client_id(name), "")
        .replace("[[channel]]\nid = \"sms\"\nkind = \"log\"\n", &channels)
        .replace(
            "[server]\n",
            "[server]\nsecret_env = \"BEREDSKAB_TEST_SECRET\"\n",
        )
}

/// Pushes a server alarm; its incident notifies p-drift after settle.
async fn alarm(client: &reqwest::Client, d: &Daemon, component: &str) {
    let (status, body) = post(
        client,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        format!(r#"{{"component":"{component}","kind":"server","state":"firing"}}"#),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// A fire alarm published over MQTT reaches the gateway as an SMS with an
/// acknowledgement link; following it with GET changes nothing, POST
/// acknowledges, and the deputy is then never told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_alarm_reaches_the_gateway_and_its_link_acknowledges() {
    let broker = Broker::start("notify-e2e");
    let (gateway, port) = Gateway::start(Vec::new()).await;
    let d = Daemon::start_with_env(
        "notify-e2e",
        &sms_config(broker.port, port, "notify-e2e", 5, "2s"),
        &[("BEREDSKAB_TEST_SECRET", "a test secret")],
    );
    let client = http();
    let publisher = Publisher::start(broker.port, &client_id("notify-e2e-pub"));
    eventually("the daemon is ready", PATIENCE, || async {
        (get(&client, &d.url("/readyz"), None).await.0 == 200).then_some(())
    })
    .await;
    publisher
        .publish("site/serverrum/fire", "fire", r#"{"state":"alarm"}"#)
        .await;
    // p-drift (the open step) and the IT chief (a fire is expected to last
    // longer than 30 minutes) are told.
    let sms = eventually("the SMS reaches the gateway", PATIENCE, || async {
        gateway
            .seen()
            .into_iter()
            .find(|s| s.path == "/sms" && s.body["to"] == "+4511111111")
    })
    .await;
    let text = sms.body["text"].as_str().expect("text");
    let link = sms.body["link"].as_str().expect("link").to_owned();
    assert!(text.ends_with(&link), "the text ends with the link: {text}");
    assert!(link.starts_with(&d.url("/a/")), "{link}");
    assert!(
        text.chars().count() <= 160 + link.len() + 1,
        "one SMS: {text}"
    );

    // GET shows what will be acknowledged and changes nothing.
    let page = client.get(&link).send().await.expect("GET link");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("page");
    assert!(html.contains("<form") && html.contains("post"), "{html}");
    let (_, inc) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
    assert_eq!(inc["state"], "open");

    let done = client.post(&link).send().await.expect("POST link");
    assert_eq!(done.status().as_u16(), 200);
    let (_, inc) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "p-drift");

    // deputy_after is 3 s: wait past it; p-vagt2 (+4522222222) hears nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let to_deputy = gateway
        .seen()
        .iter()
        .filter(|s| s.body["to"] == "+4522222222")
        .count();
    assert_eq!(
        to_deputy, 0,
        "the deputy is not told after the acknowledgement"
    );
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_notifications_total{channel=\"sms\",outcome=\"sent\"}"
        )
        .await,
        gateway.delivered().len() as f64
    );
    let mut d = d;
    assert!(d.terminate().success());
}

/// The gateway fails for a while (429 with Retry-After, a 500, a hang past
/// the timeout): afterwards every notification has arrived exactly once,
/// with backoff between the attempts, and the timeline shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gateway_gets_each_notification_once_after_it_recovers() {
    let broker = Broker::start("notify-retry");
    let (gateway, port) =
        Gateway::start(vec![Mode::TooMany(3), Mode::Fail(1), Mode::Hang(1)]).await;
    let d = Daemon::start_with_env(
        "notify-retry",
        // No deputy within the test: every request is the one notification.
        &sms_config(broker.port, port, "notify-retry", 10, "1s")
            .replace("deputy_after = \"3s\"", "deputy_after = \"1h\""),
        &[("BEREDSKAB_TEST_SECRET", "s")],
    );
    let client = http();
    eventually("the daemon is ready", PATIENCE, || async {
        (get(&client, &d.url("/healthz"), None).await.0 == 200).then_some(())
    })
    .await;
    alarm(&client, &d, "srv-1").await;
    let delivered = eventually("the SMS is delivered", PATIENCE, || async {
        let m = gateway.delivered();
        (!m.is_empty()).then_some(m)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen: Vec<Seen> = gateway
        .seen()
        .into_iter()
        .filter(|s| s.path == "/sms")
        .collect();
    let key = delivered.keys().next().expect("a key").clone();
    assert!(
        seen.iter().all(|s| s.key == key),
        "one notification, one key"
    );
    assert_eq!(gateway.delivered()[&key], 1, "delivered exactly once");
    let answers: Vec<u16> = seen.iter().map(|s| s.answered).collect();
    assert_eq!(
        answers,
        [429, 500, 0, 200],
        "every attempt reached the gateway"
    );
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    // The first backoff is at most 1 s: only Retry-After explains 3 s.
    assert!(
        gaps[0] >= Duration::from_millis(2900),
        "Retry-After is honoured: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(900),
        "backoff grows: {gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(2900),
        "the hang timed out, then backoff: {gaps:?}"
    );
    let (_, inc) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
    let outcomes: Vec<&str> = inc["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["type"] == "delivery")
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["retried", "retried", "retried", "sent"]);
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_notifications_total{channel=\"sms\",outcome=\"retried\"}"
        )
        .await,
        3.0
    );
    let mut d = d;
    assert!(d.terminate().success());
}

/// After the channel's `attempts` failures the fallback channel is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_attempts_a_channel_hands_over_to_its_fallback() {
    let broker = Broker::start("notify-fallback");
    let (gateway, port) = Gateway::start(vec![Mode::Fail(2)]).await;
    let d = Daemon::start_with_env(
        "notify-fallback",
        &sms_config(broker.port, port, "notify-fallback", 2, "2s"),
        &[("BEREDSKAB_TEST_SECRET", "s")],
    );
    let client = http();
    eventually("the daemon is ready", PATIENCE, || async {
        (get(&client, &d.url("/healthz"), None).await.0 == 200).then_some(())
    })
    .await;
    alarm(&client, &d, "srv-2").await;
    let backup = eventually("the fallback delivers", PATIENCE, || async {
        gateway.seen().into_iter().find(|s| s.path == "/backup")
    })
    .await;
    assert_eq!(backup.answered, 200);
    assert_eq!(backup.body["to"], "+4511111111");
    let on_sms: Vec<u16> = gateway
        .seen()
        .iter()
        .filter(|s| s.path == "/sms")
        .map(|s| s.answered)
        .collect();
    assert_eq!(on_sms, [500, 500], "two attempts on sms, then the fallback");
    assert!(backup.key.ends_with("/fallback/sms2"), "{}", backup.key);
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_notifications_total{channel=\"sms\",outcome=\"fallback\"}"
        )
        .await,
        1.0
    );
    let mut d = d;
    assert!(d.terminate().success());
}

/// SIGKILL while the gateway holds the request: after the restart the
/// notification goes out again with the same key and is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_decision_and_delivery_delivers_once() {
    let broker = Broker::start("notify-crash");
    let (gateway, port) = Gateway::start(vec![Mode::Hang(1)]).await;
    let mut d = Daemon::start_with_env(
        "notify-crash",
        &sms_config(broker.port, port, "notify-crash", 5, "30s"),
        &[("BEREDSKAB_TEST_SECRET", "s")],
    );
    let client = http();
    eventually("the daemon is ready", PATIENCE, || async {
        (get(&client, &d.url("/healthz"), None).await.0 == 200).then_some(())
    })
    .await;
    alarm(&client, &d, "srv-3").await;
    eventually("the gateway holds the first request", PATIENCE, || async {
        (!gateway.seen().is_empty()).then_some(())
    })
    .await;
    d.kill9();
    d.spawn();
    let delivered = eventually("delivered after the restart", PATIENCE, || async {
        let m = gateway.delivered();
        (!m.is_empty()).then_some(m)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = gateway.seen();
    assert_eq!(seen.len(), 2, "sent again after the crash: {seen:?}");
    assert_eq!(seen[0].key, seen[1].key, "with the same idempotency key");
    assert_eq!(delivered.values().copied().collect::<Vec<_>>(), [1]);
    assert!(d.terminate().success());
}

/// Mail through a real SMTP server (aiosmtpd): the on-call leader's mail
/// arrives with the right recipient, subject and text, its Message-ID is
/// the notification's key, and the link in it acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_arrives_with_a_link_that_acknowledges() {
    let broker = Broker::start("notify-mail");
    let sink = common::smtp::SmtpSink::start("notify-mail");
    let mail = format!(
        "[[channel]]\n{}tls = \"none\"\n",
        sink.channel("").replace("id = \"mail\"", "id = \"sms\"")
    );
    let config = config_with(broker.port, &client_id("notify-mail"), "")
        .replace("[[channel]]\nid = \"sms\"\nkind = \"log\"\n", &mail)
        .replace(
            "phone = \"+4511111111\"\n",
            "phone = \"+4511111111\"\nemail = \"drift@example.dk\"\n",
        )
        .replace(
            "[server]\n",
            "[server]\nsecret_env = \"BEREDSKAB_TEST_SECRET\"\n",
        );
    let d = Daemon::start_with_env("notify-mail", &config, &[("BEREDSKAB_TEST_SECRET", "m")]);
    let client = http();
    eventually("the daemon is ready", PATIENCE, || async {
        (get(&client, &d.url("/healthz"), None).await.0 == 200).then_some(())
    })
    .await;
    alarm(&client, &d, "srv-6").await;
    let m = eventually("the mail arrives", PATIENCE, || async {
        sink.mails()
            .into_iter()
            .find(|m| m["rcpt_tos"] == serde_json::json!(["drift@example.dk"]))
    })
    .await;
    let subject = m["headers"]["subject"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(subject.starts_with("[Testkommune IT] "), "{subject}");
    let body = m["body"].as_str().unwrap_or_default().to_owned();
    assert!(body.contains("#1"), "the incident is named: {body}");
    let link = body
        .split_whitespace()
        .find(|w| w.starts_with(&d.url("/a/")))
        .unwrap_or_else(|| panic!("a link in the mail: {body}"))
        .to_owned();
    let message_id = m["headers"]["message-id"][0].as_str().unwrap_or_default();
    assert!(message_id.ends_with("@beredskab>"), "{message_id}");
    let done = client.post(&link).send().await.expect("POST link");
    assert_eq!(done.status().as_u16(), 200);
    let (_, inc) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
    assert_eq!(inc["state"], "acknowledged");
    assert_eq!(inc["acknowledged_by"], "p-drift");
    let mut d = d;
    assert!(d.terminate().success());
}
