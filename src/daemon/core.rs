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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::catalogue::Catalogue;
use crate::clock::Clock;
pub use crate::clock::wall_now;
use crate::collect::mqtt::{Acker, MqttInput};
use crate::collect::probe::ProbeReport;
use crate::engine::{
    AlarmInput, Effect, Engine, EngineError, Event, RejectReason, Snapshot, Source, Ts, intake,
};
use crate::metrics::Metrics;
use crate::store::{
    AlarmRow, Batch, IncidentRow, META_MQTT_SEEN, META_WATERMARK, Rejection, Store, StoreError,
    SystemEvent, UsedLink,
};

/// Most inputs taken into one commit.
const MAX_BATCH: usize = 1024;
/// A snapshot is written after this many logged inputs…
const SNAPSHOT_EVERY_INPUTS: usize = 10_000;
/// …or this long after the last one, whichever comes first.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(3600);
/// Inputs read per round trip while replaying the log.
const REPLAY_PAGE: u32 = 10_000;
/// The first and the longest wait before retrying a failed commit.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);
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

/// What an HTTP request wants from the engine.
#[derive(Debug)]
pub enum Command {
    /// An event from the API (an alarm, an acknowledgement, …). The reply
    /// comes once it is committed.
    Input {
        event: Event,
        source: Source,
        received: Instant,
        reply: oneshot::Sender<Result<Receipt, EngineError>>,
    },
    /// Events of one API request (the alerts of an Alertmanager body),
    /// taken in and committed together. The reply has a result for each
    /// event, in order, once they are committed.
    Inputs {
        events: Vec<Event>,
        source: Source,
        received: Instant,
        reply: oneshot::Sender<Vec<Result<Receipt, EngineError>>>,
    },
    /// A report from a person or an outside party: an alarm on a component
    /// or service, and, when given, how long it is expected to last from now.
    Report {
        alarm: AlarmInput,
        expected: Option<Duration>,
        received: Instant,
        reply: oneshot::Sender<Result<Receipt, EngineError>>,
    },
    /// Input refused before it reached the engine (a body that does not
    /// parse): kept, counted and logged like any rejection.
    Reject {
        source: Source,
        reason: RejectReason,
        detail: String,
        raw: Vec<u8>,
        reply: oneshot::Sender<()>,
    },
    /// A one-click acknowledgement from a signed link (already verified):
    /// it acknowledges once; a link used before is refused.
    AckLink {
        /// The link's identity (a hash of its token).
        link: String,
        incident: u64,
        /// The person the link was sent to.
        by: String,
        reply: oneshot::Sender<Result<LinkOutcome, EngineError>>,
    },
    /// A new catalogue from a reloaded config. The reply carries what of
    /// the running state could not be carried over.
    Reload {
        catalogue: Arc<Catalogue>,
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// The answer to an input, once committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The input's place in the log, if it changed anything.
    pub seq: Option<u64>,
    /// Why the engine rejected it, if it did.
    pub rejected: Option<(RejectReason, String)>,
    /// The incident a report opened or joined.
    pub incident: Option<u64>,
}

/// What following an acknowledgement link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkOutcome {
    Acknowledged,
    /// The link was used before; nothing changed.
    AlreadyUsed,
}

/// What the rest of the daemon can see of the core, for `/readyz`.
#[derive(Debug, Default)]
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
}

impl Status {
    pub const MQTT_NONE: u8 = 0;
    pub const MQTT_UP: u8 = 1;
    pub const MQTT_DOWN: u8 = 2;
}

