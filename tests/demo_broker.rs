//! The demo's in-process MQTT broker against real rumqttc clients, each test
//! with its own broker on a free port of 127.0.0.1.
#![cfg(feature = "demo")]

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use beredskab::collect::mqtt::{MqttCollector, MqttInput};
use beredskab::config::MqttConfig;
use beredskab::demo::broker::{Broker, BrokerHandle};
use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any single expected event may take.
const STEP: Duration = Duration::from_secs(10);

struct TestBroker {
    addr: SocketAddr,
    handle: BrokerHandle,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl TestBroker {
    async fn start() -> TestBroker {
        Self::start_with(|b| b).await
    }

    async fn start_with(setup: impl FnOnce(Broker) -> Broker) -> TestBroker {
        let loopback = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0);
        let broker = setup(Broker::bind(loopback).await.expect("bind"));
        let addr = broker.local_addr();
        let handle = broker.handle();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker.run(shutdown.clone()));
        TestBroker {
            addr,
            handle,
            shutdown,
            task,
        }
    }

    fn options(&self, id: &str, clean: bool) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", self.addr.port());
        o.set_clean_session(clean)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(5));
        o
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("the broker stops in time")
            .expect("the broker task");
    }
}

/// A client whose event loop is polled by its own task; what it sees comes
/// out of `events`. Dropping (aborting) the task closes the connection.
struct Client {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: JoinHandle<()>,
}

impl Client {
    fn connect(options: MqttOptions) -> Client {
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(pump(eventloop, tx));
        Client {
            client,
            events,
            task,
        }
    }

    /// The next event that `pick` takes, skipping others; panics after STEP.
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let found = tokio::time::timeout(STEP, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(event)) => {
                        if let Some(t) = pick(event) {
                            return t;
                        }
                    }
                    Some(Err(e)) => panic!("waiting for {what}: connection error {e}"),
                    None => panic!("waiting for {what}: event loop gone"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what} within {STEP:?}"))
    }

    async fn connack(&mut self) -> ConnAck {
        self.next("ConnAck", |e| match e {
            Event::Incoming(Packet::ConnAck(ack)) => Some(ack),
            _ => None,
        })
        .await
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        for f in filters {
            self.client
                .subscribe(*f, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        let mut codes = Vec::new();
        for _ in filters {
            let mut more = self
                .next("SubAck", |e| match e {
                    Event::Incoming(Packet::SubAck(ack)) => Some(ack.return_codes),
                    _ => None,
                })
                .await;
            codes.append(&mut more);
        }
        codes
    }

    async fn publish(&mut self) -> Publish {
        self.next("Publish", |e| match e {
            Event::Incoming(Packet::Publish(p)) => Some(p),
            _ => None,
        })
        .await
    }

    async fn puback(&mut self) {
        self.next("PubAck", |e| match e {
            Event::Incoming(Packet::PubAck(_)) => Some(()),
            _ => None,
        })
        .await;
    }

    /// Waits until the connection fails (the broker closed it).
    async fn closed(&mut self) -> String {
        tokio::time::timeout(STEP, async {
            loop {
                match self.events.recv().await {
                    Some(Err(e)) => return e,
                    Some(Ok(_)) => {}
                    None => return "event loop gone".to_owned(),
                }
            }
        })
        .await
        .expect("the broker closes the connection")
    }

    fn kill(self) {
        self.task.abort();
    }
}

/// Polls until the first error, which ends the client (tests reconnect with
/// a new one), so that nothing reconnects behind a test's back.
async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Result<Event, String>>) {
    loop {
        let polled = eventloop.poll().await;
        let failed = polled.is_err();
        let event = polled.map_err(|e: ConnectionError| e.to_string());
        if tx.send(event).is_err() || failed {
            return;
        }
    }
}

/// Connects a publisher and waits for its ConnAck.
async fn publisher(broker: &TestBroker, id: &str) -> Client {
    let mut p = Client::connect(broker.options(id, true));
    p.connack().await;
    p
}

