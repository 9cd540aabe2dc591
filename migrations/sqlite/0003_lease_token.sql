-- A claim's token is random, not its expiry time: two claims can share an expiry millisecond.
-- An attempt is recorded only while its claim's token is still on the delivery.
ALTER TABLE deliveries ADD COLUMN lease_token TEXT;
