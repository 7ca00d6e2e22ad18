//! The stores on real databases, each test once on SQLite (a file) and
//! once on PostgreSQL (a database of its own, see `common::pg`): batches
//! round-trip, duplicates are stored once, the outbox moves through its
//! states, reopening keeps everything, the log replays to the same
//! incidents, and a writer killed with SIGKILL mid-stream loses no commit
//! it reported. PostgreSQL's own: claims share one outbox between
//! instances, two instances migrate once, and a read-only connection.
//!
//! The crash test runs this test binary again as the writer (see
//! [`crash_child`]), so the child is real code in a separate process.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use beredskab::catalogue::Catalogue;
use beredskab::clock::wall_now;
use beredskab::config::{AlarmKind, load};
use beredskab::engine::{
    AlarmInput, AlarmSeverity, AlarmState, Basis, Effect, Engine, Event, IncidentId, IncidentState,
    Level, Notification, ProbeResult, Reason, RejectReason, Severity, Source, TimelineEntry, Ts,
};
use beredskab::store::{
    Attempt, AttemptOutcome, Batch, IncidentFilter, IncidentRow, InputOutcome, META_WATERMARK,
    OutboxState, PgStore, RAW_LIMIT, Rejection, SqliteStore, Store, StoreError, SystemEvent,
    UsedLink,
};
use common::pg::TestDb;
use sqlx::Connection;

/// A backend under test: a database of one test, and the store on it.
trait Backend: Sized {
    type S: Store + Clone + 'static;
    /// An empty database no other test uses.
    async fn create(name: &str) -> Self;
    /// Opens the store on it, migrating.
    async fn open(&self) -> Result<Self::S, StoreError>;
    async fn schema_version(store: &Self::S) -> i64;
    fn latest_schema_version() -> i64;
    /// Records schema version `v` in the database, as another build would.
    async fn set_schema_version(&self, v: i64);
    /// The backend's own consistency check, where it has one.
    async fn check(store: &Self::S);
    async fn close(store: &Self::S);
    /// Where the crash test's child writes: [`CHILD_VAR`]'s value.
    fn child_target(&self) -> String;
    /// How many rows `table` holds, read beside the store.
    async fn rows(&self, table: &str) -> i64;
}

/// SQLite: a file in a fresh directory.
struct Sqlite(PathBuf);

impl Backend for Sqlite {
    type S = SqliteStore;

    async fn create(name: &str) -> Sqlite {
        Sqlite(temp_db(name))
    }

    async fn open(&self) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&self.0).await
    }

    async fn schema_version(store: &SqliteStore) -> i64 {
        store.schema_version().await.expect("version")
    }

    fn latest_schema_version() -> i64 {
        SqliteStore::latest_schema_version()
    }

    async fn set_schema_version(&self, v: i64) {
        let url = format!("sqlite://{}", self.0.display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("raw connection");
        sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA user_version = {v}")))
            .execute(&mut conn)
            .await
            .expect("set version");
        conn.close().await.expect("close");
    }

    async fn check(store: &SqliteStore) {
        store.integrity_check().await.expect("integrity");
    }

    async fn close(store: &SqliteStore) {
        store.close().await;
    }

    fn child_target(&self) -> String {
        format!("sqlite:{}", self.0.display())
    }

    async fn rows(&self, table: &str) -> i64 {
        let url = format!("sqlite://{}", self.0.display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("raw connection");
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}

/// PostgreSQL: a database of its own, dropped with the test.
struct Pg(TestDb);

impl Backend for Pg {
    type S = PgStore;

    async fn create(_name: &str) -> Pg {
        Pg(TestDb::create().await)
    }

    async fn open(&self) -> Result<PgStore, StoreError> {
        PgStore::connect(&self.0.url).await
    }

    async fn schema_version(store: &PgStore) -> i64 {
        store.schema_version().await.expect("version")
    }

    fn latest_schema_version() -> i64 {
        PgStore::latest_schema_version()
    }

    async fn set_schema_version(&self, v: i64) {
        let mut conn = sqlx::PgConnection::connect(&self.0.url)
            .await
            .expect("raw connection");
        sqlx::query("DELETE FROM schema_version")
            .execute(&mut conn)
            .await
            .expect("clear version");
        if v > 0 {
            sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                .bind(v)
                .execute(&mut conn)
                .await
                .expect("set version");
        }
        conn.close().await.expect("close");
    }

    /// PostgreSQL checks its own pages; a query answering is the check.
    async fn check(store: &PgStore) {
        store.ping().await.expect("ping");
    }

    async fn close(store: &PgStore) {
        store.close().await;
    }

    fn child_target(&self) -> String {
        self.0.url.clone()
    }

    async fn rows(&self, table: &str) -> i64 {
        let mut conn = sqlx::PgConnection::connect(&self.0.url)
            .await
            .expect("raw connection");
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}

/// A fresh database and the store opened on it.
async fn fresh<B: Backend>(name: &str) -> (B, B::S) {
    let db = B::create(name).await;
    let store = db.open().await.expect("open");
    (db, store)
}

/// Runs each generic test once per backend, as `NAME::sqlite` and
/// `NAME::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name::<super::Sqlite>().await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name::<super::Pg>().await
            }
        }
    )*};
}

on_both!(
    a_batch_round_trips,
    rejected_input_is_kept_truncated,
    a_dedup_key_is_stored_once,
    the_outbox_queues_once_and_tracks_delivery,
    reopening_keeps_everything,
    the_log_replays_to_the_same_incidents,
    a_writer_killed_mid_stream_loses_no_reported_commit,
    throughput_of_batched_commits,
    a_used_link_is_found_by_its_id,
    attempts_recorded_together_are_all_or_nothing,
    a_lone_store_wins_every_claim,
    snapshots_meta_alarms_and_events_round_trip,
    merge_chains_and_fallbacks,
    a_commit_dropped_half_way_is_all_or_nothing,
);

/// 2026-01-01T00:00:00Z, the tests' t = 0.
const T0: Ts = Ts(1_767_225_600_000);

/// The env var that turns this test binary into the crash test's writer.
const CHILD_VAR: &str = "BEREDSKAB_STORE_CHILD";

/// Inputs per commit in the crash test.
const CRASH_BATCH: usize = 5;

fn at(secs: i64) -> Ts {
    Ts(T0.0 + secs * 1000)
}

/// A fresh directory for one test's database files.
fn temp_db(name: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "store-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir.join("beredskab.db")
}

fn alarm(component: &str, state: AlarmState) -> Event {
    Event::Alarm(AlarmInput {
        component: component.to_owned(),
        kind: AlarmKind::Server,
        state,
        severity: AlarmSeverity::Critical,
        source: Source::Http,
        message: Some("disk full".to_owned()),
        key: None,
    })
}

