//! The embedded store: one SQLite file in WAL mode.
//!
//! One writer connection takes every commit, each in a `BEGIN IMMEDIATE`
//! transaction (a deferred one that upgrades to a write can fail with
//! SQLITE_BUSY without waiting); `synchronous=FULL` makes a returned commit
//! survive power loss, and the caller's batching pays for the fsync. The
//! usual batch is one trip to SQLite's worker thread, transaction and all
//! (`COMMIT_ROWS`). The store holds that connection for good rather than
//! in a pool: sqlx's pool tests every connection given back with a round
//! trip to SQLite's thread, one more hand-over between threads per commit.
//! Reads go through a small pool of read-only
//! connections, which WAL lets run beside the writer; a connection of its
//! own copies the WAL into the database file now and then. The schema is
//! migrated on open by `user_version`.
//!
//! Delivery attempts are recorded with `synchronous=NORMAL`: their
//! transaction is atomic but not synced by itself, and reaches the disk
//! with the next commit's sync (the WAL is synced as a whole). Power lost
//! before that loses only the record, and the notification goes out again
//! with its idempotency key (see `notify`); a notification is never lost.
//! Engine snapshots are stored the same way, in a transaction of their own
//! beside the commits: one lost with the power costs a longer replay. The
//! next commit sets `synchronous=FULL` again first, so the relaxed setting
//! never reaches an input or a decision.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};
use tokio::sync::{Mutex, MutexGuard, mpsc};

use super::{
    ALARM_SEVERITIES, ALARM_STATES, AlarmRow, Attempt, AttemptOutcome, BASES, Batch, CommitOutcome,
    DeliveryRow, HistoryRow, IncidentDetail, IncidentFilter, IncidentRow, Input, InputOutcome,
    LEVELS, OUTBOX_STATES, OutboxRow, OutboxState, PendingSummary, Queue, REASONS, RejectedRow,
    SEVERITIES, SOURCES, SnapshotRow, Store, StoreError, StoredInput, SystemEvent, TimelineAppend,
    decode, decode_state, encode, to_i64, to_u64, truncate_raw,
};
use crate::engine::{
    AlarmSeverity, AlarmState, Basis, Event, IncidentState, Level, Reason, RejectReason, Severity,
    Source, TimelineEntry, Ts,
};

/// How long a connection waits for a lock held by another one.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections beside the one writer.
const READERS: u32 = 4;

/// WAL pages after which the writer checkpoints by itself, inside a
/// commit: a backstop only, should the checkpointer fall behind (its
/// checkpoints copy thousands of pages and sync the database file, which
/// SQLite's default of 1,000 pages put into one commit in every hundred or
/// so at 1,000 alarms/s).
const WAL_BACKSTOP_PAGES: u32 = 25_000;
/// How long the checkpointer lets commits gather after one wakes it.
/// Each checkpoint syncs the WAL and the database file, and the commit
/// after it restarts the WAL, which syncs its header on top of the
/// commit's own sync: on a slow disk a commit that meets either waits for
/// them. Checkpointing every 200 ms put one of them in the way of about a
/// commit in ten at 100 alarms/s.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(2);
/// Commits after which the checkpointer does not wait out
/// [`CHECKPOINT_AFTER`], so that the WAL stays small at high rates.
const CHECKPOINT_COMMITS: usize = 200;

/// The schema, in order: migration `i` takes the database to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_daemon.sql"),
    include_str!("migrations/0003_delivery.sql"),
    include_str!("migrations/0004_bounded.sql"),
    include_str!("migrations/0005_operator.sql"),
    include_str!("migrations/0006_inputs_unchecked.sql"),
    include_str!("migrations/0007_json_unchecked.sql"),
];

/// The longest merge chain followed when asking whether an incident is
/// over (a chain is short; a loop in a damaged file must not hang).
const MAX_MERGE_HOPS: usize = 64;

/// Snapshots kept: the newest, and one before it in case the newest cannot
/// be restored by a future build.
const SNAPSHOTS_KEPT: i64 = 2;

/// The store in one SQLite file. Cheap to clone: clones share connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: SqlitePool,
    /// The writer was left at `synchronous=NORMAL` by recorded delivery
    /// attempts, so the next commit must set `FULL` first (a round trip
    /// to SQLite's thread that most commits need not make).
    relaxed: Arc<AtomicBool>,
    /// Wakes the checkpointer after a commit; it stops once every clone
    /// of the store is gone.
    checkpoint: Option<mpsc::Sender<()>>,
    /// Commits since the last checkpoint began.
    uncheckpointed: Arc<AtomicUsize>,
    /// The checkpointer's connection, closed with the rest.
    checkpointer: Option<SqlitePool>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and migrates it.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let base = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = Writer::new(
            base.clone()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES.to_string())
                // A statement of a transaction that may fail half-way
                // keeps the pages it changes in a statement journal,
                // which SQLite spills to a temporary file past 64 KiB:
                // a write() per page for a commit of a few hundred
                // alarms. In memory it stays a copy, and goes with the
                // statement.
                .pragma("temp_store", "MEMORY"),
        );
        let mut conn = writer.acquire().await?;
        migrate(&mut conn).await?;
        conn.done();
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await?;
        // The writer made the file WAL (a lasting setting); readers leave
        // journal_mode alone because changing it cannot wait on a lock.
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.pragma("query_only", "ON"))
            .await?;
        let (checkpoint, wake) = mpsc::channel(1);
        let uncheckpointed = Arc::new(AtomicUsize::new(0));
        tokio::spawn(checkpoints(
            checkpointer.clone(),
            wake,
            uncheckpointed.clone(),
        ));
        Ok(SqliteStore {
            writer: Arc::new(writer),
            readers,
            relaxed: Arc::new(AtomicBool::new(false)),
            checkpoint: Some(checkpoint),
            uncheckpointed,
            checkpointer: Some(checkpointer),
        })
    }

    /// Opens an existing database for reading only, beside a running
    /// daemon or without one (WAL lets readers run beside the writer): no
    /// file is created, nothing is migrated, and every write fails. For
    /// `beredskab report`.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .busy_timeout(BUSY_TIMEOUT)
            .create_if_missing(false)
            .read_only(true);
        let readers = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let store = SqliteStore {
            writer: Arc::new(Writer::new(options)),
            readers,
            relaxed: Arc::new(AtomicBool::new(false)),
            checkpoint: None,
            uncheckpointed: Arc::default(),
            checkpointer: None,
        };
        let found = store.schema_version().await?;
        let known = SqliteStore::latest_schema_version();
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        if found < known {
            return Err(StoreError::OlderSchema { found, known });
        }
        Ok(store)
    }

    /// The schema version the file is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let v: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&self.readers)
            .await?;
        Ok(v)
    }

    /// The schema version this build migrates to.
    pub fn latest_schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }

    /// Runs SQLite's integrity check over the whole file.
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.readers)
            .await?;
        match lines.as_slice() {
            [ok] if ok == "ok" => Ok(()),
            _ => Err(StoreError::Integrity(lines.join("; "))),
        }
    }

    /// Closes every connection, checkpointing the WAL.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.close().await;
        }
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// The one connection that writes, held for good. A task takes it with
/// [`Writer::acquire`] and gives it back by [`WriterConn::done`]; one
/// dropped before that (its future dropped half-way, or a trip that
/// failed) is closed, which rolls back whatever transaction it left open,
/// and the next task opens a new one, at `synchronous=FULL`.
#[derive(Debug)]
struct Writer {
    options: SqliteConnectOptions,
    conn: Mutex<Option<SqliteConnection>>,
    closed: AtomicBool,
}

