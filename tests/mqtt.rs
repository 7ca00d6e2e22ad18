//! The MQTT collector against a real Mosquitto that each test starts on its
//! own port, with its own persistence directory and the settings of the
//! shipped deploy/mosquitto/mosquitto.conf. Messages are published with a second
//! rumqttc client at QoS 1, counting only what the broker acknowledged.
//!
//! Mosquitto is required: a missing broker fails the tests, it never skips
//! them.

mod common;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use beredskab::collect::mqtt::{MqttCollector, MqttInput, Received};
use beredskab::config::{ByteSize, MqttConfig};
use common::broker::{Broker, Publisher, STEP, alarm, client_id, key_of, temp_dir};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// The collector under test

fn mqtt_config(port: u16, client_id: &str, topics: &[&str]) -> MqttConfig {
    let mut text = format!("url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{client_id}\"\n");
    for t in topics {
        text.push_str(&format!(
            "[[subscription]]\ntopic = \"{t}\"\nkind = \"fire\"\ncomponent = \"x\"\n"
        ));
    }
    toml::from_str(&text).expect("test mqtt config")
}

/// A running collector and the receiving end of its channel.
struct Running {
    rx: mpsc::Receiver<MqttInput>,
    /// Messages that came between a ConnAck and its SubAck (redelivered).
    early: VecDeque<Received>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn start_collector(port: u16, client_id: &str, topics: &[&str]) -> Running {
    start_collector_with(&mqtt_config(port, client_id, topics))
}

fn start_collector_with(config: &MqttConfig) -> Running {
    let collector = MqttCollector::new(config, None).expect("collector");
    let (tx, rx) = mpsc::channel(1024);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(collector.run(tx, shutdown.clone()));
    Running {
        rx,
        early: VecDeque::new(),
        shutdown,
        task,
    }
}

impl Running {
    /// The next input, within `STEP`.
    async fn next(&mut self) -> MqttInput {
        match tokio::time::timeout(STEP, self.rx.recv()).await {
            Ok(Some(input)) => input,
            Ok(None) => panic!("collector stopped"),
            Err(_) => panic!("no input from the collector within {STEP:?}"),
        }
    }

    /// Waits for the next ConnAck (skipping disconnections), then for the
    /// SubAck, keeping messages redelivered in between; returns the ConnAck's
    /// `session_present`.
    async fn connected(&mut self) -> bool {
        let session_present = loop {
            match self.next().await {
                MqttInput::Connected { session_present } => break session_present,
                MqttInput::Disconnected { .. } => {}
                other => panic!("expected Connected, got {other:?}"),
            }
        };
        loop {
            match self.next().await {
                MqttInput::Subscribed { refused } => {
                    assert!(refused.is_empty(), "{refused:?}");
                    return session_present;
                }
                MqttInput::Message(m) => self.early.push_back(m),
                other => panic!("expected Subscribed, got {other:?}"),
            }
        }
    }

    /// The next message, within `STEP`.
    async fn message(&mut self) -> Received {
        if let Some(m) = self.early.pop_front() {
            return m;
        }
        loop {
            match self.next().await {
                MqttInput::Message(m) => return m,
                // A subscribe pending across a reconnect is acked twice.
                MqttInput::Subscribed { refused } => assert!(refused.is_empty(), "{refused:?}"),
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Cancels the collector and waits until it has disconnected.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("collector stops within STEP")
            .expect("collector task");
    }
}

// ---------------------------------------------------------------------------
// The tests

/// QoS 1 messages on the subscribed filters arrive with topic and payload
/// intact, after a Connected event; other topics do not arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_on_subscribed_topics_arrive_intact() {
    let broker = Broker::start("arrive");
    let mut c = start_collector(
        broker.port,
        &client_id("arrive"),
        &["raadhus/serverrum/+/brand", "+/power/#"],
    );
    assert!(!c.connected().await, "a new client id has no session");

    let publisher = Publisher::start(broker.port, &client_id("arrive-pub"));
    let binary = vec![0u8, 0xff, b'{', 0xc3, 0x28, b'\n'];
    let sent: Vec<(&str, Vec<u8>)> = vec![
        ("raadhus/serverrum/r1/brand", b"ALARM".to_vec()),
        ("raadhus/other/r1/brand", b"not subscribed".to_vec()),
        ("skole/power/ups/1", alarm("p-1")),
        ("raadhus/serverrum/r2/brand", binary.clone()),
        ("raadhus/serverrum/r2/brand", Vec::new()),
    ];
    for (i, (topic, payload)) in sent.iter().enumerate() {
        publisher
            .publish(topic, &i.to_string(), payload.clone())
            .await;
    }
    publisher.wait_acked(sent.len(), STEP).await;

    for (topic, payload) in sent.iter().filter(|(t, _)| !t.contains("other")) {
        let m = c.message().await;
        assert_eq!((m.topic.as_str(), &m.payload), (*topic, payload));
        assert_eq!(m.qos, 1);
        assert!(!m.retain);
        m.ack();
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), c.rx.recv()).await;
    assert!(extra.is_err(), "unexpected input: {extra:?}");
    c.stop().await;
}

/// Messages received but not acked come again to the next collector with the
/// same client id; once acked, they do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_redelivered_and_acked_ones_are_not() {
    const N: usize = 10; // below the broker's max_inflight_messages
    let broker = Broker::start("redeliver");
    let id = client_id("redeliver");
    let topics = ["sensor/+/state"];
    let mut c = start_collector(broker.port, &id, &topics);
    c.connected().await;

