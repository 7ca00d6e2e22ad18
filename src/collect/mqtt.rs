//! The MQTT collector: one persistent MQTT 3.1.1 session with the broker, the
//! config's subscriptions at QoS 1, and every PUBLISH handed to the daemon as
//! an [`MqttInput::Message`] whose PUBACK leaves only when the daemon calls
//! [`Received::ack`], after the alarm is committed to the store.
//!
//! Talks to the broker (rumqttc over TCP, or TLS with rustls and ring) and to
//! the daemon (a bounded channel). Payload parsing, size limits and topic
//! routing are the engine's job (`engine::intake`); messages pass through.
//!
//! Why it is built this way (the known pitfalls of rumqttc and of MQTT
//! sessions):
//! - manual acks, clean session off, a fixed client id: whatever the daemon
//!   has not stored is redelivered by the broker after any crash;
//! - one task polls the event loop all the time and never awaits the client:
//!   subscribe and disconnect requests go in with `try_` calls, and one that
//!   finds the request channel full is retried after the next poll;
//! - acks do not go through rumqttc's request channel, which would cost a
//!   poll, a wake-up and a write to the socket each: the daemon marks them
//!   ready and wakes the task, which writes every ready ack into the
//!   connection's buffer and sends them with one write between two polls
//!   (so the buffer is empty whenever a poll starts, which keeps a poll
//!   that the wake-up cuts short from losing anything);
//! - subscribe on every ConnAck: a broker that lost the session lost the
//!   subscriptions with it;
//! - acks leave in arrival order; an ack for a message of an earlier
//!   connection is dropped, not sent: the broker redelivers that message, and
//!   after a session loss its packet id may name a different message;
//! - exponential backoff with jitter between connection attempts.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, PubAck, Publish, QoS, StateError, SubscribeFilter, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use crate::backoff::Backoff;
use crate::config::MqttConfig;

/// The port of `mqtt://` URLs without one.
const DEFAULT_PORT: u16 = 1883;
/// The port of `mqtts://` URLs without one.
const DEFAULT_TLS_PORT: u16 = 8883;
/// How often an idle connection pings the broker.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Capacity of rumqttc's request channel (subscribes, disconnect).
const REQUEST_CAPACITY: usize = 16;
/// The first wait after a failed connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the backoff when it drops; one
/// that dies sooner (a broker that accepts and then chokes on a message)
/// keeps backing off.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The largest packet MQTT can express (its remaining length is at most this).
const MQTT_MAX_PACKET: usize = 268_435_455;
/// How long shutdown waits for the DISCONNECT to reach the broker.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// Why a collector cannot be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt url {0:?} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")]
    Url(String),
    #[error("mqtt client_id is empty")]
    ClientId,
    #[error("mqtt password given without a username")]
    PasswordWithoutUsername,
    #[error("mqtts: {0}")]
    Tls(String),
}

/// What the collector tells the daemon.
#[derive(Debug)]
pub enum MqttInput {
    /// A PUBLISH on a subscribed topic.
    Message(Received),
    /// Every ConnAck. `session_present: false` after the first connection
    /// means the broker lost the session and whatever it had queued: the
    /// daemon records a possible-loss event.
    Connected { session_present: bool },
    /// The SubAck of the subscriptions sent after a ConnAck; `refused` lists
    /// the filters the broker turned down (an ACL, a malformed filter). May
    /// come more than once per connection; comes right after `Connected`
    /// when there is nothing to subscribe to.
    Subscribed { refused: Vec<String> },
    /// A connection attempt failed or a connection was lost; the collector
    /// retries by itself.
    Disconnected { error: String },
}

/// One message from the broker.
#[derive(Debug)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0 or 1 (subscriptions are QoS 1, so the broker never sends 2).
    pub qos: u8,
    /// Sent because of a (re)subscription rather than a new publish.
    pub retain: bool,
    /// When the collector read it off the connection (for the ingest
    /// latency metric).
    pub received: std::time::Instant,
    /// Sends the PUBACK; public so that the message can be taken apart.
    pub acker: Acker,
}

