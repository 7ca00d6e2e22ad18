//! The pure core: events in, effects out, the time passed in.
//!
//! The engine owns component health, incidents, estimates and escalation
//! state. It never touches the network, the disk or a clock: the daemon
//! and `drill` call [`Engine::apply`] (or [`Engine::handle`]) with each
//! event and the time it happened, and [`Engine::tick`] at
//! [`Engine::next_wakeup`] (the daemon through [`Engine::run_timers_until`]).
//! The effects they get back (alarm and incident changes, estimates,
//! notifications) are what the caller stores, sends or prints.
//! [`Engine::snapshot`] and [`Engine::restore`] (module `snapshot`) carry
//! the state across a restart or a config reload.

mod alarms;
mod escalation;
mod health;
mod incident;
pub mod intake;
pub mod snapshot;
mod text;
mod upcoming;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalogue::{Catalogue, NodeId, PersonId, RoleId};
use crate::config::AlarmKind;

pub use incident::{Basis, Incident, IncidentState, Incidents, Level, TimelineEntry};
pub use intake::{ProbeResult, parse_payload};
pub use snapshot::Snapshot;
pub use upcoming::{Next, Upcoming};

/// An incident's number: 1 for the first, counting up for ever (numbers of
/// incidents that left memory stay taken).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct IncidentId(pub u64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A point in time: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ts(pub i64);

impl Ts {
    /// `self + d`, saturating: a duration of 500 years is "never", not a
    /// wrap into the past.
    pub fn plus(self, d: Duration) -> Ts {
        Ts(self.0.saturating_add(millis(d)))
    }
    pub fn millis_since(self, earlier: Ts) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
    /// The time as a timestamp, clamped to the range jiff can name (about
    /// the years -9999 to 9999) rather than silently becoming 1970.
    pub fn to_timestamp(self) -> jiff::Timestamp {
        let ms = self.0.clamp(
            jiff::Timestamp::MIN.as_millisecond(),
            jiff::Timestamp::MAX.as_millisecond(),
        );
        jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::MAX)
    }
    pub fn from_timestamp(t: jiff::Timestamp) -> Ts {
        Ts(t.as_millisecond())
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A duration in whole seconds, saturating at `i64::MAX`.
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Resolved durations kept per root for the `history` estimate: the most
/// recent ones; a quantile of the last thousand outages of one cause says
/// all there is to say.
pub const HISTORY_PER_ROOT: usize = 1000;

/// Firing alarms kept per component (distinct keys); more are rejected.
pub const MAX_FIRING_PER_NODE: usize = 10_000;

/// MQTT topics watched for heartbeats; a subscription whose wildcards
/// match endless topics must not grow memory without end.
pub const MAX_HEARTBEAT_TOPICS: usize = 10_000;

/// Health of a component or service; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Up,
    Degraded,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
        }
    }
    /// The gauge value of SPEC §7: 1 up, 0.5 degraded, 0 down.
    pub fn gauge(self) -> f64 {
        match self {
            Health::Up => 1.0,
            Health::Degraded => 0.5,
            Health::Down => 0.0,
        }
    }
}

/// An incident's severity; ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    /// Every severity, least first.
    pub const ALL: [Severity; 3] = [Severity::Minor, Severity::Major, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// Whether an alarm is firing or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    Firing,
    Cleared,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Firing => "firing",
            AlarmState::Cleared => "cleared",
        }
    }
    pub fn parse(s: &str) -> Option<AlarmState> {
        match s {
            "firing" => Some(AlarmState::Firing),
            "cleared" => Some(AlarmState::Cleared),
            _ => None,
        }
    }
}

/// An alarm's severity: a critical alarm takes its component down, a
/// warning degrades it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmSeverity {
    Warning,
    Critical,
}

impl AlarmSeverity {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmSeverity::Warning => "warning",
            AlarmSeverity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<AlarmSeverity> {
        match s {
            "warning" => Some(AlarmSeverity::Warning),
            "critical" => Some(AlarmSeverity::Critical),
            _ => None,
        }
    }
}

/// Where an alarm came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Mqtt,
    Probe,
    Http,
    Manual,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Probe => "probe",
            Source::Http => "http",
            Source::Manual => "manual",
        }
    }
}

