//! The HTTP API against clients that misbehave, end to end: `beredskab
//! run` as a child process (with a real Mosquitto) and raw TCP clients
//! that send a wrong token and no body, half a request head, or nothing
//! at all; a report whose `expected` would overflow the engine's clock;
//! and a large Alertmanager body, committed as one.

mod common;

use std::time::{Duration, Instant};

use beredskab::api::BODY_READ_TIMEOUT;
use beredskab::api::server::HEADER_READ_TIMEOUT;

use common::daemon::{
    Daemon, INGEST_TOKEN, count, get, http, incidents, metric, post, start_with_broker, wait_ready,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one expected outcome may take (tests run side by side on
/// two cores).
const PATIENCE: Duration = Duration::from_secs(60);

/// Opens a connection and sends `head` (and nothing more).
async fn send_head(d: &Daemon, head: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", d.port))
        .await
        .expect("connect to the daemon");
    s.write_all(head.as_bytes()).await.expect("send the head");
    s
}

/// Everything the server sends until it closes the connection, and when
/// that was; panics if it is still open after `within`.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&got).into(), Instant::now());
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection is still open after {within:?}; received so far: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// The status line and the JSON body of one response, read up to its
/// Content-Length, which must arrive within `within`.
async fn read_response(s: &mut TcpStream, within: Duration) -> (String, serde_json::Value) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .expect("a Content-Length");
            if body.len() >= length {
                let status = head.lines().next().unwrap_or_default().to_owned();
                let json = serde_json::from_str(&body[..length]).unwrap_or_default();
                return (status, json);
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) => panic!("closed before a whole response: {text:?}"),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read: {e}; so far: {text:?}"),
            Err(_) => panic!("no whole response within {within:?}; so far: {text:?}"),
        }
    }
}

fn post_head(path: &str, token: Option<&str>, length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: beredskab\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {length}\r\n\r\n"
    )
}

