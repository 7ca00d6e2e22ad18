-- The operator surfaces: where the crisis staff meets, once an incident is
-- raised to crisis level, and which notes are public (the status page
-- shows an open incident's latest).
ALTER TABLE incidents ADD COLUMN meeting_place TEXT;
ALTER TABLE timeline ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
