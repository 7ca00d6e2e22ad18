//! The load side of bench/mqtt-ingest.sh: publishes a burst of QoS 1 alarms
//! with unique keys to a broker and measures how fast they arrive, either
//! committed into a running daemon's store (`store DB`) or at a plain
//! subscriber that acknowledges on receipt (`peer`, the broker's own pace:
//! what the daemon is compared with).
//!
//! - `mqtt_ingest PORT N store DB`: publish to `burst/…`, time until committed;
//! - `mqtt_ingest PORT N peer`: publish to `peer/…` (which the daemon does
//!   not subscribe to), time until the plain subscriber has them;
//! - `mqtt_ingest PORT N publish`: only publish to `burst/…` (a backlog for
//!   a stopped daemon);
//! - `mqtt_ingest PORT N drain DB BASE`: publish nothing, time until the
//!   store holds BASE + N alarms (a restarted daemon draining the backlog);
//! - `mqtt_ingest PORT 0 count DB`: print how many alarms the store holds.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Components the alarms are spread over (`burst/srv-K/alarm`).
const COMPONENTS: usize = 10;
/// How long to wait for the whole burst before giving up.
const PATIENCE: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: mqtt_ingest PORT N (store DB | peer | publish | drain DB BASE | count DB)";
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).expect(usage);
    let n: usize = args.get(2).and_then(|p| p.parse().ok()).expect(usage);
    let mode = args.get(3).map(String::as_str).expect(usage);
    let run = fastrand::u32(..);

    match mode {
        "count" => {
            let store = Store::open(args.get(4).expect(usage)).await;
            println!("{}", store.base);
            return;
        }
        "publish" => {
            let started = Instant::now();
            publish(port, n, run, "burst").await;
            println!(
                "publish: {n} QoS 1 alarms published in {:.3} s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        "drain" => {
            let mut store = Store::open(args.get(4).expect(usage)).await;
            store.base = args.get(5).and_then(|b| b.parse().ok()).expect(usage);
            let started = Instant::now();
            let done = store.wait(n).await;
            let total = done.duration_since(started);
            println!(
                "drain: a backlog of {n} QoS 1 alarms committed in {:.3} s = {:.0} alarms/s",
                total.as_secs_f64(),
                n as f64 / total.as_secs_f64()
            );
            return;
        }
        "store" | "peer" => {}
        _ => panic!("{usage}"),
    }
    let peer = if mode == "peer" {
        Some(subscribe(port, run).await)
    } else {
        None
    };
    let store = match mode {
        "store" => Some(Store::open(args.get(4).expect(usage)).await),
        _ => None,
    };
    let started = Instant::now();
    publish(port, n, run, if mode == "peer" { "peer" } else { "burst" }).await;
    let published = started.elapsed();
    let done = match (peer, store) {
        (Some(rx), _) => wait_peer(rx, n).await,
        (None, Some(store)) => store.wait(n).await,
        (None, None) => unreachable!("one of the modes"),
    };
    let total = done.duration_since(started);
    println!(
        "{mode}: {n} QoS 1 alarms published in {:.3} s, all {} in {:.3} s = {:.0} alarms/s",
        published.as_secs_f64(),
        if mode == "peer" {
            "received"
        } else {
            "committed"
        },
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
}

/// Publishes `n` alarms and waits for every PUBACK.
async fn publish(port: u16, n: usize, run: u32, prefix: &'static str) {
    let mut options = MqttOptions::new(format!("bench-pub-{run}"), "127.0.0.1", port);
    options
        .set_inflight(100)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let topic = format!("{prefix}/srv-{}/alarm", i % COMPONENTS);
            let payload = format!(r#"{{"state":"alarm","key":"{run}-{i}"}}"#);
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    let _ = sender.await;
}

/// A subscriber that acknowledges each message on receipt.
async fn subscribe(port: u16, run: u32) -> tokio::sync::mpsc::Receiver<()> {
    let mut options = MqttOptions::new(format!("bench-peer-{run}"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    client
        .subscribe("peer/+/alarm", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (tx, rx) = tokio::sync::mpsc::channel(100_000);
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("peer: {e}"),
            }
        }
    });
    let _ = subscribed.await;
    rx
}

async fn wait_peer(mut rx: tokio::sync::mpsc::Receiver<()>, n: usize) -> Instant {
    for _ in 0..n {
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("the whole burst within the patience")
            .expect("peer running");
    }
    Instant::now()
}

/// The daemon's store, read-only, and how many alarms it held at the start.
struct Store {
    conn: sqlx::SqliteConnection,
    base: i64,
}

impl Store {
    async fn open(db: &str) -> Store {
        use sqlx::Connection;
        let url = format!("sqlite://{db}?mode=ro");
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("open the daemon's store");
        let base = count(&mut conn).await;
        Store { conn, base }
    }

    /// Polls until the store holds `n` alarms more than at the start.
    async fn wait(mut self, n: usize) -> Instant {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = count(&mut self.conn).await - self.base;
            if got as usize >= n {
                return Instant::now();
            }
            assert!(Instant::now() < deadline, "only {got} of {n} committed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

async fn count(conn: &mut sqlx::SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM alarms")
        .fetch_one(conn)
        .await
        .expect("count the stored alarms")
}