async fn send(p: &mut Client, topic: &str, qos: QoS, payload: &str) {
    p.client
        .publish(topic, qos, false, payload.as_bytes().to_vec())
        .await
        .expect("publish");
    if qos == QoS::AtLeastOnce {
        p.puback().await;
    }
}

#[tokio::test]
async fn a_qos1_message_reaches_a_subscriber_with_manual_acks() {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(broker.options("sub-qos1", false));
    let ack = sub.connack().await;
    assert!(!ack.session_present, "a new client id has no session");
    let codes = sub.subscribe(&["raadhus/serverrum/stroem"]).await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let mut p = publisher(&broker, "pub-qos1").await;
    send(
        &mut p,
        "raadhus/serverrum/stroem",
        QoS::AtLeastOnce,
        "ALARM",
    )
    .await;

    let got = sub.publish().await;
    assert_eq!(got.topic, "raadhus/serverrum/stroem");
    assert_eq!(&got.payload[..], b"ALARM");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    assert!(!got.dup);
    sub.client.ack(&got).await.expect("ack");
    sub.next("our PubAck", |e| {
        matches!(e, Event::Outgoing(Outgoing::PubAck(_))).then_some(())
    })
    .await;

    // QoS 0 from the publisher stays QoS 0; QoS 0 subscriptions get QoS 0.
    send(&mut p, "raadhus/serverrum/stroem", QoS::AtMostOnce, "OK").await;
    let got = sub.publish().await;
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtMostOnce, &b"OK"[..]));
    sub.kill();
    p.kill();
    broker.stop().await;
}

#[tokio::test]
async fn an_unacked_message_is_redelivered_after_reconnect() {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(broker.options("beredskab", false));
    sub.connack().await;
    sub.subscribe(&["raadhus/serverrum/+/brand"]).await;

    let mut p = publisher(&broker, "pub-redeliver").await;
    send(
        &mut p,
        "raadhus/serverrum/serverrum/brand",
        QoS::AtLeastOnce,
        "ALARM",
    )
    .await;
    let first = sub.publish().await;
    assert!(!first.dup);
    // Gone without acking, as a daemon killed before its commit would be.
    sub.kill();

    // Published while the client is away: kept in its session.
    send(
        &mut p,
        "raadhus/serverrum/serverrum/brand",
        QoS::AtLeastOnce,
        "OK",
    )
    .await;

    let mut again = Client::connect(broker.options("beredskab", false));
    let ack = again.connack().await;
    assert!(ack.session_present, "the session survived the disconnect");
    let redelivered = again.publish().await;
    assert!(redelivered.dup, "a redelivery carries DUP");
    assert_eq!(redelivered.pkid, first.pkid);
    assert_eq!(&redelivered.payload[..], b"ALARM");
    again.client.ack(&redelivered).await.expect("ack");
    // Whether this one went out to the old connection before the broker
    // saw it close (then it is a DUP too) is a race; that it arrives is not.
    let queued = again.publish().await;
    assert_eq!(&queued.payload[..], b"OK");
    again.client.ack(&queued).await.expect("ack");

    // The subscription lives in the session: no new SUBSCRIBE needed.
    send(
        &mut p,
        "raadhus/serverrum/serverrum/brand",
        QoS::AtLeastOnce,
        "ALARM",
    )
    .await;
    let live = again.publish().await;
    assert_eq!(&live.payload[..], b"ALARM");
    again.client.ack(&live).await.expect("ack");
    again.kill();

    // A clean session forgets everything, and says so.
    let mut clean = Client::connect(broker.options("beredskab", true));
    assert!(!clean.connack().await.session_present);
    clean.kill();
    let mut after = Client::connect(broker.options("beredskab", false));
    assert!(!after.connack().await.session_present);
    after.kill();
    p.kill();
    broker.stop().await;
}

