//! The shared store: one PostgreSQL database, which several daemons may use.
//!
//! A pool of connections serves reads and writes alike. Commits are
//! serialised twice: by a mutex within this process (the trait's one
//! writer), and by a transaction-level advisory lock across the processes
//! sharing the database, so that input seqs are taken in commit order and
//! a reader paging the log by seq never skips one committed late. A commit
//! returns once PostgreSQL has committed, which is durable by default
//! (`synchronous_commit` on); there is no relaxed mode for delivery
//! attempts as in SQLite, a PostgreSQL commit costs the same either way.
//!
//! The schema is migrated on connect from [`PG_MIGRATIONS`], one
//! transaction per step under an advisory lock, so that two daemons
//! starting at once do not migrate twice; `schema_version` records the
//! steps done.
//!
//! Notifications are claimed before delivery ([`Store::claim`]): the
//! claim names this instance and an expiry, so two daemons sharing the
//! outbox do not both send a row, and a claim held by a daemon that died
//! runs out.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::Mutex;

use super::{
    ALARM_SEVERITIES, ALARM_STATES, AlarmRow, Attempt, AttemptOutcome, BASES, Batch, CommitOutcome,
    DeliveryRow, HistoryRow, IncidentDetail, IncidentFilter, IncidentRow, Input, InputOutcome,
    LEVELS, OUTBOX_STATES, OutboxRow, OutboxState, PendingSummary, Queue, REASONS, RejectedRow,
    SEVERITIES, SOURCES, SnapshotRow, Store, StoreError, StoredInput, SystemEvent, decode,
    decode_state, encode, to_i64, to_u64, truncate_raw,
};
use crate::clock::wall_now;
use crate::engine::{
    AlarmSeverity, AlarmState, Basis, Event, IncidentState, Level, Reason, RejectReason, Severity,
    Source, TimelineEntry, Ts,
};

/// The schema, in order: migration `i` takes the database to version
/// `i + 1`. Append only.
pub const PG_MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_init.sql"),
    // The tables of several instances on one database (crate::cluster).
    include_str!("migrations/postgres/0002_cluster.sql"),
];

/// [`PgStore::fence`] when no leadership epoch is checked.
const NO_FENCE: i64 = i64::MIN;

/// Connections in the pool: reads beside the one commit at a time.
const POOL_SIZE: u32 = 8;

/// The advisory lock key held while migrating ("beredskab migrate").
const MIGRATE_LOCK: i64 = 0x6265_7265_6d69_6772;

/// The advisory lock key held by every commit ("beredskab commit").
const COMMIT_LOCK: i64 = 0x6265_7265_636f_6d6d;

/// The longest merge chain followed when asking whether an incident is
/// over (a chain is short; a loop in a damaged database must not hang).
const MAX_MERGE_HOPS: usize = 64;

/// Snapshots kept: the newest, and one before it in case the newest cannot
/// be restored by a future build.
const SNAPSHOTS_KEPT: i64 = 2;

/// The store in a PostgreSQL database. Cheap to clone: clones share the
/// pool, the commit lock and the instance id.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Held for each commit: the trait's one writer within this process.
    writer: Arc<Mutex<()>>,
    /// Who holds a claim on an outbox row ([`Store::claim`]).
    instance: Arc<str>,
    /// The leadership epoch every commit checks ([`Store::fence`]).
    fence: Arc<std::sync::atomic::AtomicI64>,
}

