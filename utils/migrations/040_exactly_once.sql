-- Exactly once by construction: the consumer's offsets live here, in the same transaction as the
-- rows they account for; a message is identified by its topic as well as its partition and
-- offset (a recreated topic repeats positions: its messages are told apart by their ids); the
-- dead-letter topic is published from rejected_transactions (an outbox).

-- Rows stored before this migration came from the default topic; if yours had another name,
-- run as the owner: UPDATE transactions SET kafka_topic = '<name>' WHERE kafka_topic = 'transactions'.
-- (A constant default is instant on PostgreSQL 11+; dropping it makes the writer name the topic.)
ALTER TABLE transactions ADD COLUMN kafka_topic text NOT NULL DEFAULT 'transactions';
ALTER TABLE transactions ALTER COLUMN kafka_topic DROP DEFAULT;

-- The per-partition state rebuild is gone: accounts are loaded by account_id and topic, newest
-- first, LIMIT k per account (consumer/storage.py load_accounts), which this index answers with
-- one short backward range scan per account whatever the table's size. It replaces
-- (account_id, "timestamp"), which still serves "an account's recent history" for one topic,
-- and (kafka_partition, "timestamp"), which only cost inserts.
DROP INDEX transactions_partition_ts_idx;
DROP INDEX transactions_account_ts_idx;
CREATE INDEX transactions_account_topic_ts_idx ON transactions (account_id, kafka_topic, "timestamp");

-- Where each consumer group resumes: the next offset to read, advanced by every batch in its own
-- transaction and only from the value the batch started at (a member that lost the partition
-- meanwhile changes nothing: its batch is fenced). topic_id is Kafka's id of the topic (KIP-516)
-- when the row was made: a topic deleted and recreated under the same name has another one.
CREATE TABLE consumer_offsets (
    consumer_group  text NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    topic_id        uuid,
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer_group, kafka_topic, kafka_partition)
);

-- How far the dead-letter publisher got per source partition: the highest offset of
-- rejected_transactions it has delivered to dlq_topic. Rejections of a partition commit in offset
-- order (one batch after another), so everything at or below it has been published at least once.
CREATE TABLE dlq_progress (
    dlq_topic        text NOT NULL,
    kafka_topic      text NOT NULL,
    kafka_partition  integer NOT NULL,
    published_offset bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (dlq_topic, kafka_topic, kafka_partition)
);