/// One event of every kind.
fn every_kind_of_event() -> Vec<Event> {
    vec![
        Event::Mqtt {
            topic: "raadhus/serverrum/brand".to_owned(),
            payload: br#"{"state":"alarm","message":"r\u00f8g"}"#.to_vec(),
        },
        alarm("srv-web", AlarmState::Firing),
        Event::Probe {
            id: "generator".to_owned(),
            result: ProbeResult {
                status: Some(200),
                body: Some(br#"{"running":true,"fuel_percent":41.5}"#.to_vec()),
                error: None,
                ..ProbeResult::default()
            },
        },
        Event::Probe {
            id: "core-switch".to_owned(),
            result: ProbeResult {
                status: None,
                body: None,
                error: Some("timed out".to_owned()),
                ..ProbeResult::default()
            },
        },
        Event::Ack {
            incident: IncidentId(1),
            by: "p-drift".to_owned(),
            note: Some("on it".to_owned()),
        },
        Event::Eta {
            incident: IncidentId(1),
            expected: Duration::from_millis(3 * 3_600_000 + 1),
            by: None,
            from_now: false,
        },
        Event::Note {
            incident: IncidentId(1),
            by: "p-drift".to_owned(),
            text: "vendor called".to_owned(),
            decision: true,
            public: false,
        },
        Event::SetLevel {
            incident: IncidentId(1),
            level: Level::Crisis,
            by: "p-itchef".to_owned(),
        },
        Event::Resolve {
            incident: IncidentId(1),
            by: "p-drift".to_owned(),
            note: None,
        },
    ]
}

fn incident_row(id: u64, state: IncidentState, opened: Ts) -> IncidentRow {
    IncidentRow {
        id,
        state,
        severity: Severity::Major,
        level: Level::Department,
        root: format!("srv-{id}"),
        services: vec!["mail".to_owned(), "web".to_owned()],
        opened_at: opened,
        acknowledged_at: (state == IncidentState::Acknowledged).then_some(opened.plus_secs(60)),
        acknowledged_by: (state == IncidentState::Acknowledged).then(|| "p-drift".to_owned()),
        expected_s: 3600,
        expected_end: opened.plus_secs(3600),
        expected_basis: Basis::Kind,
        resolved_at: (state == IncidentState::Resolved).then_some(opened.plus_secs(1800)),
        resolved_by: None,
        fuel_out: None,
        meeting_place: id.is_multiple_of(2).then(|| "Annexet, 2. sal".to_owned()),
    }
}

trait PlusSecs {
    fn plus_secs(self, s: u64) -> Ts;
}

impl PlusSecs for Ts {
    fn plus_secs(self, s: u64) -> Ts {
        self.plus(Duration::from_secs(s))
    }
}

fn entry(secs: i64, kind: &str, text: &str, by: Option<&str>) -> TimelineEntry {
    TimelineEntry {
        at: at(secs),
        kind: kind.to_owned(),
        text: text.to_owned(),
        by: by.map(str::to_owned),
        // Notes written for the status page keep their mark.
        public: kind == "note" && text.contains("vendor"),
    }
}

/// A successful SMS to p-drift for the outbox row `key`.
fn sent_attempt(key: &str, incident: u64, at: Ts) -> Attempt {
    Attempt {
        key: key.into(),
        incident,
        at,
        channel: "sms".into(),
        person: "p-drift".into(),
        outcome: AttemptOutcome::Sent,
        detail: "sent".into(),
        next_attempt: None,
        fallback: None,
    }
}

fn notification(key: &str, incident: u64) -> Notification {
    Notification {
        incident: IncidentId(incident),
        to: beredskab::catalogue::PersonId(0),
        person: "p-drift".to_owned(),
        role: Some("drift-leder".to_owned()),
        channel: "sms".to_owned(),
        reason: Reason::Step("open".to_owned()),
        text: "Incident 1: web is down".to_owned(),
        key: key.to_owned(),
    }
}

async fn a_batch_round_trips<B: Backend>() {
    let (_db, store) = fresh::<B>("round-trip").await;
    let events = every_kind_of_event();

    let mut batch = Batch::new();
    for (i, e) in events.iter().enumerate() {
        let key = (i % 2 == 0).then(|| format!("key-{i}"));
        batch.input(at(i as i64), Source::Mqtt, key, e.clone());
    }
    // Ids 1..=6: odd ones resolved, 4 acknowledged, the rest open; 6 merged.
    for id in 1..=5u64 {
        let state = match id {
            1 | 3 | 5 => IncidentState::Resolved,
            4 => IncidentState::Acknowledged,
            _ => IncidentState::Open,
        };
        batch.incident(incident_row(id, state, at(id as i64 * 100)));
    }
    batch.incident(incident_row(
        6,
        IncidentState::Merged(IncidentId(2)),
        at(600),
    ));
    // The timeline before its incident in the batch: the foreign key is
    // checked at commit.
    batch.timeline(
        2,
        0,
        vec![
            entry(200, "opened", "srv-2 down", None),
            entry(260, "ack", "acknowledged", Some("p-drift")),
        ],
    );
    let outcome = store.commit(&batch).await.expect("commit");
    assert_eq!(outcome.inputs.len(), events.len());
    assert!(outcome.inputs.iter().all(|o| o.is_new()));

    // Inputs come back in order with identical events, times and keys.
    let stored = store.inputs().await.expect("inputs");
    assert_eq!(stored.len(), events.len());
    for (i, (s, e)) in stored.iter().zip(&events).enumerate() {
        assert_eq!(&s.event, e, "input {i}");
        assert_eq!(s.at, at(i as i64));
        assert_eq!(s.source, Source::Mqtt);
        assert_eq!(s.dedup_key, (i % 2 == 0).then(|| format!("key-{i}")));
    }
    let seqs: Vec<u64> = stored.iter().map(|s| s.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq order: {seqs:?}");
    let page = store.inputs_after(seqs[2], 3).await.expect("page");
    assert_eq!(page.iter().map(|s| s.seq).collect::<Vec<_>>(), &seqs[3..6]);

    // Incidents: newest first, filtered, limited, paged with `before`.
    let ids = |rows: Vec<IncidentRow>| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    let list = |f, limit, before| store.incidents(f, limit, before);
    assert_eq!(
        ids(list(IncidentFilter::All, 100, None).await.expect("all")),
        [6, 5, 4, 3, 2, 1]
    );
    assert_eq!(
        ids(list(IncidentFilter::Open, 100, None).await.expect("open")),
        [4, 2]
    );
    assert_eq!(
        ids(list(IncidentFilter::Resolved, 100, None)
            .await
            .expect("resolved")),
        [5, 3, 1]
    );
    assert_eq!(
        ids(list(IncidentFilter::All, 2, None).await.expect("limit")),
        [6, 5]
    );
    assert_eq!(
        ids(list(IncidentFilter::All, 2, Some(5)).await.expect("before")),
        [4, 3]
    );
    assert_eq!(
        ids(list(IncidentFilter::Resolved, 10, Some(3))
            .await
            .expect("before")),
        [1]
    );
    let all = list(IncidentFilter::All, 100, None).await.expect("all");
    assert_eq!(
        all[0],
        incident_row(6, IncidentState::Merged(IncidentId(2)), at(600))
    );
    assert_eq!(
        all[2],
        incident_row(4, IncidentState::Acknowledged, at(400))
    );

    // The timeline in order; writing an overlapping range again appends
    // only what is new.
    let mut batch = Batch::new();
    batch.timeline(
        2,
        1,
        vec![
            entry(260, "ack", "acknowledged", Some("p-drift")),
            entry(300, "note", "vendor called", Some("p-drift")),
        ],
    );
    batch.incident(incident_row(2, IncidentState::Acknowledged, at(200)));
    store.commit(&batch).await.expect("commit timeline");
    let detail = store.incident(2).await.expect("read").expect("incident 2");
    assert_eq!(detail.incident.state, IncidentState::Acknowledged);
    assert_eq!(
        detail.timeline,
        [
            entry(200, "opened", "srv-2 down", None),
            entry(260, "ack", "acknowledged", Some("p-drift")),
            entry(300, "note", "vendor called", Some("p-drift")),
        ]
    );
    assert!(store.incident(99).await.expect("read").is_none());

    // History: the resolved incidents' durations by root.
    let history = store.history().await.expect("history");
    assert_eq!(
        history
            .iter()
            .map(|h| (h.incident, h.duration_s))
            .collect::<Vec<_>>(),
        [(1, 1800), (3, 1800), (5, 1800)]
    );

    // A timeline for an incident never stored fails the whole batch.
    let mut batch = Batch::new();
    batch.input(
        at(99),
        Source::Manual,
        Some("lost?".to_owned()),
        alarm("x", AlarmState::Firing),
    );
    batch.timeline(42, 0, vec![entry(1, "note", "orphan", None)]);
    assert!(matches!(store.commit(&batch).await, Err(StoreError::Db(_))));
    assert_eq!(
        store.inputs().await.expect("inputs").len(),
        events.len(),
        "rolled back"
    );
    // The writer is usable again after the failed commit.
    let mut batch = Batch::new();
    batch.input(
        at(99),
        Source::Manual,
        Some("lost?".to_owned()),
        alarm("x", AlarmState::Firing),
    );
    assert!(
        store
            .commit(&batch)
            .await
            .expect("commit after failure")
            .inputs[0]
            .is_new()
    );
}

async fn rejected_input_is_kept_truncated<B: Backend>() {
    let (_db, store) = fresh::<B>("rejected").await;
    let big = vec![b'x'; RAW_LIMIT * 3];
    let mut batch = Batch::new();
    batch.rejected(Rejection {
        at: at(1),
        source: Source::Mqtt,
        reason: RejectReason::Oversized,
        detail: "payload of 12288 bytes".to_owned(),
        raw: big.clone(),
        dedup_key: Some("mqtt:pkt-1".to_owned()),
    });
    batch.rejected(Rejection {
        at: at(2),
        source: Source::Http,
        reason: RejectReason::BadPayload,
        detail: "expected value at line 1 column 1".to_owned(),
        raw: b"{nope".to_vec(),
        dedup_key: None,
    });
    store.commit(&batch).await.expect("commit");
    // Redelivered: the keyed one is not kept twice, the unkeyed one is.
    store.commit(&batch).await.expect("commit again");
    let rows = store.rejected(10, None).await.expect("rejected");
    assert_eq!(rows.len(), 3);
    let oversized: Vec<_> = rows
        .iter()
        .filter(|r| r.reason == RejectReason::Oversized)
        .collect();
    assert_eq!(oversized.len(), 1);
    assert_eq!(oversized[0].raw, &big[..RAW_LIMIT]);
    assert_eq!(oversized[0].raw_len, big.len() as u64);
    assert_eq!(rows[0].raw, b"{nope");
    assert_eq!(rows[0].source, Source::Http);
    let older = store.rejected(10, Some(rows[0].id)).await.expect("page");
    assert_eq!(older.len(), 2);
}

async fn a_dedup_key_is_stored_once<B: Backend>() {
    let (_db, store) = fresh::<B>("dedup").await;
    let key = || Some("mqtt:raadhus/serverrum/brand:firing:42".to_owned());
    let fire = alarm("serverrum", AlarmState::Firing);

    // Twice in one batch, with an unkeyed input between.
    let mut batch = Batch::new();
    batch.input(at(0), Source::Mqtt, key(), fire.clone());
    batch.input(at(0), Source::Probe, None, alarm("a", AlarmState::Firing));
    batch.input(at(1), Source::Mqtt, key(), fire.clone());
    batch.input(at(1), Source::Probe, None, alarm("a", AlarmState::Firing));
    let outcome = store.commit(&batch).await.expect("commit");
    let InputOutcome::New { seq } = outcome.inputs[0] else {
        panic!("first is new: {outcome:?}");
    };
    assert!(outcome.inputs[1].is_new());
    assert_eq!(outcome.inputs[2], InputOutcome::Duplicate { seq });
    assert!(
        outcome.inputs[3].is_new(),
        "inputs without a key are never duplicates"
    );

    // Again in a later batch.
    let mut batch = Batch::new();
    batch.input(at(5), Source::Mqtt, key(), fire.clone());
    let outcome = store.commit(&batch).await.expect("commit");
    assert_eq!(outcome.inputs, [InputOutcome::Duplicate { seq }]);

    let stored = store.inputs().await.expect("inputs");
    assert_eq!(stored.len(), 3);
    assert_eq!(stored.iter().filter(|s| s.dedup_key == key()).count(), 1);
    assert_eq!(stored[0].at, at(0), "the first copy is kept");
}

async fn the_outbox_queues_once_and_tracks_delivery<B: Backend>() {
    let (_db, store) = fresh::<B>("outbox").await;
    let mut batch = Batch::new();
    batch.notification(at(10), notification("1/open/0/p-drift/sms", 1));
    batch.notification(at(10), notification("1/open/0/p-drift/sms", 1));
    batch.notification(at(10), notification("1/open/0/p-support/sms", 1));
    assert_eq!(store.commit(&batch).await.expect("commit").queued, 2);
    // A replay after a crash queues the same notification again: ignored.
    let mut batch = Batch::new();
    batch.notification(at(99), notification("1/open/0/p-drift/sms", 1));
    assert_eq!(store.commit(&batch).await.expect("commit").queued, 0);

    assert!(
        store
            .due_notifications(at(9), 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(store.next_due().await.expect("next"), Some(at(10)));
    let due = store.due_notifications(at(10), 10).await.expect("due");
    assert_eq!(due.len(), 2);
    let first = &due[0];
    assert_eq!(first.key, "1/open/0/p-drift/sms");
    assert_eq!(first.created_at, at(10), "the first copy is kept");
    assert_eq!(
        (first.person.as_str(), first.role.as_deref()),
        ("p-drift", Some("drift-leder"))
    );
    assert_eq!(
        (first.channel.as_str(), first.reason.as_str()),
        ("sms", "open")
    );
    assert_eq!(first.text, "Incident 1: web is down");
    assert_eq!((first.state, first.attempts), (OutboxState::Pending, 0));
    assert_eq!(
        store.due_notifications(at(10), 1).await.expect("due").len(),
        1,
        "limit"
    );

    // A failure with a retry time: due again only then.
    store
        .mark_failed(&first.key, "gateway said 503", Some(at(70)))
        .await
        .expect("failed");
    let due = store.due_notifications(at(60), 10).await.expect("due");
    assert_eq!(
        due.iter().map(|d| d.key.as_str()).collect::<Vec<_>>(),
        ["1/open/0/p-support/sms"]
    );
    let due = store.due_notifications(at(70), 10).await.expect("due");
    assert_eq!(due.len(), 2);
    let retried = due.iter().find(|d| d.key == first.key).expect("retried");
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.last_error.as_deref(), Some("gateway said 503"));

    // Sent: never due again, and a late failure report does not undo it.
    store.mark_sent(&first.key, at(71)).await.expect("sent");
    store
        .mark_sent(&first.key, at(75))
        .await
        .expect("sent twice is harmless");
    store
        .mark_failed(&first.key, "late", Some(at(80)))
        .await
        .expect("late failure");
    // Given up: failed, never due again.
    store
        .mark_failed("1/open/0/p-support/sms", "no route", None)
        .await
        .expect("give up");
    assert!(
        store
            .due_notifications(at(1_000_000), 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(store.next_due().await.expect("next"), None);

    let all = store.notifications(1).await.expect("notifications");
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].state, all[0].attempts, all[0].sent_at),
        (OutboxState::Sent, 2, Some(at(71)))
    );
    assert_eq!((all[1].state, all[1].attempts), (OutboxState::Failed, 1));
    assert_eq!(all[1].last_error.as_deref(), Some("no route"));

    assert!(matches!(
        store.mark_sent("nope", at(1)).await,
        Err(StoreError::UnknownNotification(k)) if k == "nope"
    ));
    assert!(matches!(
        store.mark_failed("nope", "x", None).await,
        Err(StoreError::UnknownNotification(_))
    ));
}

async fn reopening_keeps_everything<B: Backend>() {
    let (db, store) = fresh::<B>("reopen").await;
    assert_eq!(B::schema_version(&store).await, B::latest_schema_version());
    let mut batch = Batch::new();
    for (i, e) in every_kind_of_event().into_iter().enumerate() {
        batch.input(at(i as i64), Source::Http, Some(format!("k{i}")), e);
    }
    batch.incident(incident_row(1, IncidentState::Open, at(0)));
    batch.timeline(1, 0, vec![entry(0, "opened", "srv-1 down", None)]);
    batch.notification(at(0), notification("n1", 1));
    store.commit(&batch).await.expect("commit");
    let inputs = store.inputs().await.expect("inputs");
    let incident = store.incident(1).await.expect("read");
    B::close(&store).await;

    // Twice, so the migrations run on a migrated database again.
    for _ in 0..2 {
        let store = db.open().await.expect("reopen");
        assert_eq!(B::schema_version(&store).await, B::latest_schema_version());
        assert_eq!(store.inputs().await.expect("inputs"), inputs);
        assert_eq!(store.incident(1).await.expect("read"), incident);
        assert_eq!(
            store.due_notifications(at(0), 10).await.expect("due").len(),
            1
        );
        B::check(&store).await;
        // A key from before the reopen is still a duplicate.
        let mut batch = Batch::new();
        batch.input(
            at(50),
            Source::Http,
            Some("k0".to_owned()),
            alarm("x", AlarmState::Cleared),
        );
        let outcome = store.commit(&batch).await.expect("commit");
        assert_eq!(
            outcome.inputs,
            [InputOutcome::Duplicate { seq: inputs[0].seq }]
        );
        B::close(&store).await;
    }

    // A database from a newer build is refused, not silently used.
    db.set_schema_version(99).await;
    assert!(matches!(
        db.open().await,
        Err(StoreError::NewerSchema { found: 99, .. })
    ));
}

/// A read-only opening (for `beredskab report`) reads what the writer
/// committed while the writer is still open, takes no write, creates no
/// missing file, and refuses a file of another schema version.
/// SQLite only: it opens a file; `pg_a_read_only_connection_…` is
/// PostgreSQL's.
#[tokio::test]
async fn a_read_only_store_reads_beside_the_writer_and_writes_nothing() {
    let path = temp_db("read-only");
    let missing = path.with_file_name("missing.db");
    assert!(SqliteStore::open_read_only(&missing).await.is_err());
    assert!(!missing.exists(), "a read-only open created the file");

    let writer = SqliteStore::open(&path).await.expect("open");
    let mut batch = Batch::new();
    batch.incident(incident_row(1, IncidentState::Open, at(0)));
    batch.timeline(1, 0, vec![entry(0, "opened", "srv-1 down", None)]);
    batch.notification(at(0), notification("n1", 1));
    writer.commit(&batch).await.expect("commit");

    let reader = SqliteStore::open_read_only(&path)
        .await
        .expect("open read-only");
    let detail = reader.incident(1).await.expect("read").expect("incident 1");
    assert_eq!(detail.timeline.len(), 1);
    assert_eq!(reader.notifications(1).await.expect("outbox").len(), 1);
    assert!(reader.deliveries(1).await.expect("deliveries").is_empty());
    let mut batch = Batch::new();
    batch.incident(incident_row(2, IncidentState::Open, at(5)));
    assert!(
        reader.commit(&batch).await.is_err(),
        "a read-only store wrote"
    );

    // The writer goes on beside the reader, and the reader sees it.
    let mut batch = Batch::new();
    batch.incident(incident_row(1, IncidentState::Resolved, at(0)));
    writer.commit(&batch).await.expect("commit beside a reader");
    let detail = reader.incident(1).await.expect("read").expect("incident 1");
    assert_eq!(detail.incident.state, IncidentState::Resolved);
    reader.close().await;
    writer.close().await;

    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("raw connection");
    sqlx::query("PRAGMA user_version = 1")
        .execute(&mut conn)
        .await
        .expect("set version");
    conn.close().await.expect("close");
    assert!(matches!(
        SqliteStore::open_read_only(&path).await,
        Err(StoreError::OlderSchema { found: 1, .. })
    ));
}

/// While the store is open, what is committed reaches the database file
/// itself, not only its write-ahead log: the log is copied over beside the
/// commits, so it does not grow until a size where the writer would stop
/// to copy it inside a commit. SQLite only.
#[tokio::test]
async fn commits_reach_the_database_file_while_the_store_is_open() {
    let path = temp_db("checkpoint");
    let store = SqliteStore::open(&path).await.expect("open");
    // 40 snapshots of 100 KB each that do not compress away: the newest
    // two, over 200 KB, stay in the file.
    for i in 0..40u32 {
        let mut batch = Batch::new();
        let body: String = (0..100_000u32)
            .map(|j| char::from(b'a' + ((j.wrapping_mul(7919) ^ i) % 26) as u8))
            .collect();
        store
            .write_snapshot(at(i64::from(i)), 0, format!("\"{body}\"").into())
            .await
            .expect("snapshot");
        // A commit wakes the checkpointer, as the daemon's always follow.
        batch.meta.push(("round".to_owned(), i.to_string()));
        store.commit(&batch).await.expect("commit");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let size = std::fs::metadata(&path).expect("database file").len();
        if size >= 200_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the database file holds {size} bytes 20 s after 4 MB were committed: \
             the write-ahead log was not copied into it"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store
            .latest_snapshot()
            .await
            .expect("snapshot")
            .expect("one")
            .at,
        at(39)
    );
    store.close().await;
}

/// Runs the engine over `events`, ticking at each wakeup first, and calls
/// `effects` with each instant's effects.
fn drive(
    engine: &mut Engine,
    events: &[(Ts, Event)],
    mut effects: impl FnMut(&Engine, Ts, Option<&(Ts, Event)>, Vec<Effect>),
) {
    for ev in events {
        while let Some(w) = engine.next_wakeup().filter(|&w| w <= ev.0) {
            let fx = engine.tick(w);
            effects(engine, w, None, fx);
        }
        let fx = engine.handle(ev.0, ev.1.clone()).unwrap_or_default();
        effects(engine, ev.0, Some(ev), fx);
    }
}

async fn the_log_replays_to_the_same_incidents<B: Backend>() {
    let plan = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/plan.toml");
    let config = load(&plan).expect("plan loads").config;
    let cat = Arc::new(Catalogue::build(&config).expect("catalogue"));
    let events = vec![
        (at(0), alarm("srv-web", AlarmState::Firing)),
        (
            at(5),
            Event::Mqtt {
                topic: "no/such/topic".to_owned(),
                payload: b"ALARM".to_vec(),
            },
        ),
        (at(30), alarm("srv-mail", AlarmState::Firing)),
        (at(60), alarm("vm-vaert", AlarmState::Firing)),
        (
            at(700),
            Event::Ack {
                incident: IncidentId(1),
                by: "p-drift".to_owned(),
                note: None,
            },
        ),
        (
            at(900),
            Event::Eta {
                incident: IncidentId(1),
                expected: Duration::from_secs(7200),
                by: None,
                from_now: false,
            },
        ),
        (
            at(1000),
            Event::Ack {
                incident: IncidentId(77),
                by: "p-drift".to_owned(),
                note: None,
            },
        ),
        (at(4000), alarm("vm-vaert", AlarmState::Cleared)),
        (at(4000), alarm("srv-web", AlarmState::Cleared)),
        (at(4001), alarm("srv-mail", AlarmState::Cleared)),
    ];

    // The daemon's way: each input with the effects it caused, one commit.
    let (_db, store) = fresh::<B>("replay").await;
    let mut engine = Engine::new(cat.clone());
    let mut batches = Vec::new();
    let mut stored_len: HashMap<u64, usize> = HashMap::new();
    drive(&mut engine, &events, |engine, now, input, fx| {
        let mut batch = Batch::new();
        if let Some((t, e)) = input {
            batch.input(*t, Source::Http, None, e.clone());
        }
        for f in fx {
            match f {
                Effect::Notification(n) => batch.notification(now, n),
                Effect::Rejected {
                    source,
                    reason,
                    detail,
                } => batch.rejected(Rejection {
                    at: now,
                    source,
                    reason,
                    detail,
                    raw: Vec::new(),
                    dedup_key: None,
                }),
                _ => {}
            }
        }
        for inc in engine.incidents() {
            let from = stored_len.get(&inc.id.0).copied().unwrap_or(0);
            batch.incident(IncidentRow::from_incident(inc, &cat));
            batch.timeline(inc.id.0, from, inc.timeline[from..].to_vec());
            stored_len.insert(inc.id.0, inc.timeline.len());
        }
        batches.push(batch);
    });
    for b in batches {
        store.commit(&b).await.expect("commit");
    }
    let outbox: usize = store.notifications(1).await.expect("outbox").len();
    assert!(outbox > 0, "incident 1 notified someone");
    assert!(!store.rejected(10, None).await.expect("rejected").is_empty());

    // After a crash: replay the log through a fresh engine.
    let replayed: Vec<(Ts, Event)> = store
        .inputs()
        .await
        .expect("inputs")
        .into_iter()
        .map(|s| (s.at, s.event))
        .collect();
    assert_eq!(replayed, events);
    let mut fresh = Engine::new(cat.clone());
    let mut keys = HashSet::new();
    drive(&mut fresh, &replayed, |_, _, _, fx| {
        keys.extend(fx.into_iter().filter_map(|f| match f {
            Effect::Notification(n) => Some(n.key),
            _ => None,
        }));
    });
    let stored_rows = store
        .incidents(IncidentFilter::All, 100, None)
        .await
        .expect("incidents");
    assert!(!stored_rows.is_empty());
    for row in &stored_rows {
        let inc = fresh
            .incident(IncidentId(row.id))
            .expect("replayed incident");
        assert_eq!(&IncidentRow::from_incident(inc, &cat), row);
        let detail = store.incident(row.id).await.expect("read").expect("stored");
        assert_eq!(detail.timeline, inc.timeline, "incident {}", row.id);
    }
    assert_eq!(
        stored_rows.iter().find(|r| r.id == 1).map(|r| r.state),
        Some(IncidentState::Resolved)
    );
    // The replay decides exactly the notifications already queued.
    let queued: HashSet<String> = store
        .notifications(1)
        .await
        .expect("outbox")
        .into_iter()
        .map(|n| n.key)
        .collect();
    let replayed_1: HashSet<String> = keys.into_iter().filter(|k| queued.contains(k)).collect();
    assert_eq!(replayed_1, queued);
}

/// The crash test's writer: commits batches of keyed inputs as fast as it
/// can and prints `committed KEY` for each only after its commit returned.
/// A plain `#[test]` that does nothing unless the parent set [`CHILD_VAR`].
#[test]
fn crash_child() {
    let Ok(target) = std::env::var(CHILD_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        match target.strip_prefix("sqlite:") {
            Some(path) => {
                let store = SqliteStore::open(PathBuf::from(path)).await;
                child_writes(store.expect("child open")).await;
            }
            None => child_writes(PgStore::connect(&target).await.expect("child open")).await,
        }
    });
}

/// The crash child's loop, on either store.
async fn child_writes<S: Store>(store: S) {
    {
        // Resume after what a previous child stored.
        let mut n = store.inputs().await.expect("child inputs").len();
        let started = Instant::now();
        let mut out = std::io::stdout().lock();
        // Bounded, in case the parent dies without killing us.
        while started.elapsed() < Duration::from_secs(60) {
            let mut batch = Batch::new();
            let keys: Vec<String> = (n..n + CRASH_BATCH).map(|i| format!("k{i}")).collect();
            for k in &keys {
                batch.input(
                    at(n as i64),
                    Source::Mqtt,
                    Some(k.clone()),
                    alarm(k, AlarmState::Firing),
                );
            }
            let id = (n / CRASH_BATCH) as u64 + 1;
            batch.incident(incident_row(id, IncidentState::Open, at(n as i64)));
            batch.timeline(id, 0, vec![entry(n as i64, "opened", &keys[0], None)]);
            batch.notification(at(n as i64), notification(&format!("n{id}"), id));
            let outcome = store.commit(&batch).await.expect("child commit");
            assert!(
                outcome.inputs.iter().all(|o| o.is_new()),
                "fresh keys are new"
            );
            for k in &keys {
                writeln!(out, "committed {k}").expect("child stdout");
            }
            out.flush().expect("child stdout");
            n += CRASH_BATCH;
        }
    }
}

/// Starts a writer child, reads what it reports committed, and kills it
/// with SIGKILL after `commits` commits. Returns the keys it reported.
fn run_and_kill_child(target: &str, commits: usize) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_VAR, target)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut reported = Vec::new();
    while reported.len() < commits * CRASH_BATCH {
        let line = lines
            .next()
            .expect("the child stopped before it was killed")
            .expect("read child");
        if let Some(k) = line.strip_prefix("committed ") {
            reported.push(k.to_owned());
        }
    }
    // Right after reading a line the child is inside its next commit.
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait child");
    assert!(!status.success(), "killed, not finished: {status}");
    // Lines written before the kill are still in the pipe.
    for line in lines {
        if let Some(k) = line.expect("read child").strip_prefix("committed ") {
            reported.push(k.to_owned());
        }
    }
    reported
}