impl Received {
    /// Acknowledges the message to the broker: call it only once the alarm
    /// is committed to the store. See [`Acker::ack`].
    pub fn ack(self) {
        self.acker.ack();
    }
}

/// The acknowledgement of one message.
///
/// Acks leave in the order the messages arrived: an ack waits until every
/// earlier message of the same connection is acked too. A message dropped
/// without its ack therefore holds back all later acks until the connection
/// is renewed (the broker then redelivers everything unacked).
#[must_use = "a message that is never acked holds back every later ack"]
pub struct Acker {
    slot: Option<Slot>,
}

/// The place of one QoS 1 message in its connection's ack order.
struct Slot {
    shared: Arc<Shared>,
    connection: u64,
    seq: u64,
}

impl Acker {
    /// Sends the PUBACK once all earlier messages are acked. Never blocks.
    /// Does nothing for QoS 0, for a message of an earlier connection (the
    /// broker redelivers it) and after the collector stopped.
    pub fn ack(mut self) {
        if let Some(slot) = self.slot.take() {
            let ready = {
                let mut queue = slot.shared.lock();
                queue.complete(slot.connection, slot.seq);
                !queue.ready.is_empty() && !queue.stopped
            };
            if ready {
                slot.shared.acks_ready.notify_one();
            }
        }
    }

    /// An acker that acks nothing: for a message another instance took in
    /// and acknowledged (forwarded through the shared store).
    pub fn detached() -> Acker {
        Acker::none()
    }

    fn none() -> Acker {
        Acker { slot: None }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            let queue = slot.shared.lock();
            if !queue.stopped && queue.connection == slot.connection {
                warn!(
                    seq = slot.seq,
                    "mqtt message dropped without ack: later acks wait for its redelivery"
                );
            }
        }
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.slot {
            Some(slot) => write!(f, "Acker({}/{})", slot.connection, slot.seq),
            None => f.write_str("Acker(none)"),
        }
    }
}

