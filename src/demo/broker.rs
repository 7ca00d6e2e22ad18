//! A small MQTT 3.1.1 broker inside the process, so that `beredskab demo`
//! needs no Mosquitto: the simulated sensors publish to it and the daemon's
//! MQTT collector subscribes to it, both over real TCP on 127.0.0.1.
//!
//! Built on rumqttc's packet codec (`mqttbytes::v4`). The router is an actor:
//! one task owns every session and takes events off a channel in batches;
//! each connection is one task that reads packets into the router and writes
//! what the router queues for it.
//!
//! What it does:
//! - CONNECT/CONNACK; `clean_session = false` keeps a session per client id
//!   in memory (subscriptions, queued and unacknowledged QoS 1 messages),
//!   `session_present` says truthfully whether one was found, and unacked
//!   messages are sent again with DUP set on reconnect; a second connection
//!   with the same client id takes the session over and closes the first;
//! - SUBSCRIBE/SUBACK and UNSUBSCRIBE/UNSUBACK with `+` and `#` filters,
//!   granted QoS min(requested, 1);
//! - PUBLISH at QoS 0 and 1 (PUBACK to the publisher once routed), delivered
//!   once per session at QoS min(publish, highest matching subscription);
//!   at most [`MAX_INFLIGHT`] unacknowledged QoS 1 messages per session, the
//!   rest queued (at most [`MAX_QUEUED`]);
//! - PINGREQ/PINGRESP, keep-alive (a client silent for 1.5 × its keep-alive
//!   is dropped), DISCONNECT, and a packet size limit.
//!
//! Its limits, on purpose: QoS 2 is refused (a PUBLISH at QoS 2 or any
//! PUBREC/PUBREL/PUBCOMP closes the connection); no retained messages (the
//! retain flag is ignored), no last will, no authentication (username and
//! password are ignored, which is why it binds only to loopback); sessions
//! live in memory and die with the process; QoS 0 messages are dropped for
//! clients that are offline or not reading. It is a demo broker, not a
//! replacement for Mosquitto.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{self, QoS, valid_filter, valid_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::engine::intake::match_topic;

/// The largest packet a client may send, in bytes. Like `message_size_limit`
/// in the shipped mosquitto.conf: above the daemon's `max_payload`, so that
/// an oversized alarm reaches it and is rejected there, and below its
/// `max_packet`, so that it can always read what the broker delivers.
pub const DEFAULT_MAX_PACKET: usize = 1024 * 1024;
/// Unacknowledged QoS 1 messages per session; the rest wait in its queue.
pub const MAX_INFLIGHT: usize = 100;
/// QoS 1 messages a session may hold (in flight and queued); newer ones are
/// dropped with a warning, as Mosquitto's `max_queued_messages` does.
pub const MAX_QUEUED: usize = 100_000;
/// Packets waiting to be written to one connection. A client that lets it
/// fill up is not reading: QoS 0 messages to it are dropped, and anything
/// else closes the connection (its session keeps the QoS 1 messages).
const OUTBOX_CAPACITY: usize = 4 * MAX_INFLIGHT;
/// Events waiting for the router; a full channel slows the publishers down.
const ROUTER_CAPACITY: usize = 1024;
/// Events the router takes off its channel at once.
const ROUTER_BATCH: usize = 256;
/// How long a new connection may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 8 * 1024;
/// Bytes gathered before a write to a socket.
const WRITE_CHUNK: usize = 64 * 1024;
/// The largest packet MQTT can express; the limit for what the broker writes.
const MQTT_MAX_PACKET: usize = 268_435_455;
/// A pause after a failed `accept` (out of file descriptors), so that the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The broker, bound and not yet running.
#[derive(Debug)]
pub struct Broker {
    listener: TcpListener,
    addr: SocketAddr,
    max_packet: usize,
    subscribed: Arc<watch::Sender<BTreeSet<String>>>,
}

