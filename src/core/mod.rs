//! The core: the one task that owns the engine.
//!
//! Collectors and the HTTP API send it inputs; it takes them off its
//! channels in batches, runs each through the engine at the time it was
//! taken (the clock only moves forward), and writes the inputs that changed
//! the engine, their effects and the incidents they touched to the store in
//! **one** commit. Only after that commit does it acknowledge MQTT messages
//! and answer HTTP requests, so whatever was acknowledged or answered 202
//! is on disk; batching many inputs into one commit is what lets
//! `synchronous=FULL` keep up with a burst.
//!
//! Timers run at the engine's own wake-up times (`run_timers_until`), both
//! live and when the engine is rebuilt after a crash, so replay reaches the
//! same state. Every commit records the engine time up to which all
//! decisions are stored (the watermark): after a restart, effects up to it
//! are known to be stored and are not written again, and timers after it
//! (a deputy due while the daemon was down) fire once, late but not lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::catalogue::Catalogue;
use crate::clock::Clock;
pub use crate::clock::wall_now;
use crate::collect::mqtt::{Acker, MqttInput};
use crate::collect::probe::ProbeReport;
use crate::engine::{
    AlarmInput, Effect, Engine, EngineError, Event, IncidentId, RejectReason, Snapshot, Source, Ts,
    intake,
};
use crate::metrics::Metrics;
use crate::store::{
    AlarmRow, Batch, IncidentRow, META_MQTT_SEEN, META_WATERMARK, OutboxRow, Rejection, Store,
    StoreError, SystemEvent, UsedLink,
};

mod board;
mod dedup;
mod gauges;
mod handle;
mod input;
mod record;
mod recover;
mod snapshot;
#[cfg(test)]
mod tests;

pub use board::{Board, ServiceState};
pub use handle::{ANSWER_WITHIN, Command, CoreHandle, NoAnswer, Refused};
pub use input::note_mqtt_state;

/// Most inputs taken into one commit.
const MAX_BATCH: usize = 1024;
/// A snapshot is written after at least this many logged inputs…
const SNAPSHOT_EVERY_INPUTS: usize = 10_000;
/// …and at least one input for every this many bytes of the last
/// snapshot, so that writing the state costs a bounded share of each
/// input however much is firing (a snapshot of 100,000 firing alarms
/// every 10,000 inputs cost more than the inputs themselves)…
const SNAPSHOT_BYTES_PER_INPUT: usize = 100;
/// …but never more than this many, which bounds the replay after a crash
/// (about a second)…
const SNAPSHOT_MOST_INPUTS: usize = 200_000;
/// …or this long after the last one, whichever comes first.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(3600);
/// The longest the stored watermark lags the engine's time when nothing
/// else is committed.
const WATERMARK_EVERY_MS: i64 = 1000;
/// Inputs read per round trip while replaying the log.
const REPLAY_PAGE: u32 = 10_000;
/// The first and the longest wait before retrying a failed commit.
const COMMIT_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
/// How long shutdown keeps retrying a commit that fails.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(10);
/// How long the store may refuse every commit before the core gives up
/// and the process exits, so that the service manager restarts it and
/// the engine is rebuilt from what the store holds. Until then nothing is
/// acknowledged or answered 202, so nothing is lost either way.
pub const COMMIT_GIVE_UP: Duration = Duration::from_secs(60);

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the core has stopped")]
    Stopped,
    #[error("the store has refused every commit for {0:?}; the last error: {1}")]
    StoreDown(Duration, StoreError),
}

/// The answer to an input, once committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The input's place in the log, if it changed anything.
    pub seq: Option<u64>,
    /// Why the engine rejected it, if it did.
    pub rejected: Option<(RejectReason, String)>,
    /// The incident a report opened or joined.
    pub incident: Option<IncidentId>,
}

/// What following an acknowledgement link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LinkOutcome {
    Acknowledged,
    /// The link was used before; nothing changed.
    AlreadyUsed,
}

