-- Ground truth per incident and amounts in one base currency (issue 13).
--
-- simulated_incident: the simulator's id shared by every message of one injected incident (its
--   lead-in legs and aftermath too), beside the existing simulated_scenario label; NULL for
--   ordinary traffic and for real streams. No rule reads either: they are what rule quality is
--   measured against (per incident, not per message).
-- amount_base: the amount converted into BASE_CURRENCY by the consumer with its rate table
--   (utils/money.py), exactly as the rules judged it; sums across currencies add this column,
--   never `amount`. Rows stored before this migration have NULL here.
ALTER TABLE transactions ADD COLUMN simulated_incident text;
ALTER TABLE transactions ADD COLUMN amount_base numeric(18, 2) CHECK (amount_base >= 0);

-- Scoring reads the labelled rows of a run or a day; they are a few percent of the table.
CREATE INDEX transactions_incident_idx ON transactions (simulated_incident)
    WHERE simulated_incident IS NOT NULL;