/// The receiving ends the core reads.
pub struct Inbox {
    pub commands: mpsc::Receiver<Command>,
    pub mqtt: mpsc::Receiver<MqttInput>,
    pub probes: mpsc::Receiver<ProbeReport>,
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
    stored: HashMap<u64, (IncidentRow, usize)>,
    /// The daemon's monotonic clock, shared with the notifier.
    clock: Clock,
    /// The engine's time: the latest time it was given.
    last_at: Ts,
    /// The wall clock's distance from `clock` when it was last logged.
    wall_offset_logged: Duration,
    logged_since_snapshot: usize,
    last_snapshot: Instant,
    /// The broker has had our session before (a lost one is a possible loss).
    mqtt_seen: bool,
    /// Acknowledgement links already used, by the incident they name, for
    /// the incidents the engine holds (a link to one that is over is
    /// refused as resolved anyway).
    used_links: HashMap<u64, HashSet<String>>,
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
    /// Rebuilds the engine from the store: the newest snapshot, then every
    /// input logged after it, then the timers up to the watermark (their
    /// effects are already stored). Nothing is written yet.
    pub async fn start(
        cat: Arc<Catalogue>,
        store: S,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
        outbox: Arc<Notify>,
    ) -> Result<Core<S>, CoreError> {
        let started = Instant::now();
        let (mut engine, mut after) = match store.latest_snapshot().await? {
            Some(row) => match serde_json::from_str::<Snapshot>(&row.body) {
                Ok(snap) => {
                    let (engine, warnings) = Engine::restore(cat.clone(), &snap);
                    for w in &warnings {
                        warn!(warning = %w, "restoring the engine");
                    }
                    (engine, row.after_seq)
                }
                Err(e) => {
                    // The log is never truncated: replaying all of it is
                    // slower but complete.
                    warn!(error = %e, "the newest snapshot cannot be read; replaying the whole log");
                    (Engine::new(cat.clone()), 0)
                }
            },
            None => (Engine::new(cat.clone()), 0),
        };
        let mut last_at = Ts(0);
        let mut replayed = 0usize;
        loop {
            let page = store.inputs_after(after, REPLAY_PAGE).await?;
            for input in &page {
                engine.run_timers_until(input.at);
                // A refused action (an ack on a resolved incident) was
                // refused the first time too.
                let _ = engine.apply(input.at, input.event.clone());
                last_at = last_at.max(input.at);
                after = input.seq;
            }
            replayed += page.len();
            if page.len() < REPLAY_PAGE as usize {
                break;
            }
        }
        let watermark = store
            .meta(META_WATERMARK)
            .await?
            .and_then(|v| v.parse::<i64>().ok())
            .map(Ts);
        if let Some(w) = watermark {
            engine.run_timers_until(w);
            last_at = last_at.max(w);
        }
        let mqtt_seen = store.meta(META_MQTT_SEEN).await?.is_some();
        let held: Vec<u64> = engine.incidents().iter().map(|i| i.id).collect();
        let mut used_links: HashMap<u64, HashSet<String>> = HashMap::new();
        for (incident, link) in store.used_links_of(&held).await? {
            used_links.entry(incident).or_default().insert(link);
        }
        let clock = Clock::start(last_at);
        info!(
            replayed,
            live_incidents = engine.live_incidents().len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "engine rebuilt from the store"
        );
        let core = Core {
            engine,
            cat,
            store,
            metrics,
            status,
            outbox,
            stored: HashMap::new(),
            clock,
            last_at,
            wall_offset_logged: Duration::ZERO,
            logged_since_snapshot: replayed,
            last_snapshot: Instant::now(),
            mqtt_seen,
            used_links,
        };
        core.set_all_gauges();
        Ok(core)
    }

