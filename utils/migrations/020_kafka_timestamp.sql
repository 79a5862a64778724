-- The Kafka record timestamp of each stored transaction, in milliseconds since the epoch. With
-- the default CreateTime topics it is when the producer sent the message, so processed_at minus
-- it is the pipeline's own delay, whatever time the event itself carries (simulated, back-dated
-- or replayed). NULL for rows stored before this migration. Milliseconds as Kafka gives them:
-- converting every message to a timestamptz in the consumer cost ~2 µs per row.
ALTER TABLE transactions ADD COLUMN kafka_timestamp_ms bigint;