async fn a_writer_killed_mid_stream_loses_no_reported_commit<B: Backend>() {
    let db = B::create("crash").await;
    let mut reported_all: Vec<String> = Vec::new();
    for round in 0..3 {
        let commits = fastrand::usize(200..=500);
        let reported = run_and_kill_child(&db.child_target(), commits);
        reported_all.extend(reported);

        let store = db.open().await.expect("reopen after kill");
        B::check(&store).await;
        let stored = store.inputs().await.expect("inputs");
        let keys: Vec<&str> = stored
            .iter()
            .filter_map(|s| s.dedup_key.as_deref())
            .collect();
        // Commits are whole and in order: the stored keys are k0, k1, …
        // with no gap, no repeat, and a whole number of batches.
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(*k, format!("k{i}"), "round {round}: key {i}");
        }
        assert_eq!(
            keys.len() % CRASH_BATCH,
            0,
            "round {round}: a partial batch was stored"
        );
        // Everything reported is there, exactly once; at most the batch in
        // flight at the kill is stored without having been reported.
        let stored_set: HashSet<&str> = keys.iter().copied().collect();
        assert_eq!(stored_set.len(), keys.len());
        for k in &reported_all {
            assert!(
                stored_set.contains(k.as_str()),
                "round {round}: reported {k} is lost"
            );
        }
        let unreported = keys.len() - reported_all.len();
        assert!(
            unreported <= CRASH_BATCH,
            "round {round}: {unreported} unreported"
        );
        // The projections of each whole batch are there too.
        let incidents = store
            .incidents(IncidentFilter::All, 100_000, None)
            .await
            .expect("incidents");
        assert_eq!(incidents.len(), keys.len() / CRASH_BATCH);
        eprintln!(
            "crash round {round}: killed after {} reported keys, {} stored",
            reported_all.len(),
            keys.len()
        );
        // Reported keys redelivered after the restart are duplicates.
        let mut batch = Batch::new();
        for k in reported_all.iter().take(50) {
            batch.input(
                at(0),
                Source::Mqtt,
                Some(k.clone()),
                alarm(k, AlarmState::Firing),
            );
        }
        let outcome = store.commit(&batch).await.expect("redelivery");
        assert!(outcome.inputs.iter().all(|o| !o.is_new()));
        B::close(&store).await;
        // The next child resumes after what is stored, unreported keys too.
        reported_all = keys.iter().map(|k| k.to_string()).collect();
    }
}

