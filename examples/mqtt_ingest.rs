//! The load side of bench/mqtt-ingest.sh: publishes bursts of QoS 1 alarms
//! with unique keys (`RUN-I`) to a broker and measures how fast they arrive,
//! either committed into the daemon's store or at a plain subscriber (the
//! broker's own pace, what the daemon is compared with).
//!
//! - `mqtt_ingest PORT N store RUN DB`: publish to `burst/…` while the daemon
//!   runs; time until every alarm is committed;
//! - `mqtt_ingest PORT N publish RUN`: only publish to `burst/…` (a backlog
//!   for a stopped daemon);
//! - `mqtt_ingest PORT N drain RUN DB BASE`: publish nothing; time until the
//!   alarms of RUN are committed after alarm id BASE (a restarted daemon
//!   draining the backlog);
//! - `mqtt_ingest PORT 0 base DB`: print the newest alarm id in the store;
//! - `mqtt_ingest PORT N peer RUN`: the same burst on `peer/…` (which the
//!   daemon does not subscribe to) to a plain subscriber with a persistent
//!   session and manual acks, which acks each message on receipt and stores
//!   nothing; time until it has them all;
//! - `mqtt_ingest PORT N peer-drain RUN`: the plain subscriber's backlog:
//!   published while it is away, timed from its reconnect.
//!
//! The store modes fail (exit 1) unless the store ends up holding exactly
//! one alarm row for each of the N keys of RUN. Waits at most
//! `BENCH_PATIENCE_S` seconds (default 300) for a burst.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};

/// Components the alarms are spread over (`burst/srv-K/alarm`).
const COMPONENTS: usize = 10;
/// The publisher's window of unacknowledged QoS 1 messages.
const PUBLISH_WINDOW: u16 = 1000;

