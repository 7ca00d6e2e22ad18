//! Nothing fatal, nothing given up: the daemon against what goes wrong in
//! real life. A real Mosquitto, a real HTTP server standing in for the SMS
//! gateway, the real daemon binary:
//! - a gateway down for 20 s, and for 150 s with a kill -9 in the middle:
//!   every page arrives exactly once, within 60 s of the gateway's
//!   recovery, and the outbox gauges show what waits meanwhile;
//! - a delivery whose record the store refuses is not sent again;
//! - a store that refuses every commit ends the process (non-zero), and
//!   the daemon comes back on it;
//! - a wall clock set back or forward neither holds back nor hastens a
//!   deputy (libfaketime steps the daemon's wall clock only).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::broker::{Broker, client_id};
use common::daemon::{
    Daemon, INGEST_TOKEN, READ_TOKEN, config_with, eventually, get, http, metric, post,
};
use common::gateway::Gateway;
use sqlx::Connection;

const PATIENCE: Duration = Duration::from_secs(60);

/// The test config with SMS through the gateway and no fallback: the
/// channel itself must not give up.
fn config(broker: u16, gateway: u16, name: &str) -> String {
    let channel = format!(
        r#"[[channel]]
id = "sms"
kind = "sms-http"
url = "http://127.0.0.1:{gateway}/sms"
body = '{{"to":"{{{{phone}}}}","text":"{{{{text}}}}"}}'
timeout = "2s"
"#
    );
    config_with(broker, &client_id(name), "")
        .replace("[[channel]]\nid = \"sms\"\nkind = \"log\"\n", &channel)
        .replace(
            "[server]\n",
            "[server]\nsecret_env = \"BEREDSKAB_TEST_SECRET\"\n",
        )
}

async fn start(name: &str, broker: &Broker, gateway: u16, env: &[(&str, &str)]) -> Daemon {
    let mut all = vec![("BEREDSKAB_TEST_SECRET", "s")];
    all.extend_from_slice(env);
    let d = Daemon::start_with_env(name, &config(broker.port, gateway, name), &all);
    ready(&d).await;
    d
}

async fn ready(d: &Daemon) {
    let client = http();
    eventually("the daemon is ready", PATIENCE, || async {
        (get(&client, &d.url("/readyz"), None).await.0 == 200).then_some(())
    })
    .await;
}

