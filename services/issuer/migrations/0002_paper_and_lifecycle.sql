-- Paper path and lifecycle: a copy sealed to the print room's public key (the issuer cannot open
-- it) kept only until the letter is delivered one way or the other; fallback bookkeeping.
alter table convocation add column print_copy text;
alter table convocation add column postal_reason text;
alter table convocation add column superseded_count int not null default 0;
create index convocation_due on convocation (appointment_at) where downloaded_at is null and postal_at is null;
create index convocation_expiry on convocation (expires_at) where status not in ('expired', 'cancelled');
