-- A sealed letter's body is mostly base64 of ciphertext: PostgreSQL's default compression (pglz) works
-- through all of it and then keeps the original (it saves too little). Stored out of line as it is.
alter table outbox alter column body set storage external;
