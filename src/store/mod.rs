//! The durable store: the input log, and projections of the engine's state.
//!
//! The daemon rebuilds the engine after a crash by replaying the logged
//! inputs, in order and with their original times, through the
//! deterministic engine: the `inputs` log is the source of truth. Incidents,
//! their timelines, rejected input and the notification outbox are
//! projections for the API, the reports and the notifier. Every write goes
//! through [`Store::commit`] as one [`Batch`] in one transaction, so the
//! daemon can group many inputs and their effects into one durable commit.
//! Projection writes are idempotent (upserts, and inserts keyed on the
//! incident's timeline index or the notification's key), so a replay may
//! write them again.
//!
//! [`Store`] is the contract each backend implements; [`SqliteStore`] is
//! the embedded one, [`PgStore`] the one several daemons can share.

/// The incident row's columns, in the order both backends write them, and
/// the upsert that writes a newer row over an older one: one text for
/// SQLite and PostgreSQL, so that neither can miss a column.
macro_rules! incident_columns {
    () => {
        "id, state, merged_into, severity, level, root, services, \
         opened_at_ms, acknowledged_at_ms, acknowledged_by, expected_s, expected_end_ms, \
         expected_basis, resolved_at_ms, resolved_by, fuel_out_ms, meeting_place"
    };
}
macro_rules! incident_upsert {
    () => {
        "ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
         merged_into = excluded.merged_into, severity = excluded.severity, \
         level = excluded.level, root = excluded.root, services = excluded.services, \
         opened_at_ms = excluded.opened_at_ms, \
         acknowledged_at_ms = excluded.acknowledged_at_ms, \
         acknowledged_by = excluded.acknowledged_by, expected_s = excluded.expected_s, \
         expected_end_ms = excluded.expected_end_ms, \
         expected_basis = excluded.expected_basis, resolved_at_ms = excluded.resolved_at_ms, \
         resolved_by = excluded.resolved_by, fuel_out_ms = excluded.fuel_out_ms, \
         meeting_place = excluded.meeting_place"
    };
}

mod postgres;
mod sqlite;

use std::future::Future;
use std::sync::Arc;

use crate::catalogue::Catalogue;
use crate::engine::{
    AlarmSeverity, AlarmState, Basis, Event, Incident, IncidentId, IncidentState, Level,
    Notification, Reason, RejectReason, Severity, Source, TimelineEntry, Ts,
};

pub use postgres::{PG_MIGRATIONS, PgStore};
pub use sqlite::SqliteStore;

/// The `meta` name of the engine time up to which every decision is
/// committed (milliseconds since the epoch).
pub const META_WATERMARK: &str = "watermark_ms";
/// The `meta` name that says the MQTT broker has had our session before.
pub const META_MQTT_SEEN: &str = "mqtt_seen";

/// An instance of a cluster not heard of for this long (its heartbeat in
/// `cluster_instances`) is taken for dead: its probes go to the others
/// and its claims on the outbox are void.
pub const PRESUMED_DEAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Raw bytes of a rejected input are kept up to this length.
pub const RAW_LIMIT: usize = 4 * 1024;

/// How many inputs [`Store::inputs`] reads per round trip.
const REPLAY_PAGE: u32 = 10_000;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot encode {what} as json: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("bad value in {table}.{column}: {detail}")]
    Corrupt {
        table: &'static str,
        column: &'static str,
        detail: String,
    },
    #[error("{what} {value} does not fit the database")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("the database has schema version {found}, newer than this build's {known}")]
    NewerSchema { found: i64, known: i64 },
    /// Only a read-only opening meets it: the daemon migrates on start.
    #[error(
        "the database has schema version {found}, older than this build's {known}; \
         start the daemon once to bring it up to date"
    )]
    OlderSchema { found: i64, known: i64 },
    #[error("no notification with key {0:?} in the outbox")]
    UnknownNotification(String),
    /// A commit of a leader whose leadership has passed to another
    /// instance: refused, so that two never decide at once.
    #[error("this instance no longer leads (its epoch {held}, the cluster's {epoch})")]
    Fenced { held: i64, epoch: i64 },
    #[error("the integrity check failed: {0}")]
    Integrity(String),
}