impl Writer {
    /// A writer that connects when first acquired.
    fn new(options: SqliteConnectOptions) -> Writer {
        Writer {
            options,
            conn: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// Waits for the connection, opening it if there is none (the first
    /// time, or after the last was closed).
    async fn acquire(&self) -> Result<WriterConn<'_>, StoreError> {
        let mut guard = self.conn.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed.into());
        }
        if guard.is_none() {
            *guard = Some(SqliteConnection::connect_with(&self.options).await?);
        }
        Ok(WriterConn { guard, done: false })
    }

    /// Closes the connection once the task holding it has given it back.
    async fn close(&self) {
        let mut guard = self.conn.lock().await;
        self.closed.store(true, Ordering::Release);
        if let Some(conn) = guard.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the store's writer connection failed");
        }
    }
}

/// The writer connection while one task holds it: closed when dropped
/// before [`WriterConn::done`].
struct WriterConn<'a> {
    guard: MutexGuard<'a, Option<SqliteConnection>>,
    done: bool,
}

impl WriterConn<'_> {
    /// The task's trips came back whole: the connection may be reused.
    fn done(mut self) {
        self.done = true;
    }
}

impl std::ops::Deref for WriterConn<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.guard
            .as_ref()
            .expect("the connection is there while held")
    }
}

impl std::ops::DerefMut for WriterConn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.guard
            .as_mut()
            .expect("the connection is there while held")
    }
}

impl Drop for WriterConn<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Dropping it ends its thread, which closes the handle.
            drop(self.guard.take());
        }
    }
}

impl SqliteStore {
    /// Commits a batch of rows only (`rows_only`) in one trip to SQLite's
    /// thread: the transaction is in the text (`COMMIT_ROWS`), so sqlx
    /// knows nothing of it. Should the trip fail, or its future be dropped
    /// half-way, the connection is closed, which rolls back whatever the
    /// text left open (see [`WriterConn`]).
    async fn commit_rows(
        &self,
        mut conn: WriterConn<'_>,
        batch: &Batch,
    ) -> Result<CommitOutcome, StoreError> {
        let text = if self.relaxed.swap(false, Ordering::AcqRel) {
            COMMIT_ROWS_SYNCED
        } else {
            COMMIT_ROWS
        };
        let rows = bind_rows(sqlx::query(text), batch, true)?
            .fetch_all(&mut *conn)
            .await?;
        conn.done();
        let mut outcome = CommitOutcome {
            inputs: Vec::with_capacity(batch.inputs.len()),
            queued: 0,
            new_notifications: Vec::new(),
        };
        read_rows(batch, true, &rows, &mut outcome)?;
        Ok(outcome)
    }