const USAGE: &str = "usage: mqtt_ingest PORT N (store RUN DB | publish RUN | drain RUN DB BASE \
                     | base DB | peer RUN | peer-drain RUN)";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).expect(USAGE);
    let port: u16 = arg(1).parse().expect(USAGE);
    let n: usize = arg(2).parse().expect(USAGE);
    let mode = arg(3);
    let patience = Duration::from_secs(
        std::env::var("BENCH_PATIENCE_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300),
    );
    let result = match mode {
        "base" => {
            let mut store = Store::open(arg(4)).await;
            println!("{}", store.newest().await);
            return ExitCode::SUCCESS;
        }
        "publish" => {
            let started = Instant::now();
            publish(port, n, arg(4), "burst").await;
            println!(
                "publish: {n} QoS 1 alarms published in {:.3} s",
                started.elapsed().as_secs_f64()
            );
            return ExitCode::SUCCESS;
        }
        "store" => {
            let mut store = Store::open(arg(5)).await;
            let base = store.newest().await;
            let started = Instant::now();
            publish(port, n, arg(4), "burst").await;
            let published = started.elapsed();
            store
                .wait(arg(4), base, n, patience)
                .await
                .map(|done| report("live", n, started, done, Some(published)))
        }
        "drain" => {
            let mut store = Store::open(arg(5)).await;
            let base: i64 = arg(6).parse().expect(USAGE);
            let started = Instant::now();
            store
                .wait(arg(4), base, n, patience)
                .await
                .map(|done| report("drain", n, started, done, None))
        }
        "peer" => {
            let mut peer = Peer::connect(port, true).await;
            let started = Instant::now();
            let published = async {
                publish(port, n, arg(4), "peer").await;
                started.elapsed()
            };
            let (published, received) = tokio::join!(published, peer.receive(n, patience));
            peer.leave().await;
            received.map(|done| report("peer", n, started, done, Some(published)))
        }
        "peer-drain" => {
            Peer::connect(port, true).await.leave().await;
            publish(port, n, arg(4), "peer").await;
            let started = Instant::now();
            let mut peer = Peer::connect(port, false).await;
            let received = peer.receive(n, patience).await;
            peer.leave().await;
            received.map(|done| report("peer-drain", n, started, done, None))
        }
        _ => panic!("{USAGE}"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt_ingest {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one measurement; the last field is the rate, for the script.
fn report(what: &str, n: usize, started: Instant, done: Instant, published: Option<Duration>) {
    let total = done.duration_since(started).as_secs_f64();
    let published = published
        .map(|p| format!(", published in {:.3} s", p.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "{what}: {n} QoS 1 alarms{published}, all in {total:.3} s = {:.0} alarms/s",
        n as f64 / total
    );
}

/// Publishes `n` alarms of run `run` under `prefix` and waits for every
/// PUBACK.
async fn publish(port: u16, n: usize, run: &str, prefix: &str) {
    let mut options = MqttOptions::new(format!("bench-pub-{run}-{prefix}"), "127.0.0.1", port);
    options
        .set_inflight(PUBLISH_WINDOW)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(PUBLISH_WINDOW));
    let topics: Vec<String> = (0..COMPONENTS)
        .map(|k| format!("{prefix}/srv-{k}/alarm"))
        .collect();
    let run = run.to_owned();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let payload = format!(r#"{{"state":"alarm","key":"{run}-{i}"}}"#);
            client
                .publish(&topics[i % COMPONENTS], QoS::AtLeastOnce, false, payload)
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
    let client = sender.await.expect("the publisher's sender");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;
}

/// The plain subscriber: a persistent session like the daemon's, QoS 1,
/// manual acks, each message acked as soon as it is read.
struct Peer {
    client: AsyncClient,
    eventloop: EventLoop,
    /// Acks that found the request channel full.
    unsent: VecDeque<Publish>,
}

impl Peer {
    /// Connects the one session of the peer (one client id per broker, so
    /// that no forgotten session keeps collecting messages) and subscribes,
    /// or, with `subscribe` false, resumes the session as it is: messages
    /// queued for it may come before any SUBACK.
    async fn connect(port: u16, subscribe: bool) -> Peer {
        let mut options = MqttOptions::new("bench-peer", "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_manual_acks(true);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        if subscribe {
            client
                .try_subscribe("peer/+/alarm", QoS::AtLeastOnce)
                .expect("subscribe");
        }
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) if subscribe => break,
                Ok(Event::Incoming(Packet::ConnAck(_))) if !subscribe => break,
                Ok(_) => {}
                Err(e) => panic!("peer: {e}"),
            }
        }
        Peer {
            client,
            eventloop,
            unsent: VecDeque::new(),
        }
    }

    /// Disconnects after the acks already given, keeping the session (and
    /// what is queued for it).
    async fn leave(mut self) {
        let mut asked = false;
        loop {
            while let Some(p) = self.unsent.front() {
                if self.client.try_ack(p).is_err() {
                    break;
                }
                self.unsent.pop_front();
            }
            if self.unsent.is_empty() && !asked {
                asked = self.client.try_disconnect().is_ok();
            }
            if self.eventloop.poll().await.is_err() {
                break;
            }
        }
    }

    /// Receives and acks `n` messages; the time the last one came.
    async fn receive(&mut self, n: usize, patience: Duration) -> Result<Instant, String> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut got = 0;
        // The request channel is drained by this very loop: acks that find
        // it full go in after the next poll.
        let mut unsent = std::mem::take(&mut self.unsent);
        while got < n {
            while let Some(p) = unsent.front() {
                if self.client.try_ack(p).is_err() {
                    break;
                }
                unsent.pop_front();
            }
            let polled = tokio::time::timeout_at(deadline, self.eventloop.poll())
                .await
                .map_err(|_| format!("only {got} of {n} received within {patience:?}"))?;
            match polled {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    got += 1;
                    if !unsent.is_empty() || self.client.try_ack(&p).is_err() {
                        unsent.push_back(p);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("peer: {e}")),
            }
        }
        self.unsent = unsent;
        Ok(Instant::now())
    }
}

/// The daemon's store, read-only.
struct Store {
    conn: sqlx::SqliteConnection,
}

impl Store {
    async fn open(db: &str) -> Store {
        use sqlx::Connection;
        let url = format!("sqlite://{db}?mode=ro");
        let conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("open the daemon's store");
        Store { conn }
    }

    /// The newest alarm id (0 in an empty store).
    async fn newest(&mut self) -> i64 {
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM alarms")
            .fetch_one(&mut self.conn)
            .await
            .expect("read the newest alarm id")
    }

    /// Polls until `n` alarm rows follow `base`, then checks that they are
    /// exactly one per key of `run`; returns when they were all there.
    async fn wait(
        &mut self,
        run: &str,
        base: i64,
        n: usize,
        patience: Duration,
    ) -> Result<Instant, String> {
        let deadline = Instant::now() + patience;
        let n = n as i64;
        let done = loop {
            let got = self.newest().await - base;
            if got >= n {
                break Instant::now();
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "only {got} of {n} alarms committed within {patience:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let (rows, keys): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT \"key\") FROM alarms \
             WHERE id > ? AND \"key\" LIKE ? || '-%'",
        )
        .bind(base)
        .bind(run)
        .fetch_one(&mut self.conn)
        .await
        .map_err(|e| format!("count the stored alarms: {e}"))?;
        if rows != n || keys != n {
            return Err(format!(
                "the store holds {rows} alarm rows with {keys} distinct keys of run {run}, \
                 not {n}"
            ));
        }
        Ok(done)
    }
}