/// The storage contract. Backends: [`SqliteStore`] and [`PgStore`].
///
/// Methods take `&self` and may be called from many tasks; a backend keeps
/// one writer and serialises commits itself. Clones share the database.
pub trait Store: Clone + Send + Sync + 'static {
    /// Writes a batch in one transaction: all of it is durable when this
    /// returns `Ok`, none of it when it returns `Err`. Do not cancel the
    /// future: a commit cut off after the database committed reports
    /// nothing, and the caller would not know. Takes the batch by reference
    /// so that a failed commit can be retried without a copy.
    fn commit(
        &self,
        batch: &Batch,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;

    /// Up to `limit` logged inputs with `seq > after`, in `seq` order.
    fn inputs_after(
        &self,
        after: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredInput>, StoreError>> + Send;

    /// Incidents newest first: those matching `filter`, with ids below
    /// `before` when given, at most `limit`.
    fn incidents(
        &self,
        filter: IncidentFilter,
        limit: u32,
        before: Option<u64>,
    ) -> impl Future<Output = Result<Vec<IncidentRow>, StoreError>> + Send;

    /// One incident with its timeline in order.
    fn incident(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<IncidentDetail>, StoreError>> + Send;

    /// Rejected inputs newest first, with ids below `before` when given.
    fn rejected(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> impl Future<Output = Result<Vec<RejectedRow>, StoreError>> + Send;

    /// Resolved incidents' durations by root, oldest first. A projection of
    /// the log: an engine rebuilt by replay already has them.
    fn history(&self) -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;

    /// Pending notifications due at `now`, the longest waiting first.
    fn due_notifications(
        &self,
        now: Ts,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// Every notification of one incident, in the order queued: who was
    /// told when, for the report.
    fn notifications(
        &self,
        incident: u64,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// The earliest `next_attempt` of any pending notification: when the
    /// notifier must look again.
    fn next_due(&self) -> impl Future<Output = Result<Option<Ts>, StoreError>> + Send;

    /// Records a delivery. Marking a sent notification again is harmless.
    fn mark_sent(&self, key: &str, at: Ts) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a failed attempt: the notification is tried again at
    /// `next_attempt`, or, when `None`, given up as failed.
    fn mark_failed(
        &self,
        key: &str,
        error: &str,
        next_attempt: Option<Ts>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the store answers, for `/readyz`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores an engine snapshot (JSON) taken after the input `after_seq`
    /// and every one before it, and drops all but the newest two. Apart
    /// from any commit: the snapshot only shortens the replay after a
    /// start, so it need not reach the disk before the next commit does
    /// (SQLite does not sync it by itself), and one lost to a crash costs
    /// a longer replay, nothing else.
    fn write_snapshot(
        &self,
        at: Ts,
        after_seq: u64,
        body: Arc<str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The newest engine snapshot, if any: the one after the latest input.
    fn latest_snapshot(
        &self,
    ) -> impl Future<Output = Result<Option<SnapshotRow>, StoreError>> + Send;

    /// A value of the `meta` table.
    fn meta(&self, name: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Accepted alarm changes newest first, with ids below `before`.
    fn alarms(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> impl Future<Output = Result<Vec<AlarmRow>, StoreError>> + Send;

    /// Records one delivery attempt in one transaction: the outbox row's
    /// new state, the attempt for the timeline, and a fallback row when the
    /// attempt hands the notification to another channel.
    fn record_attempt(
        &self,
        attempt: &Attempt,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records several delivery attempts in one transaction (one sync to
    /// disk for all): all of them when this returns `Ok`, none when it
    /// returns `Err`.
    fn record_attempts(
        &self,
        attempts: &[Attempt],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every delivery attempt for an incident, in order.
    fn deliveries(
        &self,
        incident: u64,
    ) -> impl Future<Output = Result<Vec<DeliveryRow>, StoreError>> + Send;

    /// Every acknowledgement link already used.
    fn used_links(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Whether the incident is over: resolved, or merged into one that is.
    /// An unknown incident is not over.
    fn incident_over(&self, id: u64) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Notifications decided and not yet sent or given up, per channel.
    fn outbox_pending(
        &self,
    ) -> impl Future<Output = Result<Vec<PendingSummary>, StoreError>> + Send;

    /// The used links that name these incidents, as (incident, link).
    fn used_links_of(
        &self,
        incidents: &[u64],
    ) -> impl Future<Output = Result<Vec<(u64, String)>, StoreError>> + Send;

    /// Whether this acknowledgement link (its id) has been used.
    fn link_used(&self, link: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The daemon's own events newest first.
    fn system_events(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<SystemEvent>, StoreError>> + Send;

    /// Claims these pending notifications for this process until `until`:
    /// returns the keys it won. Another process sharing the store does not
    /// get them until the claim runs out or the attempt is recorded. A
    /// store with one process wins them all.
    fn claim(
        &self,
        keys: &[String],
        until: Ts,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let _ = until;
        async move { Ok(keys.to_vec()) }
    }

    /// Makes every later commit fail unless `epoch` is still the
    /// cluster's leadership epoch (a fencing token), or, with `None`,
    /// commits without the check. A store of one process has no cluster
    /// and ignores it.
    fn fence(&self, epoch: Option<i64>) {
        let _ = epoch;
    }

    /// Every logged input in `seq` order, for replay.
    fn inputs(&self) -> impl Future<Output = Result<Vec<StoredInput>, StoreError>> + Send {
        async move {
            let mut all = Vec::new();
            loop {
                let after = all.last().map_or(0, |i: &StoredInput| i.seq);
                let page = self.inputs_after(after, REPLAY_PAGE).await?;
                let done = page.len() < REPLAY_PAGE as usize;
                all.extend(page);
                if done {
                    return Ok(all);
                }
            }
        }
    }
}

/// Everything one commit writes. Within a batch, inputs get increasing
/// `seq`s in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub inputs: Vec<Input>,
    pub rejected: Vec<Rejection>,
    pub alarms: Vec<AlarmRow>,
    pub incidents: Vec<IncidentRow>,
    pub timeline: Vec<TimelineAppend>,
    pub notifications: Vec<Queued>,
    pub events: Vec<SystemEvent>,
    /// `meta` values to set.
    pub meta: Vec<(String, String)>,
    /// Acknowledgement links used in this batch.
    pub used_links: Vec<UsedLink>,
    /// Rows of the cluster's shared inbox this batch took in (several
    /// instances on PostgreSQL): marked done in the same transaction, so
    /// that none is taken in twice. Always empty on SQLite.
    pub forwarded: Vec<i64>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
            && self.rejected.is_empty()
            && self.alarms.is_empty()
            && self.incidents.is_empty()
            && self.timeline.is_empty()
            && self.notifications.is_empty()
            && self.events.is_empty()
            && self.meta.is_empty()
            && self.used_links.is_empty()
            && self.forwarded.is_empty()
    }

    /// Adds an input; returns its index in [`CommitOutcome::inputs`].
    pub fn input(
        &mut self,
        at: Ts,
        source: Source,
        dedup_key: Option<String>,
        event: Event,
    ) -> usize {
        self.inputs.push(Input {
            at,
            source,
            dedup_key,
            event,
        });
        self.inputs.len() - 1
    }

    pub fn rejected(&mut self, r: Rejection) {
        self.rejected.push(r);
    }

    pub fn incident(&mut self, row: IncidentRow) {
        self.incidents.push(row);
    }

    /// Adds an incident's timeline entries from index `from` of its
    /// timeline on (entries already stored are skipped).
    pub fn timeline(&mut self, incident: u64, from: usize, entries: Vec<TimelineEntry>) {
        self.timeline.push(TimelineAppend {
            incident,
            from,
            entries,
        });
    }

    /// Queues a notification decided at `at`, due at once.
    pub fn notification(&mut self, at: Ts, notification: Notification) {
        self.notifications.push(Queued { at, notification });
    }
}

/// An input for the engine, logged for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub at: Ts,
    pub source: Source,
    /// A business key: an input with a key already stored is a duplicate.
    pub dedup_key: Option<String>,
    pub event: Event,
}

/// Input that was rejected, with its raw bytes (truncated to [`RAW_LIMIT`]
/// when stored).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub at: Ts,
    pub source: Source,
    pub reason: RejectReason,
    pub detail: String,
    pub raw: Vec<u8>,
    /// A rejection with a key already stored is not stored again.
    pub dedup_key: Option<String>,
}

/// Entries of an incident's timeline, from index `from` on.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineAppend {
    pub incident: u64,
    pub from: usize,
    pub entries: Vec<TimelineEntry>,
}

/// A notification for the outbox, decided at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub at: Ts,
    pub notification: Notification,
}

/// An accepted alarm state change. `id` is ignored when written.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmRow {
    pub id: u64,
    pub at: Ts,
    pub source: Source,
    pub component: String,
    pub kind: String,
    pub state: AlarmState,
    pub severity: AlarmSeverity,
    pub key: String,
    pub message: Option<String>,
}

/// Something that happened to the daemon itself, such as a broker that
/// lost our session. `id` is ignored when written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemEvent {
    pub id: u64,
    pub at: Ts,
    pub kind: String,
    pub detail: String,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Sent,
    /// Failed; tried again at `next_attempt`.
    Retried,
    /// Failed for good, with no fallback.
    Failed,
    /// Failed for good on this channel; the fallback row takes over.
    Fallback,
    /// Not sent, and no longer tried: the incident is over and the
    /// message was about it being open.
    Dropped,
}

impl AttemptOutcome {
    /// The `outcome` label of `beredskab_notifications_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Sent => "sent",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Fallback => "fallback",
            AttemptOutcome::Dropped => "dropped",
        }
    }
}

/// The pending part of the outbox for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSummary {
    pub channel: String,
    /// Rows not yet sent or given up.
    pub pending: u64,
    /// When the oldest of them was decided.
    pub oldest: Ts,
}

/// One delivery attempt, as the notifier records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The outbox row's key.
    pub key: String,
    pub incident: u64,
    pub at: Ts,
    pub channel: String,
    pub person: String,
    pub outcome: AttemptOutcome,
    /// What happened, for the timeline ("sent", "gateway answered 503", …).
    pub detail: String,
    /// For `Retried`: when to try again.
    pub next_attempt: Option<Ts>,
    /// For `Fallback`: the row that replaces this one (a new key).
    pub fallback: Option<OutboxRow>,
}

/// A recorded delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub key: String,
    pub incident: u64,
    pub at: Ts,
    pub channel: String,
    pub person: String,
    pub outcome: String,
    pub detail: String,
}

/// An acknowledgement link that has been used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedLink {
    /// The link's identity (a hash of its token).
    pub link: String,
    pub at: Ts,
    pub incident: u64,
    pub person: String,
}

/// A stored engine snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub at: Ts,
    /// The seq of the last input the snapshot includes (0: none).
    pub after_seq: u64,
    /// JSON of `engine::Snapshot`.
    pub body: String,
}