/// Why an input was rejected (SPEC §3 "Bad input").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    UnknownTopic,
    UnknownComponent,
    BadPayload,
    BadState,
    Oversized,
    UnknownIncident,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownTopic => "unknown_topic",
            RejectReason::UnknownComponent => "unknown_component",
            RejectReason::BadPayload => "bad_payload",
            RejectReason::BadState => "bad_state",
            RejectReason::Oversized => "oversized",
            RejectReason::UnknownIncident => "unknown_incident",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alarm as it enters the engine from HTTP, a report or a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmInput {
    /// A component id, or a service id for a report on a service.
    pub component: String,
    pub kind: AlarmKind,
    pub state: AlarmState,
    pub severity: AlarmSeverity,
    pub source: Source,
    pub message: Option<String>,
    /// Part of the alarm's identity; defaults to `""`.
    pub key: Option<String>,
}

/// How an MQTT payload is written in the input log: as text when it is
/// UTF-8 (every JSON payload), a third of the size of the same bytes as a
/// JSON array of numbers; as that array otherwise. Both forms are read, so
/// a log written either way replays.
pub(crate) mod payload_form {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(payload: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(payload) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(payload),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes(Vec<u8>),
        }
        Ok(match Form::deserialize(d)? {
            Form::Text(text) => text.into_bytes(),
            Form::Bytes(bytes) => bytes,
        })
    }
}

/// Something that happened, handed to the engine with its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A message received on a subscribed topic.
    Mqtt {
        topic: String,
        #[serde(with = "payload_form")]
        payload: Vec<u8>,
    },
    /// An alarm pushed over HTTP or entered by a person.
    Alarm(AlarmInput),
    /// One result of a probe, by probe id.
    Probe { id: String, result: ProbeResult },
    /// A person acknowledges an incident.
    Ack {
        incident: IncidentId,
        by: String,
        note: Option<String>,
    },
    /// A person acknowledges through a signed link (already verified)
    /// sent to them: once per link; a link used before is
    /// [`EngineError::LinkUsed`].
    AckLink {
        incident: IncidentId,
        by: String,
        /// The link's identity (a hash of its token).
        link: String,
    },
    /// A report from a person or an outside party: an alarm, and how long
    /// it is expected to last counted from the report (the engine's ETA
    /// counts from the incident's opening).
    Report {
        alarm: AlarmInput,
        expected: Option<Duration>,
    },
    /// A person or vendor gives the expected duration, counted from
    /// opening, or from now when `from_now`.
    Eta {
        incident: IncidentId,
        expected: Duration,
        by: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        from_now: bool,
    },
    /// A log entry on the incident's timeline; a `public` one is the
    /// incident's latest word on the status page.
    Note {
        incident: IncidentId,
        by: String,
        text: String,
        decision: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        public: bool,
    },
    /// A person changes the level.
    SetLevel {
        incident: IncidentId,
        level: Level,
        by: String,
    },
    /// A person resolves the incident.
    Resolve {
        incident: IncidentId,
        by: String,
        note: Option<String>,
    },
}

/// Why an action on an incident was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum EngineError {
    #[error("no incident {0}")]
    UnknownIncident(IncidentId),
    #[error("incident {0} is resolved")]
    Resolved(IncidentId),
    #[error("this link was used before on incident {0}")]
    LinkUsed(IncidentId),
}

/// A report's ETA as the engine takes it: `expected` counts from the
/// report (`now`), the engine's from the incident's opening. Saturating
/// (the engine bounds it at [`crate::config::MAX_DURATION`]).
pub fn report_eta(now: Ts, opened: Ts, expected: Duration) -> Duration {
    let since_open = Duration::from_millis(u64::try_from(now.millis_since(opened)).unwrap_or(0));
    since_open.saturating_add(expected)
}

