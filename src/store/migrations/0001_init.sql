-- The first schema. The input log is the source of truth: the daemon rebuilds
-- the engine by replaying `inputs` in `seq` order. Every other table is a
-- projection for the API, the reports and the notifier, written idempotently
-- so that a replay after a crash can write it again without doubling it.

-- Every input the engine was given, with the time it was given.
CREATE TABLE inputs (
    -- AUTOINCREMENT: a seq is never reused, so replay order is insert order.
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    source    TEXT    NOT NULL,
    -- A business key (say source + topic + message key): broker redelivery
    -- of the same alarm is stored once. NULL for inputs without one.
    dedup_key TEXT    UNIQUE,
    -- serde JSON of engine::Event.
    event     TEXT    NOT NULL CHECK (json_valid(event))
);

-- Input that could not be used, kept with its reason (SPEC section 3).
CREATE TABLE rejected (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    source    TEXT    NOT NULL,
    reason    TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    -- The raw bytes, truncated; raw_len is the length before truncation.
    raw       BLOB    NOT NULL,
    raw_len   INTEGER NOT NULL,
    dedup_key TEXT    UNIQUE
);
CREATE INDEX rejected_at ON rejected (at_ms);

-- The current state of every incident (SPEC section 5), upserted.
CREATE TABLE incidents (
    id                 INTEGER PRIMARY KEY,
    state              TEXT    NOT NULL
        CHECK (state IN ('open', 'acknowledged', 'resolved', 'merged')),
    merged_into        INTEGER,
    severity           TEXT    NOT NULL,
    level              TEXT    NOT NULL,
    root               TEXT    NOT NULL,
    -- JSON array of service ids, sorted.
    services           TEXT    NOT NULL CHECK (json_valid(services)),
    opened_at_ms       INTEGER NOT NULL,
    acknowledged_at_ms INTEGER,
    acknowledged_by    TEXT,
    expected_s         INTEGER NOT NULL,
    expected_end_ms    INTEGER NOT NULL,
    expected_basis     TEXT    NOT NULL,
    resolved_at_ms     INTEGER,
    resolved_by        TEXT,
    fuel_out_ms        INTEGER
);
CREATE INDEX incidents_state ON incidents (state, id);

-- Each incident's log of events and decisions; seq is the entry's index in
-- the engine's timeline, which makes writing it again harmless.
CREATE TABLE timeline (
    incident INTEGER NOT NULL
        REFERENCES incidents (id) DEFERRABLE INITIALLY DEFERRED,
    seq      INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    text     TEXT    NOT NULL,
    "by"     TEXT,
    PRIMARY KEY (incident, seq)
) WITHOUT ROWID;

-- The notification outbox: written with the change that caused it, sent at
-- least once by the notifier, never queued twice (the key is unique).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT    NOT NULL UNIQUE,
    incident        INTEGER NOT NULL,
    person          TEXT    NOT NULL,
    role            TEXT,
    channel         TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    text            TEXT    NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    sent_at_ms      INTEGER
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms, id) WHERE state = 'pending';
CREATE INDEX outbox_incident ON outbox (incident, id);

-- Resolved incidents' durations by root, for estimates from history.
CREATE VIEW history AS
SELECT id AS incident,
       root,
       CAST(round((resolved_at_ms - opened_at_ms) / 1000.0) AS INTEGER) AS duration_s,
       resolved_at_ms
FROM incidents
WHERE state = 'resolved' AND resolved_at_ms IS NOT NULL;