#[tokio::test]
async fn wildcards_route_only_matching_topics() {
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(broker.options("sub-wild", true));
    sub.connack().await;
    sub.subscribe(&["raadhus/serverrum/+/brand", "solhaven/#"])
        .await;
    assert!(broker.handle.has_subscriber("solhaven/teknikrum/brand"));
    assert!(!broker.handle.has_subscriber("andet"));

    let mut p = publisher(&broker, "pub-wild").await;
    for topic in [
        "raadhus/serverrum/serverrum/brand",
        "raadhus/serverrum/brand",
        "raadhus/serverrum/a/b/brand",
        "solhaven",
        "solhaven/teknikrum/brand",
        "andet/solhaven",
        "solhaven/end",
    ] {
        send(&mut p, topic, QoS::AtLeastOnce, "ALARM").await;
    }
    // One publisher's messages arrive in order: everything before the last
    // one is all that matched.
    let mut got = Vec::new();
    loop {
        let m = sub.publish().await;
        sub.client.ack(&m).await.expect("ack");
        if m.topic == "solhaven/end" {
            break;
        }
        got.push(m.topic);
    }
    assert_eq!(
        got,
        [
            "raadhus/serverrum/serverrum/brand",
            "solhaven",
            "solhaven/teknikrum/brand"
        ]
    );
    sub.kill();
    p.kill();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_2000_qos1_messages_all_arrive() {
    const N: usize = 2000;
    let broker = TestBroker::start().await;
    let mut sub = Client::connect(broker.options("sub-burst", false));
    sub.connack().await;
    sub.subscribe(&["burst/#"]).await;

    let mut p = Client::connect(broker.options("pub-burst", true));
    p.connack().await;
    let client = p.client.clone();
    let sender = tokio::spawn(async move {
        for i in 0..N {
            client
                .publish(
                    format!("burst/{}", i % 7),
                    QoS::AtLeastOnce,
                    false,
                    i.to_string(),
                )
                .await
                .expect("publish");
        }
    });
    let acks = tokio::spawn(async move {
        for _ in 0..N {
            p.puback().await;
        }
        p
    });

    let mut seen = BTreeSet::new();
    let mut order = Vec::with_capacity(N);
    while seen.len() < N {
        let m = sub.publish().await;
        sub.client.ack(&m).await.expect("ack");
        let i: usize = std::str::from_utf8(&m.payload)
            .expect("utf-8")
            .parse()
            .expect("a number");
        seen.insert(i);
        order.push(i);
    }
    assert_eq!(seen.len(), N);
    assert_eq!(order, (0..N).collect::<Vec<_>>(), "in publish order, once");
    sender.await.expect("sender");
    let p = acks.await.expect("every publish was acked");
    p.kill();
    sub.kill();
    broker.stop().await;
}

#[tokio::test]
async fn qos2_and_oversized_packets_close_the_connection() {
    let broker = TestBroker::start_with(|b| b.with_max_packet(1024)).await;
    let mut p = publisher(&broker, "pub-qos2").await;
    p.client
        .publish("a", QoS::ExactlyOnce, false, b"x".to_vec())
        .await
        .expect("queued");
    p.closed().await;
    p.kill();

    let mut big = publisher(&broker, "pub-big").await;
    big.client
        .publish("a", QoS::AtLeastOnce, false, vec![b'x'; 4096])
        .await
        .expect("queued");
    big.closed().await;
    big.kill();

    // The broker is still fine for everyone else.
    let mut ok = publisher(&broker, "pub-after").await;
    send(&mut ok, "a", QoS::AtLeastOnce, "small").await;
    ok.kill();
    broker.stop().await;
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over() {
    let broker = TestBroker::start().await;
    let mut first = Client::connect(broker.options("twin", false));
    first.connack().await;
    first.subscribe(&["t"]).await;
    let mut second = Client::connect(broker.options("twin", false));
    assert!(second.connack().await.session_present);
    first.closed().await;
    let mut p = publisher(&broker, "pub-twin").await;
    send(&mut p, "t", QoS::AtLeastOnce, "hi").await;
    assert_eq!(&second.publish().await.payload[..], b"hi");
    first.kill();
    second.kill();
    p.kill();
    broker.stop().await;
}

#[tokio::test]
async fn the_handle_waits_for_a_subscriber() {
    let broker = TestBroker::start().await;
    assert!(!broker.handle.has_subscriber("raadhus/serverrum/stroem"));
    let handle = broker.handle.clone();
    let waiting = tokio::spawn(async move {
        handle.wait_for_subscriber("raadhus/serverrum/stroem").await;
    });
    let mut sub = Client::connect(broker.options("late", false));
    sub.connack().await;
    sub.subscribe(&["raadhus/#"]).await;
    tokio::time::timeout(STEP, waiting)
        .await
        .expect("woken")
        .expect("task");
    sub.kill();
    broker.stop().await;
}

#[tokio::test]
async fn only_loopback_is_accepted() {
    let anywhere = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
    assert!(Broker::bind(anywhere).await.is_err());
}

/// The daemon's own MQTT collector, as `beredskab demo` runs it.
struct Collector {
    rx: mpsc::Receiver<MqttInput>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Collector {
    fn start(broker: &TestBroker) -> Collector {
        let text = format!(
            "url = \"mqtt://{}\"\nclient_id = \"beredskab\"\n\
             [[subscription]]\ntopic = \"raadhus/serverrum/+/brand\"\nkind = \"fire\"\ncomponent = \"{{1}}\"\n",
            broker.addr
        );
        let config: MqttConfig = toml::from_str(&text).expect("mqtt config");
        let collector = MqttCollector::new(&config, None).expect("collector");
        let (tx, rx) = mpsc::channel(16);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector.run(tx, shutdown.clone()));
        Collector { rx, shutdown, task }
    }

    async fn next(&mut self) -> MqttInput {
        tokio::time::timeout(STEP, self.rx.recv())
            .await
            .expect("collector input in time")
            .expect("collector running")
    }

    /// Waits for the SubAck, returning the ConnAck's `session_present` and
    /// the messages that came before the SubAck (redeliveries do).
    async fn subscribed(&mut self) -> (bool, Vec<beredskab::collect::mqtt::Received>) {
        let mut present = None;
        let mut early = Vec::new();
        loop {
            match self.next().await {
                MqttInput::Connected { session_present } => present = Some(session_present),
                MqttInput::Message(m) => early.push(m),
                MqttInput::Subscribed { refused } => {
                    assert!(refused.is_empty(), "{refused:?}");
                    return (present.expect("ConnAck before SubAck"), early);
                }
                other => panic!("before the SubAck: {other:?}"),
            }
        }
    }

    async fn message(&mut self) -> beredskab::collect::mqtt::Received {
        match self.next().await {
            MqttInput::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(STEP, self.task)
            .await
            .expect("collector stops")
            .expect("collector task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_collector_keeps_what_it_did_not_ack() {
    let broker = TestBroker::start().await;
    let mut collector = Collector::start(&broker);
    let (present, early) = collector.subscribed().await;
    assert!(
        !present && early.is_empty(),
        "a fresh broker has no session"
    );

    let mut p = publisher(&broker, "pub-collector").await;
    let topic = "raadhus/serverrum/serverrum/brand";
    send(&mut p, topic, QoS::AtLeastOnce, "ALARM").await;
    send(&mut p, topic, QoS::AtLeastOnce, "OK").await;
    let stored = collector.message().await;
    assert_eq!(
        (stored.topic.as_str(), &stored.payload[..]),
        (topic, &b"ALARM"[..])
    );
    stored.ack();
    // The second is never acked: the daemon "crashed" before storing it.
    let lost = collector.message().await;
    assert_eq!(&lost.payload[..], b"OK");
    drop(lost);
    collector.stop().await;

    let mut again = Collector::start(&broker);
    let (present, early) = again.subscribed().await;
    assert!(present, "the session survived");
    let mut early = early.into_iter();
    let redelivered = match early.next() {
        Some(m) => m,
        None => again.message().await,
    };
    assert!(early.next().is_none());
    assert_eq!(
        &redelivered.payload[..],
        b"OK",
        "only the unacked one comes back"
    );
    redelivered.ack();
    send(&mut p, topic, QoS::AtLeastOnce, "ALARM").await;
    assert_eq!(&again.message().await.payload[..], b"ALARM");
    again.stop().await;
    p.kill();
    broker.stop().await;
}
