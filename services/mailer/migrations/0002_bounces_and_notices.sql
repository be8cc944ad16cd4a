-- Late bounces, notices, and messages revoked before their e-mail went out ('revoked': never sent).
-- Late bounces and notices. What the notices need (the address and name, encrypted with
-- MAILER_FIELD_KEY) is kept only until the message expires or is revoked, then set to null.
alter table email drop constraint email_status_check;
alter table email add constraint email_status_check check (status in ('retrying', 'sent', 'failed', 'bounced', 'revoked'));
alter table email add column recipient text;          -- sealed {email, name}; null once expired/revoked
alter table email add column language text;
alter table email add column public_contact jsonb;    -- the hospital's public desk: not personal
alter table email add column expires_at timestamptz;
alter table email add column bounced_at timestamptz;
create index email_convocation on email (convocation_id, sent_at);
create index email_recipient_expiry on email (expires_at) where recipient is not null;

-- One row per e-mail sent (the link, or a notice), found again by the VERP envelope sender
-- bounces+<token>@domain. Only the token's SHA-256 is kept: the database alone cannot forge a bounce.
create table bounce_token (
    token_hash  bytea primary key,
    message_id  uuid not null,
    kind        text not null,
    created_at  timestamptz not null default now()
);
create index bounce_token_message on bounce_token (message_id);

-- Notices about a message, each handled once (sent, failed for good, or skipped: nothing to send).
create table notice (
    message_id  uuid not null,
    kind        text not null check (kind in ('withdrawn', 'reminder')),
    outcome     text not null check (outcome in ('sent', 'failed', 'skipped')),
    at          timestamptz not null,
    primary key (message_id, kind)
);
