-- The CHECK (json_valid(...)) of incidents.services and snapshots.body
-- goes, as the input log's did (0006): both are written by serde, and the
-- check parsed each one again inside the commit, on SQLite's one writer
-- thread (about a twentieth of that thread's time at high MQTT rates, and
-- a whole snapshot's text each time one is stored). Readers decode them
-- and fail loudly on one that does not parse.
--
-- Removing a CHECK does not change how rows are stored: the table's text
-- is edited in place (https://sqlite.org/lang_altertable.html, "Making
-- Other Kinds Of Table Schema Changes").
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
   SET sql = replace(sql, 'NOT NULL CHECK (json_valid(services))', 'NOT NULL')
 WHERE type = 'table' AND name = 'incidents';
UPDATE sqlite_schema
   SET sql = replace(sql, 'NOT NULL CHECK (json_valid(body))', 'NOT NULL')
 WHERE type = 'table' AND name = 'snapshots';
-- Reads the schema again (a text that does not parse fails the step, and
-- the transaction rolls it back).
PRAGMA writable_schema = RESET;
-- Moves the schema's version on, so other connections read it again.
CREATE TABLE schema_edited (x);
DROP TABLE schema_edited;
