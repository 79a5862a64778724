-- What the Airflow DAGs write: daily aggregates, rule quality, point-in-time metrics and
-- per-partition reconciliation. Every table is keyed so that a rerun for the same day (or the
-- same measurement) replaces its rows instead of adding to them; see utils/reporting.py and
-- utils/monitoring.py for the queries that fill them.

-- One row per (day, dimension, key): the day's transactions broken down one way at a time.
--   dimension 'total'            key ''             every transaction of the day
--   dimension 'transaction_type' key 'purchase'...  and likewise 'currency', 'country', 'channel'
--   dimension 'alert_type'       key 'high_amount'... txn_count = alerted transactions
--   dimension 'alert_severity'   key 'high'...       txn_count = transactions with such an alert
--   dimension 'rejection_reason' key 'invalid_json'... txn_count = dead-lettered messages
-- The day is the UTC date of the transaction's event timestamp; alerts belong to their
-- transaction's day; rejected messages (which may have no usable timestamp) to their
-- rejected_at date. Amounts are nominal: the pipeline does not convert currencies.
CREATE TABLE daily_summary (
    day          date NOT NULL,
    dimension    text NOT NULL CHECK (dimension IN ('total', 'transaction_type', 'currency', 'country',
                                                    'channel', 'alert_type', 'alert_severity',
                                                    'rejection_reason')),
    key          text NOT NULL,
    txn_count    bigint NOT NULL CHECK (txn_count >= 0),
    amount_sum   numeric(20, 2) NOT NULL DEFAULT 0,
    alert_count  bigint NOT NULL DEFAULT 0 CHECK (alert_count >= 0),
    computed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, dimension, key)
);

-- Per day and rule: how many alerts it raised and, where the producer's `simulated_scenario`
-- labels exist, how well they match the scenario the rule is meant to catch. NULL means
-- "not defined": no alerts (precision), no labelled transactions (recall), or no scenario
-- for the rule at all (velocity).
CREATE TABLE rule_quality (
    day                 date NOT NULL,
    alert_type          text NOT NULL,
    scenario            text,              -- the scenario label this rule is scored against
    alerts              bigint NOT NULL,   -- = alerted transactions (one alert per rule and transaction)
    alert_rate          double precision,  -- alerts / transactions of the day
    labelled            bigint,            -- transactions carrying `scenario`
    true_positives      bigint,            -- alerted and labelled with `scenario`
    false_positives     bigint,            -- alerted, labelled otherwise or not at all
    false_negatives     bigint,            -- labelled with `scenario`, not alerted by this rule
    "precision"         double precision,
    recall              double precision,
    alerts_on_fraud     bigint,            -- alerted transactions carrying any scenario label
    precision_any_fraud double precision,
    labelled_accounts   bigint,            -- accounts with a `scenario` transaction that day
    detected_accounts   bigint,            -- ... of which this rule alerted at least one such transaction
    computed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, alert_type)
);

-- Point-in-time measurements from the monitoring DAG, one row per metric and label set.
-- jsonb has a btree opclass, so the labels themselves are part of the key ('{}' when none).
CREATE TABLE pipeline_metrics (
    measured_at  timestamptz NOT NULL,
    metric       text NOT NULL,
    value        double precision NOT NULL,
    labels       jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (metric, measured_at, labels)
);

-- Retention deletes by time across every metric.
CREATE INDEX pipeline_metrics_measured_at_idx ON pipeline_metrics (measured_at);

-- Per day (UTC date of the consumer's processed_at / rejected_at) and partition: which offsets
-- the consumer accounted for, and the ranges it skipped. Every offset it read is either a
-- stored transaction or a rejected message, so a gap is a message that was lost.
CREATE TABLE reconciliation (
    day              date NOT NULL,
    kafka_partition  integer NOT NULL,
    min_offset       bigint NOT NULL,
    max_offset       bigint NOT NULL,
    previous_offset  bigint,            -- highest offset accounted for before the day, if any
    stored           bigint NOT NULL,
    rejected         bigint NOT NULL,
    missing          bigint NOT NULL,   -- offsets inside the gaps
    gaps             jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [[first, last], ...] inclusive ranges
    computed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, kafka_partition)
);