    /// The engine, for tests and the demo.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The daemon's clock, for the notifier: outbox times are engine
    /// times.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Runs until `shutdown`, then takes what is already queued, commits it
    /// with a snapshot, and returns. An error means the core could not go
    /// on (the store refused every commit for [`COMMIT_GIVE_UP`]): the
    /// daemon then exits, and the next start rebuilds from the store.
    pub async fn run(
        mut self,
        mut inbox: Inbox,
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
        let (mut commands_open, mut mqtt_open, mut probes_open) = (true, true, true);
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
                () = sleep_opt(sleep) => {}
            }
            // Whatever else is waiting joins this batch.
            drain(&mut inbox.mqtt, &mut mqtt);
            drain(&mut inbox.commands, &mut commands);
            drain(&mut inbox.probes, &mut probes);
            self.batch(&mut mqtt, &mut commands, &mut probes, false, None)
                .await?;
        }

        // Shutdown: what is already queued is taken in, then a snapshot.
        drain(&mut inbox.mqtt, &mut mqtt);
        drain(&mut inbox.commands, &mut commands);
        drain(&mut inbox.probes, &mut probes);
        let deadline = Instant::now() + SHUTDOWN_RETRY;
        self.batch(&mut mqtt, &mut commands, &mut probes, true, Some(deadline))
            .await?;
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
    fn advance(&mut self, now: Ts, batch: &mut Batch) -> BTreeSet<u64> {
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
        snapshot: bool,
        deadline: Option<Instant>,
    ) -> Result<(), CoreError> {
        self.watch_wall_clock();
        let mut batch = Batch::new();
        let mut done: Vec<Done> = Vec::new();
        let mut touched = BTreeSet::new();
        for input in mqtt.drain(..) {
            let now = self.now();
            touched.extend(self.advance(now, &mut batch));
            self.on_mqtt(now, input, &mut batch, &mut done, &mut touched);
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
        let due_snapshot = snapshot
            || self.logged_since_snapshot >= SNAPSHOT_EVERY_INPUTS
            || (self.logged_since_snapshot > 0 && self.last_snapshot.elapsed() >= SNAPSHOT_EVERY);
        self.finish(&mut batch, &touched, due_snapshot);
        self.commit(batch, &mut done, deadline).await
    }

    /// Adds the incident projection, the watermark and maybe a snapshot.
    fn finish(&mut self, batch: &mut Batch, touched: &BTreeSet<u64>, snapshot: bool) {
        let mut ids: BTreeSet<u64> = touched.clone();
        ids.extend(self.engine.live_incidents());
        for id in ids {
            let Some(inc) = self.engine.incident(id) else {
                continue;
            };
            let row = IncidentRow::from_incident(inc, &self.cat);
            let len = inc.timeline.len();
            let (old_row, old_len) = match self.stored.get(&id) {
                Some((r, l)) => (Some(r), *l),
                None => (None, 0),
            };
            if old_row == Some(&row) && old_len == len {
                continue;
            }
            if old_len < len {
                batch.timeline(id, old_len, inc.timeline[old_len..].to_vec());
            }
            batch.incident(row.clone());
            self.stored.insert(id, (row, len));
        }
        // What is over is now in the batch: it leaves memory, and is read
        // from the store from here on.
        for id in self.engine.forget_resolved() {
            self.stored.remove(&id);
            self.used_links.remove(&id);
        }
        self.status
            .incidents_held
            .store(self.engine.incidents().len(), Ordering::Relaxed);
        batch
            .meta
            .push((META_WATERMARK.to_owned(), self.last_at.0.to_string()));
        if snapshot {
            match serde_json::to_string(&self.engine.snapshot()) {
                Ok(body) => {
                    batch.snapshot = Some((self.last_at, body));
                    self.logged_since_snapshot = 0;
                    self.last_snapshot = Instant::now();
                }
                Err(e) => error!(error = %e, "cannot encode the engine snapshot"),
            }
        }
        self.set_incident_gauges();
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
        let mut delay = RETRY_MIN;
        let failing_since = Instant::now();
        let outcome = loop {
            match self.store.commit(batch.clone()).await {
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
                    delay = delay.saturating_mul(2).min(RETRY_MAX);
                }
            }
        };
        let Some(outcome) = outcome else {
            error!(
                inputs = batch.inputs.len(),
                "giving up at shutdown: the broker redelivers the unacknowledged messages"
            );
            return Ok(());
        };
        if notify {
            self.outbox.notify_one();
        }
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
                    if let (Ok(receipt), Some(i)) = (&mut result, input) {
                        receipt.seq = outcome.inputs.get(i).map(|o| match *o {
                            crate::store::InputOutcome::New { seq }
                            | crate::store::InputOutcome::Duplicate { seq } => seq,
                        });
                    }
                    self.metrics
                        .ingest_seconds
                        .with_label_values(&[source.as_str()])
                        .observe(received.elapsed().as_secs_f64());
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
                            if let (Ok(receipt), Some(i)) = (&mut result, input) {
                                receipt.seq = outcome.inputs.get(i).map(|o| match *o {
                                    crate::store::InputOutcome::New { seq }
                                    | crate::store::InputOutcome::Duplicate { seq } => seq,
                                });
                            }
                            self.metrics
                                .ingest_seconds
                                .with_label_values(&[source.as_str()])
                                .observe(received.elapsed().as_secs_f64());
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
                Done::Ingested(source, received) => self
                    .metrics
                    .ingest_seconds
                    .with_label_values(&[source.as_str()])
                    .observe(received.elapsed().as_secs_f64()),
            }
        }
        Ok(())
    }

    fn on_mqtt(
        &mut self,
        now: Ts,
        input: MqttInput,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        touched: &mut BTreeSet<u64>,
    ) {
        match input {
            MqttInput::Message(m) => {
                let received = m.received;
                let raw = m.payload;
                let event = Event::Mqtt {
                    topic: m.topic,
                    payload: raw,
                };
                match self.engine.apply(now, event.clone()) {
                    Ok(applied) => {
                        let raw = match &event {
                            Event::Mqtt { payload, .. } => Some(payload.as_slice()),
                            _ => None,
                        };
                        self.record(now, &applied.effects, raw, batch, touched);
                        if applied.changed {
                            batch.input(now, Source::Mqtt, None, event);
                            self.logged_since_snapshot += 1;
                        }
                    }
                    Err(e) => warn!(error = %e, "mqtt input refused by the engine"),
                }
                done.push(Done::Ack(m.acker));
                done.push(Done::Ingested(Source::Mqtt, received));
            }
            MqttInput::Connected { session_present } => {
                self.status.mqtt.store(Status::MQTT_UP, Ordering::Relaxed);
                self.metrics.mqtt_connected.set(1.0);
                if !session_present && self.mqtt_seen {
                    warn!(
                        "the MQTT broker had no session for us: alarms published while we were \
                         away may be lost"
                    );
                    batch.events.push(SystemEvent {
                        id: 0,
                        at: now,
                        kind: "mqtt_possible_loss".into(),
                        detail: "the broker reported no session on connect: messages queued for \
                                 beredskab before that may be lost"
                            .into(),
                    });
                }
                if !self.mqtt_seen {
                    self.mqtt_seen = true;
                    batch.meta.push((META_MQTT_SEEN.to_owned(), "1".to_owned()));
                }
            }
            MqttInput::Subscribed { refused } => {
                if !refused.is_empty() {
                    error!(refused = ?refused, "the MQTT broker refused subscriptions");
                    batch.events.push(SystemEvent {
                        id: 0,
                        at: now,
                        kind: "mqtt_subscription_refused".into(),
                        detail: refused.join(", "),
                    });
                }
            }
            MqttInput::Disconnected { error } => {
                self.status.mqtt.store(Status::MQTT_DOWN, Ordering::Relaxed);
                self.metrics.mqtt_connected.set(0.0);
                debug!(error = %error, "mqtt disconnected");
            }
        }
    }

    fn on_probe(
        &mut self,
        now: Ts,
        report: ProbeReport,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        touched: &mut BTreeSet<u64>,
    ) {
        let received = Instant::now();
        let cat = self.cat.clone();
        let Some(pid) = cat.probe_id(&report.id) else {
            // A probe of a config that was just reloaded away.
            return;
        };
        let probe = cat.probe(pid);
        let up = !matches!(
            intake::classify(&probe.config, &report.result).0,
            intake::ProbeClass::Failed(_)
        );
        self.metrics
            .probe_duration
            .with_label_values(&[report.id.as_str()])
            .observe(report.elapsed.as_secs_f64());
        self.metrics
            .probe_up
            .with_label_values(&[report.id.as_str()])
            .set(if up { 1.0 } else { 0.0 });
        let event = Event::Probe {
            id: report.id,
            result: report.result,
        };
        if let Ok(applied) = self.engine.apply(now, event.clone()) {
            self.record(now, &applied.effects, None, batch, touched);
            if applied.changed {
                batch.input(now, Source::Probe, None, event);
                self.logged_since_snapshot += 1;
                done.push(Done::Ingested(Source::Probe, received));
            }
        }
        if probe.config.generator.is_some()
            && let Some(runtime) = self.engine.generator_runtime(probe.node)
        {
            self.metrics
                .generator_runtime
                .with_label_values(&[cat.node(probe.node).id.as_str()])
                .set(runtime.as_secs_f64());
        }
    }

    fn on_command(
        &mut self,
        now: Ts,
        command: Command,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        touched: &mut BTreeSet<u64>,
    ) {
        match command {
            Command::Input {
                event,
                source,
                received,
                reply,
            } => {
                let (result, input) = self.apply_logged(now, source, event, batch, touched);
                done.push(Done::Reply {
                    reply,
                    result,
                    input,
                    received,
                    source,
                });
            }
            Command::Inputs {
                events,
                source,
                received,
                reply,
            } => {
                let results = events
                    .into_iter()
                    .map(|event| self.apply_logged(now, source, event, batch, touched))
                    .collect();
                done.push(Done::Replies {
                    reply,
                    results,
                    received,
                    source,
                });
            }
            Command::Report {
                alarm,
                expected,
                received,
                reply,
            } => {
                let source = alarm.source;
                let node = alarm.component.clone();
                let (mut result, input) =
                    self.apply_logged(now, source, Event::Alarm(alarm), batch, touched);
                if let Ok(receipt) = &mut result
                    && receipt.rejected.is_none()
                {
                    receipt.incident = self
                        .cat
                        .node_id(&node)
                        .and_then(|n| self.engine.incident_of(n));
                    if let (Some(id), Some(expected)) = (receipt.incident, expected)
                        && let Some(inc) = self.engine.incident(id)
                    {
                        // `expected` counts from the report; the engine's
                        // ETA counts from the incident's opening.
                        let eta = Event::Eta {
                            incident: id,
                            expected: report_eta(now, inc.opened, expected),
                            by: None,
                        };
                        let _ = self.apply_logged(now, source, eta, batch, touched);
                    }
                }
                done.push(Done::Reply {
                    reply,
                    result,
                    input,
                    received,
                    source,
                });
            }
            Command::Reject {
                source,
                reason,
                detail,
                raw,
                reply,
            } => {
                self.reject(now, source, reason, detail, &raw, batch);
                done.push(Done::Rejected(reply));
            }
            Command::AckLink {
                link,
                incident,
                by,
                reply,
            } => {
                let used = self
                    .used_links
                    .get(&incident)
                    .is_some_and(|l| l.contains(&link));
                let result = if used {
                    Ok(LinkOutcome::AlreadyUsed)
                } else {
                    let ack = Event::Ack {
                        incident,
                        by: by.clone(),
                        note: Some("by link".to_owned()),
                    };
                    match self
                        .apply_logged(now, Source::Manual, ack, batch, touched)
                        .0
                    {
                        Ok(_) => {
                            self.used_links
                                .entry(incident)
                                .or_default()
                                .insert(link.clone());
                            batch.used_links.push(UsedLink {
                                link,
                                at: now,
                                incident,
                                person: by,
                            });
                            Ok(LinkOutcome::Acknowledged)
                        }
                        Err(e) => Err(e),
                    }
                };
                done.push(Done::Linked(reply, result));
            }
            Command::Reload { catalogue, reply } => {
                // Steps the new config makes true fire now, not at the
                // time of the last change.
                let mut snap = self.engine.snapshot();
                snap.clock = Some(now);
                let (engine, warnings) = Engine::restore(catalogue.clone(), &snap);
                for w in &warnings {
                    warn!(warning = %w, "reloaded config: not carried over");
                }
                self.engine = engine;
                self.cat = catalogue;
                self.stored.clear();
                self.metrics.reset_catalogue_series();
                self.set_all_gauges();
                // The next commit stores the state under the new config.
                self.logged_since_snapshot = SNAPSHOT_EVERY_INPUTS;
                info!(warnings = warnings.len(), "config reloaded");
                batch.events.push(SystemEvent {
                    id: 0,
                    at: now,
                    kind: "reloaded".into(),
                    detail: if warnings.is_empty() {
                        "config reloaded".into()
                    } else {
                        format!("config reloaded; not carried over: {}", warnings.join("; "))
                    },
                });
                done.push(Done::Reloaded(reply, warnings));
            }
        }
    }

    /// Applies an API input; it is logged whatever it did, so that the
    /// caller gets its seq.
    fn apply_logged(
        &mut self,
        now: Ts,
        source: Source,
        event: Event,
        batch: &mut Batch,
        touched: &mut BTreeSet<u64>,
    ) -> (Result<Receipt, EngineError>, Option<usize>) {
        match self.engine.apply(now, event.clone()) {
            Ok(applied) => {
                let rejected = applied.effects.iter().find_map(|e| match e {
                    Effect::Rejected { reason, detail, .. } => Some((*reason, detail.clone())),
                    _ => None,
                });
                self.record(now, &applied.effects, None, batch, touched);
                let input = rejected.is_none().then(|| {
                    self.logged_since_snapshot += 1;
                    batch.input(now, source, None, event)
                });
                let receipt = Receipt {
                    rejected,
                    ..Receipt::default()
                };
                (Ok(receipt), input)
            }
            Err(e) => (Err(e), None),
        }
    }

    fn reject(
        &mut self,
        now: Ts,
        source: Source,
        reason: RejectReason,
        detail: String,
        raw: &[u8],
        batch: &mut Batch,
    ) {
        warn!(source = source.as_str(), reason = reason.as_str(), detail = %detail, "input rejected");
        self.metrics
            .alarms_rejected
            .with_label_values(&[source.as_str(), reason.as_str()])
            .inc();
        batch.rejected(Rejection {
            at: now,
            source,
            reason,
            detail,
            raw: raw.to_vec(),
            dedup_key: None,
        });
    }

    /// Writes what the engine decided into the batch, counts and logs it.
    fn record(
        &mut self,
        at: Ts,
        effects: &[Effect],
        raw: Option<&[u8]>,
        batch: &mut Batch,
        touched: &mut BTreeSet<u64>,
    ) {
        for e in effects {
            match e {
                Effect::Alarm {
                    component,
                    kind,
                    state,
                    severity,
                    source,
                    message,
                    key,
                } => {
                    debug!(component = %component, kind = kind.as_str(), state = state.as_str(),
                        source = source.as_str(), "alarm");
                    self.metrics
                        .alarms
                        .with_label_values(&[source.as_str(), kind.as_str()])
                        .inc();
                    batch.alarms.push(AlarmRow {
                        id: 0,
                        at,
                        source: *source,
                        component: component.clone(),
                        kind: kind.as_str().to_owned(),
                        state: *state,
                        severity: *severity,
                        key: key.clone(),
                        message: message.clone(),
                    });
                }
                Effect::Rejected {
                    source,
                    reason,
                    detail,
                } => self.reject(
                    at,
                    *source,
                    *reason,
                    detail.clone(),
                    raw.unwrap_or(&[]),
                    batch,
                ),
                Effect::IncidentOpened {
                    incident,
                    root,
                    severity,
                    expected_s,
                    ..
                } => {
                    info!(incident, root = %root, severity = severity.as_str(), expected_s, "incident opened");
                    self.metrics
                        .incidents
                        .with_label_values(&[severity.as_str()])
                        .inc();
                    touched.insert(*incident);
                }
                Effect::IncidentUpdated { incident, .. }
                | Effect::Estimate { incident, .. }
                | Effect::Level { incident, .. } => {
                    touched.insert(*incident);
                }
                Effect::IncidentMerged { incident, into } => {
                    info!(incident, into, "incident merged");
                    touched.insert(*incident);
                    touched.insert(*into);
                }
                Effect::Acknowledged { incident, by } => {
                    info!(incident, by = %by, "incident acknowledged");
                    if let Some(inc) = self.engine.incident(*incident)
                        && inc.acknowledged_at == Some(at)
                    {
                        self.metrics
                            .ack_seconds
                            .observe(at.millis_since(inc.opened) as f64 / 1000.0);
                    }
                    touched.insert(*incident);
                }
                Effect::IncidentResolved {
                    incident,
                    duration_ms,
                } => {
                    info!(
                        incident,
                        duration_s = duration_ms / 1000,
                        "incident resolved"
                    );
                    if let Some(inc) = self.engine.incident(*incident)
                        && inc.first_expected_s > 0
                    {
                        self.metrics
                            .estimate_ratio
                            .with_label_values(&[inc.first_basis.as_str()])
                            .observe(*duration_ms as f64 / 1000.0 / inc.first_expected_s as f64);
                    }
                    touched.insert(*incident);
                }
                Effect::Notification(n) => {
                    debug!(incident = n.incident, to = %n.person, channel = %n.channel,
                        reason = %n.reason, "notification queued");
                    batch.notification(at, n.clone());
                    touched.insert(n.incident);
                }
            }
        }
        for (node, health) in self.engine.take_health_changes() {
            self.metrics.set_health(&self.cat, node, health);
        }
    }

    fn set_all_gauges(&self) {
        for i in 0..self.cat.nodes.len() {
            let node = crate::catalogue::NodeId(i as u32);
            self.metrics
                .set_health(&self.cat, node, self.engine.health(node));
        }
        self.set_incident_gauges();
    }

    fn set_incident_gauges(&self) {
        let mut counts = [0i64; 3];
        for id in self.engine.live_incidents() {
            if let Some(inc) = self.engine.incident(id) {
                counts[inc.severity as usize] += 1;
            }
        }
        for (sev, n) in [
            crate::engine::Severity::Minor,
            crate::engine::Severity::Major,
            crate::engine::Severity::Critical,
        ]
        .into_iter()
        .zip(counts)
        {
            self.metrics
                .incidents_open
                .with_label_values(&[sev.as_str()])
                .set(n);
        }
    }
}

/// A report's ETA as the engine takes it: `expected` counts from the
/// report (`now`), the engine's from the incident's opening. Saturating:
/// no duration from outside can overflow it (the engine bounds it).
pub fn report_eta(now: Ts, opened: Ts, expected: Duration) -> Duration {
    let since_open = Duration::from_millis(u64::try_from(now.millis_since(opened)).unwrap_or(0));
    since_open.saturating_add(expected)
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