async fn alarm(d: &Daemon, component: &str) {
    let (status, body) = post(
        &http(),
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        format!(r#"{{"component":"{component}","kind":"server","state":"firing"}}"#),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// The keys of every notification the gateway has seen a request for.
fn keys(g: &Gateway) -> HashSet<String> {
    g.seen().into_iter().map(|s| s.key).collect()
}

/// Waits until every key the gateway has seen is delivered, then checks
/// each was delivered once and within 60 s of `recovered`.
async fn all_delivered_once(g: &Gateway, recovered: Instant, expected: usize) {
    let delivered = eventually(
        "every page is delivered",
        Duration::from_secs(120),
        || async {
            let d = g.delivered();
            (d.len() >= expected && keys(g).iter().all(|k| d.contains_key(k))).then_some(d)
        },
    )
    .await;
    assert_eq!(delivered.len(), expected, "{delivered:?}");
    for (key, n) in &delivered {
        assert_eq!(*n, 1, "{key} delivered exactly once: {delivered:?}");
    }
    for (key, at) in g.delivered_at() {
        let after = at.saturating_duration_since(recovered);
        assert!(
            after <= Duration::from_secs(60),
            "{key} reached the gateway {after:?} after its recovery"
        );
    }
}

/// Delivery outcomes in an incident's timeline.
async fn outcomes(d: &Daemon, incident: u64) -> Vec<String> {
    let (_, inc) = get(
        &http(),
        &d.url(&format!("/api/v1/incidents/{incident}")),
        Some(READ_TOKEN),
    )
    .await;
    inc["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|e| e["type"] == "delivery")
                .filter_map(|e| e["outcome"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The SMS gateway is down for 20 s: a channel without a fallback keeps
/// trying (it used to give up after five attempts, about 15 s), the
/// outbox gauges show the pages waiting, and after the recovery every
/// page (the on-call leader's and the deputy's, for two incidents) has
/// arrived exactly once, within 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_down_for_20_s_gets_every_page_once_within_60_s_of_recovering() {
    let broker = Broker::start("hard-down20");
    let (gateway, port) = Gateway::start(Vec::new()).await;
    gateway.set_down(true);
    let d = start("hard-down20", &broker, port, &[]).await;
    let client = http();
    let down_since = Instant::now();
    alarm(&d, "srv-1").await;
    alarm(&d, "srv-2").await;
    // Each incident tells p-drift, and p-vagt2 once deputy_after (3 s)
    // has passed unacknowledged: four pages.
    eventually("four pages are tried", PATIENCE, || async {
        (keys(&gateway).len() == 4).then_some(())
    })
    .await;
    let pending = eventually("the outbox gauges show them", PATIENCE, || async {
        let n = metric(&client, &d, "beredskab_outbox_pending{channel=\"sms\"}").await;
        let age = metric(
            &client,
            &d,
            "beredskab_outbox_oldest_seconds{channel=\"sms\"}",
        )
        .await;
        (n >= 4.0 && age > 0.0).then_some(n)
    })
    .await;
    assert_eq!(pending, 4.0);
    let outage = Duration::from_secs(20).saturating_sub(down_since.elapsed());
    tokio::time::sleep(outage).await;
    gateway.set_down(false);
    let recovered = Instant::now();
    all_delivered_once(&gateway, recovered, 4).await;
    eventually("the outbox is empty", PATIENCE, || async {
        let n = metric(&client, &d, "beredskab_outbox_pending{channel=\"sms\"}").await;
        let age = metric(
            &client,
            &d,
            "beredskab_outbox_oldest_seconds{channel=\"sms\"}",
        )
        .await;
        (n == 0.0 && age == 0.0).then_some(())
    })
    .await;
    let outcomes = outcomes(&d, 1).await;
    assert!(outcomes.iter().any(|o| o == "retried"), "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| *o == "sent").count(),
        2,
        "{outcomes:?}"
    );
    assert!(!outcomes.iter().any(|o| o == "failed"), "{outcomes:?}");
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_notifications_total{channel=\"sms\",outcome=\"failed\"}"
        )
        .await,
        0.0
    );
    let mut d = d;
    assert!(d.terminate().success());
}

/// The gateway is down for 150 s, and the daemon is killed with SIGKILL
/// half-way: after the restart and the recovery every page has arrived
/// exactly once, within 60 s of the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_down_for_150_s_with_a_kill_9_gets_every_page_once() {
    let broker = Broker::start("hard-down150");
    let (gateway, port) = Gateway::start(Vec::new()).await;
    gateway.set_down(true);
    let mut d = start("hard-down150", &broker, port, &[]).await;
    let down_since = Instant::now();
    alarm(&d, "srv-3").await;
    alarm(&d, "srv-4").await;
    eventually("four pages are tried", PATIENCE, || async {
        (keys(&gateway).len() == 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(75).saturating_sub(down_since.elapsed())).await;
    d.kill9();
    d.spawn();
    ready(&d).await;
    tokio::time::sleep(Duration::from_secs(150).saturating_sub(down_since.elapsed())).await;
    gateway.set_down(false);
    let recovered = Instant::now();
    all_delivered_once(&gateway, recovered, 4).await;
    assert!(d.terminate().success());
}

/// An exclusive lock on the daemon's SQLite file from another connection:
/// the store refuses every write until it is let go.
struct StoreLock(sqlx::SqliteConnection);

impl StoreLock {
    async fn take(db: &Path) -> StoreLock {
        let url = format!("sqlite://{}", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut conn)
            .await
            .expect("take the write lock");
        StoreLock(conn)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.0)
            .await
            .expect("let go of the write lock");
        let _ = self.0.close().await;
    }
}

/// The gateway accepts a page while the store cannot record it (another
/// process holds the write lock for longer than the store waits): the
/// outcome is kept and recorded once the store takes writes again, and
/// the page is not sent a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_record_fails_is_not_sent_again() {
    let broker = Broker::start("hard-record");
    let (gateway, port) = Gateway::start(Vec::new()).await;
    let d = start("hard-record", &broker, port, &[]).await;
    gateway.hold();
    alarm(&d, "srv-5").await;
    eventually("the gateway holds the page", PATIENCE, || async {
        (gateway.waiting() == 1).then_some(())
    })
    .await;
    let lock = StoreLock::take(&d.db()).await;
    gateway.release();
    // Longer than the store's 10 s busy timeout: recording fails at least
    // once.
    tokio::time::sleep(Duration::from_secs(14)).await;
    lock.release().await;
    eventually("the delivery is recorded as sent", PATIENCE, || async {
        outcomes(&d, 1)
            .await
            .iter()
            .any(|o| o == "sent")
            .then_some(())
    })
    .await;
    let to_drift: Vec<_> = gateway
        .seen()
        .into_iter()
        .filter(|s| s.body["to"] == "+4511111111")
        .collect();
    assert_eq!(to_drift.len(), 1, "sent once: {to_drift:?}");
    let mut d = d;
    assert!(d.terminate().success());
}

/// The store refuses every commit for longer than the core waits: the
/// process says why and exits non-zero (so systemd restarts it), and a
/// restart on the same store carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_every_commit_ends_the_process() {
    let broker = Broker::start("hard-store");
    let (_gateway, port) = Gateway::start(Vec::new()).await;
    let mut d = start("hard-store", &broker, port, &[]).await;
    let client = http();
    let lock = StoreLock::take(&d.db()).await;
    let locked = Instant::now();
    let url = d.url("/api/v1/alarms");
    let push = tokio::spawn(async move {
        let started = Instant::now();
        let (status, body) = post(
            &http(),
            &url,
            Some(INGEST_TOKEN),
            r#"{"component":"srv-6","kind":"server","state":"firing"}"#,
        )
        .await;
        (status, body, started.elapsed())
    });
    eventually("/readyz says the store fails", PATIENCE, || async {
        let (status, body) = get(&client, &d.url("/readyz"), None).await;
        (status == 503 && body["store"] != "ok").then_some(())
    })
    .await;
    let status = eventually("the process exits", Duration::from_secs(120), || {
        let exited = d.exited();
        async move { exited }
    })
    .await;
    assert!(!status.success(), "exits non-zero: {status:?}");
    let took = locked.elapsed();
    assert!(
        took < Duration::from_secs(100),
        "gave up after about a minute, not {took:?}"
    );
    assert!(
        d.log_text().contains("an essential task ended"),
        "says why: {}",
        d.log_text()
    );
    let (push_status, body, waited) = push.await.expect("the push");
    assert_eq!(
        push_status, 503,
        "nothing uncommitted is answered 202: {body}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "the request gives up in bounded time, not {waited:?}"
    );
    lock.release().await;
    d.forget_child();
    d.spawn();
    ready(&d).await;
    alarm(&d, "srv-6").await;
    assert!(d.terminate().success());
}

/// libfaketime for the daemon: its wall clock (CLOCK_REALTIME) is offset
/// by what the file holds, read again every second; its monotonic clock is
/// left alone.
fn faketime(dir: &Path) -> (PathBuf, Vec<(String, String)>) {
    let lib = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| PathBuf::from(d).join("faketime/libfaketime.so.1"))
    .find(|p| p.exists())
    .expect("libfaketime is installed (Debian's faketime package; .ci/run installs it)");
    let file = dir.join("faketime");
    std::fs::write(&file, "+0\n").expect("write the faketime file");
    let env = vec![
        ("LD_PRELOAD".to_owned(), lib.display().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE".to_owned(),
            file.display().to_string(),
        ),
        ("FAKETIME_CACHE_DURATION".to_owned(), "1".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
    ];
    (file, env)
}

/// Opens an incident, steps the daemon's wall clock by `step` once the
/// on-call leader's page has arrived, and returns how long after that page
/// the deputy's arrived (deputy_after is 3 s).
async fn deputy_after_a_wall_clock_step(name: &str, step: &str) -> Duration {
    let broker = Broker::start(name);
    let (gateway, port) = Gateway::start(Vec::new()).await;
    let dir = common::broker::temp_dir(&format!("faketime-{name}"));
    let (file, env) = faketime(&dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = start(name, &broker, port, &env).await;
    alarm(&d, "srv-7").await;
    let first = eventually("the on-call leader is paged", PATIENCE, || async {
        gateway
            .seen()
            .into_iter()
            .find(|s| s.body["to"] == "+4511111111")
    })
    .await;
    std::fs::write(&file, format!("{step}\n")).expect("step the clock");
    let deputy = eventually("the deputy is paged", PATIENCE, || async {
        gateway
            .seen()
            .into_iter()
            .find(|s| s.body["to"] == "+4522222222")
    })
    .await;
    let mut d = d;
    assert!(d.terminate().success());
    deputy.at.saturating_duration_since(first.at)
}

/// Set back an hour, the wall clock does not hold the deputy back an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_set_back_does_not_delay_the_deputy() {
    let gap = deputy_after_a_wall_clock_step("hard-clock-back", "-1h").await;
    assert!(gap < Duration::from_secs(10), "deputy after {gap:?}");
}

/// Set forward an hour, the wall clock does not fire the deputy at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_set_forward_does_not_hasten_the_deputy() {
    let gap = deputy_after_a_wall_clock_step("hard-clock-fwd", "+1h").await;
    assert!(
        gap >= Duration::from_secs(2) && gap < Duration::from_secs(10),
        "deputy after {gap:?}"
    );
}

/// Components c-0 … c-(n-1), each its own root, feeding one service with a
/// policy that tells nobody within the test.
fn many_components(n: usize) -> String {
    let mut extra = String::new();
    let mut ids = Vec::new();
    for i in 0..n {
        extra.push_str(&format!(
            "[[component]]\nid = \"c-{i}\"\nkind = \"server\"\n"
        ));
        ids.push(format!("\"c-{i}\""));
    }
    extra.push_str(&format!(
        "[[service]]\nid = \"bulk\"\nname = \"Bulk\"\ncriticality = \"important\"\n\
         depends_on = [{}]\npolicy = \"quiet\"\n\
         [[policy]]\nid = \"quiet\"\ndeputy_after = \"1h\"\n\
         [[policy.step]]\non = \"open 1d\"\nnotify = [\"role:drift-leder\"]\nvia = [\"sms\"]\n",
        ids.join(", ")
    ));
    extra
}

/// An Alertmanager body with one alert per component, all in `status`.
fn alerts(n: usize, status: &str) -> String {
    let alerts: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"status":"{status}","labels":{{"component":"c-{i}","kind":"server"}},"fingerprint":"f{i}"}}"#
            )
        })
        .collect();
    format!(r#"{{"alerts":[{}]}}"#, alerts.join(","))
}

