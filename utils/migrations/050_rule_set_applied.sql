-- Which rule-set version evaluated which messages: from `first_offset` on (up to the next row of
-- the same partition), the partition's messages were evaluated with `version` (NULL: no version
-- was active, the environment's ALERT_* settings). The consumer adds a row in the batch's own
-- transaction whenever a partition's version changes, so a fenced or rolled-back batch leaves
-- none; the backtest (python -m consumer.rulesets backtest) reads it to replay exactly what ran.
CREATE TABLE rule_set_applied (
    consumer_group  text NOT NULL,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL CHECK (kafka_partition >= 0),
    first_offset    bigint NOT NULL CHECK (first_offset >= 0),
    version         integer REFERENCES rule_set_versions (version),
    applied_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (kafka_topic, kafka_partition, first_offset, consumer_group)
);