/// A client that announces a body of 1,000 bytes and sends none gets 401
/// at once for a wrong or missing token: the token is checked before the
/// body is waited for. With the right token, it gets 408 once the body
/// timeout has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_without_waiting_for_the_body() {
    let (_broker, d) = start_with_broker("auth-first");
    let client = http();
    wait_ready(&client, &d).await;

    let mut right = send_head(&d, &post_head("/api/v1/alarms", Some(INGEST_TOKEN), 1000)).await;
    let sent_right = Instant::now();
    for (path, token) in [
        ("/api/v1/alarms", Some("wrong")),
        ("/api/v1/alertmanager", Some("wrong")),
        ("/api/v1/reports", None),
    ] {
        let mut s = send_head(&d, &post_head(path, token, 1000)).await;
        let (status, body) = read_response(&mut s, Duration::from_secs(5)).await;
        assert!(
            status.starts_with("HTTP/1.1 401"),
            "{path}: {status} {body}"
        );
        assert!(body["error"].is_string(), "{body}");
    }

    let (status, body) = read_response(&mut right, BODY_READ_TIMEOUT + PATIENCE).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status} {body}");
    assert_eq!(
        body,
        json!({"error": format!("the request body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs())})
    );
    assert!(sent_right.elapsed() >= BODY_READ_TIMEOUT);
    let mut d = d;
    assert!(d.terminate().success());
}

/// A connection that sends half a request head, or nothing, is closed
/// once the header read timeout has passed, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_does_not_hold_a_connection() {
    let (_broker, d) = start_with_broker("header-timeout");
    let client = http();
    wait_ready(&client, &d).await;
    let opened = Instant::now();
    let mut half = send_head(
        &d,
        "POST /api/v1/alarms HTTP/1.1\r\nHost: beredskab\r\nAuthoriz",
    )
    .await;
    let mut silent = send_head(&d, "").await;
    let within = HEADER_READ_TIMEOUT + PATIENCE;
    let (_, closed_half) = read_until_closed(&mut half, within).await;
    let (_, closed_silent) = read_until_closed(&mut silent, within).await;
    // Held at least that long: it was the timeout that closed them.
    for closed in [closed_half, closed_silent] {
        assert!(
            closed.duration_since(opened) >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
            "closed after {:?}",
            closed.duration_since(opened)
        );
    }
    let (status, _) = get(&client, &d.url("/healthz"), None).await;
    assert_eq!(status, 200);
    let mut d = d;
    assert!(d.terminate().success());
}

/// A report expected to last 2^64 - 1 seconds, on a component whose
/// incident has been open for over a second (the engine would add the
/// two), is refused with the reason and counted as a bad payload; the
/// engine keeps working: a normal alarm afterwards opens an incident and
/// the daemon stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_expected_to_last_for_ever_is_refused_and_the_engine_keeps_going() {
    let (_broker, d) = start_with_broker("report-overflow");
    let client = http();
    wait_ready(&client, &d).await;
    let (status, body) = post(
        &client,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        r#"{"component":"srv-1","kind":"server","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    // Setup, not an assertion: the incident must be over a second old.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let report = r#"{"component":"srv-1","source_type":"vendor","message":"down","expected":"18446744073709551615s"}"#;
    let (status, body) = post(
        &client,
        &d.url("/api/v1/reports"),
        Some(INGEST_TOKEN),
        report,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        json!({"error": r#"expected "18446744073709551615s" is longer than 100 years"#})
    );
    assert_eq!(
        metric(
            &client,
            &d,
            "beredskab_alarms_rejected_total{source=\"manual\",reason=\"bad_payload\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        count(
            &d.db(),
            "SELECT count(*) FROM rejected WHERE reason = 'bad_payload'"
        )
        .await,
        1
    );

    let (status, body) = post(
        &client,
        &d.url("/api/v1/alarms"),
        Some(INGEST_TOKEN),
        r#"{"component":"power-mains","kind":"power","state":"firing"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let list = incidents(&client, &d).await;
    assert!(list.iter().any(|i| i["root"] == "power-mains"), "{list:?}");
    let (status, ready) = get(&client, &d.url("/readyz"), None).await;
    assert_eq!(status, 200, "{ready}");
    let mut d = d;
    assert!(d.terminate().success());
}

/// An Alertmanager body of 200 alerts is answered once all are stored,
/// in one commit: the core takes them in at one engine time, so every
/// logged input and every alarm row of the body has the same time. (One
/// commit per alert would give them at least as many distinct
/// milliseconds as an fsync takes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_body_is_committed_as_one() {
    const N: usize = 200;
    let (_broker, d) = start_with_broker("am-batch");
    let client = http();
    wait_ready(&client, &d).await;
    let alerts: Vec<_> = (0..N)
        .map(|i| {
            json!({
                "status": "firing",
                "labels": {"component": format!("srv-{}", i % 10), "kind": "server", "alertname": "Down"},
                "annotations": {"summary": format!("alert {i}")},
                "fingerprint": format!("fp-{i}"),
            })
        })
        .collect();
    let body = json!({"version": "4", "status": "firing", "alerts": alerts}).to_string();
    let (status, answer) = post(
        &client,
        &d.url("/api/v1/alertmanager"),
        Some(INGEST_TOKEN),
        body,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"accepted": N}));
    let db = d.db();
    assert_eq!(
        count(&db, "SELECT count(*) FROM inputs WHERE source = 'http'").await,
        N as i64
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(DISTINCT at_ms) FROM inputs WHERE source = 'http'"
        )
        .await,
        1,
        "all inputs at one engine time"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM alarms").await, N as i64);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT at_ms) FROM alarms").await,
        1
    );

    // Alerts that cannot be used are kept as rejected and named in the
    // answer in the order of the body, whether the parser or the engine
    // refused them.
    let mixed = json!({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"component": "srv-0", "alertname": "Up"}, "fingerprint": "m-1"},
        {"status": "firing", "labels": {"alertname": "NoComponent"}, "fingerprint": "m-2"},
        {"status": "firing", "labels": {"component": "srv-99"}, "fingerprint": "m-3"},
        {"status": "weird", "labels": {"component": "srv-1"}, "fingerprint": "m-4"},
    ]});
    let (status, answer) = post(
        &client,
        &d.url("/api/v1/alertmanager"),
        Some(INGEST_TOKEN),
        mixed.to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1, "{answer}");
    let refused: Vec<&str> = answer["rejected"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(refused.len(), 3, "{answer}");
    assert!(refused[0].contains("component"), "{answer}");
    assert!(refused[1].contains("srv-99"), "{answer}");
    assert!(refused[2].contains("weird"), "{answer}");
    assert_eq!(count(&db, "SELECT count(*) FROM rejected").await, 3);
    let mut d = d;
    assert!(d.terminate().success());
}
