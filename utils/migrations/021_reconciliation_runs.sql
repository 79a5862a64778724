-- Reconciliation per run of offsets: when a topic is recreated (or its offsets reset), a
-- partition's offsets start again within a day, and one row per (day, partition) would merge two
-- logs into one range that hides both the restart and its gaps. `run` numbers the stretches of
-- one partition on one day in processing order; `restarted` says the run began below the offsets
-- accounted for before it. `kafka_topic` is '' until transactions record their topic.
ALTER TABLE reconciliation ADD COLUMN kafka_topic text NOT NULL DEFAULT '';
ALTER TABLE reconciliation ADD COLUMN run integer NOT NULL DEFAULT 0;
ALTER TABLE reconciliation ADD COLUMN restarted boolean NOT NULL DEFAULT false;
ALTER TABLE reconciliation DROP CONSTRAINT reconciliation_pkey;
ALTER TABLE reconciliation ADD PRIMARY KEY (day, kafka_topic, kafka_partition, run);