/// What the poll loop and the ackers share.
struct Shared {
    client: AsyncClient,
    queue: Mutex<AckQueue>,
    /// Wakes the poll loop when acks are ready to leave.
    acks_ready: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, AckQueue> {
        // The queue stays consistent between statements; a panic elsewhere
        // must not stop the acks.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The QoS 1 messages of the current connection in arrival order, and the
/// acks that are ready to leave.
#[derive(Debug, Default)]
struct AckQueue {
    /// Counts connections; an ack from another one is stale.
    connection: u64,
    /// The sequence number of `waiting[0]`.
    first: u64,
    /// Packet id, and whether the daemon has acked it.
    waiting: VecDeque<(u16, bool)>,
    /// Acked in order, not yet written to the connection.
    ready: Vec<u16>,
    /// The collector has stopped: acks go nowhere.
    stopped: bool,
}

impl AckQueue {
    /// Registers a message; returns its sequence number.
    fn push(&mut self, pkid: u16) -> u64 {
        self.waiting.push_back((pkid, false));
        self.first + self.waiting.len() as u64 - 1
    }

    /// Marks a message acked and moves the acked head of the queue to `ready`.
    fn complete(&mut self, connection: u64, seq: u64) {
        if connection != self.connection || seq < self.first {
            return;
        }
        let Ok(index) = usize::try_from(seq - self.first) else {
            return;
        };
        if let Some(entry) = self.waiting.get_mut(index) {
            entry.1 = true;
        }
        while let Some(&(pkid, true)) = self.waiting.front() {
            self.waiting.pop_front();
            self.first += 1;
            self.ready.push(pkid);
        }
    }

    /// Takes the acks ready to leave, in order, into `out` (emptied first).
    fn take_ready(&mut self, out: &mut Vec<u16>) {
        out.clear();
        if self.stopped {
            self.ready.clear();
        } else {
            std::mem::swap(&mut self.ready, out);
        }
    }

    /// Forgets the connection: its unacked messages will be redelivered.
    fn renew(&mut self) {
        self.connection += 1;
        self.first += self.waiting.len() as u64;
        self.waiting.clear();
        self.ready.clear();
    }
}

/// The collector, configured and not yet connected.
pub struct MqttCollector {
    options: MqttOptions,
    /// The subscription filters, without duplicates, in config order.
    topics: Vec<String>,
}

impl fmt::Debug for MqttCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, port) = self.options.broker_address();
        f.debug_struct("MqttCollector")
            .field("client_id", &self.options.client_id())
            .field("broker", &format_args!("{host}:{port}"))
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl MqttCollector {
    /// Builds the collector from `[mqtt]`; `password` is the value of the
    /// variable named by `password_env`, read by the caller. An `mqtts://`
    /// URL trusts the roots in `SSL_CERT_FILE` (or `SSL_CERT_DIR`), or else
    /// the system's.
    pub fn new(config: &MqttConfig, password: Option<String>) -> Result<Self, MqttError> {
        MqttCollector::build(config, password, None)
    }

    /// Like [`new`](Self::new), but trusts only the PEM certificates in
    /// `roots` instead of `SSL_CERT_FILE` or the system's roots: for a
    /// private CA, and for tests, which cannot set the process-wide variable
    /// safely. The URL must be `mqtts://`.
    pub fn with_root_certificates(
        config: &MqttConfig,
        password: Option<String>,
        roots: &Path,
    ) -> Result<Self, MqttError> {
        MqttCollector::build(config, password, Some(roots))
    }

    fn build(
        config: &MqttConfig,
        password: Option<String>,
        roots: Option<&Path>,
    ) -> Result<Self, MqttError> {
        let url = BrokerUrl::parse(&config.url)?;
        if config.client_id.trim().is_empty() {
            return Err(MqttError::ClientId);
        }
        let mut options = MqttOptions::new(config.client_id.clone(), url.host, url.port);
        options
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(KEEP_ALIVE);
        let max_packet = usize::try_from(config.max_packet.0).unwrap_or(usize::MAX);
        options.set_max_packet_size(max_packet, max_packet);
        match (&config.username, password) {
            (Some(user), password) => {
                options.set_credentials(user.clone(), password.unwrap_or_default());
            }
            (None, Some(_)) => return Err(MqttError::PasswordWithoutUsername),
            (None, None) => {}
        }
        match (url.tls, roots) {
            (true, roots) => {
                options.set_transport(Transport::tls_with_config(tls_config(roots)?));
            }
            (false, Some(_)) => {
                return Err(MqttError::Tls(format!(
                    "root certificates given for {}, which is not mqtts://",
                    config.url
                )));
            }
            (false, None) => {}
        }
        let mut topics: Vec<String> = Vec::new();
        for s in &config.subscriptions {
            if !topics.contains(&s.topic) {
                topics.push(s.topic.clone());
            }
        }
        Ok(MqttCollector { options, topics })
    }

    /// Runs until `shutdown` is cancelled or the daemon drops its receiver,
    /// then disconnects. Connection failures are reported and retried, never
    /// returned.
    pub async fn run(self, tx: mpsc::Sender<MqttInput>, shutdown: CancellationToken) {
        let (client, mut eventloop) = AsyncClient::new(self.options, REQUEST_CAPACITY);
        let shared = Arc::new(Shared {
            client: client.clone(),
            queue: Mutex::new(AckQueue::default()),
            acks_ready: Notify::new(),
        });
        let mut acks = Vec::new();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut connected_at: Option<Instant> = None;
        let mut subscribe_due = false;

        'run: loop {
            // Requests that found the channel full go in now: polling drains it.
            if subscribe_due {
                subscribe_due = !try_subscribe(&client, &self.topics);
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = send_acks(&shared, &mut eventloop, &mut acks) => {}
            }

            // The poll may be cut short by acks becoming ready: rumqttc keeps
            // what it has read for the next poll, and with the connection's
            // write buffer empty (above) it has nothing half written.
            let polled = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                polled = eventloop.poll() => polled,
                () = shared.acks_ready.notified() => continue,
            };
            let mut inputs = Vec::with_capacity(1);
            let mut retry_after = None;
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(
                        session_present = ack.session_present,
                        topics = self.topics.len(),
                        "mqtt connected"
                    );
                    connected_at = Some(Instant::now());
                    subscribe_due = !self.topics.is_empty();
                    inputs.push(MqttInput::Connected {
                        session_present: ack.session_present,
                    });
                    if !subscribe_due {
                        // Nothing to wait for: ready as it stands.
                        inputs.push(MqttInput::Subscribed {
                            refused: Vec::new(),
                        });
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    inputs.push(MqttInput::Message(received(&shared, publish)));
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = refused_topics(&self.topics, &ack.return_codes);
                    if refused.is_empty() {
                        debug!(topics = self.topics.len(), "mqtt subscribed");
                    } else {
                        warn!(refused = ?refused, "mqtt broker refused subscriptions");
                    }
                    inputs.push(MqttInput::Subscribed { refused });
                }
                Ok(_) => continue,
                Err(error) => {
                    if let Some(len) = oversized_packet(&error) {
                        raise_packet_limit(&mut eventloop, len);
                    }
                    let error = error_text(&error);
                    warn!(error = %error, "mqtt connection lost or refused");
                    // Messages read in the same batch as the failure are real
                    // and handed out, but cannot be acked any more.
                    let unackable = connection_lost(&shared, &mut eventloop)
                        .into_iter()
                        .map(|p| MqttInput::Message(received_parts(p, Acker::none())));
                    inputs.extend(unackable);
                    inputs.push(MqttInput::Disconnected { error });
                    if connected_at
                        .take()
                        .is_some_and(|t| t.elapsed() >= STABLE_AFTER)
                    {
                        backoff.reset();
                    }
                    retry_after = Some(backoff.next_delay());
                }
            }
            for input in inputs {
                if !deliver(&tx, input, &shutdown).await {
                    break 'run;
                }
            }
            if let Some(delay) = retry_after {
                debug!(delay_ms = delay.as_millis(), "mqtt reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }

        if eventloop.network.is_some() {
            disconnect(&shared, &mut eventloop).await;
        }
        shared.lock().stopped = true;
    }
}

/// Sends one input to the daemon; false when it is time to stop.
async fn deliver(
    tx: &mpsc::Sender<MqttInput>,
    input: MqttInput,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        biased;
        // Undelivered messages are not acked, so the broker keeps them.
        () = shutdown.cancelled() => false,
        sent = tx.send(input) => sent.is_ok(),
    }
}