/// What a commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// One per [`Batch::inputs`], in the same order.
    pub inputs: Vec<InputOutcome>,
    /// How many notifications were new to the outbox.
    pub queued: usize,
    /// Which of [`Batch::notifications`] were new to the outbox (their
    /// indices, in order): the ones to deliver, where a replay may have
    /// queued others before.
    pub new_notifications: Vec<usize>,
}

/// Whether an input was new; a duplicate must not be handed to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputOutcome {
    New {
        seq: u64,
    },
    /// The key was already stored, as input `seq`.
    Duplicate {
        seq: u64,
    },
}

impl InputOutcome {
    pub fn is_new(self) -> bool {
        matches!(self, InputOutcome::New { .. })
    }
}

/// A logged input read back for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredInput {
    pub seq: u64,
    pub at: Ts,
    pub source: Source,
    pub dedup_key: Option<String>,
    pub event: Event,
}

/// Which incidents a listing returns (SPEC §5 `state=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentFilter {
    /// Not resolved: open or acknowledged.
    Open,
    Resolved,
    /// Every incident, merged ones too.
    All,
}

/// An incident as stored: the fields of SPEC §5's incident JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    pub id: u64,
    pub state: IncidentState,
    pub severity: Severity,
    pub level: Level,
    /// The root component's id.
    pub root: String,
    /// Ids of every service it has affected, sorted.
    pub services: Vec<String>,
    pub opened_at: Ts,
    pub acknowledged_at: Option<Ts>,
    pub acknowledged_by: Option<String>,
    pub expected_s: i64,
    pub expected_end: Ts,
    pub expected_basis: Basis,
    pub resolved_at: Option<Ts>,
    pub resolved_by: Option<String>,
    /// When the generator's fuel runs out, once that is the binding limit.
    pub fuel_out: Option<Ts>,
    /// Where the crisis staff meets, once raised to crisis level.
    pub meeting_place: Option<String>,
}