/// Not a gate: prints inputs per second for commits of 1 and 100 inputs
/// (run with `--nocapture` to see it).
async fn throughput_of_batched_commits<B: Backend>() {
    let (_db, store) = fresh::<B>("throughput").await;
    let event = Event::Mqtt {
        topic: "servere/srv-web/alarm".to_owned(),
        payload: br#"{"state":"alarm","key":"disk"}"#.to_vec(),
    };
    let mut n = 0usize;
    for (size, commits) in [(1usize, 300usize), (100, 50)] {
        let started = Instant::now();
        for _ in 0..commits {
            let mut batch = Batch::new();
            for _ in 0..size {
                batch.input(
                    at(n as i64),
                    Source::Mqtt,
                    Some(format!("t{n}")),
                    event.clone(),
                );
                n += 1;
            }
            store.commit(&batch).await.expect("commit");
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "store throughput: batch {size:>3}: {:>8.0} inputs/s ({:.2} ms per commit)",
            (size * commits) as f64 / secs,
            secs * 1000.0 / commits as f64
        );
    }
    assert_eq!(store.inputs().await.expect("inputs").len(), n);
}

/// A used acknowledgement link is found by its id, without reading the
/// others; the list of them stays for the core's start.
async fn a_used_link_is_found_by_its_id<B: Backend>() {
    let (_db, store) = fresh::<B>("used-link").await;
    assert!(!store.link_used("abc").await.expect("ask"));
    let mut batch = Batch::new();
    for link in ["abc", "def"] {
        batch.used_links.push(UsedLink {
            link: link.to_owned(),
            at: at(1),
            incident: 1,
            person: "p-drift".to_owned(),
        });
    }
    store.commit(&batch).await.expect("commit");
    assert!(store.link_used("abc").await.expect("ask"));
    assert!(store.link_used("def").await.expect("ask"));
    assert!(!store.link_used("ab").await.expect("ask"));
    assert!(!store.link_used("abc%").await.expect("ask"));
    let mut all = store.used_links().await.expect("all");
    all.sort();
    assert_eq!(all, ["abc", "def"]);
}

