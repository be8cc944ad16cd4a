-- A message.revoked handled before its message.sealed (they come through two queues, and a sealed message
-- may wait for its batch): the revocation is kept here and the message stored revoked when it arrives.
-- Ids and the reason only.
create table revoked_early (
    message_id  uuid primary key,
    state       text not null check (state in ('revoked', 'expired')),
    reason      text not null,
    revoked_at  timestamptz not null default now()
);