/// Watches the broker from outside: which filters sessions subscribe to.
#[derive(Debug, Clone)]
pub struct BrokerHandle {
    subscribed: watch::Receiver<BTreeSet<String>>,
}

impl BrokerHandle {
    /// Whether some session (connected or not) holds a subscription that
    /// matches `topic`, so that a message published now is kept for it.
    pub fn has_subscriber(&self, topic: &str) -> bool {
        any_matches(&self.subscribed.borrow(), topic)
    }

    /// Waits until [`has_subscriber`](Self::has_subscriber) is true; returns
    /// at once if it already is, and when the broker stops.
    pub async fn wait_for_subscriber(&self, topic: &str) {
        let mut rx = self.subscribed.clone();
        let _ = rx.wait_for(|filters| any_matches(filters, topic)).await;
    }
}

fn any_matches(filters: &BTreeSet<String>, topic: &str) -> bool {
    filters
        .iter()
        .any(|f| filter_matches(&split_filter(f), topic))
}

impl Broker {
    /// Binds the broker's listener. It has no authentication, so only a
    /// loopback address is accepted; port 0 picks a free port.
    pub async fn bind(addr: SocketAddr) -> io::Result<Broker> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the demo broker has no authentication and binds only to loopback, not {addr}"
                ),
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (subscribed, _) = watch::channel(BTreeSet::new());
        Ok(Broker {
            listener,
            addr,
            max_packet: DEFAULT_MAX_PACKET,
            subscribed: Arc::new(subscribed),
        })
    }

    /// Sets the largest packet a client may send (default
    /// [`DEFAULT_MAX_PACKET`]); a larger one closes its connection.
    pub fn with_max_packet(mut self, bytes: usize) -> Broker {
        self.max_packet = bytes;
        self
    }

    /// The address the broker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to watch the broker's subscriptions.
    pub fn handle(&self) -> BrokerHandle {
        BrokerHandle {
            subscribed: self.subscribed.subscribe(),
        }
    }

    /// Accepts connections and routes messages until `shutdown` is
    /// cancelled, then closes every connection and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let Broker {
            listener,
            addr,
            max_packet,
            subscribed,
        } = self;
        info!(%addr, "demo mqtt broker listening");
        let (events, inbox) = mpsc::channel(ROUTER_CAPACITY);
        let tasks = TaskTracker::new();
        tasks.spawn(Router::new(subscribed).run(inbox, shutdown.clone()));
        let mut next_conn: ConnId = 0;
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    next_conn += 1;
                    debug!(conn = next_conn, %peer, "mqtt connection accepted");
                    let connection = Connection {
                        conn: next_conn,
                        events: events.clone(),
                        max_packet,
                        shutdown: shutdown.clone(),
                    };
                    tasks.spawn(connection.serve(stream));
                }
                Err(error) => {
                    warn!(%error, "demo mqtt broker cannot accept");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
        drop(events);
        tasks.close();
        tasks.wait().await;
        info!(%addr, "demo mqtt broker stopped");
    }
}

/// Numbers connections, so that the router can tell a session's current
/// connection from one it replaced.
type ConnId = u64;

/// What connections tell the router.
#[derive(Debug)]
enum Event {
    /// A CONNECT, with the way back to the connection.
    Connect {
        conn: ConnId,
        connect: Box<mqttbytes::v4::Connect>,
        outbox: mpsc::Sender<Packet>,
    },
    /// Any later packet the router handles.
    Packet { conn: ConnId, packet: Packet },
    /// The connection is gone.
    Closed { conn: ConnId },
}

/// One client id's state.
#[derive(Debug)]
struct Session {
    clean: bool,
    subscriptions: Vec<Subscription>,
    link: Option<Link>,
    /// The last packet id used for a delivery.
    last_pkid: u16,
    /// Sent and not yet acknowledged, in the order sent.
    inflight: VecDeque<Publish>,
    /// Waiting for a free in-flight slot or for the client to come back.
    queue: VecDeque<Publish>,
}

