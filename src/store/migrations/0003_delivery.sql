-- Delivering notifications: every attempt of the notifier, for the
-- incident's timeline and the report, and the acknowledgement links that
-- have been used (each works once).

-- One row per delivery attempt and its outcome.
CREATE TABLE deliveries (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    key      TEXT    NOT NULL,
    incident INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    channel  TEXT    NOT NULL,
    person   TEXT    NOT NULL,
    -- sent | failed | retried | fallback
    outcome  TEXT    NOT NULL,
    detail   TEXT    NOT NULL
);
CREATE INDEX deliveries_incident ON deliveries (incident, id);

-- Acknowledgement links already used: a link is a bearer of one action.
CREATE TABLE used_links (
    link     TEXT    PRIMARY KEY,
    at_ms    INTEGER NOT NULL,
    incident INTEGER NOT NULL,
    person   TEXT    NOT NULL
) WITHOUT ROWID;
