//! The load side of bench/alarm-latency.sh: the time from an MQTT fire
//! alarm to the SMS gateway's request, through a running daemon.
//!
//! It serves a stand-in SMS gateway on GATEWAY_PORT (the daemon's `sms`
//! channel posts `{"incident":"{{incident}}",…}` there), then for each of
//! N rounds publishes a fire alarm at QoS 1, waits for the gateway request
//! of the incident it opens, and clears the alarm again (which resolves
//! the incident, so the next alarm opens a new one). Prints the median,
//! p99 and max.
//!
//! `alarm_latency MQTT_PORT GATEWAY_PORT N`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;

/// The topic the bench config maps to the server room's fire alarm.
const TOPIC: &str = "site/serverrum/fire";
/// How long one round may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// When the gateway first heard of each incident.
#[derive(Default)]
struct Heard {
    at: Mutex<HashMap<u64, Instant>>,
    notify: Notify,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: alarm_latency MQTT_PORT GATEWAY_PORT N";
    let mqtt: u16 = args.get(1).and_then(|p| p.parse().ok()).expect(usage);
    let gateway: u16 = args.get(2).and_then(|p| p.parse().ok()).expect(usage);
    let n: usize = args.get(3).and_then(|p| p.parse().ok()).expect(usage);

    let heard = Arc::new(Heard::default());
    let app = axum::Router::new()
        .route("/sms", axum::routing::post(record))
        .with_state(heard.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", gateway))
        .await
        .expect("bind the gateway");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let mut options = MqttOptions::new(format!("latency-{}", fastrand::u32(..)), "127.0.0.1", mqtt);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) | Ok(_) => {}
                Err(e) => {
                    eprintln!("publisher: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });

    // Incidents are numbered from 1 on a fresh store; the first alarm may
    // not be incident 1 if the store was used before, so follow the
    // gateway: each round waits for an incident it has not seen yet.
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let before: Vec<u64> = heard.at.lock().expect("heard").keys().copied().collect();
        let sent = Instant::now();
        client
            .publish(TOPIC, QoS::AtLeastOnce, false, r#"{"state":"alarm"}"#)
            .await
            .expect("publish");
        let deadline = sent + PATIENCE;
        let at = loop {
            let new = heard
                .at
                .lock()
                .expect("heard")
                .iter()
                .filter(|(id, _)| !before.contains(id))
                .map(|(_, at)| *at)
                .min();
            if let Some(at) = new {
                break at;
            }
            assert!(Instant::now() < deadline, "no SMS within {PATIENCE:?}");
            let _ = tokio::time::timeout(Duration::from_millis(50), heard.notify.notified()).await;
        };
        latencies.push(at.duration_since(sent));
        client
            .publish(TOPIC, QoS::AtLeastOnce, false, r#"{"state":"ok"}"#)
            .await
            .expect("publish");
        // Let the incident resolve before the next alarm opens a new one.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| {
        latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "alarm → SMS gateway over {n} alarms: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(pick(0.5)),
        ms(pick(0.99)),
        ms(*latencies.last().expect("at least one"))
    );
}

async fn record(
    axum::extract::State(heard): axum::extract::State<Arc<Heard>>,
    body: String,
) -> &'static str {
    let now = Instant::now();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if let Some(id) = v["incident"].as_str().and_then(|s| s.parse::<u64>().ok()) {
        heard.at.lock().expect("heard").entry(id).or_insert(now);
        heard.notify.notify_waiters();
    }
    "ok"
}