/// What the rest of the daemon can see of the core: `/readyz`, and the
/// board the pages read.
#[derive(Debug)]
pub struct Status {
    /// The core is running.
    pub running: AtomicBool,
    /// The last commit succeeded.
    pub store_ok: AtomicBool,
    /// 0: no MQTT configured, 1: connected, 2: not connected.
    pub mqtt: AtomicU8,
    /// Incidents the engine holds in memory (open ones, and those merged
    /// into them): bounded by what is open, not by history.
    pub incidents_held: AtomicUsize,
    /// The state of every service as of the last commit; subscribe to
    /// hear of the next.
    pub board: watch::Sender<Arc<Board>>,
    /// This instance's part: [`Status::ALONE`], [`Status::LEADER`] or
    /// [`Status::FOLLOWER`].
    pub role: AtomicU8,
}

impl Default for Status {
    fn default() -> Status {
        Status {
            running: AtomicBool::new(false),
            store_ok: AtomicBool::new(false),
            mqtt: AtomicU8::new(Status::MQTT_NONE),
            incidents_held: AtomicUsize::new(0),
            board: watch::Sender::new(Arc::new(Board::default())),
            role: AtomicU8::new(Status::ALONE),
        }
    }
}

impl Status {
    pub const MQTT_NONE: u8 = 0;
    pub const MQTT_UP: u8 = 1;
    pub const MQTT_DOWN: u8 = 2;
    /// Connected, subscriptions not yet acknowledged: a message published
    /// now could reach no subscription of ours.
    pub const MQTT_SUBSCRIBING: u8 = 3;
    /// One instance on its own store (SQLite).
    pub const ALONE: u8 = 0;
    /// Leading a cluster: this instance's engine decides.
    pub const LEADER: u8 = 1;
    /// In a cluster, not leading: takes in and forwards to the leader.
    pub const FOLLOWER: u8 = 2;

    /// Whether this instance's engine decides (alone, or leading).
    pub fn leads(&self) -> bool {
        self.role.load(Ordering::Relaxed) != Status::FOLLOWER
    }
}

/// The receiving ends the core reads.
pub struct Inbox {
    pub commands: mpsc::Receiver<Command>,
    pub mqtt: mpsc::Receiver<MqttInput>,
    pub probes: mpsc::Receiver<ProbeReport>,
    /// What other instances took in, from the cluster's shared inbox (a
    /// closed channel without a cluster).
    pub forwarded: mpsc::Receiver<Forwarded>,
}

/// An input another instance took in and stored in the cluster's shared
/// inbox, for the leader's engine. The commit that takes it in marks its
/// row done.
pub struct Forwarded {
    /// Its row in the shared inbox.
    pub id: i64,
    /// The instance that received it.
    pub instance: String,
    /// When that instance received it (its wall clock).
    pub at: Ts,
    pub item: ForwardedItem,
}

pub enum ForwardedItem {
    Mqtt {
        topic: String,
        payload: Vec<u8>,
    },
    Probe(ProbeReport),
    /// A request to the API of another instance, which waits for the answer.
    Command(Command),
}

/// What the core of a cluster's leader adds: its name among the
/// instances and the copies of MQTT messages it has seen.
struct Clustered {
    instance: String,
    dedup: dedup::Dedup,
}

/// Something to do once the batch is committed.
enum Done {
    Ack(Acker),
    Reply {
        reply: oneshot::Sender<Result<Receipt, EngineError>>,
        result: Result<Receipt, EngineError>,
        /// The input's index in the batch, for its seq.
        input: Option<usize>,
        received: Instant,
        source: Source,
    },
    /// The answer to [`Command::Inputs`]: each result with its input's
    /// index in the batch.
    Replies {
        reply: oneshot::Sender<Vec<Result<Receipt, EngineError>>>,
        results: Vec<(Result<Receipt, EngineError>, Option<usize>)>,
        received: Instant,
        source: Source,
    },
    Rejected(oneshot::Sender<()>),
    Reloaded(oneshot::Sender<Vec<String>>, Vec<String>),
    Linked(
        oneshot::Sender<Result<LinkOutcome, EngineError>>,
        Result<LinkOutcome, EngineError>,
    ),
    Ingested(Source, Instant),
}

