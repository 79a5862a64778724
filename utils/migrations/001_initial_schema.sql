-- Transactions, their alerts, and every message that failed validation.
-- Applied once by utils/database.py's migration runner and recorded in schema_migrations.

CREATE TABLE transactions (
    transaction_id     text PRIMARY KEY,
    account_id         text NOT NULL,
    transaction_type   text NOT NULL
        CHECK (transaction_type IN ('purchase', 'withdrawal', 'transfer', 'deposit', 'refund')),
    amount             numeric(18, 2) NOT NULL CHECK (amount > 0),
    currency           char(3) NOT NULL,
    "timestamp"        timestamptz NOT NULL,
    channel            text NOT NULL CHECK (channel IN ('pos', 'online', 'atm')),
    country            char(2) NOT NULL,
    merchant           text,
    merchant_category  text,
    city               text,
    latitude           double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude          double precision CHECK (longitude BETWEEN -180 AND 180),
    simulated_scenario text,
    schema_version     smallint NOT NULL,
    kafka_partition    integer NOT NULL,
    kafka_offset       bigint NOT NULL,
    processed_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX transactions_account_ts_idx ON transactions (account_id, "timestamp");
CREATE INDEX transactions_ts_idx ON transactions ("timestamp");
-- processed_at only ever grows with the table's physical order: a BRIN index answers "the last
-- N minutes" for monitoring at a fraction of a b-tree's cost on every insert.
CREATE INDEX transactions_processed_at_brin ON transactions USING brin (processed_at);
-- Rebuilding per-account state on partition assignment reads a partition's recent window.
CREATE INDEX transactions_partition_ts_idx ON transactions (kafka_partition, "timestamp");

CREATE TABLE alerts (
    alert_id        bigserial PRIMARY KEY,
    transaction_id  text NOT NULL REFERENCES transactions (transaction_id) ON DELETE CASCADE,
    account_id      text NOT NULL,
    alert_type      text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    alert_message   text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- A replayed batch must not raise the same alert twice.
    CONSTRAINT alerts_one_per_rule UNIQUE (transaction_id, alert_type)
);

CREATE INDEX alerts_created_at_idx ON alerts (created_at);
CREATE INDEX alerts_type_idx ON alerts (alert_type, created_at);
CREATE INDEX alerts_account_idx ON alerts (account_id);

CREATE TABLE rejected_transactions (
    rejected_id     bigserial PRIMARY KEY,
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    reason          text NOT NULL,
    detail          text NOT NULL,
    transaction_id  text,
    message_key     bytea,
    raw_payload     bytea NOT NULL,
    rejected_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- One row per Kafka message, however often it is replayed.
    CONSTRAINT rejected_one_per_message UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);

CREATE INDEX rejected_at_idx ON rejected_transactions (rejected_at);
CREATE INDEX rejected_reason_idx ON rejected_transactions (reason);
