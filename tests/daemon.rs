//! `beredskab run` end to end: a real Mosquitto started per test, the daemon
//! as a child process on its own port and folder, alarms published with a
//! real MQTT client or pushed over HTTP, and the outcome read back through
//! the API, the metrics, the log and the store file. Crashes are SIGKILL.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::broker::{Broker, Publisher, alarm, client_id};
use common::daemon::{
    ACK_TOKEN, Daemon, INGEST_TOKEN, READ_TOKEN, count, eventually, get, http, incidents, metric,
    post, start_with_broker, wait_ready,
};
use serde_json::json;

/// How long any one expected outcome may take: generous, because the test
/// binary runs its daemons, brokers and publishers side by side on two cores.
const PATIENCE: Duration = Duration::from_secs(60);

/// Alarms published at QoS 1 become one incident per cause, visible in the
/// API, told to the on-call person through the log channel; clearing them
/// resolves it. `/readyz` reports the store, the engine and MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_alarms_become_incidents_that_resolve() {
    let (broker, d) = start_with_broker("incidents");
    let client = http();
    wait_ready(&client, &d).await;
    let (status, ready) = get(&client, &d.url("/readyz"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        ready,
        json!({
            "ready": true,
            "store": "ok",
            "engine": "running",
            "mqtt": "connected",
            "incidents_in_memory": 0,
            "role": "alone",
            "leader": true
        })
    );
    let (status, _) = get(&client, &d.url("/healthz"), None).await;
    assert_eq!(status, 200);

    let publisher = Publisher::start(broker.port, &client_id("incidents-pub"));
    publisher
        .publish(
            "site/serverrum/fire",
            "fire",
            r#"{"state":"alarm","message":"smoke"}"#,
        )
        .await;
    publisher
        .publish("site/srv-3/fire", "fire-2", "ALARM")
        .await;
    publisher.wait_acked(2, PATIENCE).await;

    let list = eventually("an incident opens", PATIENCE, || async {
        let list = incidents(&client, &d).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(list.len(), 1, "one cause, one incident: {list:?}");
    let inc = &list[0];
    assert_eq!(inc["root"], "serverrum");
    assert_eq!(inc["services"], json!(["apps", "omsorg"]));
    assert_eq!(inc["severity"], "critical");
    assert_eq!(inc["state"], "open");

    // A fire does not wait for related alarms: the on-call leader is told,
    // and the IT chief (a fire is expected to last longer than 30 minutes).
    let told = eventually("the steps are logged", PATIENCE, || async {
        let mut lines: Vec<(String, String)> = d
            .log_lines()
            .into_iter()
            .filter(|l| l["target"] == "beredskab::notification")
            .map(|l| {
                let f = &l["fields"];
                (
                    f["to"].as_str().unwrap_or("").to_owned(),
                    f["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        lines.sort();
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert_eq!(
        told,
        [
            ("p-chef".to_owned(), "expected > 30m".to_owned()),
            ("p-drift".to_owned(), "open".to_owned())
        ]
    );

    let (status, detail) = get(&client, &d.url("/api/v1/incidents/1"), Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{detail}");
    let types: Vec<&str> = detail["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(
        types.contains(&"opened") && types.contains(&"notification"),
        "{types:?}"
    );

    publisher
        .publish("site/serverrum/fire", "clear", "OK")
        .await;
    publisher
        .publish("site/srv-3/fire", "clear-2", r#"{"state":"ok"}"#)
        .await;
    eventually("the incident resolves", PATIENCE, || async {
        let list = incidents(&client, &d).await;
        (list[0]["state"] == "resolved").then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_incidents_open{severity=\"critical\"}"
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_incidents_total{severity=\"critical\"}"
        )
        .await,
        1.0
    );
    assert_eq!(metric(&client, &d, "beredskab_mqtt_connected").await, 1.0);
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_service_up{service=\"omsorg\",criticality=\"life\"}"
        )
        .await,
        1.0
    );
    let mut d = d;
    assert!(d.terminate().success());
}

/// SIGKILL in the middle of a burst of 5,000 QoS 1 alarms with unique keys
/// on ten servers; after a restart every alarm is stored exactly once and
/// there is one incident per server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_in_the_middle_of_a_burst_loses_and_doubles_nothing() {
    const N: usize = 5_000;
    let (broker, mut d) = start_with_broker("kill9");
    let client = http();
    wait_ready(&client, &d).await;
    let publisher = Publisher::start(broker.port, &client_id("kill9-pub"));
    let started = Instant::now();
    for i in 0..N {
        let key = format!("k-{i}");
        publisher
            .publish(&format!("burst/srv-{}/alarm", i % 10), &key, alarm(&key))
            .await;
    }
    let db = d.db();
    eventually("part of the burst is stored", PATIENCE, || async {
        (count(&db, "SELECT count(*) FROM alarms").await >= 500).then_some(())
    })
    .await;
    d.kill9();
    let before = count(&db, "SELECT count(*) FROM alarms").await;
    publisher.wait_acked(N, PATIENCE).await;
    d.spawn();
    eventually(
        "the whole burst is stored",
        Duration::from_secs(60),
        || async { (count(&db, "SELECT count(*) FROM alarms").await as usize >= N).then_some(()) },
    )
    .await;
    let elapsed = started.elapsed();
    // A little longer, for any redelivered duplicate to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM alarms").await as usize, N);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT \"key\") FROM alarms").await as usize,
        N,
        "every key once"
    );
    let list = incidents(&client, &d).await;
    assert_eq!(list.len(), 10, "one incident per server: {list:?}");
    let roots: HashSet<String> = list
        .iter()
        .map(|i| i["root"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(roots.len(), 10);
    eprintln!(
        "kill -9 burst: {before} of {N} stored before the kill; all {N} once after the restart, \
         {:.1} s in all",
        elapsed.as_secs_f64()
    );
    assert!(d.terminate().success());
}

/// The broker restarts (SIGTERM, same port and database) while alarms keep
/// coming: every alarm the broker acknowledged reaches the store, and the
/// daemon's subscriptions are back afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    const N: usize = 2_000;
    let (mut broker, d) = start_with_broker("broker-restart");
    let port = broker.port;
    let client = http();
    wait_ready(&client, &d).await;
    let publisher = std::sync::Arc::new(Publisher::start(port, &client_id("restart-pub")));
    let p = publisher.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            let key = format!("k-{i}");
            p.publish(&format!("burst/srv-{}/alarm", i % 10), &key, alarm(&key))
                .await;
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    publisher.wait_acked(N / 3, PATIENCE).await;
    broker.terminate();
    let _broker = Broker::start_on(port, broker.dir.clone());
    publishing.await.expect("publishing");
    // The publisher resends whatever the broker did not acknowledge, so in
    // the end every alarm published is stored, once.
    let db = d.db();
    eventually("every alarm is stored", PATIENCE, || async {
        (count(&db, "SELECT count(*) FROM alarms").await as usize >= N).then_some(())
    })
    .await;
    assert_eq!(
        count(&db, "SELECT count(DISTINCT \"key\") FROM alarms").await as usize,
        N
    );
    // And in particular everything the broker acknowledged. (The test's
    // publisher can lose track of which key an ack was for across the
    // broker's restart, so its count of acks is not asserted.)
    let acked = publisher.acked();
    assert!(acked.len() >= N / 3, "{} acks", acked.len());
    let list: Vec<String> = acked.iter().map(|k| format!("'{k}'")).collect();
    let stored = count(
        &db,
        &format!(
            "SELECT count(*) FROM alarms WHERE \"key\" IN ({})",
            list.join(",")
        ),
    )
    .await as usize;
    assert_eq!(stored, acked.len(), "every acknowledged alarm is stored");
    wait_ready(&client, &d).await;
    // Subscriptions restored: a new alarm after the restart arrives.
    publisher
        .publish("site/serverrum/fire", "after", "ALARM")
        .await;
    eventually("an alarm after the restart arrives", PATIENCE, || async {
        let n = count(
            &db,
            "SELECT count(*) FROM alarms WHERE component = 'serverrum'",
        )
        .await;
        (n == 1).then_some(())
    })
    .await;
    let mut d = d;
    assert!(d.terminate().success());
}

/// Malformed JSON, a word that is not a state, an oversized payload and a
/// topic for an unknown component: each is counted and kept as rejected
/// with its raw bytes, and the collector keeps taking alarms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mqtt_input_is_counted_kept_and_changes_nothing() {
    let (broker, d) = start_with_broker("bad-input");
    let client = http();
    wait_ready(&client, &d).await;
    let publisher = Publisher::start(broker.port, &client_id("bad-pub"));
    publisher
        .publish("site/serverrum/fire", "a", r#"{"state":"#)
        .await;
    publisher.publish("site/serverrum/fire", "b", "smoke").await;
    publisher
        .publish("site/serverrum/fire", "c", vec![b'x'; 2048])
        .await;
    publisher.publish("site/nowhere/fire", "d", "ALARM").await;
    publisher.publish("site/srv-1/fire", "e", "ALARM").await;
    publisher.wait_acked(5, PATIENCE).await;

    eventually(
        "the good alarm after the bad ones opens an incident",
        PATIENCE,
        || async {
            let list = incidents(&client, &d).await;
            (list.len() == 1).then_some(())
        },
    )
    .await;
    for reason in ["bad_payload", "bad_state", "oversized", "unknown_component"] {
        let series =
            format!("beredskab_alarms_rejected_total{{source=\"mqtt\",reason=\"{reason}\"}}");
        assert_eq!(metric(&client, &d, &series).await, 1.0, "{series}");
    }
    let db = d.db();
    assert_eq!(count(&db, "SELECT count(*) FROM rejected").await, 4);
    assert_eq!(
        count(
            &db,
            "SELECT raw_len FROM rejected WHERE reason = 'oversized'"
        )
        .await,
        2048,
        "the raw length is kept"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM rejected WHERE reason = 'bad_state' AND raw = CAST('smoke' AS BLOB)").await,
        1
    );
    let list = incidents(&client, &d).await;
    assert_eq!(list[0]["root"], "srv-1", "no incident for the bad input");
    let mut d = d;
    assert!(d.terminate().success());
}

/// A sensor that falls silent for its heartbeat raises sensor-lost for its
/// component; its next message clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_silence_raises_sensor_lost_and_the_next_message_clears_it() {
    let (broker, d) = start_with_broker("heartbeat");
    let client = http();
    wait_ready(&client, &d).await;
    let publisher = Publisher::start(broker.port, &client_id("hb-pub"));
    publisher.publish("hb/serverrum/state", "1", "OK").await;
    publisher.wait_acked(1, PATIENCE).await;
    let db = d.db();
    let lost = "SELECT count(*) FROM alarms WHERE \"key\" = 'heartbeat:hb/serverrum/state' \
                AND state = 'firing'";
    // Not before the heartbeat (2 s) has passed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(count(&db, lost).await, 0, "still within the heartbeat");
    eventually("sensor lost is raised", Duration::from_secs(5), || async {
        (count(&db, lost).await == 1).then_some(())
    })
    .await;
    let list = incidents(&client, &d).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["root"], "serverrum");
    publisher.publish("hb/serverrum/state", "2", "OK").await;
    eventually(
        "the next message clears it",
        Duration::from_secs(5),
        || async {
            let list = incidents(&client, &d).await;
            (list[0]["state"] == "resolved").then_some(())
        },
    )
    .await;
    let cleared = "SELECT count(*) FROM alarms WHERE \"key\" = 'heartbeat:hb/serverrum/state' \
                   AND state = 'cleared'";
    assert_eq!(count(&db, cleared).await, 1);
    let mut d = d;
    assert!(d.terminate().success());
}

/// The push API: 401 without or with a wrong token, 403 without the scope,
/// 413 for a body over the limit, 400 with the reason for a bad body, 202
/// with the stored input's id; Alertmanager and reports too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_api_checks_tokens_scopes_sizes_and_bodies() {
    let (_broker, d) = start_with_broker("push");
    let client = http();
    wait_ready(&client, &d).await;
    let url = d.url("/api/v1/alarms");
    let good = r#"{"component":"srv-2","kind":"server","state":"firing","message":"disk full"}"#;

    let (status, body) = post(&client, &url, None, good).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("Bearer"),
        "{body}"
    );
    let (status, _) = post(&client, &url, Some("wrong"), good).await;
    assert_eq!(status, 401);
    let (status, body) = post(&client, &url, Some(READ_TOKEN), good).await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap_or("").contains("ingest"),
        "{body}"
    );
    let big = format!(
        r#"{{"component":"srv-2","kind":"server","state":"firing","message":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let (status, _) = post(&client, &url, Some(INGEST_TOKEN), big).await;
    assert_eq!(status, 413);
    let (status, body) = post(
        &client,
        &url,
        Some(INGEST_TOKEN),
        r#"{"component":"srv-2","kind":"flood","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("flood"),
        "{body}"
    );
    let (status, body) = post(
        &client,
        &url,
        Some(INGEST_TOKEN),
        r#"{"component":"srv-2","kind":"server","state":"burning"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(
        &client,
        &url,
        Some(INGEST_TOKEN),
        r#"{"component":"srv-99","kind":"server","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap_or("").contains("srv-99"),
        "{body}"
    );

    let (status, body) = post(&client, &url, Some(INGEST_TOKEN), good).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["id"].as_u64().is_some(), "{body}");
    let list = incidents(&client, &d).await;
    assert_eq!(
        list.len(),
        1,
        "the alarm is stored and its incident is open"
    );
    assert_eq!(list[0]["root"], "srv-2");
    let (status, _) = get(&client, &d.url("/api/v1/incidents"), Some(INGEST_TOKEN)).await;
    assert_eq!(status, 403, "ingest cannot read");
    let (status, _) = get(&client, &d.url("/api/v1/incidents/999"), Some(READ_TOKEN)).await;
    assert_eq!(status, 404);
    let (status, _) = get(
        &client,
        &d.url("/api/v1/incidents?state=maybe"),
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 400);

    for (reason, n) in [
        ("oversized", 1.0),
        ("bad_payload", 1.0),
        ("bad_state", 1.0),
        ("unknown_component", 1.0),
    ] {
        let series =
            format!("beredskab_alarms_rejected_total{{source=\"http\",reason=\"{reason}\"}}");
        assert_eq!(metric(&client, &d, &series).await, n, "{series}");
    }

    let am = r#"{"version":"4","status":"firing","alerts":[
        {"status":"firing","labels":{"component":"srv-4","kind":"server","alertname":"Down"},"fingerprint":"f1"},
        {"status":"firing","labels":{"alertname":"NoComponent"},"fingerprint":"f2"}]}"#;
    let (status, body) = post(
        &client,
        &d.url("/api/v1/alertmanager"),
        Some(INGEST_TOKEN),
        am,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 1);

    let report = r#"{"service":"omsorg","source_type":"vendor","message":"alarm line provider down","expected":"3h"}"#;
    let (status, body) = post(
        &client,
        &d.url("/api/v1/reports"),
        Some(INGEST_TOKEN),
        report,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["incident"].as_u64().expect("the report's incident");
    let (_, inc) = get(
        &client,
        &d.url(&format!("/api/v1/incidents/{id}")),
        Some(ACK_TOKEN),
    )
    .await;
    assert_eq!(
        inc["root"], "omsorg",
        "a report on a service is its own root"
    );
    assert_eq!(inc["expected_basis"], "manual");
    let mut d = d;
    assert!(d.terminate().success());
}

/// An incident open before a crash still escalates to the deputy on time
/// after the restart, and only once, also across a further clean restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_open_before_a_restart_reaches_the_deputy_once_on_time() {
    let (_broker, mut d) = start_with_broker("deputy");
    let client = http();
    wait_ready(&client, &d).await;
    let (status, _) = post(
        &client,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        r#"{"component":"srv-5","kind":"server","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let db = d.db();
    let told = |who: &str, reason: &str| {
        format!("SELECT count(*) FROM outbox WHERE person = '{who}' AND reason = '{reason}'")
    };
    // The open step fires after settle (1 s); then the daemon dies.
    eventually("the on-call leader is told", PATIENCE, || async {
        (count(&db, &told("p-drift", "open")).await == 1).then_some(())
    })
    .await;
    d.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.spawn();
    // deputy_after is 3 s from the open step.
    eventually("the deputy is told", PATIENCE, || async {
        (count(&db, &told("p-vagt2", "deputy")).await == 1).then_some(())
    })
    .await;
    let opened = count(&db, "SELECT opened_at_ms FROM incidents WHERE id = 1").await;
    let step = count(
        &db,
        "SELECT created_at_ms FROM outbox WHERE reason = 'open'",
    )
    .await;
    let deputy = count(
        &db,
        "SELECT created_at_ms FROM outbox WHERE reason = 'deputy'",
    )
    .await;
    assert_eq!(step - opened, 1000, "the open step at the end of settle");
    assert_eq!(deputy - step, 3000, "the deputy exactly deputy_after later");
    let sent = count(&db, "SELECT sent_at_ms FROM outbox WHERE reason = 'deputy'").await;
    assert!(
        sent - deputy < 2000,
        "delivered promptly: {} ms",
        sent - deputy
    );

    assert!(d.terminate().success());
    d.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(&db, &told("p-vagt2", "deputy")).await,
        1,
        "still once"
    );
    assert_eq!(count(&db, &told("p-drift", "open")).await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, 2);
    assert!(d.terminate().success());
}

/// SIGHUP with an invalid config is refused and the old config keeps
/// running; with a valid one, the new config takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_refuses_a_bad_config_and_applies_a_good_one() {
    let (broker, d) = start_with_broker("reload");
    let client = http();
    wait_ready(&client, &d).await;
    let good = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        good.replace("kind = \"server\"\n", "kind = \"sever\"\n"),
    )
    .expect("write");
    d.hup();
    eventually("the bad reload is refused", PATIENCE, || async {
        d.log_text().contains("reload refused").then_some(())
    })
    .await;
    let (status, _) = get(&client, &d.url("/api/v1/incidents"), Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "still running on the old config");

    // A new subscription and a changed token.
    let next = good
        .replace("topic = \"hb/+/state\"", "topic = \"hb2/+/state\"")
        .replace("name = \"vagttelefon\"", "name = \"vagttelefon2\"");
    std::fs::write(&d.config, next).expect("write");
    d.hup();
    eventually("the good reload is applied", PATIENCE, || async {
        d.log_text().contains("config reloaded").then_some(())
    })
    .await;
    wait_ready(&client, &d).await;
    let publisher = Publisher::start(broker.port, &client_id("reload-pub"));
    publisher.publish("hb2/srv-7/state", "1", "ALARM").await;
    eventually("the new subscription works", PATIENCE, || async {
        let list = incidents(&client, &d).await;
        (list.len() == 1 && list[0]["root"] == "srv-7").then_some(())
    })
    .await;
    let mut d = d;
    assert!(d.terminate().success());
}

/// A health endpoint and a generator status that the test sets.
#[derive(Default)]
struct Endpoints {
    healthy: std::sync::atomic::AtomicBool,
    fuel: std::sync::atomic::AtomicU32,
}

async fn serve_endpoints(state: std::sync::Arc<Endpoints>) -> u16 {
    use axum::routing::get as route;
    use std::sync::atomic::Ordering;
    let app = axum::Router::new()
        .route(
            "/health",
            route(|axum::extract::State(s): axum::extract::State<std::sync::Arc<Endpoints>>| async move {
                if s.healthy.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                }
            }),
        )
        .route(
            "/generator",
            route(|axum::extract::State(s): axum::extract::State<std::sync::Arc<Endpoints>>| async move {
                format!(
                    r#"{{"running": true, "fuel": {}}}"#,
                    s.fuel.load(Ordering::Relaxed)
                )
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the endpoints");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

/// Probes through the daemon: a server whose health endpoint fails becomes
/// an incident and recovers; a generator whose fuel drops below the
/// expected power outage makes the estimate say so and the incident take
/// on everything the mains feeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_turn_failing_endpoints_and_falling_fuel_into_incidents() {
    use std::sync::atomic::Ordering;
    let endpoints = std::sync::Arc::new(Endpoints::default());
    endpoints.healthy.store(true, Ordering::Relaxed);
    endpoints.fuel.store(90, Ordering::Relaxed);
    let port = serve_endpoints(endpoints.clone()).await;
    let probes = format!(
        r#"
[[probe]]
id = "srv-8-health"
component = "srv-8"
url = "http://127.0.0.1:{port}/health"
every = "200ms"
timeout = "150ms"
fail_after = 2
recover_after = 2

[[probe]]
id = "generator"
component = "generator"
url = "http://127.0.0.1:{port}/generator"
every = "200ms"
timeout = "150ms"
[probe.generator]
running = "/running"
fuel_percent = "/fuel"
full_tank_runtime = "10h"
"#
    );
    let broker = Broker::start("probes");
    let d = Daemon::start(
        "probes",
        &common::daemon::config_with(broker.port, &client_id("probes"), &probes),
    );
    let client = http();
    wait_ready(&client, &d).await;

    endpoints.healthy.store(false, Ordering::Relaxed);
    let list = eventually(
        "the failing endpoint opens an incident",
        PATIENCE,
        || async {
            let list = incidents(&client, &d).await;
            (!list.is_empty()).then_some(list)
        },
    )
    .await;
    assert_eq!(list[0]["root"], "srv-8");
    assert_eq!(
        metric(&client, &d, "beredskab_probe_up{probe=\"srv-8-health\"}").await,
        0.0
    );
    endpoints.healthy.store(true, Ordering::Relaxed);
    eventually(
        "the endpoint recovers and so does the incident",
        PATIENCE,
        || async {
            let list = incidents(&client, &d).await;
            (list[0]["state"] == "resolved").then_some(())
        },
    )
    .await;

    // Mains lost while the generator carries with 90 % of a 10 h tank.
    let (status, _) = post(
        &client,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        r#"{"component":"power-mains","kind":"power","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 202);
    let power = eventually("the power cut is an incident", PATIENCE, || async {
        incidents(&client, &d)
            .await
            .into_iter()
            .find(|i| i["root"] == "power-mains")
    })
    .await;
    assert_eq!(power["severity"], "minor", "the generator carries: {power}");
    assert_eq!(power["expected_basis"], "kind");
    // 5 % of 10 h is 30 min, less than the 45 min a power cut is expected to last.
    endpoints.fuel.store(5, Ordering::Relaxed);
    let id = power["id"].as_u64().expect("id");
    let inc = eventually("the estimate names the generator", PATIENCE, || async {
        let (_, inc) = get(
            &client,
            &d.url(&format!("/api/v1/incidents/{id}")),
            Some(READ_TOKEN),
        )
        .await;
        (inc["expected_basis"] == "generator").then_some(inc)
    })
    .await;
    assert_eq!(inc["services"], json!(["apps", "omsorg"]), "{inc}");
    assert_eq!(inc["severity"], "critical");
    assert!(inc["fuel_out_at"].is_string(), "{inc}");
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_generator_runtime_seconds{component=\"generator\"}"
        )
        .await,
        1800.0
    );
    let mut d = d;
    assert!(d.terminate().success());
}
