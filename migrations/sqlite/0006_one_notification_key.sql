-- One index for finding a notification by participation instead of two: the unique key leads
-- with participation_id, so it serves the participation look-ups (the delivery log's search,
-- erasure) that `notifications_participation` served. Participation ids are UUIDs in Qualifio's
-- v2 format: each index on them costs every accepted notification a page of its own in the
-- commit, so the second was a quarter of the accept path's work.
-- SQLite cannot change a table's UNIQUE constraint, so the table is rebuilt (once: this reads
-- and writes every stored notification). Runs outside a transaction of the migrator's own, as
-- foreign keys must be off while the table deliveries refer to is replaced.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE notifications_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    source           TEXT    NOT NULL,
    participation_id TEXT    NOT NULL,
    format           TEXT    NOT NULL,
    body_sha256      TEXT    NOT NULL,
    body             TEXT    NOT NULL,
    received_at      INTEGER NOT NULL,
    UNIQUE (participation_id, source, body_sha256)
);
INSERT INTO notifications_new (id, source, participation_id, format, body_sha256, body, received_at)
SELECT id, source, participation_id, format, body_sha256, body, received_at FROM notifications;
-- Ids are never given twice, also those of notifications purged before the rebuild.
DELETE FROM sqlite_sequence WHERE name = 'notifications_new';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'notifications_new', seq FROM sqlite_sequence WHERE name = 'notifications';
DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;
CREATE INDEX notifications_received ON notifications (received_at);

COMMIT;
PRAGMA foreign_keys = ON;