    let publisher = Publisher::start(broker.port, &client_id("redeliver-pub"));
    for i in 0..N {
        let key = format!("k-{i}");
        publisher.publish("sensor/a/state", &key, alarm(&key)).await;
    }
    publisher.wait_acked(N, STEP).await;

    // Received, never acked: as if the daemon died before committing.
    let mut held = Vec::new();
    for _ in 0..N {
        held.push(key_of(&c.message().await.payload));
    }
    c.stop().await;

    let mut c = start_collector(broker.port, &id, &topics);
    assert!(c.connected().await, "the broker kept the session");
    let mut again = Vec::new();
    for _ in 0..N {
        let m = c.message().await;
        again.push(key_of(&m.payload));
        m.ack();
    }
    assert_eq!(again, held, "the same messages, in the same order");
    c.stop().await;

    // All acked (the acks left before the DISCONNECT): nothing comes back.
    let mut c = start_collector(broker.port, &id, &topics);
    assert!(c.connected().await);
    publisher
        .publish("sensor/b/state", "marker", alarm("marker"))
        .await;
    let m = c.message().await;
    assert_eq!(key_of(&m.payload), "marker", "nothing older was pending");
    m.ack();
    c.stop().await;
}

/// A burst of 5,000 QoS 1 alarms, acked as they arrive: all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_alarms_arrives_completely() {
    const N: usize = 5_000;
    let broker = Broker::start("burst");
    let mut c = start_collector(broker.port, &client_id("burst"), &["burst/+/alarm"]);
    c.connected().await;
    let publisher = Publisher::start(broker.port, &client_id("burst-pub"));

    let started = Instant::now();
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            let key = format!("k-{i}");
            publisher.publish("burst/s1/alarm", &key, alarm(&key)).await;
        }
        publisher.wait_acked(N, Duration::from_secs(25)).await;
        publisher.acked()
    });

    let mut seen = HashSet::new();
    let mut messages = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while seen.len() < N {
        let input = tokio::time::timeout_at(deadline, c.rx.recv()).await;
        match input {
            Ok(Some(MqttInput::Message(m))) => {
                messages += 1;
                seen.insert(key_of(&m.payload));
                m.ack();
            }
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Ok(None) => panic!("collector stopped"),
            Err(_) => panic!("only {} of {N} distinct alarms arrived", seen.len()),
        }
    }
    let elapsed = started.elapsed();
    let acked = publishing.await.expect("publisher");
    assert_eq!(acked.len(), N);
    assert_eq!(seen, acked);
    eprintln!(
        "mqtt burst: {N} QoS 1 alarms through Mosquitto in {:.2} s = {:.0} msgs/s \
         ({messages} deliveries; the broker saves its database every 10 changes, as shipped)",
        elapsed.as_secs_f64(),
        N as f64 / elapsed.as_secs_f64()
    );
    c.stop().await;
}