/// Writes the acks that are ready, in order, to the connection and sends
/// them. Acks that cannot be sent are dropped: the connection is broken, the
/// next poll says so, and the broker redelivers the messages.
async fn send_acks(shared: &Shared, eventloop: &mut EventLoop, acks: &mut Vec<u16>) {
    shared.lock().take_ready(acks);
    if acks.is_empty() {
        return;
    }
    let Some(network) = eventloop.network.as_mut() else {
        return;
    };
    for &pkid in acks.iter() {
        if let Err(e) = network.write(Packet::PubAck(PubAck::new(pkid))).await {
            debug!(error = %e, "mqtt acks not sent");
            return;
        }
    }
    if let Err(e) = network.flush().await {
        debug!(error = %e, "mqtt acks not sent");
    }
}

/// A message of the current connection, with its place in the ack order.
fn received(shared: &Arc<Shared>, publish: Publish) -> Received {
    let slot = (publish.qos != QoS::AtMostOnce).then(|| {
        let mut queue = shared.lock();
        Slot {
            shared: Arc::clone(shared),
            connection: queue.connection,
            seq: queue.push(publish.pkid),
        }
    });
    received_parts(publish, Acker { slot })
}

fn received_parts(publish: Publish, acker: Acker) -> Received {
    Received {
        qos: publish.qos as u8,
        retain: publish.retain,
        received: std::time::Instant::now(),
        payload: publish.payload.to_vec(),
        topic: publish.topic,
        acker,
    }
}