async fn attempts_recorded_together_are_all_or_nothing<B: Backend>() {
    let (_db, store) = fresh::<B>("attempts").await;
    let mut batch = Batch::new();
    for key in ["1/open/0/p-drift/sms", "1/open/0/p-support/sms"] {
        batch.notification(at(10), notification(key, 1));
    }
    store.commit(&batch).await.expect("commit");
    let sent = |key: &str| sent_attempt(key, 1, at(11));
    // One attempt the store cannot take fails the whole batch.
    let bad = [sent("1/open/0/p-drift/sms"), sent("nope")];
    assert!(matches!(
        store.record_attempts(&bad).await,
        Err(StoreError::UnknownNotification(k)) if k == "nope"
    ));
    assert_eq!(
        store
            .due_notifications(at(20), 10)
            .await
            .expect("due")
            .len(),
        2
    );
    assert!(store.deliveries(1).await.expect("deliveries").is_empty());

    let good = [sent("1/open/0/p-drift/sms"), sent("1/open/0/p-support/sms")];
    store.record_attempts(&good).await.expect("record");
    assert!(
        store
            .due_notifications(at(20), 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(store.deliveries(1).await.expect("deliveries").len(), 2);
    // The writer goes on committing after them.
    let mut batch = Batch::new();
    batch.notification(at(30), notification("2/open/0/p-drift/sms", 2));
    store.commit(&batch).await.expect("commit");
    assert_eq!(store.next_due().await.expect("next"), Some(at(30)));
}

/// A batch of `n` alarms, each opening an incident with a notification:
/// the rows of the daemon's usual commit, many of them.
fn big_batch(n: usize, first: u64) -> Batch {
    let mut batch = Batch::new();
    for i in 0..n {
        let id = first + i as u64;
        batch.input(
            at(i as i64),
            Source::Mqtt,
            None,
            alarm(&format!("k{id}"), AlarmState::Firing),
        );
        batch.incident(incident_row(id, IncidentState::Open, at(i as i64)));
        batch.timeline(id, 0, vec![entry(i as i64, "opened", "k down", None)]);
        batch.notification(
            at(i as i64),
            notification(&format!("{id}/open/0/p-drift/sms"), id),
        );
    }
    batch
}

/// A commit whose future is dropped half-way (an aborted task, a timeout)
/// leaves all of its batch or none, and the store commits and records
/// attempts after it as before. The drops fall at a quarter, a half and
/// three quarters of how long the same commit takes whole.
async fn a_commit_dropped_half_way_is_all_or_nothing<B: Backend>() {
    const N: usize = 3_000;
    let whole = {
        let (_db, store) = fresh::<B>("dropped-whole").await;
        let started = Instant::now();
        store.commit(&big_batch(N, 1)).await.expect("commit");
        started.elapsed()
    };
    for quarter in 1..=3u32 {
        let (_db, store) = fresh::<B>(&format!("dropped-{quarter}")).await;
        let cut = whole * quarter / 4;
        let finished = tokio::time::timeout(cut, store.commit(&big_batch(N, 1)))
            .await
            .is_ok();
        let after = big_batch(1, 1_000_000);
        store
            .commit(&after)
            .await
            .expect("a commit after the dropped one");
        let inputs = store.inputs().await.expect("inputs").len();
        let open = store
            .incidents(IncidentFilter::All, (2 * N) as u32, None)
            .await
            .expect("incidents")
            .len();
        let due = store
            .due_notifications(at(N as i64), (2 * N) as u32)
            .await
            .expect("due");
        assert!(
            [(1, 1, 1), (N + 1, N + 1, N + 1)].contains(&(inputs, open, due.len())),
            "dropped at {cut:?} (finished: {finished}): {inputs} inputs, {open} incidents, \
             {} notifications, not all or nothing",
            due.len()
        );
        let sent = sent_attempt("1000000/open/0/p-drift/sms", 1_000_000, at(1));
        store.record_attempt(&sent).await.expect("record");
        assert_eq!(
            store.deliveries(1_000_000).await.expect("deliveries").len(),
            1
        );
        B::check(&store).await;
    }
}

/// A store alone wins every claim it asks for (SQLite: one process;
/// PostgreSQL: one instance), again and again, and the rows stay pending
/// until an attempt is recorded.
async fn a_lone_store_wins_every_claim<B: Backend>() {
    let (_db, store) = fresh::<B>("lone-claim").await;
    let keys: Vec<String> = (0..3).map(|i| format!("1/open/0/p{i}/sms")).collect();
    let mut batch = Batch::new();
    for k in &keys {
        batch.notification(at(10), notification(k, 1));
    }
    store.commit(&batch).await.expect("commit");
    let until = wall_now().plus(Duration::from_secs(120));
    assert_eq!(store.claim(&keys, until).await.expect("claim"), keys);
    assert_eq!(store.claim(&keys, until).await.expect("again"), keys);
    assert_eq!(
        store.claim(&[], until).await.expect("none"),
        Vec::<String>::new()
    );
    assert_eq!(
        store
            .due_notifications(at(10), 10)
            .await
            .expect("due")
            .len(),
        3,
        "a claim is not an attempt"
    );
}

/// `?sslmode=require` on the store's URL: the store talks to PostgreSQL
/// over TLS (the server of the tests, Debian's, has `ssl = on`), and a
/// commit goes through it.
#[tokio::test]
async fn pg_connects_over_tls_when_the_url_asks() {
    let db = Pg::create("tls").await;
    let sep = if db.0.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}sslmode=require", db.0.url);
    let store = PgStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect with sslmode=require (is ssl on in the server?): {e}"));
    let mut batch = Batch::new();
    batch.notification(at(10), notification("1/1/open/p/sms", 1));
    store.commit(&batch).await.expect("commit over TLS");
    let mut conn = sqlx::PgConnection::connect(&db.0.url)
        .await
        .expect("connect");
    let over_tls: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'beredskab' AND datname = current_database() AND ssl",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_ssl");
    assert!(over_tls >= 1, "the store's connections use TLS");
}

