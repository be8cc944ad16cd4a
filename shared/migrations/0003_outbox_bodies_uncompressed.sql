-- A sealed letter's body is mostly base64 of ciphertext: PostgreSQL's default compression (pglz) works
-- through all of it and then keeps the original (it saves too little). Stored out of line as it is.
-- The change takes an exclusive lock, for a catalogue update only: while live handlers hold the table, give
-- up after a few seconds (the migration Job retries) rather than queue every outbox write behind it.
set local lock_timeout = '5s';
alter table outbox alter column body set storage external;
