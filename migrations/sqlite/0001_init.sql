-- Times are Unix milliseconds (UTC).
CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source           TEXT    NOT NULL,
    participation_id TEXT    NOT NULL,
    format           TEXT    NOT NULL,
    body_sha256      TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    received_at      INTEGER NOT NULL,
    UNIQUE (source, participation_id, body_sha256)
);

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id  INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    destination      TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    -- Also the lease's token: an attempt is recorded only while its lease still holds.
    lease_expires_at INTEGER,
    -- When the current claim was made; cleared when its attempt is recorded.
    claimed_at       INTEGER,
    -- The claim before this one, if its attempt was never recorded (a crash, a stop): that
    -- attempt may have reached the destination.
    in_doubt_since   INTEGER,
    last_error       TEXT,
    state            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (destination, status, next_attempt_at);
CREATE INDEX deliveries_notification ON deliveries (notification_id);
CREATE INDEX deliveries_updated ON deliveries (status, updated_at);

CREATE TABLE attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    started_at      INTEGER NOT NULL,
    duration_ms     INTEGER NOT NULL,
    outcome         TEXT    NOT NULL,
    status_code     INTEGER,
    error           TEXT,
    response        TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