/// The claims of an instance of a cluster that no longer says it lives
/// (no heartbeat within 5 s, or stopped) are void at once: its
/// notifications go out now, not two minutes later.
#[tokio::test]
async fn pg_claims_of_an_instance_presumed_dead_are_void() {
    let db = Pg::create("dead-claims").await;
    let a = PgStore::connect(&db.0.url)
        .await
        .expect("open a")
        .with_instance("a".to_owned());
    let b = PgStore::connect(&db.0.url)
        .await
        .expect("open b")
        .with_instance("b".to_owned());
    let key = "1/1/deputy/p-vagt2/sms".to_owned();
    let mut batch = Batch::new();
    batch.notification(at(10), notification(&key, 1));
    a.commit(&batch).await.expect("commit");
    let until = wall_now().plus(Duration::from_secs(120));
    let beat = |instance: &'static str, ago_ms: i64| {
        let url = db.0.url.clone();
        async move {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query(
                "INSERT INTO cluster_instances (instance, seen_ms) VALUES ($1, \
                 (extract(epoch from clock_timestamp()) * 1000)::bigint - $2) \
                 ON CONFLICT (instance) DO UPDATE SET seen_ms = excluded.seen_ms",
            )
            .bind(instance)
            .bind(ago_ms)
            .execute(&mut conn)
            .await
            .expect("heartbeat");
        }
    };
    beat("a", 0).await;
    let one = std::slice::from_ref(&key);
    assert_eq!(a.claim(one, until).await.expect("a claims"), one);
    assert!(
        b.claim(one, until).await.expect("b claims").is_empty(),
        "a lives: its claim holds"
    );
    // a's last heartbeat is now 6 s old.
    beat("a", 6_000).await;
    assert_eq!(
        b.claim(one, until).await.expect("b claims"),
        one,
        "a is presumed dead: b sends it"
    );
}

