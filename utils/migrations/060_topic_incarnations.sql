-- A topic deleted and recreated under the same name starts its offsets at 0 again: the new
-- incarnation repeats (topic, partition, offset). So the incarnation, Kafka's topic id (KIP-516),
-- is part of every identity that offsets are: a stored message, a rejection, where a partition
-- switched rule-set version, the dead-letter publisher's progress, and (new) how far each
-- partition of each incarnation has been stored. The nil id 00000000-0000-0000-0000-000000000000
-- stands for "unknown": a broker that reports no topic ids, or rows from before this migration
-- whose incarnation cannot be told (docs/guarantees-assumptions.md). A constant default is
-- instant on PostgreSQL 11+; the consumer always names the incarnation it writes.

ALTER TABLE transactions ADD COLUMN kafka_topic_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
ALTER TABLE rejected_transactions ADD COLUMN kafka_topic_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
ALTER TABLE rule_set_applied ADD COLUMN kafka_topic_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
ALTER TABLE dlq_progress ADD COLUMN kafka_topic_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';

-- The rows stored so far belong to the incarnation the consumer groups recorded for the topic
-- (consumer_offsets.topic_id), where they all agree on one. Where they do not (no group row, a
-- broker without topic ids, or groups on different incarnations after a recreated topic), the
-- rows stay "unknown": nothing tells which incarnation each came from.
CREATE TEMP TABLE known_incarnation ON COMMIT DROP AS
    SELECT kafka_topic, (array_agg(DISTINCT topic_id))[1] AS topic_id
    FROM consumer_offsets
    GROUP BY kafka_topic
    HAVING count(DISTINCT topic_id) = 1 AND bool_and(topic_id IS NOT NULL);

UPDATE transactions t SET kafka_topic_id = k.topic_id FROM known_incarnation k WHERE t.kafka_topic = k.kafka_topic;
UPDATE rejected_transactions r SET kafka_topic_id = k.topic_id
    FROM known_incarnation k WHERE r.kafka_topic = k.kafka_topic;
UPDATE dlq_progress d SET kafka_topic_id = k.topic_id FROM known_incarnation k WHERE d.kafka_topic = k.kafka_topic;

-- rule_set_applied describes stored messages, whichever group stored them: one row per position.
-- Two groups that recorded the same position keep the earlier row (the one that stored it).
UPDATE rule_set_applied a SET kafka_topic_id = k.topic_id FROM known_incarnation k WHERE a.kafka_topic = k.kafka_topic;
DELETE FROM rule_set_applied a USING rule_set_applied b
    WHERE a.kafka_topic = b.kafka_topic AND a.kafka_topic_id = b.kafka_topic_id
      AND a.kafka_partition = b.kafka_partition AND a.first_offset = b.first_offset
      AND (a.applied_at, a.consumer_group) > (b.applied_at, b.consumer_group);
ALTER TABLE rule_set_applied DROP CONSTRAINT rule_set_applied_pkey;
ALTER TABLE rule_set_applied ADD PRIMARY KEY (kafka_topic, kafka_topic_id, kafka_partition, first_offset);

-- Accounts are loaded per incarnation (consumer/storage.py load_accounts): newest first, LIMIT k
-- per account, one short backward range scan whatever the table's size or the rows of other
-- incarnations. It replaces (account_id, kafka_topic, "timestamp") from migration 040.
CREATE INDEX transactions_account_incarnation_ts_idx
    ON transactions (account_id, kafka_topic, kafka_topic_id, "timestamp");
DROP INDEX transactions_account_topic_ts_idx;

ALTER TABLE rejected_transactions DROP CONSTRAINT rejected_one_per_message;
ALTER TABLE rejected_transactions ADD CONSTRAINT rejected_one_per_message
    UNIQUE (kafka_topic, kafka_topic_id, kafka_partition, kafka_offset);

ALTER TABLE dlq_progress DROP CONSTRAINT dlq_progress_pkey;
ALTER TABLE dlq_progress ADD PRIMARY KEY (dlq_topic, kafka_topic, kafka_topic_id, kafka_partition);

-- How far each partition of each incarnation has been stored: every position below next_offset
-- was stored or rejected once, and is never inserted again. Retention deletes old rows, not
-- this; an operator's rewind or a new group moves consumer_offsets, not this. So a replay of
-- messages whose rows retention deleted stores nothing and raises no alert a second time.
-- Only ever raised (greatest), in the batch's own transaction.
CREATE TABLE stored_positions (
    kafka_topic     text NOT NULL,
    kafka_topic_id  uuid NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_topic_id, kafka_partition)
);

-- What is stored so far: every group's stored offset of its incarnation (the rows below it were
-- stored or rejected; the groups never store below it again either). Not the highest stored
-- offset: before this migration a recreated topic's two incarnations shared their labels here.
INSERT INTO stored_positions (kafka_topic, kafka_topic_id, kafka_partition, next_offset)
SELECT kafka_topic, coalesce(topic_id, '00000000-0000-0000-0000-000000000000'), kafka_partition, max(next_offset)
FROM consumer_offsets
GROUP BY 1, 2, 3;
