-- Several instances on one database (src/cluster): who leads, who lives,
-- and what the followers took in for the leader's engine.

-- One row: the leadership epoch, raised by every instance that takes the
-- advisory lock. The leader's commits check it (a fencing token).
CREATE TABLE cluster_leader (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    epoch    BIGINT  NOT NULL,
    instance TEXT,
    since_ms BIGINT
);
INSERT INTO cluster_leader (id, epoch) VALUES (1, 0);

-- Every instance's last heartbeat, by the database's clock.
CREATE TABLE cluster_instances (
    instance TEXT    PRIMARY KEY,
    seen_ms  BIGINT  NOT NULL,
    leader   BOOLEAN NOT NULL DEFAULT false
);

-- What a follower took in, in the order it was stored. The leader's
-- commit that takes a row in sets done_ms; a request waits for answer.
CREATE TABLE cluster_inbox (
    id          BIGSERIAL PRIMARY KEY,
    instance    TEXT   NOT NULL,
    received_ms BIGINT NOT NULL,
    body        TEXT   NOT NULL,
    done_ms     BIGINT,
    answer      TEXT
);
CREATE INDEX cluster_inbox_pending ON cluster_inbox (id) WHERE done_ms IS NULL;
CREATE INDEX cluster_inbox_done ON cluster_inbox (done_ms) WHERE done_ms IS NOT NULL;