/// Why a notification is sent: the `reason` of SPEC §4.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A policy step, by its `on` text verbatim (`open`, `expected > 30m`,
    /// `resolved`, …).
    Step(String),
    /// Nobody acknowledged within `deputy_after`: the role's next deputy.
    Deputy,
    /// A status reminder.
    Status,
    /// The incident is over: `recovery_notify`.
    Recovery,
    /// The crisis staff summoned.
    Crisis,
    /// The severity rose after steps had told people.
    Severity,
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Step(on) => on,
            Reason::Deputy => "deputy",
            Reason::Status => "status",
            Reason::Recovery => "recovery",
            Reason::Crisis => "crisis",
            Reason::Severity => "severity",
        }
    }

    /// The reason a stored text names (a step's `on` text otherwise).
    pub fn parse(s: &str) -> Reason {
        match s {
            "deputy" => Reason::Deputy,
            "status" => Reason::Status,
            "recovery" => Reason::Recovery,
            "crisis" => Reason::Crisis,
            "severity" => Reason::Severity,
            on => Reason::Step(on.to_owned()),
        }
    }

    /// Whether the message is about the incident's end (the `resolved`
    /// step, or recovery): it carries no acknowledgement link, and it is
    /// still sent once the incident is over.
    pub fn is_about_the_end(&self) -> bool {
        match self {
            Reason::Recovery => true,
            Reason::Step(on) => on == "resolved",
            _ => false,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A notification the engine decided to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub incident: IncidentId,
    pub to: PersonId,
    /// The person's id, for output.
    pub person: String,
    pub role: Option<String>,
    pub channel: String,
    pub reason: Reason,
    /// The message without the acknowledgement link.
    pub text: String,
    /// Unique per (incident, reason, occurrence, person, channel): the
    /// outbox's idempotency key.
    pub key: String,
}

/// What the engine decided, in the order it must be reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Alarm {
        component: String,
        kind: AlarmKind,
        state: AlarmState,
        severity: AlarmSeverity,
        source: Source,
        message: Option<String>,
        /// The alarm's identity key (SPEC §3): the MQTT payload's `key` or
        /// the topic, the probe id, `heartbeat:TOPIC` for a lost sensor, or
        /// the HTTP key (`""` by default).
        key: String,
    },
    Rejected {
        source: Source,
        reason: RejectReason,
        detail: String,
    },
    IncidentOpened {
        incident: IncidentId,
        root: String,
        services: Vec<String>,
        severity: Severity,
        expected_s: i64,
    },
    IncidentUpdated {
        incident: IncidentId,
        root: String,
        services: Vec<String>,
        severity: Severity,
    },
    IncidentMerged {
        incident: IncidentId,
        into: IncidentId,
    },
    Estimate {
        incident: IncidentId,
        expected_s: i64,
        basis: Basis,
    },
    Notification(Notification),
    Acknowledged {
        incident: IncidentId,
        by: String,
    },
    Level {
        incident: IncidentId,
        level: Level,
        meeting_place: Option<String>,
    },
    IncidentResolved {
        incident: IncidentId,
        duration_ms: i64,
    },
}

/// What one input did: its effects, and whether it changed the engine's
/// state. An input with `changed == false` left the engine exactly as it
/// was, so a replay without it rebuilds the same engine: the daemon need
/// not log it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub effects: Vec<Effect>,
    pub changed: bool,
}

/// Effects of one cause, collected in the order SPEC §4 prints them: the
/// cause's own line, incident lines, estimates, then notifications.
#[derive(Default)]
struct Out {
    cause: Vec<Effect>,
    incidents: Vec<Effect>,
    estimates: Vec<Effect>,
    notifications: Vec<Effect>,
    /// (incident, person, channel, reason) already notified in this cause.
    sent: std::collections::HashSet<(IncidentId, PersonId, String, Reason)>,
}

impl Out {
    fn finish(self) -> Vec<Effect> {
        let mut v = self.cause;
        v.extend(self.incidents);
        v.extend(self.estimates);
        v.extend(self.notifications);
        v
    }
}

/// A firing alarm on a node.
#[derive(Debug, Clone)]
struct Firing {
    source: Source,
    kind: AlarmKind,
    key: String,
    severity: AlarmSeverity,
}

/// A probe's consecutive-result state. The counters saturate at
/// `max(fail_after, recover_after)`: beyond that a count decides nothing,
/// and a steady result then leaves the state exactly as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProbeState {
    failures: u32,
    successes: u32,
    down: bool,
    degraded: bool,
}

/// Heartbeat watch of one topic.
#[derive(Debug, Clone)]
struct Heartbeat {
    deadline: Ts,
    node: NodeId,
    lost: bool,
}