/// Two instances sharing one outbox: a row one of them claimed is not the
/// other's until the claim runs out or its attempt is recorded; a row no
/// longer pending is nobody's; claims made at once never overlap.
#[tokio::test]
async fn pg_instances_claim_each_row_once() {
    let db = Pg::create("claims").await;
    let a = PgStore::connect(&db.0.url)
        .await
        .expect("open a")
        .with_instance("a".to_owned());
    let b = PgStore::connect(&db.0.url)
        .await
        .expect("open b")
        .with_instance("b".to_owned());
    assert_eq!((a.instance(), b.instance()), ("a", "b"));
    let keys: Vec<String> = (0..50).map(|i| format!("1/open/0/p{i}/sms")).collect();
    let mut batch = Batch::new();
    for k in &keys {
        batch.notification(at(10), notification(k, 1));
    }
    a.commit(&batch).await.expect("commit");
    let until = wall_now().plus(Duration::from_secs(120));
    let (k0, k1, k2) = (keys[0].clone(), keys[1].clone(), keys[2].clone());

    // Sent rows are nobody's; a claim is its holder's alone.
    a.mark_sent(&k2, at(11)).await.expect("sent");
    let three = [k0.clone(), k1.clone(), k2.clone()];
    assert_eq!(
        a.claim(&three, until).await.expect("a claims"),
        [k0.as_str(), k1.as_str()]
    );
    assert!(b.claim(&three, until).await.expect("b claims").is_empty());
    assert_eq!(
        a.claim(&three, until).await.expect("a renews"),
        [k0.as_str(), k1.as_str()]
    );

    // A recorded attempt ends the claim: the retry is anyone's.
    let retried = Attempt {
        key: k0.clone(),
        incident: 1,
        at: at(12),
        channel: "sms".into(),
        person: "p0".into(),
        outcome: AttemptOutcome::Retried,
        detail: "gateway said 503".into(),
        next_attempt: Some(at(20)),
        fallback: None,
    };
    a.record_attempt(&retried).await.expect("record");
    assert_eq!(
        b.claim(&three, until).await.expect("b claims"),
        [k0.as_str()]
    );
    // So does mark_failed with a retry time; a still holds k1.
    b.mark_failed(&k0, "again 503", Some(at(30)))
        .await
        .expect("failed");
    assert_eq!(
        a.claim(&three, until).await.expect("a claims"),
        [k0.as_str(), k1.as_str()]
    );

    // A claim that ran out (its holder died) is taken over.
    let past = wall_now().plus(Duration::from_secs(0));
    let past = Ts(past.0 - 1_000);
    assert_eq!(
        a.claim(std::slice::from_ref(&k1), past)
            .await
            .expect("a shortens"),
        [k1.as_str()]
    );
    assert_eq!(
        b.claim(std::slice::from_ref(&k1), until)
            .await
            .expect("b takes over"),
        [k1.as_str()]
    );
    assert!(
        a.claim(std::slice::from_ref(&k1), until)
            .await
            .expect("a lost it")
            .is_empty()
    );

    // Both at once over the rest: every row to one of them at most.
    let rest: Vec<String> = keys[3..].to_vec();
    let (won_a, won_b) = tokio::join!(a.claim(&rest, until), b.claim(&rest, until));
    let (won_a, won_b) = (won_a.expect("a"), won_b.expect("b"));
    let set_a: HashSet<&String> = won_a.iter().collect();
    assert!(
        won_b.iter().all(|k| !set_a.contains(k)),
        "a row claimed twice: {won_a:?} {won_b:?}"
    );
    // What neither got (skipped while the other held its lock) is free.
    let free: Vec<String> = rest
        .iter()
        .filter(|k| !set_a.contains(k) && !won_b.contains(k))
        .cloned()
        .collect();
    let mut again = a.claim(&rest, until).await.expect("a again");
    again.sort();
    let mut expected: Vec<String> = won_a.iter().cloned().chain(free).collect();
    expected.sort();
    assert_eq!(again, expected);
}

/// Two daemons starting at once on an empty database: one migrates, the
/// other waits for it and finds the schema done.
#[tokio::test]
async fn pg_instances_starting_at_once_migrate_once() {
    let db = Pg::create("migrate-once").await;
    let (a, b) = tokio::join!(PgStore::connect(&db.0.url), PgStore::connect(&db.0.url));
    let (a, b) = (a.expect("open a"), b.expect("open b"));
    assert_eq!(
        a.schema_version().await.expect("version"),
        PgStore::latest_schema_version()
    );
    let mut conn = sqlx::PgConnection::connect(&db.0.url)
        .await
        .expect("raw connection");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_version ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("versions");
    let latest = PgStore::latest_schema_version();
    assert_eq!(versions, (1..=latest).collect::<Vec<_>>());
    // Both write into the one store.
    for (store, key) in [(&a, "from-a"), (&b, "from-b")] {
        let mut batch = Batch::new();
        batch.input(
            at(1),
            Source::Http,
            Some(key.to_owned()),
            alarm("x", AlarmState::Firing),
        );
        assert!(store.commit(&batch).await.expect("commit").inputs[0].is_new());
    }
    assert_eq!(b.inputs().await.expect("inputs").len(), 2);
}

/// A read-only connection (for `beredskab report`) reads what a writer
/// committed beside it, writes nothing, migrates nothing, and refuses a
/// database of another schema version. PostgreSQL's counterpart of the
/// SQLite test above.
#[tokio::test]
async fn pg_a_read_only_connection_reads_beside_the_writer_and_writes_nothing() {
    let db = Pg::create("read-only").await;
    // An empty database is not migrated by a read-only connection.
    assert!(matches!(
        PgStore::connect_read_only(&db.0.url).await,
        Err(StoreError::OlderSchema { found: 0, .. })
    ));

    let writer = db.open().await.expect("open");
    let mut batch = Batch::new();
    batch.incident(incident_row(1, IncidentState::Open, at(0)));
    batch.timeline(1, 0, vec![entry(0, "opened", "srv-1 down", None)]);
    batch.notification(at(0), notification("n1", 1));
    writer.commit(&batch).await.expect("commit");

    let reader = PgStore::connect_read_only(&db.0.url)
        .await
        .expect("open read-only");
    let detail = reader.incident(1).await.expect("read").expect("incident 1");
    assert_eq!(detail.timeline.len(), 1);
    assert_eq!(reader.notifications(1).await.expect("outbox").len(), 1);
    let mut batch = Batch::new();
    batch.incident(incident_row(2, IncidentState::Open, at(5)));
    assert!(
        reader.commit(&batch).await.is_err(),
        "a read-only store wrote"
    );
    assert!(reader.mark_sent("n1", at(1)).await.is_err());

    let mut batch = Batch::new();
    batch.incident(incident_row(1, IncidentState::Resolved, at(0)));
    writer.commit(&batch).await.expect("commit beside a reader");
    let detail = reader.incident(1).await.expect("read").expect("incident 1");
    assert_eq!(detail.incident.state, IncidentState::Resolved);
    reader.close().await;
    writer.close().await;

    db.set_schema_version(99).await;
    assert!(matches!(
        PgStore::connect_read_only(&db.0.url).await,
        Err(StoreError::NewerSchema { found: 99, .. })
    ));
    db.set_schema_version(PgStore::latest_schema_version() - 1)
        .await;
    assert!(matches!(
        PgStore::connect_read_only(&db.0.url).await,
        Err(StoreError::OlderSchema { .. })
    ));
}