impl PgStore {
    /// Connects to the database at `url` and migrates it.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.application_name("beredskab"))
            .await?;
        migrate(&pool).await?;
        Ok(PgStore::with_pool(pool))
    }

    /// Connects for reading only, beside running daemons or without one:
    /// nothing is migrated, every transaction is read-only (a write
    /// fails), and a schema older or newer than this build's is refused.
    /// For `beredskab report`.
    pub async fn connect_read_only(url: &str) -> Result<PgStore, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(
                options
                    .application_name("beredskab-read-only")
                    .options([("default_transaction_read_only", "on")]),
            )
            .await?;
        let store = PgStore::with_pool(pool);
        let found = store.schema_version().await?;
        let known = PgStore::latest_schema_version();
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        if found < known {
            return Err(StoreError::OlderSchema { found, known });
        }
        Ok(store)
    }

    fn with_pool(pool: PgPool) -> PgStore {
        let id: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(16)
            .collect();
        PgStore {
            pool,
            writer: Arc::new(Mutex::new(())),
            instance: id.into(),
            fence: Arc::new(std::sync::atomic::AtomicI64::new(NO_FENCE)),
        }
    }

    /// The same store claiming outbox rows as `id` (by default a random id
    /// made at connect): a daemon that restarts under a fixed id takes its
    /// own unexpired claims back at once.
    pub fn with_instance(self, id: String) -> PgStore {
        PgStore {
            instance: id.into(),
            ..self
        }
    }

    /// The id this store claims outbox rows as.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The schema version the database is at (0: none).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        schema_version(&mut conn).await
    }

    /// The schema version this build migrates to.
    pub fn latest_schema_version() -> i64 {
        PG_MIGRATIONS.len() as i64
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The version recorded in `schema_version`, or 0 before the first
/// migration made that table.
async fn schema_version(conn: &mut PgConnection) -> Result<i64, StoreError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('schema_version') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(0);
    }
    let v: i64 = sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM schema_version")
        .fetch_one(&mut *conn)
        .await?;
    Ok(v)
}

/// Brings the schema up to [`PG_MIGRATIONS`], one transaction per step,
/// each under the migration lock: a second daemon starting at once waits,
/// then finds the step done.
async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    let known = PgStore::latest_schema_version();
    let mut conn = pool.acquire().await?;
    loop {
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await?;
        let found = schema_version(&mut tx).await?;
        if found > known {
            return Err(StoreError::NewerSchema { found, known });
        }
        let Some(sql) = usize::try_from(found)
            .ok()
            .and_then(|i| PG_MIGRATIONS.get(i))
        else {
            return Ok(());
        };
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
            .bind(found + 1)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = found + 1, "store schema migrated");
    }
}

