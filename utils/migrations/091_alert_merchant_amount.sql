-- The console's merchant and amount filters move from `transactions` to `alerts`, and the two
-- indexes every stored transaction paid for them go (docs/performance.md "What each index
-- costs"; issue 23).
--
-- The queue lists alerts, so its merchant and amount filters are about the few transactions an
-- alert was raised on (a few per hundred), yet `transactions_merchant_idx` and
-- `transactions_amount_idx` took an entry for every stored row: with 3,000,000 rows in the day
-- partition, about a third of PostgreSQL's CPU per stored row (bench/index_cost.py). The alert
-- now carries its transaction's merchant and amount, copied by the consumer in the same INSERT
-- (consumer/storage.py; a transaction's merchant and amount never change), and the filters are
-- index range scans of `alerts`, one index entry per alert instead of per transaction.
--
-- Alerts stored before this migration get theirs from their transaction here (one rewrite of
-- `alerts`, which holds a few per hundred transactions; before the indexes are made, which is
-- faster). An alert whose transaction is gone has none; the queue never showed such an alert
-- (it joins the transaction).

ALTER TABLE alerts ADD COLUMN merchant text, ADD COLUMN amount numeric(18, 2);
COMMENT ON COLUMN alerts.merchant IS 'the transaction''s merchant, copied when the alert is stored (the console''s merchant filter)';
COMMENT ON COLUMN alerts.amount IS 'the transaction''s amount as sent, copied when the alert is stored (the console''s amount filter)';

UPDATE alerts a SET merchant = t.merchant, amount = t.amount
    FROM transactions t WHERE t.transaction_id = a.transaction_id;

-- Queue order after the filter's column, as the other queue indexes (migration 080): a merchant
-- page is one index range scan. An amount range is a range of its own, sorted after.
CREATE INDEX alerts_queue_merchant_idx ON alerts (merchant, created_at, alert_id);
CREATE INDEX alerts_amount_idx ON alerts (amount);

DROP INDEX transactions_merchant_idx;
DROP INDEX transactions_amount_idx;