#[derive(Debug)]
struct Subscription {
    filter: String,
    parts: Vec<String>,
    qos: QoS,
}

/// The connection a session is attached to.
#[derive(Debug)]
struct Link {
    conn: ConnId,
    outbox: mpsc::Sender<Packet>,
}

/// Why a packet could not be queued for a connection.
#[derive(Debug, PartialEq)]
enum Stuck {
    /// The client does not read what it is sent.
    Full,
    /// The connection has ended.
    Closed,
}

impl Link {
    fn send(&self, packet: Packet) -> Result<(), Stuck> {
        self.outbox.try_send(packet).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Stuck::Full,
            mpsc::error::TrySendError::Closed(_) => Stuck::Closed,
        })
    }
}

impl Session {
    fn new(clean: bool) -> Session {
        Session {
            clean,
            subscriptions: Vec::new(),
            link: None,
            last_pkid: 0,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
        }
    }

    /// The highest QoS of this session's subscriptions that match `topic`.
    fn matching_qos(&self, topic: &str) -> Option<QoS> {
        self.subscriptions
            .iter()
            .filter(|s| filter_matches(&s.parts, topic))
            .map(|s| s.qos)
            .reduce(|a, b| if b > a { b } else { a })
    }

    /// A packet id not in flight. There are at most [`MAX_INFLIGHT`] in
    /// flight out of 65,535, so the search ends quickly.
    fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|p| p.pkid == self.last_pkid) {
                return self.last_pkid;
            }
        }
    }

    /// Moves queued messages into flight while there is room and a link.
    fn pump(&mut self) -> Result<(), Stuck> {
        while self.link.is_some() && self.inflight.len() < MAX_INFLIGHT {
            let Some(mut publish) = self.queue.pop_front() else {
                break;
            };
            publish.pkid = self.next_pkid();
            publish.dup = false;
            self.inflight.push_back(publish.clone());
            if let Some(link) = &self.link {
                link.send(Packet::Publish(publish))?;
            }
        }
        Ok(())
    }

    /// Hands one routed message to the session at `qos`.
    fn deliver(&mut self, client: &str, publish: &Publish, qos: QoS) -> Result<(), Stuck> {
        let mut out = publish.clone();
        out.qos = qos;
        out.retain = false;
        out.dup = false;
        match qos {
            QoS::AtMostOnce => {
                out.pkid = 0;
                match self.link.as_ref().map(|l| l.send(Packet::Publish(out))) {
                    // QoS 0 may be lost: not worth a connection.
                    Some(Err(Stuck::Full)) | None => Ok(()),
                    Some(result) => result,
                }
            }
            _ => {
                if self.inflight.len() + self.queue.len() >= MAX_QUEUED {
                    warn!(
                        client,
                        topic = %publish.topic,
                        limit = MAX_QUEUED,
                        "demo mqtt broker: session full, message dropped"
                    );
                    return Ok(());
                }
                self.queue.push_back(out);
                self.pump()
            }
        }
    }

    /// Sends everything in flight again, with DUP, then what is queued.
    fn resume(&mut self) -> Result<(), Stuck> {
        if let Some(link) = &self.link {
            for publish in &self.inflight {
                let mut again = publish.clone();
                again.dup = true;
                link.send(Packet::Publish(again))?;
            }
        }
        self.pump()
    }
}

/// The actor that owns every session.
struct Router {
    sessions: HashMap<String, Session>,
    /// The client id of each connection attached to a session.
    conns: HashMap<ConnId, String>,
    subscribed: Arc<watch::Sender<BTreeSet<String>>>,
}