/// The engine. See the module documentation.
pub struct Engine {
    cat: Arc<Catalogue>,
    /// Firing alarms per node.
    firing: HashMap<NodeId, alarms::FiringAlarms>,
    /// The nodes with a firing alarm of each kind, by [`AlarmKind`]
    /// discriminant: is a fire alarm among an incident's members?
    firing_kinds: [BTreeSet<NodeId>; AlarmKind::ALL.len()],
    /// The components with a backup: the only ones a generator carries.
    backed: Vec<NodeId>,
    /// Health: each node's own, effective and passed-on health.
    graph: health::HealthGraph,
    probes: Vec<ProbeState>,
    heartbeats: HashMap<String, Heartbeat>,
    heartbeat_timers: BTreeSet<(Ts, String)>,
    incidents: Incidents,
    /// Open incident of each member node.
    member_of: HashMap<NodeId, IncidentId>,
    /// Open incident of each root.
    root_of_incident: HashMap<NodeId, IncidentId>,
    /// When each open incident next needs the clock.
    wakes: BTreeSet<(Ts, IncidentId)>,
    /// Incidents the current cause touched, to report and escalate.
    dirty: BTreeSet<IncidentId>,
    /// Resolved durations in seconds, by root, oldest first; at most
    /// [`HISTORY_PER_ROOT`] each.
    history: HashMap<NodeId, std::collections::VecDeque<i64>>,
    /// Services whose policies an incident of this root follows when it
    /// affects none yet, cached.
    fed_cache: HashMap<NodeId, Arc<Vec<NodeId>>>,
    /// The latest time an input or a timer changed the state. A timer
    /// that fell due before it (an ETA already outlived) runs at this time
    /// in [`Engine::run_timers_until`], never earlier: time does not run
    /// backwards.
    clock: Option<Ts>,
    /// Live incidents to bring in line with an edited config, at the
    /// first tick at or after `reconcile_at` (see `snapshot`).
    reconcile: Vec<IncidentId>,
    reconcile_at: Option<Ts>,
}