    /// Records attempts that each sent its notification, with no fallback,
    /// in one trip to SQLite's thread (`RECORD_SENT`), as `commit_rows`
    /// commits. An unknown key fails the trip (its delivery row would have
    /// no key), which rolls it all back.
    async fn record_sent(&self, attempts: &[Attempt]) -> Result<(), StoreError> {
        let rows = attempts
            .iter()
            .map(|a| {
                Ok((
                    &a.key,
                    to_i64("incident", a.incident)?,
                    a.at.0,
                    &a.channel,
                    &a.person,
                    &a.detail,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let rows = encode("delivery attempts", &rows)?;
        let mut conn = self.writer.acquire().await?;
        // No sync of its own, as below. Marked first, so that a failure
        // half-way still has the next commit set FULL.
        self.relaxed.store(true, Ordering::Release);
        sqlx::query(RECORD_SENT)
            .bind(&rows)
            .bind(&rows)
            .execute(&mut *conn)
            .await?;
        conn.done();
        Ok(())
    }

    /// Commits any batch in a transaction of sqlx's, its parts in turn.
    async fn commit_in_parts(
        &self,
        mut conn: WriterConn<'_>,
        batch: &Batch,
    ) -> Result<CommitOutcome, StoreError> {
        // The writer also records delivery attempts, which relax it; the
        // pragma goes in the same round trip to SQLite's thread as the
        // BEGIN (sqlite3_exec runs both). The flag changes only while the
        // one writer connection is held.
        let relaxed = self.relaxed.load(Ordering::Acquire);
        let begin = if relaxed {
            "PRAGMA synchronous = FULL; BEGIN IMMEDIATE"
        } else {
            "BEGIN IMMEDIATE"
        };
        let mut tx = conn.begin_with(begin).await?;
        if relaxed {
            self.relaxed.store(false, Ordering::Release);
        }
        let outcome = write_batch(&mut tx, batch).await?;
        tx.commit().await?;
        conn.done();
        Ok(outcome)
    }
}

/// Whether a batch has nothing but the rows `write_rows!()` writes, with no
/// dedup key among its inputs: the daemon's usual batch.
fn rows_only(batch: &Batch) -> bool {
    batch.inputs.iter().all(|i| i.dedup_key.is_none())
        && batch.rejected.is_empty()
        && batch.events.is_empty()
        && batch.used_links.is_empty()
}

/// Copies the WAL into the database file on a connection of its own, off
/// the commits' path: a passive checkpoint runs beside the writer and
/// waits for nobody. Stops when every sender is gone, and closes its
/// connection.
async fn checkpoints(
    pool: SqlitePool,
    mut wake: mpsc::Receiver<()>,
    uncheckpointed: Arc<AtomicUsize>,
) {
    let mut open = true;
    while open && wake.recv().await.is_some() {
        let until = tokio::time::Instant::now() + CHECKPOINT_AFTER;
        while uncheckpointed.load(Ordering::Acquire) < CHECKPOINT_COMMITS {
            match tokio::time::timeout_at(until, wake.recv()).await {
                Ok(Some(())) => {}
                // Every clone of the store is gone: one last checkpoint.
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        uncheckpointed.store(0, Ordering::Release);
        if pool.is_closed() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
            && !pool.is_closed()
        {
            tracing::warn!(error = %e, "wal checkpoint failed; the writer checkpoints by itself");
        }
    }
    pool.close().await;
}

/// Brings the schema up to [`MIGRATIONS`], one transaction per step.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    loop {
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        // PRAGMA takes no parameters; the value is our own integer.
        sqlx::query(AssertSqlSafe(format!(
            "PRAGMA user_version = {}",
            found + 1
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(version = found + 1, "store schema migrated");
    }
}

impl Store for SqliteStore {
    async fn commit(&self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let conn = self.writer.acquire().await?;
        let outcome = if rows_only(batch) {
            self.commit_rows(conn, batch).await?
        } else {
            self.commit_in_parts(conn, batch).await?
        };
        if let Some(checkpoint) = &self.checkpoint {
            // The first commit after a checkpoint wakes the checkpointer,
            // and the one that makes enough ends its wait. Full: a wake-up
            // is already waiting.
            let n = self.uncheckpointed.fetch_add(1, Ordering::AcqRel) + 1;
            if n == 1 || n == CHECKPOINT_COMMITS {
                let _ = checkpoint.try_send(());
            }
        }
        Ok(outcome)
    }

    async fn inputs_after(&self, after: u64, limit: u32) -> Result<Vec<StoredInput>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, source, dedup_key, event FROM inputs \
             WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(to_i64("seq", after)?)
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(input_from_row).collect()
    }

    async fn incidents(
        &self,
        filter: IncidentFilter,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<IncidentRow>, StoreError> {
        let sql = match filter {
            IncidentFilter::Open => {
                "SELECT * FROM incidents WHERE state IN ('open', 'acknowledged') \
                 AND id < ? ORDER BY id DESC LIMIT ?"
            }
            IncidentFilter::Resolved => {
                "SELECT * FROM incidents WHERE state = 'resolved' \
                 AND id < ? ORDER BY id DESC LIMIT ?"
            }
            IncidentFilter::All => "SELECT * FROM incidents WHERE id < ? ORDER BY id DESC LIMIT ?",
        };
        let before = match before {
            Some(b) => to_i64("incident", b)?,
            None => i64::MAX,
        };
        let rows = sqlx::query(sql)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(incident_from_row).collect()
    }

    async fn incident(&self, id: u64) -> Result<Option<IncidentDetail>, StoreError> {
        let id = to_i64("incident", id)?;
        // One read transaction, so the incident and its timeline agree.
        let mut conn = self.readers.acquire().await?;
        let mut tx = conn.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM incidents WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let incident = incident_from_row(&row)?;
        let timeline = sqlx::query(
            "SELECT at_ms, kind, text, \"by\", public FROM timeline WHERE incident = ? \
             ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(TimelineEntry {
                at: Ts(r.try_get("at_ms")?),
                kind: r.try_get("kind")?,
                text: r.try_get("text")?,
                by: r.try_get("by")?,
                public: r.try_get("public")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().await?;
        Ok(Some(IncidentDetail { incident, timeline }))
    }

    async fn rejected(
        &self,
        limit: u32,
        before: Option<u64>,
    ) -> Result<Vec<RejectedRow>, StoreError> {
        let before = match before {
            Some(b) => to_i64("rejected id", b)?,
            None => i64::MAX,
        };
        let rows = sqlx::query(
            "SELECT id, at_ms, source, reason, detail, raw, raw_len FROM rejected \
             WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                let source: String = r.try_get("source")?;
                let reason: String = r.try_get("reason")?;
                Ok(RejectedRow {
                    id: to_u64("rejected", "id", r.try_get("id")?)?,
                    at: Ts(r.try_get("at_ms")?),
                    source: decode(&SOURCES, Source::as_str, &source, "rejected", "source")?,
                    reason: decode(
                        &REASONS,
                        RejectReason::as_str,
                        &reason,
                        "rejected",
                        "reason",
                    )?,
                    detail: r.try_get("detail")?,
                    raw: r.try_get("raw")?,
                    raw_len: to_u64("rejected", "raw_len", r.try_get("raw_len")?)?,
                })
            })
            .collect()
    }

    async fn history(&self) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT incident, root, duration_s, resolved_at_ms FROM history \
             ORDER BY resolved_at_ms, incident",
        )
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryRow {
                    incident: to_u64("history", "incident", r.try_get("incident")?)?,
                    root: r.try_get("root")?,
                    duration_s: r.try_get("duration_s")?,
                    resolved_at: Ts(r.try_get("resolved_at_ms")?),
                })
            })
            .collect()
    }

    async fn due_notifications(&self, now: Ts, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_ms <= ? \
             ORDER BY next_attempt_ms, id LIMIT ?",
        )
        .bind(now.0)
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn notifications(&self, incident: u64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE incident = ? ORDER BY id")
            .bind(to_i64("incident", incident)?)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn next_due(&self) -> Result<Option<Ts>, StoreError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT min(next_attempt_ms) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.readers)
                .await?;
        Ok(at.map(Ts))
    }

    async fn mark_sent(&self, key: &str, at: Ts) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let done = sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at_ms = coalesce(sent_at_ms, ?), \
             attempts = attempts + (state <> 'sent') WHERE key = ?",
        )
        .bind(at.0)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        conn.done();
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownNotification(key.to_owned()));
        }
        Ok(())
    }

    async fn mark_failed(
        &self,
        key: &str,
        error: &str,
        next_attempt: Option<Ts>,
    ) -> Result<(), StoreError> {
        // A notification already sent stays sent: a late failure report
        // (say from a retry racing a success) must not resend it.
        let mut conn = self.writer.acquire().await?;
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, \
             state = CASE WHEN ? IS NULL THEN 'failed' ELSE 'pending' END, \
             next_attempt_ms = coalesce(?, next_attempt_ms) \
             WHERE key = ? AND state <> 'sent'",
        )
        .bind(error)
        .bind(next_attempt.map(|t| t.0))
        .bind(next_attempt.map(|t| t.0))
        .bind(key)
        .execute(&mut *conn)
        .await?;
        conn.done();
        if done.rows_affected() == 0 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM outbox WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.readers)
                .await?;
            if exists.is_none() {
                return Err(StoreError::UnknownNotification(key.to_owned()));
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.readers).await?;
        Ok(())
    }

    async fn write_snapshot(
        &self,
        at: Ts,
        after_seq: u64,
        body: Arc<str>,
    ) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        // No sync of its own, as for delivery attempts: the next commit's
        // sync carries it to disk, or a crash loses it and the replay is
        // longer.
        self.relaxed.store(true, Ordering::Release);
        let mut tx = conn
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
            .await?;
        sqlx::query("INSERT INTO snapshots (at_ms, after_seq, body) VALUES (?, ?, ?)")
            .bind(at.0)
            .bind(to_i64("seq", after_seq)?)
            .bind(body)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM snapshots WHERE id NOT IN \
             (SELECT id FROM snapshots ORDER BY after_seq DESC, id DESC LIMIT ?)",
        )
        .bind(SNAPSHOTS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        conn.done();
        Ok(())
    }

    async fn latest_snapshot(&self) -> Result<Option<SnapshotRow>, StoreError> {
        let row = sqlx::query(
            "SELECT at_ms, after_seq, body FROM snapshots \
             ORDER BY after_seq DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.readers)
        .await?;
        row.map(|r| {
            Ok(SnapshotRow {
                at: Ts(r.try_get("at_ms")?),
                after_seq: to_u64("snapshots", "after_seq", r.try_get("after_seq")?)?,
                body: r.try_get("body")?,
            })
        })
        .transpose()
    }

    async fn meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.readers)
            .await?)
    }

    async fn alarms(&self, limit: u32, before: Option<u64>) -> Result<Vec<AlarmRow>, StoreError> {
        let before = match before {
            Some(b) => to_i64("alarm id", b)?,
            None => i64::MAX,
        };
        let rows = sqlx::query(
            "SELECT id, at_ms, source, component, kind, state, severity, \"key\", message \
             FROM alarms WHERE id < ? ORDER BY id DESC LIMIT ?",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                let source: String = r.try_get("source")?;
                let state: String = r.try_get("state")?;
                let severity: String = r.try_get("severity")?;
                Ok(AlarmRow {
                    id: to_u64("alarms", "id", r.try_get("id")?)?,
                    at: Ts(r.try_get("at_ms")?),
                    source: decode(&SOURCES, Source::as_str, &source, "alarms", "source")?,
                    component: r.try_get("component")?,
                    kind: r.try_get("kind")?,
                    state: decode(&ALARM_STATES, AlarmState::as_str, &state, "alarms", "state")?,
                    severity: decode(
                        &ALARM_SEVERITIES,
                        AlarmSeverity::as_str,
                        &severity,
                        "alarms",
                        "severity",
                    )?,
                    key: r.try_get("key")?,
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    async fn record_attempt(&self, a: &Attempt) -> Result<(), StoreError> {
        self.record_attempts(std::slice::from_ref(a)).await
    }

    async fn record_attempts(&self, attempts: &[Attempt]) -> Result<(), StoreError> {
        // The usual attempts, notifications sent, in one trip; should that
        // fail, the trip below says why.
        let sent = |a: &Attempt| a.outcome == AttemptOutcome::Sent && a.fallback.is_none();
        if attempts.iter().all(sent) && self.record_sent(attempts).await.is_ok() {
            return Ok(());
        }
        let mut conn = self.writer.acquire().await?;
        // No sync of its own: the next commit's sync carries it to disk.
        // Marked first, so that a failure half-way still has the next
        // commit set FULL.
        self.relaxed.store(true, Ordering::Release);
        let mut tx = conn
            .begin_with("PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE")
            .await?;
        for a in attempts {
            write_attempt(&mut tx, a).await?;
        }
        tx.commit().await?;
        conn.done();
        Ok(())
    }

    async fn deliveries(&self, incident: u64) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, incident, at_ms, channel, person, outcome, detail FROM deliveries \
             WHERE incident = ? ORDER BY id",
        )
        .bind(to_i64("incident", incident)?)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRow {
                    key: r.try_get("key")?,
                    incident: to_u64("deliveries", "incident", r.try_get("incident")?)?,
                    at: Ts(r.try_get("at_ms")?),
                    channel: r.try_get("channel")?,
                    person: r.try_get("person")?,
                    outcome: r.try_get("outcome")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn used_links(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT link FROM used_links")
            .fetch_all(&self.readers)
            .await?)
    }

    async fn used_links_of(&self, incidents: &[u64]) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = Vec::new();
        for &id in incidents {
            let links: Vec<String> =
                sqlx::query_scalar("SELECT link FROM used_links WHERE incident = ?")
                    .bind(to_i64("incident", id)?)
                    .fetch_all(&self.readers)
                    .await?;
            out.extend(links.into_iter().map(|l| (id, l)));
        }
        Ok(out)
    }

    async fn incident_over(&self, id: u64) -> Result<bool, StoreError> {
        let mut id = to_i64("incident", id)?;
        for _ in 0..MAX_MERGE_HOPS {
            let row: Option<(String, Option<i64>)> =
                sqlx::query_as("SELECT state, merged_into FROM incidents WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&self.readers)
                    .await?;
            match row {
                None => return Ok(false),
                Some((state, Some(into))) if state == "merged" && into != id => id = into,
                Some((state, _)) => return Ok(state == "resolved"),
            }
        }
        Ok(false)
    }

    async fn outbox_pending(&self) -> Result<Vec<PendingSummary>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT channel, count(*), min(created_at_ms) FROM outbox \
             WHERE state = 'pending' GROUP BY channel ORDER BY channel",
        )
        .fetch_all(&self.readers)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(channel, n, oldest)| PendingSummary {
                channel,
                pending: u64::try_from(n).unwrap_or(0),
                oldest: Ts(oldest),
            })
            .collect())
    }

    async fn link_used(&self, link: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM used_links WHERE link = ?)")
                .bind(link)
                .fetch_one(&self.readers)
                .await?,
        )
    }

    async fn system_events(&self, limit: u32) -> Result<Vec<SystemEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, detail FROM system_events ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.readers)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SystemEvent {
                    id: to_u64("system_events", "id", r.try_get("id")?)?,
                    at: Ts(r.try_get("at_ms")?),
                    kind: r.try_get("kind")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}

