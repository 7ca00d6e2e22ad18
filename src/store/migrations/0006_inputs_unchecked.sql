-- The input log's CHECK (json_valid(event)) goes: every event is written
-- by serde from an engine::Event, and the check parsed each one again
-- inside the commit, on SQLite's one writer thread (about a twentieth of
-- the daemon's CPU at high MQTT rates). Readers decode every event anyway
-- and fail loudly on one that does not parse.
--
-- Removing a CHECK does not change how rows are stored, so SQLite's own
-- procedure for it (https://sqlite.org/lang_altertable.html, "Making Other
-- Kinds Of Table Schema Changes") edits the table's text in place instead
-- of copying the whole log into a new table.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'NOT NULL CHECK (json_valid(event))', 'NOT NULL')
 WHERE type = 'table' AND name = 'inputs';
-- Reads the schema again (a text that does not parse fails the step, and
-- the transaction rolls it back).
PRAGMA writable_schema = RESET;
-- An edit of sqlite_schema leaves the schema's version alone, which is
-- how other connections learn to read the schema again; creating and
-- dropping a table moves it on.
CREATE TABLE schema_edited (x);
DROP TABLE schema_edited;