/// After a failed poll: forgets the connection's ack order and drops the acks
/// still waiting in rumqttc's request channel, under the queue's lock so that
/// no ack of the old connection can slip in afterwards. Returns the messages
/// rumqttc had read but not yet handed out.
fn connection_lost(shared: &Shared, eventloop: &mut EventLoop) -> Vec<Publish> {
    let mut queue = shared.lock();
    queue.renew();
    // `poll` already did this once; acks queued since then must go too.
    eventloop.clean();
    eventloop
        .state
        .events
        .drain(..)
        .filter_map(|event| match event {
            Event::Incoming(Packet::Publish(publish)) => Some(publish),
            _ => None,
        })
        .collect()
}

/// Sends the ready acks and a DISCONNECT, then polls until the broker closes
/// the connection: it does so only after handling every packet before the
/// DISCONNECT, so the acks have been processed, not merely written. (A client
/// that reconnects with the same id too early makes Mosquitto discard the
/// old connection's unread acks.)
async fn disconnect(shared: &Shared, eventloop: &mut EventLoop) {
    let finish = async {
        let mut asked = false;
        let mut sent = false;
        let mut acks = Vec::new();
        loop {
            send_acks(shared, eventloop, &mut acks).await;
            if !asked {
                asked = shared.client.try_disconnect().is_ok();
            }
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => sent = true,
                // Anything else that still comes is not acked: redelivered.
                Ok(_) => {}
                Err(_) => return sent,
            }
        }
    };
    match tokio::time::timeout(DISCONNECT_GRACE, finish).await {
        Ok(true) => info!("mqtt disconnected"),
        Ok(false) | Err(_) => warn!("mqtt connection closed without a clean disconnect"),
    }
}

/// The size of an incoming packet that broke the connection by exceeding
/// the packet limit.
fn oversized_packet(error: &ConnectionError) -> Option<usize> {
    match error {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(len),
        )) => Some(*len),
        _ => None,
    }
}

/// Lets the next connection read a packet of `len` bytes. The broker
/// redelivers an unacked message after every reconnect, so without this one
/// message over `max_packet` would block every later alarm forever
/// (rumqtt#614). Read, it reaches the engine, which rejects it as oversized
/// and has it acked. The shipped mosquitto.conf keeps messages far below the
/// limit; this is the fallback for a broker that does not.
fn raise_packet_limit(eventloop: &mut EventLoop, len: usize) {
    let current = eventloop.mqtt_options.max_packet_size();
    if len > current && len <= MQTT_MAX_PACKET {
        warn!(
            packet_bytes = len,
            limit_bytes = current,
            "mqtt packet over max_packet: raising the limit to read it"
        );
        eventloop.mqtt_options.set_max_packet_size(len, current);
    }
}

/// Subscribes to every topic in one SUBSCRIBE; false if the channel is full.
fn try_subscribe(client: &AsyncClient, topics: &[String]) -> bool {
    let filters = topics
        .iter()
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
    client.try_subscribe_many(filters).is_ok()
}

fn refused_topics(topics: &[String], codes: &[SubscribeReasonCode]) -> Vec<String> {
    topics
        .iter()
        .zip(codes)
        .filter(|(_, code)| matches!(code, SubscribeReasonCode::Failure))
        .map(|(topic, _)| topic.clone())
        .collect()
}