/// The core. Build it with [`Core::start`], run it with [`Core::run`].
pub struct Core<S: Store> {
    engine: Engine,
    cat: Arc<Catalogue>,
    store: S,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    outbox: Arc<Notify>,
    /// The incident rows and timeline lengths last written, for the
    /// incidents the engine holds.
    stored: HashMap<IncidentId, (IncidentRow, usize)>,
    /// The daemon's monotonic clock, shared with the notifier.
    clock: Clock,
    /// The engine's time: the latest time it was given.
    last_at: Ts,
    /// The watermark last put in a batch.
    watermark_stored: Ts,
    /// The wall clock's distance from `clock` when it was last logged.
    wall_offset_logged: Duration,
    logged_since_snapshot: usize,
    /// Logged inputs after which the next snapshot is due (0: the next
    /// commit writes one).
    snapshot_every: usize,
    /// The fewest logged inputs between snapshots:
    /// [`SNAPSHOT_EVERY_INPUTS`] (tests take them more often).
    snapshot_least: usize,
    last_snapshot: Instant,
    /// The snapshot the batch being committed took, written after it.
    snapshot_taken: Option<snapshot::Taken>,
    /// The snapshot being stored.
    snapshot_writing: Option<tokio::task::JoinHandle<()>>,
    /// The newest input the store holds: the one a snapshot taken now
    /// follows.
    last_seq: u64,
    /// The broker has had our session before (a lost one is a possible loss).
    mqtt_seen: bool,
    /// When each service's health last changed, as this process saw it.
    since: HashMap<crate::catalogue::NodeId, Ts>,
    /// A service changed health since the board was last published.
    board_changed: bool,
    /// The next escalation of each live incident, as on the board…
    upcoming: BTreeMap<IncidentId, crate::engine::Upcoming>,
    /// …and the incidents changed since, whose next one is worked out anew.
    upcoming_stale: BTreeSet<IncidentId>,
    /// The incident gauges' sums, kept from batch to batch.
    gauges: gauges::IncidentGauges,
    /// Whether each probe's last request succeeded, to log a change once.
    probe_up: HashMap<String, bool>,
    /// Set when this core leads a cluster of instances.
    cluster: Option<Clustered>,
    /// Where the notifications a commit queued go at once, so that the
    /// notifier sends them without reading them back from the store.
    handoff: Option<mpsc::Sender<Vec<OutboxRow>>>,
}

/// Sets `Status::running` to false when the core ends, however it ends (a
/// panic included), so that `/readyz` stops saying ready.
struct RunningGuard(Arc<Status>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Relaxed);
    }
}

impl<S: Store> Core<S> {
    /// The engine, for tests and the demo.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The daemon's clock, for the notifier: outbox times are engine
    /// times.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Makes this core the leader of a cluster, as `instance`: MQTT
    /// messages that other instances also received are taken in once.
    pub fn leading(mut self, instance: String) -> Core<S> {
        self.cluster = Some(Clustered {
            instance,
            dedup: dedup::Dedup::new(),
        });
        self
    }

    /// Hands the notifications each commit queues to the notifier
    /// (through a bounded channel: when it is full the notifier is woken
    /// to read them from the store instead).
    pub fn handing_to(mut self, notifier: mpsc::Sender<Vec<OutboxRow>>) -> Core<S> {
        self.handoff = Some(notifier);
        self
    }

    /// Whether an MQTT message is the first copy of it (always, without a
    /// cluster).
    fn first_copy(&mut self, instance: Option<&str>, topic: &str, payload: &[u8], at: Ts) -> bool {
        match &mut self.cluster {
            None => true,
            Some(c) => {
                let from = instance.unwrap_or(&c.instance);
                c.dedup.first(from, topic, payload, at)
            }
        }
    }

