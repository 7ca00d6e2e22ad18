-- What the daemon needs beside the input log: accepted alarm transitions for
-- the API and reports, engine snapshots that bound the replay at start-up,
-- the daemon's own events (a broker that lost our session), and small
-- key-value facts such as how far the engine's decisions are committed.

-- Every accepted alarm state change, as the engine saw it.
CREATE TABLE alarms (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    source    TEXT    NOT NULL,
    component TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    state     TEXT    NOT NULL CHECK (state IN ('firing', 'cleared')),
    severity  TEXT    NOT NULL,
    "key"     TEXT    NOT NULL,
    message   TEXT
);
CREATE INDEX alarms_component ON alarms (component, id);

-- The engine's state after input `after_seq` (JSON of engine::Snapshot).
-- Start-up restores the newest and replays the inputs after it.
CREATE TABLE snapshots (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    after_seq INTEGER NOT NULL,
    body      TEXT    NOT NULL CHECK (json_valid(body))
);

-- Things that happened to the daemon rather than to an incident.
CREATE TABLE system_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    detail TEXT    NOT NULL
);

-- Small facts: `watermark_ms`, the engine time up to which every decision
-- is committed; `mqtt_seen`, whether the broker ever had our session.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
