-- Fewer index entries per delivery. PostgreSQL writes a new entry in every index of a row that
-- an update cannot keep in place, and a claim and a record each update the row: with five
-- indexes on `deliveries`, index insertions were a third of PostgreSQL's CPU in a drain.
-- - `deliveries_updated` leaves out pending deliveries, which no query reads by their update
--   time (the purge and the latest errors read finished or retried ones): accepting a delivery
--   and claiming a pending one add nothing to it.
-- - `deliveries_destination` goes: the due index serves a destination's waiting deliveries,
--   `deliveries_updated` a status's finished ones, and the stats read the whole table anyway.
--   Listing or replaying one destination's finished deliveries of every status now filters
--   the newest first instead of reading an index of that destination: an operator's query,
--   slower for a destination with few deliveries among many.
-- The new index is built first, while reads go on (it blocks writes until the migration
-- commits); only the drops, which are quick, block reads too.
CREATE INDEX deliveries_finished ON deliveries (status, updated_at) WHERE status <> 'pending';
DROP INDEX IF EXISTS deliveries_destination;
DROP INDEX IF EXISTS deliveries_updated;
ALTER INDEX deliveries_finished RENAME TO deliveries_updated;