    /// Runs until `shutdown`, then takes what is already queued, commits it
    /// with a snapshot, and returns. An error means the core could not go
    /// on (the store refused every commit for [`COMMIT_GIVE_UP`]): the
    /// daemon then exits, and the next start rebuilds from the store.
    pub async fn run(
        mut self,
        mut inbox: impl std::ops::DerefMut<Target = Inbox> + Send,
        shutdown: CancellationToken,
    ) -> Result<(), CoreError> {
        self.status.running.store(true, Ordering::Relaxed);
        let _running = RunningGuard(self.status.clone());
        self.status.store_ok.store(true, Ordering::Relaxed);
        // Live incidents' rows and timelines are written once at start, so
        // the projection matches the engine even after a changed config.
        let mut batch = Batch::new();
        let mut done = Vec::new();
        let now = self.now();
        self.advance(now, &mut batch);
        self.finish(&mut batch, &BTreeSet::new(), true);
        batch.events.push(SystemEvent {
            id: 0,
            at: now,
            kind: "started".into(),
            detail: format!("beredskab {}", env!("CARGO_PKG_VERSION")),
        });
        self.commit(batch, &mut done, None).await?;

        let mut commands = Vec::with_capacity(MAX_BATCH);
        let mut mqtt = Vec::with_capacity(MAX_BATCH);
        let mut probes = Vec::with_capacity(MAX_BATCH);
        let mut forwarded = Vec::new();
        let inbox: &mut Inbox = &mut inbox;
        let (mut commands_open, mut mqtt_open, mut probes_open) = (true, true, true);
        let mut forwarded_open = true;
        loop {
            let wake = self.engine.next_wakeup();
            let sleep = wake.map(|at| self.clock.instant(at));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                n = inbox.mqtt.recv_many(&mut mqtt, MAX_BATCH), if mqtt_open => {
                    mqtt_open = n > 0;
                }
                n = inbox.commands.recv_many(&mut commands, MAX_BATCH), if commands_open => {
                    commands_open = n > 0;
                }
                n = inbox.probes.recv_many(&mut probes, MAX_BATCH), if probes_open => {
                    probes_open = n > 0;
                }
                n = inbox.forwarded.recv_many(&mut forwarded, MAX_BATCH), if forwarded_open => {
                    forwarded_open = n > 0;
                }
                () = sleep_opt(sleep) => {}
            }
            // Whatever else is waiting joins this batch.
            drain(&mut inbox.mqtt, &mut mqtt);
            drain(&mut inbox.commands, &mut commands);
            drain(&mut inbox.probes, &mut probes);
            drain(&mut inbox.forwarded, &mut forwarded);
            self.batch(
                &mut mqtt,
                &mut commands,
                &mut probes,
                &mut forwarded,
                false,
                None,
            )
            .await?;
        }