impl Router {
    fn new(subscribed: Arc<watch::Sender<BTreeSet<String>>>) -> Router {
        Router {
            sessions: HashMap::new(),
            conns: HashMap::new(),
            subscribed,
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(ROUTER_BATCH);
        loop {
            let n = tokio::select! {
                () = shutdown.cancelled() => break,
                n = inbox.recv_many(&mut batch, ROUTER_BATCH) => n,
            };
            if n == 0 {
                break;
            }
            for event in batch.drain(..) {
                self.handle(event);
            }
        }
        // Dropping the sessions drops every outbox: the connections close.
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Connect {
                conn,
                connect,
                outbox,
            } => self.connect(conn, *connect, outbox),
            Event::Packet { conn, packet } => {
                let Some(client) = self.conns.get(&conn).cloned() else {
                    // From a connection that was taken over or dropped; its
                    // client will send it again.
                    return;
                };
                if let Err(stuck) = self.packet(&client, packet) {
                    self.stuck(&client, conn, stuck);
                }
            }
            Event::Closed { conn } => self.detach(conn),
        }
    }

    fn connect(
        &mut self,
        conn: ConnId,
        connect: mqttbytes::v4::Connect,
        outbox: mpsc::Sender<Packet>,
    ) {
        let mut client = connect.client_id;
        if client.is_empty() {
            if !connect.clean_session {
                // MQTT-3.1.3-8: a persistent session needs a client id.
                let _ = outbox.try_send(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::BadClientId,
                    false,
                )));
                return;
            }
            client = format!("beredskab-demo-anonymous-{conn}");
        }
        if let Some(old) = self.sessions.get_mut(&client).and_then(|s| s.link.take()) {
            debug!(
                client,
                old = old.conn,
                new = conn,
                "mqtt session taken over"
            );
            self.conns.remove(&old.conn);
        }
        // A clean session lasts only as long as its connection
        // (MQTT-3.1.2-6), which has just ended.
        let old_clean = self.sessions.get(&client).is_some_and(|s| s.clean);
        let present = if connect.clean_session || old_clean {
            self.sessions.remove(&client);
            false
        } else {
            self.sessions.contains_key(&client)
        };
        let session = self
            .sessions
            .entry(client.clone())
            .or_insert_with(|| Session::new(connect.clean_session));
        session.clean = connect.clean_session;
        let link = Link { conn, outbox };
        let result = link
            .send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                present,
            )))
            .and_then(|()| {
                session.link = Some(link);
                session.resume()
            });
        debug!(
            client,
            conn,
            clean_session = connect.clean_session,
            session_present = present,
            inflight = session.inflight.len(),
            queued = session.queue.len(),
            "mqtt client connected"
        );
        self.conns.insert(conn, client.clone());
        if let Err(stuck) = result {
            self.stuck(&client, conn, stuck);
        }
        self.publish_subscriptions();
    }

    /// Handles one packet of an attached client.
    fn packet(&mut self, client: &str, packet: Packet) -> Result<(), Stuck> {
        match packet {
            Packet::Publish(publish) => {
                let pkid = publish.pkid;
                let qos = publish.qos;
                self.route(&publish);
                if qos == QoS::AtLeastOnce {
                    self.link_send(client, Packet::PubAck(PubAck::new(pkid)))?;
                }
                Ok(())
            }
            Packet::PubAck(ack) => {
                let Some(session) = self.sessions.get_mut(client) else {
                    return Ok(());
                };
                if let Some(at) = session.inflight.iter().position(|p| p.pkid == ack.pkid) {
                    session.inflight.remove(at);
                }
                session.pump()
            }
            Packet::Subscribe(subscribe) => {
                let Some(session) = self.sessions.get_mut(client) else {
                    return Ok(());
                };
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for f in subscribe.filters {
                    if !valid_filter(&f.path) {
                        codes.push(SubscribeReasonCode::Failure);
                        continue;
                    }
                    let qos = if f.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    session.subscriptions.retain(|s| s.filter != f.path);
                    session.subscriptions.push(Subscription {
                        parts: split_filter(&f.path),
                        filter: f.path,
                        qos,
                    });
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                debug!(client, filters = ?codes, "mqtt subscribed");
                self.publish_subscriptions();
                self.link_send(client, Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
            }
            Packet::Unsubscribe(unsubscribe) => {
                if let Some(session) = self.sessions.get_mut(client) {
                    session
                        .subscriptions
                        .retain(|s| !unsubscribe.topics.contains(&s.filter));
                }
                self.publish_subscriptions();
                self.link_send(client, Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            }
            Packet::PingReq => self.link_send(client, Packet::PingResp),
            // The connection task stops reading after these and reports the
            // close; `Closed` is the same as a clean DISCONNECT here, since
            // there is no last will to tell them apart.
            Packet::Disconnect => Err(Stuck::Closed),
            other => {
                // Connections filter these out; a router must not trust that.
                warn!(client, packet = ?other, "demo mqtt broker: unexpected packet, closing");
                Err(Stuck::Closed)
            }
        }
    }

    /// Sends one packet to a client's current connection.
    fn link_send(&mut self, client: &str, packet: Packet) -> Result<(), Stuck> {
        match self.sessions.get(client).and_then(|s| s.link.as_ref()) {
            Some(link) => link.send(packet),
            None => Ok(()),
        }
    }

    /// Hands a message to every session with a matching subscription.
    fn route(&mut self, publish: &Publish) {
        let mut stuck = Vec::new();
        for (client, session) in &mut self.sessions {
            let Some(sub_qos) = session.matching_qos(&publish.topic) else {
                continue;
            };
            let qos = if sub_qos < publish.qos {
                sub_qos
            } else {
                publish.qos
            };
            if let Err(why) = session.deliver(client, publish, qos)
                && let Some(link) = &session.link
            {
                stuck.push((client.clone(), link.conn, why));
            }
        }
        for (client, conn, why) in stuck {
            self.stuck(&client, conn, why);
        }
    }

    /// A connection that cannot take more: detach it, which closes it.
    fn stuck(&mut self, client: &str, conn: ConnId, why: Stuck) {
        if why == Stuck::Full {
            warn!(
                client,
                conn, "demo mqtt broker: client does not read its messages, closing"
            );
        }
        self.detach(conn);
    }

    /// Detaches a connection from its session; forgets a clean session.
    fn detach(&mut self, conn: ConnId) {
        let Some(client) = self.conns.remove(&conn) else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&client) else {
            return;
        };
        if session.link.as_ref().is_some_and(|l| l.conn == conn) {
            session.link = None;
        }
        if session.clean {
            self.sessions.remove(&client);
            self.publish_subscriptions();
        }
        debug!(client, conn, "mqtt client detached");
    }

    /// Tells the handles which filters are subscribed now.
    fn publish_subscriptions(&self) {
        let now: BTreeSet<String> = self
            .sessions
            .values()
            .flat_map(|s| s.subscriptions.iter().map(|f| f.filter.clone()))
            .collect();
        self.subscribed.send_if_modified(|filters| {
            let changed = *filters != now;
            if changed {
                *filters = now;
            }
            changed
        });
    }
}

fn split_filter(filter: &str) -> Vec<String> {
    filter.split('/').map(str::to_owned).collect()
}

/// MQTT matching: the intake's, plus MQTT-4.7.2-1 (a filter that starts
/// with a wildcard does not match a topic that starts with `$`).
fn filter_matches(filter: &[String], topic: &str) -> bool {
    let wild_first = filter.first().is_some_and(|f| f == "+" || f == "#");
    if wild_first && topic.starts_with('$') {
        return false;
    }
    match_topic(filter, topic).is_some()
}

/// Why a connection stopped reading.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("connection closed")]
    Eof,
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("bad packet: {0}")]
    Packet(#[from] mqttbytes::Error),
}