impl Store for PgStore {
    async fn commit(&self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(CommitOutcome::default());
        }
        let _writer = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(COMMIT_LOCK)
            .execute(&mut *tx)
            .await?;
        let fence = self.fence.load(std::sync::atomic::Ordering::Relaxed);
        if fence != NO_FENCE {
            // Shares the row with other commits, but waits for (and then
            // sees) a new leader's raise of the epoch.
            let epoch: i64 =
                sqlx::query_scalar("SELECT epoch FROM cluster_leader WHERE id = 1 FOR SHARE")
                    .fetch_one(&mut *tx)
                    .await?;
            if epoch != fence {
                return Err(StoreError::Fenced { held: fence, epoch });
            }
        }
        let outcome = write_batch(&mut tx, batch).await?;
        if !batch.forwarded.is_empty() {
            sqlx::query(
                "UPDATE cluster_inbox SET done_ms = $2 WHERE id = ANY($1) AND done_ms IS NULL",
            )
            .bind(&batch.forwarded)
            .bind(crate::clock::wall_now().0)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    fn fence(&self, epoch: Option<i64>) {
        self.fence.store(
            epoch.unwrap_or(NO_FENCE),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    async fn inputs_after(&self, after: u64, limit: u32) -> Result<Vec<StoredInput>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, source, dedup_key, event FROM inputs \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(to_i64("seq", after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
                 AND id < $1 ORDER BY id DESC LIMIT $2"
            }
            IncidentFilter::Resolved => {
                "SELECT * FROM incidents WHERE state = 'resolved' \
                 AND id < $1 ORDER BY id DESC LIMIT $2"
            }
            IncidentFilter::All => {
                "SELECT * FROM incidents WHERE id < $1 ORDER BY id DESC LIMIT $2"
            }
        };
        let before = match before {
            Some(b) => to_i64("incident", b)?,
            None => i64::MAX,
        };
        let rows = sqlx::query(sql)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(incident_from_row).collect()
    }

    async fn incident(&self, id: u64) -> Result<Option<IncidentDetail>, StoreError> {
        let id = to_i64("incident", id)?;
        // One snapshot, so the incident and its timeline agree.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let Some(row) = sqlx::query("SELECT * FROM incidents WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let incident = incident_from_row(&row)?;
        let timeline = sqlx::query(
            "SELECT at_ms, kind, text, \"by\", public FROM timeline WHERE incident = $1 \
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
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
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
            "SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_ms <= $1 \
             ORDER BY next_attempt_ms, id LIMIT $2",
        )
        .bind(now.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn notifications(&self, incident: u64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE incident = $1 ORDER BY id")
            .bind(to_i64("incident", incident)?)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_from_row).collect()
    }

    async fn next_due(&self) -> Result<Option<Ts>, StoreError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT min(next_attempt_ms) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(at.map(Ts))
    }

    async fn mark_sent(&self, key: &str, at: Ts) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at_ms = coalesce(sent_at_ms, $1), \
             attempts = attempts + CASE WHEN state <> 'sent' THEN 1 ELSE 0 END, \
             claimed_by = NULL, claimed_until = NULL WHERE key = $2",
        )
        .bind(at.0)
        .bind(key)
        .execute(&self.pool)
        .await?;
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
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, \
             state = CASE WHEN $2::BIGINT IS NULL THEN 'failed' ELSE 'pending' END, \
             next_attempt_ms = coalesce($2, next_attempt_ms), \
             claimed_by = NULL, claimed_until = NULL \
             WHERE key = $3 AND state <> 'sent'",
        )
        .bind(error)
        .bind(next_attempt.map(|t| t.0))
        .bind(key)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM outbox WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            if exists.is_none() {
                return Err(StoreError::UnknownNotification(key.to_owned()));
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn write_snapshot(
        &self,
        at: Ts,
        after_seq: u64,
        body: Arc<str>,
    ) -> Result<(), StoreError> {
        // Not under the commit lock: a snapshot names the input it
        // follows, and is right for it whoever leads now.
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO snapshots (at_ms, after_seq, body) VALUES ($1, $2, $3)")
            .bind(at.0)
            .bind(to_i64("seq", after_seq)?)
            .bind(&*body)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM snapshots WHERE id NOT IN \
             (SELECT id FROM snapshots ORDER BY after_seq DESC, id DESC LIMIT $1)",
        )
        .bind(SNAPSHOTS_KEPT)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn latest_snapshot(&self) -> Result<Option<SnapshotRow>, StoreError> {
        let row = sqlx::query(
            "SELECT at_ms, after_seq, body FROM snapshots \
             ORDER BY after_seq DESC, id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
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
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn alarms(&self, limit: u32, before: Option<u64>) -> Result<Vec<AlarmRow>, StoreError> {
        let before = match before {
            Some(b) => to_i64("alarm id", b)?,
            None => i64::MAX,
        };
        let rows = sqlx::query(
            "SELECT id, at_ms, source, component, kind, state, severity, \"key\", message \
             FROM alarms WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        for a in attempts {
            write_attempt(&mut tx, a).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn deliveries(&self, incident: u64) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, incident, at_ms, channel, person, outcome, detail FROM deliveries \
             WHERE incident = $1 ORDER BY id",
        )
        .bind(to_i64("incident", incident)?)
        .fetch_all(&self.pool)
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
            .fetch_all(&self.pool)
            .await?)
    }

    async fn used_links_of(&self, incidents: &[u64]) -> Result<Vec<(u64, String)>, StoreError> {
        let mut out = Vec::new();
        for &id in incidents {
            let links: Vec<String> =
                sqlx::query_scalar("SELECT link FROM used_links WHERE incident = $1")
                    .bind(to_i64("incident", id)?)
                    .fetch_all(&self.pool)
                    .await?;
            out.extend(links.into_iter().map(|l| (id, l)));
        }
        Ok(out)
    }

    async fn incident_over(&self, id: u64) -> Result<bool, StoreError> {
        let mut id = to_i64("incident", id)?;
        for _ in 0..MAX_MERGE_HOPS {
            let row: Option<(String, Option<i64>)> =
                sqlx::query_as("SELECT state, merged_into FROM incidents WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
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
        .fetch_all(&self.pool)
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
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM used_links WHERE link = $1)")
                .bind(link)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn system_events(&self, limit: u32) -> Result<Vec<SystemEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, detail FROM system_events ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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

    /// Rows another instance claimed are skipped, not waited for (SKIP
    /// LOCKED), and so are rows locked by a commit or an attempt being
    /// recorded: the caller reads the outbox again soon. A claim is
    /// compared with the wall clock, which the daemons' engine times
    /// follow.
    async fn claim(&self, keys: &[String], until: Ts) -> Result<Vec<String>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let won: Vec<String> = sqlx::query_scalar(
            "UPDATE outbox SET claimed_by = $2, claimed_until = $3 \
             WHERE key IN (SELECT key FROM outbox WHERE key = ANY($1) AND state = 'pending' \
             AND (claimed_until IS NULL OR claimed_until < $4 OR claimed_by = $2 \
                  OR claimed_by IN (SELECT instance FROM cluster_instances WHERE seen_ms < \
                      (extract(epoch from clock_timestamp()) * 1000)::bigint - $5)) \
             FOR UPDATE SKIP LOCKED) RETURNING key",
        )
        .bind(keys)
        .bind(&*self.instance)
        .bind(until.0)
        .bind(wall_now().0)
        // The claims of an instance of the cluster that stopped saying it
        // lives are void: its notifications go out now, not when the claim
        // runs out. One that never said it lived (no cluster) keeps them.
        .bind(i64::try_from(super::PRESUMED_DEAD.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        // In the order asked for, as the caller queued them.
        Ok(keys.iter().filter(|k| won.contains(k)).cloned().collect())
    }
}

/// Every write of a batch, inside the caller's transaction. Projections
/// come after the inputs; the timeline's foreign key is checked at commit,
/// so the order of incidents and timeline entries does not matter.
async fn write_batch(conn: &mut PgConnection, batch: &Batch) -> Result<CommitOutcome, StoreError> {
    let mut outcome = CommitOutcome {
        inputs: Vec::with_capacity(batch.inputs.len()),
        queued: 0,
        new_notifications: Vec::new(),
    };
    // Runs of inputs without a dedup key go in one statement each; an
    // input with a key goes alone, so that the log keeps the batch's order.
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

    for r in &batch.rejected {
        sqlx::query(
            "INSERT INTO rejected (at_ms, source, reason, detail, raw, raw_len, dedup_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedup_key) DO NOTHING",
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

    upsert_incidents(conn, &batch.incidents).await?;
    insert_timeline(conn, &batch.timeline).await?;

    for (i, q) in batch.notifications.iter().enumerate() {
        let n = &q.notification;
        let new = queue(
            conn,
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
            },
        )
        .await?;
        outcome.queued += usize::from(new);
        if new {
            outcome.new_notifications.push(i);
        }
    }

    insert_alarms(conn, &batch.alarms).await?;

    for e in &batch.events {
        sqlx::query("INSERT INTO system_events (at_ms, kind, detail) VALUES ($1, $2, $3)")
            .bind(e.at.0)
            .bind(&e.kind)
            .bind(&e.detail)
            .execute(&mut *conn)
            .await?;
    }

    for (name, value) in &batch.meta {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *conn)
        .await?;
    }

    for u in &batch.used_links {
        sqlx::query(
            "INSERT INTO used_links (link, at_ms, incident, person) VALUES ($1, $2, $3, $4) \
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

/// The batch's incident rows in one statement (columns as arrays), the
/// last row of an incident winning should one come twice.
async fn upsert_incidents(conn: &mut PgConnection, rows: &[IncidentRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut last: std::collections::BTreeMap<u64, &IncidentRow> = std::collections::BTreeMap::new();
    for r in rows {
        last.insert(r.id, r);
    }
    let n = last.len();
    let (mut id, mut state, mut merged_into, mut severity, mut level, mut root) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut services, mut opened, mut acked_at, mut acked_by, mut expected_s, mut expected_end) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut basis, mut resolved_at, mut resolved_by, mut fuel_out, mut meeting_place) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for inc in last.values() {
        id.push(to_i64("incident", inc.id)?);
        state.push(inc.state.as_str());
        merged_into.push(match inc.state {
            IncidentState::Merged(into) => Some(to_i64("incident", into.0)?),
            _ => None,
        });
        severity.push(inc.severity.as_str());
        level.push(inc.level.as_str());
        root.push(inc.root.as_str());
        services.push(encode("services", &inc.services)?);
        opened.push(inc.opened_at.0);
        acked_at.push(inc.acknowledged_at.map(|t| t.0));
        acked_by.push(inc.acknowledged_by.as_deref());
        expected_s.push(inc.expected_s);
        expected_end.push(inc.expected_end.0);
        basis.push(inc.expected_basis.as_str());
        resolved_at.push(inc.resolved_at.map(|t| t.0));
        resolved_by.push(inc.resolved_by.as_deref());
        fuel_out.push(inc.fuel_out.map(|t| t.0));
        meeting_place.push(inc.meeting_place.as_deref());
    }
    sqlx::query(concat!(
        "INSERT INTO incidents (",
        incident_columns!(),
        ") ",
        "SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[], \
         $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::TEXT[], $11::BIGINT[], \
         $12::BIGINT[], $13::TEXT[], $14::BIGINT[], $15::TEXT[], $16::BIGINT[], $17::TEXT[]) ",
        incident_upsert!()
    ))
    .bind(id)
    .bind(state)
    .bind(merged_into)
    .bind(severity)
    .bind(level)
    .bind(root)
    .bind(services)
    .bind(opened)
    .bind(acked_at)
    .bind(acked_by)
    .bind(expected_s)
    .bind(expected_end)
    .bind(basis)
    .bind(resolved_at)
    .bind(resolved_by)
    .bind(fuel_out)
    .bind(meeting_place)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Every timeline entry of the batch in one statement (columns as arrays).
async fn insert_timeline(
    conn: &mut PgConnection,
    appends: &[super::TimelineAppend],
) -> Result<(), StoreError> {
    let n: usize = appends.iter().map(|t| t.entries.len()).sum();
    if n == 0 {
        return Ok(());
    }
    let (mut incident, mut seq, mut at, mut kind, mut text, mut by, mut public) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for t in appends {
        let id = to_i64("incident", t.incident)?;
        for (i, e) in t.entries.iter().enumerate() {
            incident.push(id);
            seq.push(to_i64("timeline index", (t.from + i) as u64)?);
            at.push(e.at.0);
            kind.push(e.kind.as_str());
            text.push(e.text.as_str());
            by.push(e.by.as_deref());
            public.push(e.public);
        }
    }
    sqlx::query(
        "INSERT INTO timeline (incident, seq, at_ms, kind, text, \"by\", public) \
         SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], \
         $5::TEXT[], $6::TEXT[], $7::BOOLEAN[]) \
         ON CONFLICT (incident, seq) DO NOTHING",
    )
    .bind(incident)
    .bind(seq)
    .bind(at)
    .bind(kind)
    .bind(text)
    .bind(by)
    .bind(public)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inputs without a dedup key, in order, in one statement (columns as
/// arrays: one round trip however many there are). The identity takes
/// values in the order the rows are inserted; the seqs handed back are
/// sorted, so the batch's first input gets the lowest.
async fn insert_keyless(conn: &mut PgConnection, inputs: &[Input]) -> Result<Vec<u64>, StoreError> {
    let mut at = Vec::with_capacity(inputs.len());
    let mut source = Vec::with_capacity(inputs.len());
    let mut event = Vec::with_capacity(inputs.len());
    for i in inputs {
        at.push(i.at.0);
        source.push(i.source.as_str());
        event.push(encode("event", &i.event)?);
    }
    let seqs: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO inputs (at_ms, source, dedup_key, event) \
         SELECT a, s, NULL, e FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[]) \
         WITH ORDINALITY AS t (a, s, e, n) ORDER BY n RETURNING seq",
    )
    .bind(at)
    .bind(source)
    .bind(event)
    .fetch_all(&mut *conn)
    .await?;
    if seqs.len() != inputs.len() {
        return Err(StoreError::Corrupt {
            table: "inputs",
            column: "seq",
            detail: format!("{} of {} inputs inserted", seqs.len(), inputs.len()),
        });
    }
    let mut seqs = seqs
        .into_iter()
        .map(|s| to_u64("inputs", "seq", s))
        .collect::<Result<Vec<_>, _>>()?;
    seqs.sort_unstable();
    Ok(seqs)
}

/// An input with a dedup key: new, or the seq of the one stored before.
async fn insert_keyed(conn: &mut PgConnection, input: &Input) -> Result<InputOutcome, StoreError> {
    let event = encode("event", &input.event)?;
    let seq: Option<i64> = sqlx::query_scalar(
        "INSERT INTO inputs (at_ms, source, dedup_key, event) VALUES ($1, $2, $3, $4) \
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
            let seq: i64 = sqlx::query_scalar("SELECT seq FROM inputs WHERE dedup_key = $1")
                .bind(input.dedup_key.as_deref())
                .fetch_one(&mut *conn)
                .await?;
            InputOutcome::Duplicate {
                seq: to_u64("inputs", "seq", seq)?,
            }
        }
    })
}

/// Alarm rows, in order, in one statement.
async fn insert_alarms(conn: &mut PgConnection, alarms: &[AlarmRow]) -> Result<(), StoreError> {
    if alarms.is_empty() {
        return Ok(());
    }
    let n = alarms.len();
    let (mut at, mut source, mut component, mut kind) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut state, mut severity, mut key, mut message) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for a in alarms {
        at.push(a.at.0);
        source.push(a.source.as_str());
        component.push(a.component.as_str());
        kind.push(a.kind.as_str());
        state.push(a.state.as_str());
        severity.push(a.severity.as_str());
        key.push(a.key.as_str());
        message.push(a.message.as_deref());
    }
    sqlx::query(
        "INSERT INTO alarms (at_ms, source, component, kind, state, severity, \"key\", message) \
         SELECT a, s, c, k, st, sv, ky, m FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], \
         $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[]) \
         WITH ORDINALITY AS t (a, s, c, k, st, sv, ky, m, n) ORDER BY n",
    )
    .bind(at)
    .bind(source)
    .bind(component)
    .bind(kind)
    .bind(state)
    .bind(severity)
    .bind(key)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One delivery attempt inside the caller's transaction: the outbox row's
/// new state, the attempt, and a fallback row when there is one. The row's
/// claim ends with the attempt.
async fn write_attempt(tx: &mut PgConnection, a: &Attempt) -> Result<(), StoreError> {
    let incident = to_i64("incident", a.incident)?;
    // A row already sent stays sent: a late failure report (a retry
    // racing a success) must not send it again.
    let updated = match a.outcome {
        AttemptOutcome::Sent => sqlx::query(
            "UPDATE outbox SET state = 'sent', sent_at_ms = coalesce(sent_at_ms, $1), \
             attempts = attempts + CASE WHEN state <> 'sent' THEN 1 ELSE 0 END, \
             claimed_by = NULL, claimed_until = NULL WHERE key = $2",
        )
        .bind(a.at.0)
        .bind(&a.key),
        AttemptOutcome::Retried => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, \
             next_attempt_ms = $2, claimed_by = NULL, claimed_until = NULL \
             WHERE key = $3 AND state <> 'sent'",
        )
        .bind(&a.detail)
        .bind(a.next_attempt.unwrap_or(a.at).0)
        .bind(&a.key),
        AttemptOutcome::Failed | AttemptOutcome::Fallback | AttemptOutcome::Dropped => sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, state = 'failed', \
             claimed_by = NULL, claimed_until = NULL WHERE key = $2 AND state <> 'sent'",
        )
        .bind(&a.detail)
        .bind(&a.key),
    }
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM outbox WHERE key = $1")
            .bind(&a.key)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::UnknownNotification(a.key.clone()));
        }
    }
    sqlx::query(
        "INSERT INTO deliveries (key, incident, at_ms, channel, person, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&a.key)
    .bind(incident)
    .bind(a.at.0)
    .bind(&a.channel)
    .bind(&a.person)
    .bind(a.outcome.as_str())
    .bind(&a.detail)
    .execute(&mut *tx)
    .await?;
    if let Some(f) = &a.fallback {
        queue(
            tx,
            Queue {
                key: &f.key,
                incident: f.incident,
                person: &f.person,
                role: f.role.as_deref(),
                channel: &f.channel,
                reason: f.reason.as_str(),
                text: &f.text,
                created: f.created_at,
                due: f.next_attempt,
            },
        )
        .await?;
    }
    Ok(())
}

/// Puts a row into the outbox unless its key is there already; true when
/// it is new.
async fn queue(conn: &mut PgConnection, q: Queue<'_>) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO outbox (key, incident, person, role, channel, reason, text, \
         created_at_ms, next_attempt_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(q.key)
    .bind(to_i64("incident", q.incident)?)
    .bind(q.person)
    .bind(q.role)
    .bind(q.channel)
    .bind(q.reason)
    .bind(q.text)
    .bind(q.created.0)
    .bind(q.due.0)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

fn input_from_row(r: &PgRow) -> Result<StoredInput, StoreError> {
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

fn incident_from_row(r: &PgRow) -> Result<IncidentRow, StoreError> {
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

fn outbox_from_row(r: &PgRow) -> Result<OutboxRow, StoreError> {
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

fn ts_opt(r: &PgRow, col: &str) -> Result<Option<Ts>, StoreError> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(Ts))
}
