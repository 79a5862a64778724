-- The partition counts each topic incarnation has had, as the consumer groups saw them.
-- Validation (consumer/validation.py `wrong_partition`) accepts a message only where Kafka's
-- default partitioner puts its key under one of them: a key moved by add-partitions is accepted
-- in its old partition and its new one, while an account placed by another partitioner or an
-- explicit partition is refused (docs/guarantees-assumptions.md §3). Insert-only: a count, once
-- seen, stays valid for the messages written under it.
CREATE TABLE topic_partition_counts (
    kafka_topic     text NOT NULL,
    kafka_topic_id  uuid NOT NULL,
    partition_count integer NOT NULL CHECK (partition_count > 0),
    first_seen_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_topic_id, partition_count)
);