impl IncidentRow {
    /// The row for an engine incident, with catalogue ids for its nodes.
    pub fn from_incident(inc: &Incident, cat: &Catalogue) -> IncidentRow {
        let mut services: Vec<String> = inc
            .services
            .keys()
            .map(|&s| cat.node(s).id.clone())
            .collect();
        services.sort();
        IncidentRow {
            id: inc.id.0,
            state: inc.state,
            severity: inc.severity,
            level: inc.level,
            root: cat.node(inc.root).id.clone(),
            services,
            opened_at: inc.opened,
            acknowledged_at: inc.acknowledged_at,
            acknowledged_by: inc.acknowledged_by.clone(),
            expected_s: inc.expected_s,
            expected_end: inc.expected_end(),
            expected_basis: inc.basis,
            resolved_at: inc.resolved_at,
            resolved_by: inc.resolved_by.clone(),
            fuel_out: inc.fuel_out,
            meeting_place: inc.meeting_place.clone(),
        }
    }
}

/// An incident with its timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentDetail {
    pub incident: IncidentRow,
    pub timeline: Vec<TimelineEntry>,
}

/// A rejected input as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    pub id: u64,
    pub at: Ts,
    pub source: Source,
    pub reason: RejectReason,
    pub detail: String,
    /// At most [`RAW_LIMIT`] bytes.
    pub raw: Vec<u8>,
    /// The length of the raw input before truncation.
    pub raw_len: u64,
}