/// One client connection.
struct Connection {
    conn: ConnId,
    events: mpsc::Sender<Event>,
    max_packet: usize,
    shutdown: CancellationToken,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        // Acks are small and latency matters more than packet count here.
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let first = tokio::select! {
            () = self.shutdown.cancelled() => return,
            first = tokio::time::timeout(CONNECT_TIMEOUT, read_packet(&mut rd, &mut buf, self.max_packet)) => first,
        };
        let connect = match first {
            Ok(Ok(Packet::Connect(connect))) => connect,
            Ok(Ok(other)) => {
                debug!(conn = self.conn, packet = ?other, "mqtt: first packet is not CONNECT, closing");
                return;
            }
            Ok(Err(error)) => {
                debug!(conn = self.conn, %error, "mqtt: no CONNECT, closing");
                return;
            }
            Err(_) => {
                debug!(conn = self.conn, "mqtt: no CONNECT in time, closing");
                return;
            }
        };
        // MQTT-3.1.2-24: one and a half times the keep-alive without a packet.
        let idle = (connect.keep_alive > 0)
            .then(|| Duration::from_secs(u64::from(connect.keep_alive)).mul_f64(1.5));
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let hello = Event::Connect {
            conn: self.conn,
            connect: Box::new(connect),
            outbox,
        };
        if self.events.send(hello).await.is_err() {
            return;
        }
        let done = self.shutdown.child_token();
        tokio::join!(
            self.read_loop(rd, buf, idle, &done),
            write_loop(wr, rx, &done)
        );
    }

    /// Reads packets into the router until the client leaves, breaks the
    /// protocol or goes silent, or the writer stops; then reports the close.
    async fn read_loop(
        &self,
        mut rd: OwnedReadHalf,
        mut buf: BytesMut,
        idle: Option<Duration>,
        done: &CancellationToken,
    ) {
        let conn = self.conn;
        loop {
            let read = read_packet(&mut rd, &mut buf, self.max_packet);
            let packet = tokio::select! {
                () = done.cancelled() => break,
                read = with_idle(idle, read) => read,
            };
            let packet = match packet {
                Some(Ok(packet)) => packet,
                Some(Err(ReadError::Eof)) => {
                    debug!(conn, "mqtt connection closed by the client");
                    break;
                }
                Some(Err(error)) => {
                    warn!(conn, %error, "demo mqtt broker: closing connection");
                    break;
                }
                None => {
                    debug!(conn, "mqtt keep-alive expired, closing");
                    break;
                }
            };
            let last = match &packet {
                Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                    warn!(conn, topic = %p.topic, "demo mqtt broker: QoS 2 is not supported, closing");
                    break;
                }
                Packet::Publish(p) if p.topic.is_empty() || !valid_topic(&p.topic) => {
                    warn!(conn, topic = %p.topic, "demo mqtt broker: publish to an invalid topic, closing");
                    break;
                }
                Packet::Publish(_)
                | Packet::PubAck(_)
                | Packet::Subscribe(_)
                | Packet::Unsubscribe(_)
                | Packet::PingReq => false,
                Packet::Disconnect => true,
                Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => {
                    warn!(conn, "demo mqtt broker: QoS 2 is not supported, closing");
                    break;
                }
                other => {
                    warn!(conn, packet = ?other, "demo mqtt broker: unexpected packet from a client, closing");
                    break;
                }
            };
            if self
                .events
                .send(Event::Packet { conn, packet })
                .await
                .is_err()
                || last
            {
                break;
            }
        }
        let _ = self.events.send(Event::Closed { conn }).await;
    }
}