fn error_text(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Io(e) => format!("i/o: {e}"),
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "broker refused the connection: bad username or password".to_owned()
        }
        // What Mosquitto answers a wrong, missing or anonymous login with.
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "broker refused the connection: not authorized (wrong or missing username or \
             password)"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`, with an optional `/`.
#[derive(Debug, PartialEq)]
struct BrokerUrl {
    tls: bool,
    /// As the URL writes it; an IPv6 address in brackets.
    host: String,
    port: u16,
}

impl BrokerUrl {
    fn parse(text: &str) -> Result<BrokerUrl, MqttError> {
        let bad = || MqttError::Url(text.to_owned());
        let url = Url::parse(text).map_err(|_| bad())?;
        let (tls, default_port) = match url.scheme() {
            "mqtt" => (false, DEFAULT_PORT),
            "mqtts" => (true, DEFAULT_TLS_PORT),
            _ => return Err(bad()),
        };
        // A broker's address only: credentials have keys of their own, and
        // a topic, query or fragment would be ignored without a word.
        if !url.username().is_empty()
            || url.password().is_some()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(bad());
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port: url.port().unwrap_or(default_port),
        })
    }
}

/// rustls with ring and the root certificates in `roots`, or else those
/// `rustls-native-certs` finds (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or the
/// system's store). Loads the roots itself: rumqttc's default TLS config
/// panics on an unreadable store or an unsupported certificate
/// (rumqtt#992); unusable ones are skipped here.
fn tls_config(roots: Option<&Path>) -> Result<TlsConfiguration, MqttError> {
    crate::tls::install_provider();

    let (found, source) = match roots {
        // Given explicitly: a missing file is an error, not a fallback.
        Some(path) => (
            rustls_native_certs::load_certs_from_paths(Some(path), None),
            path.display().to_string(),
        ),
        None => (
            rustls_native_certs::load_native_certs(),
            "the system's roots".to_owned(),
        ),
    };
    let problems: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    let mut store = rustls::RootCertStore::empty();
    let (added, skipped) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let mut error = match roots {
            Some(_) => format!("{source}: no usable root certificate"),
            None => "no usable root certificate: set SSL_CERT_FILE or install the system's \
                     CA certificates"
                .to_owned(),
        };
        if !problems.is_empty() {
            error.push_str(&format!(" ({})", problems.join("; ")));
        }
        return Err(MqttError::Tls(error));
    }
    debug!(roots = %source, added, skipped, unreadable = ?problems, "mqtt tls roots loaded");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(tls: bool, host: &str, port: u16) -> BrokerUrl {
        BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let ok = |s: &str| BrokerUrl::parse(s).unwrap();
        assert_eq!(ok("mqtt://127.0.0.1:1884"), url(false, "127.0.0.1", 1884));
        assert_eq!(ok("mqtt://broker"), url(false, "broker", 1883));
        assert_eq!(ok("mqtts://broker/"), url(true, "broker", 8883));
        assert_eq!(ok("mqtts://b.example:9883"), url(true, "b.example", 9883));
        assert_eq!(ok("mqtt://[::1]:1885"), url(false, "[::1]", 1885));
        assert_eq!(ok("mqtt://[::1]"), url(false, "[::1]", 1883));
        for bad in [
            "tcp://broker",
            "mqtt://",
            "mqtt://broker:x",
            "mqtt://broker:70000",
            "mqtt://user:pw@broker",
            "mqtt://broker/topic",
            "mqtt://::1",
            "mqtt://:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn acks_leave_in_arrival_order() {
        let mut q = AckQueue::default();
        let a = q.push(11);
        let b = q.push(12);
        let c = q.push(13);
        q.complete(0, c);
        q.complete(0, b);
        assert!(q.ready.is_empty(), "held until the first is acked");
        q.complete(0, a);
        assert_eq!(q.ready, [11, 12, 13]);
        assert!(q.waiting.is_empty());
        let d = q.push(14);
        q.complete(0, d);
        q.complete(0, d);
        assert_eq!(q.ready, [11, 12, 13, 14], "a second ack is ignored");
    }

    #[test]
    fn acks_of_an_earlier_connection_are_dropped() {
        let mut q = AckQueue::default();
        let a = q.push(1);
        let b = q.push(2);
        q.complete(0, b);
        q.renew();
        q.complete(0, a);
        assert!(q.ready.is_empty() && q.waiting.is_empty());
        let c = q.push(1);
        assert_eq!(q.connection, 1);
        q.complete(1, c);
        assert_eq!(q.ready, [1]);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let first = b.next_delay();
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= BACKOFF_MAX);
        }
        let d = b.next_delay();
        assert!(d >= BACKOFF_MAX / 2, "capped, not reset: {d:?}");
        b.reset();
        assert!(b.next_delay() <= BACKOFF_MIN);
    }
}