/// A resolved incident's duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub incident: u64,
    pub root: String,
    pub duration_s: i64,
    pub resolved_at: Ts,
}

/// Where a notification stands in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Sent,
    /// Given up after its attempts.
    Failed,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
        }
    }
}

/// A notification in the outbox: everything the sender needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// The idempotency key: pass it to gateways, use it as the Message-ID.
    pub key: String,
    pub incident: u64,
    /// The person's id in the catalogue.
    pub person: String,
    pub role: Option<String>,
    pub channel: String,
    pub reason: Reason,
    pub text: String,
    pub created_at: Ts,
    pub state: OutboxState,
    pub attempts: u32,
    pub next_attempt: Ts,
    pub last_error: Option<String>,
    pub sent_at: Option<Ts>,
}

// Codes of engine enums as stored. The engine has `as_str` for each; the
// way back is here, next to the only code that reads them.

const SOURCES: [Source; 4] = [Source::Mqtt, Source::Probe, Source::Http, Source::Manual];
const REASONS: [RejectReason; 6] = [
    RejectReason::UnknownTopic,
    RejectReason::UnknownComponent,
    RejectReason::BadPayload,
    RejectReason::BadState,
    RejectReason::Oversized,
    RejectReason::UnknownIncident,
];
const SEVERITIES: [Severity; 3] = [Severity::Minor, Severity::Major, Severity::Critical];
const LEVELS: [Level; 2] = [Level::Department, Level::Crisis];
const BASES: [Basis; 6] = [
    Basis::Manual,
    Basis::History,
    Basis::Kind,
    Basis::Default,
    Basis::Extended,
    Basis::Generator,
];
const ALARM_STATES: [AlarmState; 2] = [AlarmState::Firing, AlarmState::Cleared];
const ALARM_SEVERITIES: [AlarmSeverity; 2] = [AlarmSeverity::Warning, AlarmSeverity::Critical];
const OUTBOX_STATES: [OutboxState; 3] =
    [OutboxState::Pending, OutboxState::Sent, OutboxState::Failed];

/// The variant of `all` whose code is `code`.
/// A row for the outbox, as each backend inserts it.
struct Queue<'a> {
    key: &'a str,
    incident: u64,
    person: &'a str,
    role: Option<&'a str>,
    channel: &'a str,
    reason: &'a str,
    text: &'a str,
    created: Ts,
    due: Ts,
}

fn encode<T: serde::Serialize + ?Sized>(what: &'static str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|source| StoreError::Encode { what, source })
}

fn to_i64(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn to_u64(table: &'static str, column: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        table,
        column,
        detail: format!("negative value {v}"),
    })
}

fn decode<T: Copy>(
    all: &[T],
    code_of: fn(T) -> &'static str,
    code: &str,
    table: &'static str,
    column: &'static str,
) -> Result<T, StoreError> {
    all.iter()
        .copied()
        .find(|&v| code_of(v) == code)
        .ok_or_else(|| StoreError::Corrupt {
            table,
            column,
            detail: format!("unknown code {code:?}"),
        })
}

