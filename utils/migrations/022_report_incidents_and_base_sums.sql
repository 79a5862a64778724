-- The daily report scores rules per incident and adds money in the base currency (issues 13, 14).
--
-- rule_quality: the per-message figures (labelled, true/false positives, false negatives,
-- precision and recall per transaction, "any fraud" precision, accounts) give way to the
-- incident-level figures of utils/rule_quality.py, the ones `make quality` prints:
--   incidents            injected incidents of the rule's scenario whose first message falls on the day
--   caught               ... with at least one alert of the rule on any of their messages (also past midnight)
--   alerts               (kept) the rule's alerts on the day's transactions
--   alerts_on_incidents  ... on a message of any injected incident
--   alerts_per_1000      alerts per 1,000 of the day's transactions (replaces alert_rate)
--   recall, "precision"  caught / incidents, alerts_on_incidents / alerts (same names, new meaning:
--                        dropped and added again, so no per-message value survives under them)
--   ground_truth         the day's transactions carry the simulator's incident labels
-- Rows written before this migration keep their rule, scenario and alert count; their new columns
-- are NULL (ground_truth NULL: scored per message, before this migration): rerunning the day's
-- report scores it per incident. reports/scoring.py explains the day's accounting.
ALTER TABLE rule_quality
    DROP COLUMN alert_rate,
    DROP COLUMN labelled,
    DROP COLUMN true_positives,
    DROP COLUMN false_positives,
    DROP COLUMN false_negatives,
    DROP COLUMN "precision",
    DROP COLUMN recall,
    DROP COLUMN alerts_on_fraud,
    DROP COLUMN precision_any_fraud,
    DROP COLUMN labelled_accounts,
    DROP COLUMN detected_accounts,
    ADD COLUMN incidents bigint CHECK (incidents >= 0),
    ADD COLUMN caught bigint CHECK (caught >= 0 AND caught <= incidents),
    ADD COLUMN alerts_on_incidents bigint CHECK (alerts_on_incidents >= 0 AND alerts_on_incidents <= alerts),
    ADD COLUMN alerts_per_1000 double precision,
    ADD COLUMN recall double precision,
    ADD COLUMN "precision" double precision,
    ADD COLUMN ground_truth boolean;

-- daily_summary: beside the nominal amount_sum (one currency only in the currency breakdown),
-- the same transactions' amounts in the base currency, which may be added across currencies:
--   amount_base_sum      sum of transactions.amount_base; a row stored before migration 010 has
--                        none, and the report converts its amount with the rate table of the run
--                        (BASE_CURRENCY, FX_RATES: utils/money.py), to the base's minor unit
--   base_currency        the code of amount_base_sum
--   converted_by_report  how many of the row's transactions the report converted that way
-- NULL on rows computed before this migration: rerun the day.
ALTER TABLE daily_summary
    ADD COLUMN amount_base_sum numeric(20, 2),
    ADD COLUMN base_currency text,
    ADD COLUMN converted_by_report bigint CHECK (converted_by_report >= 0);