/// Every write of a batch, inside the caller's transaction. Projections
/// come after the inputs; the timeline's foreign key is checked at commit,
/// so the order of incidents and timeline entries does not matter.
/// A batch's keyless inputs, incidents, timeline entries, alarms, meta
/// values and outbox rows, in one trip to SQLite's thread: a statement per
/// table, each taking its rows as one JSON array, prepared once and kept.
/// A handover between threads costs tens of microseconds (more than most
/// of these statements), so a commit that made one per table spent most
/// of its time handing over.
///
/// sqlx runs the statements of one text in turn, inside the caller's
/// transaction. Each statement has one plain `?`, and sqlx binds the arguments to them
/// in turn: a numbered `?N` would make SQLite count N slots in its
/// statement, and sqlx would run out of arguments for the ones not used.
/// The rows come back in the statements' order: first the inputs' last
/// seq and count, then the keys of the outbox rows that were new.
///
/// The inserts without a `DO UPDATE` are `OR FAIL`: a statement that may
/// abort half-way (the default, `OR ABORT`) keeps a copy of every page it
/// changes in a statement journal, to undo only itself and let the
/// transaction go on; here any failure rolls the whole transaction back
/// (the caller's error, or the closed connection of `commit_rows`), so
/// the copy is never used.
macro_rules! write_rows {
    () => {
        concat!(
    "INSERT OR FAIL INTO inputs (at_ms, source, dedup_key, event) \
     SELECT value ->> 0, value ->> 1, NULL, value ->> 2 FROM jsonb_each(?) ORDER BY key; ",
    "SELECT last_insert_rowid(), changes(); ",
    "INSERT INTO incidents (",
    incident_columns!(),
    ") ",
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
     value ->> 12, value ->> 13, value ->> 14, value ->> 15, value ->> 16 \
     FROM jsonb_each(?) WHERE true ORDER BY key ",
    incident_upsert!(),
    "; ",
    "INSERT OR FAIL INTO timeline (incident, seq, at_ms, kind, text, \"by\", public) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6 FROM jsonb_each(?) WHERE true ORDER BY key \
     ON CONFLICT (incident, seq) DO NOTHING; ",
    "INSERT OR FAIL INTO alarms (at_ms, source, component, kind, state, severity, \"key\", message) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7 FROM jsonb_each(?) ORDER BY key; ",
    // Later values of a name win: the rows go in in the batch's order.
    "INSERT INTO meta (name, value) SELECT value ->> 0, value ->> 1 FROM jsonb_each(?) \
     WHERE true ORDER BY key ON CONFLICT (name) DO UPDATE SET value = excluded.value; ",
    "INSERT OR FAIL INTO outbox (key, incident, person, role, channel, reason, text, \
     created_at_ms, next_attempt_ms) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7, value ->> 8 FROM jsonb_each(?) WHERE true ORDER BY key \
     ON CONFLICT (key) DO NOTHING RETURNING key",
)
    };
}