/// The state as stored: `merged` keeps its target in `merged_into`.
fn decode_state(code: &str, merged_into: Option<u64>) -> Result<IncidentState, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        table: "incidents",
        column: "state",
        detail,
    };
    match (code, merged_into) {
        ("open", _) => Ok(IncidentState::Open),
        ("acknowledged", _) => Ok(IncidentState::Acknowledged),
        ("resolved", _) => Ok(IncidentState::Resolved),
        ("merged", Some(into)) => Ok(IncidentState::Merged(IncidentId(into))),
        ("merged", None) => Err(corrupt("merged without merged_into".to_owned())),
        (other, _) => Err(corrupt(format!("unknown code {other:?}"))),
    }
}

/// `raw` cut to [`RAW_LIMIT`] bytes.
fn truncate_raw(raw: &[u8]) -> &[u8] {
    &raw[..raw.len().min(RAW_LIMIT)]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::load;
    use crate::engine::{AlarmInput, AlarmSeverity, AlarmState, Engine};

    #[test]
    fn store_codes_round_trip() {
        for s in SOURCES {
            assert_eq!(
                decode(&SOURCES, Source::as_str, s.as_str(), "t", "c").ok(),
                Some(s)
            );
        }
        for r in REASONS {
            assert_eq!(
                decode(&REASONS, RejectReason::as_str, r.as_str(), "t", "c").ok(),
                Some(r)
            );
        }
        for s in SEVERITIES {
            assert_eq!(
                decode(&SEVERITIES, Severity::as_str, s.as_str(), "t", "c").ok(),
                Some(s)
            );
        }
        for l in LEVELS {
            assert_eq!(
                decode(&LEVELS, Level::as_str, l.as_str(), "t", "c").ok(),
                Some(l)
            );
        }
        for b in BASES {
            assert_eq!(
                decode(&BASES, Basis::as_str, b.as_str(), "t", "c").ok(),
                Some(b)
            );
        }
        for o in OUTBOX_STATES {
            assert_eq!(
                decode(&OUTBOX_STATES, OutboxState::as_str, o.as_str(), "t", "c").ok(),
                Some(o)
            );
        }
        assert!(decode(&LEVELS, Level::as_str, "mayor", "t", "c").is_err());
        for st in [
            IncidentState::Open,
            IncidentState::Acknowledged,
            IncidentState::Resolved,
            IncidentState::Merged(IncidentId(7)),
        ] {
            let into = match st {
                IncidentState::Merged(i) => Some(i.0),
                _ => None,
            };
            assert_eq!(decode_state(st.as_str(), into).ok(), Some(st));
        }
        assert!(decode_state("merged", None).is_err());
    }

    #[test]
    fn store_truncates_raw_input() {
        assert_eq!(truncate_raw(b"abc"), b"abc");
        assert_eq!(truncate_raw(&vec![1u8; RAW_LIMIT + 10]).len(), RAW_LIMIT);
    }

    #[test]
    fn store_row_from_engine_incident() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/plan.toml");
        let loaded = load(&path).expect("the scenario plan loads");
        let cat = Arc::new(Catalogue::build(&loaded.config).expect("the scenario plan builds"));
        let mut engine = Engine::new(cat.clone());
        let alarm = |component: &str| {
            Event::Alarm(AlarmInput {
                component: component.to_owned(),
                kind: crate::config::AlarmKind::Server,
                state: AlarmState::Firing,
                severity: AlarmSeverity::Critical,
                source: Source::Http,
                message: None,
                key: None,
            })
        };
        engine.handle(Ts(1_000), alarm("srv-web")).expect("alarm");
        engine.handle(Ts(2_000), alarm("srv-mail")).expect("alarm");
        engine.handle(Ts(3_000), alarm("vm-vaert")).expect("alarm");
        let inc = engine.incident(IncidentId(1)).expect("incident 1 opened");
        let row = IncidentRow::from_incident(inc, &cat);
        assert_eq!(row.id, 1);
        assert_eq!(row.root, "vm-vaert");
        assert_eq!(row.services, ["mail", "web"]);
        assert_eq!(row.opened_at, Ts(1_000));
        assert_eq!(row.state, IncidentState::Open);
        assert_eq!(row.expected_end, Ts(1_000 + row.expected_s * 1000));
        let merged = engine.incident(IncidentId(2)).expect("incident 2 opened");
        let row = IncidentRow::from_incident(merged, &cat);
        assert_eq!(row.state, IncidentState::Merged(IncidentId(1)));
    }
}