/// The newest two snapshots are kept, the newest being the one after the
/// latest input; `meta` values are set and overwritten; alarms and the
/// daemon's events come back newest first.
async fn snapshots_meta_alarms_and_events_round_trip<B: Backend>() {
    let (db, store) = fresh::<B>("snapshots").await;
    assert!(store.latest_snapshot().await.expect("snapshot").is_none());
    assert_eq!(store.meta(META_WATERMARK).await.expect("meta"), None);
    let mut last_seq = 0;
    for i in 0..4i64 {
        let mut batch = Batch::new();
        for _ in 0..3 {
            batch.input(
                at(i),
                Source::Http,
                None,
                alarm("srv-web", AlarmState::Firing),
            );
        }
        batch
            .meta
            .push((META_WATERMARK.to_owned(), at(i).0.to_string()));
        batch.alarms.push(beredskab::store::AlarmRow {
            id: 0,
            at: at(i),
            source: Source::Mqtt,
            component: "srv-web".to_owned(),
            kind: "server".to_owned(),
            state: if i % 2 == 0 {
                AlarmState::Firing
            } else {
                AlarmState::Cleared
            },
            severity: AlarmSeverity::Warning,
            key: format!("a{i}"),
            message: (i == 1).then(|| "disk full".to_owned()),
        });
        batch.events.push(SystemEvent {
            id: 0,
            at: at(i),
            kind: "mqtt_session_lost".to_owned(),
            detail: format!("round {i}"),
        });
        let outcome = store.commit(&batch).await.expect("commit");
        let InputOutcome::New { seq } = outcome.inputs[2] else {
            panic!("new input: {outcome:?}");
        };
        last_seq = seq;
        store
            .write_snapshot(at(i), last_seq, format!("{{\"n\":{i}}}").into())
            .await
            .expect("snapshot");
    }
    // A snapshot stored late, after an earlier input (a leader that lost
    // its place, say), is neither the one a start restores nor kept in
    // place of a newer one.
    store
        .write_snapshot(at(9), last_seq - 3, "{\"late\":true}".into())
        .await
        .expect("snapshot");
    let snap = store
        .latest_snapshot()
        .await
        .expect("snapshot")
        .expect("one stored");
    assert_eq!(
        (snap.at, snap.after_seq, snap.body.as_str()),
        (at(3), last_seq, "{\"n\":3}")
    );
    assert_eq!(db.rows("snapshots").await, 2, "the newest two are kept");
    assert_eq!(
        store.meta(META_WATERMARK).await.expect("meta"),
        Some(at(3).0.to_string())
    );
    assert_eq!(db.rows("meta").await, 1);

    let alarms = store.alarms(10, None).await.expect("alarms");
    assert_eq!(
        alarms.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        ["a3", "a2", "a1", "a0"]
    );
    assert_eq!(alarms[2].message.as_deref(), Some("disk full"));
    assert_eq!(alarms[2].state, AlarmState::Cleared);
    assert_eq!(alarms[2].severity, AlarmSeverity::Warning);
    let older = store.alarms(2, Some(alarms[1].id)).await.expect("page");
    assert_eq!(
        older.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(),
        ["a1", "a0"]
    );
    let events = store.system_events(2).await.expect("events");
    assert_eq!(
        events.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(),
        ["round 3", "round 2"]
    );
    assert_eq!(events[0].at, at(3));
    store.ping().await.expect("ping");
}

/// Whether an incident is over follows merges to the end of the chain,
/// and a loop ends; a fallback attempt hands the row to a new one; the
/// pending summary counts what is left, and used links are found by
/// incident.
async fn merge_chains_and_fallbacks<B: Backend>() {
    let (_db, store) = fresh::<B>("merges").await;
    let mut batch = Batch::new();
    let merged = |into: u64| IncidentState::Merged(IncidentId(into));
    for (id, state) in [
        (1, IncidentState::Resolved),
        (2, merged(1)),
        (3, merged(2)),
        (4, IncidentState::Open),
        (5, merged(4)),
        (6, merged(6)),
        (7, merged(8)),
        (8, merged(7)),
    ] {
        batch.incident(incident_row(id, state, at(id as i64)));
    }
    batch.notification(at(10), notification("4/open/0/p-drift/sms", 4));
    batch.notification(at(12), notification("4/open/0/p-support/sms", 4));
    for (link, incident) in [("l1", 1), ("l2", 4), ("l3", 4)] {
        batch.used_links.push(UsedLink {
            link: link.to_owned(),
            at: at(20),
            incident,
            person: "p-drift".to_owned(),
        });
    }
    store.commit(&batch).await.expect("commit");
    for (id, over) in [
        (1, true),
        (2, true),
        (3, true),
        (4, false),
        (5, false),
        (6, false),
        (7, false),
        (99, false),
    ] {
        assert_eq!(
            store.incident_over(id).await.expect("over"),
            over,
            "incident {id}"
        );
    }
    let mut links = store.used_links_of(&[4, 2]).await.expect("links");
    links.sort();
    assert_eq!(links, [(4, "l2".to_owned()), (4, "l3".to_owned())]);

    let pending = store.outbox_pending().await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].pending, pending[0].oldest), (2, at(10)));

    let row = store
        .due_notifications(at(10), 1)
        .await
        .expect("due")
        .remove(0);
    let fallback = beredskab::store::OutboxRow {
        key: "4/open/0/p-drift/mail".to_owned(),
        channel: "mail".to_owned(),
        next_attempt: at(30),
        ..row.clone()
    };
    store
        .record_attempt(&Attempt {
            key: row.key.clone(),
            incident: 4,
            at: at(25),
            channel: "sms".into(),
            person: "p-drift".into(),
            outcome: AttemptOutcome::Fallback,
            detail: "no phone number".into(),
            next_attempt: None,
            fallback: Some(fallback),
        })
        .await
        .expect("record");
    let all = store.notifications(4).await.expect("notifications");
    assert_eq!(
        all.iter()
            .map(|n| (n.key.as_str(), n.state))
            .collect::<Vec<_>>(),
        [
            ("4/open/0/p-drift/sms", OutboxState::Failed),
            ("4/open/0/p-support/sms", OutboxState::Pending),
            ("4/open/0/p-drift/mail", OutboxState::Pending),
        ]
    );
    assert_eq!(all[2].next_attempt, at(30));
    assert_eq!(all[2].created_at, at(10));
    let deliveries = store.deliveries(4).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (
            deliveries[0].outcome.as_str(),
            deliveries[0].detail.as_str()
        ),
        ("fallback", "no phone number")
    );
    let mut pending = store.outbox_pending().await.expect("pending");
    pending.sort_by(|a, b| a.channel.cmp(&b.channel));
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.channel.as_str(), p.pending))
            .collect::<Vec<_>>(),
        [("mail", 1), ("sms", 1)]
    );
}
