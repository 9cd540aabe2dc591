-- Fewer index entries per delivery. PostgreSQL writes a new entry in every index of a row that
-- an update cannot keep in place, and a claim and a record each update the row: with five
-- indexes on `deliveries`, index insertions were a third of PostgreSQL's CPU in a drain.
-- - `deliveries_destination` goes: the due index serves a destination's waiting deliveries,
--   `deliveries_updated` a status's finished ones, and the stats read the whole table anyway.
-- - `deliveries_updated` leaves out pending deliveries, which no query reads by their update
--   time (the purge and the latest errors read finished or retried ones): an accept and a
--   claim add nothing to it.
DROP INDEX deliveries_destination;
DROP INDEX deliveries_updated;
CREATE INDEX deliveries_updated ON deliveries (status, updated_at) WHERE status <> 'pending';
