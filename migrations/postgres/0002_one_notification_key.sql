-- One index for finding a notification by participation instead of two, as SQLite's migration 6
-- does: the unique key leads with participation_id, so it serves the participation look-ups
-- (the delivery log's search, erasure) that `notifications_participation` served. Each index on
-- a participation id (a UUID in Qualifio's v2 format) costs every accepted notification a page
-- of its own.
ALTER TABLE notifications
    DROP CONSTRAINT notifications_source_participation_id_body_sha256_key,
    ADD CONSTRAINT notifications_key UNIQUE (participation_id, source, body_sha256);
DROP INDEX notifications_participation;