/// The rows of a batch with nothing else (see `commit_alone`), in their
/// own transaction: one trip to SQLite's thread for the whole commit.
const COMMIT_ROWS: &str = concat!("BEGIN IMMEDIATE; ", write_rows!(), "; COMMIT");
/// Delivery attempts that sent their notification (`record_sent`), in
/// their own transaction without a sync: both statements read the same
/// rows, `[key, incident, at_ms, channel, person, detail]`. A key the
/// outbox lacks gives its delivery a NULL key, which fails the trip.
const RECORD_SENT: &str = "PRAGMA synchronous = NORMAL; BEGIN IMMEDIATE; \
     UPDATE outbox SET state = 'sent', sent_at_ms = coalesce(sent_at_ms, a.at_ms), \
     attempts = attempts + (state <> 'sent') \
     FROM (SELECT value ->> 0 AS key, value ->> 2 AS at_ms FROM jsonb_each(?)) AS a \
     WHERE outbox.key = a.key; \
     INSERT INTO deliveries (key, incident, at_ms, channel, person, outcome, detail) \
     SELECT (SELECT o.key FROM outbox o WHERE o.key = value ->> 0), value ->> 1, value ->> 2, \
     value ->> 3, value ->> 4, 'sent', value ->> 5 FROM jsonb_each(?) ORDER BY key; \
     COMMIT";

/// The same after delivery attempts relaxed the writer.
const COMMIT_ROWS_SYNCED: &str = concat!(
    "PRAGMA synchronous = FULL; BEGIN IMMEDIATE; ",
    write_rows!(),
    "; COMMIT"
);