/// The broker restarts (SIGTERM, same port, same database) while a publisher
/// keeps publishing: the collector reconnects by itself, its session and
/// subscriptions are back, and every acknowledged publish arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    const N: usize = 3_000;
    let mut broker = Broker::start("restart");
    let port = broker.port;
    let mut c = start_collector(port, &client_id("restart"), &["stream/+"]);
    c.connected().await;

    // The collector's inputs, acked on arrival.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let connects = Arc::new(Mutex::new(Vec::new()));
    let disconnects = Arc::new(AtomicUsize::new(0));
    let (seen2, connects2, disconnects2) = (seen.clone(), connects.clone(), disconnects.clone());
    let mut rx = std::mem::replace(&mut c.rx, mpsc::channel(1).1);
    let consumer = tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            match input {
                MqttInput::Message(m) => {
                    seen2.lock().unwrap().insert(key_of(&m.payload));
                    m.ack();
                }
                MqttInput::Connected { session_present } => {
                    connects2.lock().unwrap().push(session_present);
                }
                MqttInput::Disconnected { .. } => {
                    disconnects2.fetch_add(1, Ordering::Relaxed);
                }
                MqttInput::Subscribed { refused } => assert!(refused.is_empty()),
            }
        }
    });

    let publisher = Arc::new(Publisher::start(port, &client_id("restart-pub")));
    let p = publisher.clone();
    let publishing = tokio::spawn(async move {
        for i in 0..N {
            let key = format!("k-{i}");
            p.publish("stream/s1", &key, alarm(&key)).await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    publisher.wait_acked(N / 3, STEP).await;
    broker.terminate();
    let restarted_after = publisher.acked().len();
    let _broker = Broker::start_on(port, broker.dir.clone());

    publishing.await.expect("publishing");
    publisher.wait_acked(N, Duration::from_secs(20)).await;
    let acked = publisher.acked();
    assert!(!publisher.state.lock().unwrap().lost_session);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let missing = acked.difference(&seen.lock().unwrap()).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged alarms never reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connects = connects.lock().unwrap().clone();
    assert_eq!(connects, [true], "reconnected once, with the session kept");
    assert!(disconnects.load(Ordering::Relaxed) >= 1);
    eprintln!(
        "mqtt restart: broker stopped after {restarted_after} acks; {} of {N} acked, all arrived",
        acked.len()
    );
    c.stop().await;
    consumer.await.expect("consumer");
}

/// A broker that lost everything (a fresh database on the same port): the
/// collector says so with `session_present: false` and subscribes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_forgot_the_session_is_reported_and_resubscribed() {
    let mut broker = Broker::start("forgot");
    let port = broker.port;
    let id = client_id("forgot");
    let topics = ["room/+/fire"];

    let c = start_collector(port, &id, &topics);
    let mut c = {
        let mut c = c;
        assert!(!c.connected().await, "first connection: no session yet");
        c.stop().await;
        start_collector(port, &id, &topics)
    };
    assert!(c.connected().await, "the broker remembers the session");

    broker.kill();
    let _fresh = Broker::start_on(port, temp_dir("forgot-fresh"));
    assert!(
        !c.connected().await,
        "a broker without the session must be reported"
    );

    let publisher = Publisher::start(port, &client_id("forgot-pub"));
    publisher
        .publish("room/r1/fire", "after", alarm("after"))
        .await;
    publisher.wait_acked(1, STEP).await;
    let m = c.message().await;
    assert_eq!(
        (m.topic.as_str(), key_of(&m.payload)),
        ("room/r1/fire", "after".into())
    );
    m.ack();
    c.stop().await;
}

/// The shipped broker limit: a payload over message_size_limit (1 MiB) is
/// dropped by the broker; one over max_payload but under that limit reaches
/// the collector intact (the engine rejects it as oversized); the collector
/// keeps running either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_brokers_size_limit_keeps_huge_messages_away() {
    let broker = Broker::start("size");
    let mut c = start_collector(broker.port, &client_id("size"), &["size/+"]);
    c.connected().await;
    let publisher = Publisher::start(broker.port, &client_id("size-pub"));
    let large = vec![b'x'; 100 * 1024];
    publisher
        .publish("size/large", "large", large.clone())
        .await;
    publisher
        .publish("size/huge", "huge", vec![b'y'; 2 << 20])
        .await;
    publisher
        .publish("size/after", "after", alarm("after"))
        .await;
    publisher.wait_acked(3, STEP).await;

    let m = c.message().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.len()),
        ("size/large", large.len())
    );
    m.ack();
    let m = c.message().await;
    assert_eq!(
        m.topic, "size/after",
        "the huge message was dropped by the broker"
    );
    m.ack();
    c.stop().await;
}

/// A message over the collector's max_packet breaks the connection once; the
/// next connection reads it, so it does not block later alarms forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_max_packet_blocks_nothing() {
    let broker = Broker::start("packet");
    let mut config = mqtt_config(broker.port, &client_id("packet"), &["packet/+"]);
    config.max_packet = ByteSize(1024);
    let mut c = start_collector_with(&config);
    c.connected().await;
    let publisher = Publisher::start(broker.port, &client_id("packet-pub"));
    publisher
        .publish("packet/big", "big", vec![b'z'; 4096])
        .await;
    publisher
        .publish("packet/small", "small", alarm("small"))
        .await;
    publisher.wait_acked(2, STEP).await;

    match c.next().await {
        MqttInput::Disconnected { error } => assert!(error.contains("ize"), "{error}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(c.connected().await);
    let m = c.message().await;
    assert_eq!((m.topic.as_str(), m.payload.len()), ("packet/big", 4096));
    m.ack();
    let m = c.message().await;
    assert_eq!(m.topic, "packet/small");
    m.ack();
    c.stop().await;
}
