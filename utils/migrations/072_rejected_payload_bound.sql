-- A rejected message's bytes are kept up to a bound (consumer/storage.py:
-- REJECTED_PAYLOAD_MAX_BYTES, 64 KiB), so a flood of megabyte messages cannot fill the disk
-- through the dead-letter table; payload_bytes is the message's full length (NULL for rows
-- stored before this migration, which were kept whole: length(raw_payload)).
ALTER TABLE rejected_transactions ADD COLUMN payload_bytes integer CHECK (payload_bytes >= 0);