async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &Batch,
) -> Result<CommitOutcome, StoreError> {
    let mut outcome = CommitOutcome {
        inputs: Vec::with_capacity(batch.inputs.len()),
        queued: 0,
        new_notifications: Vec::new(),
    };
    // The daemon's inputs have no dedup key and go in with the rest. With
    // keys among them, they go first: runs of inputs without a key in one
    // statement each, an input with a key alone, so that the log keeps the
    // batch's order.
    let keyless = batch.inputs.iter().all(|i| i.dedup_key.is_none());
    if !keyless {
        let mut rest = batch.inputs.as_slice();
        while !rest.is_empty() {
            let run = rest.iter().take_while(|i| i.dedup_key.is_none()).count();
            if run > 0 {
                let (keyless, after) = rest.split_at(run);
                for seq in insert_keyless(conn, keyless).await? {
                    outcome.inputs.push(InputOutcome::New { seq });
                }
                rest = after;
            } else {
                let (keyed, after) = rest.split_at(1);
                outcome.inputs.push(insert_keyed(conn, &keyed[0]).await?);
                rest = after;
            }
        }
    }

    let rows = bind_rows(sqlx::query(write_rows!()), batch, keyless)?
        .fetch_all(&mut *conn)
        .await?;
    read_rows(batch, keyless, &rows, &mut outcome)?;

    for r in &batch.rejected {
        sqlx::query(
            "INSERT INTO rejected (at_ms, source, reason, detail, raw, raw_len, dedup_key) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(r.at.0)
        .bind(r.source.as_str())
        .bind(r.reason.as_str())
        .bind(&r.detail)
        .bind(truncate_raw(&r.raw))
        .bind(to_i64("raw length", r.raw.len() as u64)?)
        .bind(r.dedup_key.as_deref())
        .execute(&mut *conn)
        .await?;
    }

    for e in &batch.events {
        sqlx::query("INSERT INTO system_events (at_ms, kind, detail) VALUES (?, ?, ?)")
            .bind(e.at.0)
            .bind(&e.kind)
            .bind(&e.detail)
            .execute(&mut *conn)
            .await?;
    }

    for u in &batch.used_links {
        sqlx::query(
            "INSERT INTO used_links (link, at_ms, incident, person) VALUES (?, ?, ?, ?) \
             ON CONFLICT (link) DO NOTHING",
        )
        .bind(&u.link)
        .bind(u.at.0)
        .bind(to_i64("incident", u.incident)?)
        .bind(&u.person)
        .execute(&mut *conn)
        .await?;
    }

    Ok(outcome)
}

/// Binds a batch's rows to `write_rows!()`; the inputs only if `keyless`
/// (they went in before otherwise).
fn bind_rows<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    batch: &Batch,
    keyless: bool,
) -> Result<sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>, StoreError> {
    let outbox = outbox_rows(batch.notifications.iter().map(|q| {
        let n = &q.notification;
        Queue {
            key: &n.key,
            incident: n.incident.0,
            person: &n.person,
            role: n.role.as_deref(),
            channel: &n.channel,
            reason: n.reason.as_str(),
            text: &n.text,
            created: q.at,
            due: q.at,
        }
    }))?;
    Ok(query
        .bind(if keyless {
            input_rows(&batch.inputs)?
        } else {
            "[]".to_owned()
        })
        .bind(incident_rows(&batch.incidents)?)
        .bind(timeline_rows(&batch.timeline)?)
        .bind(alarm_rows(&batch.alarms)?)
        .bind(encode("meta", &batch.meta)?)
        .bind(outbox))
}

/// Reads what `write_rows!()` answered into `outcome`: the keyless inputs'
/// seqs and the notifications that were new.
fn read_rows(
    batch: &Batch,
    keyless: bool,
    rows: &[SqliteRow],
    outcome: &mut CommitOutcome,
) -> Result<(), StoreError> {
    let mut rows = rows.iter();
    let inputs = rows.next().ok_or_else(|| StoreError::Corrupt {
        table: "inputs",
        column: "seq",
        detail: "no count of the inputs inserted".to_owned(),
    })?;
    if keyless && !batch.inputs.is_empty() {
        let seqs = keyless_seqs(
            batch.inputs.len(),
            inputs.try_get::<i64, _>(0)?,
            inputs.try_get::<i64, _>(1)?,
        )?;
        outcome
            .inputs
            .extend(seqs.map(|seq| InputOutcome::New { seq }));
    }
    // A key twice in one batch is new the first time only, as when each
    // row went in alone.
    let mut new = rows
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<std::collections::HashSet<String>, _>>()?;
    for (i, q) in batch.notifications.iter().enumerate() {
        if new.remove(q.notification.key.as_str()) {
            outcome.queued += 1;
            outcome.new_notifications.push(i);
        }
    }
    Ok(())
}

