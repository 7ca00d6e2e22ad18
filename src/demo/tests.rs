//! The demo's parts together: the rewritten config validates, the sensors'
//! endpoints answer, and a sped-up script reaches a real MQTT subscriber.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::script::{self, FIRE_SERVERS, FIRE_TOPIC, POWER_TOPIC, Pace};
use super::*;
use crate::config::{ChannelKind, load_str};

/// How long any one expected event may take.
const STEP: Duration = Duration::from_secs(10);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir(make_temp_dir().expect("temp dir"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn addrs() -> DemoAddrs {
    DemoAddrs {
        listen: addr(8080),
        broker: addr(41883),
        sensors: addr(49200),
        store: PathBuf::from("/tmp/beredskab-demo-test/beredskab.db"),
    }
}

#[test]
fn the_demo_config_validates_and_points_only_at_the_demo() {
    let at = addrs();
    let demo = demo_config(EXAMPLE_CONFIG, &at).expect("rewritten");
    let loaded =
        load_str("demo.toml", &demo.text).unwrap_or_else(|e| panic!("{e}:\n{e:?}\n{}", demo.text));
    for w in &loaded.warnings {
        assert!(
            !w.message.contains("environment"),
            "the demo needs no environment: {w}"
        );
    }
    let c = loaded.config;
    assert_eq!(c.server.listen, "127.0.0.1:8080");
    assert_eq!(
        c.server.public_url.as_deref(),
        Some("http://127.0.0.1:8080")
    );
    assert_eq!(c.server.secret_env, None);
    assert_eq!(
        c.store.url,
        "sqlite:///tmp/beredskab-demo-test/beredskab.db"
    );
    let mqtt = c.mqtt.as_ref().expect("mqtt");
    assert_eq!(mqtt.url, "mqtt://127.0.0.1:41883");
    assert_eq!(mqtt.password_env, None);
    assert!(!c.probes.is_empty());
    for p in &c.probes {
        assert_eq!(p.kind, crate::config::ProbeKind::Http, "{}", p.id);
        assert_eq!(
            p.url.as_deref(),
            Some(format!("http://127.0.0.1:49200/probe/{}", p.id).as_str())
        );
        assert!(
            p.every <= DEMO_PROBE_EVERY && p.timeout < p.every,
            "{}",
            p.id
        );
    }
    let example = load_str("example", EXAMPLE_CONFIG).expect("example").config;
    assert_eq!(c.channels.len(), example.channels.len());
    for (ch, was) in c.channels.iter().zip(&example.channels) {
        assert_eq!(ch.kind, ChannelKind::Log);
        assert_eq!(ch.id, was.id);
        assert_eq!(ch.fallback, was.fallback);
        assert_eq!(ch.requires_service, was.requires_service);
        assert!(ch.url.is_none() && ch.headers.is_empty() && ch.password_env.is_none());
    }
    assert_eq!(c.tokens.len(), example.tokens.len());
    assert_eq!(demo.tokens.len(), c.tokens.len());
    for (token, made) in c.tokens.iter().zip(&demo.tokens) {
        assert_eq!(token.name, made.name);
        assert_eq!(token.sha256, sha256_hex(&made.secret));
        assert!(made.secret.starts_with("demo-") && made.secret.len() > 20);
    }
    let reader = demo
        .tokens
        .iter()
        .find(|t| t.scopes.iter().any(|s| s == "read"))
        .expect("a read token");
    assert!(reader.scopes.iter().any(|s| s == "ack"));
    // Everything else is the example, unchanged.
    assert_eq!(c.components.len(), example.components.len());
    assert_eq!(c.services.len(), example.services.len());
    assert_eq!(c.policies.len(), example.policies.len());
    assert_eq!(c.estimate.by_kind, example.estimate.by_kind);
}

#[test]
fn tokens_differ_between_runs() {
    let a = demo_config(EXAMPLE_CONFIG, &addrs()).expect("a");
    let b = demo_config(EXAMPLE_CONFIG, &addrs()).expect("b");
    assert_ne!(a.tokens[0].secret, b.tokens[0].secret);
}

#[test]
fn a_broken_example_is_an_error_not_a_panic() {
    assert!(matches!(
        demo_config("[server\n", &addrs()),
        Err(DemoError::Example(_))
    ));
    assert!(matches!(
        demo_config("server = 1\n", &addrs()),
        Err(DemoError::Example(_))
    ));
    assert!(matches!(
        demo_config("[[probe]]\nurl = \"x\"\n", &addrs()),
        Err(DemoError::Example(_))
    ));
}

#[test]
fn the_generator_json_matches_the_example_pointers() {
    let example = load_str("example", EXAMPLE_CONFIG).expect("example").config;
    let g = example
        .probes
        .iter()
        .find_map(|p| p.generator.as_ref())
        .expect("a generator probe");
    let json = serde_json::to_value(sensors::GeneratorStatus {
        running: true,
        fuel_percent: 42,
    })
    .expect("json");
    assert_eq!(json.pointer(&g.running), Some(&serde_json::json!(true)));
    assert_eq!(json.pointer(&g.fuel_percent), Some(&serde_json::json!(42)));
}

/// A plain HTTP/1.1 GET: the status and the body.
async fn get(sensors: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(sensors).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sensors}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(STEP, stream.read_to_string(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sensor_endpoints_answer_as_the_readings_say() {
    let dir = TempDir::new();
    let demo = prepare(addr(8080), &dir.0).await.expect("prepared");
    assert!(demo.config_path.is_file());
    assert!(
        load_str(
            "demo",
            &std::fs::read_to_string(&demo.config_path).expect("read")
        )
        .is_ok()
    );
    let at = demo.sensors_addr;
    assert_eq!(get(at, "/probe/srv-esdh").await, (200, "ok\n".into()));
    assert_eq!(get(at, "/probe/no-such-probe").await.0, 404);
    let (status, body) = get(at, "/probe/generator").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"running": false, "fuel_percent": 100})
    );

    assert!(demo.sensors.set_healthy("srv-esdh", false));
    assert!(!demo.sensors.set_healthy("no-such-probe", false));
    assert_eq!(get(at, "/probe/srv-esdh").await.0, 503);
    demo.sensors.set_generator(sensors::GeneratorStatus {
        running: true,
        fuel_percent: 7,
    });
    let (_, body) = get(at, "/probe/generator").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        json,
        serde_json::json!({"running": true, "fuel_percent": 7})
    );

    let plan = demo.plan().to_string();
    let reader = demo.token("read").expect("read token");
    let login = format!(
        "http://127.0.0.1:8080/login?token={}",
        demo.token("ack").expect("ack token").secret
    );
    for needle in [
        login.as_str(),
        "http://127.0.0.1:8080/status",
        "http://127.0.0.1:8080/api/v1/openapi.json",
        "http://127.0.0.1:8080/readyz",
        "http://127.0.0.1:8080/api/v1/incidents",
        "http://127.0.0.1:8080/metrics",
        reader.secret.as_str(),
        "/api/v1/reports",
    ] {
        assert!(plan.contains(needle), "the plan lacks {needle}:\n{plan}");
    }
    // The script can run on a task of its own, next to the daemon.
    let stop = CancellationToken::new();
    let script = tokio::spawn(demo.run_script(stop.clone()));
    stop.cancel();
    tokio::time::timeout(STEP, script)
        .await
        .expect("the script stops when told")
        .expect("script task");

    demo.shutdown().await;
    assert!(
        TcpStream::connect(at).await.is_err(),
        "the sensors stop with the demo"
    );
}

