-- The print room's copy is base64 of ciphertext: compression is work for nothing (see the outbox's).
-- The change takes an exclusive lock, for a catalogue update only: while live handlers hold the table, give
-- up after a few seconds (the migration Job retries) rather than queue every outbox write behind it.
set local lock_timeout = '5s';
alter table convocation alter column print_copy set storage external;