        // Shutdown: what is already queued is taken in, then a snapshot.
        drain(&mut inbox.mqtt, &mut mqtt);
        drain(&mut inbox.commands, &mut commands);
        drain(&mut inbox.probes, &mut probes);
        drain(&mut inbox.forwarded, &mut forwarded);
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        self.batch(
            &mut mqtt,
            &mut commands,
            &mut probes,
            &mut forwarded,
            true,
            Some(deadline),
        )
        .await?;
        self.last_snapshot_written().await;
        info!("core stopped; state saved");
        Ok(())
    }

    /// The engine's time now: the monotonic clock's, never going back.
    fn now(&mut self) -> Ts {
        self.last_at = self.last_at.max(self.clock.now());
        self.last_at
    }

    /// Says so, once per step, when someone has set the wall clock: the
    /// daemon schedules on the monotonic clock and names times from the
    /// wall clock it read at start, until it restarts.
    fn watch_wall_clock(&mut self) {
        let offset = self.clock.wall_offset();
        if offset.abs_diff(self.wall_offset_logged) > crate::clock::STEP_WARNING {
            warn!(
                offset_s = offset.as_secs(),
                "the wall clock has moved away from the daemon's clock: timers keep their \
                 monotonic schedule; times in messages follow the wall clock again after a restart"
            );
            self.wall_offset_logged = offset;
        }
    }

    /// Runs the timers due by `now` into `batch`.
    fn advance(&mut self, now: Ts, batch: &mut Batch) -> BTreeSet<IncidentId> {
        let mut touched = BTreeSet::new();
        for (at, effects) in self.engine.run_timers_until(now) {
            self.record(at, &effects, None, batch, &mut touched);
        }
        touched
    }

    /// Takes the queued inputs through the engine and commits them.
    async fn batch(
        &mut self,
        mqtt: &mut Vec<MqttInput>,
        commands: &mut Vec<Command>,
        probes: &mut Vec<ProbeReport>,
        forwarded: &mut Vec<Forwarded>,
        snapshot: bool,
        deadline: Option<Instant>,
    ) -> Result<(), CoreError> {
        let began = Instant::now();
        self.watch_wall_clock();
        let mut batch = Batch::new();
        let mut done: Vec<Done> = Vec::new();
        let mut touched = BTreeSet::new();
        for input in mqtt.drain(..) {
            let now = self.now();
            touched.extend(self.advance(now, &mut batch));
            if let MqttInput::Message(m) = &input
                && !self.first_copy(None, &m.topic, &m.payload, now)
            {
                // Another instance's copy came first: acknowledged, and
                // counted as taken in, but not given to the engine again.
                if let MqttInput::Message(m) = input {
                    done.push(Done::Ack(m.acker));
                }
                continue;
            }
            self.on_mqtt(now, input, &mut batch, &mut done, &mut touched);
        }
        for f in forwarded.drain(..) {
            let now = self.now();
            touched.extend(self.advance(now, &mut batch));
            batch.forwarded.push(f.id);
            match f.item {
                ForwardedItem::Mqtt { topic, payload } => {
                    if self.first_copy(Some(&f.instance), &topic, &payload, f.at) {
                        let m = crate::collect::mqtt::Received {
                            topic,
                            payload,
                            qos: 1,
                            retain: false,
                            received: Instant::now(),
                            acker: Acker::detached(),
                        };
                        self.on_mqtt(
                            now,
                            MqttInput::Message(m),
                            &mut batch,
                            &mut done,
                            &mut touched,
                        );
                    }
                }
                ForwardedItem::Probe(report) => {
                    self.on_probe(now, report, &mut batch, &mut done, &mut touched);
                }
                ForwardedItem::Command(command) => {
                    self.on_command(now, command, &mut batch, &mut done, &mut touched);
                }
            }
        }
        for report in probes.drain(..) {
            let now = self.now();
            touched.extend(self.advance(now, &mut batch));
            self.on_probe(now, report, &mut batch, &mut done, &mut touched);
        }
        for command in commands.drain(..) {
            let now = self.now();
            touched.extend(self.advance(now, &mut batch));
            self.on_command(now, command, &mut batch, &mut done, &mut touched);
        }
        // Every timer up to the watermark must have run before it is
        // recorded: one due at this very instant would otherwise be taken
        // as stored after a crash.
        let now = self.now();
        touched.extend(self.advance(now, &mut batch));
        let due_snapshot = self.snapshot_due(snapshot).await;
        self.finish(&mut batch, &touched, due_snapshot);
        debug!(
            inputs = batch.inputs.len(),
            decided_us = began.elapsed().as_micros() as u64,
            "batch decided"
        );
        self.commit(batch, &mut done, deadline).await
    }

    /// Commits, retrying a failing store (the inputs wait: MQTT messages
    /// stay unacknowledged, HTTP requests unanswered), then acknowledges
    /// and answers.
    async fn commit(
        &mut self,
        batch: Batch,
        done: &mut Vec<Done>,
        deadline: Option<Instant>,
    ) -> Result<(), CoreError> {
        let notify = !batch.notifications.is_empty();
        let changed = !batch.incidents.is_empty() || !batch.timeline.is_empty();
        let mut retry = COMMIT_RETRY;
        let mut delay = retry.next_delay();
        let failing_since = Instant::now();
        let inputs = batch.inputs.len();
        let outcome = loop {
            match self.store.commit(&batch).await {
                Ok(outcome) => {
                    self.status.store_ok.store(true, Ordering::Relaxed);
                    break Some(outcome);
                }
                Err(e) => {
                    self.status.store_ok.store(false, Ordering::Relaxed);
                    error!(error = %e, inputs = batch.inputs.len(), retry_ms = delay.as_millis() as u64,
                        "commit failed; nothing is acknowledged until it succeeds");
                    if deadline.is_some_and(|d| Instant::now() + delay > d) {
                        break None;
                    }
                    if failing_since.elapsed() >= COMMIT_GIVE_UP {
                        return Err(CoreError::StoreDown(COMMIT_GIVE_UP, e));
                    }
                    tokio::time::sleep(delay).await;
                    delay = retry.next_delay();
                }
            }
        };
        let Some(outcome) = outcome else {
            // It follows inputs the store does not hold.
            self.snapshot_taken = None;
            error!(
                inputs = batch.inputs.len(),
                "giving up at shutdown: the broker redelivers the unacknowledged messages"
            );
            return Ok(());
        };
        if notify && !self.hand_over(&batch, &outcome) {
            self.outbox.notify_one();
        }
        let stored = failing_since.elapsed();
        let newest = outcome.inputs.iter().map(|o| match *o {
            crate::store::InputOutcome::New { seq }
            | crate::store::InputOutcome::Duplicate { seq } => seq,
        });
        self.last_seq = newest.fold(self.last_seq, u64::max);
        // Before the answers: whoever hears "done" sees it on the board.
        self.publish_board(changed);
        debug!(
            inputs,
            stored_us = stored.as_micros() as u64,
            boarded_us = failing_since.elapsed().saturating_sub(stored).as_micros() as u64,
            "batch committed"
        );
        // An input's place in the log, and the time from its arrival to
        // its committed decision.
        let seq_of = |input: Option<usize>| {
            input.and_then(|i| outcome.inputs.get(i)).map(|o| match *o {
                crate::store::InputOutcome::New { seq }
                | crate::store::InputOutcome::Duplicate { seq } => seq,
            })
        };
        let observe = |source: Source, received: Instant| {
            self.metrics
                .ingest_seconds
                .with_label_values(&[source.as_str()])
                .observe(received.elapsed().as_secs_f64());
        };
        for d in done.drain(..) {
            match d {
                Done::Ack(acker) => acker.ack(),
                Done::Reply {
                    reply,
                    mut result,
                    input,
                    received,
                    source,
                } => {
                    if let Ok(receipt) = &mut result {
                        receipt.seq = seq_of(input);
                    }
                    observe(source, received);
                    let _ = reply.send(result);
                }
                Done::Replies {
                    reply,
                    results,
                    received,
                    source,
                } => {
                    let results = results
                        .into_iter()
                        .map(|(mut result, input)| {
                            if let Ok(receipt) = &mut result {
                                receipt.seq = seq_of(input);
                            }
                            observe(source, received);
                            result
                        })
                        .collect();
                    let _ = reply.send(results);
                }
                Done::Rejected(reply) => {
                    let _ = reply.send(());
                }
                Done::Reloaded(reply, warnings) => {
                    let _ = reply.send(warnings);
                }
                Done::Linked(reply, result) => {
                    let _ = reply.send(result);
                }
                Done::Ingested(source, received) => observe(source, received),
            }
        }
        self.write_snapshot();
        Ok(())
    }
}

