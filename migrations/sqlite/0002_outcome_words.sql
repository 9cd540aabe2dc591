-- An attempt's outcome is the worker's decision, the word the log uses: delivered, retry or
-- dead. Earlier versions wrote the connector's verdict ("failed") and kept "retry" on the last
-- attempt of a delivery that went dead.
UPDATE attempts SET outcome = 'dead' WHERE outcome = 'failed';
UPDATE attempts SET outcome = 'dead'
WHERE outcome = 'retry'
  AND id IN (
      SELECT MAX(a.id) FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
      WHERE d.status = 'dead'
      GROUP BY a.delivery_id
  );
