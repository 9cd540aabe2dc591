-- The purge removes notifications left without deliveries by their age: without this index it
-- read every body in the table.
CREATE INDEX notifications_received ON notifications (received_at);
