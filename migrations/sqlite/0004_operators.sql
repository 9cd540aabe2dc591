-- Operators' words and what they need. Runs outside a transaction of the migrator's own: the
-- deliveries table is rebuilt (SQLite cannot change a CHECK), which needs foreign keys off.
PRAGMA foreign_keys = OFF;
BEGIN;

-- Statuses: pending (due, never tried, or replayed), retrying (tried, due again later),
-- delivered, dead, cancelled (by an operator; kept in the log).
-- retry_base: the attempts made before the last replay; the retry schedule restarts there.
CREATE TABLE deliveries_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id  INTEGER NOT NULL REFERENCES notifications(id) ON DELETE CASCADE,
    destination      TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('pending', 'retrying', 'delivered', 'dead', 'cancelled')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    retry_base       INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    lease_token      TEXT,
    claimed_at       INTEGER,
    in_doubt_since   INTEGER,
    last_error       TEXT,
    state            TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
INSERT INTO deliveries_new (id, notification_id, destination, status, attempts, next_attempt_at,
    lease_owner, lease_expires_at, lease_token, claimed_at, in_doubt_since, last_error, state,
    created_at, updated_at)
SELECT id, notification_id, destination,
       CASE WHEN status = 'pending' AND attempts > 0 THEN 'retrying' ELSE status END,
       attempts, next_attempt_at, lease_owner, lease_expires_at, lease_token, claimed_at,
       in_doubt_since, last_error, state, created_at, updated_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (destination, status, next_attempt_at);
CREATE INDEX deliveries_notification ON deliveries (notification_id);
CREATE INDEX deliveries_updated ON deliveries (status, updated_at);

-- Which deliveries a participation has (the delivery log's search, and erasure).
CREATE INDEX notifications_participation ON notifications (participation_id);
-- Recent attempts (health over the last 15 minutes).
CREATE INDEX attempts_started ON attempts (started_at);

-- Anonymous counts of attempts per destination and hour, for charts and stats: they outlive
-- the purge of old deliveries and the erasure of a participation.
CREATE TABLE attempt_counts (
    destination TEXT    NOT NULL,
    hour        INTEGER NOT NULL, -- Unix hours
    delivered   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (destination, hour)
);
INSERT INTO attempt_counts (destination, hour, delivered, failed)
SELECT d.destination, a.started_at / 3600000,
       SUM(a.outcome = 'delivered'), SUM(a.outcome != 'delivered')
FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
GROUP BY 1, 2;

COMMIT;
PRAGMA foreign_keys = ON;