/// Runs `read`, or gives up with `None` after `idle` (if any) without data.
async fn with_idle<F: Future<Output = Result<Packet, ReadError>>>(
    idle: Option<Duration>,
    read: F,
) -> Option<Result<Packet, ReadError>> {
    match idle {
        Some(idle) => tokio::time::timeout(idle, read).await.ok(),
        None => Some(read.await),
    }
}

/// Reads the next packet. Cancel-safe: bytes already read stay in `buf`.
async fn read_packet(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_packet: usize,
) -> Result<Packet, ReadError> {
    loop {
        match Packet::read(buf, max_packet) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(error) => return Err(error.into()),
        }
        buf.reserve(READ_CHUNK);
        if rd.read_buf(buf).await? == 0 {
            return Err(ReadError::Eof);
        }
    }
}

/// Writes what the router queues, gathering packets into few writes, until
/// the router lets go of the connection or the socket fails; then stops the
/// reader too.
async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Packet>,
    done: &CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
    'write: loop {
        let first = tokio::select! {
            () = done.cancelled() => break,
            first = rx.recv() => first,
        };
        let Some(mut packet) = first else { break };
        buf.clear();
        loop {
            if let Err(error) = packet.write(&mut buf, MQTT_MAX_PACKET) {
                warn!(%error, "demo mqtt broker: cannot encode a packet, closing");
                break 'write;
            }
            if buf.len() >= WRITE_CHUNK {
                break;
            }
            match rx.try_recv() {
                Ok(next) => packet = next,
                Err(_) => break,
            }
        }
        if let Err(error) = wr.write_all(&buf).await {
            debug!(%error, "mqtt connection write failed");
            break;
        }
    }
    done.cancel();
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(f: &str) -> Vec<String> {
        split_filter(f)
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(filter_matches(&filter("a/+/c"), "a/b/c"));
        assert!(!filter_matches(&filter("a/+/c"), "a/b/d"));
        assert!(!filter_matches(&filter("a/+/c"), "a/b/c/d"));
        assert!(filter_matches(&filter("a/#"), "a"));
        assert!(filter_matches(&filter("a/#"), "a/b/c"));
        assert!(filter_matches(&filter("#"), "a/b"));
        assert!(!filter_matches(&filter("#"), "$SYS/x"));
        assert!(!filter_matches(&filter("+/x"), "$SYS/x"));
        assert!(filter_matches(&filter("$SYS/#"), "$SYS/x"));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_zero() {
        let mut s = Session::new(false);
        s.last_pkid = u16::MAX - 1;
        let mut p = Publish::new("t", QoS::AtLeastOnce, Vec::new());
        p.pkid = 1;
        s.inflight.push_back(p);
        assert_eq!(s.next_pkid(), u16::MAX);
        assert_eq!(s.next_pkid(), 2, "wraps past 0 and skips 1, in flight");
    }

    #[test]
    fn a_session_delivers_at_the_highest_matching_qos() {
        let mut s = Session::new(false);
        for (f, qos) in [("a/#", QoS::AtMostOnce), ("a/+", QoS::AtLeastOnce)] {
            s.subscriptions.push(Subscription {
                filter: f.into(),
                parts: filter(f),
                qos,
            });
        }
        assert_eq!(s.matching_qos("a/b"), Some(QoS::AtLeastOnce));
        assert_eq!(s.matching_qos("a/b/c"), Some(QoS::AtMostOnce));
        assert_eq!(s.matching_qos("b"), None);
    }

    fn connect(router: &mut Router, conn: ConnId, id: &str) -> mpsc::Receiver<Packet> {
        connect_with(router, conn, id, false)
    }

    fn connect_with(
        router: &mut Router,
        conn: ConnId,
        id: &str,
        clean: bool,
    ) -> mpsc::Receiver<Packet> {
        let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let mut connect = mqttbytes::v4::Connect::new(id);
        connect.clean_session = clean;
        router.handle(Event::Connect {
            conn,
            connect: Box::new(connect),
            outbox,
        });
        rx
    }

    #[test]
    fn bad_filters_are_refused_and_qos_is_capped_at_1() {
        let (subscribed, _) = watch::channel(BTreeSet::new());
        let mut router = Router::new(Arc::new(subscribed));
        let mut rx = connect(&mut router, 1, "c");
        assert!(matches!(
            rx.try_recv(),
            Ok(Packet::ConnAck(ConnAck {
                session_present: false,
                ..
            }))
        ));
        let mut subscribe = mqttbytes::v4::Subscribe::new("a/+", QoS::ExactlyOnce);
        subscribe.pkid = 7;
        subscribe.add("bad/#/x".into(), QoS::AtLeastOnce);
        subscribe.add("b".into(), QoS::AtMostOnce);
        router.handle(Event::Packet {
            conn: 1,
            packet: Packet::Subscribe(subscribe),
        });
        let Ok(Packet::SubAck(ack)) = rx.try_recv() else {
            panic!("a SubAck")
        };
        assert_eq!(ack.pkid, 7);
        assert_eq!(
            ack.return_codes,
            [
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
            ]
        );
        let subscribed = router.subscribed.borrow().clone();
        assert_eq!(subscribed.into_iter().collect::<Vec<_>>(), ["a/+", "b"]);
    }

    fn session_present(rx: &mut mpsc::Receiver<Packet>) -> bool {
        match rx.try_recv() {
            Ok(Packet::ConnAck(ack)) => ack.session_present,
            other => panic!("expected a ConnAck, got {other:?}"),
        }
    }

    #[test]
    fn a_takeover_keeps_a_persistent_session_and_ends_a_clean_one() {
        let (subscribed, _) = watch::channel(BTreeSet::new());
        let mut router = Router::new(Arc::new(subscribed));
        let mut first = connect(&mut router, 1, "p");
        assert!(!session_present(&mut first));
        let mut second = connect(&mut router, 2, "p");
        assert!(session_present(&mut second));
        // The first connection's close, late, changes nothing.
        router.handle(Event::Closed { conn: 1 });
        assert!(
            router.sessions["p"]
                .link
                .as_ref()
                .is_some_and(|l| l.conn == 2)
        );
        assert!(first.try_recv().is_err(), "the first is let go");

        let mut clean = connect_with(&mut router, 3, "c", true);
        assert!(!session_present(&mut clean));
        let mut after = connect(&mut router, 4, "c");
        assert!(
            !session_present(&mut after),
            "a clean session ends with its connection, even before the close is seen"
        );
    }

    #[test]
    fn a_persistent_session_needs_a_client_id() {
        let (subscribed, _) = watch::channel(BTreeSet::new());
        let mut router = Router::new(Arc::new(subscribed));
        let mut rx = connect(&mut router, 1, "");
        assert!(matches!(
            rx.try_recv(),
            Ok(Packet::ConnAck(ConnAck {
                code: ConnectReturnCode::BadClientId,
                ..
            }))
        ));
        assert!(router.sessions.is_empty() && router.conns.is_empty());
    }

    #[test]
    fn offline_sessions_queue_qos1_and_resume_with_dup() {
        let mut s = Session::new(false);
        let p = Publish::new("t", QoS::AtLeastOnce, b"x".to_vec());
        for _ in 0..MAX_INFLIGHT + 5 {
            s.deliver("c", &p, QoS::AtLeastOnce).unwrap();
        }
        s.deliver("c", &p, QoS::AtMostOnce).unwrap();
        assert_eq!(s.queue.len(), MAX_INFLIGHT + 5, "QoS 0 is not kept offline");
        let (outbox, mut rx) = mpsc::channel(OUTBOX_CAPACITY);
        s.link = Some(Link { conn: 1, outbox });
        s.resume().unwrap();
        assert_eq!(s.inflight.len(), MAX_INFLIGHT);
        assert_eq!(s.queue.len(), 5);
        s.link = None;
        let (outbox, mut again) = mpsc::channel(OUTBOX_CAPACITY);
        s.link = Some(Link { conn: 2, outbox });
        s.resume().unwrap();
        let Ok(Packet::Publish(first)) = again.try_recv() else {
            panic!("a redelivery")
        };
        assert!(first.dup && first.pkid == 1);
        let Ok(Packet::Publish(fresh)) = rx.try_recv() else {
            panic!("a delivery")
        };
        assert!(!fresh.dup);
    }
}