/// The script, 50 times faster, against a subscriber that stands in for
/// the daemon: every scripted message arrives in order, and the sensors
/// end healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_script_reaches_a_real_subscriber() {
    let dir = TempDir::new();
    let demo = prepare(addr(8080), &dir.0).await.expect("prepared");
    let loaded = config::load(&demo.config_path).expect("config");
    let filters: Vec<String> = loaded
        .config
        .mqtt
        .expect("mqtt")
        .subscriptions
        .iter()
        .map(|s| s.topic.clone())
        .collect();

    let mut options = MqttOptions::new("beredskab", "127.0.0.1", demo.broker_addr.port());
    options.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let received = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let seen = Arc::clone(&received);
    // The script starts once every subscription is in place, or a loaded
    // machine lets its first messages pass before anyone listens.
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    let mut acked = 0;
    let wanted = filters.len();
    let subscriber = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for f in &filters {
                        client
                            .try_subscribe(f.clone(), QoS::AtLeastOnce)
                            .expect("subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    acked += 1;
                    if acked >= wanted
                        && let Some(tx) = subscribed_tx.take()
                    {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    seen.lock().expect("lock").push((p.topic, payload));
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });

    tokio::time::timeout(STEP, subscribed)
        .await
        .expect("subscribed in time")
        .expect("the subscriber runs");

    let shutdown = CancellationToken::new();
    let mut lines = Vec::new();
    let stop = shutdown.clone();
    let mut say = |line: &str| {
        lines.push(line.to_owned());
        if line.contains("all recovered") {
            stop.cancel();
        }
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        script::play(
            &demo.sensors,
            &demo.broker,
            None,
            Pace::faster(50),
            &shutdown,
            &mut say,
        ),
    )
    .await
    .expect("the script ends in time");

    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("t+10s ") && l.contains("mains power lost"))
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("t+40s ") && l.contains("FIRE"))
    );
    let readings = demo.sensors.readings();
    assert!(readings.healthy.values().all(|h| *h));
    assert_eq!(
        readings.generator,
        sensors::GeneratorStatus {
            running: false,
            fuel_percent: 100
        }
    );
    for server in FIRE_SERVERS {
        assert!(readings.healthy.contains_key(server));
    }

    // QoS 1 all the way: everything published reaches the subscriber.
    let deadline = tokio::time::Instant::now() + STEP;
    let wanted = |got: &[(String, String)]| {
        let on = |topic: &str| {
            got.iter()
                .filter(|(t, _)| t == topic)
                .map(|(_, p)| p.clone())
                .collect::<Vec<_>>()
        };
        let power = on(POWER_TOPIC);
        let fire = on(FIRE_TOPIC);
        power.iter().any(|p| p.contains("genetableret"))
            && fire.iter().any(|p| p.contains("afstillet"))
    };
    while !wanted(&received.lock().expect("lock")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            received.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.lock().expect("lock").clone();
    let power: Vec<&str> = got
        .iter()
        .filter(|(t, _)| t == POWER_TOPIC)
        .map(|(_, p)| p.as_str())
        .collect();
    let lost = power.iter().position(|p| p.contains("tabt")).expect("lost");
    let back = power
        .iter()
        .position(|p| p.contains("genetableret"))
        .expect("back");
    assert!(power[0] == "OK" && lost < back, "{power:?}");
    for topic in script::SENSOR_TOPICS {
        assert!(got.iter().any(|(t, _)| t == topic), "nothing on {topic}");
    }
    // Heartbeats (every 100 s of script time) repeat the last state.
    assert!(got.len() > 6 + 4, "{got:?}");

    subscriber.abort();
    demo.shutdown().await;
}