impl<S: Store> Core<S> {
    /// Gives the notifier the notifications this commit queued anew, as
    /// the rows the store now holds; whether it took them.
    fn hand_over(&self, batch: &Batch, outcome: &crate::store::CommitOutcome) -> bool {
        let Some(tx) = &self.handoff else {
            return false;
        };
        let rows: Vec<OutboxRow> = outcome
            .new_notifications
            .iter()
            .filter_map(|&i| batch.notifications.get(i))
            .map(|q| {
                let n = &q.notification;
                OutboxRow {
                    key: n.key.clone(),
                    incident: n.incident.0,
                    person: n.person.clone(),
                    role: n.role.clone(),
                    channel: n.channel.clone(),
                    reason: n.reason.clone(),
                    text: n.text.clone(),
                    created_at: q.at,
                    state: crate::store::OutboxState::Pending,
                    attempts: 0,
                    next_attempt: q.at,
                    last_error: None,
                    sent_at: None,
                }
            })
            .collect();
        rows.is_empty() || tx.try_send(rows).is_ok()
    }
}

/// Moves whatever is waiting in `rx` into `buf`, up to the batch limit.
fn drain<T>(rx: &mut mpsc::Receiver<T>, buf: &mut Vec<T>) {
    while buf.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(v) => buf.push(v),
            Err(_) => break,
        }
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
