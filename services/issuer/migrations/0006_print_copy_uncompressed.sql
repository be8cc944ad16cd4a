-- The print room's copy is base64 of ciphertext: compression is work for nothing (see the outbox's).
alter table convocation alter column print_copy set storage external;