/// Inputs without a dedup key as one JSON array of rows.
fn input_rows(inputs: &[Input]) -> Result<String, StoreError> {
    let rows = inputs
        .iter()
        .map(|i| Ok((i.at.0, i.source.as_str(), encode("event", &i.event)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    encode("inputs", &rows)
}

/// The seqs `n` keyless inputs took. None can conflict and this connection
/// is the only writer, so they take the seqs after the newest in order, up
/// to the last one inserted (no RETURNING, which would hand each row back
/// separately).
fn keyless_seqs(
    n: usize,
    last: i64,
    inserted: i64,
) -> Result<std::ops::RangeInclusive<u64>, StoreError> {
    let n = n as u64;
    let last = to_u64("inputs", "seq", last)?;
    if u64::try_from(inserted).ok() != Some(n) || last < n {
        return Err(StoreError::Corrupt {
            table: "inputs",
            column: "seq",
            detail: format!("{inserted} of {n} inputs inserted"),
        });
    }
    Ok(last + 1 - n..=last)
}

/// Inputs without a dedup key, in order, in one statement.
async fn insert_keyless(
    conn: &mut SqliteConnection,
    inputs: &[Input],
) -> Result<std::ops::RangeInclusive<u64>, StoreError> {
    let done = sqlx::query(
        "INSERT INTO inputs (at_ms, source, dedup_key, event) \
         SELECT value ->> 0, value ->> 1, NULL, value ->> 2 FROM jsonb_each(?) ORDER BY key",
    )
    .bind(input_rows(inputs)?)
    .execute(&mut *conn)
    .await?;
    let inserted = i64::try_from(done.rows_affected()).unwrap_or(i64::MAX);
    keyless_seqs(inputs.len(), done.last_insert_rowid(), inserted)
}

/// An input with a dedup key: new, or the seq of the one stored before.
async fn insert_keyed(
    conn: &mut SqliteConnection,
    input: &Input,
) -> Result<InputOutcome, StoreError> {
    let event = encode("event", &input.event)?;
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO inputs (at_ms, source, dedup_key, event) VALUES (?, ?, ?, ?) \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING seq",
    )
    .bind(input.at.0)
    .bind(input.source.as_str())
    .bind(input.dedup_key.as_deref())
    .bind(event)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(match seq {
        Some(seq) => InputOutcome::New {
            seq: to_u64("inputs", "seq", seq)?,
        },
        None => {
            let seq: i64 = sqlx::query_scalar("SELECT seq FROM inputs WHERE dedup_key = ?")
                .bind(input.dedup_key.as_deref())
                .fetch_one(&mut *conn)
                .await?;
            InputOutcome::Duplicate {
                seq: to_u64("inputs", "seq", seq)?,
            }
        }
    })
}

/// Incident rows, new or changed, as one JSON array.
fn incident_rows(incidents: &[IncidentRow]) -> Result<String, StoreError> {
    let rows = incidents
        .iter()
        .map(|inc| {
            let merged_into = match inc.state {
                IncidentState::Merged(into) => Some(to_i64("incident", into.0)?),
                _ => None,
            };
            Ok(serde_json::json!([
                to_i64("incident", inc.id)?,
                inc.state.as_str(),
                merged_into,
                inc.severity.as_str(),
                inc.level.as_str(),
                inc.root,
                encode("services", &inc.services)?,
                inc.opened_at.0,
                inc.acknowledged_at.map(|t| t.0),
                inc.acknowledged_by,
                inc.expected_s,
                inc.expected_end.0,
                inc.expected_basis.as_str(),
                inc.resolved_at.map(|t| t.0),
                inc.resolved_by,
                inc.fuel_out.map(|t| t.0),
                inc.meeting_place,
            ]))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    encode("incidents", &rows)
}

/// Timeline entries of every incident in the batch as one JSON array;
/// entries stored before are left as they are.
fn timeline_rows(timeline: &[TimelineAppend]) -> Result<String, StoreError> {
    let mut rows = Vec::new();
    for t in timeline {
        let incident = to_i64("incident", t.incident)?;
        for (i, e) in t.entries.iter().enumerate() {
            let seq = to_i64("timeline index", (t.from + i) as u64)?;
            rows.push((
                incident,
                seq,
                e.at.0,
                &e.kind,
                &e.text,
                e.by.as_deref(),
                e.public,
            ));
        }
    }
    encode("timeline", &rows)
}

/// Alarm rows, in order, as one JSON array.
fn alarm_rows(alarms: &[AlarmRow]) -> Result<String, StoreError> {
    let rows: Vec<_> = alarms
        .iter()
        .map(|a| {
            (
                a.at.0,
                a.source.as_str(),
                &a.component,
                &a.kind,
                a.state.as_str(),
                a.severity.as_str(),
                &a.key,
                a.message.as_deref(),
            )
        })
        .collect();
    encode("alarms", &rows)
}

/// Outbox rows as one JSON array.
fn outbox_rows<'a>(rows: impl Iterator<Item = Queue<'a>>) -> Result<String, StoreError> {
    let rows = rows
        .map(|q| {
            Ok((
                q.key,
                to_i64("incident", q.incident)?,
                q.person,
                q.role,
                q.channel,
                q.reason,
                q.text,
                q.created.0,
                q.due.0,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    encode("outbox", &rows)
}

/// One delivery attempt inside the caller's transaction: the outbox row's
/// new state and the attempt in one trip to SQLite's thread (as for
/// `WRITE_ROWS`), then a fallback row when there is one.
async fn write_attempt(tx: &mut SqliteConnection, a: &Attempt) -> Result<(), StoreError> {
    // The statements after the outbox row's update: the attempt, and
    // whether the row exists (an unknown key is an error, and the caller's
    // transaction rolls back). A row already sent stays sent: a late
    // failure report (a retry racing a success) must not send it again.
    macro_rules! then_record {
        () => {
            "; INSERT INTO deliveries (key, incident, at_ms, channel, person, outcome, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?); \
             SELECT EXISTS (SELECT 1 FROM outbox WHERE key = ?)"
        };
    }
    let incident = to_i64("incident", a.incident)?;
    let query = match a.outcome {
        AttemptOutcome::Sent => sqlx::query(concat!(
            "UPDATE outbox SET state = 'sent', sent_at_ms = coalesce(sent_at_ms, ?), \
             attempts = attempts + (state <> 'sent') WHERE key = ?",
            then_record!()
        ))
        .bind(a.at.0)
        .bind(&a.key),
        AttemptOutcome::Retried => sqlx::query(concat!(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, \
             next_attempt_ms = ? WHERE key = ? AND state <> 'sent'",
            then_record!()
        ))
        .bind(&a.detail)
        .bind(a.next_attempt.unwrap_or(a.at).0)
        .bind(&a.key),
        AttemptOutcome::Failed | AttemptOutcome::Fallback | AttemptOutcome::Dropped => {
            sqlx::query(concat!(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = 'failed' \
                 WHERE key = ? AND state <> 'sent'",
                then_record!()
            ))
            .bind(&a.detail)
            .bind(&a.key)
        }
    };
    let exists: bool = query
        .bind(&a.key)
        .bind(incident)
        .bind(a.at.0)
        .bind(&a.channel)
        .bind(&a.person)
        .bind(a.outcome.as_str())
        .bind(&a.detail)
        .bind(&a.key)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if !exists {
        return Err(StoreError::UnknownNotification(a.key.clone()));
    }
    if let Some(f) = &a.fallback {
        queue_many(
            tx,
            std::iter::once(Queue {
                key: &f.key,
                incident: f.incident,
                person: &f.person,
                role: f.role.as_deref(),
                channel: &f.channel,
                reason: f.reason.as_str(),
                text: &f.text,
                created: f.created_at,
                due: f.next_attempt,
            }),
        )
        .await?;
    }
    Ok(())
}

/// Puts rows into the outbox unless their key is there already, in one
/// statement; returns the keys that were new.
async fn queue_many<'a>(
    conn: &mut SqliteConnection,
    rows: impl Iterator<Item = Queue<'a>>,
) -> Result<Vec<String>, StoreError> {
    let mut rows = rows.peekable();
    if rows.peek().is_none() {
        return Ok(Vec::new());
    }
    let keys = sqlx::query_scalar(
        "INSERT INTO outbox (key, incident, person, role, channel, reason, text, \
         created_at_ms, next_attempt_ms) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
         value ->> 6, value ->> 7, value ->> 8 FROM jsonb_each(?) WHERE true ORDER BY key \
         ON CONFLICT (key) DO NOTHING RETURNING key",
    )
    .bind(outbox_rows(rows)?)
    .fetch_all(&mut *conn)
    .await?;
    Ok(keys)
}

fn input_from_row(r: &SqliteRow) -> Result<StoredInput, StoreError> {
    let seq = to_u64("inputs", "seq", r.try_get("seq")?)?;
    let source: String = r.try_get("source")?;
    let event: String = r.try_get("event")?;
    let event: Event = serde_json::from_str(&event).map_err(|e| StoreError::Corrupt {
        table: "inputs",
        column: "event",
        detail: format!("input {seq}: {e}"),
    })?;
    Ok(StoredInput {
        seq,
        at: Ts(r.try_get("at_ms")?),
        source: decode(&SOURCES, Source::as_str, &source, "inputs", "source")?,
        dedup_key: r.try_get("dedup_key")?,
        event,
    })
}

fn incident_from_row(r: &SqliteRow) -> Result<IncidentRow, StoreError> {
    let state: String = r.try_get("state")?;
    let merged_into = r
        .try_get::<Option<i64>, _>("merged_into")?
        .map(|v| to_u64("incidents", "merged_into", v))
        .transpose()?;
    let severity: String = r.try_get("severity")?;
    let level: String = r.try_get("level")?;
    let basis: String = r.try_get("expected_basis")?;
    let services: String = r.try_get("services")?;
    let services: Vec<String> =
        serde_json::from_str(&services).map_err(|e| StoreError::Corrupt {
            table: "incidents",
            column: "services",
            detail: e.to_string(),
        })?;
    Ok(IncidentRow {
        id: to_u64("incidents", "id", r.try_get("id")?)?,
        state: decode_state(&state, merged_into)?,
        severity: decode(
            &SEVERITIES,
            Severity::as_str,
            &severity,
            "incidents",
            "severity",
        )?,
        level: decode(&LEVELS, Level::as_str, &level, "incidents", "level")?,
        root: r.try_get("root")?,
        services,
        opened_at: Ts(r.try_get("opened_at_ms")?),
        acknowledged_at: ts_opt(r, "acknowledged_at_ms")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        expected_s: r.try_get("expected_s")?,
        expected_end: Ts(r.try_get("expected_end_ms")?),
        expected_basis: decode(&BASES, Basis::as_str, &basis, "incidents", "expected_basis")?,
        resolved_at: ts_opt(r, "resolved_at_ms")?,
        resolved_by: r.try_get("resolved_by")?,
        fuel_out: ts_opt(r, "fuel_out_ms")?,
        meeting_place: r.try_get("meeting_place")?,
    })
}

fn outbox_from_row(r: &SqliteRow) -> Result<OutboxRow, StoreError> {
    let state: String = r.try_get("state")?;
    let attempts: i64 = r.try_get("attempts")?;
    Ok(OutboxRow {
        key: r.try_get("key")?,
        incident: to_u64("outbox", "incident", r.try_get("incident")?)?,
        person: r.try_get("person")?,
        role: r.try_get("role")?,
        channel: r.try_get("channel")?,
        reason: Reason::parse(&r.try_get::<String, _>("reason")?),
        text: r.try_get("text")?,
        created_at: Ts(r.try_get("created_at_ms")?),
        state: decode(
            &OUTBOX_STATES,
            OutboxState::as_str,
            &state,
            "outbox",
            "state",
        )?,
        attempts: u32::try_from(attempts).map_err(|_| StoreError::Corrupt {
            table: "outbox",
            column: "attempts",
            detail: format!("{attempts} attempts"),
        })?,
        next_attempt: Ts(r.try_get("next_attempt_ms")?),
        last_error: r.try_get("last_error")?,
        sent_at: ts_opt(r, "sent_at_ms")?,
    })
}

fn ts_opt(r: &SqliteRow, col: &str) -> Result<Option<Ts>, StoreError> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(Ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlarmKind;
    use crate::engine::{AlarmInput, AlarmSeverity, AlarmState, Event, Source, Ts};

    /// An event that is not JSON, which version 5 refused.
    const NOT_JSON: &str = "INSERT INTO inputs (at_ms, source, event) VALUES (2, 'x', '{')";

    /// A file written by the build before the input log lost its CHECK
    /// keeps its log, and the connection that migrated it checks no more;
    /// incidents' services and snapshots' bodies lose theirs too.
    #[tokio::test]
    async fn a_version_5_file_loses_the_json_checks_and_keeps_its_log() {
        let dir = crate::demo::make_temp_dir().expect("temp dir");
        let path = dir.join("beredskab.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = SqliteConnection::connect(&url).await.expect("connect");
        for sql in &MIGRATIONS[..5] {
            sqlx::raw_sql(*sql)
                .execute(&mut conn)
                .await
                .expect("migrate");
        }
        sqlx::query("PRAGMA user_version = 5")
            .execute(&mut conn)
            .await
            .expect("version");
        let event = serde_json::to_string(&Event::Alarm(AlarmInput {
            component: "srv-1".to_owned(),
            kind: AlarmKind::Server,
            state: AlarmState::Firing,
            severity: AlarmSeverity::Critical,
            source: Source::Mqtt,
            message: None,
            key: None,
        }))
        .expect("event");
        sqlx::query("INSERT INTO inputs (at_ms, source, event) VALUES (1, 'mqtt', ?)")
            .bind(&event)
            .execute(&mut conn)
            .await
            .expect("insert");
        let invalid = sqlx::query(NOT_JSON).execute(&mut conn).await;
        assert!(invalid.is_err(), "version 5 checks the event");
        conn.close().await.expect("close");

        let store = SqliteStore::open(&path).await.expect("open");
        assert_eq!(
            store.schema_version().await.expect("version"),
            SqliteStore::latest_schema_version()
        );
        let log = store.inputs().await.expect("inputs");
        assert_eq!(log.len(), 1);
        assert_eq!(serde_json::to_string(&log[0].event).expect("json"), event);
        assert_eq!(log[0].at, Ts(1));
        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE name = 'inputs'")
            .fetch_one(&store.readers)
            .await
            .expect("schema");
        assert!(!sql.contains("json_valid"), "{sql}");
        assert!(sql.contains("event     TEXT    NOT NULL"), "{sql}");
        for (table, column) in [
            ("incidents", "services           TEXT    NOT NULL,"),
            ("snapshots", "body      TEXT    NOT NULL\n"),
        ] {
            let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE name = ?")
                .bind(table)
                .fetch_one(&store.readers)
                .await
                .expect("schema");
            assert!(!sql.contains("json_valid"), "{sql}");
            assert!(sql.contains(column), "{sql}");
        }
        store.integrity_check().await.expect("integrity");
        // The writer itself no longer checks (it read the schema again).
        let mut conn = store.writer.acquire().await.expect("writer");
        sqlx::query(NOT_JSON)
            .execute(&mut *conn)
            .await
            .expect("unchecked");
        conn.done();
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