/// 20,000 incidents opened and resolved leave the engine holding only
/// the open ones: resolved incidents live in the store, not in memory,
/// and a restart rebuilds no more than what is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_resolved_incidents_leave_only_the_open_ones_in_memory() {
    const N: usize = 500;
    const ROUNDS: usize = 40;
    let broker = Broker::start("hard-memory");
    let config = config_with(broker.port, &client_id("hard-memory"), &many_components(N));
    let mut d = Daemon::start(
        "hard-memory",
        &config.replace(
            "[server]\n",
            "[server]\nsecret_env = \"BEREDSKAB_TEST_SECRET\"\n",
        ),
    );
    ready(&d).await;
    let client = http();
    let push = |body: String| {
        let (client, url) = (client.clone(), d.url("/api/v1/alertmanager"));
        async move {
            let (status, answer) = post(&client, &url, Some(INGEST_TOKEN), body).await;
            assert_eq!(status, 202, "{answer}");
            assert_eq!(answer["accepted"], N, "{answer}");
        }
    };
    for _ in 0..ROUNDS {
        push(alerts(N, "firing")).await;
        push(alerts(N, "resolved")).await;
    }
    // One more round left open.
    push(alerts(N, "firing")).await;
    let opened = common::daemon::count(&d.db(), "SELECT count(*) FROM incidents").await;
    assert_eq!(opened, ((ROUNDS + 1) * N) as i64);
    let held = |body: &serde_json::Value| body["incidents_in_memory"].as_u64();
    let (status, body) = get(&client, &d.url("/readyz"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held(&body), Some(N as u64), "only the open ones: {body}");
    // Resolved: nothing left in memory; the store still has them all.
    push(alerts(N, "resolved")).await;
    let (_, body) = get(&client, &d.url("/readyz"), None).await;
    assert_eq!(held(&body), Some(0), "{body}");
    let resolved = common::daemon::count(
        &d.db(),
        "SELECT count(*) FROM incidents WHERE state = 'resolved'",
    )
    .await;
    assert_eq!(resolved, ((ROUNDS + 1) * N) as i64);
    let (_, one) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
    assert_eq!(one["state"], "resolved", "read from the store: {one}");
    // After a restart the snapshot holds what is open, and numbering goes on.
    assert!(d.terminate().success());
    d.spawn();
    ready(&d).await;
    let (_, body) = get(&client, &d.url("/readyz"), None).await;
    assert_eq!(held(&body), Some(0), "{body}");
    let (status, answer) = post(
        &client,
        &d.url("/api/v1/alertmanager"),
        Some(INGEST_TOKEN),
        alerts(1, "firing"),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let next = ((ROUNDS + 1) * N + 1) as u64;
    let (status, inc) = get(
        &client,
        &d.url(&format!("/api/v1/incidents/{next}")),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "numbering goes on from {next}: {inc}");
    assert_eq!(inc["state"], "open");
    assert!(d.terminate().success());
}
