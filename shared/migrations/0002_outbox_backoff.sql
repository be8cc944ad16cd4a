-- An event the broker refuses (no queue bound yet, broker down) waits with backoff instead of
-- sitting at the head of every batch and holding back the events behind it.
alter table outbox add column next_attempt_at timestamptz not null default now();
create index outbox_due on outbox (next_attempt_at, id);