impl Engine {
    pub fn new(cat: Arc<Catalogue>) -> Engine {
        let n = cat.nodes.len();
        let backed = (0..n)
            .map(|i| NodeId(i as u32))
            .filter(|&i| cat.node(i).backup.is_some())
            .collect();
        Engine {
            probes: vec![ProbeState::default(); cat.probes.len()],
            cat,
            firing: HashMap::new(),
            firing_kinds: Default::default(),
            backed,
            graph: health::HealthGraph::new(n),
            heartbeats: HashMap::new(),
            heartbeat_timers: BTreeSet::new(),
            incidents: Incidents::default(),
            member_of: HashMap::new(),
            root_of_incident: HashMap::new(),
            wakes: BTreeSet::new(),
            dirty: BTreeSet::new(),
            history: HashMap::new(),
            fed_cache: HashMap::new(),
            clock: None,
            reconcile: Vec::new(),
            reconcile_at: None,
        }
    }

    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.cat
    }

    /// Adds a past resolved incident's duration for a root.
    pub fn add_history(&mut self, root: NodeId, duration: Duration) {
        self.push_history(
            root,
            secs(duration.saturating_add(Duration::from_millis(500))),
        );
    }

    fn push_history(&mut self, root: NodeId, duration_s: i64) {
        let h = self.history.entry(root).or_default();
        if h.len() >= HISTORY_PER_ROOT {
            h.pop_front();
        }
        h.push_back(duration_s);
    }

    /// The incidents held, by id: live ones, those merged into them, and
    /// resolved ones not yet forgotten ([`Engine::forget_resolved`]).
    pub fn incidents(&self) -> &Incidents {
        &self.incidents
    }

    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.incidents.get(id)
    }

    /// Notes that an acknowledgement link naming incident `id` was used
    /// (from a store written before the engine kept them): a live incident,
    /// or the one it was merged into, refuses it from now on.
    pub fn remember_used_link(&mut self, id: IncidentId, link: String) {
        if let Ok(live) = self.live_incident(id) {
            self.incidents[live].used_links.insert(link);
        }
    }

    /// Lets go of every resolved incident, and every incident merged into
    /// one that is over, and returns their ids. The daemon calls it once
    /// their final state is stored: from then on they live in the store
    /// only, and acting on one is [`EngineError::Resolved`]. The
    /// estimates keep their durations (as numbers, per root).
    pub fn forget_resolved(&mut self) -> Vec<IncidentId> {
        self.incidents.take_over()
    }

    /// The effective health of a component or service.
    pub fn health(&self, node: NodeId) -> Health {
        self.graph.eff[node.0 as usize]
    }

    /// The generator's runtime left on its latest reading, if known.
    pub fn generator_runtime(&self, node: NodeId) -> Option<Duration> {
        let probe = self.cat.node(node).generator_probe?;
        let g = self.cat.probe(probe).config.generator.as_ref()?;
        let fuel = self.graph.generator.get(&node)?.fuel_percent?;
        Some(g.full_tank_runtime.mul_f64((fuel / 100.0).clamp(0.0, 1.0)))
    }

    /// The open incident `node` belongs to, if any.
    pub fn incident_of(&self, node: NodeId) -> Option<IncidentId> {
        self.member_of.get(&node).copied()
    }

    /// Every incident opened, changed or restored since the last call,
    /// each once (it may no longer be held): what the daemon stores and
    /// shows anew after a batch, so that a batch costs what it changed,
    /// not what is open.
    pub fn take_changed_incidents(&mut self) -> BTreeSet<IncidentId> {
        self.incidents.take_changed()
    }

    /// Ids of the open and acknowledged incidents, ascending.
    pub fn live_incidents(&self) -> Vec<IncidentId> {
        // What the engine holds is bounded by what is open.
        self.incidents
            .iter()
            .filter(|i| i.state.is_live())
            .map(|i| i.id)
            .collect()
    }

    /// Every node (component or service) whose effective health changed
    /// since the last call, each once, with its health now: for the health
    /// gauges. After [`Engine::new`] every node is up; after
    /// [`Engine::restore`] the first call lists every node that is not.
    pub fn take_health_changes(&mut self) -> Vec<(NodeId, Health)> {
        let changed = std::mem::take(&mut self.graph.health_changes);
        changed
            .into_iter()
            .map(|n| {
                self.graph.health_marked[n.0 as usize] = false;
                (n, self.graph.eff[n.0 as usize])
            })
            .collect()
    }

    /// The earliest time the engine must be ticked, if any.
    pub fn next_wakeup(&self) -> Option<Ts> {
        [
            self.wakes.first().map(|w| w.0),
            self.heartbeat_timers.first().map(|h| h.0),
            self.reconcile_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer due up to `until`, each at its own time (or at the
    /// engine's latest time, if it fell due before that), and returns each
    /// tick's time and effects. The daemon calls it before every input,
    /// with the input's time, and when its timer sleeps out: live and in a
    /// replay the engine then ticks at the same times, whatever the input
    /// timing, so skipped inputs (`changed == false`) do not matter.
    pub fn run_timers_until(&mut self, until: Ts) -> Vec<(Ts, Vec<Effect>)> {
        let mut ticks = Vec::new();
        while let Some(due) = self.next_wakeup().filter(|&w| w <= until) {
            let at = self.clock.map_or(due, |c| c.max(due));
            // `tick` runs everything due at or before `at`, so the next
            // wake-up is later: the loop always advances.
            let effects = self.tick(at);
            ticks.push((at, effects));
        }
        ticks
    }

    /// Applies one event at `now`; see [`Applied`] for what `changed`
    /// promises. A refused action on an incident is an error and changes
    /// nothing.
    pub fn apply(&mut self, now: Ts, event: Event) -> Result<Applied, EngineError> {
        let mut out = Out::default();
        let changed = match event {
            Event::Mqtt { topic, payload } => self.on_mqtt(now, &topic, &payload, &mut out),
            Event::Alarm(a) => self.on_alarm_input(now, a, &mut out),
            Event::Probe { id, result } => self.on_probe(now, &id, &result, &mut out),
            Event::Ack { incident, by, note } => {
                self.on_ack(now, incident, by, note, &mut out)?;
                true
            }
            Event::AckLink { incident, by, link } => {
                let id = self.live_incident(incident)?;
                if self.incidents[id].used_links.contains(&link) {
                    return Err(EngineError::LinkUsed(id));
                }
                self.on_ack(now, id, by, Some("by link".to_owned()), &mut out)?;
                self.incidents[id].used_links.insert(link);
                true
            }
            Event::Report { alarm, expected } => {
                let node = self.cat.node_id(&alarm.component);
                let changed = self.on_alarm_input(now, alarm, &mut out);
                let open = node.and_then(|n| self.incident_of(n));
                match (open, expected) {
                    (Some(id), Some(expected)) => {
                        let eta = report_eta(now, self.incidents[id].opened, expected);
                        self.on_eta(now, id, eta, None, &mut out)?;
                        true
                    }
                    _ => changed,
                }
            }
            Event::Eta {
                incident,
                expected,
                by,
                from_now,
            } => {
                let expected = if from_now {
                    // In whole seconds since opening, so that "2 h from
                    // now" reads as 2 h plus the minutes it has been open,
                    // not one second more.
                    let id = self.live_incident(incident)?;
                    let open_s = now.millis_since(self.incidents[id].opened) / 1000;
                    Duration::from_secs(u64::try_from(open_s).unwrap_or(0)).saturating_add(expected)
                } else {
                    expected
                };
                self.on_eta(now, incident, expected, by, &mut out)?;
                true
            }
            Event::Note {
                incident,
                by,
                text,
                decision,
                public,
            } => {
                self.on_note(now, incident, by, text, decision, public)?;
                true
            }
            Event::SetLevel {
                incident,
                level,
                by,
            } => {
                self.on_level(now, incident, level, by, &mut out)?;
                true
            }
            Event::Resolve { incident, by, note } => {
                let id = self.live_incident(incident)?;
                if let Some(note) = note {
                    self.incidents[id].log(now, "note", note, Some(by.clone()));
                }
                self.resolve(now, id, Some(by), &mut out);
                true
            }
        };
        Ok(self.applied(now, changed, out))
    }

    /// [`Engine::apply`] of `Event::Probe { id, result }` with the result
    /// borrowed: the daemon logs a probe's event only when it changed
    /// something, which most results do not, and so need not copy each
    /// result (its body too) to apply it.
    pub fn apply_probe(&mut self, now: Ts, id: &str, result: &ProbeResult) -> Applied {
        let mut out = Out::default();
        let changed = self.on_probe(now, id, result, &mut out);
        self.applied(now, changed, out)
    }

    fn applied(&mut self, now: Ts, changed: bool, out: Out) -> Applied {
        if changed {
            self.advance_clock(now);
        }
        Applied {
            effects: out.finish(),
            changed,
        }
    }

    /// Applies one event at `now` and returns its effects.
    pub fn handle(&mut self, now: Ts, event: Event) -> Result<Vec<Effect>, EngineError> {
        self.apply(now, event).map(|a| a.effects)
    }

    fn advance_clock(&mut self, now: Ts) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    /// Fires every timer due at or before `now`.
    pub fn tick(&mut self, now: Ts) -> Vec<Effect> {
        let mut all = Vec::new();
        if self.reconcile_at.is_some_and(|t| t <= now) {
            self.advance_clock(now);
            let mut out = Out::default();
            self.reconcile(now, &mut out);
            all.extend(out.finish());
        }
        loop {
            let hb = self
                .heartbeat_timers
                .first()
                .cloned()
                .filter(|h| h.0 <= now);
            let inc = self.wakes.first().copied().filter(|w| w.0 <= now);
            let mut out = Out::default();
            if hb.is_some() || inc.is_some() {
                self.advance_clock(now);
            }
            match (hb, inc) {
                (Some(h), Some(w)) if h.0 <= w.0 => self.on_heartbeat_due(now, h, &mut out),
                (_, Some(w)) => {
                    self.wakes.remove(&w);
                    self.incidents[w.1].wake = None;
                    self.on_incident_due(now, w.1, &mut out);
                }
                (Some(h), None) => self.on_heartbeat_due(now, h, &mut out),
                (None, None) => break,
            }
            all.extend(out.finish());
        }
        all
    }

    /// Returns whether the state changed: a rejected message changes
    /// nothing, except that any message on a heartbeat topic shows the
    /// sensor is alive.
    fn on_mqtt(&mut self, now: Ts, topic: &str, payload: &[u8], out: &mut Out) -> bool {
        if payload.len() as u64 > self.cat.max_payload {
            reject(
                out,
                Source::Mqtt,
                RejectReason::Oversized,
                format!("{topic}: payload of {} bytes", payload.len()),
            );
            return false;
        }
        let cat = self.cat.clone();
        let Some((_, sub, component)) = intake::route(&cat, topic) else {
            reject(out, Source::Mqtt, RejectReason::UnknownTopic, topic.into());
            return false;
        };
        let Some(node) = cat.node_id(&component) else {
            reject(
                out,
                Source::Mqtt,
                RejectReason::UnknownComponent,
                format!("{topic}: component {component:?}"),
            );
            return false;
        };
        // Any message, even a malformed one, shows the sensor is alive.
        let alive = sub.config.heartbeat.is_some();
        if let Some(every) = sub.config.heartbeat {
            self.heartbeat_seen(now, topic, node, every, out);
        }
        let parsed = match intake::parse_payload(payload) {
            Ok(p) => p,
            Err((reason, detail)) => {
                reject(out, Source::Mqtt, reason, format!("{topic}: {detail}"));
                return alive;
            }
        };
        let applied = self.apply_alarm(
            now,
            node,
            Firing {
                source: Source::Mqtt,
                kind: sub.config.kind,
                key: parsed.key.unwrap_or_else(|| topic.to_owned()),
                severity: parsed.severity.unwrap_or(AlarmSeverity::Critical),
            },
            parsed.state,
            parsed.message,
            out,
        );
        applied || alive
    }

    fn on_alarm_input(&mut self, now: Ts, a: AlarmInput, out: &mut Out) -> bool {
        let Some(node) = self.cat.node_id(&a.component) else {
            reject(
                out,
                a.source,
                RejectReason::UnknownComponent,
                format!("component {:?}", a.component),
            );
            return false;
        };
        self.apply_alarm(
            now,
            node,
            Firing {
                source: a.source,
                kind: a.kind,
                key: a.key.map(intake::clip_key).unwrap_or_default(),
                severity: a.severity,
            },
            a.state,
            a.message.map(intake::clip_message),
            out,
        )
    }

    /// Returns whether the probe's state or generator reading changed or
    /// an alarm was applied.
    fn on_probe(&mut self, now: Ts, id: &str, result: &ProbeResult, out: &mut Out) -> bool {
        let cat = self.cat.clone();
        let Some(pid) = cat.probe_id(id) else {
            reject(
                out,
                Source::Probe,
                RejectReason::UnknownComponent,
                format!("probe {id:?}"),
            );
            return false;
        };
        let probe = cat.probe(pid);
        let (class, reading) = intake::classify(&probe.config, result);
        let mut sources = Vec::new();
        if let Some(r) = reading {
            // A new running flag changes what the generator carries; a new
            // fuel level changes how long it can (the generator rule).
            if self.graph.generator.insert(probe.node, r) != Some(r) {
                sources.push(probe.node);
            }
        }
        let st = &mut self.probes[pid.0 as usize];
        let before = st.clone();
        let cap = probe_count_cap(&probe.config);
        match class {
            intake::ProbeClass::Failed(_) => {
                st.failures = st.failures.saturating_add(1).min(cap);
                st.successes = 0;
            }
            _ => {
                st.successes = st.successes.saturating_add(1).min(cap);
                st.failures = 0;
            }
        }
        if st.failures >= probe.config.fail_after.max(1) {
            st.down = true;
        } else if st.down && st.successes >= probe.config.recover_after.max(1) {
            st.down = false;
        }
        st.degraded = matches!(class, intake::ProbeClass::Degraded(_));
        let state_changed = *st != before;
        let (down, degraded) = (st.down, st.degraded);
        let (state, severity) = if down {
            (AlarmState::Firing, AlarmSeverity::Critical)
        } else if degraded {
            (AlarmState::Firing, AlarmSeverity::Warning)
        } else {
            (AlarmState::Cleared, AlarmSeverity::Critical)
        };
        let message = match &class {
            intake::ProbeClass::Failed(m) | intake::ProbeClass::Degraded(m) => Some(m.clone()),
            intake::ProbeClass::Ok => None,
        };
        let firing = Firing {
            source: Source::Probe,
            kind: cat.node(probe.node).probe_alarm_kind(),
            key: probe.config.id.clone(),
            severity,
        };
        let applied = self.apply_alarm(now, probe.node, firing, state, message, out);
        if !applied && !sources.is_empty() {
            // The generator's reading changed without an alarm change.
            self.health_changed(now, &sources, out);
        }
        applied || state_changed || !sources.is_empty()
    }

    fn heartbeat_seen(
        &mut self,
        now: Ts,
        topic: &str,
        node: NodeId,
        every: Duration,
        out: &mut Out,
    ) {
        let deadline = now.plus(every);
        if self.heartbeats.len() >= MAX_HEARTBEAT_TOPICS && !self.heartbeats.contains_key(topic) {
            return;
        }
        let was_lost = match self.heartbeats.get_mut(topic) {
            Some(h) => {
                self.heartbeat_timers
                    .remove(&(h.deadline, topic.to_owned()));
                h.deadline = deadline;
                std::mem::replace(&mut h.lost, false)
            }
            None => {
                self.heartbeats.insert(
                    topic.to_owned(),
                    Heartbeat {
                        deadline,
                        node,
                        lost: false,
                    },
                );
                false
            }
        };
        self.heartbeat_timers.insert((deadline, topic.to_owned()));
        if was_lost {
            self.apply_alarm(
                now,
                node,
                sensor_lost(topic),
                AlarmState::Cleared,
                None,
                out,
            );
        }
    }

    fn on_heartbeat_due(&mut self, now: Ts, timer: (Ts, String), out: &mut Out) {
        self.heartbeat_timers.remove(&timer);
        let Some(h) = self.heartbeats.get_mut(&timer.1) else {
            return;
        };
        h.lost = true;
        let node = h.node;
        self.apply_alarm(
            now,
            node,
            sensor_lost(&timer.1),
            AlarmState::Firing,
            Some(format!("no message on {} since {}", timer.1, timer.0.0)),
            out,
        );
    }

    /// Records an alarm's new state; returns whether it changed anything.
    fn apply_alarm(
        &mut self,
        now: Ts,
        node: NodeId,
        alarm: Firing,
        state: AlarmState,
        message: Option<String>,
        out: &mut Out,
    ) -> bool {
        let change = match state {
            AlarmState::Firing => self
                .firing
                .entry(node)
                .or_default()
                .fire(&alarm, MAX_FIRING_PER_NODE),
            AlarmState::Cleared => match self.firing.get_mut(&node) {
                None => alarms::Change::Same,
                Some(list) => {
                    let change = list.clear(&alarm);
                    if list.is_empty() {
                        self.firing.remove(&node);
                    }
                    change
                }
            },
        };
        match change {
            alarms::Change::Same => return false,
            alarms::Change::Full => {
                // The component is down many times over; a sensor that
                // makes up a new key per message must not grow memory.
                reject(
                    out,
                    alarm.source,
                    RejectReason::Oversized,
                    format!(
                        "{} already has {MAX_FIRING_PER_NODE} firing alarms",
                        self.cat.node(node).id
                    ),
                );
                return false;
            }
            alarms::Change::Began | alarms::Change::Severity | alarms::Change::Cleared => {}
        }
        self.index_kind(node, alarm.kind);
        out.cause.push(Effect::Alarm {
            component: self.cat.node(node).id.clone(),
            kind: alarm.kind,
            state,
            severity: alarm.severity,
            source: alarm.source,
            message: message.clone(),
            key: alarm.key.clone(),
        });
        if let Some(&id) = self.member_of.get(&node) {
            let what = format!(
                "{} {} {} ({})",
                alarm.kind,
                state.as_str(),
                self.cat.node(node).id,
                message.unwrap_or_else(|| alarm.source.as_str().to_owned())
            );
            self.incidents[id].log(now, "alarm", what, None);
        }
        self.graph.own[node.0 as usize] = self.own_health(node);
        // Even when the health is unchanged, a new firing alarm on a node
        // with no open incident (say after a manual resolve) opens one.
        self.health_changed(now, &[node], out);
        true
    }

    /// Brings [`Engine::firing_kinds`] in line with `node`'s alarms of `kind`.
    fn index_kind(&mut self, node: NodeId, kind: AlarmKind) {
        let nodes = &mut self.firing_kinds[kind as usize];
        if self.firing.get(&node).is_some_and(|l| l.has_kind(kind)) {
            nodes.insert(node);
        } else {
            nodes.remove(&node);
        }
    }

    fn own_health(&self, node: NodeId) -> Health {
        self.firing
            .get(&node)
            .map_or(Health::Up, alarms::FiringAlarms::health)
    }

    /// The open (or acknowledged) incident `id` stands for: a merged
    /// incident stands for the one that absorbed it.
    fn live_incident(&self, id: IncidentId) -> Result<IncidentId, EngineError> {
        self.incidents.live(id)
    }
}

/// Where a probe's consecutive counts stop: no threshold looks further.
pub(super) fn probe_count_cap(p: &crate::config::ProbeConfig) -> u32 {
    p.fail_after.max(1).max(p.recover_after.max(1))
}

fn reject(out: &mut Out, source: Source, reason: RejectReason, detail: String) {
    out.cause.push(Effect::Rejected {
        source,
        reason,
        detail,
    });
}

fn sensor_lost(topic: &str) -> Firing {
    Firing {
        source: Source::Mqtt,
        kind: AlarmKind::Generic,
        key: format!("heartbeat:{topic}"),
        severity: AlarmSeverity::Warning,
    }
}

/// The person id and role id of a recipient, as strings for output.
fn ids(cat: &Catalogue, p: PersonId, r: Option<RoleId>) -> (String, Option<String>) {
    (cat.person(p).id.clone(), r.map(|r| cat.role(r).id.clone()))
}

#[cfg(test)]
mod tests;
